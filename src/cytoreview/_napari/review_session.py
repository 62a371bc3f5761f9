"""A reviewer's labelling session on one image: the queue, the current item, and every change in order.

Order of every change (the durability rule of the product): the :class:`~cytoreview.review.Project` call first
(committed to disk before it returns), then the overlay layer, then the view moves to the next queue item.

No Qt widgets here: :class:`ReviewSession` drives the napari viewer model and layers only, so it can be tested and
benchmarked without the dock.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path

from cytoreview._napari.layer_meta import LayerMeta, image_meta
from cytoreview._napari.overlays import overlays_by_role
from cytoreview._napari.review_layers import (
    CellLayerSync,
    ClassValueMap,
    CurrentItemMarker,
    TileLayerSync,
)
from cytoreview.errors import CytoreviewError
from cytoreview.review import UNSURE, Item, Project, edits
from cytoreview.review.tables import review_outcome
from cytoreview.workflows import project_folder_for

#: Item levels a session can review.
SESSION_LEVELS = ("tile", "cell", "field")
#: Context shown around a tile or cell when the view jumps to it (multiple of the item's size), and the minimum
#: width of the view then (µm).
CONTEXT_FACTOR = 3.0
MIN_VIEW_UM = 60.0
#: Half-size of the box drawn round a cell (µm).
CELL_BOX_UM = 6.0


class ReviewError(CytoreviewError):
    """The review session cannot do what was asked (no image layer, no project, ...)."""


class ReviewSession:
    """One reviewer labelling one image layer's items at one level.

    Parameters
    ----------
    viewer : napari.Viewer
    image_layer : napari.layers.Image
        A layer made by the cytoreview reader (``metadata["cytoreview"]`` with path, kind, mpp).
    project : Project
    reviewer : str
    level : {"tile", "cell", "field"}
    strategy : str
        Queue strategy (see :data:`cytoreview.review.STRATEGIES`).
    """

    def __init__(self, viewer, image_layer, project: Project, reviewer: str, level: str = "tile",
                 strategy: str = "uncertainty"):
        meta = _image_meta(image_layer)
        if level not in SESSION_LEVELS:
            raise ReviewError(f"review level {level!r} is not one of {', '.join(SESSION_LEVELS)}")
        self.viewer = viewer
        self.image_layer = image_layer
        self.project = project
        self.reviewer = reviewer
        self.level = level
        self.strategy = strategy
        self.kind = meta.kind
        self.mpp = float(meta.mpp)
        if meta.extra.get("levels"):
            self.plane_shape = tuple(int(v) for v in meta.extra["levels"][0][:2])  # (height, width) of level 0
        else:
            shape = (image_layer.data[0] if image_layer.multiscale else image_layer.data).shape
            self.plane_shape = (int(shape[-3]), int(shape[-2]))
        self.image_id = project.add_image(meta.image_path, kind=self.kind, mpp=self.mpp,
                                          case_id=(meta.extra.get("metadata") or {}).get("case_id"),
                                          plane_shape=self.plane_shape)
        self.blinded = False
        self.explicit_queue: list[int] | None = None  # e.g. an adjudication list
        self.current: Item | None = None
        self.shown_at = time.monotonic()
        self._back: list[int] = []
        self._undo_items: list[int] = []
        self._redo_items: list[int] = []
        self.listeners: list[Callable[[str, list[int]], None]] = []
        self.session_started = time.monotonic()
        self.n_actions = 0
        #: Seconds spent by the last keyed label in the project call, the layer update and the move to the next item.
        self.last_timing_s: dict[str, float] = {}
        #: Items this session changed and not undone, by outcome ("accepted" / "corrected" / "unsure"; the rule of
        #: ``review-status``, :func:`cytoreview.review.tables.review_outcome`).
        self.outcomes: dict[int, str] = {}
        self.overlays: dict = {}
        self.tiles: TileLayerSync | None = None
        self.cells: CellLayerSync | None = None
        self.new_cell_class_id: int | None = None
        self.counts: Counter = Counter()
        self._labels: dict[int, list | None] = {}
        self._reviewed: set[int] = set()
        level_items = self._load_level()
        self.attach_overlays(level_items)
        units = tuple(str(u) for u in image_layer.units) if getattr(image_layer, "units", None) else None
        self.marker = CurrentItemMarker(viewer, 3 if self.kind == "fields" else 2, units=units,
                                        image_layer=image_layer)

    # ================================================================== set-up
    @classmethod
    def open(cls, viewer, image_layer, reviewer: str, folder: str | Path | None = None, **kwargs) -> ReviewSession:
        """Open (creating if needed) the project for ``image_layer`` and start a session in it."""
        folder = Path(folder) if folder else project_folder_for(_image_meta(image_layer).image_path)
        project = Project.open(folder, create=True)
        return cls(viewer, image_layer, project, reviewer, **kwargs)

    def attach_overlays(self, level_items=None) -> None:
        """Import the overlays' prediction stores (once) and bind the tile / cell layers to the project.

        ``level_items`` (this session's level's items, already read) saves reading them again."""
        self.detach_overlays()
        self.overlays = overlays_by_role(self.viewer, self.image_layer)
        n_before = self.project.n_items(self.image_id)
        pack_classes = []
        for layer in self.overlays.values():
            store = LayerMeta.of(layer).store
            imported = {str(Path(s.path)) for s in self.project.prediction_stores() if s.image_id == self.image_id}
            if store and str(Path(store).expanduser().absolute()) not in imported and Path(store).exists():
                # the tiles a cancelled or running prediction finished can be reviewed already; importing the
                # complete store later upserts the same items. The project decides what the store yields (a
                # detector's store brings the chained classifier's cells, not its own "cell" class).
                self.project.import_predictions(self.image_id, store, allow_partial=True)
            if store and not pack_classes and Path(store).exists():
                pack_classes = _store_classes(store)
        self.classmap = ClassValueMap(self.project.schema, pack_classes)
        if self.project.n_items(self.image_id) != n_before:  # predictions were imported: re-read
            level_items = self._load_level()
        reuse = (lambda lvl: level_items if level_items is not None and lvl == self.level and not self.blinded
                 else None)
        if "tile_classes" in self.overlays:
            self.tiles = TileLayerSync(self.overlays["tile_classes"], self.project, self.image_id, self.classmap,
                                       reviewer=lambda: self.reviewer, on_change=self._layer_changed,
                                       items=reuse("tile"))
        if "cells" in self.overlays:
            self.cells = CellLayerSync(self.overlays["cells"], self.project, self.image_id, self.classmap,
                                       reviewer=lambda: self.reviewer, mpp=self.mpp,
                                       new_cell_class=self._new_cell_class, on_change=self._layer_changed,
                                       items=reuse("cell"), viewer=self.viewer)

    def detach_overlays(self) -> None:
        for sync in (self.tiles, self.cells):
            if sync is not None:
                sync.disconnect()
        self.tiles = self.cells = None

    def close(self) -> None:
        """Stop listening to layers, remove the session's own layers and close the project (all is committed)."""
        edits = self.cells.edits if self.cells is not None else None
        self.detach_overlays()
        for layer in (self.marker.layer, edits):
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.project.close()

    def _new_cell_class(self) -> int:
        if self.new_cell_class_id is not None:
            return self.new_cell_class_id
        cell = [c for c in self.project.schema.active_classes if c.level == "cell"]
        return (cell or self.project.schema.active_classes)[0].id

    # ================================================================== the level's items and counts
    def _load_level(self):
        """Read this level's items (one scan) for the counts and progress kept up to date afterwards."""
        df = self.project.items(image_id=self.image_id, level=self.level,
                                blind_for=self.reviewer if self.blinded else None)
        self._labels = dict(zip(df["item_id"].tolist(), df["label"].tolist()))
        self._reviewed = set(df.loc[df["reviewed"].astype(bool), "item_id"].tolist())
        self.counts = Counter(k for lab in self._labels.values() for k in (lab or ()))
        return df

    def set_level(self, level: str) -> None:
        """Review another level (tile, cell or field)."""
        if level not in SESSION_LEVELS:
            raise ReviewError(f"review level {level!r} is not one of {', '.join(SESSION_LEVELS)}")
        self.level = level
        self.explicit_queue = None
        self._load_level()

    @property
    def n_total(self) -> int:
        """Items of this image at the session's level."""
        return len(self._labels)

    @property
    def n_reviewed(self) -> int:
        """Of those, reviewed (by anybody; by this reviewer when blinded)."""
        return len(self._reviewed)

    def _track(self, item_id: int, label, reviewed: bool = True) -> None:
        """Keep counts/progress current after a change (no project scan)."""
        if item_id not in self._labels:
            if self.project.item(item_id).level != self.level:
                return
            self._labels[item_id] = None
        for k in self._labels[item_id] or ():
            self.counts[k] -= 1
        self._labels[item_id] = list(label) if label is not None else None
        for k in label or ():
            self.counts[k] += 1
        if reviewed:
            self._reviewed.add(item_id)
        else:
            self._reviewed.discard(item_id)

    # ================================================================== listeners
    def _emit(self, what: str, item_ids: list[int]) -> None:
        for fn in list(self.listeners):
            fn(what, item_ids)

    def _layer_changed(self, item_ids: list[int], source: str) -> None:
        sync = self.tiles if source == "paint" else self.cells
        for iid in item_ids:
            if sync is self.cells and sync is not None:
                self._track(iid, sync.labels.get(iid))
            elif sync is not None:
                value = sync.shown_value(iid)
                cid = self.classmap.class_of_value.get(value)
                self._track(iid, None if cid is None else [cid])
        self.n_actions += len(item_ids)
        for iid in item_ids:
            self.outcomes[int(iid)] = "corrected"  # painting / point edits change what the model said
        self._undo_items.extend(item_ids)
        self._redo_items.clear()
        self._emit(source, item_ids)

    # ================================================================== navigation
    def next(self) -> int | None:
        """Show the next pending item of the queue (or of the explicit list); None when none is left."""
        if self.explicit_queue is not None:
            while self.explicit_queue:
                iid = self.explicit_queue.pop(0)
                self.show(iid)
                return iid
            self.current = None
            self._emit("done", [])
            return None
        iid = self.project.next_item(self.reviewer, self.strategy, image_id=self.image_id, level=self.level,
                                     own_only=self.blinded)
        if iid is None:
            self.current = None
            self.marker.clear()
            self._emit("done", [])
            return None
        self.show(iid, remember_cursor=False)
        return iid

    def previous(self) -> int | None:
        """Go back to the item shown before the current one."""
        if not self._back:
            return None
        iid = self._back.pop()
        self.show(iid, push=False)
        return iid

    def resume(self) -> int | None:
        """Show the reviewer's cursor item if it is still pending for them, else the next item."""
        iid, strategy = self.project.cursor(self.reviewer)
        if strategy:
            self.strategy = strategy
        if iid is not None:
            item = self.project.item(iid)
            if item.level == self.level and item.image_id == self.image_id:
                self.show(iid, remember_cursor=False)
                return iid
        return self.next()

    def show(self, item_id: int, *, push: bool = True, remember_cursor: bool = True) -> Item:
        """Make ``item_id`` the current item: centre and zoom the view on it and draw the marker."""
        item = self.project.item(int(item_id), blind_for=self.reviewer if self.blinded else None)
        if push and self.current is not None and self.current.item_id != item.item_id:
            self._back.append(int(self.current.item_id))
        self.current = item
        if remember_cursor:
            self.project.set_cursor(self.reviewer, int(item_id), self.strategy)
        self._frame(item)
        self.shown_at = time.monotonic()
        self._emit("show", [int(item_id)])
        return item

    def box_um(self, item: Item) -> tuple[float, float, float, float]:
        """``(y0, x0, y1, x1)`` in µm of an item (pixel k is centred at k * mpp)."""
        m = self.mpp
        g = item.geometry
        if g["type"] == "point":
            y, x = float(g["y"]) * m, float(g["x"]) * m
            return (y - CELL_BOX_UM, x - CELL_BOX_UM, y + CELL_BOX_UM, x + CELL_BOX_UM)
        if g["type"] == "field" or item.x_min is None:
            h, w = self.plane_shape
            return (-0.5 * m, -0.5 * m, (h - 0.5) * m, (w - 0.5) * m)
        return ((item.y_min - 0.5) * m, (item.x_min - 0.5) * m, (item.y_max - 0.5) * m,
                (item.x_max - 0.5) * m)

    def _frame(self, item: Item) -> None:
        field = int(item.field) if self.kind == "fields" else None
        y0, x0, y1, x1 = box = self.box_um(item)
        if field is not None and round(self.viewer.dims.point[0]) != field:
            self.viewer.dims.set_point(0, field)  # re-slices every layer: only when the field changes
        if item.level == "field":
            self.marker.clear()  # the view itself frames a field
        else:
            self.marker.show(field, box)
        camera = getattr(getattr(self.viewer, "scene", None), "camera", None) or self.viewer.camera
        h_px, w_px = (self.viewer.canvas.size if hasattr(self.viewer, "canvas") else (600, 800))
        factor = 1.08 if item.level == "field" else CONTEXT_FACTOR
        bh = max((y1 - y0) * factor, MIN_VIEW_UM if item.level != "field" else 0.0)
        bw = max((x1 - x0) * factor, MIN_VIEW_UM if item.level != "field" else 0.0)
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        center = list(camera.center)
        center[-2:] = [cy, cx]
        camera.center = tuple(center)
        camera.zoom = float(min(h_px / bh, w_px / bw))
        # the current cell is not selected on the Points layer (napari's selection costs ~50 ms with 100k points):
        # the marker frames it, and the keys act on it whenever no points are selected

    # ================================================================== labelling
    def dwell_s(self) -> float:
        """Seconds since the current item was shown."""
        return max(0.0, time.monotonic() - self.shown_at)

    def selected_cell_items(self) -> list[int]:
        """Items of the points selected in the cells layer when that layer is the active one."""
        if self.cells is None or self.viewer.layers.selection.active is not self.cells.layer:
            return []
        return [i for i in (self.cells.item_of_row(r) for r in sorted(self.cells.layer.selected_data))
                if i is not None]

    def set_class(self, class_id: int, advance: bool = True) -> list[int]:
        """Give the selected cells, or the current item, class ``class_id`` (``UNSURE`` for "cannot tell").

        A field item is multi-label: the class is toggled in its label set and the view stays on the field.
        Returns the item ids changed.
        """
        cells = self.selected_cell_items()
        current = self.current
        if cells and not (current is not None and current.level == "cell" and cells == [current.item_id]):
            dwell = self.dwell_s()
            for iid in cells:
                self.project.set_label(iid, [class_id], self.reviewer, dwell_s=dwell)
                self._after_change(iid, [class_id], corrected=True)
            self._emit("label", cells)
            return cells
        if current is None:
            return []
        iid = int(current.item_id)
        if current.level == "field" and class_id != UNSURE:
            new = edits.toggle_field_class(self.project, iid, class_id, self.reviewer, dwell_s=self.dwell_s(),
                                           blinded=self.blinded)
            self.current = replace(current, label=new, reviewed=True)
            self._after_change(iid, new, corrected=True)
            self._emit("label", [iid])
            return [iid]
        new = [int(class_id)]
        t0 = time.perf_counter()
        self.project.set_label(iid, new, self.reviewer, dwell_s=self.dwell_s())
        t1 = time.perf_counter()
        model = current.model_labels
        self._after_change(iid, new, corrected=model is None or sorted(model) != new)
        self._emit("label", [iid])
        t2 = time.perf_counter()
        if advance:
            self.next()
        self.last_timing_s = {"journal": t1 - t0, "layer": t2 - t1, "advance": time.perf_counter() - t2}
        return [iid]

    def set_field_labels(self, class_ids: list[int]) -> None:
        """Replace the current field item's label set (the gallery's checkboxes)."""
        if self.current is None or self.current.level != "field":
            raise ReviewError("the current item is not a field")
        iid = int(self.current.item_id)
        new = sorted({int(c) for c in class_ids})
        self.project.set_label(iid, new, self.reviewer, dwell_s=self.dwell_s())
        self.current = replace(self.current, label=new, reviewed=True)
        self._after_change(iid, new, corrected=True)
        self._emit("label", [iid])

    def accept(self, advance: bool = True) -> int | None:
        """Confirm the model's class of the current item (Enter)."""
        if self.current is None:
            return None
        iid = int(self.current.item_id)
        self.project.accept(iid, self.reviewer, dwell_s=self.dwell_s())
        model = self.current.model_labels
        if model is None:  # blinded view hides it; the project knows it
            model = self.project.item(iid).label
        self._after_change(iid, list(model), corrected=False)
        self._emit("label", [iid])
        if advance:
            self.next()
        return iid

    def _after_change(self, item_id: int, label: list[int], corrected: bool) -> None:
        """Layer update after the project committed ``label`` for ``item_id``."""
        self._show_on_layers(item_id, label)
        self._track(item_id, label)
        self.n_actions += 1
        self.outcomes[int(item_id)] = "unsure" if UNSURE in (label or ()) else ("corrected" if corrected
                                                                                 else "accepted")
        self._undo_items.append(item_id)
        self._redo_items.clear()

    def _show_on_layers(self, item_id: int, label) -> None:
        if self.tiles is not None and self.tiles.show_label(item_id, label):
            return
        if self.cells is not None:
            self.cells.show_label(item_id, label)

    def undo(self) -> int | None:
        """Undo the reviewer's last change (project first, then the layer); returns the item id or None."""
        return self._undo_redo("undo")

    def redo(self) -> int | None:
        """Redo the reviewer's last undone change; returns the item id or None."""
        return self._undo_redo("redo")

    def _undo_redo(self, action: str) -> int | None:
        jid = getattr(self.project, action)(self.reviewer)
        if jid is None:
            return None
        # one undo takes back one edit of the project: every item of its group (a reshape, a brush stroke, a
        # page of cells), in the order the journal undid them (newest first; a redo oldest first)
        iids = self.project.group_items(jid)
        for iid in iids:
            self._undone_or_redone(action, iid)
        self._emit(action, iids)
        return iids[0]

    def _undone_or_redone(self, action: str, iid: int) -> None:
        if action == "undo":
            if self._undo_items and self._undo_items[-1] == iid:
                self._undo_items.pop()
            self._redo_items.append(iid)
        else:
            if self._redo_items and self._redo_items[-1] == iid:
                self._redo_items.pop()
            self._undo_items.append(iid)
        item = self.project.item(iid)
        label = item.label
        self._show_on_layers(iid, label)
        own = self.project.item(iid, blind_for=self.reviewer) if self.blinded else item
        self._track(iid, own.label, reviewed=bool(own.reviewed))
        if iid in self._undo_items and own.reviewed:  # still changed by this session: count what it is now
            self.outcomes[iid] = review_outcome(own.label, item.model_labels, item.model_class)
        else:  # the session's change on it is undone
            self.outcomes.pop(iid, None)
        if self.current is not None and int(self.current.item_id) == iid:
            self.current = replace(self.current, label=label)

    # ================================================================== blinded second read
    def set_blinded(self, blinded: bool) -> None:
        """Blinded second read: hide the model's overlays (and so the first readers' labels); the queue then
        holds the items this reviewer has not labelled, and item details hide the model's call."""
        self.blinded = bool(blinded)
        for layer in self.overlays.values():
            layer.visible = not self.blinded if LayerMeta.of(layer).role in ("tile_classes", "cells") \
                else (False if self.blinded else layer.visible)
        self._load_level()
        if self.current is not None:
            self.current = self.project.item(int(self.current.item_id),
                                             blind_for=self.reviewer if self.blinded else None)
        self._emit("blinded", [])

    # ================================================================== summaries
    @property
    def n_changed(self) -> int:
        """Items this session changed (undone changes left out) = accepted + corrected + unsure."""
        return len(self.outcomes)

    @property
    def n_accepted(self) -> int:
        return sum(v == "accepted" for v in self.outcomes.values())

    @property
    def n_corrected(self) -> int:
        return sum(v == "corrected" for v in self.outcomes.values())

    @property
    def n_unsure(self) -> int:
        return sum(v == "unsure" for v in self.outcomes.values())

    def items_per_min(self) -> float:
        minutes = (time.monotonic() - self.session_started) / 60.0
        return self.n_actions / minutes if minutes > 0 else 0.0


def _image_meta(image_layer) -> LayerMeta:
    """The image metadata of a layer made by cytoreview's reader; ReviewError for any other layer."""
    try:
        return image_meta(image_layer)
    except ValueError:
        raise ReviewError(f"layer {image_layer.name!r} was not opened by cytoreview (no metadata['cytoreview'])") \
            from None


def _store_classes(store: str | Path) -> list[dict]:
    """The classes ``store`` brings into the project (none for a detector whose cells a classifier classified)."""
    from cytoreview.inference.store import PredictionStore, StoreError
    from cytoreview.review import store_yield

    try:
        opened = PredictionStore(store)
        return opened.classes if store_yield(opened).classes else []
    except StoreError:  # an unreadable store shows up when importing; classes are cosmetic here
        return []
