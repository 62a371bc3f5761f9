"""Write a rendered CytoScan-like field set with its ground truth to a folder.

Layout (the "Sample data" contract)::

    field_000.jpg ...              RGB JPEG, 1208 x 1928
    cytoscan.json                  {"mpp", "magnification", "case_id", "specimen", "stain", "generator", "seed", ...}
    ground_truth/classes.json      [{"id", "name", "color"}, ...]
    ground_truth/labelmap_000.png  uint8 class id per pixel, full field size
    ground_truth/cells.csv         field,y_px,x_px,class
    ground_truth/fields.csv        field,filename,labels   (labels joined with "|")
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from collections.abc import Callable

import numpy as np
from PIL import Image as PILImage

from cytoreview.io.image import CYTOSCAN_MPP

#: CytoScan field geometry and pixel size at 450x (the pixel size is the reader's, so the two cannot drift).
FIELD_ROWS = 1208
FIELD_COLS = 1928
FIELD_MPP = CYTOSCAN_MPP
MAGNIFICATION = 450
JPEG_QUALITY = 85


@dataclass
class RenderedField:
    """One rendered field and its ground truth.

    Attributes
    ----------
    rgb : numpy.ndarray
        uint8 (FIELD_ROWS, FIELD_COLS, 3).
    labelmap : numpy.ndarray
        uint8 (FIELD_ROWS, FIELD_COLS) class id per pixel.
    cells : list of (int, int, int)
        (y_px, x_px, class id) of every cell centroid.
    labels : list of str
        Field-level labels (class names present).
    """

    rgb: np.ndarray
    labelmap: np.ndarray
    cells: list = field(default_factory=list)
    labels: list = field(default_factory=list)


def field_labels(labelmap: np.ndarray, cells: list, classes: list[dict], *, min_area_frac: float = 0.02,
                 min_cells: int = 3) -> list[str]:
    """Names of the classes present in a field, in class-id order.

    A class counts if it covers at least ``min_area_frac`` of the field or has at least ``min_cells`` cells.
    """
    counts = np.bincount(labelmap.ravel(), minlength=len(classes))
    frac = counts / labelmap.size
    n_cells = np.bincount(np.asarray([c[2] for c in cells], dtype=np.int64), minlength=len(classes)) if cells else \
        np.zeros(len(classes), dtype=np.int64)
    names = []
    for c in classes:
        cid = c["id"]
        if frac[cid] >= min_area_frac or n_cells[cid] >= min_cells:
            names.append(c["name"])
    return names


def um_to_px(um: float) -> float:
    """Micrometres to field pixels at :data:`FIELD_MPP`."""
    return um / FIELD_MPP


def make_fields(out_dir, n_fields: int, seed: int, *, stream: int, profiles: list[dict],
                render: Callable[[np.random.Generator, dict], RenderedField], classes: list[dict],
                meta: dict) -> Path:
    """Render ``n_fields`` fields (profiles cycling) and write them as a field set; return ``out_dir``.

    Field ``i`` gets its own generator ``default_rng([seed, stream, i])`` so one field's content does not depend on
    how many fields come before it; ``meta`` gets ``seed``, ``synthetic`` and ``field_kinds`` added.
    """
    if n_fields < 1:
        raise ValueError(f"n_fields must be >= 1, got {n_fields}")
    kinds = [profiles[i % len(profiles)] for i in range(n_fields)]
    fields = [render(np.random.default_rng([int(seed), stream, i]), kinds[i]) for i in range(n_fields)]
    meta = {**meta, "seed": int(seed), "synthetic": True, "field_kinds": [k["kind"] for k in kinds]}
    return write_field_set(Path(out_dir), fields, classes, meta)


def write_field_set(out_dir: Path, fields: list[RenderedField], classes: list[dict], meta: dict) -> Path:
    """Write fields, ``cytoscan.json`` and ``ground_truth/`` into ``out_dir`` (created if needed).

    Parameters
    ----------
    out_dir : Path
        Destination folder.
    fields : list of RenderedField
    classes : list of dict
        ``{"id", "name", "color"}`` per ground-truth class.
    meta : dict
        Extra keys for ``cytoscan.json`` (case_id, specimen, stain, generator, seed, ...).

    Returns
    -------
    Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    gt = out_dir / "ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    names = []
    for i, f in enumerate(fields):
        name = f"field_{i:03d}.jpg"
        names.append(name)
        PILImage.fromarray(f.rgb, mode="RGB").save(out_dir / name, format="JPEG", quality=JPEG_QUALITY,
                                                   optimize=True)
        PILImage.fromarray(f.labelmap, mode="L").save(gt / f"labelmap_{i:03d}.png", format="PNG", optimize=True)
    info = {"mpp": FIELD_MPP, "magnification": MAGNIFICATION, **meta, "n_fields": len(fields),
            "field_rows": FIELD_ROWS, "field_cols": FIELD_COLS, "fields": names}
    (out_dir / "cytoscan.json").write_text(json.dumps(info, indent=2) + "\n")
    (gt / "classes.json").write_text(json.dumps(classes, indent=2) + "\n")
    with open(gt / "cells.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["field", "y_px", "x_px", "class"])
        for i, f in enumerate(fields):
            for y, x, c in f.cells:
                w.writerow([i, int(y), int(x), int(c)])
    with open(gt / "fields.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["field", "filename", "labels"])
        for i, f in enumerate(fields):
            w.writerow([i, names[i], "|".join(f.labels)])
    return out_dir
