"""Fixtures for the review tests: a project with one field-set image, and prediction stores written with zarr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cytoreview.review import Project

PACK_CLASSES = [
    {"id": 0, "name": "clean background", "color": "#e8e4dc", "hotkey": "1", "level": "tile"},
    {"id": 1, "name": "dirty background", "color": "#a08060", "hotkey": "2", "level": "tile"},
    {"id": 2, "name": "oncocytic epithelium", "color": "#d04040", "hotkey": "3", "level": "tile"},
    {"id": 3, "name": "lymphocytes", "color": "#4040d0", "hotkey": "4", "level": "tile"},
]


@pytest.fixture
def fieldset(tmp_path) -> Path:
    """A CytoScan-size field set of two plain fields (the project fingerprints it and reads the field size)."""
    return write_fieldset(tmp_path / "case_A", 2)


def write_fieldset(folder: Path, n_fields: int) -> Path:
    """Write ``n_fields`` flat 1208x1928 JPEG fields into ``folder``."""
    from PIL import Image as PILImage

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_fields):
        PILImage.new("RGB", (1928, 1208), (240 - 20 * i, 230, 235)).save(folder / f"field_{i:03d}.jpg")
    return folder


@pytest.fixture
def project(tmp_path) -> Project:
    p = Project.open(tmp_path / "proj", create=True)
    yield p
    p.close()


@pytest.fixture
def image_id(project, fieldset) -> int:
    return project.add_image(fieldset, kind="fields", mpp=0.293, case_id="A", plane_shape=(1208, 1928))


def write_store(path: Path, *, n_fields=2, n_rows=3, n_cols=4, tile_px=400, seed=0, cells=True,
                classes=PACK_CLASSES, image_path="case_A", version="1.0.0") -> dict:
    """Write a prediction store following the brief's contract; return the arrays written."""
    import zarr

    rng = np.random.default_rng(seed)
    n_classes = len(classes)
    logits = rng.normal(size=(n_fields, n_rows, n_cols, n_classes)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    tile_class = probs.argmax(-1).astype(np.int16)
    entropy = -(probs * np.log(probs)).sum(-1) / np.log(n_classes)
    tissue = np.ones((n_fields, n_rows, n_cols), dtype=bool)
    tissue[0, 0, 0] = False  # one background tile: not predicted
    tile_class[~tissue] = -1
    probs[~tissue] = np.nan
    entropy[~tissue] = np.nan
    g = zarr.open_group(str(path), mode="w")
    g.attrs.update({"pack": "warthin-tiles", "pack_version": version, "task": "tile-classification",
                    "image_path": str(image_path), "model_mpp": 1.172, "level": 0, "tile_px_level0": tile_px,
                    "n_fields": n_fields, "classes": classes, "complete": True})
    for name, data in (("tile_class", tile_class), ("tile_prob", probs.astype(np.float32)),
                       ("tile_uncertainty", entropy.astype(np.float32)), ("tissue", tissue)):
        arr = g.create_array(name, shape=data.shape, dtype=data.dtype)
        arr[...] = data
    out = {"tile_class": tile_class, "tile_prob": probs, "tile_uncertainty": entropy}
    if cells:
        n = 5
        cg = g.create_group("cells")
        cell = {"field": np.array([0, 0, 1, 1, 1], dtype=np.int32),
                "y_px": rng.uniform(0, 1200, n).astype(np.float32),
                "x_px": rng.uniform(0, 1900, n).astype(np.float32),
                "class": np.array([3, 3, 2, 3, 1], dtype=np.int16),
                "score": np.array([0.9, 0.55, 0.8, 0.99, 0.6], dtype=np.float32)}
        for name, data in cell.items():
            arr = cg.create_array(name, shape=data.shape, dtype=data.dtype)
            arr[...] = data
        out["cells"] = cell
    return out
