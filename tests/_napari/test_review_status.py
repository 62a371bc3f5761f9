"""The review dock's status lines after key presses and undo: current, adding up, and matching review-status."""

from __future__ import annotations

import re

import pytest
from qtpy.QtCore import Qt

from cytoreview.review import UNSURE
from tests._napari.test_review_support import open_case, review_case  # noqa: F401
from tests._napari.test_review_widget import KEY, dock, hotkey_for, press  # noqa: F401

pytestmark = pytest.mark.gui


def _lines(widget) -> tuple[str, str]:
    widget.refresh_stats()  # what the debounce timer does after each change
    image_line, session_line = widget.stats.summary.text().split("\n")
    return image_line, session_line


def _numbers(line: str) -> list[int]:
    m = re.search(r"(\d+) (?:reviewed|items) = (\d+) accepted \+ (\d+) corrected \+ (\d+) unsure", line)
    assert m, line
    return [int(v) for v in m.groups()]


def test_status_lines_add_up_and_follow_undo(dock, qtbot):  # noqa: F811 - fixture import
    viewer, widget, _overlays, _ = dock
    s = widget.session
    image_line, session_line = _lines(widget)
    assert "nothing reviewed on this image yet" in image_line and _numbers(session_line) == [0, 0, 0, 0]

    other = next(c.id for c in s.project.schema.active_classes if c.id != s.current.model_class)
    press(qtbot, viewer, KEY[hotkey_for(widget, other)])  # a correction
    press(qtbot, viewer, Qt.Key_Return)  # accept the next one
    press(qtbot, viewer, KEY["0"])  # unsure
    image_line, session_line = _lines(widget)
    assert _numbers(session_line) == [3, 1, 1, 1] and _numbers(image_line) == [3, 1, 1, 1]
    mine = s.project.progress().per_reviewer.set_index("reviewer").loc["alice"]
    assert [int(mine[k]) for k in ("reviewed", "accepted", "corrected", "unsure")] == [3, 1, 1, 1]

    press(qtbot, viewer, Qt.Key_Z, Qt.ControlModifier)  # undo the unsure
    press(qtbot, viewer, Qt.Key_Z, Qt.ControlModifier)  # and the accept
    image_line, session_line = _lines(widget)
    assert _numbers(session_line) == [1, 0, 1, 0] and _numbers(image_line) == [1, 0, 1, 0]
    press(qtbot, viewer, Qt.Key_Z, Qt.ControlModifier)  # and the correction: the session changed nothing
    image_line, session_line = _lines(widget)
    assert _numbers(session_line) == [0, 0, 0, 0] and "nothing reviewed" in image_line
    press(qtbot, viewer, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)  # redo: the correction counts again
    assert _numbers(_lines(widget)[1]) == [1, 0, 1, 0]
    assert UNSURE not in (s.project.item(s._undo_items[-1]).label or [])
