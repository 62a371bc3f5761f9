"""The "export and retrain" dock in a real viewer (Xvfb): export, retrain, run the new pack, flips table."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cytoreview._napari.train_widget import TrainWidget
from cytoreview.models import load_pack
from cytoreview.workflows import project_folder_for as default_project_folder
from tests.train.conftest import make_project, tile_slide, write_pack, write_tiff

pytestmark = pytest.mark.gui

TIMEOUT_MS = 60000


@pytest.fixture
def setup(make_napari_viewer, tmp_path):
    arr, truth = tile_slide()
    slide = write_tiff(tmp_path / "slide.tif", arr)
    packs = tmp_path / "packs"
    base = write_pack(packs / "tiny-tiles")
    project = make_project(default_project_folder(slide), [(slide, truth)], base)
    project.close()
    viewer = make_napari_viewer()
    viewer.open(str(slide), plugin="cytoreview")
    widget = TrainWidget(viewer, pack_dirs=[packs])
    viewer.window.add_dock_widget(widget, name="cytoreview: export and retrain")
    return viewer, widget, slide, base, truth


def test_export_retrain_run_and_flips(setup, qtbot, tmp_path):
    viewer, widget, slide, _base, _truth = setup
    project = default_project_folder(slide)
    assert widget.image_combo.currentText() == "slide.tif"
    assert Path(widget.project_edit.text()) == project
    assert widget.base_combo.currentText() == "tiny-tiles@1.0.0"
    assert Path(widget.pack_out_edit.text()) == project / "packs" / "tiny-tiles-1.1.0"

    # export: CSV + ImageFolder with case-grouped splits
    widget.format_checks["parquet"].setChecked(True)
    with qtbot.waitSignal(widget.exported, timeout=TIMEOUT_MS) as blocker:
        widget.export_button.click()
        assert widget.cancel_button.isEnabled()
    out = Path(blocker.args[0])
    assert out.parent == project / "exports"
    frame = pd.read_csv(out / "labels.csv")
    assert len(frame) == len(pd.read_parquet(out / "labels.parquet")) > 30
    assert set(frame["label"]) == {"red", "green", "blue"}
    assert (out / "imagefolder").is_dir()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)

    # retrain off the GUI thread
    with qtbot.waitSignal(widget.retrained, timeout=TIMEOUT_MS) as blocker:
        widget.retrain_button.click()
    new = load_pack(blocker.args[0])
    assert new.ref == "tiny-tiles@1.1.0" and new.card["provenance"]["parent"] == "tiny-tiles@1.0.0"
    assert "accuracy" in widget.status_text()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.run_new_button.isEnabled()
    # the next default output is a fresh folder
    assert Path(widget.pack_out_edit.text()) != new.path

    # run the new pack: flips table; a click centres the view on the tile
    with qtbot.waitSignal(widget.flips_ready, timeout=TIMEOUT_MS) as blocker:
        widget.run_new_button.click()
    n = blocker.args[0]
    assert n > 5 and widget.flips_table.rowCount() == n
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    flips = widget.flips
    assert set(flips["old"]) | set(flips["new"]) <= {"red", "green"}
    row = 2
    widget.flips_table.cellClicked.emit(row, 0)
    rec = flips.iloc[row]
    t = rec["y1"] - rec["y0"]
    expect = ((rec["row"] * t + t / 2 - 0.5) * 0.5, (rec["col"] * t + t / 2 - 0.5) * 0.5)
    from cytoreview._napari.train_widget import _camera

    np.testing.assert_allclose(_camera(viewer).center[-2:], expect, atol=1e-6)
    assert _camera(viewer).zoom >= 48.0 / (t * 0.5) - 1e-9  # the tile is at least 48 screen pixels wide
    assert widget.flips_table.item(row, 4).text() == rec["new"]

    # retrain again, also from the model's confident calls: a second, newer pack
    widget.confident_check.setChecked(True)
    with qtbot.waitSignal(widget.retrained, timeout=TIMEOUT_MS) as blocker:
        widget.retrain_button.click()
    again = load_pack(blocker.args[0])
    assert again.version == "1.2.0"
    assert any("unreviewed item(s)" in n for n in again.card["provenance"]["training_data"]["notes"])
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)

    if os.environ.get("CYTOREVIEW_SCREENSHOT"):
        viewer.window._qt_window.resize(1500, 950)
        qtbot.wait(200)
        viewer.screenshot(os.environ["CYTOREVIEW_SCREENSHOT"], canvas_only=False)


def test_errors_show_in_the_status_line(setup, qtbot, tmp_path):
    _viewer, widget, _slide, _base, _truth = setup
    empty = tmp_path / "not-a-project"
    widget.project_edit.setText(str(empty))
    widget._on_project_changed()
    assert widget.retrain() is None
    assert "no review project" in widget.status_text()
    # a project without reviewed items: the refit's own error comes back from the worker thread
    from cytoreview.review import Project

    Project.open(empty, create=True).close()
    assert widget.retrain() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert "error:" in widget.status_text() and "tile items" in widget.status_text()
    assert not (empty / "packs").exists() or not any((empty / "packs").iterdir())
    for f in widget.format_checks.values():
        f.setChecked(False)
    assert widget.export() is None and "format" in widget.status_text()


def test_flip_click_goes_to_the_field_of_a_field_set(make_napari_viewer, tmp_path):
    from cytoreview._napari.train_widget import _camera
    from tests.io.conftest import write_fields

    folder = tmp_path / "case"
    write_fields(folder, 4, height=120, width=192)
    viewer = make_napari_viewer()
    layer = viewer.open(str(folder), plugin="cytoreview")[0]
    widget = TrainWidget(viewer)
    assert Path(widget.project_edit.text()) == folder / ".cytoreview"
    t = 20
    flips = pd.DataFrame({"field": [1, 3], "row": [2, 4], "col": [5, 1], "y0": [2 * t, 4 * t], "x0": [5 * t, t],
                          "y1": [3 * t, 5 * t], "x1": [6 * t, 2 * t], "old": ["a", "b"], "new": ["b", "a"],
                          "new_prob": [0.9, 0.8]})  # fmt: skip
    widget.show_flips(flips)
    assert widget.flips_table.rowCount() == 2 and widget.flips_table.item(1, 0).text() == "3"
    widget.flips_table.cellClicked.emit(1, 0)
    assert viewer.dims.point[0] == 3
    mpp = layer.scale[-1]
    np.testing.assert_allclose(_camera(viewer).center[-2:], [(4 * t + t / 2 - 0.5) * mpp, (t + t / 2 - 0.5) * mpp])
