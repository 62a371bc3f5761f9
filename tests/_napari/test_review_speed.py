"""Review speed, measured: the same 300 cells reviewed with real key presses through the cell gallery and through
slide navigation (the review dock at cell level, one cell at a time), reaching the same labels.

The scripted reviewer knows the truth: every fifth model call is wrong. In the review dock each cell is one key (Enter
accepts, a digit corrects) followed by the jump to the next cell; in the gallery the wrong cells are clicked and
given their digit, and Enter accepts the rest of the screenful and shows the next one. The figures are the
machine's time for those key presses (what the interface costs; a person's reading time comes on top of both), in
cells per minute; ``CYTOREVIEW_SPEED_JSON`` names a file to write them to.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from qtpy.QtCore import Qt

import tests._napari.test_review_support as support
from cytoreview._napari.cell_gallery import CellGalleryWidget
from cytoreview.review import Project

pytestmark = [pytest.mark.gui, pytest.mark.slow]

N_CELLS = 300
WRONG_EVERY = 5
KEY = {str(d): getattr(Qt, f"Key_{d}") for d in range(10)}


def _cells(seed: int = 0):
    rng = np.random.default_rng(seed)
    h, w = support.FIELD_HW
    out = []
    for k in range(N_CELLS):
        out.append((k % support.N_FIELDS, float(rng.uniform(20, h - 20)), float(rng.uniform(20, w - 20)),
                    int(rng.integers(0, len(support.PACK_CLASSES))), float(rng.uniform(0.3, 1.0))))
    return out


def _truth(project) -> dict[tuple, int]:
    """The scripted reviewer's answer per cell position: the model's call, except every fifth cell."""
    cells = project.items(level="cell").sort_values("item_id")
    answer = {}
    for n, row in enumerate(cells.to_dict("records")):
        key = (row["field"], row["geometry"]["y"], row["geometry"]["x"])
        answer[key] = (row["model_class"] + 1) % len(support.PACK_CLASSES) if n % WRONG_EVERY == 0 \
            else row["model_class"]
    return answer


def _key_of(cell) -> tuple:
    g = cell["geometry"] if isinstance(cell["geometry"], dict) else json.loads(cell["geometry"])
    return (cell["field"], g["y"], g["x"])


def _final_labels(project) -> dict[tuple, int]:
    cells = project.items(level="cell")
    return {(r["field"], r["geometry"]["y"], r["geometry"]["x"]): r["label"][0] for r in cells.to_dict("records")
            if r["reviewed"]}


def test_gallery_is_faster_than_slide_navigation(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from qtpy.QtCore import QSettings

    QSettings.setPath(QSettings.NativeFormat, QSettings.UserScope, str(tmp_path / "qsettings"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(support, "CELLS", _cells())
    from cytoreview._napari.review_widget import ReviewWidget

    # --- slide navigation: the review dock at cell level, one key per cell
    folder = support.write_fieldset(tmp_path / "nav" / "case_A")
    store = support.write_store(tmp_path / "nav" / "case_A__warthin-tiles@1.0.0.zarr", folder)
    viewer = make_napari_viewer(show=True)
    _image, overlays = support.open_case(viewer, folder, store)
    dock = ReviewWidget(viewer)
    viewer.window.add_dock_widget(dock, name="cytoreview: review")
    dock.reviewer_edit.setText("speed")
    assert dock.open_session() is not None
    dock.level_combo.setCurrentText("cell")
    session = dock.session
    viewer.layers.selection.active = overlays["cells"]
    truth = _truth(session.project)
    canvas = viewer.window._qt_viewer.canvas.native
    hotkey = {cid: key for key, cid in dock._hotkeys.items()}
    start = time.perf_counter()
    for _ in range(N_CELLS):
        item = session.current
        assert item is not None and item.level == "cell"
        answer = truth[(item.field, item.geometry["y"], item.geometry["x"])]
        if answer == item.model_class:
            qtbot.keyClick(canvas, Qt.Key_Return)
        else:
            qtbot.keyClick(canvas, KEY[hotkey[answer]])
        qtbot.wait(1)  # let the canvas draw the move to the next cell
    nav_s = time.perf_counter() - start
    nav_labels = _final_labels(session.project)
    dock.close_session()
    assert len(nav_labels) == N_CELLS and nav_labels == truth

    # --- the gallery on a fresh copy of the same case
    folder2 = support.write_fieldset(tmp_path / "gal" / "case_A")
    store2 = support.write_store(tmp_path / "gal" / "case_A__warthin-tiles@1.0.0.zarr", folder2)
    project = Project.open(tmp_path / "gal" / "project", create=True)
    image_id = project.add_image(folder2, kind="fields", mpp=support.MPP)
    project.import_predictions(image_id, store2)
    gallery = CellGalleryWidget(viewer, project=project, reviewer="speed")
    gallery.threshold_spin.setValue(0.0)  # one group per class (no "unidentified" holding)
    gallery.refresh()
    viewer.window.remove_dock_widget(dock)
    viewer.window.add_dock_widget(gallery, name="cell gallery", area="right")
    gallery.setMinimumWidth(700)
    gallery.setMinimumHeight(800)
    qtbot.waitExposed(gallery.view)
    truth2 = _truth(project)
    view = gallery.view
    model = gallery.model
    start = time.perf_counter()
    presses = 0
    for _page in range(100):
        if project.items(level="cell")["reviewed"].all():
            break
        visible = set(gallery.visible_item_ids())
        for row in range(model.rowCount()):
            cell = model.cell(row)
            if cell is None or cell["item_id"] not in visible or cell["reviewed"]:
                continue
            answer = truth2[_key_of(cell)]
            model_class = project.item(int(cell["item_id"])).model_class
            if answer != model_class:
                qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=view.visualRect(model.index(row)).center())
                qtbot.keyClick(view, KEY[hotkey[answer]])
                presses += 2
        qtbot.keyClick(view, Qt.Key_Return)
        presses += 1
        qtbot.wait(1)

    gallery_s = time.perf_counter() - start
    gallery_labels = _final_labels(project)
    assert len(gallery_labels) == N_CELLS and gallery_labels == truth2
    gallery.close()
    project.close()

    nav_rate, gallery_rate = 60 * N_CELLS / nav_s, 60 * N_CELLS / gallery_s
    figures = {"cells": N_CELLS, "wrong_calls": N_CELLS // WRONG_EVERY, "navigation_s": nav_s, "gallery_s": gallery_s,
               "navigation_cells_per_min": nav_rate, "gallery_cells_per_min": gallery_rate,
               "gallery_inputs": presses, "navigation_inputs": N_CELLS, "speedup": gallery_rate / nav_rate}
    print(json.dumps(figures, indent=2))
    if os.environ.get("CYTOREVIEW_SPEED_JSON"):
        with open(os.environ["CYTOREVIEW_SPEED_JSON"], "w") as fh:
            json.dump(figures, fh, indent=2)
    assert gallery_rate > nav_rate
