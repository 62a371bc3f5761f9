"""One Qt object the cytoreview docks use to tell each other what happened, without knowing each other.

The predict dock announces a finished run (``predictions_ready``: store path, project folder); the review dock opens
or refreshes its session on it and the export and retrain dock points at that project. A project folder typed or
chosen in any dock is announced (``project_chosen``) and shown by the others, so all docks work on one project. Docks connect in their
``__init__`` and need no reference to each other, so any subset of them works.
"""

from __future__ import annotations

from qtpy.QtCore import QObject, Signal


class DockHub(QObject):
    """Signals shared by the cytoreview docks of one process."""

    #: A prediction store was written and imported: (store path, project folder).
    predictions_ready = Signal(str, str)
    #: The user chose a project folder in one dock: every dock shows it (one project for all of them).
    project_chosen = Signal(str)


_HUB: DockHub | None = None


def hub() -> DockHub:
    """The process-wide hub (created on first use, on the GUI thread)."""
    global _HUB
    if _HUB is None:
        _HUB = DockHub()
    return _HUB
