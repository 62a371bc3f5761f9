"""Field-set sample cases: layout, determinism, ground-truth consistency, class balance."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from cytoreview.samples.fieldset import FIELD_COLS, FIELD_ROWS


def _cells(folder):
    with open(folder / "ground_truth" / "cells.csv", newline="") as fh:
        return [tuple(int(v) for v in (r["field"], r["y_px"], r["x_px"], r["class"])) for r in csv.DictReader(fh)]


def _labelmap(folder, i):
    return np.asarray(Image.open(folder / "ground_truth" / f"labelmap_{i:03d}.png"))


@pytest.mark.parametrize("case", ["committed_warthin", "committed_effusion"])
def test_layout_and_metadata(case, request):
    folder = request.getfixturevalue(case)
    info = json.loads((folder / "cytoscan.json").read_text())
    assert info["mpp"] == pytest.approx(0.293)
    assert info["magnification"] == 450
    for key in ("case_id", "specimen", "stain", "generator", "seed"):
        assert key in info, key
    assert info["generator"].startswith("cytoreview.samples ")
    assert info["n_fields"] == 8
    classes = json.loads((folder / "ground_truth" / "classes.json").read_text())
    assert [c["id"] for c in classes] == list(range(len(classes)))
    assert all(set(c) >= {"id", "name", "color"} for c in classes)
    with open(folder / "ground_truth" / "fields.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["filename"] for r in rows] == [f"field_{i:03d}.jpg" for i in range(8)]
    names = {c["name"] for c in classes}
    for i, r in enumerate(rows):
        assert set(r["labels"].split("|")) <= names
        with Image.open(folder / r["filename"]) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (FIELD_COLS, FIELD_ROWS)
        lm = _labelmap(folder, i)
        assert lm.shape == (FIELD_ROWS, FIELD_COLS) and lm.dtype == np.uint8
        assert lm.max() < len(classes)


def test_committed_copies_match_the_generator(committed_warthin, committed_effusion, fresh_warthin, fresh_effusion):
    """Same seed -> byte-identical files, and the committed sample_data is what the current code renders."""
    for fresh, committed, n in ((fresh_warthin, committed_warthin, 2), (fresh_effusion, committed_effusion, 3)):
        for i in range(n):
            for rel in (f"field_{i:03d}.jpg", f"ground_truth/labelmap_{i:03d}.png"):
                assert (fresh / rel).read_bytes() == (committed / rel).read_bytes(), f"{committed / rel} differs"
        fresh_cells = _cells(fresh)
        committed_cells = [c for c in _cells(committed) if c[0] < n]
        assert fresh_cells == committed_cells


def test_other_seed_differs(tmp_path):
    from cytoreview.samples.effusion import PROFILES, render_effusion_field

    a = render_effusion_field(np.random.default_rng([1, 0xEFF, 0]), PROFILES[0])
    b = render_effusion_field(np.random.default_rng([1, 0xEFF, 0]), PROFILES[0])
    c = render_effusion_field(np.random.default_rng([2, 0xEFF, 0]), PROFILES[0])
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.labelmap, b.labelmap) and a.cells == b.cells
    assert not np.array_equal(a.rgb, c.rgb)


@pytest.mark.parametrize("case", ["committed_warthin", "committed_effusion"])
def test_cells_fall_on_their_class(case, request):
    folder = request.getfixturevalue(case)
    cells = _cells(folder)
    assert len(cells) > 100
    maps = {i: _labelmap(folder, i) for i in range(8)}
    wrong = [(f, y, x, c, int(maps[f][y, x])) for f, y, x, c in cells if maps[f][y, x] != c]
    assert not wrong, f"{len(wrong)} cells off their class, e.g. {wrong[:3]}"
    assert all(0 <= y < FIELD_ROWS and 0 <= x < FIELD_COLS for _, y, x, _ in cells)


def test_warthin_classes_and_field_variety(committed_warthin):
    cells = np.asarray(_cells(committed_warthin))
    assert set(np.unique(cells[:, 3])) == {2, 3}  # oncocytes and lymphocytes are the cells
    fracs = np.stack([np.bincount(_labelmap(committed_warthin, i).ravel(), minlength=4) / (FIELD_ROWS * FIELD_COLS)
                      for i in range(8)])
    assert (fracs.sum(axis=0) > 0).all(), "every class occurs somewhere"
    # the mix varies: some fields are sheet-rich, some lymphocyte-rich, some mostly dirty
    assert fracs[:, 2].max() > 0.2 and fracs[:, 2].min() < 0.02
    assert fracs[:, 3].max() > 0.15 and fracs[:, 3].min() < 0.03
    assert fracs[:, 1].max() > 0.4 and fracs[:, 1].min() == 0.0
    # oncocytic cells are bigger than lymphocytes: area per cell
    n2 = (cells[:, 3] == 2).sum()
    n3 = (cells[:, 3] == 3).sum()
    area2 = fracs[:, 2].sum() / n2
    area3 = fracs[:, 3].sum() / n3
    assert area2 > 5 * area3


def test_effusion_atypical_is_rare(committed_effusion):
    cells = np.asarray(_cells(committed_effusion))
    per_class = np.bincount(cells[:, 3], minlength=5)
    assert (per_class[1:] > 0).all(), per_class
    atyp_fields = sorted(set(cells[cells[:, 3] == 4, 0]))
    assert 1 <= len(atyp_fields) <= 2, atyp_fields
    assert per_class[4] < 0.12 * per_class.sum()
    with open(committed_effusion / "ground_truth" / "fields.csv", newline="") as fh:
        labelled = [int(r["field"]) for r in csv.DictReader(fh) if "atypical" in r["labels"].split("|")]
    assert labelled == atyp_fields
    for i in range(8):
        has = (_labelmap(committed_effusion, i) == 4).any()
        assert has == (i in atyp_fields)


def test_classes_separable_in_colour(committed_warthin):
    """At the tile classifiers' scale the classes differ in colour: oncocytic is pinker, lymphocytes darker."""
    img = np.asarray(Image.open(committed_warthin / "field_000.jpg")).astype(np.float32)
    lm = _labelmap(committed_warthin, 0)
    means = {c: img[lm == c].mean(axis=0) for c in range(4)}
    assert means[0].mean() > 225  # clean glass is near white
    assert means[3].mean() < means[1].mean() - 40  # lymphocytes are much darker than debris
    assert means[2][0] - means[2][2] > 25  # oncocytic cytoplasm: red over blue (pink-orange)
    assert means[1][2] > means[1][1]  # dirty background: purple-grey (blue over green)


def test_field_pixel_size_is_the_readers_cytoscan_default():
    from cytoreview.io.image import CYTOSCAN_MPP
    from cytoreview.samples.fieldset import FIELD_MPP, um_to_px

    assert FIELD_MPP == CYTOSCAN_MPP and um_to_px(CYTOSCAN_MPP * 10) == 10
