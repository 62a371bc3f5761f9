"""A cytologist's whole session, scripted the way a new user would do it, with a screenshot of each step.

Open the Warthin sample from the menu -> run warthin-tiles in the predict dock -> review 30 tiles from the uncertainty
queue with real key presses (the simulated reviewer presses the hotkey of the ground-truth class) -> export ImageFolder
+ GeoJSON -> refit -> run the new pack -> the flips queue. Screenshots go to $CYTOREVIEW_SCREENSHOTS (default: the
test's temp folder; ``CYTOREVIEW_SCREENSHOTS_PROJECT`` names the project folder the docks then show, default the test's
temp folder).
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

from cytoreview._napari.demo import open_demo
from cytoreview._napari.hub import hub
from cytoreview.models import load_pack
from cytoreview.review import Project
from cytoreview.samples import read_ground_truth, warthin_case
from cytoreview.samples.truth import tile_fractions, tile_labels

pytestmark = pytest.mark.gui

WAIT_MS = 120_000
N_REVIEWED = 30


def shot(viewer, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    viewer.screenshot(str(path), canvas_only=False)
    assert path.stat().st_size > 10_000  # a real picture of the window, not an empty file
    return path


def test_a_whole_review_session(make_napari_viewer, qtbot, tmp_path):
    shots = Path(os.environ.get("CYTOREVIEW_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    # screenshots for the README name a neutral project folder instead of pytest's temporary path
    project_dir = Path(os.environ.get("CYTOREVIEW_SCREENSHOTS_PROJECT") or tmp_path / "project")
    assert not (project_dir / "project.sqlite").exists(), f"{project_dir} holds a project already"
    viewer = make_napari_viewer()
    viewer.window._qt_window.resize(1600, 1000)

    # 1. the sample from File > Open Sample, the three docks, the case's pack chosen
    image, predict_dock, review_dock, train_dock = open_demo(viewer, "warthin", project_folder=project_dir,
                                                             reviewer="dr-e2e")
    predict_dock.threads_spin.setValue(1)
    assert predict_dock.pack().name == "warthin-tiles"
    shot(viewer, shots, "01-opened")

    # 2. run the pack: overlays appear and the review session opens itself on the project
    with qtbot.waitSignal(hub().predictions_ready, timeout=WAIT_MS):
        qtbot.mouseClick(predict_dock.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: review_dock.session is not None, timeout=WAIT_MS)
    assert "warthin-tiles classes" in viewer.layers
    assert any(layer.name.startswith("warthin-tiles uncertainty") for layer in viewer.layers)
    session = review_dock.session
    assert session.current is not None and session.current.level == "tile"
    shot(viewer, shots, "02-predicted")

    # 3. review 30 tiles from the uncertainty queue with real key presses
    canvas = viewer.window._qt_viewer.canvas.native
    tile_px = int(session.tiles.layer.metadata["cytoreview"]["tile_px_level0"])
    gt = read_ground_truth(warthin_case())
    truth_by_tile = {}
    for field in range(len(gt.field_names)):
        labels = tile_labels(tile_fractions(gt.labelmap(field), tile_px, len(gt.classes)), gt.classes)
        for (r, c), cid in np.ndenumerate(labels):
            truth_by_tile[(field, r, c)] = gt.classes[int(cid)]["name"]
    hotkey_of = {c.name: c.hotkey for c in session.project.schema.active_classes}
    uncertainties, pressed = [], []
    for _ in range(N_REVIEWED):
        item = session.current
        geometry = item.geometry
        key = hotkey_of[truth_by_tile[(int(item.field), geometry["row"], geometry["col"])]]
        uncertainties.append(item.uncertainty)
        pressed.append((int(item.item_id), key))
        qtbot.keyClick(canvas, key)
    qtbot.wait(50)
    assert uncertainties == sorted(uncertainties, reverse=True)  # the queue served the most uncertain first
    with Project.open(project_dir) as project:
        history = project.history(reviewer="dr-e2e")
        assert len(history) == N_REVIEWED
        labels = {int(row.item_id): project.item(int(row.item_id)).label for row in history.itertuples()}
        for item_id, key in pressed:  # every key press is journalled as that class, and shown in the layer
            class_id = project.schema.by_hotkey(key).id
            assert labels[item_id] == [class_id]
    shot(viewer, shots, "03-reviewed")

    # 4. export ImageFolder + GeoJSON (+ the CSV manifest) through the dock
    for name, check in train_dock.format_checks.items():
        check.setChecked(name in ("csv", "imagefolder", "geojson"))
    train_dock.split_check.setChecked(False)
    train_dock.export_edit.setText(str(tmp_path / "export"))
    with qtbot.waitSignal(train_dock.exported, timeout=WAIT_MS):
        qtbot.mouseClick(train_dock.export_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not train_dock.running, timeout=WAIT_MS)  # the dock frees its buttons when done
    export = tmp_path / "export"
    crops = [p for p in (export / "imagefolder").rglob("*.png")]
    assert len(crops) == N_REVIEWED
    from shapely.geometry import shape

    features = [f for g in (export / "geojson").glob("*.geojson") for f in json.loads(g.read_text())["features"]]
    assert len(features) == N_REVIEWED and all(shape(f["geometry"]).is_valid for f in features)

    # 5. refit from the corrections, then run the new pack and look at the flips
    train_dock.pack_out_edit.setText(str(tmp_path / "packs" / "warthin-refit"))
    qtbot.mouseClick(train_dock.retrain_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not train_dock.running, timeout=WAIT_MS)
    assert train_dock.new_pack is not None, train_dock.status_text()
    new_pack = load_pack(tmp_path / "packs" / "warthin-refit")
    assert new_pack.card["provenance"]["parent"] == "warthin-tiles@1.0.0"
    qtbot.waitUntil(lambda: train_dock.run_new_button.isEnabled(), timeout=WAIT_MS)
    with qtbot.waitSignal(train_dock.flips_ready, timeout=WAIT_MS) as flips:
        qtbot.mouseClick(train_dock.run_new_button, Qt.LeftButton)
    n_flips = flips.args[0]
    assert train_dock.flips_table.rowCount() == n_flips == len(train_dock.flips)
    if n_flips:
        train_dock.centre_on_flip(0)
    shot(viewer, shots, "04-refit-flips")
    review_dock.close_session()
