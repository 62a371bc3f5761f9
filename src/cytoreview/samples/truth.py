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


def pack_tile_labels(labelmap: np.ndarray, tile_px: int, rule: dict) -> tuple[np.ndarray, np.ndarray]:
    """Tile class ids from a per-pixel ground-truth label map, by a pack's rule (class map, priority, override).

    The rule the shipped packs in ``plugins/`` are trained and scored with (their ``train.py``, their tests and
    ``benchmarks/bench_refit.py`` all call this one function).

    Parameters
    ----------
    labelmap : ndarray of uint8, (H, W)
        Ground-truth class id per pixel.
    tile_px : int
        Tile side in label-map pixels; tile ``(r, c)`` covers rows ``[r*T, (r+1)*T)`` and cols ``[c*T, (c+1)*T)``.
    rule : dict
        ``class_map`` (pack class id per ground-truth id); ``priority`` (pack classes that take a tile when one
        covers at least ``min_frac`` of its in-image pixels, the largest of them winning); optional ``override``
        (``(class_id, min_frac)`` pairs applied last, in order: the tile takes the class whenever its fraction
        reaches ``min_frac``). Otherwise the tile takes its majority class.

    Returns
    -------
    labels : ndarray of int64, (n_rows, n_cols)
    fractions : ndarray of float64, (n_rows, n_cols, n_classes)
        Fraction of the tile's in-image pixels in each pack class.
    """
    import math

    class_map = np.asarray(rule["class_map"], dtype=np.int64)
    mapped = class_map[labelmap]
    n_classes = int(class_map.max()) + 1
    h, w = mapped.shape
    n_rows, n_cols = math.ceil(h / tile_px), math.ceil(w / tile_px)
    padded = np.full((n_rows * tile_px, n_cols * tile_px), -1, dtype=np.int64)
    padded[:h, :w] = mapped
    blocks = padded.reshape(n_rows, tile_px, n_cols, tile_px).transpose(0, 2, 1, 3).reshape(n_rows, n_cols, -1)
    counts = np.stack([(blocks == k).sum(-1) for k in range(n_classes)], axis=-1).astype(np.float64)
    fractions = counts / np.maximum(counts.sum(-1, keepdims=True), 1)
    labels = fractions.argmax(-1)
    priority = np.asarray(rule.get("priority", ()), dtype=np.int64)
    if priority.size:
        pf = fractions[..., priority]
        labels = np.where(pf.max(-1) >= rule["min_frac"], priority[pf.argmax(-1)], labels)
    for class_id, min_frac in rule.get("override", ()):
        labels = np.where(fractions[..., class_id] >= min_frac, class_id, labels)
    return labels, fractions


def instance_map(labelmap: np.ndarray, cells: list | np.ndarray, cell_class_ids) -> np.ndarray:
    """Per-pixel cell instances of one field: the generator's cell centres grown over the pixels of cell classes.

    The labelmap says which class each pixel is and the cell list where each cell sits, but not which cell a pixel
    of two touching cells belongs to: it goes to the nearest centre of its class that it is connected to (a
    geodesic Voronoi split, each limited to its own class) -- the rule the generator draws touching cells by (the
    honeycomb of an oncocytic sheet is the Voronoi diagram of its nuclei), so the split follows the cell borders
    the image shows. (A watershed on the distance to the class edge, used before, let the centre nearest a sheet's
    middle flood most of the sheet.) Cells of a class at a centre the generator hid under another cell are not in
    the list, so their pixels go to their neighbours.

    Parameters
    ----------
    labelmap : ndarray (H, W) of int
    cells : sequence of (y_px, x_px, class_id)
        The field's cells (``GroundTruth.cells`` rows of one field).
    cell_class_ids : iterable of int
        Ground-truth classes that are cells (others are background).

    Returns
    -------
    ndarray of int32 (H, W)
        0 = no cell, ``i + 1`` = ``cells[i]`` (cells whose centre is not on their class get no pixels).
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 3)
    out = np.zeros(labelmap.shape, dtype=np.int32)
    for cid in cell_class_ids:
        region = labelmap == cid
        if not region.any():
            continue
        markers = np.zeros(labelmap.shape, dtype=np.int32)
        for i, (y, x, c) in enumerate(cells.tolist()):
            if c == cid and 0 <= y < region.shape[0] and 0 <= x < region.shape[1] and region[y, x]:
                markers[y, x] = i + 1
        if not markers.any():
            continue
        to_centre = ndi.distance_transform_edt(markers == 0)
        grown = watershed(to_centre, markers=markers, mask=region)
        out[grown > 0] = grown[grown > 0]
    return out
