"""Read a sample case's ground truth back, and turn the per-pixel labelmaps into tile labels.

The labelmaps are exact per pixel: a lymphocyte is labelled only where the cell is, so even a dense lymphocyte
cluster leaves most of a tile's pixels "background". Tile classifiers therefore need a rule from class *fractions*
to one tile label; :func:`tile_labels` applies a documented one (a class counts when it covers at least its
minimum fraction of the tile; the most specific class that counts wins).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from ..errors import CytoreviewError

#: Minimum fraction of a tile's pixels for a class to count, by class name (classes not listed: 0.5).
DEFAULT_MIN_FRACTION = {
    "oncocytic epithelium": 0.15,
    "lymphocytes": 0.05,
    "dirty background": 0.3,
    "atypical": 0.03,
    "mesothelial": 0.04,
    "macrophage": 0.04,
    "lymphocyte": 0.03,
}
#: Which class wins when several count, most specific first, by class name (classes not listed: after these,
#: highest id first; the background classes last).
DEFAULT_PRIORITY = ["atypical", "oncocytic epithelium", "mesothelial", "macrophage", "lymphocytes", "lymphocyte",
                    "dirty background"]


@dataclass
class GroundTruth:
    """A sample case's ground truth.

    Attributes
    ----------
    folder : Path
    classes : list of dict
        ``{"id", "name", "color"}`` per class.
    cells : dict of str to numpy.ndarray
        Columns ``field``, ``y_px``, ``x_px``, ``class`` (int arrays of equal length).
    field_labels : list of list of str
        Field-level labels, per field.
    field_names : list of str
        Image file name of each field.
    """

    folder: Path
    classes: list
    cells: dict
    field_labels: list
    field_names: list

    def labelmap(self, field: int) -> np.ndarray:
        """uint8 (rows, cols) class id per pixel of one field."""
        path = self.folder / "ground_truth" / f"labelmap_{field:03d}.png"
        if not path.is_file():
            raise CytoreviewError(f"no labelmap for field {field}: {path} is missing")
        return np.asarray(PILImage.open(path))


def read_ground_truth(case_dir) -> GroundTruth:
    """Read ``ground_truth/`` of a sample field-set case.

    Raises
    ------
    CytoreviewError
        When a ground-truth file is missing or malformed (the message names it).
    """
    folder = Path(case_dir)
    gt = folder / "ground_truth"
    try:
        classes = json.loads((gt / "classes.json").read_text())
        with open(gt / "cells.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        cells = {k: np.asarray([int(r[k]) for r in rows], dtype=np.int64) for k in ("field", "y_px", "x_px", "class")}
        with open(gt / "fields.csv", newline="") as fh:
            frows = list(csv.DictReader(fh))
        field_labels = [[s for s in r["labels"].split("|") if s] for r in frows]
        field_names = [r["filename"] for r in frows]
    except FileNotFoundError as exc:
        raise CytoreviewError(f"sample ground truth incomplete: {exc.filename} is missing") from exc
    except (KeyError, ValueError) as exc:
        raise CytoreviewError(f"sample ground truth in {gt} is malformed: {exc}") from exc
    return GroundTruth(folder, classes, cells, field_labels, field_names)


def tile_fractions(labelmap: np.ndarray, tile_px: int, n_classes: int) -> np.ndarray:
    """Fraction of each class in each tile of a labelmap.

    Tile ``(r, c)`` covers rows ``[r * tile_px, (r + 1) * tile_px)`` and the same for columns (the prediction-store
    convention); edge tiles that stick out of the image are measured over their in-image part.

    Returns
    -------
    numpy.ndarray
        float32 (n_rows, n_cols, n_classes), ``n_rows = ceil(rows / tile_px)``.
    """
    h, w = labelmap.shape
    nr, nc = -(-h // tile_px), -(-w // tile_px)
    ty = (np.arange(h) // tile_px)[:, None]
    tx = (np.arange(w) // tile_px)[None, :]
    flat = (ty * nc + tx) * n_classes + labelmap.astype(np.int64)
    counts = np.bincount(flat.ravel(), minlength=nr * nc * n_classes).reshape(nr, nc, n_classes)
    total = counts.sum(axis=2, keepdims=True)
    return (counts / np.maximum(total, 1)).astype(np.float32)


def tile_labels(fractions: np.ndarray, classes: list, min_fraction: dict | None = None,
                priority: list | None = None) -> np.ndarray:
    """One class id per tile from class fractions (see the module docstring for the rule).

    Parameters
    ----------
    fractions : numpy.ndarray
        (..., n_classes) from :func:`tile_fractions`.
    classes : list of dict
        The case's classes (``id``, ``name``); class 0 is the fallback background.
    min_fraction, priority : optional
        Override :data:`DEFAULT_MIN_FRACTION` / :data:`DEFAULT_PRIORITY` (by class name).

    Returns
    -------
    numpy.ndarray
        int16 class id per tile.
    """
    mins = dict(DEFAULT_MIN_FRACTION, **(min_fraction or {}))
    order = list(priority or DEFAULT_PRIORITY)
    names = {c["id"]: c["name"] for c in classes}
    ranked = [c for n in order for c, name in names.items() if name == n]
    ranked += sorted((c for c in names if c not in ranked and c != 0), reverse=True)
    out = np.zeros(fractions.shape[:-1], dtype=np.int16)
    decided = np.zeros(fractions.shape[:-1], dtype=bool)
    for cid in ranked:
        hit = (fractions[..., cid] >= mins.get(names[cid], 0.5)) & ~decided
        out[hit] = cid
        decided |= hit
    return out
