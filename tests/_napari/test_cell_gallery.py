"""The cell gallery dock in a real napari viewer under Xvfb: grouped thumbnails, keys on the selection, journal and
undo, the viewer jumping to the cell, padded edge crops, a project without cells."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt

from cytoreview._napari.cell_gallery import CellGalleryWidget
from cytoreview.review import Project
from cytoreview.review.differential import NOT_CLASSED, differential
from tests.review.cell_project import make_cell_project

pytestmark = pytest.mark.gui


@pytest.fixture
def gallery(make_napari_viewer, qtbot, tmp_path):
    project = make_cell_project(tmp_path, n_cells=(60, 40))
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    widget = CellGalleryWidget(viewer, project=project, reviewer="dr-g")
    viewer.window.add_dock_widget(widget, name="cell gallery", area="right")
    widget.setMinimumWidth(620)
    qtbot.waitExposed(widget.view)
    yield viewer, widget, project
    widget.close()
    project.close()


def test_thumbnails_appear_grouped_by_class(gallery, qtbot, tmp_path):
    viewer, widget, project = gallery
    model = widget.model
    headers = [model.rows[r][1] for r in range(model.rowCount()) if model.rows[r][0] == "header"]
    names = [name for name, _ in headers]
    class_names = [c.name for c in project.schema.classes]
    # groups in schema order, "unidentified" (calls below 0.5, unreviewed) after the classes
    shown_classes = [n for n in names if n in class_names]
    assert shown_classes == [n for n in class_names if n in shown_classes]
    assert names[-1] == "unidentified"
    assert sum(count for _, count in headers) == 100
    # inside a group the most doubtful (lowest confidence) cell comes first
    first_group = model.cells[model.cells["group"] == names[0]]
    assert list(first_group["confidence"]) == sorted(first_group["confidence"])
    # thumbnails are painted: the view shows non-background pixels in the cell colours
    qtbot.wait(200)
    shot = widget.view.grab().toImage()
    assert shot.width() > 300
    out = Path(os.environ.get("CYTOREVIEW_SCREENSHOTS") or tmp_path) / "cell-gallery.png"
    viewer.screenshot(str(out), canvas_only=False)
    assert out.stat().st_size > 20_000
    assert model.page_loads and max(model.page_loads) < 5.0


def test_keys_reclassify_the_selection_with_journal_and_undo(gallery, qtbot):
    viewer, widget, project = gallery
    model = widget.model
    cell_rows = [r for r in range(model.rowCount()) if model.rows[r][0] == "cell"]
    # click one cell, shift-click a third: three cells selected
    view = widget.view
    view.scrollTo(model.index(cell_rows[0]))
    qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=view.visualRect(model.index(cell_rows[0])).center())
    qtbot.mouseClick(view.viewport(), Qt.LeftButton, Qt.ShiftModifier,
                     pos=view.visualRect(model.index(cell_rows[2])).center())
    chosen = widget.selected_item_ids()
    assert chosen == [model.item_id(r) for r in cell_rows[:3]]
    macrophage = project.schema.by_name("macrophage")
    before = len(project.history())
    qtbot.keyClick(view, macrophage.hotkey)
    assert [project.item(i).label for i in chosen] == [[macrophage.id]] * 3
    journal = project.history()
    assert len(journal) == before + 3
    assert set(journal.tail(3)["item_id"]) == set(chosen) and set(journal.tail(3)["reviewer"]) == {"dr-g"}
    # ctrl-click adds a fourth; 0 marks all four "not classed", which leaves the differential
    qtbot.mouseClick(view.viewport(), Qt.LeftButton, Qt.ControlModifier,
                     pos=view.visualRect(model.index(cell_rows[5])).center())
    four = widget.selected_item_ids()
    assert len(four) == 4
    qtbot.keyClick(view, "0")
    nc = project.schema.by_name(NOT_CLASSED).id
    assert all(project.item(i).label == [nc] for i in four)
    table = differential(project, by="project")
    assert table[table["class"] == NOT_CLASSED]["count"].iloc[0] == 4
    assert not table[table["class"] == NOT_CLASSED]["in_denominator"].iloc[0]
    assert "not classed 4" in widget.counts.text()
    # ctrl+z takes back the whole key press (4 cells), then the one before (3 cells)
    qtbot.keyClick(view, "z", Qt.ControlModifier)
    assert [project.item(i).label for i in chosen] == [[macrophage.id]] * 3
    qtbot.keyClick(view, "z", Qt.ControlModifier)
    originals = project.items(ids=chosen)
    assert all(lab == [mc] for lab, mc in zip(originals["label"], originals["model_class"]))
    assert not originals["reviewed"].any()
    assert set(project.history().tail(7)["action"]) == {"undo"}


def test_redo_re_applies_an_undone_key_press_through_the_journal(gallery, qtbot):
    _viewer, widget, project = gallery
    model, view = widget.model, widget.view
    cell_rows = [r for r in range(model.rowCount()) if model.rows[r][0] == "cell"]
    ids = [model.item_id(r) for r in cell_rows[:3]]
    widget.select_items(ids)
    atypical = project.schema.by_name("atypical")
    qtbot.keyClick(view, atypical.hotkey)
    assert [project.item(i).label for i in ids] == [[atypical.id]] * 3
    qtbot.keyClick(view, "z", Qt.ControlModifier)
    assert all(project.item(i).label != [atypical.id] for i in ids if project.item(i).model_class != atypical.id)
    assert not project.items(ids=ids)["reviewed"].any()
    qtbot.keyClick(view, "z", Qt.ControlModifier | Qt.ShiftModifier)  # Ctrl+Shift+Z: the whole key press again
    assert [project.item(i).label for i in ids] == [[atypical.id]] * 3
    journal = project.history()
    assert list(journal.tail(3)["action"]) == ["redo"] * 3 and set(journal.tail(3)["item_id"]) == set(ids)
    assert "atypical" in widget.counts.text()
    qtbot.keyClick(view, "z", Qt.ControlModifier)
    qtbot.keyClick(view, "y", Qt.ControlModifier)  # Ctrl+Y does the same
    assert [project.item(i).label for i in ids] == [[atypical.id]] * 3
    assert project.items(ids=ids)["reviewed"].all()
    # a new key press after an undo ends what could be redone (as the journal's own redo stack)
    qtbot.keyClick(view, "z", Qt.ControlModifier)
    widget.select_items(ids[:1])
    qtbot.keyClick(view, project.schema.by_name("neutrophil").hotkey)
    n = len(project.history())
    qtbot.keyClick(view, "y", Qt.ControlModifier)
    assert len(project.history()) == n and "nothing to redo" in widget.message.text()


def test_regroup_moves_reclassified_cells_to_their_class_without_reading_the_project_again(gallery, qtbot,
                                                                                         monkeypatch):
    _viewer, widget, project = gallery
    model = widget.model
    groups = model.cells.groupby("group")["item_id"].apply(list)
    source = next(g for g in groups.index if g not in ("atypical", "unidentified") and len(groups[g]) >= 3)
    ids = [int(i) for i in groups[source][:3]]
    widget.select_items(ids)
    atypical = project.schema.by_name("atypical")
    qtbot.keyClick(widget.view, atypical.hotkey)
    assert all(model.cells.loc[model.cells["item_id"] == i, "group"].iloc[0] == source for i in ids)  # kept in place
    reader = model.reader
    from cytoreview.review import differential as differential_module

    monkeypatch.setattr(differential_module, "cell_table", lambda *a, **k: pytest.fail("regroup read every cell"))
    widget.refresh_button.click()
    assert model.reader is reader  # the same reader: thumbnails already read are kept
    moved = model.cells[model.cells["item_id"].isin(ids)]
    assert set(moved["group"]) == {"atypical"}
    header = next(r for r in range(model.rowCount()) if model.rows[r] == ("header", ("atypical", len(
        model.cells[model.cells["group"] == "atypical"]))))
    assert header < min(model.row_of(i) for i in ids)
    monkeypatch.undo()
    table = differential(project, by="project", unidentified_below=0.5)
    n_atypical = int(table.loc[table["class"] == "atypical", "count"].iloc[0])
    assert f"atypical {n_atypical} (" in widget.counts.text()


def test_dragging_selects_a_block_of_cells(gallery, qtbot):
    _viewer, widget, _project = gallery
    model, view = widget.model, widget.view
    cell_rows = [r for r in range(model.rowCount()) if model.rows[r][0] == "cell"]
    a, b = (view.visualRect(model.index(cell_rows[k])).center() for k in (1, 4))
    viewport = view.viewport()
    from qtpy.QtCore import QEvent
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    qtbot.mousePress(viewport, Qt.LeftButton, pos=a)
    for pos in ((a + b) / 2, b):  # QTest moves carry no held button in Qt 5: send the drag events themselves
        QApplication.sendEvent(viewport, QMouseEvent(QEvent.MouseMove, pos, Qt.NoButton, Qt.LeftButton,
                                                     Qt.NoModifier))
    qtbot.mouseRelease(viewport, Qt.LeftButton, pos=b)
    chosen = widget.selected_item_ids()
    assert len(chosen) >= 2 and model.item_id(cell_rows[1]) in chosen and model.item_id(cell_rows[4]) in chosen


def test_enter_accepts_the_calls_in_view_but_not_corrections(gallery, qtbot):
    viewer, widget, project = gallery
    view = widget.view
    visible = widget.visible_item_ids()
    assert 10 <= len(visible) < 100
    corrected = visible[1]
    lymphocyte = project.schema.by_name("lymphocyte")
    widget.select_items([corrected])
    qtbot.keyClick(view, lymphocyte.hotkey)
    qtbot.keyClick(view, Qt.Key_Return)
    items = project.items(ids=visible)
    assert items["reviewed"].all()
    assert project.item(corrected).label == [lymphocyte.id]
    accepted = project.history().query("action == 'accept'")
    assert set(accepted["item_id"]) == set(visible) - {corrected}


def test_click_centres_the_viewer_on_the_cell(gallery, qtbot, tmp_path):
    viewer, widget, project = gallery
    image = project.image(1)
    layer = viewer.open(str(image.path), plugin="cytoreview")[0]
    model = widget.model
    rows = [r for r in range(model.rowCount()) if model.rows[r][0] == "cell" and model.cell(r)["image_id"] == 1
            and model.cell(r)["field"] == 1]
    row = rows[0]
    cell = model.cell(row)
    widget.view.scrollTo(model.index(row))
    qtbot.mouseClick(widget.view.viewport(), Qt.LeftButton, pos=widget.view.visualRect(model.index(row)).center())
    geometry = cell["geometry"] if isinstance(cell["geometry"], dict) else __import__("json").loads(cell["geometry"])
    assert viewer.dims.point[0] == pytest.approx(1)
    scene = getattr(viewer, "scene", None)
    camera = scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera
    np.testing.assert_allclose(camera.center[-2:], [geometry["y"] * image.mpp, geometry["x"] * image.mpp],
                               atol=1e-6)
    assert layer.visible


def test_edge_cells_are_padded_and_marked_not_dropped(gallery):
    _viewer, widget, project = gallery
    model = widget.model
    edge = project.items(level="cell")
    corner = int(edge.iloc[0]["item_id"])  # the fixture's first cell sits 3 px from the field's corner
    row = model.row_of(corner)
    assert row is not None
    image, padded = model.thumbnail(row)
    assert padded and image.width() == image.height()


def test_thumbnails_are_cut_once_in_the_background_and_read_back_after_reopening(gallery, make_napari_viewer, qtbot,
                                                                                 tmp_path):
    _viewer, widget, project = gallery
    reader = widget.model.reader
    assert reader.cache is not None
    qtbot.waitUntil(lambda: reader.fill_progress[0] == reader.fill_progress[1] and len(reader.cache) == 100,
                    timeout=60_000)
    first = widget.model.thumbnail(widget.model.row_of(int(widget.model.cells["item_id"].iloc[0])))[0]
    widget.close()
    import shutil

    for case in ("case-1", "case-2"):  # without its images, a reopened gallery can only show the cache
        shutil.move(tmp_path / case, tmp_path / f"{case}.away")
    again = CellGalleryWidget(make_napari_viewer(), project=project, reviewer="dr-g")
    iid = int(again.model.cells["item_id"].iloc[0])
    image, _padded = again.model.thumbnail(again.model.row_of(iid))
    assert image == first
    assert all(again.model.thumbnail(r) is not None for r in range(again.model.rowCount())
               if again.model.rows[r][0] == "cell")
    again.close()


def test_follows_the_project_the_other_docks_choose(make_napari_viewer, tmp_path):
    from cytoreview._napari.hub import hub

    viewer = make_napari_viewer()
    widget = CellGalleryWidget(viewer)
    assert widget.project is None
    project = make_cell_project(tmp_path, n_cells=(12,))
    project.close()
    hub().predictions_ready.emit("store.zarr", str(tmp_path / "project"))
    assert widget.project is not None and widget.model.rowCount() == 12 + len(set(widget.model.cells["group"]))
    widget.folder_edit.setText(str(tmp_path / "nowhere"))
    widget.open_button.click()
    assert "no cytoreview project" in widget.message.text()
    widget.close()


def test_a_project_without_cells_says_so(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    with Project.open(tmp_path / "empty", create=True) as project:
        widget = CellGalleryWidget(viewer, project=project)
        assert "no cells" in widget.message.text() and widget.model.rowCount() == 0
        widget.close()


def test_report_button_writes_the_report(gallery, tmp_path):
    _viewer, widget, _project = gallery
    pages = widget.write_report(tmp_path / "case.html")
    assert [p.name for p in pages] == ["case.html", "case-case-2.html"]
    assert "report written" in widget.message.text()
    assert widget.write_report(tmp_path / "no" / "such" / "x.html") == []
    assert "does not exist" in widget.message.text()


def test_an_undo_in_another_dock_takes_the_whole_key_press_back_and_the_gallery_undoes_what_is_next(gallery, qtbot):
    _viewer, widget, project = gallery
    model, view = widget.model, widget.view
    cell_rows = [r for r in range(model.rowCount()) if model.rows[r][0] == "cell"]
    ids = [model.item_id(r) for r in cell_rows[:4]]
    neutrophil, atypical = project.schema.by_name("neutrophil").id, project.schema.by_name("atypical").id
    project.set_label(ids[3], [neutrophil], widget.reviewer)  # an earlier change made in another dock
    before = {i: project.item(i).label for i in ids[:3]}
    widget.select_items(ids[:3])
    qtbot.keyClick(view, project.schema.by_name("atypical").hotkey)
    assert [project.item(i).label for i in ids[:3]] == [[atypical]] * 3
    project.undo(widget.reviewer)  # the other dock's Ctrl+Z: the whole key press, not one cell of it
    assert {i: project.item(i).label for i in ids[:3]} == before
    assert project.item(ids[3]).label == [neutrophil]
    qtbot.keyClick(view, "z", Qt.ControlModifier)  # the gallery's Ctrl+Z now takes back the earlier change
    assert project.item(ids[3]).label != [neutrophil] or project.item(ids[3]).model_class == neutrophil
    assert not project.item(ids[3]).reviewed
    assert {i: project.item(i).label for i in ids[:3]} == before


def test_a_moved_image_shows_placeholders_and_is_named_not_an_abort(make_napari_viewer, qtbot, tmp_path):
    import shutil

    project = make_cell_project(tmp_path, n_cells=(30, 20))
    shutil.move(tmp_path / "case-1", tmp_path / "case-1.away")  # moved before anything was cached
    viewer = make_napari_viewer(show=True)
    widget = CellGalleryWidget(viewer, project=project, reviewer="dr-g")
    viewer.window.add_dock_widget(widget, name="cell gallery", area="right")
    qtbot.waitExposed(widget.view)
    assert "image not found" in widget.message.text() and "case-1" in widget.message.text()
    rows = [r for r in range(widget.model.rowCount()) if widget.model.rows[r][0] == "cell"]
    thumbs = [widget.model.thumbnail(r) for r in rows]
    assert all(t is not None for t in thumbs)
    assert sum(padded for _image, padded in thumbs) >= 30  # case-1's cells, marked
    widget.close()
    project.close()
