"""Cell outlines for the cells in view: a Shapes layer whose polygons follow the camera.

napari's Shapes layer slows down with the number of shapes it is given (~1.3 ms per polygon), so a
store's outlines are not all handed to it. :class:`OutlinesInView` keeps every outline in world µm with its
bounding box and, after the camera moves or zooms or another field is shown (debounced by :data:`DEBOUNCE_MS`), puts
into the layer only the outlines of the cells of the shown field whose box meets the view -- when there are at most
:data:`MAX_OUTLINES_IN_VIEW` of them; zoomed out further, the layer is empty (the cells' points still show). Finding
the cells in view is one vectorised box test over all cells; the layer's data are replaced only when the set
changes.
"""

from __future__ import annotations

import numpy as np

#: Most outlines drawn at once (zoomed out past this many cells in view, none are drawn). napari's Shapes layer
#: takes about 1.3 ms per polygon it is given (measured here: 0.17 s for ~100, 0.6-0.8 s for ~500; paths cost the
#: same), while finding the cells in view takes 0.1-2.5 ms for 10^4-10^5 cells; 300 keeps one update near 0.4 s.
MAX_OUTLINES_IN_VIEW = 300
#: Quiet time after the last camera / field change before the outlines are recomputed.
DEBOUNCE_MS = 120
#: Canvas size assumed when the Qt canvas cannot be asked (``(height, width)`` in screen pixels).
FALLBACK_CANVAS_PX = (1000, 1600)

#: The controller of each outlines layer (by ``id(layer)``), dropped with the layer.
_CONTROLLERS: dict[int, OutlinesInView] = {}


def _camera(viewer):
    scene = getattr(viewer, "scene", None)  # napari >= 0.9 moved the camera onto the scene
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def _canvas_px(viewer) -> tuple[int, int]:
    try:
        size = viewer.window._qt_viewer.canvas.native.size()
        if size.height() > 0 and size.width() > 0:
            return size.height(), size.width()
    except AttributeError:
        pass
    return FALLBACK_CANVAS_PX


class OutlinesInView:
    """Keep ``layer`` (a napari Shapes layer in world µm) holding the outlines of the cells in view.

    Parameters
    ----------
    viewer : napari.Viewer
    layer : napari.layers.Shapes
    polygons : list of ndarray
        One ``(M, n_lead + 2)`` polygon per cell in world coordinates: the leading coordinates (field, plane) of
        its slice, then y, x in µm.
    n_lead : int
        Number of leading coordinates (0 for a slide, 1 or 2 for a field set).
    """

    def __init__(self, viewer, layer, polygons: list[np.ndarray], n_lead: int, *, edge_width_um: float = 0.3,
                 edge_color: str = "#ffff00"):
        self.viewer = viewer
        self.edge_width_um = float(edge_width_um)
        self.edge_color = edge_color
        self.layer = layer
        self.polygons = polygons
        self.n_lead = int(n_lead)
        n = len(polygons)
        self.lead = np.array([p[0, :n_lead] for p in polygons], dtype=np.float64).reshape(n, n_lead)
        self.box = np.array([[p[:, -2].min(), p[:, -1].min(), p[:, -2].max(), p[:, -1].max()] for p in polygons],
                            dtype=np.float64).reshape(n, 4)
        self.shown = np.zeros(0, dtype=np.int64)
        self._timer = None
        camera = _camera(viewer)
        self._sources = [camera.events.center, camera.events.zoom, viewer.dims.events.current_step]
        for source in self._sources:
            source.connect(self.schedule)
        viewer.layers.events.removed.connect(self._on_removed)
        _CONTROLLERS[id(layer)] = self
        self.update()

    # ------------------------------------------------------------------ what is in view
    def view_box(self) -> tuple[float, float, float, float]:
        """``(y0, x0, y1, x1)`` of the canvas in world µm."""
        camera = _camera(self.viewer)
        cy, cx = (float(v) for v in camera.center[-2:])
        h, w = _canvas_px(self.viewer)
        half_h, half_w = h / 2 / camera.zoom, w / 2 / camera.zoom
        return cy - half_h, cx - half_w, cy + half_h, cx + half_w

    def in_view(self) -> np.ndarray:
        """Indices of the cells of the shown slice whose bounding box meets the view."""
        y0, x0, y1, x1 = self.view_box()
        box = self.box
        hit = (box[:, 2] >= y0) & (box[:, 0] <= y1) & (box[:, 3] >= x0) & (box[:, 1] <= x1)
        if self.n_lead:
            point = np.asarray(self.viewer.dims.point[: self.n_lead], dtype=np.float64)
            hit &= (np.abs(self.lead - point) < 0.5).all(axis=1)
        return np.flatnonzero(hit)

    # ------------------------------------------------------------------ updates
    def schedule(self, event=None) -> None:
        """Recompute after :data:`DEBOUNCE_MS` without further camera or field changes."""
        if self._timer is None:
            from qtpy.QtCore import QTimer

            self._timer = QTimer()
            self._timer.setSingleShot(True)
            self._timer.timeout.connect(self.update)
        self._timer.start(DEBOUNCE_MS)

    def update(self) -> None:
        """Put the outlines of the cells in view into the layer (none when more than the bound are in view)."""
        idx = self.in_view()
        if len(idx) > MAX_OUTLINES_IN_VIEW:
            idx = idx[:0]
        if np.array_equal(idx, self.shown):
            return
        self.shown = idx
        self.layer.data = []
        if len(idx):
            self.layer.add_polygons([self.polygons[i] for i in idx.tolist()], edge_width=self.edge_width_um,
                                    edge_color=self.edge_color, face_color="transparent")

    def disconnect(self) -> None:
        for source in self._sources:
            source.disconnect(self.schedule)
        self.viewer.layers.events.removed.disconnect(self._on_removed)
        if self._timer is not None:
            self._timer.stop()
        _CONTROLLERS.pop(id(self.layer), None)

    def _on_removed(self, event) -> None:
        if event.value is self.layer:
            self.disconnect()


def outlines_in_view(layer) -> OutlinesInView | None:
    """The controller keeping ``layer``'s outlines in view, if it has one."""
    return _CONTROLLERS.get(id(layer))
