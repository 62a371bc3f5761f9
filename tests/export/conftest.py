"""Fixtures: a small field set and a small pyramidal WSI (built as Image objects), and a label table over them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from cytoreview.io.image import Image  # noqa: E402

FIELD_HW = (120, 160)
WSI_SIZE = 512


def _pattern(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), rng.integers(0, 256, (h, w))], -1)
    return rgb.astype(np.uint8)


@pytest.fixture
def field_image(tmp_path) -> Image:
    levels = [np.stack([_pattern(*FIELD_HW, seed=s) for s in range(3)])]
    return Image(path=tmp_path / "caseA_fields", kind="fields", levels=levels, mpp=0.293, reader="test",
                 field_names=[f"field_{i:03d}.jpg" for i in range(3)])


@pytest.fixture
def wsi_image(tmp_path) -> Image:
    base = _pattern(WSI_SIZE, WSI_SIZE, seed=7)
    levels = [base, base[::2, ::2].copy(), base[::4, ::4].copy()]
    return Image(path=tmp_path / "caseB_slide.tif", kind="wsi", levels=levels, mpp=0.5, reader="test")


def _row(item_id, image_id, image_path, case_id, level, field, geometry, labels, ids, mpp, box, **extra):
    row = {
        "item_id": item_id, "image_id": image_id, "image_path": str(image_path), "case_id": case_id,
        "level": level, "field": field, "z": 0,
        "x_min": box[0], "y_min": box[1], "x_max": box[2], "y_max": box[3],
        "geometry": json.dumps(geometry), "labels": labels, "label_ids": ids,
        "model_label": labels[0] if labels else None, "confidence": 0.95,
        "source": "reviewer", "reviewer": "ana", "model": "warthin-tiles@1.0.0", "mpp": mpp,
        "reviewed": True, "corrected": False, "unsure": False, "updated_at": "2026-11-22T10:00:00+00:00",
    }  # fmt: skip
    row.update(extra)
    return row


CLASSES = {"clean background": 0, "oncocytic epithelium": 2, "lymphocytes": 3, "tumour": 4}


def make_table(field_image: Image, wsi_image: Image) -> pd.DataFrame:
    fp, wp = field_image.path, wsi_image.path
    h, w = FIELD_HW
    rows = []
    add = rows.append
    c = CLASSES
    # field set, case A: field labels, cells, tiles
    add(_row(1, 1, fp, "A", "field", 0, {"type": "field"}, ["oncocytic epithelium", "lymphocytes"], [2, 3], 0.293,
             (0, 0, w, h), corrected=True))
    add(_row(2, 1, fp, "A", "field", 1, {"type": "field"}, ["clean background"], [0], 0.293, (0, 0, w, h)))
    add(_row(3, 1, fp, "A", "cell", 0, {"type": "point", "y": 40, "x": 50}, ["lymphocytes"], [3], 0.293,
             (50, 40, 50, 40), corrected=True, confidence=0.4))
    add(_row(4, 1, fp, "A", "cell", 2, {"type": "point", "y": 5, "x": 150}, ["lymphocytes"], [3], 0.293,
             (150, 5, 150, 5)))
    add(_row(5, 1, fp, "A", "tile", 2, {"type": "tile", "row": 0, "col": 1, "size_px": 64},
             ["oncocytic epithelium"], [2], 0.293, (64, 0, 128, 64)))
    add(_row(6, 1, fp, "A", "cell", 1, {"type": "point", "y": 60, "x": 60}, ["lymphocytes"], [3], 0.293,
             (60, 60, 60, 60), unsure=True))
    # WSI, case B: tiles, a region, cells
    add(_row(7, 2, wp, "B", "tile", 0, {"type": "tile", "row": 0, "col": 0, "size_px": 128}, ["tumour"], [4], 0.5,
             (0, 0, 128, 128), corrected=True))
    add(_row(8, 2, wp, "B", "tile", 0, {"type": "tile", "row": 1, "col": 2, "size_px": 128}, ["clean background"],
             [0], 0.5, (256, 128, 384, 256), reviewed=False, source="model:warthin-tiles@1.0.0", reviewer=None))
    poly = [[300, 300], [300, 450], [450, 450], [420, 320]]
    add(_row(9, 2, wp, "B", "region", 0, {"type": "polygon", "coords": poly}, ["tumour"], [4], 0.5,
             (300, 300, 450, 450)))
    add(_row(10, 2, wp, "B", "cell", 0, {"type": "point", "y": 200.5, "x": 100.25}, ["lymphocytes"], [3], 0.5,
             (100.25, 200.5, 100.25, 200.5)))
    add(_row(11, 2, wp, "B", "cell", 0, {"type": "point", "y": 10, "x": 500}, ["tumour"], [4], 0.5,
             (500, 10, 500, 10), confidence=0.5))
    add(_row(12, 2, wp, "B", "cell", 0, {"type": "point", "y": 20, "x": 20}, [], [], 0.5, (20, 20, 20, 20),
             reviewed=False))
    return pd.DataFrame(rows)


@pytest.fixture
def table(field_image, wsi_image) -> pd.DataFrame:
    return make_table(field_image, wsi_image)


@pytest.fixture
def images(field_image, wsi_image) -> dict:
    return {1: field_image, 2: wsi_image}


def many_cases_table(n_cases: int = 20, per_case: int = 15, seed: int = 0) -> pd.DataFrame:
    """A label table with many cases (no pixels needed) for split and balance tests."""
    rng = np.random.default_rng(seed)
    names = ["a", "b", "c", "rare"]
    rows = []
    item = 1
    for case in range(n_cases):
        major = names[case % 3] if case != n_cases - 1 else "rare"
        for _ in range(per_case):
            name = major if rng.random() < 0.7 else names[int(rng.integers(0, 3))]
            rows.append(_row(item, case + 1, f"/data/case{case}.tif", f"case{case:02d}", "cell", 0,
                             {"type": "point", "y": 10, "x": 10}, [name], [names.index(name)], 0.5,
                             (10, 10, 10, 10)))
            item += 1
    return pd.DataFrame(rows)
