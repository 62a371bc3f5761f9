"""Cells from a segmentation pack in a real napari viewer: the per-pixel mask (Labels), foreground probability
(Image with a colour bar), cells (Points with area and confidence) and outlines, all in µm; review keys on
detected cells."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from tests._napari.test_overlays import FIELD_MPP, open_in, write_field_set
from tests.models.onnx_graphs import foreground_graph, segmentation_card, write_pack

pytestmark = pytest.mark.gui


def detector(folder):
    card = segmentation_card("tiny-cells", size_px=32, cells={"min_area_um2": 1.0})
    card["input"]["mpp"] = FIELD_MPP
    return write_pack(folder / "tiny-cells", card, foreground_graph)


def test_pixel_layers_points_and_outlines_in_um(make_napari_viewer, tmp_path):
    from napari.layers import Image, Labels, Points, Shapes

    from cytoreview._napari.overlays import add_prediction_layers
    from cytoreview.inference import predict

    folder = write_field_set(tmp_path / "case", n_fields=2, cells=True)
    store = predict(folder, detector(tmp_path), tmp_path / "out", threads=1)
    assert len(store.cells()["y_px"]) == 6
    viewer = make_napari_viewer()
    image_layer = open_in(viewer, folder)
    made = add_prediction_layers(viewer, store, image_layer)
    mask, fg, cells, outlines = made["cell_mask"], made["foreground"], made["cells"], made["cell_outlines"]
    assert isinstance(mask, Labels) and isinstance(fg, Image) and isinstance(cells, Points)
    assert isinstance(outlines, Shapes) and len(outlines.data) == 6
    k = store.mask_px_level0
    for layer in (mask, fg, cells, outlines):
        assert tuple(str(u) for u in layer.units[-2:]) == tuple(str(u) for u in image_layer.units[-2:])
    np.testing.assert_allclose(mask.scale[-2:], np.asarray(image_layer.scale[-2:]) * k)
    assert fg.colorbar.visible and tuple(fg.contrast_limits) == (0.0, 1.0)
    # the mask shows cell pixels where the dark nuclei are: world position of a cell centre lands on label 1
    c = cells.data[0]
    data = np.asarray(mask.data[0] if mask.multiscale else mask.data)
    idx = np.round((c - np.asarray(mask.translate)) / np.asarray(mask.scale)).astype(int)
    assert data[tuple(idx)] == 1
    assert {"area_um2", "confidence", "uncertainty"} <= set(cells.features.columns)
    assert (cells.features["area_um2"] > 4).all() and (cells.features["confidence"] > 0.5).all()
    viewer.screenshot(str(tmp_path / "cells.png"), canvas_only=True)


def test_review_keys_on_detected_cells(make_napari_viewer, tmp_path, qtbot, monkeypatch):
    from qtpy.QtCore import QSettings

    QSettings.setPath(QSettings.NativeFormat, QSettings.UserScope, str(tmp_path / "qsettings"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    from cytoreview._napari.overlays import load_existing_predictions
    from cytoreview._napari.review_widget import ReviewWidget
    from cytoreview.workflows import predict_into_project, project_folder_for

    folder = write_field_set(tmp_path / "case", n_fields=2, cells=True)
    run = predict_into_project(folder, detector(tmp_path), project_folder_for(folder), create=True, threads=1)
    assert run.complete and run.n_items > 0
    viewer = make_napari_viewer()
    image_layer = open_in(viewer, folder)
    overlays = load_existing_predictions(viewer, image_layer)[0]
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="cytoreview: review")
    widget.reviewer_edit.setText("alice")
    assert widget.open_session() is not None
    try:
        widget.level_combo.setCurrentText("cell")
        s = widget.session
        assert s.current is not None and s.current.level == "cell"
        iid = int(s.current.item_id)
        viewer.layers.selection.active = overlays["cells"]
        qtbot.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key_Return)
        assert s.project.item(iid).reviewed
        last = s.project.history(item_id=iid).iloc[-1]
        assert last["action"] == "accept" and last["reviewer"] == "alice"
        assert int(s.current.item_id) != iid  # on to the next cell
    finally:
        widget.close_session()
