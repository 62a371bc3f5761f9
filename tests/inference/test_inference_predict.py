"""predict(): store layout, tissue skipping, batching, determinism, resume, halo stitching, cells."""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
import pytest
import zarr
from .conftest import CountingSession, wsi
from tests.models.onnx_graphs import base_card, classifier_graph, segmenter_graph, write_pack

from cytoreview.errors import PackError
from cytoreview.inference import PredictionStore, list_stores, predict
from cytoreview.inference.predict import choose_batch_size
from cytoreview.io.image import Image
from cytoreview.models import load_pack

ARRAYS = ("tile_class", "tile_prob", "tile_uncertainty", "tissue", "done")


def _colour_classes(arr, t=16):
    """Expected class per tile of blob_slide: the dominant channel of coloured tiles, -1 on white."""
    h, w = arr.shape[:2]
    blocks = arr.reshape(h // t, t, w // t, t, 3).astype(float).mean(axis=(1, 3))
    expected = blocks.argmax(axis=-1)
    expected[blocks.min(axis=-1) > 200] = -1
    return expected


def _arrays(store: PredictionStore) -> dict:
    out = {name: np.asarray(store.group[name][:]) for name in ARRAYS}
    for name in ("embedding", "mask", "mask_score"):
        if name in store.group:
            out[name] = np.asarray(store.group[name][:])
    out.update({f"cells/{k}": v for k, v in store.cells().items()})
    return out


def _assert_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)  # NaN == NaN here; exact bits otherwise


def test_tile_classification_store_layout(slide, make_pack, tmp_path):
    card = base_card("colours", outputs={"probabilities": {"name": "probs"}, "embedding": {"name": "embedding"}})
    pack = load_pack(make_pack("colours", card=card, embedding=True))
    seen = []
    store = predict(slide, pack, tmp_path / "out", threads=1, progress=lambda d, t: seen.append((d, t)))
    assert store.path == tmp_path / "out" / "slide__colours@1.0.0.zarr"
    assert store.complete and store.classes == pack.classes and store.pack_ref == "colours@1.0.0"
    attrs = store.attrs
    for key, value in {
        "pack": "colours",
        "pack_version": "1.0.0",
        "task": "tile-classification",
        "image_path": str(slide.path.resolve()),
        "model_mpp": 0.5,
        "level": 0,
        "tile_px_level0": 16,
        "n_fields": 1,
        "complete": True,
    }.items():
        assert attrs[key] == value, key
    g = zarr.open_group(str(store.path), mode="r")
    assert g["tile_class"].dtype == np.int16 and g["tile_class"].shape == (1, 6, 8)
    assert g["tile_prob"].dtype == np.float32 and g["tile_prob"].shape == (1, 6, 8, 3)
    assert g["tile_uncertainty"].dtype == np.float32 and g["tissue"].dtype == bool
    assert g["embedding"].shape == (1, 6, 8, 3)

    expected = _colour_classes(np.asarray(slide.levels[0]))
    cls = store.tile_class[:][0]
    np.testing.assert_array_equal(cls, expected)
    prob, unc, tissue = store.tile_prob[:][0], store.tile_uncertainty[:][0], store.tissue[:][0]
    np.testing.assert_array_equal(tissue, expected >= 0)
    assert np.isnan(prob[~tissue]).all() and np.isnan(unc[~tissue]).all()
    np.testing.assert_allclose(prob[tissue].sum(-1), 1, rtol=1e-5)
    assert ((unc[tissue] > 0) & (unc[tissue] < 1)).all()
    assert seen[0] == (0, tissue.sum()) and seen[-1] == (tissue.sum(), tissue.sum())
    assert store.tile_bounds(2, 3) == (32, 48, 48, 64)
    table = store.tile_table()
    assert len(table) == tissue.sum() and (table["class"] == cls[table["row"], table["col"]]).all()
    assert [s.path for s in list_stores(tmp_path / "out", slide.path)] == [store.path]
    assert list_stores(tmp_path / "out", tmp_path / "other" / "slide.tif") == []


def test_background_tiles_are_not_run(slide, make_pack, tmp_path):
    pack = load_pack(make_pack())
    sess = CountingSession(pack.session(threads=1))
    store = predict(slide, pack, tmp_path / "a", session=sess, batch_size=4)
    n_tissue = int(store.tissue[:].sum())
    assert 0 < n_tissue < 48 and sess.patches == n_tissue and sess.calls == -(-n_tissue // 4)
    assert (store.tile_class[:][~store.tissue[:]] == -1).all()

    assert not [t.name for t in threading.enumerate() if t.name.startswith("cytoreview-")]  # no threads left behind

    none = CountingSession(pack.session(threads=1))
    empty = predict(slide, pack, tmp_path / "b", session=none, tissue_threshold=1.01)
    assert none.calls == 0 and empty.complete and (empty.tile_class[:] == -1).all()


def test_field_sets_have_one_grid_per_field(make_pack, tmp_path):
    fields = np.full((3, 32, 48, 3), 245, dtype=np.uint8)
    fields[0, :16, :16] = [220, 30, 30]
    fields[1, 16:, 32:] = [30, 30, 220]
    fields[2, :, :] = [30, 200, 30]
    image = Image(path=tmp_path / "case-7", kind="fields", levels=[fields], mpp=0.5, reader="test")
    store = predict(image, load_pack(make_pack()), tmp_path / "out", threads=1, tissue_threshold=0.05)
    assert store.path.name == "case-7__test-pack@1.0.0.zarr" and store.attrs["n_fields"] == 3
    np.testing.assert_array_equal(
        store.tile_class[:], [[[0, -1, -1], [-1, -1, -1]], [[-1, -1, -1], [-1, -1, 2]], [[1, 1, 1], [1, 1, 1]]]
    )
    # by default every tile of a field set runs: sparse pale cells must not be gated away
    everything = predict(image, load_pack(make_pack()), tmp_path / "all", threads=1)
    assert everything.attrs["tissue_threshold"] == 0.0
    assert (everything.tile_class[:] >= 0).all()


def test_fixed_batch_model_and_results_are_bit_identical(slide, tmp_path):
    fixed = load_pack(write_pack(tmp_path / "f", base_card("fixed"), classifier_graph, batch=4))
    dynamic = load_pack(write_pack(tmp_path / "d", base_card("dyn"), classifier_graph))
    a = predict(slide, fixed, tmp_path / "o1", threads=1)
    b = predict(slide, fixed, tmp_path / "o2", threads=1, resume=False)
    _assert_identical(_arrays(a), _arrays(b))
    c = predict(slide, dynamic, tmp_path / "o3", threads=1, batch_size=5)
    np.testing.assert_array_equal(a.tile_class[:], c.tile_class[:])
    np.testing.assert_allclose(a.tile_prob[:], c.tile_prob[:], rtol=1e-5)
    assert a.attrs["batch_size"] == 4 and c.attrs["batch_size"] == 5


def test_cancel_then_resume_gives_the_identical_store(slide, make_pack, tmp_path):
    card = base_card("emb", outputs={"probabilities": {"name": "probs"}, "embedding": {"name": "embedding"}})
    pack = load_pack(make_pack("emb", card=card, embedding=True))
    reference = predict(slide, pack, tmp_path / "ref", threads=1, batch_size=3)

    cancel = threading.Event()

    def stop_after_two_batches(done, total):
        if done >= 6:
            cancel.set()

    partial = predict(
        slide,
        pack,
        tmp_path / "out",
        threads=1,
        batch_size=3,
        cancel=cancel,
        progress=stop_after_two_batches,
        readers=1,
    )
    done = partial.done[:]
    assert not partial.complete and 0 < done.sum() < done.size
    assert (partial.tile_class[:][0][~done[0]] == -1).all()  # unfinished rows hold nothing

    sess = CountingSession(pack.session(threads=1))
    resumed = predict(slide, pack, tmp_path / "out", session=sess, resume=True)  # batch size taken from the store
    assert resumed.complete and sess.patches < int(reference.tissue[:].sum())
    _assert_identical(_arrays(resumed), _arrays(reference))

    again = CountingSession(pack.session(threads=1))
    predict(slide, pack, tmp_path / "out", session=again)
    assert again.calls == 0  # complete store returned as is


def test_killed_run_resumes_from_done_rows(slide, make_pack, tmp_path):
    pack = load_pack(make_pack())
    reference = _arrays(predict(slide, pack, tmp_path / "ref", threads=1, batch_size=4))
    store = predict(slide, pack, tmp_path / "out", threads=1, batch_size=4)
    g = zarr.open_group(str(store.path), mode="r+")
    g["done"][0, 3:] = False  # as if the process died after row 2
    g["tile_class"][0, 4:] = -1
    g.attrs["complete"] = False
    resumed = predict(slide, pack, tmp_path / "out", threads=1)
    _assert_identical(_arrays(resumed), reference)


def test_changed_pack_restarts_instead_of_resuming(slide, tmp_path):
    pack = load_pack(write_pack(tmp_path / "p", base_card("p"), classifier_graph))
    predict(slide, pack, tmp_path / "out", threads=1)
    swapped = load_pack(write_pack(tmp_path / "p", base_card("p"), classifier_graph, weights=np.eye(3)[::-1] * 10))
    store = predict(slide, swapped, tmp_path / "out", threads=1)
    expected = _colour_classes(np.asarray(slide.levels[0]))
    flipped = np.where(expected >= 0, 2 - expected, -1)
    np.testing.assert_array_equal(store.tile_class[:][0], flipped)


def test_nan_model_fails_naming_the_model(slide, tmp_path):
    pack = load_pack(write_pack(tmp_path / "n", base_card("broken"), classifier_graph, nan=True))
    with pytest.raises(PackError, match="broken@1.0.0"):
        predict(slide, pack, tmp_path / "out", threads=1)


def test_coarser_model_runs_on_the_matching_level(tmp_path):
    arr = np.full((128, 128, 3), 245, dtype=np.uint8)
    arr[:64, :64] = [220, 30, 30]
    arr[64:, 64:] = [30, 30, 220]
    image = wsi(arr, mpp=0.25, n_levels=3, path=tmp_path / "pyr.tif")
    card = base_card("coarse", input={"mpp": 1.0, "size_px": 16})
    store = predict(image, load_pack(write_pack(tmp_path / "c", card, classifier_graph)), tmp_path / "o", threads=1)
    assert store.attrs["level"] == 2 and store.tile_px_level0 == 64
    np.testing.assert_array_equal(store.tile_class[:][0], [[0, -1], [-1, 2]])
    fine = base_card("fine", input={"mpp": 0.1, "size_px": 16})
    with pytest.raises(PackError, match="would be upsampled"):
        predict(image, load_pack(write_pack(tmp_path / "f", fine, classifier_graph)), tmp_path / "o")


def _segmenter(tmp_path, name="seg", pad="constant"):
    card = base_card(
        name,
        task="segmentation",
        input={"size_px": 16, "pad": pad},
        outputs={"probabilities": {"name": "probs"}, "halo_px": 1},
        classes=[{"id": 0, "name": "background"}, {"id": 1, "name": "nucleus"}],
    )
    return load_pack(write_pack(tmp_path / name, card, segmenter_graph))


def test_halo_stitching_equals_whole_image_run(tmp_path):
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (50, 61, 3), dtype=np.uint8)
    image = wsi(arr, mpp=0.5, path=tmp_path / "noise.tif")
    pack = _segmenter(tmp_path)
    store = predict(image, pack, tmp_path / "out", threads=1, tissue_threshold=0.0, batch_size=5)
    o, halo = 14, 1
    n_rows, n_cols = -(-50 // o), -(-61 // o)
    assert store.mask.shape == (1, n_rows * o, n_cols * o) and store.mask_px_level0 == 1.0

    # reference: the same graph over the whole white-padded image in one run
    padded = np.full((n_rows * o + 2 * halo, n_cols * o + 2 * halo, 3), 255, dtype=np.uint8)
    padded[halo : halo + 50, halo : halo + 61] = arr
    sess = ort.InferenceSession(str(pack.onnx_path), providers=["CPUExecutionProvider"])
    x = (padded.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    logits = sess.run(["probs"], {"image": x})[0][0]
    np.testing.assert_array_equal(store.mask[:][0], logits.argmax(axis=0))
    probs = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
    # mask_score is the foreground probability: the summed probability of the cell classes (here class 1)
    np.testing.assert_allclose(store.group["mask_score"][:][0], probs[1], rtol=1e-5, atol=1e-7)


def test_reflect_padding_mirrors_the_image_at_its_border(tmp_path):
    rng = np.random.default_rng(4)
    arr = rng.integers(0, 256, (50, 61, 3), dtype=np.uint8)
    image = wsi(arr, mpp=0.5, path=tmp_path / "noise.tif")
    pack = _segmenter(tmp_path, "refl", pad="reflect")
    store = predict(image, pack, tmp_path / "out", threads=1, tissue_threshold=0.0, batch_size=5)
    o, halo = 14, 1
    n_rows, n_cols = -(-50 // o), -(-61 // o)
    # reference: the image mirrored (edge pixel repeated) by one halo pixel; only in-image outputs are compared
    padded = np.pad(arr, ((halo, halo), (halo, halo), (0, 0)), mode="symmetric")
    sess = ort.InferenceSession(str(pack.onnx_path), providers=["CPUExecutionProvider"])
    x = (padded.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    logits = sess.run(["probs"], {"image": x})[0][0]
    probs = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
    np.testing.assert_allclose(store.group["mask_score"][:][0, :50, :61], probs[1], rtol=1e-5, atol=1e-6)


def test_reflect_outside_is_numpys_symmetric_pad_of_the_inside_even_when_the_outside_is_wider():
    """Patches past the image border by more than their inside part (repeated reflections), on every side, mirrored
    in place."""
    from types import SimpleNamespace

    from cytoreview.inference.segment import reflect_outside

    s, out_px, halo = 20, 14, 3
    grid = SimpleNamespace(plane_shape=(31, 45), model_mpp=0.5, image_mpp=0.5, size_px=s,
                           model_origin=lambda i: i * out_px - halo)
    tiles = np.array([(0, r, c) for r in range(3) for c in range(4)], dtype=np.int64)
    patches = np.random.default_rng(5).integers(0, 256, (len(tiles), s, s, 3), dtype=np.uint8)
    before = patches.copy()
    got = reflect_outside(patches, tiles, grid)
    assert got is patches
    for i, (_, r, c) in enumerate(tiles.tolist()):
        y0, x0 = r * out_px - halo, c * out_px - halo
        top, left = max(0, -y0), max(0, -x0)
        bottom, right = max(0, y0 + s - 31), max(0, x0 + s - 45)
        inner = before[i, top : s - bottom, left : s - right]
        expected = np.pad(inner, ((top, bottom), (left, right), (0, 0)), mode="symmetric")
        np.testing.assert_array_equal(got[i], expected)
    assert any(max(0, r * out_px - halo + s - 31) > s // 2 for _, r, _ in tiles.tolist())  # wider than the inside


def test_segmenter_cells_in_level0_pixels(tmp_path):
    arr = np.full((64, 80, 3), 250, dtype=np.uint8)
    yy, xx = np.mgrid[:64, :80]
    centres = [(10, 12), (30, 45), (50, 70), (27, 28)]  # (27, 28) straddles a tile corner (tiles are 14 px)
    for cy, cx in centres:
        arr[(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = [60, 20, 90]
    image = wsi(arr, mpp=0.5, path=tmp_path / "cells.tif")
    store = predict(image, _segmenter(tmp_path), tmp_path / "out", threads=1)
    cells = store.cells()
    assert len(cells["y_px"]) == 4 and set(cells["class"]) == {1} and (cells["field"] == 0).all()
    found = sorted(zip(cells["y_px"].round(3), cells["x_px"].round(3)))
    np.testing.assert_allclose(found, sorted(centres), atol=1e-6)
    assert ((cells["score"] > 0.5) & (cells["score"] < 1)).all()
    assert store.tile_class[:][0, 0, 0] == 0  # tile mostly glass


def test_batch_size_choice():
    assert choose_batch_size(128) == 8 and choose_batch_size(64) == 32 and choose_batch_size(512) == 8
    assert choose_batch_size(16) == 64 and choose_batch_size(256, fixed_batch=4) == 4
    assert choose_batch_size(96) == 8 and choose_batch_size(48) == 32  # 16 x 96² or 64 x 48² px: 147 kpixel, over 128


def test_interrupted_run_keeps_finished_rows(slide, make_pack, tmp_path):
    pack = load_pack(make_pack())
    reference = _arrays(predict(slide, pack, tmp_path / "ref", threads=1, batch_size=2))

    class Interrupt(Exception):
        pass

    def interrupt(done, total):
        if done >= 8:
            raise Interrupt  # as Ctrl+C would, in the middle of the run

    with pytest.raises(Interrupt):
        predict(slide, pack, tmp_path / "out", threads=1, batch_size=2, progress=interrupt)
    partial = PredictionStore(next((tmp_path / "out").glob("*.zarr")))
    assert not partial.complete and partial.done[:].any()
    _assert_identical(_arrays(predict(slide, pack, tmp_path / "out", threads=1)), reference)


def test_cells_from_overlapping_blocks_match_the_whole_mask(tmp_path):
    from cytoreview.inference.instances import CELL_COLUMNS, cells_from_store

    arr = np.full((64, 80, 3), 250, dtype=np.uint8)
    yy, xx = np.mgrid[:64, :80]
    for cy, cx in [(5, 12), (15, 45), (16, 20), (31, 33), (50, 70), (60, 8)]:
        arr[(yy - cy) ** 2 + (xx - cx) ** 2 <= 12] = [60, 20, 90]
    image = wsi(arr, mpp=0.5, path=tmp_path / "strips.tif")
    pack = _segmenter(tmp_path)
    store = predict(image, pack, tmp_path / "out", threads=1)
    whole = store.cells()
    group = zarr.open_group(str(store.path), mode="r")
    strips, _ = cells_from_store(group, pack.card, pack.classes, block_px=10, margin_px=8)
    order_w, order_s = np.lexsort((whole["x_px"], whole["y_px"])), np.lexsort((strips["x_px"], strips["y_px"]))
    assert len(whole["y_px"]) == 6
    for key in CELL_COLUMNS:
        np.testing.assert_allclose(strips[key][order_s], whole[key][order_w], err_msg=key)
