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
  :data:`~cytoreview.review.differential.NOT_CLASSED` (:func:`mark_not_classed`); a key press is ONE transaction
  (:meth:`~cytoreview.review.Project.set_labels` / :meth:`~cytoreview.review.Project.accept_many`) of one journal
  row per cell, journalled as one group, so one undo in any dock takes the whole key press back
  (:func:`undo_key_press`) and one redo re-applies it (:func:`redo_key_press`);
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
from cytoreview.review.differential import NOT_CLASSED, UNIDENTIFIED, UNLABELLED, cell_table, differential_of

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


def missing_images(project, cells: pd.DataFrame | None = None) -> list[str]:
    """Paths of the project's images (those of ``cells``, when given) that are not where the project says: their
    cells show as hatched grey placeholders until the image is added again at its new path (which relinks it)."""
    wanted = None if cells is None or cells.empty else set(int(i) for i in cells["image_id"].unique())
    gone = project.image_problems(wanted, content=False)  # presence only: no file is read
    return [str(rec.path) for rec in project.images() if rec.id in gone]


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
    return GalleryCells(project, image_id=image_id, case_id=case_id, sort=sort,
                        unidentified_below=unidentified_below).cells()


class GalleryCells:
    """The gallery's cells, read from the project once and then kept current in memory.

    Reading every cell (:func:`~cytoreview.review.differential.cell_table`) takes seconds at 10⁵ cells; a key press
    changes a page of them. :meth:`update` re-reads only the changed cells (their label, reviewed state and group),
    and :meth:`cells` / :meth:`differential` recompute the order and the counts from arrays, so regrouping after a
    reclassification costs milliseconds. Changes made elsewhere (another dock, another process) show after
    :meth:`reload`.

    Parameters
    ----------
    project : Project
    image_id, case_id, sort, unidentified_below
        As :func:`gallery_cells`.
    """

    def __init__(self, project, *, image_id: int | None = None, case_id: str | None = None, sort: str = "doubt",
                 unidentified_below: float | None = UNIDENTIFIED_BELOW):
        self.project = project
        self._where = {"image_id": image_id, "case_id": case_id}
        self.set_order(sort, unidentified_below, regroup=False)
        self.reload()

    def set_order(self, sort: str, unidentified_below: float | None, regroup: bool = True) -> None:
        """Another sort or confidence threshold (no project read)."""
        if sort not in SORTS:
            raise ProjectError(f"gallery sort {sort!r} is not one of {', '.join(SORTS)}")
        self.sort = sort
        self.unidentified_below = unidentified_below
        if regroup:
            self._classify(np.arange(len(self._item_id)))

    def reload(self) -> None:
        """Read every cell from the project again."""
        table = cell_table(self.project, unidentified_below=None, **self._where)
        self._table = table.reset_index(drop=True)
        self._item_id = self._table["item_id"].to_numpy(np.int64)
        self._row = {int(iid): k for k, iid in enumerate(self._item_id)}
        confidence = self._table["confidence"].to_numpy(float)
        self._confidence = confidence
        # the order inside a group never changes (confidence, then item id): rank it once, sort small ints after
        conf = np.where(np.isnan(confidence), -1.0, confidence)
        self._within_rank = np.empty(len(table), dtype=np.int64)
        self._within_rank[np.lexsort((self._item_id, conf))] = np.arange(len(table))
        self._image_names, self._image_code = np.unique(self._table["image_path"].to_numpy(str), return_inverse=True)
        self._image_code = self._image_code.astype(np.int64)
        self._image_first = np.zeros(len(self._image_names), dtype=np.int64)  # a row of each image (its case id)
        self._image_first[self._image_code[::-1]] = np.arange(len(table))[::-1]
        self._reviewed = self._table["reviewed"].to_numpy(bool).copy()
        self._corrected = self._table["corrected"].to_numpy(bool).copy()
        self._label_id = np.empty(len(table), dtype=object)
        self._label_id[:] = [ids[0] if ids else None for ids in self._table["label_ids"]]
        self._label_name = np.empty(len(table), dtype=object)
        self._label_name[:] = [labels[0] if labels else UNLABELLED for labels in self._table["labels"]]
        self._group = np.empty(len(table), dtype=object)
        self._code = np.zeros(len(table), dtype=np.int64)  # index of the group's name in self._names
        self._names: list[str] = []
        self._code_of: dict[str, int] = {}
        self._classify(np.arange(len(table)))

    def __len__(self) -> int:
        return len(self._item_id)

    def _classify(self, rows: np.ndarray) -> None:
        """The group of ``rows``: the label's class, or "unidentified" for a doubtful unreviewed call."""
        names = self._label_name[rows]
        if self.unidentified_below is not None:
            doubtful = (~self._reviewed[rows]) & (self._confidence[rows] < float(self.unidentified_below))
            names = np.where(doubtful, UNIDENTIFIED, names)
        self._group[rows] = names
        for name in set(names.tolist()) - self._code_of.keys():
            self._code_of[name] = len(self._names)
            self._names.append(name)
        self._code[rows] = [self._code_of[n] for n in names.tolist()]

    def update(self, item_ids: Sequence[int]) -> list[int]:
        """Re-read these cells (after a key press changed them); return the ones that are gallery cells."""
        ids = [int(i) for i in item_ids if int(i) in self._row]
        if not ids:
            return []
        items = self.project.items(ids=ids)
        schema = self.project.schema
        rows = []
        for item in items.itertuples(index=False):
            k = self._row[int(item.item_id)]
            label = list(item.label or [])
            self._label_id[k] = label[0] if label else None
            self._label_name[k] = schema.get(int(label[0])).name if label else UNLABELLED
            self._reviewed[k] = bool(item.reviewed)
            model = item.model_labels if item.model_labels is not None else (
                [item.model_class] if item.model_class is not None and not pd.isna(item.model_class) else None)
            self._corrected[k] = bool(item.reviewed) and (not model or sorted(label) != sorted(int(m) for m in model))
            rows.append(k)
        self._classify(np.asarray(rows, dtype=np.int64))
        return ids

    def cells(self) -> pd.DataFrame:
        """The cells in gallery order (columns :data:`GALLERY_COLUMNS`, as :func:`gallery_cells`)."""
        if not len(self._item_id):
            return pd.DataFrame(columns=GALLERY_COLUMNS)
        order = self._order()
        t = self._table

        def taken(name):  # the table's own column, reordered (its string dtype kept: no conversion of 10⁵ strings)
            return t[name].take(order).reset_index(drop=True)

        return pd.DataFrame({
            "item_id": self._item_id[order], "image_id": t["image_id"].to_numpy()[order],
            "field": t["field"].to_numpy()[order], "z": t["z"].to_numpy()[order],
            "geometry": taken("geometry"), "group": pd.Series(self._group[order], dtype=object),
            "label_id": pd.Series(self._label_id[order], dtype=object), "model_label": taken("model_label"),
            "confidence": self._confidence[order], "reviewed": self._reviewed[order],
            "corrected": self._corrected[order],
        })

    def differential(self, **kwargs) -> pd.DataFrame:
        """:func:`~cytoreview.review.differential.differential` of these cells as they are now (``by``,
        ``counted``, ``excluded``, ``per`` as there)."""
        if not len(self._item_id):
            return differential_of(self._table.assign(**{"class": []}), self.project.schema, **kwargs)
        # counted here, per (group, image): a few rows for the differential instead of one per cell
        n_images = len(self._image_names)
        counts = np.bincount(self._code * n_images + self._image_code, minlength=len(self._names) * n_images)
        nonzero = np.flatnonzero(counts)
        first = self._image_first[nonzero % n_images]
        cells = pd.DataFrame({"class": pd.Series([self._names[k] for k in nonzero // n_images], dtype=object),
                              "case_id": self._table["case_id"].to_numpy()[first],
                              "image_path": self._table["image_path"].to_numpy()[first],
                              "n_cells": counts[nonzero]})
        return differential_of(cells, self.project.schema, **kwargs)

    def _order(self) -> np.ndarray:
        """Row positions in gallery order: group rank, (disagreement), reviewed last, doubt, item id."""
        names, code = self._names, self._code
        class_order = {name_key(c.name): k for k, c in enumerate(self.project.schema.classes)}
        trailing = {name_key(g): len(class_order) + 1 + k for k, g in enumerate(TRAILING_GROUPS)}
        rank_of = np.array([trailing.get(name_key(n), class_order.get(name_key(n), len(class_order))) for n in names],
                           dtype=np.int64)
        if self.sort == "rare":
            sizes = np.bincount(code, minlength=len(names))
            rank_of = np.where(rank_of < len(class_order) + 1, sizes, 10**9 + rank_of)
        # one int64 key: group rank, (disagreement first), unreviewed first, then the fixed order inside a group
        # (lowest confidence first -- the same as highest uncertainty first, as uncertainty = 1 - confidence here)
        key = rank_of[code] * 2
        if self.sort == "disagreement":
            key = (key + ~self._corrected) * 2  # corrected cells (label differs from the call) first
        else:
            key = key * 2
        key = (key + self._reviewed) * max(len(self._item_id), 1) + self._within_rank
        return np.argsort(key, kind="stable")


def reclassify(project, item_ids: Sequence[int], class_id: int, reviewer: str, dwell_s: float | None = None) -> int:
    """Label every cell of ``item_ids`` with ``class_id`` in one transaction (one journal row each, the rows one
    undo group: :func:`undo_key_press`); return how many changed.

    Raises
    ------
    ProjectError
        An item is not a cell, or the class does not exist (nothing is changed).
    """
    return len(project.set_labels([int(i) for i in item_ids], [int(class_id)], reviewer, dwell_s))


def mark_not_classed(project, item_ids: Sequence[int], reviewer: str) -> int:
    """Label the cells :data:`NOT_CLASSED` (left out of every differential); return how many."""
    return reclassify(project, item_ids, not_classed_id(project, create=True), reviewer)


def accept_calls(project, item_ids: Sequence[int], reviewer: str) -> list[int]:
    """Accept the model's call of every cell of ``item_ids`` that nobody has reviewed and that has a call, in one
    transaction (one undo group).

    Returns the item ids accepted (reviewed cells keep their label: Enter never overwrites a correction).
    """
    if not len(item_ids):
        return []
    items = project.items(ids=[int(i) for i in item_ids])
    todo = [int(i) for i in items[(~items["reviewed"].astype(bool)) & items["model_class"].notna()]["item_id"]]
    project.accept_many(todo, reviewer)
    return todo


def undo_key_press(project, reviewer: str) -> list[int]:
    """Undo ``reviewer``'s last change, a whole key press when it was one (:meth:`Project.undo` takes a group back
    whole, whichever dock asks); return the item ids it changed back (empty when there was nothing to undo)."""
    jid = project.undo(reviewer)
    return [] if jid is None else project.group_items(jid)


def redo_key_press(project, reviewer: str) -> list[int]:
    """Redo ``reviewer``'s last undone change (a whole key press when it was one); return the item ids it changed
    (empty when there was nothing to redo: a new change since the undo ends the redo)."""
    jid = project.redo(reviewer)
    return [] if jid is None else project.group_items(jid)


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
