"""Key help: the review dock shows every key and class; ? / F1 toggles the key map over the canvas; napari's
status hints (which bind the same digits to layer modes) are not shown while the review keys are on."""

from __future__ import annotations

import pytest
from qtpy.QtCore import Qt

from tests._napari.test_review_support import open_case, review_case  # noqa: F401
from tests._napari.test_review_widget import canvas, dock  # noqa: F401

pytestmark = pytest.mark.gui


def test_key_map_in_the_dock_and_over_the_canvas(dock, qtbot):  # noqa: F811 - fixture import
    viewer, widget, overlays, _ = dock
    classes = [c.name for c in widget.session.project.schema.active_classes]
    legend = widget.keymap_label.text()
    assert not widget.keymap_label.isHidden()
    for key, cid in widget._hotkeys.items():  # every class with its digit, and the action keys
        name = widget.session.project.schema.get(cid).name if key != "0" else "unsure"
        assert f"<b>{key}</b> {name}" in legend
    for words in ("Enter</b> accept", "Ctrl+Z</b> undo", "Ctrl+Shift+Z</b> redo", "?", "F1"):
        assert words in legend

    text = widget._canvas_text()
    assert not text.visible
    qtbot.keyClick(canvas(viewer), Qt.Key_F1)
    assert text.visible and widget.key_help_shown()
    for name in classes:
        assert name in text.text
    assert "accept the model's class" in text.text and "Ctrl+Shift+Z" in text.text
    path = widget.session.project.folder.parent / "keyhelp.png"
    viewer.screenshot(str(path), canvas_only=True)  # renders with the overlay on
    qtbot.keyClick(canvas(viewer), Qt.Key_Question, Qt.ShiftModifier)  # "?" as a keyboard sends it
    assert not text.visible and not widget.key_help_shown()
    qtbot.keyClick(canvas(viewer), Qt.Key_F1)
    widget.close_session()
    assert not text.visible  # closing the session takes the overlay away


def test_napari_mode_hints_are_replaced_while_review_keys_are_on(dock, qtbot):  # noqa: F811
    viewer, widget, overlays, _ = dock
    labels = overlays["tile_classes"]
    viewer.layers.selection.active = labels
    labels.mode = "paint"  # napari would now say which digit picks which Labels tool
    assert viewer.help.startswith("review keys") and "paint brush" not in viewer.help
    for name in (c.name for c in widget.session.project.schema.active_classes):
        assert name in viewer.help or "key map" in viewer.help
    widget.keys_check.setChecked(False)  # keys off: napari's own hints come back
    labels.mode = "pan_zoom"
    labels.mode = "paint"
    assert not viewer.help.startswith("review keys")
