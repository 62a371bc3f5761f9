"""Keep the prediction overlay layers and the review project in step.

The overlay layers (made by :func:`cytoreview._napari.overlays.add_prediction_layers`, see the GUI contract) show
the model's call per tile / cell; once a project is attached they show the project's *current* label instead:

* :class:`TileLayerSync` -- the ``tile_classes`` Labels layer. Value = class id of the pack + 1 (0 = nothing).
  A reviewer's label writes the layer after the project call. Painting on the layer is found by diffing the layer
  data against the snapshot of what the project says (on the layer's ``paint`` and ``data`` events, so no private
  event payload is read) and handed to :func:`cytoreview.review.edits.paint_tiles`.
* :class:`CellLayerSync` -- the ``cells`` Points layer (coordinates in µm, features ``class``, ``class_id``,
  ``score``). Each row is matched to a project cell item by its position; adding, deleting or moving points is
  found by diffing ``layer.data`` against the last known coordinates and handed to
  :func:`~cytoreview.review.edits.add_cell`, :func:`~cytoreview.review.edits.delete_cells` and
  :func:`~cytoreview.review.edits.move_cell`.

What an edit *means* (a deleted cell becomes "not a cell", a moved cell is a delete plus an add, erasing a tile
reverts it) is decided in :mod:`cytoreview.review.edits`, not here: these classes only compute diffs.

Only this module and the other ``_napari`` modules import napari.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from cytoreview._napari.layer_meta import LayerMeta
from cytoreview._napari.overlays import tile_pixels
from cytoreview.errors import CytoreviewError
from cytoreview.review import UNSURE, edits, name_key

log = logging.getLogger(__name__)

#: A burst of cell corrections is drawn into the big cells layer this long after the last one (ms).
EDITS_MERGE_MS = 1000
#: Slots of the edits layer (corrections drawn before the big layer is); a fuller burst redraws the big layer.
EDITS_POOL = 64
def hex_to_rgba(color: str) -> np.ndarray:
    """``"#rrggbb[aa]"`` -> float RGBA in [0, 1]."""
    c = color.lstrip("#")
    vals = [int(c[k:k + 2], 16) / 255.0 for k in range(0, len(c), 2)]
    if len(vals) == 3:
        vals.append(1.0)
    return np.array(vals, dtype=np.float32)


class ClassValueMap:
    """Project class ids <-> the integer values of the tile Labels layer, and class colours.

    A project class whose name matches a pack class keeps the pack's value (``pack id + 1``, the contract);
    project classes the pack does not know (``UNSURE``, classes a reviewer added) get values after the pack's.

    Parameters
    ----------
    schema : LabelSchema
        The project's schema.
    pack_classes : sequence of dict
        ``[{id, name, color, ...}]`` of the pack that made the overlays (empty when unknown).
    """

    def __init__(self, schema, pack_classes: Sequence[dict] = ()):
        self.schema = schema
        by_name = {name_key(c["name"]): int(c["id"]) for c in pack_classes}
        self.pack_id: dict[int, int] = {}
        self.value: dict[int, int] = {}
        top = max(by_name.values(), default=-1) + 1
        for cls in list(schema.classes) + [schema.get(UNSURE)]:
            pid = by_name.get(name_key(cls.name))
            if pid is not None:
                self.pack_id[cls.id] = pid
                self.value[cls.id] = pid + 1
            else:
                top += 1
                self.value[cls.id] = top
        self.class_of_value = {v: k for k, v in self.value.items()}

    def refresh(self) -> None:
        """Give values to classes added to the schema since (existing values never change)."""
        top = max(self.value.values(), default=0)
        for cls in list(self.schema.classes):
            if cls.id not in self.value:
                top += 1
                self.value[cls.id] = top
                self.class_of_value[top] = cls.id

    def value_of(self, label: Sequence[int] | None) -> int:
        """Layer value of a (single-class) label; 0 for no label."""
        if not label:
            return 0
        cid = int(label[0])
        if cid not in self.value:
            self.refresh()
        return self.value.get(cid, 0)

    def colors(self) -> dict[int, np.ndarray]:
        """Layer value -> RGBA for every project class (and ``UNSURE``)."""
        out = {}
        for cid, v in self.value.items():
            try:
                out[v] = hex_to_rgba(self.schema.get(cid).color)
            except CytoreviewError:  # a class missing from the schema keeps its old colour
                log.debug("class %s not in the schema; its layer colour is unchanged", cid)
        return out




class TileLayerSync:
    """Project tile items <-> the ``tile_classes`` Labels layer.

    Parameters
    ----------
    layer : napari.layers.Labels
    project : Project
    image_id : int
    classmap : ClassValueMap
    on_change : callable, optional
        Called with ``(item_ids, source)`` after painting changed the project (``source="paint"``).
    reviewer : callable
        Returns the current reviewer name (painting needs one).
    """

    def __init__(self, layer, project, image_id: int, classmap: ClassValueMap, reviewer: Callable[[], str],
                 on_change: Callable | None = None, items=None):
        self.layer = layer
        self.project = project
        self.image_id = image_id
        self.classmap = classmap
        self.reviewer = reviewer
        self.on_change = on_change
        meta = LayerMeta.of(layer)
        self.tile_px = int(meta.tile_px_level0)
        data = np.asarray(layer.data)
        self.is_fields = data.ndim == 3
        # each tile is sub x sub layer pixels, the edge tiles cut where the image ends (overlays.clip_grid)
        self.sub = int(meta.extra.get("subdivision") or 1)
        grid = meta.extra.get("grid_shape")
        if grid is not None:
            self.grid_shape = (int(grid[0]) if self.is_fields else 1, int(grid[1]), int(grid[2]))
        else:
            rows, cols = (-(-int(n) // self.sub) for n in data.shape[-2:])
            self.grid_shape = (int(data.shape[0]) if self.is_fields else 1, rows, cols)
        self.item_grid = np.full(self.grid_shape, -1, dtype=np.int64)
        self.pos: dict[int, tuple[int, int, int]] = {}
        if items is None:
            items = project.items(image_id=image_id, level="tile")
        fields = items["field"].to_numpy(dtype=np.int64)
        for iid, f, g in zip(items["item_id"].tolist(), fields.tolist(), items["geometry"].tolist()):
            if g.get("size_px") != self.tile_px:
                continue
            r, c = int(g["row"]), int(g["col"])
            if f < self.grid_shape[0] and r < self.grid_shape[1] and c < self.grid_shape[2]:
                self.item_grid[f, r, c] = iid
                self.pos[iid] = (f, r, c)
        self._ensure_colors()
        # show the project's current labels (reviewed ones included: this is what restores a reopened session)
        values = np.array(data, copy=True)
        for iid, lab in zip(items["item_id"].tolist(), items["label"].tolist()):
            p = self.pos.get(iid)
            if p is not None:
                values[self._pixels(p)] = classmap.value_of(lab)
        if not np.array_equal(values, data):
            layer.data = values
        self.snapshot = np.array(np.asarray(layer.data), copy=True)
        self._muted = False
        self._pending = False
        layer.events.paint.connect(self._on_paint)
        layer.events.data.connect(self._on_edit)

    def disconnect(self) -> None:
        """Stop listening to the layer."""
        for ev, fn in ((self.layer.events.paint, self._on_paint), (self.layer.events.data, self._on_edit)):
            try:
                ev.disconnect(fn)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._detached = True

    def _ensure_colors(self) -> None:
        """Add colours for project-only values (UNSURE, classes the pack lacks) to the layer's colormap."""
        from napari.utils.colormaps import DirectLabelColormap

        cmap = self.layer.colormap
        have = dict(getattr(cmap, "color_dict", {}) or {})
        missing = {v: c for v, c in self.classmap.colors().items() if v not in have}
        if not missing and have:
            return
        have.update(missing)
        have.setdefault(0, np.zeros(4, dtype=np.float32))
        have.setdefault(None, np.zeros(4, dtype=np.float32))
        self.layer.colormap = DirectLabelColormap(color_dict=have)

    def _pixels(self, key) -> tuple:
        """Index arrays of the layer pixels of tile ``key = (field, row, col)`` (empty when cut off at the edge)."""
        return tile_pixels(*key, self.sub, self.snapshot.shape if hasattr(self, "snapshot") else self.layer.data.shape,
                           self.is_fields)

    def _write(self, key, value: int) -> None:
        """Write ``value`` into every layer pixel of a tile, without it counting as painting."""
        idx = self._pixels(key)
        if idx[0].size == 0:
            return
        self._muted = True
        try:
            self.layer.data_setitem(idx, int(value))
        finally:
            self._muted = False

    def shown_value(self, item_id: int) -> int:
        """The layer value the tile of ``item_id`` shows (what the project says); 0 when it is not on the layer."""
        p = self.pos.get(int(item_id))
        idx = None if p is None else self._pixels(p)
        return 0 if idx is None or idx[0].size == 0 else int(self.snapshot[tuple(i[0] for i in idx)])

    # ------------------------------------------------------------------ project -> layer
    def item_at(self, field: int, row: int, col: int) -> int | None:
        """Item id of tile (field, row, col), None when the project has none."""
        iid = int(self.item_grid[field, row, col])
        return None if iid < 0 else iid

    def show_label(self, item_id: int, label: Sequence[int] | None) -> bool:
        """Write an item's label into the layer (after the project has it). False if the item is not on this layer."""
        p = self.pos.get(int(item_id))
        if p is None:
            return False
        value = self.classmap.value_of(label)
        idx = self._pixels(p)
        if idx[0].size == 0 or (self.snapshot[idx] == value).all():
            return True
        if value not in self.layer.colormap.color_dict:
            self._ensure_colors()
        self.snapshot[idx] = value
        self._write(p, value)
        return True

    # ------------------------------------------------------------------ layer -> project (painting)
    def _on_paint(self, event=None) -> None:
        """napari emits ``paint`` when it records the edit, which for a single stroke is *before* it writes the
        pixels: diff once control is back in the event loop (a drag's strokes arrive together)."""
        if self._muted or self._pending:
            return
        from qtpy.QtCore import QTimer

        self._pending = True
        QTimer.singleShot(0, self._on_edit)

    def flush(self) -> None:
        """Journal any painting not yet diffed (call before reading the project after a paint)."""
        self._on_edit()

    def _on_edit(self, event=None) -> None:
        self._pending = False
        if self._muted or getattr(self, "_detached", False):
            return
        data = np.asarray(self.layer.data)
        if data.shape != self.snapshot.shape:
            log.warning("tile layer %s changed shape; painting is not journalled", self.layer.name)
            self.snapshot = np.array(data, copy=True)
            return
        changed = np.argwhere(data != self.snapshot)
        if changed.size == 0:
            return
        paints, seen = [], set()
        for idx in map(tuple, changed):  # a tile painted anywhere is painted whole, with the first value found
            pix = idx if self.is_fields else (0, *idx)
            f, r, c = int(pix[0]), int(pix[1]) // self.sub, int(pix[2]) // self.sub
            if (f, r, c) in seen:
                continue
            seen.add((f, r, c))
            value = int(data[idx])
            cid = self.classmap.class_of_value.get(value) if value != 0 else None
            paints.append(edits.TilePaint(field=f, row=r, col=c, class_id=cid, item_id=self.item_at(f, r, c)))
        result = edits.paint_tiles(self.project, self.image_id, self.tile_px, paints, self.reviewer())
        touched = []
        painted = {(p.field, p.row, p.col): p for p, _ in result.labelled}
        for paint, iid in result.labelled:  # committed before the snapshot says so
            key = (paint.field, paint.row, paint.col)
            self.item_grid[key] = iid
            self.pos[iid] = key
            value = self.classmap.value_of([paint.class_id])
            self.snapshot[self._pixels(key)] = value
            if self.sub > 1:
                self._write(key, value)
            touched.append(iid)
        reverted = [p for p in result.reverted if (p.field, p.row, p.col) not in painted]
        for paint in reverted:  # the tile keeps its class: show it again
            key = (paint.field, paint.row, paint.col)
            idx = self._pixels(key)
            self._muted = True
            try:
                self.layer.data_setitem(idx, self.snapshot[idx].tolist())
            finally:
                self._muted = False
        if reverted:
            _notify(f"{len(reverted)} tile(s) not changed: a tile keeps one class (press 0 for 'unsure')")
        if touched and self.on_change is not None:
            self.on_change(touched, "paint")


class CellLayerSync:
    """Project cell items <-> the ``cells`` Points layer (one row per cell, coordinates in µm).

    Parameters
    ----------
    layer : napari.layers.Points
    project, image_id, classmap, reviewer, on_change
        As for :class:`TileLayerSync`.
    mpp : float
        µm per level-0 pixel of the image.
    new_cell_class : callable
        Returns the project class id a newly added point gets.
    """

    def __init__(self, layer, project, image_id: int, classmap: ClassValueMap, reviewer: Callable[[], str],
                 mpp: float, new_cell_class: Callable[[], int], on_change: Callable | None = None, items=None,
                 viewer=None):
        self.layer = layer
        self.project = project
        self.image_id = image_id
        self.classmap = classmap
        self.reviewer = reviewer
        self.mpp = float(mpp)
        self.new_cell_class = new_cell_class
        self.on_change = on_change
        self.viewer = viewer
        self._muted = False
        self._pending = {}
        self.edits = None
        self._timer = None
        self.is_fields = layer.data.shape[1] == 3
        if items is None:
            items = project.items(image_id=image_id, level="cell")
        pts = [(iid, f, g) for iid, f, g in zip(items["item_id"].tolist(), items["field"].tolist(),
                                                 items["geometry"].tolist()) if g.get("type") == "point"]
        self.labels: dict[int, list | None] = dict(zip(items["item_id"].tolist(), items["label"].tolist()))
        self.not_a_cell = edits.not_a_cell_id(project, create=False)
        coords = np.asarray(layer.data, dtype=np.float64)
        self.rows_item = self._match(coords, pts)
        # points the project says are not cells go away; reviewer-added cells appear (a reopened session)
        on_layer = set(self.rows_item[self.rows_item >= 0].tolist())
        drop = np.array([iid >= 0 and self._is_deleted(self.labels.get(int(iid))) for iid in self.rows_item],
                        dtype=bool)
        extra = [(iid, f, g) for iid, f, g in pts if iid not in on_layer and not self._is_deleted(self.labels[iid])]
        self._muted = True
        try:
            if drop.any():
                layer.selected_data = set()
                layer.data = coords[~drop]
                layer.features = layer.features.iloc[np.nonzero(~drop)[0]].reset_index(drop=True)
                self.rows_item = self.rows_item[~drop]
            if extra:
                self._append_rows([iid for iid, _, _ in extra],
                                  [self._coord(f, g) for _, f, g in extra])
            self.row_of = {int(iid): k for k, iid in enumerate(self.rows_item.tolist()) if iid >= 0}
            rows, vals = [], []
            for iid, lab in self.labels.items():
                k = self.row_of.get(iid)
                if k is not None and lab:
                    rows.append(k)
                    vals.append(int(lab[0]))
            self._write_classes(np.asarray(rows, dtype=np.int64), vals, refresh=False, only_changed=True)
            layer.refresh()
        finally:
            self._muted = False
        self.coords = np.array(layer.data, dtype=np.float64, copy=True)
        feats = layer.features
        if "class" in feats.columns and feats["class"].dtype != object:
            # pandas' Arrow-backed strings copy the whole column on every assignment (~5 ms at 100k rows);
            # plain Python objects take one cell in O(1)
            feats["class"] = feats["class"].astype(object)
        self._pending: dict[int, int] = {}  # cells-layer row -> edits pool slot
        self.edits = None
        self._timer = None
        layer.events.data.connect(self._on_data)

    def disconnect(self) -> None:
        """Stop listening to the layer (pending colours are drawn first)."""
        self.flush_colors()
        try:
            self.layer.events.data.disconnect(self._on_data)
        except (TypeError, ValueError, RuntimeError):
            pass

    # ------------------------------------------------------------------ helpers
    def _is_deleted(self, label) -> bool:
        return edits.is_deleted_cell(label, self.not_a_cell)

    def _coord(self, field: int, g: dict) -> list[float]:
        yx = [float(g["y"]) * self.mpp, float(g["x"]) * self.mpp]
        return [float(field), *yx] if self.is_fields else yx

    def _match(self, coords: np.ndarray, pts) -> np.ndarray:
        """Item id of each layer row (nearest project point within 0.05 px of the same field), -1 if none."""
        out = np.full(len(coords), -1, dtype=np.int64)
        if not len(coords) or not pts:
            return out
        from scipy.spatial import cKDTree

        big = 1e7  # separates fields in the tree
        ref = np.array([[f * big, float(g["y"]), float(g["x"])] for _, f, g in pts])
        f = coords[:, 0] if self.is_fields else np.zeros(len(coords))
        q = np.c_[f * big, coords[:, -2] / self.mpp, coords[:, -1] / self.mpp]
        dist, idx = cKDTree(ref).query(q, distance_upper_bound=0.05)
        ok = np.isfinite(dist)
        ids = np.array([p[0] for p in pts], dtype=np.int64)
        out[ok] = ids[idx[ok]]
        return out

    def _append_rows(self, item_ids: list[int], coords: list[list[float]]) -> None:
        """Append points (with class features) for items the layer lacks."""
        import pandas as pd

        if self._pending:
            self.flush_colors()
        layer = self.layer
        n0 = len(layer.data)
        feats = layer.features
        layer.data = np.vstack([np.asarray(layer.data, dtype=np.float64).reshape(-1, len(coords[0])),
                                np.asarray(coords, dtype=np.float64)])
        extra = {col: [feats[col].iloc[0] if len(feats) else None] * len(item_ids) for col in feats.columns}
        if "score" in extra:
            extra["score"] = [float("nan")] * len(item_ids)
        layer.features = pd.concat([feats.iloc[:n0], pd.DataFrame(extra)], ignore_index=True) if len(
            feats.columns) else feats
        self.rows_item = np.concatenate([self.rows_item[:n0], np.asarray(item_ids, dtype=np.int64)])

    def _write_classes(self, rows: np.ndarray, class_ids: Sequence[int], refresh: bool = True,
                       only_changed: bool = False) -> None:
        """Set ``class``/``class_id`` features and face colours of ``rows``.

        With ``only_changed``, rows whose ``class`` feature already names their class are left alone (the layer
        as built from the store already shows every unreviewed item right).
        """
        if len(rows) == 0:
            return
        layer = self.layer
        schema = self.project.schema
        info = {}
        for c in {int(c) for c in class_ids}:  # one schema lookup per class, not per row
            cls = schema.get(c)
            info[c] = (cls.name, self.classmap.pack_id.get(c, c), hex_to_rgba(cls.color))
        rows = np.asarray(rows, dtype=np.int64)
        names = np.array([info[int(c)][0] for c in class_ids], dtype=object)
        feats = layer.features
        if only_changed and "class" in feats.columns:
            differ = feats["class"].to_numpy()[rows] != names
            rows, names = rows[differ], names[differ]
            class_ids = [c for c, d in zip(class_ids, differ) if d]
            if len(rows) == 0:
                return
        if "class" in feats.columns:
            feats.iloc[rows, feats.columns.get_loc("class")] = names
        if "class_id" in feats.columns:
            feats.iloc[rows, feats.columns.get_loc("class_id")] = [info[int(c)][1] for c in class_ids]
        rgba = np.array([info[int(c)][2] for c in class_ids], dtype=np.float32)
        if layer.face_color_mode == "direct":
            colors = layer.face_color  # napari hands out its own (N, 4) array: write the rows in place ...
            colors[rows] = rgba
            if not np.allclose(layer.face_color[rows], rgba, atol=1e-5):  # ... unless this napari returns a copy
                layer.face_color = colors
            elif refresh:
                self._show_edits(rows, rgba)  # the big layer is redrawn later, once, for a burst of edits
        else:
            layer.refresh_colors(update_color_mapping=False)

    # ------------------------------------------------------------------ fast feedback for corrections
    def _show_edits(self, rows: np.ndarray, rgba: np.ndarray) -> None:
        """Draw just-corrected points at once in a small "edits" Points layer on top of the cells layer.

        Re-uploading the cells layer costs ~30 ms per change with ~12k points on screen (napari rebuilds every
        visible marker), too slow for a key press. Its colours are already right in memory; it is redrawn once
        :data:`EDITS_MERGE_MS` after the last correction, and the edits layer is emptied then.
        """
        from qtpy.QtCore import QTimer

        if self.viewer is None:  # no viewer to draw the edits in: redraw the big layer now
            self.layer.events.face_color()
            return
        layer = self.layer
        if len(self._pending) + len(rows) > EDITS_POOL:  # pool full: draw the big layer now, start over
            self.flush_colors()
        coords = np.asarray(layer.data)[rows]
        sizes = np.asarray(layer.size)[rows]
        if self.edits is None or self.edits not in self.viewer.layers:
            pool = np.repeat(np.asarray(layer.data)[rows[:1]], EDITS_POOL, axis=0)
            self.edits = _add_points_like(self.viewer, layer, pool, np.zeros((EDITS_POOL, 4), np.float32),
                                          np.zeros(EDITS_POOL), f"{layer.name} (edits)")
            _park(self.edits)
        edits = self.edits
        # a fixed pool of points, written in place: no data re-validation, no viewer-wide extent update
        data, size, face = edits.data, edits.size, edits.face_color
        for coord, color, sz, r in zip(coords, rgba, sizes, rows.tolist()):
            slot = self._pending.setdefault(int(r), len(self._pending))
            data[slot] = coord
            size[slot] = sz
            face[slot] = color
        edits.refresh()
        if self._timer is None:
            self._timer = QTimer()
            self._timer.setSingleShot(True)
            self._timer.setInterval(EDITS_MERGE_MS)
            self._timer.timeout.connect(self.flush_colors)
        self._timer.start()

    def flush_colors(self) -> None:
        """Redraw the cells layer with every pending colour and empty the edits layer."""
        if self._timer is not None:
            self._timer.stop()
        if not self._pending:
            return
        self._pending.clear()
        self.layer.events.face_color()
        if self.edits is not None:
            _park(self.edits)
            self.edits.refresh()

    # ------------------------------------------------------------------ project -> layer
    def show_label(self, item_id: int, label: Sequence[int] | None) -> bool:
        """Show an item's (new) label on the layer. False if the item has no point here."""
        if int(item_id) not in self.labels:  # not a cell item (or one of another image)
            item = self.project.item(int(item_id))
            if item.level != "cell" or item.geometry.get("type") != "point" or int(item.image_id) != self.image_id:
                return False
        self.labels[int(item_id)] = list(label) if label else label
        k = self.row_of.get(int(item_id))
        deleted = self._is_deleted(label)
        if k is None:
            if deleted or not label:
                return False
            item = self.project.item(int(item_id))
            self._muted = True
            try:
                self._append_rows([int(item_id)], [self._coord(int(item.field), item.geometry)])
            finally:
                self._muted = False
            self.coords = np.array(self.layer.data, dtype=np.float64, copy=True)
            self.row_of[int(item_id)] = len(self.rows_item) - 1
            k = self.row_of[int(item_id)]
        elif deleted:
            self._remove_rows(np.array([k]))
            return True
        if label:
            self._muted = True
            try:
                self._write_classes(np.array([k]), [int(label[0])])
            finally:
                self._muted = False
        return True

    def _remove_rows(self, rows: np.ndarray) -> None:
        self.flush_colors()
        keep = np.ones(len(self.rows_item), dtype=bool)
        keep[rows] = False
        self._muted = True
        try:
            self.layer.selected_data = {int(r) for r in rows}
            self.layer.remove_selected()
        finally:
            self._muted = False
        self.rows_item = self.rows_item[keep]
        self.row_of = {int(iid): k for k, iid in enumerate(self.rows_item.tolist()) if iid >= 0}
        self.coords = np.array(self.layer.data, dtype=np.float64, copy=True)

    def rows_of_items(self, item_ids) -> list[int]:
        """Layer rows of ``item_ids`` (those on the layer)."""
        return [self.row_of[i] for i in item_ids if i in self.row_of]

    def item_of_row(self, row: int) -> int | None:
        iid = int(self.rows_item[row])
        return None if iid < 0 else iid

    # ------------------------------------------------------------------ layer -> project (add / delete / move)
    def _on_data(self, event=None) -> None:
        if self._muted:
            return
        action = str(getattr(event, "action", "") or "").lower()
        if action.endswith("ing") or action in ("adding", "removing", "changing"):
            return  # wait for the finished change
        if self._pending:  # row indices are about to change
            self.flush_colors()
        new = np.asarray(self.layer.data, dtype=np.float64)
        old = self.coords
        if new.shape == old.shape and np.array_equal(new, old):
            return
        ndim = new.shape[1] if new.ndim == 2 else old.shape[1]
        new = new.reshape(-1, ndim)
        added_rows: list[int] = []
        kept_old = np.zeros(len(old), dtype=bool)
        new_items = np.full(len(new), -1, dtype=np.int64)
        if len(new) >= len(old) and np.array_equal(new[: len(old)], old):
            kept_old[:] = True
            new_items[: len(old)] = self.rows_item
            added_rows = list(range(len(old), len(new)))
        else:  # general case: match rows by exact coordinates (napari keeps the order of the rest)
            index: dict[bytes, list[int]] = {}
            for k, row in enumerate(old):
                index.setdefault(row.tobytes(), []).append(k)
            for k, row in enumerate(new):
                hits = index.get(row.tobytes())
                if hits:
                    j = hits.pop(0)
                    kept_old[j] = True
                    new_items[k] = self.rows_item[j]
                else:
                    added_rows.append(k)
        reviewer = self.reviewer()
        touched = []
        deleted_items = [int(i) for i in self.rows_item[~kept_old] if i >= 0]
        # the diff: as many points gone as came is a move (dragging keeps napari's row count)
        moved_from = dict(zip(added_rows, deleted_items)) if len(deleted_items) == len(added_rows) else {}
        n_classes = len(self.project.schema.classes)
        new_rows, new_classes = [], []
        for k in added_rows:
            field = round(new[k, 0]) if self.is_fields else 0
            y_px, x_px = new[k, -2] / self.mpp, new[k, -1] / self.mpp
            if k in moved_from:
                iid = edits.move_cell(self.project, moved_from[k], field, y_px, x_px, reviewer,
                                      default_class=self.new_cell_class())
                touched.append(moved_from[k])
            else:
                iid = edits.add_cell(self.project, self.image_id, field, y_px, x_px, self.new_cell_class(), reviewer)
            label = self.project.item(iid).label
            self.labels[iid] = label
            new_items[k] = iid
            new_rows.append(k)
            new_classes.append(int(label[0]))
            touched.append(iid)
        gone = [iid for iid in deleted_items if iid not in moved_from.values()]
        if gone:
            edits.delete_cells(self.project, gone, reviewer)
            touched.extend(gone)
        if deleted_items:
            self.not_a_cell = edits.not_a_cell_id(self.project, create=False)
            for iid in deleted_items:
                self.labels[iid] = [self.not_a_cell]
        if len(self.project.schema.classes) != n_classes:  # "not a cell" was just added: give it a layer value
            self.classmap.refresh()
        self.rows_item = new_items
        self.row_of = {int(iid): k for k, iid in enumerate(self.rows_item.tolist()) if iid >= 0}
        self.coords = np.array(new, copy=True)
        if new_rows:
            self._muted = True
            try:
                self._write_classes(np.asarray(new_rows, dtype=np.int64), new_classes)
            finally:
                self._muted = False
        if touched and self.on_change is not None:
            self.on_change(touched, "points")


def _park(edits) -> None:
    """Make every slot of the edits pool invisible: size 0, far outside any field or slide (written in place)."""
    edits.size[:] = 0
    edits.data[:] = -1e7


def _rgba_hex(rgba) -> str:
    return "#" + "".join(f"{round(float(v) * 255):02x}" for v in rgba[:4])


def _add_points_like(viewer, layer, coords, colors, sizes, name):
    """A small, non-editable Points layer drawn exactly like ``layer`` (same transform), on top of it."""
    from napari.layers import Points

    symbol = np.asarray(layer.symbol).ravel()
    edits = Points(coords, ndim=layer.data.shape[1], name=name, size=sizes, face_color=colors,
                   symbol=symbol[0] if symbol.size else "disc",
                   border_color="#ffffff", border_width=0.12, border_width_is_relative=True,
                   scale=layer.scale, translate=layer.translate, out_of_slice_display=False,
                   metadata=_session_meta(layer, "cell_edits"),
                   **({"units": tuple(str(u) for u in layer.units)} if getattr(layer, "units", None) else {}))
    edits.editable = False
    active = viewer.layers.selection.active
    viewer.layers.append(edits)
    if active is not None:  # keep the reviewer's layer active
        viewer.layers.selection.active = active
    return edits


class CurrentItemMarker:
    """The "current item" marker: one hollow square (a Points layer, cheap to move) around the item under review.

    A Shapes rectangle would follow non-square boxes exactly, but re-setting Shapes data costs ~100 ms per item in
    napari 0.9; tiles are square, and a field's marker is the view itself.
    """

    NAME = "current item"
    COLOR = "#00e5ff"

    def __init__(self, viewer, ndim: int, units=None, image_layer=None):
        self.viewer = viewer
        self.ndim = ndim
        self.units = units
        self.image_layer = image_layer
        self.layer = None

    def _ensure(self, center, side):
        if self.layer is None or self.layer not in self.viewer.layers:
            active = self.viewer.layers.selection.active
            self.layer = self.viewer.add_points(
                [center], ndim=self.ndim, name=self.NAME, symbol="square", size=side, face_color="transparent",
                border_color=self.COLOR, border_width=0.04, border_width_is_relative=True, opacity=1.0,
                out_of_slice_display=False, metadata=_session_meta(self.image_layer, "current_item"),
                **({"units": self.units} if self.units is not None else {}))
            self.layer.editable = False
            if active is not None:  # keep the reviewer's layer active (selected cells, painting)
                self.viewer.layers.selection.active = active
            return True
        return False

    def show(self, field: int | None, box_um: tuple[float, float, float, float]) -> None:
        """Frame the box ``(y0, x0, y1, x1)`` µm (on ``field`` for field sets)."""
        y0, x0, y1, x1 = box_um
        side = float(max(y1 - y0, x1 - x0))
        center = [(y0 + y1) / 2, (x0 + x1) / 2]
        if self.ndim == 3:
            center = [float(field or 0), *center]
        if self._ensure(center, side):
            return
        layer = self.layer
        if not np.isclose(float(np.asarray(layer.size).ravel()[0]), side):
            layer.current_size = side  # the size new points get ...
            layer.size = side  # ... and the present one
        layer.data = np.asarray([center], dtype=np.float64)
        if not np.isclose(float(np.asarray(layer.size).ravel()[0]), side):
            layer.size = side

    def box(self) -> tuple | None:
        """``(center, side)`` currently drawn, None when hidden."""
        if self.layer is None or not len(self.layer.data):
            return None
        return tuple(self.layer.data[0]), float(np.asarray(self.layer.size).ravel()[0])

    def clear(self) -> None:
        if self.layer is not None and self.layer in self.viewer.layers:
            self.layer.data = np.zeros((0, self.ndim))


def _session_meta(layer, role: str) -> dict:
    """Metadata of a session layer drawn for ``layer``'s image (an image layer or one of its overlays)."""
    meta = LayerMeta.of(layer) if layer is not None else None
    if meta is None:
        return LayerMeta(role=role).to_metadata()
    return LayerMeta(role=role, image_path=meta.image_path, image_uid=meta.image_uid, kind=meta.kind,
                     mpp=meta.mpp).to_metadata()


def _notify(message: str) -> None:
    try:
        from napari.utils.notifications import show_info

        show_info(message)
    except Exception:  # noqa: BLE001 - best effort outside a viewer
        log.info(message)
