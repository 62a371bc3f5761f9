"""What painting a region with the brush means: a painted mask becomes region items, merged with the regions of the
same class it touches.

The napari brush layer (``cytoreview._napari.review_regions``) only hands over *where* a stroke painted (a boolean
mask on its grid of ``px_level0`` level-0 pixels per brush pixel, and the grid offset of the mask) and with which
class. :func:`paint_region` decides what that means:

* each connected piece of paint, together with every live region of the same class on that field that it touches
  or overlaps, is one region: its outline is traced on the brush grid (:func:`skimage.measure.find_contours`,
  simplified with :func:`skimage.measure.approximate_polygon` to within ``tolerance_px`` brush pixels) and kept in
  level-0 pixels like a drawn polygon;
* a piece that touches no region of its class becomes a new region item
  (:func:`~cytoreview.review.edits.add_region`); one that touches regions reshapes the oldest of them to the merged
  outline (:func:`~cytoreview.review.edits.reshape_region`) and deletes the others it swallowed
  (:func:`~cytoreview.review.edits.delete_regions`), so painting over a region extends it instead of stacking a
  second one on it (:class:`BrushRegion` says which items each new outline replaced);
* holes inside a painted piece are filled (a region is one outline);
* **erasing** (:func:`erase_regions`) cuts the stroke out of every live region it overlaps, whatever its class: a
  region erased whole is deleted, what is left of one is reshaped to its largest piece, and other pieces it falls
  apart into become new regions of its class.

Every change goes through :mod:`cytoreview.review.edits`, so it is journalled like a drawn region and undone one
journal row at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cytoreview.errors import ProjectError
from cytoreview.review import edits

#: Vertices of a traced outline may stray this many brush pixels from the painted edge (below the 0.35 px by which
#: the traced outline cuts a pixel corner, so simplifying never cuts a whole pixel away).
TOLERANCE_PX = 0.3


@dataclass(frozen=True)
class BrushRegion:
    """One region a stroke made or extended.

    Attributes
    ----------
    item_id : int
        The live region item with the new outline.
    replaced : list of int
        The region items it replaced (deleted, in the order they were journalled just before ``item_id`` was made):
        empty for a new region. Undoing ``item_id`` and then these, newest first, takes the stroke back whole.
    deleted : bool
        ``item_id`` is a region the stroke erased whole (now "not a region").
    """

    item_id: int
    replaced: list[int] = field(default_factory=list)
    deleted: bool = False

    @property
    def journalled(self) -> list[int]:
        """The items whose journal rows this change wrote, oldest first (one row each)."""
        return [self.item_id] if self.deleted else [*self.replaced, self.item_id]


def _fill(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_fill_holes(mask)


def outline_yx(mask: np.ndarray, tolerance_px: float = TOLERANCE_PX) -> np.ndarray | None:
    """The outer outline of one connected piece of ``mask`` as ``[[row, col], ...]`` on the mask's grid, with the
    outline on the pixels' outer edges (a block of ``n x n`` pixels has area ``n**2``); None for no pixels."""
    from skimage.measure import approximate_polygon, find_contours

    if not mask.any():
        return None
    padded = np.pad(mask.astype(np.float32), 1)
    contours = find_contours(padded, 0.5)
    if not contours:
        return None
    outer = max(contours, key=lambda c: abs(_area(c)))
    outer = approximate_polygon(outer, tolerance=float(tolerance_px))
    if len(outer) > 1 and np.allclose(outer[0], outer[-1]):
        outer = outer[:-1]
    outer = outer - 1.0 + 0.5  # unpad; contour at 0.5 between pixel centres -> the pixels' outer edges
    return outer if len(outer) >= 3 else None


def _area(coords: np.ndarray) -> float:
    y, x = coords[:, 0], coords[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def _live_regions(project, image_id: int, field: int, b: float, class_id: int | None = None) -> list:
    """``(item_id, class_id, outline on the brush grid in pixel-centre units)`` of the live polygon regions of a
    field (of one class when given)."""
    items = project.items(image_id=image_id, level="region")
    nar = edits.not_a_region_id(project, create=False)
    out = []
    for iid, f, geom, lab in zip(items["item_id"].tolist(), items["field"].tolist(), items["geometry"].tolist(),
                                 items["label"].tolist()):
        if int(f) != int(field) or geom.get("type") != "polygon" or not edits.is_live_region(lab, nar):
            continue
        if class_id is not None and int(lab[0]) != int(class_id):
            continue
        grid = np.asarray(geom["coords"], dtype=np.float64) / b - 0.5  # level-0 edge coords -> brush pixel centres
        out.append((int(iid), int(lab[0]), grid))
    return out


def _check(mask, px_level0) -> tuple[np.ndarray, float]:
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ProjectError(f"a brush mask is two-dimensional, got shape {mask.shape}")
    b = float(px_level0)
    if not b > 0:
        raise ProjectError(f"px_level0 must be positive, got {px_level0}")
    return mask, b


def _canvas(mask, offset_px, outlines) -> tuple[np.ndarray, tuple, np.ndarray]:
    """A canvas covering the stroke and every outline near it: ``(lo, shape, stroke on the canvas)``."""
    rows, cols = np.nonzero(mask)
    r0, c0 = int(offset_px[0]), int(offset_px[1])
    lo = np.array([rows.min() + r0, cols.min() + c0]) - 1
    hi = np.array([rows.max() + r0, cols.max() + c0]) + 2
    near = [g for g in outlines if (g.min(0) <= hi + 1).all() and (g.max(0) >= lo - 1).all()]
    for g in near:
        lo = np.minimum(lo, np.floor(g.min(0)).astype(int) - 1)
        hi = np.maximum(hi, np.ceil(g.max(0)).astype(int) + 2)
    shape = tuple(int(v) for v in hi - lo)
    stroke = np.zeros(shape, dtype=bool)
    stroke[rows + r0 - lo[0], cols + c0 - lo[1]] = True
    return lo, shape, stroke


def _raster(outline: np.ndarray, lo, shape) -> np.ndarray:
    from skimage.draw import polygon as fill_polygon

    raster = np.zeros(shape, dtype=bool)
    rr, cc = fill_polygon(outline[:, 0] - lo[0], outline[:, 1] - lo[1], shape)
    raster[rr, cc] = True
    return raster


def erase_regions(project, image_id: int, field: int, mask, reviewer: str, *, px_level0: float = 1.0,
                  offset_px=(0, 0), tolerance_px: float = TOLERANCE_PX) -> list[BrushRegion]:
    """Cut a brush stroke out of the live regions it overlaps, of any class (see the module rules).

    Returns
    -------
    list of BrushRegion
        In journal order: for a region cut down, its new outline's item with ``replaced=[old]``; for a piece it fell
        apart into, a new region; for a region erased whole, that item with ``deleted=True``.

    Raises
    ------
    ProjectError
        ``mask`` is not two-dimensional or ``px_level0`` not positive.
    """
    from skimage.measure import label as components

    mask, b = _check(mask, px_level0)
    if not mask.any():
        return []
    regions = _live_regions(project, image_id, field, b)
    lo, shape, stroke = _canvas(mask, offset_px, [g for _, _, g in regions])
    out: list[BrushRegion] = []
    with project.one_edit():  # the whole stroke: saved all or nothing, one Ctrl+Z
        for iid, cid, grid in regions:
            raster = _raster(grid, lo, shape)
            if not (raster & stroke).any():
                continue
            pieces = components(raster & ~stroke, connectivity=2)
            outlines = [o for o in (outline_yx(pieces == k, tolerance_px)
                                    for k in range(1, int(pieces.max()) + 1)) if o is not None]
            if not outlines:
                edits.delete_regions(project, [iid], reviewer)
                out.append(BrushRegion(iid, deleted=True))
                continue
            outlines.sort(key=lambda o: -abs(_area(o)))
            kept = edits.reshape_region(project, iid, ((outlines[0] + lo) * b).tolist(), reviewer)
            out.append(BrushRegion(kept, [iid] if kept != iid else []))
            for extra in outlines[1:]:
                extra_yx = ((extra + lo) * b).tolist()
                out.append(BrushRegion(edits.add_region(project, image_id, int(field), extra_yx, cid, reviewer)))
    return out


def paint_region(project, image_id: int, field: int, mask, class_id: int, reviewer: str, *,
                 px_level0: float = 1.0, offset_px=(0, 0), tolerance_px: float = TOLERANCE_PX) -> list[BrushRegion]:
    """Turn a brush stroke into region items (see the module rules); return one :class:`BrushRegion` per painted
    piece: the live region item made or reshaped, and the items it replaced.

    Parameters
    ----------
    mask : array of bool, (rows, cols)
        Where the stroke painted, on the brush grid.
    class_id : int
        The project class painted.
    px_level0 : float
        Level-0 pixels per brush pixel.
    offset_px : (int, int)
        Brush-grid ``(row, col)`` of ``mask[0, 0]``.

    Raises
    ------
    ProjectError
        ``mask`` is not two-dimensional or ``px_level0`` not positive.
    """
    from skimage.measure import label as components

    mask, b = _check(mask, px_level0)
    if not mask.any():
        return []
    # the regions of the class on this field that could touch the paint, on a canvas covering them and the stroke
    candidates = [(iid, g) for iid, _, g in _live_regions(project, image_id, field, b, class_id)]
    lo, shape, paint = _canvas(mask, offset_px, [g for _, g in candidates])
    rasters = {iid: _raster(g, lo, shape) for iid, g in candidates}
    from scipy import ndimage

    grown = ndimage.binary_dilation(paint)  # touching (sharing an edge) counts as touching
    touched = {iid: r for iid, r in rasters.items() if (r & grown).any()}
    union = paint.copy()
    for r in touched.values():
        union |= r
    pieces = components(_fill(union), connectivity=2)
    made: list[BrushRegion] = []
    with project.one_edit():  # the whole stroke: saved all or nothing, one Ctrl+Z
        for k in range(1, int(pieces.max()) + 1):
            piece = pieces == k
            if not (piece & paint).any():
                continue  # a touched region untouched by this stroke's own paint stays as it is
            outline = outline_yx(piece, tolerance_px)
            if outline is None:
                continue
            coords = ((outline + lo) * b).tolist()  # brush-grid edges -> level-0 px
            inside = sorted(iid for iid, r in touched.items() if (r & piece).any())
            if not inside:
                made.append(BrushRegion(edits.add_region(project, image_id, int(field), coords, int(class_id),
                                                         reviewer)))
                continue
            # the swallowed regions go first, then the oldest is reshaped (one edit: one Ctrl+Z takes the stroke back)
            swallowed = inside[1:]
            if swallowed:
                edits.delete_regions(project, swallowed, reviewer)
            keep = edits.reshape_region(project, inside[0], coords, reviewer)
            made.append(BrushRegion(keep, swallowed + ([inside[0]] if keep != inside[0] else [])))
    return made


def apply_strokes(project, image_id: int, planes, reviewer: str, *, erase_value: int, default_class: int,
                  px_level0: float = 1.0, tolerance_px: float = TOLERANCE_PX) -> list[BrushRegion]:
    """Turn what a brush surface holds into region edits, as ONE edit (one transaction, one Ctrl+Z).

    Parameters
    ----------
    planes : array of int, (fields, rows, cols)
        The brush surface, one plane per field: 0 nothing, ``erase_value`` erased, any other value ``v`` painted
        with project class ``v - 1`` (or ``default_class`` when ``v - 1`` is not an active class).
    erase_value : int
        The value that erases (:func:`erase_regions`).
    px_level0 : float
        Level-0 pixels per brush pixel.

    Returns
    -------
    list of BrushRegion
        Every region made, extended, cut or erased, field by field, erasing and painting in value order.

    Raises
    ------
    ProjectError
        A stroke cannot be made (nothing of the whole surface is saved then).
    """
    planes = np.asarray(planes)
    if planes.ndim != 3:
        raise ProjectError(f"brush planes must be (fields, rows, cols), got shape {planes.shape}")
    known = {int(c.id) for c in project.schema.active_classes}
    out: list[BrushRegion] = []
    with project.one_edit():
        for field in np.flatnonzero(planes.reshape(len(planes), -1).any(axis=1)).tolist():
            plane = planes[field]
            for value in np.unique(plane[plane > 0]).tolist():
                rows, cols = np.nonzero(plane == value)
                r0, c0 = int(rows.min()), int(cols.min())
                mask = np.zeros((int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1), dtype=bool)
                mask[rows - r0, cols - c0] = True
                where = {"px_level0": float(px_level0), "offset_px": (r0, c0), "tolerance_px": tolerance_px}
                if int(value) == int(erase_value):
                    out += erase_regions(project, image_id, int(field), mask, reviewer, **where)
                else:
                    cid = int(value) - 1 if int(value) - 1 in known else int(default_class)
                    out += paint_region(project, image_id, int(field), mask, cid, reviewer, **where)
    return out
