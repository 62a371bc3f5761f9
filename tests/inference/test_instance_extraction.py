"""The vectorised instance extraction against scikit-image references: per-cell properties equal regionprops, outlines
are closed simple polygons on find_contours' iso-line whose rasterisation is the cell."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_fill_holes
from shapely.geometry import LinearRing, Point, Polygon
from skimage.draw import polygon as draw_polygon
from skimage.measure import find_contours, label, regionprops

from cytoreview.inference.instances import extract_instances, instance_properties
from cytoreview.inference.outlines import label_outlines


def touching_cells(shape=(120, 150), seed=0):
    """4-connected instances: discs packed so that many touch, several cut by the image border, two one-pixel cells, a two-pixel cell and a
    ring (a cell with a hole)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    labels = np.zeros(shape, dtype=np.int32)
    yy, xx = np.mgrid[:h, :w]
    k = 0
    for cy in range(-4, h + 8, 13):
        for cx in range(-3, w + 8, 14):
            r = rng.uniform(5.5, 8.5)
            disc = ((yy - cy - rng.uniform(-2, 2)) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)
            if disc.any():
                k += 1
                labels[disc] = k
    labels[60:75, 60:75] = 0
    ring = (np.hypot(yy - 67, xx - 67) <= 7) & (np.hypot(yy - 67, xx - 67) > 3)
    labels[ring] = k + 1
    labels[0, 0] = k + 2  # one-pixel cell in the corner
    labels[h - 1, w // 2] = k + 3  # one-pixel cell on the border, touching others
    labels[30:32, 147:150] = 0
    labels[30, 148:150] = k + 4  # two-pixel cell at the right border
    return label(labels, background=0, connectivity=1).astype(np.int32)  # each instance in one piece


def rasterised(poly: np.ndarray, shape) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    rr, cc = draw_polygon(poly[:, 0], poly[:, 1], shape)
    out[rr, cc] = True
    return out


def test_properties_equal_regionprops_with_touching_border_and_one_pixel_cells():
    labels = touching_cells()
    rng = np.random.default_rng(1)
    fg = rng.random(labels.shape).astype(np.float32)
    cls = rng.integers(-2, 5, size=labels.shape).astype(np.int16)
    cell_ids = [4, 1, 3]
    got = instance_properties(labels, fg, cls=cls, cell_ids=cell_ids)
    ref = regionprops(labels, intensity_image=fg)
    assert got["label"].tolist() == [r.label for r in ref]
    for i, r in enumerate(ref):
        vals = r.image_intensity[r.image]
        assert got["area_px"][i] == r.area
        np.testing.assert_allclose([got["y"][i], got["x"][i]], r.centroid, rtol=0, atol=1e-9)
        assert got["prob_mean"][i] == pytest.approx(float(vals.mean()), rel=1e-5)
        assert got["prob_max"][i] == vals.max()
        y0, x0, y1, x1 = r.bbox
        inside = cls[y0:y1, x0:x1][r.image]
        assert got["class"][i] == max((int(np.count_nonzero(inside == k)), k) for k in cell_ids)[1]


def test_majority_class_ties_and_no_cell_pixel_go_to_the_larger_id():
    labels = np.array([[1, 1, 2, 2]], dtype=np.int32)
    cls = np.array([[3, 5, -2, -2]], dtype=np.int16)
    got = instance_properties(labels, np.ones((1, 4), np.float32), cls=cls, cell_ids=[5, 3])
    assert got["class"].tolist() == [5, 5]
    single = instance_properties(labels, np.ones((1, 4), np.float32), cls=cls, cell_ids=[3])
    assert single["class"].tolist() == [3, 3]


def test_empty_input_gives_empty_columns_and_one_offset():
    for fg in (np.zeros((40, 50), np.float32), np.full((40, 50), np.nan, np.float32), np.zeros((0, 0), np.float32)):
        got = extract_instances(fg, split="watershed")
        assert all(len(got[k]) == 0 for k in ("y", "x", "area_px", "prob_mean", "prob_max", "class"))
        assert got["outline_yx"].shape == (0, 2) and got["outline_offset"].tolist() == [0]


def test_outlines_are_closed_simple_and_rasterise_to_the_cell():
    labels = touching_cells()
    props = instance_properties(labels, np.ones(labels.shape, np.float32))
    yx, off = label_outlines(labels, props["label"])
    exact, exact_off = label_outlines(labels, props["label"], tolerance_px=0)
    assert yx.dtype == np.float32 and off.dtype == np.int64 and len(off) == len(props["label"]) + 1
    assert len(yx) < len(exact)  # the simplification did something
    for i, lab in enumerate(props["label"]):
        poly, full = yx[off[i] : off[i + 1]], exact[exact_off[i] : exact_off[i + 1]]
        assert (poly[0] == poly[-1]).all() and len(poly) >= 4
        assert LinearRing(poly).is_simple and Polygon(poly).area > 0
        inst = labels == lab
        filled = rasterised(full, labels.shape)
        # the exact loop is the 0.5 iso-line: its pixel centres are the cell, holes filled
        assert (filled == binary_fill_holes(inst)).all(), lab
        m = rasterised(poly, labels.shape)
        if inst.sum() >= 20:
            iou = (m & inst).sum() / (m | inst).sum()
            assert iou >= (0.9 if lab != labels[67, 62] else 0.5), (lab, iou)
        # every exact vertex lies within the tolerance of the simplified outline
        ring = LinearRing(poly)
        assert max(ring.distance(Point(p)) for p in full) <= 0.5 + 1e-6


def test_exact_outline_is_find_contours_iso_line():
    labels = touching_cells(seed=3)
    props = instance_properties(labels, np.ones(labels.shape, np.float32))
    exact, off = label_outlines(labels, props["label"], tolerance_px=0)
    for i, lab in enumerate(props["label"]):
        ys, xs = np.nonzero(labels == lab)
        y0, x0 = ys.min(), xs.min()
        crop = np.pad(labels[y0 : ys.max() + 1, x0 : xs.max() + 1] == lab, 1).astype(np.float32)
        contour = max(find_contours(crop, 0.5), key=len) + [y0 - 1, x0 - 1]
        mine = exact[off[i] : off[i + 1]]
        # same polygon: our corners are find_contours' vertices, and the two outline the same area
        ref = {tuple(v) for v in np.round(contour * 2).astype(int).tolist()}
        assert {tuple(v) for v in np.round(mine * 2).astype(int).tolist()} <= ref
        assert Polygon(mine).area == pytest.approx(Polygon(contour).area, abs=1e-6)


def test_diagonal_touch_keeps_the_parts_apart():
    labels = np.zeros((8, 8), dtype=np.int32)
    labels[1:4, 1:4] = 1
    labels[4:7, 4:7] = 1  # the same instance, joined only at one corner
    yx, off = label_outlines(labels, [1], tolerance_px=0)
    assert LinearRing(yx).is_simple
    assert rasterised(yx, labels.shape).sum() == 9  # one of the two squares, not a figure eight


def test_extract_instances_outlines_match_the_cells_it_reports():
    yy, xx = np.mgrid[:90, :90]
    fg = np.zeros((90, 90), np.float32)
    for cy, cx, r in ((20, 20, 8), (20, 33, 7), (60, 62, 10), (3, 70, 6), (88, 10, 5)):
        fg[np.hypot(yy - cy, xx - cx) <= r] = 0.9
    got = extract_instances(fg, split="watershed", min_area_px=10)
    assert len(got["y"]) == 5
    off = got["outline_offset"]
    for i in range(len(got["y"])):
        poly = got["outline_yx"][off[i] : off[i + 1]]
        m = rasterised(poly, fg.shape)
        assert abs(m.sum() - got["area_px"][i]) <= 0.1 * got["area_px"][i]
        assert np.hypot(*(np.argwhere(m).mean(0) - [got["y"][i], got["x"][i]])) < 1.0


def test_field_groups_follow_chunks_and_the_budget():
    from cytoreview.inference.segment import field_groups

    assert field_groups(7, 3, 10, budget_px=100) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert field_groups(7, 3, 10, budget_px=20) == [slice(0, 2), slice(2, 3), slice(3, 5), slice(5, 6), slice(6, 7)]
    assert field_groups(2, 4, 10**9) == [slice(0, 1), slice(1, 2)]  # a field larger than the budget: one at a time


def test_store_passes_read_fields_together_and_match_field_by_field(tmp_path):
    """cells_from_store and the pixel pyramid on a store whose chunks hold several fields: the same cells (in field
    order) as extraction on each whole field, and each field's pyramid level 0 is its own mask."""
    import zarr

    from cytoreview.inference.instances import cells_from_store
    from cytoreview.inference.pyramid import build_pixel_pyramid

    rng = np.random.default_rng(4)
    n_fields, h, w = 5, 150, 170
    yy, xx = np.mgrid[:h, :w]
    score = np.full((n_fields, h, w), 0.05, dtype=np.float32)
    for f in range(n_fields):
        for _ in range(8 + 3 * f):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, 8)
            score[f][np.hypot(yy - cy, xx - cx) <= r] = rng.uniform(0.6, 0.99)
    score[3] = 0.05  # a field without cells
    mask = np.where(score >= 0.5, 1, -2).astype(np.int16)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    g.create_array("mask", shape=mask.shape, dtype="int16", chunks=(3, 64, 96), fill_value=-1)[:] = mask
    g.create_array("mask_score", shape=mask.shape, dtype="float32", chunks=(3, 64, 96), fill_value=np.nan)[:] = score
    g.attrs.update({"model_mpp": 0.5, "mask_px_level0": 1.0, "size_px": 64, "halo_px": 0, "image_shape": [h, w]})
    classes = [{"id": 1, "name": "cell", "level": "cell"}]
    card = {"outputs": {"probabilities": {"threshold": 0.5}}, "cells": {"split": "none", "min_area_um2": 2.0}}
    cells, notes = cells_from_store(g, card, classes, block_px=64, margin_px=40, out_px=64)
    assert notes == []
    assert (np.diff(cells["field"]) >= 0).all()  # field by field
    for f in range(n_fields):
        ref = extract_instances(score[f], split="none", min_area_px=2.0 / 0.25, cell_ids=[1])
        sel = cells["field"] == f
        got = sorted(zip(np.round(cells["y_px"][sel], 6), np.round(cells["x_px"][sel], 6), cells["area_px"][sel]))
        want = sorted(zip(np.round(ref["y"], 6), np.round(ref["x"], 6), ref["area_px"].astype(int)))
        assert got == want, f
    assert (cells["field"] == 3).sum() == 0 and len(cells["y_px"]) > 40
    build_pixel_pyramid(g, classes)
    level0 = np.asarray(g["pixels/labels/0"][:])
    np.testing.assert_array_equal(level0, (mask == 1).astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(g["pixels/foreground/0"][:]), score)


def test_mask_chunks_are_one_field_deep_once_a_field_fills_a_chunk(tmp_path):
    """A field set's mask chunks hold whole fields, as few as make MIN_MASK_CHUNK_PX: a flush of finished rows then
    completes chunks instead of re-encoding a many-field chunk; tiny fields still share chunks."""
    from types import SimpleNamespace

    from cytoreview.inference.store import MIN_MASK_CHUNK_PX, init_store

    big = SimpleNamespace(n_fields=8, n_rows=10, n_cols=16, out_px=64)  # 640 x 1024 px fields
    g = init_store(tmp_path / "a.zarr", {}, big, 1, None, True, boundary=True, chunks=(7, 10))
    assert g["tile_class"].chunks == (7, 10, 16)
    for name in ("mask", "mask_score", "boundary"):
        assert g[name].chunks == (1, 640, 1024)
    tiny = SimpleNamespace(n_fields=300, n_rows=1, n_cols=1, out_px=64)  # 4096 px fields
    g = init_store(tmp_path / "b.zarr", {}, tiny, 1, None, True, chunks=(256, 1))
    depth = g["mask"].chunks[0]
    assert depth == -(-MIN_MASK_CHUNK_PX // 4096) and depth <= 256


def test_a_card_splitting_at_an_output_the_store_lacks_says_so(tmp_path):
    """A store written without the output the card splits touching cells at (an older pack version) is not split
    silently another way: the fallback is named in the warnings predict prints and keeps."""
    import warnings

    import zarr

    from cytoreview.inference.instances import CellSplitWarning, cells_from_store

    yy, xx = np.mgrid[:80, :80]
    score = np.full((1, 80, 80), 0.05, dtype=np.float32)
    score[0][np.hypot(yy - 40, xx - 30) <= 9] = 0.9
    score[0][np.hypot(yy - 40, xx - 48) <= 9] = 0.9  # two touching discs
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    g.create_array("mask", shape=score.shape, dtype="int16", chunks=(1, 80, 80))[:] = np.where(score >= 0.5, 1, -2)
    g.create_array("mask_score", shape=score.shape, dtype="float32", chunks=(1, 80, 80))[:] = score
    g.attrs.update({"model_mpp": 0.5, "mask_px_level0": 1.0, "size_px": 80, "halo_px": 0, "image_shape": [80, 80]})
    classes = [{"id": 1, "name": "cell", "level": "cell"}]
    for split, fallback in (("markers", "watershed"), ("boundary", "watershed")):
        card = {"outputs": {"probabilities": {"threshold": 0.5}}, "cells": {"split": split, "min_area_um2": 2.0}}
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            cells, notes = cells_from_store(g, card, classes, block_px=80, margin_px=16, out_px=80)
        assert len(notes) == 1 and f"at its {split} output" in notes[0] and f"split by {fallback}" in notes[0]
        assert any(issubclass(w.category, CellSplitWarning) for w in seen)
        assert len(cells["y_px"]) == 2  # the distance watershed still separates the two discs


def test_orphan_foreground_is_numbered_as_on_the_whole_image():
    """Foreground no seed reached becomes objects of its own, labelled on the box around it: the same numbers
    (raster order) as labelling the whole image."""
    from skimage.measure import label

    from cytoreview.inference.instances import _with_orphans

    rng = np.random.default_rng(3)
    for _ in range(200):
        h, w = rng.integers(1, 50, 2)
        binary = rng.random((h, w)) < rng.uniform(0, 1)
        seeded = binary & (rng.random((h, w)) < rng.uniform(0, 1))
        labels = np.where(seeded, rng.integers(1, 9, (h, w)), 0)
        whole = label(binary & (labels == 0), connectivity=2)
        want = np.where(whole > 0, whole + labels.max(), labels).astype(np.int32)
        got = _with_orphans(labels, binary)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want)
