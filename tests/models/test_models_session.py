"""The onnxruntime session wrapper: card checks, preprocessing, activations, batching, NaN detection."""

from __future__ import annotations

import re

import numpy as np
import pytest
from tests.models.onnx_graphs import base_card, classifier_graph, segmenter_graph, write_pack

from cytoreview.errors import PackError
from cytoreview.models import load_pack
from cytoreview.models.session import ProviderWarning, apply_activation, normalised_entropy

RED = np.array([230, 20, 20], dtype=np.uint8)


def _patches(colours, size=16):
    return np.stack([np.broadcast_to(np.asarray(c, dtype=np.uint8), (size, size, 3)) for c in colours]).copy()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("batch", ["N", 4])
def test_layouts_and_batches_give_the_same_answer(make_pack, layout, batch):
    pack = load_pack(
        make_pack(
            f"p-{layout.lower()}-{batch}".lower(),
            card=base_card(f"p-{layout.lower()}-{batch}".lower(), input={"layout": layout}),
            layout=layout,
            batch=batch,
        )
    )
    sess = pack.session(threads=1)
    assert sess.fixed_batch == (4 if batch == 4 else None)
    colours = [RED, [20, 230, 20], [20, 20, 230], [200, 200, 30], RED, [10, 10, 250]]  # 6: pads a batch of 4
    probs = sess.run(_patches(colours))["probs"]
    assert probs.shape == (6, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert list(probs.argmax(axis=1)) == [0, 1, 2, 0, 0, 2]
    # the model sees mean(x)/255 * 10 per channel: check the exact softmax
    means = _patches(colours).reshape(6, -1, 3).mean(axis=1) / 255 * 10
    expected = np.exp(means - means.max(1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(1, keepdims=True), rtol=1e-5)


def test_bgr_channel_order_matters(tmp_path):
    rgb = load_pack(write_pack(tmp_path / "rgb", base_card("rgb"), classifier_graph))
    bgr = load_pack(write_pack(tmp_path / "bgr", base_card("bgr", input={"channel_order": "BGR"}), classifier_graph))
    patch = _patches([RED])
    assert rgb.session(threads=1).run(patch)["probs"].argmax() == 0
    assert bgr.session(threads=1).run(patch)["probs"].argmax() == 2  # red lands in the model's third channel


def test_normalisation_mean_std(tmp_path):
    card = base_card(
        "norm",
        input={"scale": 1.0, "mean": [100.0, 0.0, 0.0], "std": [2.0, 1.0, 4.0]},
        outputs={"probabilities": {"name": "probs", "activation": "none"}},
    )
    pack = load_pack(write_pack(tmp_path / "n", card, classifier_graph, weights=np.eye(3)))
    out = pack.session(threads=1).run(_patches([[200, 50, 40]]))["probs"]
    np.testing.assert_allclose(out[0], [(200 - 100) / 2, 50, 40 / 4], rtol=1e-6)


def test_sigmoid_and_none_activations(tmp_path):
    w = np.array([[5.0, -5.0], [0.0, 0.0], [0.0, 0.0]])
    classes = [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]
    sig = base_card("sig", outputs={"probabilities": {"name": "probs", "activation": "sigmoid"}}, classes=classes)
    raw = base_card("raw", outputs={"probabilities": {"name": "probs", "activation": "none"}}, classes=classes)
    p_sig = load_pack(write_pack(tmp_path / "s", sig, classifier_graph, weights=w)).session(threads=1)
    p_raw = load_pack(write_pack(tmp_path / "r", raw, classifier_graph, weights=w)).session(threads=1)
    patch = _patches([[255, 0, 0]])
    np.testing.assert_allclose(p_raw.run(patch)["probs"][0], [5.0, -5.0], rtol=1e-6)
    np.testing.assert_allclose(p_sig.run(patch)["probs"][0], 1 / (1 + np.exp([-5.0, 5.0])), rtol=1e-5)


def test_embedding_output(tmp_path):
    card = base_card("emb", outputs={"probabilities": {"name": "probs"}, "embedding": {"name": "embedding"}})
    sess = load_pack(write_pack(tmp_path / "e", card, classifier_graph, embedding=True)).session(threads=1)
    out = sess.run(_patches([[255, 0, 51], [0, 0, 0]]))
    assert sess.embedding_dim == 3
    np.testing.assert_allclose(out["embedding"], [[1.0, 0.0, 0.2], [0, 0, 0]], atol=1e-6)


@pytest.mark.parametrize(
    "card_kw, graph_kw, message",
    [
        ({}, {"input_name": "pixels"}, "input.name: expected an input named 'image', found inputs ['pixels']"),
        ({}, {"size_px": 32}, "input 'image' shape: expected NCHW (N, 3, 16, 16), found (N, 3, 32, 32)"),
        ({"input": {"layout": "NHWC"}}, {}, "input 'image' shape: expected NHWC (N, 16, 16, 3), found (N, 3, 16, 16)"),
        ({}, {"weights": np.ones((3, 4))}, "output 'probs' shape: expected (N, 3) for 3 classes, found (N, 4)"),
        (
            {"outputs": {"probabilities": {"name": "logits"}}},
            {},
            "outputs.probabilities.name: expected an output named 'logits'",
        ),
        (
            {"outputs": {"probabilities": {"name": "probs"}, "embedding": {"name": "feat"}}},
            {},
            "outputs.embedding.name",
        ),
    ],
)
def test_graph_card_mismatch_is_reported(tmp_path, card_kw, graph_kw, message):
    pack = load_pack(write_pack(tmp_path / "bad", base_card("bad", **card_kw), classifier_graph, **graph_kw))
    with pytest.raises(PackError) as err:
        pack.session(threads=1)
    assert message in str(err.value)
    assert "model.onnx" in str(err.value)


def test_segmenter_output_size_checked(tmp_path):
    card = base_card(
        "seg",
        task="segmentation",
        input={"size_px": 16},
        outputs={"probabilities": {"name": "probs"}, "halo_px": 1},
        classes=[{"id": 0, "name": "bg"}, {"id": 1, "name": "cell"}],
    )
    sess = load_pack(write_pack(tmp_path / "s", card, segmenter_graph)).session(threads=1)
    out = sess.run(_patches([[255, 255, 255], [0, 0, 0]]))["probs"]
    assert out.shape == (2, 14, 14, 2)  # class axis last
    assert (out[0].argmax(-1) == 0).all() and (out[1].argmax(-1) == 1).all()
    card["outputs"]["halo_px"] = 0  # the graph loses 1 px per side, the card says none
    card["name"] = "seg-bad"
    bad = load_pack(write_pack(tmp_path / "b", card, segmenter_graph)).session(threads=1)
    with pytest.raises(PackError, match=r"has shape \(1, 14, 14, 2\).*expected \(1, 16, 16, 2\)"):
        bad.run(_patches([[0, 0, 0]]))


def test_nan_output_is_a_pack_error(tmp_path):
    pack = load_pack(write_pack(tmp_path / "nan", base_card("nan-model"), classifier_graph, nan=True))
    with pytest.raises(PackError, match=r"model nan-model@1.0.0 \(model.onnx\) produced NaN"):
        pack.session(threads=1).run(_patches([RED]))


def test_wrong_patch_shape_is_refused(make_pack):
    sess = load_pack(make_pack()).session(threads=1)
    with pytest.raises(PackError, match=r"patches must be \(n, 16, 16, 3\)"):
        sess.run(np.zeros((1, 8, 8, 3), dtype=np.uint8))


def test_cuda_falls_back_to_cpu_with_a_warning(make_pack):
    import onnxruntime as ort

    pack = load_pack(make_pack())
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert "CUDAExecutionProvider" in pack.session(providers="cuda").providers
        return
    with pytest.warns(ProviderWarning, match="CUDAExecutionProvider is not available"):
        sess = pack.session(providers="cuda", threads=1)
    assert sess.providers == ["CPUExecutionProvider"] and sess.notes
    with pytest.raises(PackError, match="unknown device 'tpu'"):
        pack.session(providers="tpu")


def test_activation_and_entropy_helpers():
    p = apply_activation(np.array([[0.0, 0.0], [100.0, -100.0]], dtype=np.float32), "softmax")
    np.testing.assert_allclose(p, [[0.5, 0.5], [1, 0]], atol=1e-6)
    h = normalised_entropy(p, "softmax")
    np.testing.assert_allclose(h, [1.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(normalised_entropy(np.array([[0.5, 1.0]], np.float32), "sigmoid"), [0.5], atol=1e-5)


@pytest.mark.parametrize("key, expected", [("boundary", "expected (N, 1, 14, 14)"), ("markers", "expected (N, 1, 14, 14)"),
                                          ("embedding", "expected (N, D)")])
def test_extra_output_of_the_wrong_shape_names_its_key(tmp_path, key, expected):
    """The boundary, marker and embedding outputs share one check: the graph's 2-channel (N, 2, 14, 14) map is none
    of them."""
    card = base_card("seg-extra", task="segmentation", input={"size_px": 16},
                     outputs={"probabilities": {"name": "probs"}, "halo_px": 1, key: {"name": "probs"}},
                     classes=[{"id": 0, "name": "bg"}, {"id": 1, "name": "cell"}])
    pack = load_pack(write_pack(tmp_path / key, card, segmenter_graph))
    with pytest.raises(PackError, match=rf"output 'probs' shape \(outputs\.{key}\): {re.escape(expected)}"):
        pack.session(threads=1)
