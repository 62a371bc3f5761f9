"""Segmentation outputs as real models ship them: one-channel foreground, activations checked against the graph,
boundary output, instance extraction, seams, padding, failures -- with tiny real ONNX graphs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.inference.conftest import wsi
from tests.models.onnx_graphs import foreground_graph, segmentation_card, write_pack

from cytoreview.errors import PackError
from cytoreview.inference import predict
from cytoreview.inference.instances import extract_instances
from cytoreview.models import load_pack

MPP = 0.5


def cells_image(seed=0, shape=(200, 260), n=24, touching=4):
    """Light glass with dark discs (radius 5-7 px) at known places; ``touching`` pairs share a border.

    Returns the RGB image and the instance map (0 = glass, k = disc k).
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    arr = np.full((h, w, 3), 235, dtype=np.uint8)
    inst = np.zeros((h, w), dtype=np.int32)
    yy, xx = np.mgrid[:h, :w]
    centres: list = []
    k = 0
    while len(centres) < n:
        r = rng.uniform(5, 7)
        cy, cx = rng.uniform(8, h - 8), rng.uniform(8, w - 8)
        pair = len(centres) < 2 * touching
        if any(np.hypot(cy - y, cx - x) < (20 if not pair else 24) for y, x, _ in centres):
            continue
        group = [(cy, cx, r)]
        if pair:
            ang = rng.uniform(0, 2 * np.pi)
            r2 = rng.uniform(5, 7)
            cy2, cx2 = cy + (r + r2 - 1.5) * np.sin(ang), cx + (r + r2 - 1.5) * np.cos(ang)
            if not (8 < cy2 < h - 8 and 8 < cx2 < w - 8):
                continue
            group.append((cy2, cx2, r2))
        for gy, gx, gr in group:
            k += 1
            disc = ((yy - gy) ** 2 + (xx - gx) ** 2 <= gr * gr) & (inst == 0)
            inst[disc] = k
            arr[disc] = rng.integers(30, 70)
            centres.append((gy, gx, gr))
    return arr, inst


def f1_at_iou(pred_labels: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> float:
    """Detection F1: a predicted instance matches a true one when their IoU is >= ``iou`` (one-to-one)."""
    matched = 0
    n_pred = len(np.unique(pred_labels)) - (1 if (pred_labels == 0).any() else 0)
    n_true = len(np.unique(truth)) - (1 if (truth == 0).any() else 0)
    for t in np.unique(truth):
        if t == 0:
            continue
        m = truth == t
        ids, counts = np.unique(pred_labels[m], return_counts=True)
        for p, inter in zip(ids, counts):
            if p == 0:
                continue
            union = m.sum() + (pred_labels == p).sum() - inter
            if inter / union >= iou:
                matched += 1
                break
    return 2 * matched / max(1, n_pred + n_true)


def rasterise(cells, shape):
    """Instance map from the stored outline polygons (level-0 pixels)."""
    from skimage.draw import polygon

    out = np.zeros(shape, dtype=np.int32)
    off = cells["outline_offset"]
    for i in range(len(off) - 1):
        poly = cells["outline_yx"][off[i] : off[i + 1]]
        rr, cc = polygon(poly[:, 0], poly[:, 1], shape)
        out[rr, cc] = i + 1
    return out


def _pack(tmp_path, name="fg", graph=None, **card):
    graph = graph or {}
    return load_pack(write_pack(tmp_path / name, segmentation_card(name, **card), foreground_graph, **graph))


def test_one_channel_sigmoid_finds_known_cells_with_f1_over_0_9(tmp_path):
    arr, truth = cells_image()
    image = wsi(arr, mpp=MPP, path=tmp_path / "cells.tif")
    pack = _pack(tmp_path, halo_px=2, graph={"halo_px": 2},
                 cells={"min_area_um2": 5.0, "split": "watershed", "min_distance_um": 2.5})
    store = predict(image, pack, tmp_path / "out", threads=1, tissue_threshold=0.0)
    assert store.complete
    cells = store.cells()
    assert set(cells["class"].tolist()) == {1}
    f1 = f1_at_iou(rasterise(cells, truth.shape), truth)
    assert f1 >= 0.9, f1
    n_true = truth.max()
    assert abs(len(cells["y_px"]) - n_true) <= 2  # touching pairs were split, not merged
    assert np.all(cells["area_um2"] > 5.0) and np.allclose(cells["area_um2"], cells["area_px"] * MPP * MPP)
    assert np.all((cells["prob_mean"] >= 0.5) & (cells["prob_mean"] <= cells["prob_max"]) & (cells["prob_max"] <= 1))
    # the class mask: the single class where foreground, BELOW_THRESHOLD elsewhere; never an all-zero argmax
    mask = store.mask[:][0]
    assert set(np.unique(mask).tolist()) <= {-2, -1, 1} and (mask == 1).sum() > 0.5 * (truth > 0).sum()
    # the multiscale overlay
    from cytoreview.inference.pyramid import pixel_levels

    labels, fg, attrs = pixel_levels(store.group)
    assert attrs["label_class_ids"] == [1] and labels[0].shape == store.mask.shape
    assert set(np.unique(labels[0][:]).tolist()) == {0, 1}
    np.testing.assert_allclose(np.nan_to_num(fg[0][:]), np.nan_to_num(store.group["mask_score"][:]), atol=1e-6)


def test_graph_ending_in_sigmoid_needs_activation_none(tmp_path):
    with pytest.raises(PackError, match=r"outputs.probabilities.activation: 'sigmoid' would be applied twice.*Sigmoid"):
        _pack(tmp_path, "dbl", graph={"final": "Sigmoid"}).session()
    pack = _pack(tmp_path, "once", graph={"final": "Sigmoid"}, activation="none")
    arr, _ = cells_image(1, n=6, touching=0)
    store = predict(wsi(arr, mpp=MPP, path=tmp_path / "a.tif"), pack, tmp_path / "o", threads=1)
    assert len(store.cells()["y_px"]) == 6


def test_graph_ending_in_softmax_two_classes(tmp_path):
    classes = [{"id": 0, "name": "glass"}, {"id": 1, "name": "nucleus"}]
    with pytest.raises(PackError, match="'softmax' would be applied twice.*Softmax"):
        _pack(tmp_path, "sm", graph={"final": "Softmax", "n_classes": 2}, activation="softmax",
              classes=classes).session()
    pack = _pack(tmp_path, "smnone", graph={"final": "Softmax", "n_classes": 2}, activation="none", classes=classes)
    raw = _pack(tmp_path, "smraw", graph={"n_classes": 2}, activation="softmax", classes=classes)
    arr, _ = cells_image(2, n=8, touching=0)
    image = wsi(arr, mpp=MPP, path=tmp_path / "b.tif")
    a = predict(image, pack, tmp_path / "o", threads=1)
    b = predict(image, raw, tmp_path / "o", threads=1)
    np.testing.assert_allclose(a.group["mask_score"][:], b.group["mask_score"][:], atol=1e-6)
    assert len(a.cells()["y_px"]) == 8 and set(a.cells()["class"].tolist()) == {1}


def test_raw_logits_with_activation_none_are_refused(tmp_path):
    pack = _pack(tmp_path, "raw", activation="none")
    arr, _ = cells_image(3, n=4, touching=0)
    with pytest.raises(PackError, match=r"outputs.probabilities.activation: 'none' but .* outputs values in"):
        predict(wsi(arr, mpp=MPP, path=tmp_path / "c.tif"), pack, tmp_path / "o", threads=1)


def test_softmax_over_one_channel_is_refused(tmp_path):
    with pytest.raises(PackError, match="softmax over one channel"):
        _pack(tmp_path, "one", activation="softmax").session()


@pytest.mark.parametrize(
    ("card", "match"),
    [
        ({"outputs": {"probabilities": {"name": "probs", "threshold": 1.5}}}, r"outputs.probabilities.threshold"),
        ({"input": {"size_px": 30, "mpp": 0.5, "multiple_of": 32}}, r"input.multiple_of"),
        ({"cells": {"split": "boundary"}}, r"cells.split"),
        ({"cells": {"min_area_um2": 10, "max_area_um2": 5}}, r"cells.max_area_um2"),
    ],
)
def test_card_contradictions_name_the_key(tmp_path, card, match):
    from cytoreview.models.card import validate_card

    base = segmentation_card("bad")
    for key, value in card.items():
        base[key] = {**base.get(key, {}), **value}
    with pytest.raises(PackError, match=match):
        validate_card(base)


def test_halo_that_does_not_match_the_output_is_refused(tmp_path):
    with pytest.raises(PackError, match="shape"):
        # graph loses 2 px per side, card says 1: the output is 28 px, the card expects 30
        _pack(tmp_path, "halo", halo_px=1, graph={"halo_px": 2}, size_px=32)
        pack = load_pack(tmp_path / "halo")
        arr, _ = cells_image(4, n=3, touching=0)
        predict(wsi(arr, mpp=MPP, path=tmp_path / "d.tif"), pack, tmp_path / "o", threads=1)


def test_boundary_output_splits_touching_cells(tmp_path):
    h, w = 60, 80
    arr = np.full((h, w, 3), 235, dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    a = (yy - 30) ** 2 + (xx - 30) ** 2 <= 100
    b = (yy - 30) ** 2 + (xx - 47) ** 2 <= 100
    arr[a | b] = 40
    arr[(np.abs(xx - 38.5) <= 2) & (np.abs(yy - 30) <= 12)] = 140  # a mid-grey seam where they touch
    pack = _pack(tmp_path, "bnd", graph={"boundary": True}, size_px=24,
                 outputs={"probabilities": {"name": "probs", "activation": "sigmoid", "threshold": 0.3},
                          "boundary": {"name": "boundary", "activation": "none"}, "halo_px": 1},
                 cells={"split": "boundary"})
    assert pack.card["cells"]["split"] == "boundary"
    store = predict(wsi(arr, mpp=MPP, path=tmp_path / "e.tif"), pack, tmp_path / "o", threads=1)
    cells = store.cells()
    assert len(cells["y_px"]) == 2, cells["x_px"]
    assert sorted(np.round(cells["x_px"]).tolist()) == pytest.approx([30, 47], abs=2.5)
    none = _pack(tmp_path, "nosplit", graph={"boundary": True}, size_px=24,
                 outputs={"probabilities": {"name": "probs", "activation": "sigmoid", "threshold": 0.3},
                          "boundary": {"name": "boundary", "activation": "none"}, "halo_px": 1},
                 cells={"split": "none"})
    assert len(predict(wsi(arr, mpp=MPP, path=tmp_path / "e.tif"), none, tmp_path / "o2", threads=1)
               .cells()["y_px"]) == 1


def test_area_bounds_in_um2_drop_debris_and_sheets():
    fg = np.zeros((80, 80), dtype=np.float32)
    yy, xx = np.mgrid[:80, :80]
    fg[(yy - 20) ** 2 + (xx - 20) ** 2 <= 36] = 0.9  # ~113 px
    fg[(yy - 60) ** 2 + (xx - 60) ** 2 <= 2] = 0.9  # ~9 px debris
    fg[0:10, 40:80] = 0.8  # 400 px sheet
    got = extract_instances(fg, split="none", min_area_px=20, max_area_px=300)
    assert len(got["y"]) == 1 and got["y"][0] == pytest.approx(20, abs=0.5)
    assert got["prob_mean"][0] == pytest.approx(0.9) and len(got["outline_offset"]) == 2


def test_onnxruntime_failure_mid_run_is_one_clear_error_and_an_incomplete_store(tmp_path):
    pack = _pack(tmp_path, "fails", graph={"fixed_batch_reshape": True})
    arr, _ = cells_image(5, n=4, touching=0)
    image = wsi(arr, mpp=MPP, path=tmp_path / "f.tif")
    with pytest.raises(PackError, match=r"model fails@1.0.0 \(model.onnx\) failed on a batch of \d+ patch"):
        predict(image, pack, tmp_path / "o", threads=1, batch_size=4)
    from cytoreview.inference.store import PredictionStore, store_path_for

    store = PredictionStore(store_path_for(image.path, pack.name, pack.version, tmp_path / "o"))
    assert not store.complete


def test_too_many_cells_in_a_tile_are_capped_with_a_warning(tmp_path):
    from cytoreview.inference.instances import CellCapWarning

    arr = np.full((64, 64, 3), 235, dtype=np.uint8)
    for y in range(1, 64, 5):
        for x in range(1, 64, 5):
            arr[y : y + 2, x : x + 2] = 0  # a lattice of tiny dark dots
    pack = _pack(tmp_path, "cap", cells={"split": "none", "max_per_tile": 3})
    with pytest.warns(CellCapWarning, match="more than 3 per tile"):
        store = predict(wsi(arr, mpp=MPP, path=tmp_path / "g.tif"), pack, tmp_path / "o", threads=1,
                        tissue_threshold=0.0)
    n_tiles = int(np.prod(store.grid_shape))
    assert 0 < len(store.cells()["y_px"]) <= 3 * n_tiles
    assert store.attrs["cell_warnings"]


def test_classes_from_a_named_metadata_key(tmp_path):
    card = segmentation_card("meta", classes=None)
    card.pop("classes")
    card["classes_from_metadata"] = "character"
    folder = write_pack(tmp_path / "meta", card, foreground_graph, metadata={"character": "text\n"})
    pack = load_pack(folder)
    assert [c["name"] for c in pack.classes] == ["text"]
    card["classes_from_metadata"] = "labels"
    write_pack(tmp_path / "meta2", card, foreground_graph, metadata={"character": "text"})
    with pytest.raises(PackError, match="classes_from_metadata: missing, and model.onnx has no 'labels' entry"):
        load_pack(tmp_path / "meta2")


def test_clahe_preprocessing_runs_in_the_session(tmp_path):
    pack = _pack(tmp_path, "clahe", input={"size_px": 32, "mpp": 0.5, "preprocess": ["clahe"]})
    sess = pack.session(threads=1)
    rng = np.random.default_rng(0)
    patches = (100 + 20 * rng.random((2, 32, 32, 3))).astype(np.uint8)
    x = sess.preprocess(patches)
    plain = _pack(tmp_path, "plain").session(threads=1).preprocess(patches)
    assert x.shape == plain.shape and np.ptp(x) > 1.5 * np.ptp(plain)  # contrast stretched
