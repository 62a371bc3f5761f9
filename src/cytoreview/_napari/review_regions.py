"""The regions layer of a review session: polygons drawn on it become ``region`` items of the project.

A napari Shapes layer ("<image> regions", in µm over the image, a leading field coordinate for a field set) shows
the project's live region items (:func:`cytoreview.review.edits.is_live_region`) in their class colours. The layer
only finds *which* shapes changed and hands them to the core, which decides what that means:

* a polygon or rectangle drawn -> :func:`~cytoreview.review.edits.add_region` with the palette's class;
* a shape deleted -> :func:`~cytoreview.review.edits.delete_regions` (the item becomes "not a region");
* a shape moved or its vertices edited -> :func:`~cytoreview.review.edits.reshape_region` (a new item).

Each change is committed before the layer shows its colour. An undo or redo of the session (Ctrl+Z) that lands on a
region item shows or hides its shape again; the journal rows of one reshape (or one brush stroke that merged regions)
are undone and redone together.

Brush regions: a Labels layer ("<image> region brush", over the whole image, ``brush_px`` level-0 pixels per brush
pixel) is a scratch surface. When a stroke ends, what it painted (per field and per painted value: a class's value
is ``class id + 1``, :data:`ERASE_VALUE` erases, any other value means the palette's class) goes to
:func:`cytoreview.review.brush.paint_region` (or :func:`~cytoreview.review.brush.erase_regions`), which makes, extends
or cuts the region items; the surface is cleared and the outlines appear on the regions layer. One stroke is one
Ctrl+Z.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from cytoreview._napari.overlays import image_info
from cytoreview.errors import CytoreviewError
from cytoreview.review import brush, edits

log = logging.getLogger(__name__)

#: Face opacity of a region's class colour.
REGION_ALPHA = 0.25
#: The brush layer has at most this many pixels along a side, and in all (uint8): coarser brush pixels beyond.
BRUSH_MAX_SIDE = 4096
BRUSH_MAX_PIXELS = 1 << 26
#: The brush layer's label value that erases regions instead of painting a class.
ERASE_VALUE = 255
ERASE_COLOR = "#ffffff"


def _rgba(color: str, alpha: float) -> list[float]:
    c = (color or "#808080").lstrip("#")
    return [int(c[k : k + 2], 16) / 255 for k in (0, 2, 4)] + [alpha]


def _notify(message: str) -> None:
    try:
        from napari.utils.notifications import show_warning

        show_warning(message)
    except Exception:  # noqa: BLE001 - no viewer notification manager: the log has it
        log.warning(message)


class RegionLayerSync:
    """Project region items <-> a Shapes layer.

    Parameters
    ----------
    viewer : napari.Viewer
    session : ReviewSession
        Its project, image, µm/px, kind, reviewer and chosen class (``new_cell_class_id``) are used; its undo/redo
        events keep the layer in step.
    on_change : callable, optional
        Called with ``(item_ids, "region")`` after region changes were journalled.
    """

    def __init__(self, viewer, session, on_change=None):
        self.viewer, self.session, self.on_change = viewer, session, on_change
        self.is_fields = session.kind == "fields"
        # a focus stack's layers get its z axis too (else napari would align the field axis with z)
        self.n_z = int(image_info(session.image_layer).get("n_z") or 1) if self.is_fields else 1
        #: item id of each shape of the layer, and the level-0 outline it was journalled with (same order)
        self.item_ids: list[int] = []
        self._outlines: list[np.ndarray] = []
        ndim = (2 if self.n_z > 1 else 1) + 2 if self.is_fields else 2
        units = tuple(str(u) for u in session.image_layer.units)[-ndim:] if getattr(
            session.image_layer, "units", None) else None
        self.layer = viewer.add_shapes(ndim=ndim, name=f"{session.image_layer.name} regions", edge_width=1.0,
                                       **({"units": units} if units else {}),
                                       metadata={"cytoreview": {"role": "regions",
                                                                "image_layer": session.image_layer.name}})
        items = session.project.items(image_id=session.image_id, level="region")
        nar = self._not_a_region()
        shown = []
        for iid, field, geom, label in zip(items["item_id"].tolist(), items["field"].tolist(),
                                           items["geometry"].tolist(), items["label"].tolist()):
            if geom.get("type") == "polygon" and edits.is_live_region(label, nar):
                shown.append((int(iid), int(field), geom["coords"], label))
        self._muted = False
        #: item ids journalled by one action (a reshape, a brush merge), oldest first: undone and redone together
        self._groups: list[list[int]] = []
        self._grouping = False
        self._show(shown)
        self.layer.events.data.connect(self._on_data)
        session.listeners.append(self._session_event)
        self._brush_pending = False
        self.brush = self._add_brush_layer()
        self.set_class(self.class_id())
        viewer.layers.selection.active = self.layer

    # ------------------------------------------------------------------ brush
    def _add_brush_layer(self):
        """The scratch Labels layer strokes are painted on (see the module docstring)."""
        from napari.utils.colormaps import DirectLabelColormap

        image = self.session.image_layer
        shape = tuple(image.data[0].shape if image.multiscale else image.data.shape)
        if image.rgb:
            shape = shape[:-1]
        height, width = int(shape[-2]), int(shape[-1])
        n_fields = int(shape[0]) if self.is_fields else 1
        b = max(1, math.ceil(max(height, width) / BRUSH_MAX_SIDE),
                math.ceil(math.sqrt(n_fields * height * width / BRUSH_MAX_PIXELS)))
        self.brush_px = b
        plane = (max(1, height // b), max(1, width // b))  # whole brush pixels only: never past the image
        lead = ((n_fields,) + ((1,) if self.n_z > 1 else ())) if self.is_fields else ()
        data = np.zeros(lead + plane, dtype=np.uint8)
        sy, sx = (float(v) for v in image.scale[-2:])
        ty, tx = (float(v) for v in image.translate[-2:])
        scale = [b * sy, b * sx]
        translate = [ty + (b / 2 - 0.5) * sy, tx + (b / 2 - 0.5) * sx]
        if self.is_fields:
            lead_scale = [float(image.scale[0])]
            lead_translate = [float(image.translate[0])]
            if self.n_z > 1:  # one plane standing for every focus plane, as the tile overlays do
                z_scale = float(image.scale[1])
                lead_scale.append(z_scale * self.n_z)
                lead_translate.append(float(image.translate[1]) + (self.n_z - 1) / 2 * z_scale)
            scale, translate = lead_scale + scale, lead_translate + translate
        colors: dict = {None: "#808080", 0: "transparent"}
        for cls in self.session.project.schema.active_classes:
            if 0 <= int(cls.id) + 1 < ERASE_VALUE:
                colors[int(cls.id) + 1] = cls.color or "#808080"
        colors[ERASE_VALUE] = ERASE_COLOR
        units = tuple(str(u) for u in image.units)[-len(scale):] if getattr(image, "units", None) else None
        layer = self.viewer.add_labels(
            data, name=f"{image.name} region brush", scale=scale, translate=translate, opacity=0.5,
            colormap=DirectLabelColormap(color_dict=colors), **({"units": units} if units else {}),
            metadata={"cytoreview": {"role": "region_brush", "image_layer": image.name, "brush_px": b}})
        layer.events.paint.connect(self._on_brush)
        return layer

    def set_class(self, class_id: int) -> None:
        """Make the brush paint ``class_id`` (its label value, ``class id + 1``), as the palette chose it."""
        value = int(class_id) + 1
        if 0 < value < ERASE_VALUE and getattr(self, "brush", None) is not None:
            self.brush.selected_label = value

    def _on_brush(self, event=None) -> None:
        """napari emits ``paint`` before a single stroke's pixels are written: read them once control is back."""
        if self._muted or self._brush_pending:
            return
        from qtpy.QtCore import QTimer

        self._brush_pending = True
        QTimer.singleShot(0, self.flush_brush)

    def flush_brush(self) -> list[int]:
        """Turn what was painted on the brush layer into region items, clear it, and show the regions; return the
        ids of the regions made, extended or cut (or erased whole)."""
        self._brush_pending = False
        layer = getattr(self, "brush", None)
        if layer is None or layer not in self.viewer.layers:
            return []
        data = np.asarray(layer.data)
        if not data.any():
            return []
        planes = (data[:, 0] if self.n_z > 1 else data) if self.is_fields else data[None]
        known = {int(c.id) for c in self.session.project.schema.active_classes}
        made: list[int] = []
        stroke: list[int] = []  # every item the stroke journalled, oldest first: one Ctrl+Z takes it all back
        try:
            for field in np.flatnonzero(planes.reshape(len(planes), -1).any(axis=1)).tolist():
                plane = planes[field]
                for value in np.unique(plane[plane > 0]).tolist():
                    rows, cols = np.nonzero(plane == value)
                    r0, c0 = int(rows.min()), int(cols.min())
                    mask = np.zeros((int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1), dtype=bool)
                    mask[rows - r0, cols - c0] = True
                    where = {"px_level0": float(self.brush_px), "offset_px": (r0, c0)}
                    if int(value) == ERASE_VALUE:
                        results = brush.erase_regions(self.session.project, self.session.image_id, int(field), mask,
                                                      self.session.reviewer, **where)
                    else:
                        cid = int(value) - 1 if int(value) - 1 in known else self.class_id()
                        results = brush.paint_region(self.session.project, self.session.image_id, int(field), mask,
                                                     cid, self.session.reviewer, **where)
                    for result in results:
                        made.append(result.item_id)
                        stroke.extend(result.journalled)
        except CytoreviewError as exc:
            _notify(f"brush region not made: {exc}")
        finally:
            self._muted = True
            try:
                layer.data[...] = 0  # the scratch surface is cleared; the regions layer shows the result
                layer.refresh()
            finally:
                self._muted = False
        if len(stroke) > 1:
            self._groups.append(stroke)
        self._reload()
        if made and self.on_change is not None:
            self.on_change(made, "region")
        return made

    # ------------------------------------------------------------------ helpers
    def _not_a_region(self) -> int | None:
        return edits.not_a_region_id(self.session.project, create=False)

    def _color(self, label) -> list[float]:
        schema = self.session.project.schema
        try:
            return _rgba(schema.get(int(label[0])).color, REGION_ALPHA) if label else _rgba("#808080", REGION_ALPHA)
        except CytoreviewError:  # a class gone from the schema shows grey
            return _rgba("#808080", REGION_ALPHA)

    def _to_world(self, field: int, coords) -> np.ndarray:
        yx = np.asarray(coords, dtype=np.float64) * self.session.mpp
        if self.is_fields:
            lead = [np.full(len(yx), float(field))] + ([np.zeros(len(yx))] if self.n_z > 1 else [])
            return np.c_[tuple(lead) + (yx,)]
        return yx

    def _to_level0(self, verts) -> tuple[int, np.ndarray]:
        """``(field, [[y, x], ...] level-0 px)`` of a shape's world vertices."""
        verts = np.asarray(verts, dtype=np.float64)
        field = int(round(verts[0, 0])) if self.is_fields else 0
        return field, verts[:, -2:] / self.session.mpp

    def _show(self, regions) -> None:
        """Append ``(item_id, field, coords, label)`` shapes to the layer without journalling them."""
        if not regions:
            return
        colors = [self._color(label) for *_, label in regions]
        self._muted = True
        try:
            self.layer.add_polygons([self._to_world(f, c) for _, f, c, _ in regions], face_color=colors,
                                    edge_color=[c[:3] + [1.0] for c in colors])
        finally:
            self._muted = False
        for iid, _, coords, _ in regions:
            self.item_ids.append(int(iid))
            self._outlines.append(np.asarray(coords, dtype=np.float64))

    def _hide(self, indices) -> None:
        """Remove shapes from the layer without journalling it."""
        indices = sorted({int(i) for i in indices})
        if not indices:
            return
        self._muted = True
        try:
            self.layer.selected_data = set()
            self.layer.remove(indices)
        finally:
            self._muted = False
        for k in reversed(indices):
            del self.item_ids[k]
            del self._outlines[k]

    def _recolor(self, indices, label) -> None:
        color = self._color(label)
        self._muted = True
        try:
            fc = np.asarray(self.layer.face_color).copy()
            ec = np.asarray(self.layer.edge_color).copy()
            fc[list(indices)] = color
            ec[list(indices)] = color[:3] + [1.0]
            self.layer.face_color, self.layer.edge_color = fc, ec
        finally:
            self._muted = False

    def class_id(self) -> int:
        """The class a new region gets: the one picked in the palette, else the first class of the schema."""
        chosen = getattr(self.session, "new_cell_class_id", None)
        if chosen is not None:
            return int(chosen)
        return int(self.session.project.schema.active_classes[0].id)

    # ------------------------------------------------------------------ layer -> project
    def _on_data(self, event=None) -> None:
        if self._muted:
            return
        action = str(getattr(event, "action", "added") or "added")
        if action in ("adding", "changing", "removing"):
            return  # act once napari has finished the change
        indices = [int(i) for i in (getattr(event, "data_indices", None) or ()) if int(i) >= 0]
        try:
            if action == "removed":
                made = self._removed(indices)
            elif action == "changed":
                made = self._changed(indices)
            else:
                made = self._added()
        except CytoreviewError as exc:  # a change the core refuses (say, a two-vertex polygon): one line, no journal
            _notify(f"region not changed: {exc}")
            self._reload()
            return
        if made and self.on_change is not None:
            self.on_change(made, "region")

    def _added(self) -> list[int]:
        data = self.layer.data
        new = list(range(len(self.item_ids), len(data)))
        made, cid = [], self.class_id()
        for k in new:
            field, coords = self._to_level0(data[k])
            iid = edits.add_region(self.session.project, self.session.image_id, field, coords.tolist(), cid,
                                   self.session.reviewer)  # committed before the layer shows its class
            self.item_ids.append(iid)
            self._outlines.append(coords)
            made.append(iid)
        if new:
            self._recolor(new, [cid])
        return made

    def _removed(self, indices) -> list[int]:
        if len(self.layer.data) + len(indices) != len(self.item_ids):  # not the removal we can follow: resync
            return self._reconcile()
        gone = [self.item_ids[k] for k in indices]
        edits.delete_regions(self.session.project, gone, self.session.reviewer)
        for k in sorted(indices, reverse=True):
            del self.item_ids[k]
            del self._outlines[k]
        return gone

    def _changed(self, indices) -> list[int]:
        data = self.layer.data
        if len(data) != len(self.item_ids):
            return self._reconcile()
        made = []
        for k in indices or range(len(data)):
            field, coords = self._to_level0(data[k])
            old = self._outlines[k]
            if old.shape == coords.shape and np.allclose(old, coords, atol=1e-6):
                continue
            iid = edits.reshape_region(self.session.project, self.item_ids[k], coords.tolist(),
                                       self.session.reviewer, default_class=self.class_id())
            if iid != self.item_ids[k]:
                made.extend([self.item_ids[k], iid])
                self._groups.append([self.item_ids[k], iid])  # one reshape: one Ctrl+Z
            self.item_ids[k], self._outlines[k] = iid, coords
        return made

    def _reconcile(self) -> list[int]:
        """Match the layer's shapes to the known ones by outline: unmatched known ones were deleted, unmatched
        shapes drawn (when napari replaced the whole data at once)."""
        data = self.layer.data
        remaining = list(range(len(self.item_ids)))
        order, unmatched = [], []
        for k, verts in enumerate(data):
            _, coords = self._to_level0(verts)
            hit = next((j for j in remaining if self._outlines[j].shape == coords.shape
                        and np.allclose(self._outlines[j], coords, atol=1e-6)), None)
            if hit is None:
                unmatched.append(k)
            else:
                remaining.remove(hit)
            order.append(hit)
        gone = [self.item_ids[j] for j in remaining]
        if gone:
            edits.delete_regions(self.session.project, gone, self.session.reviewer)
        ids, outlines, made, cid = [], [], list(gone), self.class_id()
        for k, hit in enumerate(order):
            if hit is not None:
                ids.append(self.item_ids[hit])
                outlines.append(self._outlines[hit])
                continue
            field, coords = self._to_level0(data[k])
            iid = edits.add_region(self.session.project, self.session.image_id, field, coords.tolist(), cid,
                                   self.session.reviewer)
            ids.append(iid)
            outlines.append(coords)
            made.append(iid)
        self.item_ids, self._outlines = ids, outlines
        if unmatched:
            self._recolor(unmatched, [cid])
        return made

    def _reload(self) -> None:
        """Show exactly the project's live regions again (after a refused change)."""
        self._hide(range(len(self.item_ids)))
        items = self.session.project.items(image_id=self.session.image_id, level="region")
        nar = self._not_a_region()
        self._show([(int(i), int(f), g["coords"], lab) for i, f, g, lab in zip(
            items["item_id"].tolist(), items["field"].tolist(), items["geometry"].tolist(), items["label"].tolist())
            if g.get("type") == "polygon" and edits.is_live_region(lab, nar)])

    # ------------------------------------------------------------------ project -> layer (undo / redo)
    def _session_event(self, what: str, item_ids) -> None:
        if what not in ("undo", "redo"):
            return
        for iid in item_ids:
            self.show_item(int(iid))
        if self._grouping or len(item_ids) != 1:
            return
        iid = int(item_ids[0])
        if what == "undo":  # undoing the newest row of a group takes back the rest of it, newest first
            group = next((g for g in reversed(self._groups) if g[-1] == iid), None)
            rest = list(reversed(group[:-1])) if group else []
        else:  # redoing its oldest row redoes the rest, oldest first
            group = next((g for g in reversed(self._groups) if g[0] == iid), None)
            rest = group[1:] if group else []
        self._grouping = True
        try:
            for expected in rest:
                got = getattr(self.session, what)()
                if got != expected:  # the journal moved on in between: stop where the rows no longer match
                    break
        finally:
            self._grouping = False

    def show_item(self, item_id: int) -> None:
        """Show a region item as the project has it now: its shape when live, none when deleted or undone."""
        item = self.session.project.item(int(item_id))
        if item.level != "region" or item.image_id != self.session.image_id:
            return
        live = item.geometry.get("type") == "polygon" and edits.is_live_region(item.label, self._not_a_region())
        on_layer = [k for k, i in enumerate(self.item_ids) if i == int(item_id)]
        if live and on_layer:
            self._recolor(on_layer, item.label)
        elif live:
            self._show([(int(item_id), int(item.field), item.geometry["coords"], item.label)])
        elif on_layer:
            self._hide(on_layer)

    def close(self) -> None:
        """Stop listening and remove the layers."""
        for event, handler in ((self.layer.events.data, self._on_data), (self.brush.events.paint, self._on_brush)):
            try:
                event.disconnect(handler)
            except (TypeError, ValueError, RuntimeError):
                pass
        if self.brush in self.viewer.layers:
            self.viewer.layers.remove(self.brush)
        if self._session_event in self.session.listeners:
            self.session.listeners.remove(self._session_event)
        if self.layer in self.viewer.layers:
            self.viewer.layers.remove(self.layer)
