"""The regions layer of a review session: polygons drawn on it become ``region`` items of the project.

A napari Shapes layer ("<image> regions", in µm over the image, a leading field coordinate for a field set) shows
the project's region items in their class colours. A polygon or rectangle drawn on it is journalled through
:func:`cytoreview.review.edits.add_region` with the class chosen in the review dock's palette, before the shape is
coloured; the layer only finds *which* shapes are new.
"""

from __future__ import annotations

import numpy as np

from cytoreview.review import edits

#: Face opacity of a region's class colour.
REGION_ALPHA = 0.25


def _rgba(color: str, alpha: float) -> list[float]:
    c = (color or "#808080").lstrip("#")
    return [int(c[k : k + 2], 16) / 255 for k in (0, 2, 4)] + [alpha]


class RegionLayerSync:
    """Project region items <-> a Shapes layer.

    Parameters
    ----------
    viewer : napari.Viewer
    session : ReviewSession
        Its project, image, µm/px, kind, reviewer and chosen class (``region_class_id``) are used.
    on_change : callable, optional
        Called with ``(item_ids, "region")`` after drawn regions were journalled.
    """

    def __init__(self, viewer, session, on_change=None):
        self.viewer, self.session, self.on_change = viewer, session, on_change
        self.is_fields = session.kind == "fields"
        self.item_ids: list[int] = []
        ndim = 3 if self.is_fields else 2
        units = tuple(str(u) for u in session.image_layer.units)[-ndim:] if getattr(
            session.image_layer, "units", None) else None
        self.layer = viewer.add_shapes(ndim=ndim, name=f"{session.image_layer.name} regions", edge_width=1.0,
                                       **({"units": units} if units else {}),
                                       metadata={"cytoreview": {"role": "regions",
                                                                "image_layer": session.image_layer.name}})
        items = session.project.items(image_id=session.image_id, level="region")
        polys, ids, colors = [], [], []
        for iid, field, geom, label in zip(items["item_id"].tolist(), items["field"].tolist(),
                                           items["geometry"].tolist(), items["label"].tolist()):
            if geom.get("type") != "polygon":
                continue
            polys.append(self._to_world(field, geom["coords"]))
            ids.append(int(iid))
            colors.append(self._color(label))
        self._muted = True
        try:
            if polys:
                self.layer.add_polygons(polys, face_color=colors, edge_color=[c[:3] + [1.0] for c in colors])
        finally:
            self._muted = False
        self.item_ids = ids
        self.layer.events.data.connect(self._on_data)

    def _color(self, label) -> list[float]:
        schema = self.session.project.schema
        try:
            return _rgba(schema.get(int(label[0])).color, REGION_ALPHA) if label else _rgba("#808080", REGION_ALPHA)
        except Exception:  # noqa: BLE001 - a class gone from the schema shows grey
            return _rgba("#808080", REGION_ALPHA)

    def _to_world(self, field: int, coords) -> np.ndarray:
        yx = np.asarray(coords, dtype=np.float64) * self.session.mpp
        if self.is_fields:
            return np.c_[np.full(len(yx), float(field)), yx]
        return yx

    def class_id(self) -> int:
        """The class a new region gets: the one picked in the palette, else the first class of the schema."""
        chosen = getattr(self.session, "new_cell_class_id", None)
        if chosen is not None:
            return int(chosen)
        return int(self.session.project.schema.active_classes[0].id)

    def _on_data(self, event=None) -> None:
        if self._muted or getattr(event, "action", "added") not in ("added", None):
            return
        data = self.layer.data
        new = list(range(len(self.item_ids), len(data)))
        if not new:
            return
        made = []
        cid = self.class_id()
        for k in new:
            verts = np.asarray(data[k], dtype=np.float64)
            field = int(round(verts[0, 0])) if self.is_fields else 0
            coords = (verts[:, -2:] / self.session.mpp).tolist()
            iid = edits.add_region(self.session.project, self.session.image_id, field, coords, cid,
                                   self.session.reviewer)  # committed before the layer shows its class
            self.item_ids.append(iid)
            made.append(iid)
        color = self._color([cid])
        self._muted = True
        try:
            fc = np.asarray(self.layer.face_color).copy()
            ec = np.asarray(self.layer.edge_color).copy()
            fc[new] = color
            ec[new] = color[:3] + [1.0]
            self.layer.face_color, self.layer.edge_color = fc, ec
        finally:
            self._muted = False
        if self.on_change is not None:
            self.on_change(made, "region")

    def close(self) -> None:
        """Stop listening and remove the layer."""
        try:
            self.layer.events.data.disconnect(self._on_data)
        except (TypeError, ValueError, RuntimeError):
            pass
        if self.layer in self.viewer.layers:
            self.viewer.layers.remove(self.layer)
