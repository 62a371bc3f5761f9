"""Refit from a project's corrections: the new pack loads, predicts better than the base, keeps its provenance."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import yaml

from cytoreview.errors import CytoreviewError, ExportError, PackError
from cytoreview.models import load_pack
from cytoreview.train import refit, refit_detailed
from cytoreview.train.refit import next_version

from .conftest import NAMES, make_project, pack_card, tile_slide, write_pack, write_tiff


def _tile_accuracy(store, truth) -> float:
    cls = np.asarray(store.tile_class[0])
    names = store.class_names
    done = cls >= 0
    assert done.sum() >= 30
    pred = np.array([names[int(k)] for k in cls[done]])
    want = np.array(NAMES)[truth][done]
    return float((pred == want).mean())


def test_refit_project_learns_the_corrections(project, base_pack, slide, tmp_path):
    from cytoreview.inference import predict

    base_before = {p.name: p.read_bytes() for p in base_pack.iterdir()}
    out = tmp_path / "new-pack"
    result = refit_detailed(project, base_pack, out, seed=0)
    pack = result.pack
    assert pack.path == out.resolve()
    assert (pack.name, pack.version) == ("tiny-tiles", "1.1.0")
    prov = pack.card["provenance"]
    assert prov["parent"] == "tiny-tiles@1.0.0"
    # every predicted tile is labelled, 2 marked unsure -> n - 2 training items; the hash is over sorted pairs
    n = len(project.items(level="tile")) - 2
    assert n >= 30
    # the refit pack carries the statistics the out-of-distribution check compares images with: its training items
    ref = pack.card["reference"]
    assert ref["n_tiles"] == n and ref["embedding"]["score_p99"] > 0 and ref["source"].startswith(f"{n} items of")
    assert result.training.n_items == n
    assert prov["training_data"]["n_items"] == n
    assert sum(prov["training_data"]["class_counts"].values()) == n
    pairs = sorted(f"{k}\t{result.training.class_names[y]}" for k, y in zip(result.training.keys,
                                                                          result.training.labels))
    digest = hashlib.sha256("".join(p + "\n" for p in pairs).encode()).hexdigest()
    assert prov["training_set"] == f"sha256:{digest}" and prov["training_data"]["hash"] == digest
    assert prov["training_data"]["source"] == str(project.folder)
    m = prov["metrics"]
    assert m["holdout"] == "stratified random" and m["n"] >= 6
    assert m["accuracy"] >= 0.9 and m["kappa"] >= 0.85
    assert m["base_accuracy"] < 0.6  # the base confuses red and green
    assert set(m["recall"]) == set(NAMES)
    assert [c["name"] for c in pack.classes] == NAMES
    assert [c["color"] for c in pack.classes] == ["#ff0000", "#00ff00", "#0000ff"]
    assert [c["hotkey"] for c in pack.classes] == ["1", "2", "3"]
    readme = (out / "README.md").read_text()
    assert "| accuracy |" in readme and "tiny-tiles@1.0.0" in readme
    # the base pack is untouched
    assert {p.name: p.read_bytes() for p in base_pack.iterdir()} == base_before
    assert not list(tmp_path.glob(".new-pack.tmp-*"))

    # the new pack predicts the image through the normal pipeline, and much better than the base
    path, truth = slide
    base_store = predict(path, load_pack(base_pack), tmp_path / "pred", threads=1, readers=1)
    new_store = predict(path, pack, tmp_path / "pred", threads=1, readers=1)
    assert new_store.embedding is not None
    assert _tile_accuracy(new_store, truth) >= 0.95
    assert _tile_accuracy(base_store, truth) < 0.6
    probs = np.asarray(new_store.tile_prob[:])
    sums = probs.sum(-1)
    assert np.allclose(sums[np.isfinite(sums)], 1.0, atol=1e-5)


def test_plain_onnxruntime_loads_the_refit_pack(project, base_pack, tmp_path):
    import onnx
    import onnxruntime as ort

    pack = refit(project, base_pack, tmp_path / "p2")
    model = onnx.load(str(pack.onnx_path))
    assert [o.name for o in model.graph.output] == ["probs", "embedding"]
    assert "temp" not in {i.name for i in model.graph.initializer}  # the old probabilities branch is pruned
    assert not any(n.op_type == "Mul" for n in model.graph.node)
    sess = ort.InferenceSession(str(pack.onnx_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    probs, emb = sess.run(None, {"image": x})
    assert probs.shape == (2, 3) and emb.shape == (2, 6)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-6)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["cytoreview_parent"] == "tiny-tiles@1.0.0"


def test_refit_chain_and_names(project, base_pack, tmp_path):
    first = refit(project, base_pack, tmp_path / "packs" / "a")
    second = refit(project, first, tmp_path / "packs" / "b")
    assert second.card["provenance"]["parent"] == "tiny-tiles@1.1.0"
    assert second.version == "1.2.0"
    # refitting the same base again beside an existing 1.1.0 takes the next free version
    third = refit(project, base_pack, tmp_path / "packs" / "c")
    assert third.version not in ("1.0.0", "1.1.0", "1.2.0")
    named = refit(project, base_pack, tmp_path / "packs" / "d", name="tiny-refit")
    assert named.ref == "tiny-refit@1.0.0" and named.card["provenance"]["parent"] == "tiny-tiles@1.0.0"
    with pytest.raises(PackError, match="lower-case"):
        refit(project, base_pack, tmp_path / "packs" / "e", name="Bad Name")


def test_next_version():
    assert next_version("1.0.0") == "1.1.0"
    assert next_version("1.0.0", {"1.1.0"}) == "1.2.0"
    assert next_version("2.3") == "2.4.0"
    assert next_version("v7") == "v7-refit1"


def test_refuses_non_empty_output_and_the_base_folder(project, base_pack, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "something.txt").write_text("x")
    with pytest.raises(PackError, match="not empty"):
        refit(project, base_pack, out)
    assert sorted(p.name for p in out.iterdir()) == ["something.txt"]
    with pytest.raises(PackError):
        refit(project, base_pack, base_pack)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert refit(project, base_pack, empty).path == empty.resolve()


def test_no_labels_and_one_class(tmp_path, slide, base_pack):
    p = make_project(tmp_path / "unlabelled", [slide], base_pack, label_fraction=0.0)
    with pytest.raises(ExportError, match=f"none of its {len(p.items(level='tile'))} tile items"):
        refit(p, base_pack, tmp_path / "o1")
    items = p.items(level="tile")
    red = p.schema.by_name("red").id
    for iid in items["item_id"][:5]:
        p.set_label(int(iid), red, "bob")
    with pytest.raises(ExportError, match="at least two classes"):
        refit(p, base_pack, tmp_path / "o2")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    p.close()


def test_pack_without_embedding_is_refused(project, tmp_path):
    no_emb = write_pack(tmp_path / "packs" / "no-emb", pack_card("no-emb", embedding=False))
    with pytest.raises(PackError, match="no embedding output"):
        refit(project, no_emb, tmp_path / "o")


def test_missing_embeddings(tmp_path, slide, base_pack):
    """Items whose stores lack embeddings: an error when asked not to embed, else embedded from the pixels."""
    import shutil

    p = make_project(tmp_path / "proj", [slide], base_pack)
    for store in p.predictions_dir.glob("*.zarr"):
        shutil.rmtree(store / "embedding")
    with pytest.raises(ExportError, match="have no embedding from tiny-tiles@1.0.0"):
        refit_detailed(p, base_pack, tmp_path / "o1", embed_missing=False)
    result = refit_detailed(p, base_pack, tmp_path / "o2")
    assert any("embedded from image pixels" in n for n in result.training.notes)
    assert result.metrics["accuracy"] >= 0.9
    p.close()


def test_grouped_holdout_by_case(tmp_path, base_pack):
    slides = []
    for seed in (1, 2, 3):
        arr, truth = tile_slide(seed=seed)
        slides.append((write_tiff(tmp_path / f"s{seed}.tif", arr), truth))
    p = make_project(tmp_path / "proj", slides, base_pack, case_ids=["A", "B", "C"])
    result = refit_detailed(p, base_pack, tmp_path / "o")
    assert result.metrics["holdout"] == "grouped by case"
    held = result.metrics["n"]
    per_image = [len(p.items(image_id=im.id, level="tile")) for im in p.images()]
    assert held in per_image  # one whole case
    assert result.metrics["accuracy"] >= 0.9
    p.close()


def test_project_classes_added_and_merged(tmp_path, slide, base_pack):
    """A class added in the project is learned; a class merged away disappears from the new head."""
    p = make_project(tmp_path / "proj", [slide], base_pack)
    schema = p.schema
    schema.add("purple", color="#800080", hotkey="7")
    purple = schema.by_name("purple").id
    items = p.items(level="tile")
    truth_blue = [int(i) for i, lab in zip(items["item_id"], items["label"]) if lab == [schema.by_name("blue").id]]
    for iid in truth_blue[: len(truth_blue) // 2]:
        p.set_label(iid, purple, "alice")  # half the blue tiles become "purple" (a new, unlearnable class here)
    schema.merge(schema.by_name("green").id, schema.by_name("red").id, "alice")
    result = refit_detailed(p, base_pack, tmp_path / "o")
    names = [c["name"] for c in result.pack.classes]
    assert names == ["red", "blue", "purple"]
    assert result.pack.classes[2]["color"] == "#800080" and result.pack.classes[2]["hotkey"] == "7"
    counts = result.training.class_counts()
    assert counts["red"] > counts["blue"] > 0 and counts["purple"] > 0
    p.close()


def test_card_is_valid_yaml_and_version_bumped(project, base_pack, tmp_path):
    pack = refit(project, base_pack, tmp_path / "o", seed=3)
    card = yaml.safe_load((pack.path / "cytoreview.yaml").read_text())
    assert card["version"] == "1.1.0"
    assert card["outputs"]["probabilities"]["activation"] == "none"
    assert card["outputs"]["embedding"] == {"name": "embedding"}
    assert card["provenance"]["created"]


def test_reviewed_plus_confident_model_calls(tmp_path, slide, base_pack):
    p = make_project(tmp_path / "proj", [slide], base_pack, label_fraction=0.4, seed=2)
    table = p.label_table()
    tiles = table[table["level"] == "tile"]
    n_reviewed = int(tiles["reviewed"].sum())
    confident = int((~tiles["reviewed"] & (tiles["confidence"] >= 0.6)).sum())
    assert 0 < n_reviewed < len(tiles) and confident > 0
    result = refit_detailed(p, base_pack, tmp_path / "o", select="reviewed+confident", min_confidence=0.6)
    assert result.training.n_items == n_reviewed + confident
    assert int(result.training.reviewed.sum()) == n_reviewed
    # only reviewer labels are held out
    assert 0 < result.metrics["n"] <= n_reviewed
    assert any("unreviewed item(s)" in n for n in result.training.notes)
    plain = refit_detailed(p, base_pack, tmp_path / "o2")
    assert plain.training.n_items == n_reviewed and plain.training.reviewed is None
    p.close()


def test_base_head_as_prior(project, base_pack, tmp_path):
    from cytoreview.train.onnx_head import extract_linear_head

    from .conftest import BASE_PERMUTATION

    w, b = extract_linear_head(base_pack / "model.onnx", "embedding", "probs")
    expected = np.zeros((6, 3), np.float32)
    for src, dst in enumerate(BASE_PERMUTATION):
        expected[src, dst] = 3.0 * 2.0  # the Mul by 2 after the MatMul is folded in
    np.testing.assert_allclose(w, expected)
    np.testing.assert_allclose(b, 0.0)
    # held very close to the base head, the refit keeps the base's confusion; from zero it learns the labels
    stiff = refit_detailed(project, base_pack, tmp_path / "stiff", prior="base", reg=1e4)
    assert stiff.metrics["accuracy"] == pytest.approx(stiff.metrics["base_accuracy"], abs=0.1)
    assert stiff.pack.card["provenance"]["method"]["prior"] == "base head"
    loose = refit_detailed(project, base_pack, tmp_path / "loose", prior="base", reg=1e-3)
    assert loose.metrics["accuracy"] >= 0.9
    with pytest.raises(ExportError, match="prior"):
        refit_detailed(project, base_pack, tmp_path / "bad", prior="other")


def test_cancel_leaves_nothing(project, base_pack, tmp_path):
    import threading

    stop = threading.Event()
    stop.set()
    stages = []
    with pytest.raises(CytoreviewError, match="cancelled"):
        refit_detailed(project, base_pack, tmp_path / "o", cancel=stop, progress=lambda *a: stages.append(a))
    assert not (tmp_path / "o").exists()
    assert not list(tmp_path.glob(".o.tmp-*"))
    assert stages and stages[0][0] == "embeddings"
