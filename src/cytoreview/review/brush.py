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
  second one on it;
* holes inside a painted piece are filled (a region is one outline); painting never removes anything (delete or
  edit the shape on the regions layer for that).

Every change goes through :mod:`cytoreview.review.edits`, so it is journalled like a drawn region and undone one
journal row at a time.
"""

from __future__ import annotations

import numpy as np

from cytoreview.errors import ProjectError
from cytoreview.review import edits

#: Vertices of a traced outline may stray this many brush pixels from the painted edge (below the 0.35 px by which
#: the traced outline cuts a pixel corner, so simplifying never cuts a whole pixel away).
TOLERANCE_PX = 0.3


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


def paint_region(project, image_id: int, field: int, mask, class_id: int, reviewer: str, *,
                 px_level0: float = 1.0, offset_px=(0, 0), tolerance_px: float = TOLERANCE_PX) -> list[int]:
    """Turn a brush stroke into region items (see the module rules); return the ids of the region items made or
    reshaped (the live ones, in the order of the painted pieces).

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
    from skimage.draw import polygon as fill_polygon
    from skimage.measure import label as components

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ProjectError(f"a brush mask is two-dimensional, got shape {mask.shape}")
    b = float(px_level0)
    if not b > 0:
        raise ProjectError(f"px_level0 must be positive, got {px_level0}")
    if not mask.any():
        return []
    r0, c0 = int(offset_px[0]), int(offset_px[1])
    # the regions of the class on this field that could touch the paint: their outlines on the brush grid
    items = project.items(image_id=image_id, level="region")
    nar = edits.not_a_region_id(project, create=False)
    candidates = []
    for iid, f, geom, lab in zip(items["item_id"].tolist(), items["field"].tolist(), items["geometry"].tolist(),
                                 items["label"].tolist()):
        if int(f) != int(field) or geom.get("type") != "polygon" or not edits.is_live_region(lab, nar):
            continue
        if int(lab[0]) != int(class_id):
            continue
        grid = np.asarray(geom["coords"], dtype=np.float64) / b - 0.5  # level-0 edge coords -> brush pixel centres
        candidates.append((int(iid), grid))
    rows, cols = np.nonzero(mask)
    lo = np.array([rows.min() + r0, cols.min() + c0]) - 1
    hi = np.array([rows.max() + r0, cols.max() + c0]) + 2
    near = [(iid, g) for iid, g in candidates
            if (g.min(0) <= hi + 1).all() and (g.max(0) >= lo - 1).all()]
    for _, g in near:  # the canvas covers the paint and every region it may merge with
        lo = np.minimum(lo, np.floor(g.min(0)).astype(int) - 1)
        hi = np.maximum(hi, np.ceil(g.max(0)).astype(int) + 2)
    shape = tuple(int(v) for v in hi - lo)
    paint = np.zeros(shape, dtype=bool)
    paint[rows + r0 - lo[0], cols + c0 - lo[1]] = True
    rasters = {}
    for iid, g in near:
        raster = np.zeros(shape, dtype=bool)
        rr, cc = fill_polygon(g[:, 0] - lo[0], g[:, 1] - lo[1], shape)
        raster[rr, cc] = True
        rasters[iid] = raster
    from scipy import ndimage

    grown = ndimage.binary_dilation(paint)  # touching (sharing an edge) counts as touching
    touched = {iid: r for iid, r in rasters.items() if (r & grown).any()}
    union = paint.copy()
    for r in touched.values():
        union |= r
    pieces = components(_fill(union), connectivity=2)
    made: list[int] = []
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
            made.append(edits.add_region(project, image_id, int(field), coords, int(class_id), reviewer))
            continue
        keep = edits.reshape_region(project, inside[0], coords, reviewer)
        if inside[1:]:
            edits.delete_regions(project, inside[1:], reviewer)
        made.append(keep)
    return made
