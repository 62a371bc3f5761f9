"""Shared data for the review-dock tests: a tiny field set, a prediction store, and overlay layers built exactly as
the GUI contract describes them (the real ``overlays.add_prediction_layers`` is written by another part)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PACK = "warthin-tiles"
PACK_CLASSES = [
    {"id": 0, "name": "clean background", "color": "#e8e4dc", "hotkey": "1", "level": "tile"},
    {"id": 1, "name": "dirty background", "color": "#a08060", "hotkey": "2", "level": "tile"},
    {"id": 2, "name": "oncocytic epithelium", "color": "#d04040", "hotkey": "3", "level": "tile"},
    {"id": 3, "name": "lymphocytes", "color": "#4040d0", "hotkey": "4", "level": "tile"},
]
MPP = 0.293
TILE_PX = 100
FIELD_HW = (400, 640)  # small fields keep the GUI tests fast (the reader takes any size)
N_FIELDS = 3
#: Cells of the store: field, y_px, x_px, class, score.
CELLS = [(0, 40.0, 60.0, 3, 0.9), (0, 200.5, 300.25, 3, 0.55), (1, 100.0, 500.0, 2, 0.8),
         (2, 350.0, 30.0, 1, 0.6), (2, 20.0, 25.0, 3, 0.99)]


def write_fieldset(folder: Path, n_fields: int = N_FIELDS) -> Path:
    """Plain CytoScan-size JPEG fields (what the reader opens)."""
    from PIL import Image as PILImage

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_fields):
        PILImage.new("RGB", FIELD_HW[::-1], (235 - 25 * i, 225, 230)).save(folder / f"field_{i:03d}.jpg")
    return folder


def write_store(path: Path, image_path: Path, n_fields: int = N_FIELDS, seed: int = 0) -> Path:
    """A prediction store per the contract: tile arrays (one background tile) and a cells group."""
    import zarr

    rng = np.random.default_rng(seed)
    n_rows, n_cols = -(-FIELD_HW[0] // TILE_PX), -(-FIELD_HW[1] // TILE_PX)
    logits = rng.normal(size=(n_fields, n_rows, n_cols, len(PACK_CLASSES))) * 2
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    tile_class = probs.argmax(-1).astype(np.int16)
    entropy = -(probs * np.log(probs)).sum(-1) / np.log(len(PACK_CLASSES))
    tissue = np.ones(tile_class.shape, dtype=bool)
    tissue[0, 0, 0] = False
    tile_class[~tissue] = -1
    probs[~tissue] = np.nan
    entropy[~tissue] = np.nan
    g = zarr.open_group(str(path), mode="w")
    g.attrs.update({"pack": PACK, "pack_version": "1.0.0", "task": "tile-classification",
                    "image_path": str(image_path), "model_mpp": 1.172, "level": 0, "tile_px_level0": TILE_PX,
                    "n_fields": n_fields, "classes": PACK_CLASSES, "complete": True})
    for name, data in (("tile_class", tile_class), ("tile_prob", probs.astype(np.float32)),
                       ("tile_uncertainty", entropy.astype(np.float32)), ("tissue", tissue)):
        g.create_array(name, shape=data.shape, dtype=data.dtype)[...] = data
    cg = g.create_group("cells")
    cols = list(zip(*CELLS))
    for name, values, dtype in (("field", cols[0], np.int32), ("y_px", cols[1], np.float32),
                                ("x_px", cols[2], np.float32), ("class", cols[3], np.int16),
                                ("score", cols[4], np.float32)):
        arr = np.asarray(values, dtype=dtype)
        cg.create_array(name, shape=arr.shape, dtype=arr.dtype)[...] = arr
    return path


def add_overlays(viewer, store_path: Path, image_layer) -> dict:
    """Overlay layers exactly per the GUI contract (roles tile_classes, probability, uncertainty, cells)."""
    import pandas as pd
    import zarr
    from napari.utils.colormaps import DirectLabelColormap

    from cytoreview._napari.layer_meta import image_meta

    g = zarr.open_group(str(store_path), mode="r")
    attrs = dict(g.attrs)
    t = int(attrs["tile_px_level0"])
    mpp = float(image_layer.metadata["cytoreview"]["mpp"])
    fields = image_layer.metadata["cytoreview"]["kind"] == "fields"
    lead = (1.0,) if fields else ()
    scale = (*lead, t * mpp, t * mpp)
    translate = (*(0.0,) * len(lead), (t / 2 - 0.5) * mpp, (t / 2 - 0.5) * mpp)

    units = {"units": tuple(str(u) for u in image_layer.units)} if getattr(image_layer, "units", None) else {}

    def md(role):
        return image_meta(image_layer).overlay(role, store=str(store_path), pack=attrs["pack"],
                                               pack_version=attrs["pack_version"], tile_px_level0=t).to_metadata()

    tc = np.asarray(g["tile_class"][...]).astype(np.int32) + 1
    prob = np.nan_to_num(np.nanmax(np.asarray(g["tile_prob"][...]), axis=-1, initial=0.0)).astype(np.float32)
    unc = np.nan_to_num(np.asarray(g["tile_uncertainty"][...])).astype(np.float32)
    if not fields:
        tc, prob, unc = tc[0], prob[0], unc[0]
    colors = {0: np.zeros(4), None: np.zeros(4)}
    for c in attrs["classes"]:
        colors[int(c["id"]) + 1] = c["color"]
    out = {"tile_classes": viewer.add_labels(tc, name=f"{attrs['pack']} classes", scale=scale, translate=translate,
                                             opacity=0.4, colormap=DirectLabelColormap(color_dict=colors),
                                             metadata=md("tile_classes"), **units)}
    out["probability"] = viewer.add_image(prob, name=f"{attrs['pack']} probability", scale=scale,
                                          translate=translate, colormap="viridis", opacity=0.5, visible=False,
                                          metadata=md("probability"), **units)
    out["uncertainty"] = viewer.add_image(unc, name=f"{attrs['pack']} uncertainty", scale=scale,
                                          translate=translate, colormap="magma", opacity=0.5, visible=False,
                                          contrast_limits=(0, 1), metadata=md("uncertainty"), **units)
    if "cells" in g:
        cg = g["cells"]
        f = np.asarray(cg["field"][...])
        y = np.asarray(cg["y_px"][...]).astype(np.float64) * mpp
        x = np.asarray(cg["x_px"][...]).astype(np.float64) * mpp
        cls = np.asarray(cg["class"][...]).astype(int)
        names = {int(c["id"]): c["name"] for c in attrs["classes"]}
        hexes = {int(c["id"]): c["color"] for c in attrs["classes"]}
        coords = np.c_[f, y, x] if fields else np.c_[y, x]
        feats = pd.DataFrame({"class": [names[k] for k in cls], "class_id": cls,
                              "score": np.asarray(cg["score"][...]).astype(float)})
        out["cells"] = viewer.add_points(coords, features=feats, face_color=[hexes[k] for k in cls], size=8.0,
                                         name=f"{attrs['pack']} cells", metadata=md("cells"), **units)
    return out


@pytest.fixture
def review_case(tmp_path):
    """(field-set folder, prediction store) on disk."""
    folder = write_fieldset(tmp_path / "case_A")
    store = write_store(tmp_path / "case_A__warthin-tiles@1.0.0.zarr", folder)
    return folder, store


def open_case(viewer, folder: Path, store: Path):
    """Open the field set through the reader and add contract overlays; return (image layer, overlays)."""
    from cytoreview._napari.layers import image_layer_data
    from cytoreview.io import open_image

    data, kwargs, _ = image_layer_data(open_image(folder))
    image_layer = viewer.add_image(data, **kwargs)
    return image_layer, add_overlays(viewer, store, image_layer)
