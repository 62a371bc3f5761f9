"""The cell gallery's rules: which cells show in which group and order, and what its keys change.

The gallery shows a project's cells as thumbnails grouped by their current class (as an automated cell analyser does):

* groups follow the schema's class order; unreviewed model calls below ``unidentified_below`` form the
  :data:`~cytoreview.review.differential.UNIDENTIFIED` group, shown after the classes, and the set-aside classes
  ("not classed", "unsure", "not a cell") come last;
* inside a group the order is ``"doubt"`` (unreviewed first, lowest model confidence first), ``"uncertainty"``
  (highest model uncertainty first), ``"disagreement"`` (cells whose label differs from the model's call first, then
  doubt) or ``"rare"`` (the groups themselves from the smallest to the largest, doubt inside);
* a key reclassifies the selected cells (:func:`reclassify`), Enter accepts the model's calls of the shown page
  (:func:`accept_calls`: only cells nobody has reviewed, so a correction is never overwritten), ``0`` marks them
  :data:`~cytoreview.review.differential.NOT_CLASSED` (:func:`mark_not_classed`); each cell is one journalled
  :meth:`~cytoreview.review.Project.set_label` / :meth:`~cytoreview.review.Project.accept`, :func:`undo_batch`
  takes a whole key press back and :func:`redo_batch` re-applies it (journal actions ``undo`` / ``redo``);
* thumbnails are cut once per cell into the project's persistent cache (:func:`cache_thumbnails`, or the gallery's
  background fill), so a page of the gallery reads 100 small crops instead of decoding the fields they lie on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cytoreview.class_names import name_key
from cytoreview.errors import ProjectError
from cytoreview.review.cell_crops import CROP_UM, GALLERY_THUMB_PX, CropReader
from cytoreview.review.differential import NOT_CLASSED, UNIDENTIFIED, UNLABELLED, cell_table

#: Sort orders of the gallery.
SORTS = ("doubt", "uncertainty", "disagreement", "rare")
#: Default confidence below which an unreviewed model call is "unidentified".
UNIDENTIFIED_BELOW = 0.5
#: Colour of the "not classed" class.
NOT_CLASSED_COLOR = "#7f7f7f"
#: Groups shown after the classes, in this order.
TRAILING_GROUPS = (UNIDENTIFIED, NOT_CLASSED, "unsure", "not a cell", UNLABELLED)
#: Columns of :func:`gallery_cells`.
GALLERY_COLUMNS = ["item_id", "image_id", "field", "z", "geometry", "group", "label_id", "model_label",
                   "confidence", "reviewed", "corrected"]


def not_classed_id(project, create: bool = True) -> int | None:
    """Project class id of :data:`NOT_CLASSED` (a cell class added on first use when ``create``)."""
    try:
        return project.schema.by_name(NOT_CLASSED).id
    except ProjectError:
        if not create:
            return None
    return project.schema.add(NOT_CLASSED, color=NOT_CLASSED_COLOR, level="cell").id


def gallery_cells(project, *, image_id: int | None = None, case_id: str | None = None, sort: str = "doubt",
                  unidentified_below: float | None = UNIDENTIFIED_BELOW) -> pd.DataFrame:
    """The cells to show, in gallery order (groups, then the order inside each group).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`GALLERY_COLUMNS`; ``group`` is the class name the cell is shown under, ``label_id`` its current
        class id (None without a label). Empty when there are no cells.

    Raises
    ------
    ProjectError
        ``sort`` is not one of :data:`SORTS`.
    """
    if sort not in SORTS:
        raise ProjectError(f"gallery sort {sort!r} is not one of {', '.join(SORTS)}")
    cells = cell_table(project, image_id=image_id, case_id=case_id, unidentified_below=unidentified_below)
    if cells.empty:
        return pd.DataFrame(columns=GALLERY_COLUMNS)
    confidence = cells["confidence"].to_numpy(float)
    conf = np.where(np.isnan(confidence), -1.0, confidence)
    model_ids = cells["model_label"]
    label_ids = [ids[0] if ids else None for ids in cells["label_ids"]]
    out = pd.DataFrame({
        "item_id": cells["item_id"].to_numpy(), "image_id": cells["image_id"].to_numpy(),
        "field": cells["field"].to_numpy(), "z": cells["z"].to_numpy(), "geometry": cells["geometry"].to_numpy(),
        "group": cells["class"].to_numpy(), "label_id": pd.Series(label_ids, dtype=object).to_numpy(),
        "model_label": model_ids.to_numpy(), "confidence": confidence,
        "reviewed": cells["reviewed"].to_numpy(), "corrected": cells["corrected"].to_numpy(),
    })
    class_order = {name_key(c.name): k for k, c in enumerate(project.schema.classes)}
    trailing = {name_key(g): len(class_order) + 1 + k for k, g in enumerate(TRAILING_GROUPS)}
    keys = [name_key(g) for g in out["group"]]
    rank = np.array([trailing.get(k, class_order.get(k, len(class_order))) for k in keys])
    if sort == "rare":
        sizes = out["group"].map(out["group"].value_counts()).to_numpy()
        rank = np.where(rank < len(class_order) + 1, sizes, 10**9 + rank)
    within = conf.copy()
    if sort == "uncertainty":
        unc = 1.0 - conf
        within = -unc
    tie = out["reviewed"].to_numpy().astype(int)
    disagree = np.zeros(len(out), int)
    if sort == "disagreement":
        disagree = (~out["corrected"].to_numpy()).astype(int)
    order = np.lexsort((out["item_id"].to_numpy(), within, tie, disagree, rank))
    return out.iloc[order].reset_index(drop=True)


def reclassify(project, item_ids: Sequence[int], class_id: int, reviewer: str, dwell_s: float | None = None) -> int:
    """Label every cell of ``item_ids`` with ``class_id`` (one journal row each); return how many changed.

    Raises
    ------
    ProjectError
        An item is not a cell, or the class does not exist (nothing after the bad one is changed).
    """
    n = 0
    for iid in item_ids:
        project.set_label(int(iid), [int(class_id)], reviewer, dwell_s)
        n += 1
    return n


def mark_not_classed(project, item_ids: Sequence[int], reviewer: str) -> int:
    """Label the cells :data:`NOT_CLASSED` (left out of every differential); return how many."""
    return reclassify(project, item_ids, not_classed_id(project, create=True), reviewer)


def accept_calls(project, item_ids: Sequence[int], reviewer: str) -> list[int]:
    """Accept the model's call of every cell of ``item_ids`` that nobody has reviewed and that has a call.

    Returns the item ids accepted (reviewed cells keep their label: Enter never overwrites a correction).
    """
    if not len(item_ids):
        return []
    items = project.items(ids=[int(i) for i in item_ids])
    todo = items[(~items["reviewed"].astype(bool)) & items["model_class"].notna()]["item_id"].tolist()
    for iid in todo:
        project.accept(int(iid), reviewer)
    return [int(i) for i in todo]


def undo_batch(project, reviewer: str, n: int) -> int:
    """Undo ``reviewer``'s last ``n`` changes (one gallery key press on ``n`` cells); return how many were undone."""
    return _repeat(project.undo, reviewer, n)


def redo_batch(project, reviewer: str, n: int) -> int:
    """Redo ``reviewer``'s last ``n`` undone changes (a key press taken back by :func:`undo_batch`); return how many
    were redone (fewer when the journal has fewer undone changes: a new change since the undo ends the redo)."""
    return _repeat(project.redo, reviewer, n)


def _repeat(step, reviewer: str, n: int) -> int:
    """Call ``step(reviewer)`` (undo or redo) up to ``n`` times, stopping when it has nothing left; how many ran."""
    done = 0
    for _ in range(int(n)):
        if step(reviewer) is None:
            break
        done += 1
    return done


def cache_thumbnails(project, *, crop_um: float = CROP_UM, thumb_px: int = GALLERY_THUMB_PX,
                     image_id: int | None = None) -> tuple[int, int]:
    """Cut every cell's thumbnail into the project's persistent cache (field by field, each field decoded once).

    Returns
    -------
    tuple of int
        ``(cut now, cells in all)``: cells already cached for their current place are not cut again.

    Raises
    ------
    ProjectError
        The project holds no cells, or its folder cannot hold the cache (read-only).
    """
    cells = project.items(image_id=image_id, level="cell")
    if cells.empty:
        raise ProjectError(f"project {project.folder} holds no cells: run a cell pack (cytoreview predict) first")
    reader = CropReader(project, crop_um=crop_um, thumb_px=thumb_px, cache=True)
    try:
        if reader.cache is None:
            raise ProjectError(f"project {project.folder} cannot hold a thumbnail cache (its folder is read-only)")
        cut = reader.fill(cells[["item_id", "image_id", "field", "z", "geometry"]])
    finally:
        reader.close()
    return cut, len(cells)
