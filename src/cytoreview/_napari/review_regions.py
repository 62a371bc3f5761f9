"""The regions layer of a review session: polygons drawn on it become ``region`` items of the project.

A napari Shapes layer ("<image> regions", in µm over the image, a leading field coordinate for a field set) shows
the project's live region items (:func:`cytoreview.review.edits.is_live_region`) in their class colours. The layer
only finds *which* shapes changed and hands them to the core, which decides what that means:

* a polygon or rectangle drawn -> :func:`~cytoreview.review.edits.add_region` with the palette's class;
* a shape deleted -> :func:`~cytoreview.review.edits.delete_regions` (the item becomes "not a region");
* a shape moved or its vertices edited -> :func:`~cytoreview.review.edits.reshape_region` (a new item).

Each change is committed before the layer shows its colour. An undo or redo of the session (Ctrl+Z) that lands on a
region item shows or hides its shape again; a reshape (or a brush stroke that merged or cut regions) is one edit in
the project (:meth:`cytoreview.review.Project.one_edit`), so one Ctrl+Z takes it back whole, from any dock.

The region brush (:mod:`cytoreview._napari.review_brush`) paints regions onto the same items.
"""

from __future__ import annotations

import logging

import numpy as np

from cytoreview._napari.overlays import image_info
from cytoreview.errors import CytoreviewError
from cytoreview.review import edits

log = logging.getLogger(__name__)

#: Face opacity of a region's class colour.
REGION_ALPHA = 0.25


def _rgba(color: str, alpha: float) -> list[float]:
    c = (color or "#808080").lstrip("#")
    return [int(c[k : k + 2], 16) / 255 for k in (0, 2, 4)] + [alpha]


def notify(message: str) -> None:
    """A napari warning (the log when there is no viewer)."""
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
        self._show(shown)
        self.layer.events.data.connect(self._on_data)
        session.listeners.append(self._session_event)
        from cytoreview._napari.review_brush import RegionBrush

        #: the region brush painting onto this layer's items
        self.brush = RegionBrush(self)
        viewer.layers.selection.active = self.layer

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
            notify(f"region not changed: {exc}")
            self.reload()
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
            if iid != self.item_ids[k]:  # one edit in the project: one Ctrl+Z takes the reshape back
                made.extend([self.item_ids[k], iid])
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

    def reload(self) -> None:
        """Show exactly the project's live regions again (after a refused change, or a brush stroke)."""
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
        for iid in item_ids:  # an undo of a reshape or a brush stroke brings every item of that one edit
            self.show_item(int(iid))

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
        """Stop listening and remove the layers (the brush's too)."""
        self.brush.close()
        try:
            self.layer.events.data.disconnect(self._on_data)
        except (TypeError, ValueError, RuntimeError):
            pass
        if self._session_event in self.session.listeners:
            self.session.listeners.remove(self._session_event)
        if self.layer in self.viewer.layers:
            self.viewer.layers.remove(self.layer)
