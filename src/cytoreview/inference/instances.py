"""Cells from a segmenter's stitched per-pixel output: threshold, split touching cells, measure each instance.

:func:`extract_instances` works on one block of the stitched foreground probability (and optional boundary and
marker probabilities and class mask): threshold -> split touching cells (the boundary output; one cell per blob of
the cell-centre marker output, :func:`split_at_markers`; a watershed on the distance transform seeded at its maxima
at least ``min_distance_px`` apart; or not at all) -> drop objects outside the area
bounds -> one row per cell with centroid, outline polygon, area, mean and max foreground probability and majority
class, all cells measured together (:func:`instance_properties`: bincounts over the label image;
:mod:`cytoreview.inference.outlines`: every outline in one pass over the pixel edges), never a Python loop per cell.
:func:`cells_from_store` runs it block by block over a whole prediction store with overlapping margins and
keeps each cell only in the block that holds its centroid, so a cell across a tile seam (or a block seam) is found
once, whole, and memory stays bounded on a whole slide.
"""

from __future__ import annotations

import warnings

import numpy as np

from cytoreview.inference.segment import cell_class_ids, field_groups

#: Columns of a cell table (1-D arrays of equal length); ``outline_yx``/``outline_offset`` hold the polygons.
CELL_COLUMNS = ("field", "y_px", "x_px", "class", "score", "area_px", "area_um2", "prob_mean", "prob_max",
                "uncertainty")


#: Outline simplification (Douglas-Peucker) tolerance in pixels of the block.
OUTLINE_TOLERANCE_PX = 0.5


class CellCapWarning(UserWarning):
    """A block held more cells than a detector can plausibly find; the least confident were dropped."""


class CellSplitWarning(UserWarning):
    """The card splits touching cells at an output the prediction store does not hold; another split was used."""


def _empty() -> dict:
    dt = {"field": np.int32, "y_px": np.float64, "x_px": np.float64, "class": np.int16, "score": np.float32,
          "area_px": np.int32, "area_um2": np.float32, "prob_mean": np.float32, "prob_max": np.float32,
          "uncertainty": np.float32}
    out = {k: np.zeros(0, dtype=v) for k, v in dt.items()}
    out["outline_yx"] = np.zeros((0, 2), dtype=np.float32)
    out["outline_offset"] = np.zeros(1, dtype=np.int64)
    return out


#: Compactness of the marker-seeded watershed (:func:`split_at_markers`): each pixel's flooding priority is its
#: elevation (boundary probability, or 1 - foreground probability) plus this times its distance in pixels from the
#: seed, so where the image shows no border between two overlapping cells the split falls midway between their
#: markers (the Voronoi rule of a nucleus-seeded segmentation), and a border the model does see still wins.
MARKER_COMPACTNESS = 0.01


def split_at_markers(binary: np.ndarray, fg: np.ndarray, markers: np.ndarray, *, marker_threshold: float = 0.5,
                     boundary: np.ndarray | None = None) -> np.ndarray:
    """Label image int32 of the foreground ``binary``: one cell per blob of the cell-centre ``markers`` probability.

    Seeds are the 4-connected components of ``markers >= marker_threshold`` inside the foreground; a compact
    watershed (:data:`MARKER_COMPACTNESS`) floods the foreground from them over the ``boundary`` probability when
    given, else over ``1 - fg``. Foreground that no seed reaches (a cell whose centre the model missed, with no
    marked neighbour touching it) is kept as its own object per 8-connected piece.

    Parameters
    ----------
    binary : ndarray of bool (H, W)
        Foreground pixels.
    fg, markers : ndarray of float (H, W)
        Foreground and cell-centre probabilities (NaN counts as 0).
    marker_threshold : float
        A pixel is a seed pixel where ``markers`` reaches it.
    boundary : ndarray of float (H, W), optional
        Cell-contour probability: the flooding stops against it.
    """
    from skimage.measure import label
    from skimage.segmentation import watershed

    if not binary.any():
        return np.zeros(binary.shape, dtype=np.int32)
    seeds = label(binary & (np.nan_to_num(markers, nan=0.0) >= marker_threshold), connectivity=1)
    if boundary is not None:
        elevation = np.nan_to_num(np.asarray(boundary, dtype=np.float32), nan=1.0)
    else:
        elevation = 1.0 - np.nan_to_num(np.asarray(fg, dtype=np.float32), nan=0.0)
    labels = watershed(elevation, markers=seeds, mask=binary, compactness=MARKER_COMPACTNESS)
    return _with_orphans(labels, binary)


def _with_orphans(labels: np.ndarray, binary: np.ndarray) -> np.ndarray:
    """``labels`` (int32) with the foreground no seed reached added as objects of their own (8-connected)."""
    from skimage.measure import label

    left = binary & (labels == 0)
    rows, cols = np.flatnonzero(left.any(axis=1)), np.flatnonzero(left.any(axis=0))
    if not len(rows):
        return labels.astype(np.int32)
    # labelled on the box around them: components keep their raster order, so the numbers are those of the whole
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    orphans = label(left[box], connectivity=2)
    labels = labels.astype(np.int32)
    labels[box] = np.where(orphans > 0, orphans + labels.max(), labels[box])
    return labels


def split_instances(binary: np.ndarray, fg: np.ndarray, *, split: str, boundary: np.ndarray | None = None,
                    boundary_threshold: float = 0.5, min_distance_px: float = 3.0,
                    markers: np.ndarray | None = None, marker_threshold: float = 0.5) -> np.ndarray:
    """Label image int32 of the foreground ``binary``, touching cells split by ``split``.

    Parameters
    ----------
    split : {"watershed", "boundary", "markers", "none"}
        ``boundary``: seeds are the foreground away from the boundary output (``boundary < boundary_threshold``),
        grown back over the boundary pixels by a watershed on the boundary probability. ``markers``: one cell per
        blob of the cell-centre output (:func:`split_at_markers`; bounded by ``boundary`` when given).
        ``watershed``: seeds are the maxima of the distance transform at least ``min_distance_px`` apart, grown by
        a watershed on the negated distance. ``none``: connected components (8-connectivity).
    """
    from scipy import ndimage as ndi
    from skimage.measure import label
    from skimage.segmentation import watershed

    if split == "none" or not binary.any():
        return label(binary, connectivity=2).astype(np.int32)
    if split == "markers":
        if markers is None:
            raise ValueError("split='markers' needs the marker output")
        return split_at_markers(binary, fg, markers, marker_threshold=marker_threshold, boundary=boundary)
    if split == "boundary":
        if boundary is None:
            raise ValueError("split='boundary' needs the boundary output")
        seeds = label(binary & (boundary < boundary_threshold), connectivity=1)
        labels = watershed(boundary, markers=seeds, mask=binary)
        # foreground with no seed of its own (all boundary): keep it as its own object
        return _with_orphans(labels, binary)
    from skimage.feature import peak_local_max

    distance = ndi.distance_transform_edt(binary)
    components = label(binary, connectivity=2)
    radius = max(1, int(round(min_distance_px)))
    peaks = peak_local_max(distance, min_distance=radius, labels=components, exclude_border=False)
    markers = np.zeros(binary.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    # plateaus give several peaks close together: merge seeds within min_distance by dilating and relabelling
    markers = label(ndi.binary_dilation(markers > 0, iterations=max(1, radius // 2)) & binary, connectivity=2)
    labels = watershed(-distance, markers=markers, mask=binary)
    return _with_orphans(labels, binary)


def extract_instances(fg: np.ndarray, *, threshold: float = 0.5, cls: np.ndarray | None = None,
                      cell_ids=None, boundary: np.ndarray | None = None, boundary_threshold: float = 0.5,
                      split: str = "watershed", min_area_px: float = 0.0, max_area_px: float | None = None,
                      min_distance_px: float = 3.0, outlines: bool = True, markers: np.ndarray | None = None,
                      marker_threshold: float = 0.5) -> dict:
    """Cells of one block of foreground probability ``fg`` (float, NaN = not predicted).

    Every per-cell figure comes from one pass over the label image (:func:`instance_properties`) and the outlines
    from one pass over its pixel edges (:func:`cytoreview.inference.outlines.label_outlines`), so the cost grows
    with the pixels, not with a Python loop over the cells.

    Parameters
    ----------
    fg : ndarray (H, W)
        Foreground probability.
    cls : ndarray (H, W) of int, optional
        Pixel class ids; a cell's class is the most common cell class among its pixels (else ``cell_ids[0]``).
    cell_ids : sequence of int, optional
        Ids that are cell classes (default: the classes found in ``cls``, else 0).
    markers : ndarray (H, W), optional
        Cell-centre probability (``split="markers"``), seeds where it reaches ``marker_threshold``.
    min_area_px, max_area_px : float
        Area bounds in pixels of ``fg``.

    Returns
    -------
    dict
        ``y``, ``x`` (centroid, pixel-index convention), ``area_px``, ``prob_mean``, ``prob_max``, ``class`` and,
        with ``outlines``, ``outline_yx`` (M, 2) / ``outline_offset`` (n + 1) polygons in pixels of ``fg``: closed
        (the first vertex repeated last), simple, through the midpoints of the cell's outer pixel edges (the 0.5
        iso-line of its mask), simplified to within :data:`OUTLINE_TOLERANCE_PX`.
    """
    from cytoreview.inference.outlines import label_outlines

    fg = np.nan_to_num(np.asarray(fg, dtype=np.float32), nan=0.0)
    binary = fg >= threshold
    labels = split_instances(binary, fg, split=split, boundary=boundary, boundary_threshold=boundary_threshold,
                             min_distance_px=min_distance_px, markers=markers, marker_threshold=marker_threshold)
    cell_ids = list(cell_ids) if cell_ids is not None else [0]
    props = instance_properties(labels, fg, cls=cls if len(cell_ids) > 1 else None, cell_ids=cell_ids)
    area = props["area_px"]
    keep = area >= min_area_px
    if max_area_px is not None:
        keep &= area <= max_area_px
    ids = props["label"][keep]
    out = {"y": props["y"][keep], "x": props["x"][keep], "area_px": area[keep],
           "prob_mean": props["prob_mean"][keep], "prob_max": props["prob_max"][keep],
           "class": props["class"][keep]}
    if outlines:
        out["outline_yx"], out["outline_offset"] = label_outlines(labels, ids, tolerance_px=OUTLINE_TOLERANCE_PX)
    return out


def instance_properties(labels: np.ndarray, fg: np.ndarray, *, cls: np.ndarray | None = None,
                        cell_ids=(0,)) -> dict:
    """Area, centroid, mean and max of ``fg`` and majority class of every instance of ``labels``, in one pass.

    Parameters
    ----------
    labels : ndarray (H, W) of int
        Instance labels, 0 = background.
    fg : ndarray (H, W) of float
        Foreground probability.
    cls : ndarray (H, W) of int, optional
        Pixel class ids; an instance's class is the ``cell_ids`` value most common among its pixels (ties: the
        larger id; no pixel of any: the largest). Without it every instance gets ``cell_ids[0]``.

    Returns
    -------
    dict
        ``label`` (the instance ids present, ascending), ``area_px``, ``y``, ``x`` (centroid, pixel-index
        convention), ``prob_mean``, ``prob_max`` (float32) and ``class`` (int16), one entry per instance.
    """
    flat = np.asarray(labels).ravel()
    idx = np.flatnonzero(flat)
    lab = flat[idx]
    n = int(lab.max()) + 1 if len(lab) else 1
    area = np.bincount(lab, minlength=n)
    present = np.flatnonzero(area)
    present = present[present > 0]
    ys, xs = np.divmod(idx, labels.shape[1])
    safe = np.maximum(area[present], 1).astype(np.float64)
    vals = np.asarray(fg, dtype=np.float32).ravel()[idx]
    pmax = np.full(n, -np.inf, dtype=np.float32)
    np.maximum.at(pmax, lab, vals)
    out = {
        "label": present.astype(np.int64),
        "area_px": area[present].astype(np.float64),
        "y": np.bincount(lab, weights=ys, minlength=n)[present] / safe,
        "x": np.bincount(lab, weights=xs, minlength=n)[present] / safe,
        "prob_mean": (np.bincount(lab, weights=vals, minlength=n)[present] / safe).astype(np.float32),
        "prob_max": pmax[present],
    }
    ids = np.asarray(list(cell_ids), dtype=np.int64)
    if cls is None or len(ids) < 2:
        out["class"] = np.full(len(present), ids[0], dtype=np.int16)
        return out
    ids = np.unique(ids)  # ascending; counts are read largest id first so ties (and no pixel at all) go to it
    pix = np.asarray(cls).ravel()[idx]
    col = np.minimum(np.searchsorted(ids, pix), len(ids) - 1)
    hit = ids[col] == pix
    counts = np.bincount(lab[hit] * len(ids) + col[hit], minlength=n * len(ids)).reshape(n, len(ids))
    out["class"] = ids[::-1][np.argmax(counts[present, ::-1], axis=1)].astype(np.int16)
    return out


def cell_settings(card: dict, model_mpp: float) -> dict:
    """Keyword arguments of :func:`extract_instances` from a segmentation card, areas converted to model pixels."""
    cells = card.get("cells", {})
    px_area_um2 = model_mpp * model_mpp
    outputs = card["outputs"]
    out = {
        "threshold": float(outputs["probabilities"].get("threshold", 0.5)),
        "split": cells.get("split", "watershed"),
        "min_area_px": float(cells.get("min_area_um2", 0.0)) / px_area_um2,
        "max_area_px": (float(cells["max_area_um2"]) / px_area_um2) if "max_area_um2" in cells else None,
        "min_distance_px": float(cells.get("min_distance_um", 3.0)) / model_mpp,
    }
    if "boundary" in outputs:
        out["boundary_threshold"] = float(outputs["boundary"].get("threshold", 0.5))
    if "markers" in outputs:
        out["marker_threshold"] = float(cells.get("marker_threshold", 0.5))
    return out


def cells_from_store(group, card: dict, classes: list[dict], *, block_px: int = 2048, margin_px: int | None = None,
                     max_per_tile: int | None = None, out_px: int | None = None) -> tuple[dict, list[str]]:
    """Extract the cells of every field of a segmentation store, block by block; return ``(cells, warnings)``.

    Blocks of ``block_px`` mask pixels are read with ``margin_px`` of context on every side (default: four times the
    largest allowed cell's radius, at least 64 px); a cell is kept by the block that holds its centroid. Coordinates
    come back in level-0 pixels (``y_px``, ``x_px``) and the outlines too; ``area_um2`` uses the model's µm/px.
    A block with more than ``max_per_tile`` cells per tile it covers keeps the most confident ones, with a warning.
    (:class:`FieldCells` is the same pass a field at a time, from the store or from arrays still in memory.)
    """
    cells = FieldCells(group, card, classes, block_px=block_px, margin_px=margin_px, max_per_tile=max_per_tile,
                       out_px=out_px)
    cells.from_store(range(cells.n_fields))
    return cells.result()


class FieldCells:
    """The cells of a segmentation store gathered field by field: :meth:`from_arrays` for a field whose stitched
    output is still in memory (the predictor's buffers), :meth:`from_store` for fields read back from the store.

    Both run the same blocks with the same margins over the same pixels, so a field gives the same cells either way
    (each cell once, by the block holding its centroid); :meth:`result` puts them in field and block order and gives
    the warnings (split fallback, per-tile cap) once, in that order. Settings as :func:`cells_from_store`.
    """

    def __init__(self, group, card: dict, classes: list[dict], *, block_px: int = 2048, margin_px: int | None = None,
                 max_per_tile: int | None = None, out_px: int | None = None):
        attrs = dict(group.attrs)
        self.group = group
        self.model_mpp = float(attrs["model_mpp"])
        self.k = float(attrs["mask_px_level0"])
        settings = cell_settings(card, self.model_mpp)
        if margin_px is None:
            max_area = settings["max_area_px"] or (np.pi * (40.0 / self.model_mpp) ** 2 / 4)
            margin_px = int(max(64, 2 * np.sqrt(max_area / np.pi) * 2))
        self.block_px, self.margin_px = int(block_px), int(margin_px)
        self.cell_ids = cell_class_ids(classes)
        self.cap = max_per_tile or card.get("cells", {}).get("max_per_tile", 2000)
        self.out_px = out_px or max(1, int(attrs.get("size_px", 1)) - 2 * int(attrs.get("halo_px", 0)))
        self._parts: list = []
        self._notes: list = []  # ((field, y0, x0), category, text)
        # split: markers floods from the marker blobs, bounded by the boundary output when the store has one
        self.use_markers = settings["split"] == "markers" and "markers" in group
        self.use_boundary = settings["split"] in ("boundary", "markers") and "boundary" in group
        split = settings["split"]
        if (split == "boundary" and not self.use_boundary) or (split == "markers" and not self.use_markers):
            # a store written without the output the card splits at (an older pack version, another card): said, once
            split = "boundary" if self.use_boundary else "watershed"
            note = (f"the card splits touching cells at its {settings['split']} output, which this store does not "
                    f"hold: split by {split} instead (predict again with the pack to use it)")
            self._notes.append(((-1, -1, -1), CellSplitWarning, note))
        self.settings = {**settings, "split": split}
        mask = group["mask"]
        self.n_fields, height, width = mask.shape
        if "image_shape" in attrs:  # the stitched mask runs past the image edge: what lies beyond it is no cell
            height = min(height, int(np.ceil(attrs["image_shape"][0] / self.k)))
            width = min(width, int(np.ceil(attrs["image_shape"][1] / self.k)))
        self.height, self.width = height, width
        #: the stored arrays a field's extraction reads (foreground, classes, and the split's outputs)
        self.names = ("mask_score", "mask", *(("boundary",) if self.use_boundary else ()),
                      *(("markers",) if self.use_markers else ()))

    def _blocks(self):
        """``(y0, y1, x0, x1, a, b, c, d)``: each block and the rows / columns read with its margins."""
        bp, m, h, w = self.block_px, self.margin_px, self.height, self.width
        for y0 in range(0, h, bp):
            for x0 in range(0, w, bp):
                y1, x1 = min(h, y0 + bp), min(w, x0 + bp)
                yield y0, y1, x0, x1, max(0, y0 - m), min(h, y1 + m), max(0, x0 - m), min(w, x1 + m)

    def from_arrays(self, field: int, arrays: dict) -> None:
        """Cells of one field from its whole stitched arrays in memory (2-D, keyed by the names in :attr:`names`)."""
        for y0, y1, x0, x1, a, b, c, d in self._blocks():
            fg = np.asarray(arrays["mask_score"][a:b, c:d], dtype=np.float32)
            if np.any(fg >= self.settings["threshold"]):
                self._block(field, (y0, y1, x0, x1, a, c), fg,
                            {name: arrays[name][a:b, c:d] for name in self.names if name != "mask_score"})

    def from_store(self, fields) -> None:
        """Cells of ``fields`` read back from the store (the fields of one stored chunk read together, each chunk
        decoded once, memory bounded to a block of fields)."""
        fields = sorted(int(f) for f in fields)
        if not fields:
            return
        mask = self.group["mask"]
        arrays = {name: self.group[name] for name in self.names}
        side_px = ((min(self.height, self.block_px) + 2 * self.margin_px)
                   * (min(self.width, self.block_px) + 2 * self.margin_px))
        wanted = set(fields)
        for group in field_groups(self.n_fields, mask.chunks[0], side_px):
            inside = [f for f in range(group.start, group.stop) if f in wanted]
            if not inside:
                continue
            sel = slice(inside[0], inside[-1] + 1)
            for y0, y1, x0, x1, a, b, c, d in self._blocks():
                fg_all = np.asarray(arrays["mask_score"][sel, a:b, c:d], dtype=np.float32)
                hit = [i for i in range(len(fg_all)) if sel.start + i in wanted
                       and np.any(fg_all[i] >= self.settings["threshold"])]
                if not hit:
                    continue
                rest = {name: np.asarray(arr[sel, a:b, c:d]) for name, arr in arrays.items() if name != "mask_score"}
                for i in hit:
                    self._block(sel.start + i, (y0, y1, x0, x1, a, c), fg_all[i],
                                {name: v[i] for name, v in rest.items()})

    def _block(self, f: int, where, fg: np.ndarray, rest: dict) -> None:
        y0, y1, x0, x1, a, c = where
        bnd = rest["boundary"].astype(np.float32, copy=False) if self.use_boundary else None
        mk = rest["markers"].astype(np.float32, copy=False) if self.use_markers else None
        got = extract_instances(fg, cls=rest["mask"], cell_ids=self.cell_ids, boundary=bnd, markers=mk,
                                **self.settings)
        gy, gx = got["y"] + a, got["x"] + c
        keep = (gy >= y0) & (gy < y1) & (gx >= x0) & (gx < x1)
        idx = np.nonzero(keep)[0]
        cap, out_px = self.cap, self.out_px
        n_tiles = max(1, round((y1 - y0) / out_px) * round((x1 - x0) / out_px))
        if len(idx) > cap * n_tiles:
            note = (f"field {f}, mask block ({y0}, {x0}): {len(idx)} cells found, more than {cap} "
                    f"per tile; kept the {cap * n_tiles} most confident")
            self._notes.append(((f, y0, x0), CellCapWarning, note))
            idx = idx[np.argsort(-got["prob_mean"][idx], kind="stable")[: cap * n_tiles]]
            idx.sort()
        self._parts.append(((f, y0, x0), _to_level0(got, idx, f, a, c, self.k, self.model_mpp)))

    def result(self) -> tuple[dict, list[str]]:
        """``(cells, warnings)`` of every field gathered so far, field by field and block by block; each warning is
        also issued (:class:`CellSplitWarning`, :class:`CellCapWarning`)."""
        notes = sorted(self._notes, key=lambda n: n[0])
        for _, category, text in notes:
            warnings.warn(text, category, stacklevel=3)
        parts = [part for _, part in sorted(self._parts, key=lambda kv: kv[0])]
        return _concat(parts), [text for _, _, text in notes]


def _to_level0(got: dict, idx: np.ndarray, field: int, a: int, c: int, k: float, model_mpp: float) -> dict:
    off = got["outline_offset"]
    polys = [got["outline_yx"][off[i] : off[i + 1]] for i in idx]
    outline = np.concatenate(polys) if polys else np.zeros((0, 2), dtype=np.float32)
    outline = ((outline + [a, c]) + 0.5) * k - 0.5
    prob = got["prob_mean"][idx]
    return {
        "field": np.full(len(idx), field, dtype=np.int32),
        # pixel-index convention (level-0 pixel i is centred on i): mask pixel j is centred on (j + 0.5) * k - 0.5
        "y_px": (got["y"][idx] + a + 0.5) * k - 0.5,
        "x_px": (got["x"][idx] + c + 0.5) * k - 0.5,
        "class": got["class"][idx].astype(np.int16),
        "score": prob.astype(np.float32),
        "area_px": got["area_px"][idx].astype(np.int32),
        "area_um2": (got["area_px"][idx] * model_mpp * model_mpp).astype(np.float32),
        "prob_mean": prob.astype(np.float32),
        "prob_max": got["prob_max"][idx].astype(np.float32),
        # a cell is as certain as its pixels are far from the threshold: 1 - mean confidence of the call
        "uncertainty": (1.0 - prob).astype(np.float32),
        "outline_yx": outline.astype(np.float32),
        "outline_offset": np.concatenate([[0], np.cumsum([len(p) for p in polys])]).astype(np.int64),
    }


def _concat(parts: list[dict]) -> dict:
    if not parts:
        return _empty()
    out = {k: np.concatenate([p[k] for p in parts]) for k in CELL_COLUMNS}
    out["outline_yx"] = np.concatenate([p["outline_yx"] for p in parts]).astype(np.float32)
    offsets, base = [np.zeros(1, dtype=np.int64)], 0
    for p in parts:
        offsets.append(p["outline_offset"][1:] + base)
        base += int(p["outline_offset"][-1])
    out["outline_offset"] = np.concatenate(offsets)
    return out
