"""The "cytoreview: predict" dock widget driven like a user: pick, click Run, wait, look at the layers and project."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from cytoreview._napari import predict_widget
from cytoreview._napari.layer_meta import LayerMeta
from cytoreview._napari.predict_widget import PredictWidget, run_prediction
from cytoreview.inference import PredictionStore, predict
from cytoreview.models.session import PackSession
from cytoreview.review import Project
from tests._napari.test_overlays import (
    FIELD_MPP,
    open_in,
    write_field_set,
    write_slide,
    write_tiny_pack,
)

pytestmark = pytest.mark.gui

STORE_ARRAYS = ("tile_class", "tile_prob", "tile_uncertainty", "tissue", "tissue_fraction", "done")
WAIT_MS = 20_000


def make_widget(viewer, qtbot, pack_dirs=()):
    widget = PredictWidget(viewer, pack_dirs=pack_dirs)
    viewer.window.add_dock_widget(widget, name="cytoreview: predict")
    widget.threads_spin.setValue(1)
    if pack_dirs:  # the bundled packs are listed too; the tests run their tiny pack
        choose_pack(widget, "tiny@")
    return widget


def choose_pack(widget, name_version: str) -> None:
    index = next(i for i in range(widget.pack_combo.count()) if widget.pack_combo.itemText(i).startswith(name_version))
    widget.pack_combo.setCurrentIndex(index)


def click_run_and_wait(widget, qtbot) -> None:
    assert widget.run_button.isEnabled()
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    assert widget.running or widget.last_result is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)


def assert_same_store(a: PredictionStore, b: PredictionStore) -> None:
    for name in STORE_ARRAYS:
        np.testing.assert_array_equal(a.group[name][:], b.group[name][:], err_msg=name)
    assert a.complete and b.complete


def errors_shown(since: int) -> list[str]:
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records[since:] if str(n.severity) == "error"]


def n_notifications() -> int:
    from napari.utils.notifications import notification_manager

    return len(notification_manager.records)


# ---------------------------------------------------------------------------------------------------- tests
def test_run_on_a_slide_shows_overlays_fills_the_project_and_matches_the_function_api(
    make_napari_viewer, qtbot, tmp_path
):
    packs = tmp_path / "packs"
    write_tiny_pack(packs)
    slide = write_slide(tmp_path)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 4)), name="not cytoreview")
    widget = make_widget(viewer, qtbot, [packs])
    image = open_in(viewer, slide)

    # only cytoreview image layers; the pack shows name@version, task and mpp; the project defaults beside the slide
    assert [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())] == ["slide.tif"]
    assert widget.pack_combo.currentText() == "tiny@1.0.0 · tile-classification · 1 µm/px"
    assert widget.output_edit.text() == str(tmp_path / "slide.tif.cytoreview")
    assert widget.batch_spin.text() == "auto" and widget.device_combo.itemText(0) == "cpu"

    with qtbot.waitSignal(widget.predictions_ready, timeout=WAIT_MS) as ready:
        click_run_and_wait(widget, qtbot)
    project_dir = tmp_path / "slide.tif.cytoreview"
    store_path = project_dir / "predictions" / "slide__tiny@1.0.0.zarr"
    assert ready.args == [str(store_path), str(project_dir)]
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert widget.status_label.text().startswith("done:")
    assert widget.progress_bar.value() == widget.progress_bar.maximum() > 0

    names = [layer.name for layer in viewer.layers]
    assert names[:3] == ["not cytoreview", "slide.tif", "tiny classes"] and len(names) == 5
    assert names[3].startswith("tiny P(") and names[4] == "tiny uncertainty (entropy, 3 classes)"
    classes = viewer.layers["tiny classes"]
    assert classes.metadata["cytoreview"]["store"] == str(store_path)
    assert LayerMeta.of(classes).belongs_to(LayerMeta.of(image))

    # the project knows the image and holds one item per predicted tile
    store = PredictionStore(store_path)
    n_tiles = int((store.tile_class[:] >= 0).sum())
    with Project.open(project_dir) as project:
        [record] = project.images()
        assert record.path == slide and record.kind == "wsi" and record.mpp == 0.5
        table = project.label_table()
        assert len(table) == n_tiles and set(table["model"]) == {"tiny@1.0.0"}

    # one implementation: the store written via the widget equals the function API's, bit for bit
    reference = predict(slide, packs / "tiny", tmp_path / "reference", threads=1)
    assert_same_store(store, reference)

    # Run again: the complete store is reused and the overlays replaced, not duplicated
    classes.data[0, 0] = 3  # (a review edit in memory) is redrawn from the store
    with qtbot.waitSignal(widget.predictions_ready, timeout=WAIT_MS):
        click_run_and_wait(widget, qtbot)
    assert [layer.name for layer in viewer.layers] == names
    assert viewer.layers["tiny classes"] is classes
    assert classes.data[0, 0] == store.tile_class[0, 0, 0] + 1


def test_cancel_keeps_finished_rows_and_run_resumes_on_a_field_set(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    packs = tmp_path / "packs"
    write_tiny_pack(packs, mpp=2 * FIELD_MPP)
    folder = write_field_set(tmp_path / "case", n_fields=3)
    real_run = PackSession.run_prepared  # what predict calls per batch (patches already normalised)
    calls = []

    def gated_run(self, patches):  # same results; from the 4th batch on, waits until Cancel was clicked
        calls.append(len(patches))
        if len(calls) > 3:
            assert widget._cancel.wait(WAIT_MS / 1000)
        return real_run(self, patches)

    monkeypatch.setattr(PackSession, "run_prepared", gated_run)
    # one pipeline worker, so that the n-th call is the n-th batch (with two, a worker waiting for a band to decode
    # lets the other run later batches first, and the gate would hold back batch 1)
    import importlib

    predict_module = importlib.import_module("cytoreview.inference.predict")  # the module, not the function
    monkeypatch.setattr(predict_module, "pipeline_workers", lambda *args, **kwargs: 1)
    monkeypatch.setattr(predict_widget, "PROGRESSIVE_REFRESH_S", 0.0)  # redraw the overlays at every report
    viewer = make_napari_viewer()
    image = open_in(viewer, folder)
    widget = make_widget(viewer, qtbot, [packs])
    assert widget.output_edit.text() == str(folder / ".cytoreview")
    widget.batch_spin.setValue(2)

    shown_while_running = []

    def cancel_after_some(value):
        done, _ = value
        shown_while_running.append("tiny classes" in viewer.layers)
        if done >= 6:
            qtbot.mouseClick(widget.cancel_button, Qt.LeftButton)

    worker_started = []
    original_run = widget.run

    def run_and_hook():
        worker = original_run()
        worker.yielded.connect(cancel_after_some)
        worker_started.append(worker)
        return worker

    widget.run_button.clicked.disconnect()
    widget.run_button.clicked.connect(run_and_hook)
    click_run_and_wait(widget, qtbot)
    result = widget.last_result
    assert result.error is None and not result.complete
    assert result.done_tiles == 8 < result.total_tiles  # the batch running when Cancel came still counts
    assert "cancelled" in widget.status_label.text() and "Run resumes" in widget.status_label.text()
    assert any(shown_while_running)  # overlays appeared before the run ended
    store = PredictionStore(result.store_path)
    done_rows = store.done[:]
    assert 0 < done_rows.sum() < done_rows.size and not store.complete
    partial = viewer.layers["tiny classes"].data
    assert partial.shape == (3, 4, 6)
    predicted_rows = (partial > 0).any(axis=2)
    assert predicted_rows[done_rows].all() and not predicted_rows[~done_rows].any()  # finished rows shown
    assert not (folder / ".cytoreview" / "project.sqlite").exists()  # an unfinished store is not imported

    # Run again (plain button now): resumes and completes; the store equals an uninterrupted function-API run
    widget.run_button.clicked.disconnect()
    widget.run_button.clicked.connect(widget.run)
    monkeypatch.setattr(PackSession, "run_prepared", real_run)
    with qtbot.waitSignal(widget.predictions_ready, timeout=WAIT_MS):
        click_run_and_wait(widget, qtbot)
    assert widget.last_result.complete
    assert widget.last_result.done_tiles == widget.last_result.total_tiles
    reference = predict(folder, packs / "tiny", tmp_path / "reference", threads=1, batch_size=2)
    assert_same_store(PredictionStore(widget.last_result.store_path), reference)
    assert viewer.layers[2].name.startswith("tiny P(")  # the heatmap names its class
    assert [layer.name for layer in viewer.layers] == [
        image.name,
        "tiny classes",
        viewer.layers[2].name,
        "tiny uncertainty (entropy, 3 classes)",
    ]
    with Project.open(folder / ".cytoreview") as project:
        assert project.images()[0].kind == "fields" and project.n_items() > 0


def test_bad_pack_and_resolution_mismatch_show_errors_and_the_gui_stays_usable(make_napari_viewer, qtbot, tmp_path):
    packs = tmp_path / "packs"
    write_tiny_pack(packs)
    write_tiny_pack(packs, name="too-fine", mpp=0.1)  # needs 0.1 um/px on a 0.5 um/px slide
    broken = write_tiny_pack(packs, name="broken")
    (broken / "model.onnx").write_bytes(b"this is not an onnx model")
    slide = write_slide(tmp_path)
    viewer = make_napari_viewer()
    open_in(viewer, slide)
    widget = make_widget(viewer, qtbot, [packs])

    before = n_notifications()
    choose_pack(widget, "broken@1.0.0")
    click_run_and_wait(widget, qtbot)
    assert widget.last_result.error and "model.onnx" in widget.last_result.error
    assert widget.status_label.text().startswith("error:") and "model.onnx" in widget.status_label.text()
    assert any("model.onnx" in message for message in errors_shown(before))
    assert widget.run_button.isEnabled() and widget.pack_combo.isEnabled()
    assert not (tmp_path / "slide.tif.cytoreview").exists()  # a run that could not start leaves nothing behind

    before = n_notifications()
    choose_pack(widget, "too-fine@1.0.0")
    click_run_and_wait(widget, qtbot)
    assert "0.1" in widget.last_result.error and "0.5" in widget.last_result.error
    assert errors_shown(before)

    # Browse… to a folder that is no pack: an error naming it, nothing added
    before = n_notifications()
    not_a_pack = tmp_path / "empty"
    not_a_pack.mkdir()
    assert widget.add_pack_folder(not_a_pack) is None
    assert str(not_a_pack) in widget.status_label.text() and errors_shown(before)

    # still usable: the good pack runs
    choose_pack(widget, "tiny@1.0.0")
    with qtbot.waitSignal(widget.predictions_ready, timeout=WAIT_MS):
        click_run_and_wait(widget, qtbot)
    assert "tiny classes" in viewer.layers and not any(
        layer.name.startswith(("broken", "too-fine")) for layer in viewer.layers
    )


def test_browse_adds_a_pack_and_reopening_an_image_shows_its_stored_predictions(make_napari_viewer, qtbot, tmp_path):
    slide = write_slide(tmp_path)
    pack = write_tiny_pack(tmp_path / "elsewhere")
    viewer = make_napari_viewer()
    # the npe2 widget contribution: Plugins > cytoreview: predict
    _, widget = viewer.window.add_plugin_dock_widget("cytoreview", "cytoreview: predict")
    assert isinstance(widget, PredictWidget)
    widget.threads_spin.setValue(1)
    bundled = widget.pack_combo.count()
    assert widget.add_pack_folder(pack).ref == "tiny@1.0.0"
    assert widget.pack().ref == "tiny@1.0.0" and "added model pack" in widget.status_label.text()
    # a folder of packs works too, and a pack found twice is listed once
    assert widget.add_pack_folder(tmp_path / "elsewhere").ref == "tiny@1.0.0"
    assert widget.pack_combo.count() == bundled + 1

    image = open_in(viewer, slide)
    with qtbot.waitSignal(widget.predictions_ready, timeout=WAIT_MS):
        click_run_and_wait(widget, qtbot)
    viewer.layers.clear()
    assert widget.image_combo.count() == 0

    # the image opened again: its stored predictions come back (lazily) without running anything
    image = open_in(viewer, slide)
    qtbot.waitUntil(lambda: "tiny classes" in viewer.layers, timeout=WAIT_MS)
    assert widget.image_combo.currentText() == image.name
    assert type(next(la for la in viewer.layers if la.name.startswith("tiny P(")).data).__module__.startswith("dask")
    assert "showing stored predictions" in widget.status_label.text()


def test_run_prediction_reports_an_unreadable_image_as_text(tmp_path):
    pack = write_tiny_pack(tmp_path / "packs")
    result = run_prediction(str(tmp_path / "gone.tif"), pack, tmp_path / "proj", mpp=0.5, threads=1)
    assert result.error and "gone.tif" in result.error and result.store_path is None
