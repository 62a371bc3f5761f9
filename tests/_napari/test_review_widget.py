"""The review dock driven like a cytologist would: real key presses on the canvas, painting, points, the gallery."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from cytoreview.review import UNSURE
from tests._napari.test_review_support import (  # noqa: F401
    CELLS,
    MPP,
    TILE_PX,
    add_overlays,
    open_case,
    review_case,
)

pytestmark = pytest.mark.gui

KEY = {str(d): getattr(Qt, f"Key_{d}") for d in range(10)}


@pytest.fixture
def dock(make_napari_viewer, review_case, qtbot, tmp_path, monkeypatch):  # noqa: F811 - fixture import
    """A viewer with the case, contract overlays and an open review session for "alice"."""
    from qtpy.QtCore import QSettings

    QSettings.setPath(QSettings.NativeFormat, QSettings.UserScope, str(tmp_path / "qsettings"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    from cytoreview._napari.review_widget import ReviewWidget

    folder, store = review_case
    viewer = make_napari_viewer()
    _image_layer, overlays = open_case(viewer, folder, store)
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="cytoreview: review")
    widget.reviewer_edit.setText("alice")
    assert widget.open_session() is not None
    yield viewer, widget, overlays, folder
    widget.close_session()


def canvas(viewer):
    return viewer.window._qt_viewer.canvas.native


def press(qtbot, viewer, key, modifier=Qt.NoModifier):
    qtbot.keyClick(canvas(viewer), key, modifier)


def tile_value(session, item_id):
    f, r, c = session.tiles.pos[item_id]
    return int(session.tiles.layer.data[f, r, c])


def hotkey_for(widget, class_id):
    return next(k for k, cid in widget._hotkeys.items() if cid == class_id)


def test_default_project_folder_and_first_item(dock):
    viewer, widget, _overlays, folder = dock
    s = widget.session
    assert s.project.folder == (folder / ".cytoreview").absolute()
    assert (folder / ".cytoreview" / "project.sqlite").is_file()
    assert s.current is not None and s.current.level == "tile"
    # the first item is the most uncertain tile
    unc = s.project.items(image_id=s.image_id, level="tile")["uncertainty"].astype(float)
    assert s.current.uncertainty == pytest.approx(unc.max())
    # the marker frames it, and the view is centred on it
    y0, x0, y1, x1 = s.box_um(s.current)
    cam = viewer.scene.camera
    assert cam.center[-2:] == pytest.approx(((y0 + y1) / 2, (x0 + x1) / 2))
    assert widget.progress.maximum() == len(unc)


def test_digit_key_journals_then_updates_layer_and_advances(dock, qtbot):
    viewer, widget, _overlays, _ = dock
    s = widget.session
    item = s.current
    iid = int(item.item_id)
    new_class = (int(item.model_class) + 1) % 4
    before = tile_value(s, iid)
    press(qtbot, viewer, KEY[hotkey_for(widget, new_class)])
    hist = s.project.history(item_id=iid)
    last = hist.iloc[-1]
    assert last["action"] == "set" and last["new"] == [new_class] and last["reviewer"] == "alice"
    assert last["dwell_s"] is not None and last["dwell_s"] >= 0
    assert tile_value(s, iid) == new_class + 1 != before
    assert s.current.item_id != iid  # moved on to the next item


def test_layer_active_does_not_steal_digits(dock, qtbot):
    viewer, widget, overlays, _ = dock
    s = widget.session
    viewer.layers.selection.active = overlays["tile_classes"]  # Labels: "2" would be paint mode in napari
    mode = overlays["tile_classes"].mode
    iid = int(s.current.item_id)
    press(qtbot, viewer, KEY["2"])
    assert s.project.history(item_id=iid).iloc[-1]["new"] == [1]
    assert overlays["tile_classes"].mode == mode


def test_renaming_layers_keeps_the_review_bound(dock, qtbot):
    viewer, widget, overlays, _ = dock
    s = widget.session
    image = s.image_layer
    image.name = "case A (renamed)"
    overlays["tile_classes"].name = "my tile classes"
    assert widget.layer_combo.currentText() == "case A (renamed)"  # the dock follows the rename
    s.attach_overlays()  # what new predictions or a level change do: rebind by image path and id
    assert s.tiles is not None and s.tiles.layer is overlays["tile_classes"]
    assert s.cells is not None and s.cells.layer is overlays["cells"]
    iid = int(s.current.item_id)
    new_class = (int(s.current.model_class) + 1) % 4
    press(qtbot, viewer, KEY[hotkey_for(widget, new_class)])
    assert s.project.item(iid).label == [new_class] and tile_value(s, iid) == new_class + 1
    # reopening the review on the renamed layer binds the same overlays and shows the label
    assert widget.open_session() is not None
    s2 = widget.session
    assert s2 is not s and s2.overlays["tile_classes"] is overlays["tile_classes"]
    assert tile_value(s2, iid) == new_class + 1


def test_enter_accepts_model_class(dock, qtbot):
    viewer, widget, _, _ = dock
    s = widget.session
    iid = int(s.current.item_id)
    model = int(s.current.model_class)
    press(qtbot, viewer, Qt.Key_Return)
    last = s.project.history(item_id=iid).iloc[-1]
    assert last["action"] == "accept" and last["new"] == [model]
    assert s.project.item(iid).reviewed
    assert tile_value(s, iid) == model + 1


def test_undo_redo_restore_journal_and_layer(dock, qtbot):
    viewer, widget, _, _ = dock
    s = widget.session
    iid = int(s.current.item_id)
    model = int(s.current.model_class)
    new_class = (model + 2) % 4
    press(qtbot, viewer, KEY[hotkey_for(widget, new_class)])
    assert tile_value(s, iid) == new_class + 1
    press(qtbot, viewer, Qt.Key_Z, Qt.ControlModifier)
    assert s.project.history(item_id=iid).iloc[-1]["action"] == "undo"
    assert s.project.item(iid).label == [model]
    assert tile_value(s, iid) == model + 1
    press(qtbot, viewer, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert s.project.history(item_id=iid).iloc[-1]["action"] == "redo"
    assert s.project.item(iid).label == [new_class]
    assert tile_value(s, iid) == new_class + 1


def test_unsure_next_previous_keys(dock, qtbot):
    viewer, widget, _, _ = dock
    s = widget.session
    first = int(s.current.item_id)
    press(qtbot, viewer, KEY["0"])
    assert s.project.item(first).label == [UNSURE]
    assert tile_value(s, first) == s.classmap.value[UNSURE]
    second = int(s.current.item_id)
    press(qtbot, viewer, Qt.Key_Space)
    third = int(s.current.item_id)
    assert third not in (first, second)
    press(qtbot, viewer, Qt.Key_Left)
    assert int(s.current.item_id) == second
    press(qtbot, viewer, Qt.Key_Right)
    assert int(s.current.item_id) not in (first, second)


def test_reopen_restores_labels_and_place(dock, make_napari_viewer, qtbot):
    _viewer, widget, overlays, folder = dock
    s = widget.session
    iid = int(s.current.item_id)
    new_class = (int(s.current.model_class) + 1) % 4
    widget.on_action(f"class:{hotkey_for(widget, new_class)}")
    place = int(s.current.item_id)
    f, r, c = s.tiles.pos[iid]
    store = overlays["tile_classes"].metadata["cytoreview"]["store"]
    widget.close_session()

    from cytoreview._napari.review_widget import ReviewWidget

    viewer2 = make_napari_viewer()
    _, overlays2 = open_case(viewer2, folder, store)
    assert overlays2["tile_classes"].data[f, r, c] != new_class + 1  # fresh overlays show the model's call ...
    widget2 = ReviewWidget(viewer2)
    assert widget2.reviewer_edit.text() == "alice"  # remembered
    s2 = widget2.open_session()
    assert overlays2["tile_classes"].data[f, r, c] == new_class + 1  # ... the session restores the reviewer's label
    assert int(s2.current.item_id) == place
    widget2.close_session()


def test_blinded_mode_hides_model_layers(dock, qtbot):
    _viewer, widget, overlays, _ = dock
    s = widget.session
    overlays["uncertainty"].visible = True
    widget.on_action("accept")  # alice reads one item
    widget.blind_check.setChecked(True)
    for role in ("tile_classes", "cells", "probability", "uncertainty"):
        assert not overlays[role].visible, role
    assert s.current.model_class is None and s.current.model_labels is None
    assert "model:" not in widget.item_label.text()
    widget.blind_check.setChecked(False)
    assert overlays["tile_classes"].visible and overlays["cells"].visible


def test_blinded_second_reader_queue_is_own(dock, qtbot):
    _viewer, widget, _, _ = dock
    s = widget.session
    first = int(s.current.item_id)
    widget.on_action("accept")
    s.reviewer = "bob"
    widget.blind_check.setChecked(True)
    assert int(s.current.item_id) == first  # alice's read does not take it off bob's queue


def test_painting_a_tile_is_journalled(dock, qtbot):
    _viewer, widget, overlays, _ = dock
    s = widget.session
    layer = overlays["tile_classes"]
    f, r, c = 1, 2, 3
    iid = s.tiles.item_at(f, r, c)
    model = int(s.project.item(iid).model_class)
    new_class = (model + 1) % 4
    layer.brush_size = 1
    layer.paint((f, r, c), new_class + 1)
    qtbot.waitUntil(lambda: s.project.history(item_id=iid).iloc[-1]["action"] == "set", timeout=3000)
    last = s.project.history(item_id=iid).iloc[-1]
    assert last["action"] == "set" and last["new"] == [new_class] and last["reviewer"] == "alice"
    # erasing is refused (a tile keeps one class) and nothing is journalled
    n = len(s.project.history())
    layer.paint((f, r, c), 0)
    qtbot.waitUntil(lambda: layer.data[f, r, c] == new_class + 1, timeout=3000)
    assert len(s.project.history()) == n


def test_painting_background_tile_creates_item(dock, qtbot):
    _, widget, overlays, _ = dock
    s = widget.session
    assert s.tiles.item_at(0, 0, 0) is None  # the store's background tile
    overlays["tile_classes"].brush_size = 1
    overlays["tile_classes"].paint((0, 0, 0), 4)
    qtbot.waitUntil(lambda: s.tiles.item_at(0, 0, 0) is not None, timeout=3000)
    iid = s.tiles.item_at(0, 0, 0)
    assert iid is not None
    item = s.project.item(iid)
    assert item.label == [3] and item.geometry == {"type": "tile", "row": 0, "col": 0, "size_px": TILE_PX}


def test_adding_and_deleting_points_is_journalled(dock):
    _, widget, overlays, _ = dock
    s = widget.session
    cells = overlays["cells"]
    n_items = s.project.n_items()
    s.new_cell_class_id = 2
    cells.add([[1.0, 300 * MPP, 400 * MPP]])
    assert s.project.n_items() == n_items + 1
    new = s.project.items(level="cell").iloc[-1]
    assert new.geometry == {"type": "point", "y": pytest.approx(300.0), "x": pytest.approx(400.0)}
    assert new.label == [2] and new.reviewer == "alice" and new.source == "reviewer"
    assert cells.features["class"].iloc[-1] == "oncocytic epithelium"
    # delete the first store cell: kept in the project as "not a cell"
    victim = s.cells.item_of_row(0)
    cells.selected_data = {0}
    cells.remove_selected()
    item = s.project.item(victim)
    assert s.project.schema.get(item.label[0]).name == "not a cell"
    assert s.project.history(item_id=victim).iloc[-1]["reviewer"] == "alice"
    assert len(cells.data) == len(CELLS)  # one added, one removed
    assert victim not in s.cells.row_of


def test_keys_on_selected_cells(dock, qtbot):
    viewer, widget, overlays, _ = dock
    s = widget.session
    cells = overlays["cells"]
    viewer.layers.selection.active = cells
    cells.selected_data = {1, 2}
    ids = [s.cells.item_of_row(1), s.cells.item_of_row(2)]
    current = int(s.current.item_id)
    press(qtbot, viewer, KEY["1"])
    for iid in ids:
        assert s.project.item(iid).label == [0]
    assert list(cells.features["class"].iloc[[1, 2]]) == ["clean background"] * 2
    assert int(s.current.item_id) == current  # labelling a selection does not move the queue


def test_cell_level_review(dock, qtbot):
    viewer, widget, overlays, _ = dock
    widget.level_combo.setCurrentText("cell")
    s = widget.session
    assert s.current.level == "cell"
    iid = int(s.current.item_id)
    row = s.cells.row_of[iid]
    center, _side = s.marker.box()
    np.testing.assert_allclose(center[1:], overlays["cells"].data[row][1:], atol=1e-6)  # marker on the cell
    viewer.layers.selection.active = overlays["cells"]
    press(qtbot, viewer, KEY["3"])
    assert s.project.item(iid).label == [2]
    assert overlays["cells"].features["class"].iloc[row] == "oncocytic epithelium"
    np.testing.assert_allclose(overlays["cells"].face_color[row], [0xd0 / 255, 0x40 / 255, 0x40 / 255, 1], atol=1e-3)
    # the correction is drawn at once in the small edits layer; the big layer is redrawn once, a moment later
    edits = s.cells.edits
    assert edits is not None and np.count_nonzero(edits.size) == 1
    slot = int(np.nonzero(edits.size)[0][0])
    np.testing.assert_allclose(edits.data[slot], overlays["cells"].data[row])
    np.testing.assert_allclose(edits.face_color[slot], overlays["cells"].face_color[row], atol=1e-3)
    qtbot.waitUntil(lambda: np.count_nonzero(edits.size) == 0, timeout=3000)


def test_gallery_click_jumps_to_field(dock, qtbot):
    viewer, widget, _, _ = dock
    widget.tabs.setCurrentWidget(widget.gallery)
    widget.gallery.populate(widget.session)
    lst = widget.gallery.list
    assert lst.count() == 3
    target = lst.item(lst.count() - 1)
    field = int(target.data(Qt.UserRole))
    rect = lst.visualItemRect(target)
    qtbot.mouseClick(lst.viewport(), Qt.LeftButton, pos=rect.center())
    s = widget.session
    assert s.current.level == "field" and int(s.current.field) == field
    assert viewer.dims.point[0] == field
    # field labels: tick a box -> multi-label set journalled
    cid = 1
    box = widget.gallery.checks[cid]
    box.setChecked(not box.isChecked())
    label = s.project.item(int(s.current.item_id)).label
    assert (cid in label) == box.isChecked()


def test_field_suspicion_orders_rare_class_first(dock):
    widget = dock[1]
    s = widget.session
    rows = s.project.field_suspicion(s.image_id)
    shares = [r.rare_share for r in rows]
    assert shares == sorted(shares, reverse=True)
    assert {r.field for r in rows} == {0, 1, 2}
    widget.gallery.populate(s)  # the gallery shows the fields in that order
    lst = widget.gallery.list
    assert [int(lst.item(k).data(Qt.UserRole)) for k in range(lst.count())] == [r.field for r in rows]


def test_agreement_view_and_adjudication(dock, qtbot):
    _viewer, widget, _, _ = dock
    s = widget.session
    iid = int(s.current.item_id)
    model = int(s.current.model_class)
    s.set_class((model + 1) % 4)  # alice disagrees with the model on one item
    s.project.set_label(iid, [(model + 2) % 4], "bob")  # bob on the same item, differently
    widget.tabs.setCurrentWidget(widget.agreement)  # showing the tab re-reads the readers
    panel = widget.agreement
    assert {panel.reader_a.itemText(i) for i in range(panel.reader_a.count())} == {"model", "alice", "bob"}
    panel.reader_a.setCurrentText("alice")
    panel.reader_b.setCurrentText("bob")
    rep = panel.compute()
    assert rep.n_items == 1 and panel.confusion.rowCount() == 2
    assert "kappa" in panel.summary.text()
    panel.adjudicate_btn.click()
    assert int(s.current.item_id) == iid


def test_close_unbinds_keys(dock, qtbot):
    viewer, widget, overlays, _ = dock
    layer = overlays["tile_classes"]
    from napari.utils.key_bindings import coerce_keybinding

    assert coerce_keybinding("2") in layer.keymap
    widget.close_session()
    assert coerce_keybinding("2") not in layer.keymap
    assert coerce_keybinding("2") not in viewer.keymap


def test_moving_a_point_is_a_delete_plus_a_new_cell_of_its_class(dock):
    _, widget, overlays, _ = dock
    s = widget.session
    cells = overlays["cells"]
    old_item = s.cells.item_of_row(2)
    old_label = s.project.item(old_item).label
    data = np.array(cells.data)
    data[2, 1:] += [5 * MPP, 7 * MPP]
    cells.data = data
    assert s.project.schema.get(s.project.item(old_item).label[0]).name == "not a cell"
    new_item = s.cells.item_of_row(2)
    assert new_item not in (None, old_item)
    new = s.project.item(new_item)
    assert new.label == old_label and new.reviewer == "alice"
    assert new.geometry["y"] == pytest.approx(data[2, 1] / MPP, abs=1e-3)


def test_a_field_set_rewritten_in_place_is_named_when_its_review_reopens(dock, make_napari_viewer):
    """The project keeps the labels of the slide it was made on: when another one now lies at that path, opening
    the review must say so (a visible line in the dock) instead of painting the old labels over new pixels."""
    from PIL import Image as PILImage

    from cytoreview._napari.review_widget import ReviewWidget

    _viewer, widget, overlays, folder = dock
    assert widget.warning_label.isHidden() and widget.warning_label.text() == ""
    store = overlays["tile_classes"].metadata["cytoreview"]["store"]
    widget.close_session()
    field = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff"))[0]
    rgb = 255 - np.asarray(PILImage.open(field).convert("RGB"))
    PILImage.fromarray(rgb).save(field, format=PILImage.open(field).format)
    viewer2 = make_napari_viewer()
    open_case(viewer2, folder, store)
    widget2 = ReviewWidget(viewer2)
    viewer2.window.add_dock_widget(widget2, name="cytoreview: review")
    widget2.reviewer_edit.setText("alice")
    assert widget2.open_session() is not None
    assert not widget2.warning_label.isHidden()
    assert "other content than when it was added" in widget2.warning_label.text()
    widget2.close_session()
    assert widget2.warning_label.isHidden()
