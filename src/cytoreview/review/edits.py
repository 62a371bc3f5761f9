"""What an edit of an overlay means, as project changes: the rules behind painting tiles and adding, deleting or
moving cell points, and toggling a field's classes.

The napari layer sync (``cytoreview._napari.review_layers``) only finds *what* changed on a layer (which tiles
got which value, which points appeared or went) and calls these functions, which decide what that means:

* **painting a tile** with a class labels its tile item with that class (the item is made if the project has
  none there); **erasing** a tile, or painting a value that is no class, changes nothing: a tile keeps one class,
  the layer shows the old one again (use ``UNSURE`` for "cannot tell");
* **adding a cell** makes a new cell item at the point, labelled with the chosen class by the reviewer;
* **deleting a cell** keeps its item and labels it :data:`~cytoreview.review.schema.NOT_A_CELL` (a class added to
  the schema on first use): the detection was a false positive, which is what a refit needs to learn, and the
  journal keeps the change;
* **moving a cell** is a deletion at the old place plus a new cell of the same class at the new place (an item's
  geometry is its identity);
* **drawing a region** (a polygon or rectangle on the regions layer) makes a new ``region`` item with that polygon,
  labelled with the chosen class by the reviewer (exported in GeoJSON, COCO and masks like every region, measured by
  :mod:`cytoreview.review.measure`);
* **deleting a region** keeps its item and labels it :data:`~cytoreview.review.schema.NOT_A_REGION` (a class added
  on first use): like a deleted cell, and unlike an erased tile, a region is something drawn or imported whose
  withdrawal is itself a decision, so the item and its journal stay (undo brings it back) while measurements and
  the regions layer leave it out; erasing cannot simply revert, because nothing would remain to show;
* **reshaping a region** is a deletion of the old polygon plus a new region of the same class with the new one
  (an item's geometry is its identity, as for moving a cell);
* **toggling a class of a field** adds it to or removes it from the field item's label set (fields are
  multi-label; ``UNSURE`` replaces the set).

Every change is one :meth:`~cytoreview.review.Project.set_label` (committed before the function returns), so the
layer is updated only after the project has the change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cytoreview.errors import ProjectError
from cytoreview.review import items as store_items
from cytoreview.review.schema import UNSURE


@dataclass(frozen=True)
class TilePaint:
    """One tile painted on the tile-class layer.

    Attributes
    ----------
    field, row, col : int
        The tile (field 0 for a slide).
    class_id : int or None
        Project class painted; None for erasing (or a value that is no class).
    item_id : int or None
        The tile's item when the caller already knows it (saves a lookup).
    """

    field: int
    row: int
    col: int
    class_id: int | None
    item_id: int | None = None


@dataclass(frozen=True)
class PaintResult:
    """What :func:`paint_tiles` did: ``labelled`` ``(paint, item_id)`` pairs, and the paints ``reverted`` (the tile
    keeps its class; show the old value again)."""

    labelled: list[tuple[TilePaint, int]]
    reverted: list[TilePaint]


def paint_tiles(project, image_id: int, tile_px: int, paints: Sequence[TilePaint], reviewer: str,
                dwell_s: float | None = None) -> PaintResult:
    """Label painted tiles; erasing reverts (see the module rules).

    Parameters
    ----------
    tile_px : int
        Tile size in level-0 px (part of a tile item's identity).
    paints : sequence of TilePaint

    Returns
    -------
    PaintResult
    """
    labelled, reverted = [], []
    for paint in paints:
        if paint.class_id is None:
            reverted.append(paint)
            continue
        iid = paint.item_id
        if iid is None:
            geometry = {"type": "tile", "row": int(paint.row), "col": int(paint.col), "size_px": int(tile_px)}
            iid = store_items.find_item(project.db, image_id, "tile", geometry, field=int(paint.field))
            if iid is None:
                (iid,) = project.add_items(image_id, [{"level": "tile", "field": int(paint.field),
                                                       "geometry": geometry}])
        project.set_label(iid, [int(paint.class_id)], reviewer, dwell_s=dwell_s)
        labelled.append((paint, iid))
    return PaintResult(labelled=labelled, reverted=reverted)


def not_a_cell_id(project, create: bool = True) -> int | None:
    """Project class id of :data:`~cytoreview.review.schema.NOT_A_CELL` (added on first use when ``create``)."""
    cls = project.schema.not_a_cell(create=create)
    return None if cls is None else cls.id


def is_deleted_cell(label: Sequence[int] | None, not_a_cell: int | None) -> bool:
    """Whether a cell item's label says "not a cell" (a deleted detection)."""
    return bool(label) and not_a_cell is not None and list(label) == [not_a_cell]


def add_cell(project, image_id: int, field: int, y_px: float, x_px: float, class_id: int, reviewer: str) -> int:
    """Make a cell item at level-0 ``(y_px, x_px)`` of ``field`` labelled ``class_id``; return its id.

    A cell already at exactly that point (say, one deleted before) is relabelled instead of duplicated.
    """
    geometry = {"type": "point", "y": float(y_px), "x": float(x_px)}
    iid = store_items.find_item(project.db, image_id, "cell", geometry, field=int(field))
    if iid is None:
        (iid,) = project.add_items(image_id, [{"level": "cell", "field": int(field), "geometry": geometry}])
    project.set_label(iid, [int(class_id)], reviewer)
    return iid


def add_region(project, image_id: int, field: int, coords_yx, class_id: int, reviewer: str) -> int:
    """Make a region item with the polygon ``coords_yx`` (level-0 ``[[y, x], ...]``, at least 3 vertices) of
    ``field`` labelled ``class_id``; return its id (the same polygon drawn again is relabelled, not duplicated)."""
    coords = [[float(y), float(x)] for y, x in coords_yx]
    if len(coords) < 3:
        raise ProjectError(f"a region needs at least 3 vertices, got {len(coords)}")
    geometry = {"type": "polygon", "coords": coords}
    iid = store_items.find_item(project.db, image_id, "region", geometry, field=int(field))
    if iid is None:
        (iid,) = project.add_items(image_id, [{"level": "region", "field": int(field), "geometry": geometry}])
    project.set_label(iid, [int(class_id)], reviewer)
    return iid


def not_a_region_id(project, create: bool = True) -> int | None:
    """Project class id of :data:`~cytoreview.review.schema.NOT_A_REGION` (added on first use when ``create``)."""
    cls = project.schema.not_a_region(create=create)
    return None if cls is None else cls.id


def is_deleted_region(label: Sequence[int] | None, not_a_region: int | None) -> bool:
    """Whether a region item's label says "not a region" (a deleted region)."""
    return bool(label) and not_a_region is not None and list(label) == [not_a_region]


def is_live_region(label: Sequence[int] | None, not_a_region: int | None) -> bool:
    """Whether a region item counts (shown, measured, exported): it has a class and is not deleted. A drawn region
    whose drawing was undone has no label and does not count either."""
    return bool(label) and not is_deleted_region(label, not_a_region)


def delete_regions(project, item_ids: Sequence[int], reviewer: str) -> int:
    """Label region items :data:`~cytoreview.review.schema.NOT_A_REGION` (their items stay); return that class id.

    Raises
    ------
    ProjectError
        An item is not a region.
    """
    ids = [int(i) for i in item_ids]
    for iid in ids:
        level = project.item(iid).level
        if level != "region":
            raise ProjectError(f"item {iid} is a {level} item, not a region: it cannot be deleted as one")
    nar = not_a_region_id(project, create=True)
    with project.one_edit():  # all of them or none, one Ctrl+Z
        for iid in ids:
            if project.item(iid).label != [nar]:  # deleting a deleted region writes nothing
                project.set_label(iid, [nar], reviewer)
    return nar


def reshape_region(project, item_id: int, coords_yx, reviewer: str, default_class: int | None = None) -> int:
    """Reshape a region: "not a region" for the old polygon, a new region of the same class with ``coords_yx``
    (level-0 ``[[y, x], ...]``, field kept); return the new item's id.

    Parameters
    ----------
    default_class : int, optional
        Class of the new region when the old one had none (or was already "not a region").

    Raises
    ------
    ProjectError
        The item is not a region, the polygon has fewer than 3 vertices, or there is no class to keep.
    """
    old = project.item(int(item_id))
    if old.level != "region":
        raise ProjectError(f"item {item_id} is a {old.level} item, not a region: it cannot be reshaped")
    coords = [[float(y), float(x)] for y, x in coords_yx]
    if len(coords) < 3:
        raise ProjectError(f"a region needs at least 3 vertices, got {len(coords)}")
    nar = not_a_region_id(project, create=False)
    cid = old.label[0] if is_live_region(old.label, nar) else default_class
    if cid is None:
        raise ProjectError(f"region {item_id} has no class to keep and no default class was given")
    if old.geometry.get("type") == "polygon" and [[float(y), float(x)] for y, x in old.geometry["coords"]] == coords:
        return int(item_id)  # the same outline: nothing to journal
    with project.one_edit():  # the old outline deleted and the new one labelled: both or neither, one Ctrl+Z
        delete_regions(project, [item_id], reviewer)
        return add_region(project, old.image_id, int(old.field), coords, int(cid), reviewer)


def delete_cells(project, item_ids: Sequence[int], reviewer: str) -> int:
    """Label cell items :data:`~cytoreview.review.schema.NOT_A_CELL` (their items stay); return that class id."""
    nac = not_a_cell_id(project, create=True)
    with project.one_edit():  # all of them or none, one Ctrl+Z
        for iid in item_ids:
            project.set_label(int(iid), [nac], reviewer)
    return nac


def move_cell(project, item_id: int, field: int, y_px: float, x_px: float, reviewer: str,
              default_class: int | None = None) -> int:
    """Move a cell: "not a cell" at the old place, a new cell of the same class at the new one; return its id.

    Parameters
    ----------
    default_class : int, optional
        Class of the new cell when the old one had none (or was already "not a cell").

    Raises
    ------
    ProjectError
        The item is not a cell, or it had no class and ``default_class`` is not given.
    """
    old = project.item(int(item_id))
    if old.level != "cell":
        raise ProjectError(f"item {item_id} is a {old.level} item, not a cell: it cannot be moved")
    nac = not_a_cell_id(project, create=False)
    cid = old.label[0] if old.label and not is_deleted_cell(old.label, nac) else default_class
    if cid is None:
        raise ProjectError(f"cell {item_id} has no class to keep and no default class was given")
    with project.one_edit():  # "not a cell" at the old place and the cell at the new one: both or neither
        delete_cells(project, [item_id], reviewer)
        return add_cell(project, old.image_id, field, y_px, x_px, int(cid), reviewer)


def toggle_field_class(project, item_id: int, class_id: int, reviewer: str, dwell_s: float | None = None, *,
                       blinded: bool = False) -> list[int]:
    """Add ``class_id`` to a field item's label set, or remove it if it is there; return the new label.

    ``UNSURE`` is not toggled: it replaces the set (and any class toggled later replaces ``UNSURE``). With
    ``blinded`` the toggle applies to the reviewer's own label (what a blinded reader sees), not the current one.
    """
    item = project.item(int(item_id), blind_for=reviewer if blinded else None)
    if item.level != "field":
        raise ProjectError(f"item {item_id} is a {item.level} item: only a field item's classes toggle")
    if int(class_id) == UNSURE:
        new = [UNSURE]
    else:
        new = sorted((set(item.label or []) - {UNSURE}) ^ {int(class_id)})
    project.set_label(int(item_id), new, reviewer, dwell_s=dwell_s)
    return new
