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
    assert isinstance(outlines, Shapes) and len(outlines.data) == 3  # the shown field's cells, all in view
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
    # cells are rings around their nucleus in the class colour, never discs that hide it
    assert {str(s) for s in np.asarray(cells.symbol).ravel()} == {"ring"}
    viewer.screenshot(str(tmp_path / "cells.png"), canvas_only=True)


def test_outlines_follow_the_camera_and_stay_bounded(make_napari_viewer, tmp_path, qtbot, monkeypatch):
    """Outlines are drawn for the cells in view of the shown field, at most MAX_OUTLINES_IN_VIEW of them, and
    follow zoom, pan and the field slider (debounced)."""
    from cytoreview._napari import cell_outlines
    from cytoreview._napari.cell_outlines import DEBOUNCE_MS, outlines_in_view
    from cytoreview._napari.overlays import add_prediction_layers
    from cytoreview.inference import predict

    monkeypatch.setattr(cell_outlines, "MAX_OUTLINES_IN_VIEW", 2)
    folder = write_field_set(tmp_path / "case", n_fields=2, cells=True)
    store = predict(folder, detector(tmp_path), tmp_path / "out", threads=1)
    viewer = make_napari_viewer()
    image_layer = open_in(viewer, folder)
    made = add_prediction_layers(viewer, store, image_layer)
    outlines, cells = made["cell_outlines"], made["cells"]
    control = outlines_in_view(outlines)
    assert control is not None and len(control.in_view()) == 3
    assert len(outlines.data) == 0  # zoomed out: three cells in view, more than the bound of two
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    field0 = cells.data[np.asarray(cells.data)[:, 0] == 0]
    target = field0[np.argmax(field0[:, -1])]  # the right-most cell of field 0 (x = 160 px, alone there)
    camera.center = tuple(float(v) for v in target[-2:])
    camera.zoom = camera.zoom * 6
    qtbot.wait(DEBOUNCE_MS + 200)
    assert len(outlines.data) == 1
    poly = np.asarray(outlines.data[0])
    assert poly[:, -2].min() <= target[-2] <= poly[:, -2].max() and poly[:, -1].min() <= target[-1] <= poly[:, -1].max()
    assert (poly[:, 0] == 0).all()  # on field 0
    viewer.screenshot(str(tmp_path / "outlines.png"), canvas_only=True)
    viewer.dims.set_current_step(0, 1)  # field 1 has a cell at the same place
    qtbot.wait(DEBOUNCE_MS + 200)
    assert len(outlines.data) == 1 and (np.asarray(outlines.data[0])[:, 0] == 1).all()
    camera.center = (float(target[-2]), float(target[-1]) + 1000.0)  # panned off the image
    qtbot.wait(DEBOUNCE_MS + 200)
    assert len(outlines.data) == 0
    viewer.layers.remove(outlines)
    assert outlines_in_view(outlines) is None  # its controller went with it


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


def test_predict_dock_chains_a_cell_classifier(make_napari_viewer, tmp_path, qtbot):
    from tests._napari.test_predict_widget import choose_pack, click_run_and_wait, errors_shown
    from tests.models.onnx_graphs import base_card, classifier_graph

    from cytoreview._napari.predict_widget import PredictWidget
    from cytoreview.review import Project

    packs = tmp_path / "packs"
    detector(packs)
    card = base_card("tiny-types", task="cell-classification", input={"size_px": 16, "mpp": FIELD_MPP},
                     outputs={"probabilities": {"name": "probs", "activation": "softmax"},
                              "embedding": {"name": "embedding"}})
    write_pack(packs / "tiny-types", card, classifier_graph, embedding=True)
    folder = write_field_set(tmp_path / "case", n_fields=2, cells=True)
    viewer = make_napari_viewer()
    widget = PredictWidget(viewer, pack_dirs=[packs])
    viewer.window.add_dock_widget(widget, name="cytoreview: predict")
    widget.threads_spin.setValue(1)
    open_in(viewer, folder)
    choose_pack(widget, "tiny-types@")
    assert not widget.then_combo.isEnabled()  # a classifier is no detector: nothing to chain
    choose_pack(widget, "tiny-cells@")
    assert widget.select_then("tiny-types") and widget.then_pack().name == "tiny-types"
    click_run_and_wait(widget, qtbot)
    result = widget.last_result
    assert result.error is None and result.complete and result.cell_store_path.endswith("tiny-types@1.0.0.zarr")
    names = [layer.name for layer in viewer.layers]
    assert "tiny-types cells" in names and "tiny-cells cell mask" in names, (names, errors_shown(0))
    assert not viewer.layers["tiny-cells cells"].visible  # the classifier's cells replace the detector's
    with Project.open(result.project_folder) as project:
        items = project.items(level="cell")
        classes = {c.id: c.name for c in project.schema.active_classes}
        assert len(items) == 6 and {classes[int(k)] for k in items["model_class"]} <= {"red", "green", "blue"}
        # the detector's own class never enters the schema; its tile summaries are no items
        assert {c.name: c.hotkey for c in project.schema.active_classes} == {"red": "1", "green": "2", "blue": "3"}
        assert len(project.items(level="tile")) == 0
    # a review session on another project imports the layers' stores itself: the same rule, the same schema
    from cytoreview._napari.review_session import ReviewSession

    session = ReviewSession.open(viewer, viewer.layers[0], "ann", folder=tmp_path / "fresh")
    try:
        assert {c.name: c.hotkey for c in session.project.schema.active_classes} == {
            "red": "1", "green": "2", "blue": "3"}
        assert len(session.project.items(level="tile")) == 0 and len(session.project.items(level="cell")) == 6
    finally:
        session.close()
