"""Review hotkeys on the napari viewer: 1-9 classes, 0 unsure, Enter accept, Space/Right next, Left previous,
Ctrl+Z undo, Ctrl+Shift+Z redo, ``?`` / F1 the key map over the canvas.

While the keys are on, napari's status-bar hints (the active layer's ``help``: "use <2> for paint brush", ...) would
contradict them, so :class:`ReviewKeys` replaces the viewer's help text with the review keys' own line for as long
as they are bound, and gives napari its hints back when they are unbound.

napari looks a key up in the active layer's keymaps before the viewer's, and layers bind digits to their modes
(Labels "2" = paint, Points "2" = add, ...). So while the review keys are on, the same handlers are bound on the
viewer *and* on every layer instance (instance keymaps win over class keymaps), with ``overwrite=True``; whatever
they replaced is put back by :meth:`ReviewKeys.unbind`. Layers added later get the keys too.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject

#: Key -> action name.
KEYS = {
    **{str(d): f"class:{d}" for d in range(1, 10)},
    "0": "unsure",
    "Enter": "accept",
    "Space": "next",
    "Right": "next",
    "Left": "previous",
    "Control-Z": "undo",
    "Control-Shift-Z": "redo",
    "F1": "help",  # and "?": napari's keymaps cannot hold "?", so ReviewKeys filters it from the canvas's key events
}

#: What each action does, for the key map.
ACTION_HELP = {
    "unsure": "unsure (cannot tell)",
    "accept": "accept the model's class",
    "next": "next item",
    "previous": "previous item",
    "undo": "undo",
    "redo": "redo",
    "help": "show / hide this key map",
}
#: How the key map writes the keys that are not digits.
KEY_NAMES = {"Enter": "Enter", "Space": "Space", "Right": "→", "Left": "←", "Control-Z": "Ctrl+Z",
             "Control-Shift-Z": "Ctrl+Shift+Z", "F1": "F1"}
#: Keys of an action that are bound outside napari's keymaps (shown in the key map too).
EXTRA_KEYS = {"help": ["?"]}


def key_map(class_keys: dict[str, str]) -> list[tuple[str, str]]:
    """Every review key and what it does: ``[(key, meaning), ...]``, the class digits first.

    Parameters
    ----------
    class_keys : dict
        Digit -> class name (the review dock's hotkeys; ``"0"`` is unsure).
    """
    rows = [(d, class_keys[d]) for d in sorted(class_keys) if d != "0"]
    rows.append(("0", ACTION_HELP["unsure"]))
    by_action: dict[str, list[str]] = {}
    for key, action in KEYS.items():
        if not action.startswith("class:") and action != "unsure":
            by_action.setdefault(action, []).append(KEY_NAMES.get(key, key))
    for action, keys in EXTRA_KEYS.items():
        by_action[action] = keys + by_action.get(action, [])
    rows += [(" / ".join(keys), ACTION_HELP[action]) for action, keys in by_action.items()]
    return rows


def key_line(class_keys: dict[str, str]) -> str:
    """The key map on one line (the status bar while the review keys are on)."""
    return "review keys: " + " · ".join(f"{k} {v}" for k, v in key_map(class_keys))


class ReviewKeys:
    """Bind :data:`KEYS` on a viewer and its layers to ``handler(action)``.

    Parameters
    ----------
    viewer : napari.Viewer
    handler : callable
        Called with the action name (``"class:3"``, ``"accept"``, ...).
    qt_window : callable, optional
        Returns the Qt window of the viewer (the "?" key is caught on its canvas widget).
    """

    def __init__(self, viewer, handler: Callable[[str], None], qt_window: Callable | None = None):
        self.viewer = viewer
        self.handler = handler
        #: Returns the Qt window holding the viewer's canvas (for "?"), e.g. the review dock's ``window``.
        self.qt_window = qt_window
        self._saved: dict[int, tuple[object, dict]] = {}  # id(provider) -> (provider, {key: previous})
        self.bound = False
        #: The status-bar line shown instead of napari's layer hints while the keys are bound.
        self.help_text = "review keys on (? or F1: key map)"

    def _canvas(self):
        """The Qt widget of the viewer's canvas, found in ``qt_window``'s widget tree (None when there is none)."""
        window = self.qt_window() if self.qt_window is not None else None
        if window is None:
            return None
        from qtpy.QtWidgets import QWidget

        return next((w for w in window.findChildren(QWidget) if type(w).__name__ == "CanvasBackendDesktop"), None)

    def _func(self, action: str):
        def on_key(_provider):
            self.handler(action)
        on_key.__doc__ = f"cytoreview review: {action}"
        return on_key

    def _bind_provider(self, provider) -> None:
        if id(provider) in self._saved:
            return
        previous = {}
        for key, action in KEYS.items():
            previous[key] = provider.bind_key(key, self._func(action), overwrite=True)
        self._saved[id(provider)] = (provider, previous)

    def bind(self) -> None:
        """Bind the keys on the viewer and every layer (and on layers inserted later)."""
        if self.bound:
            return
        self._bind_provider(self.viewer)
        for layer in self.viewer.layers:
            self._bind_provider(layer)
        self.viewer.layers.events.inserted.connect(self._on_inserted)
        self.bound = True
        canvas = self._canvas()
        if canvas is not None:
            self._question = _QuestionMark(lambda: self.handler("help"))
            canvas.installEventFilter(self._question)
        self.viewer.events.help.connect(self._on_help)
        self._on_help()

    def set_help_text(self, text: str) -> None:
        """The status-bar line while the keys are bound (e.g. :func:`key_line` of the current classes)."""
        self.help_text = text
        if self.bound:
            self._on_help()

    def _on_help(self, event=None) -> None:
        """napari sets ``viewer.help`` from the active layer's mode hints; keep ours instead while bound."""
        if self.bound and self.viewer.help != self.help_text:
            self.viewer.help = self.help_text

    def _on_inserted(self, event) -> None:
        self._bind_provider(event.value)

    def unbind(self) -> None:
        """Remove the review keys and put back what they replaced."""
        if not self.bound:
            return
        for emitter, slot in ((self.viewer.layers.events.inserted, self._on_inserted),
                              (self.viewer.events.help, self._on_help)):
            try:
                emitter.disconnect(slot)
            except (TypeError, ValueError, RuntimeError):
                pass
        canvas, question = self._canvas(), getattr(self, "_question", None)
        if canvas is not None and question is not None:
            canvas.removeEventFilter(question)
        self._question = None
        active = self.viewer.layers.selection.active
        self.viewer.help = getattr(active, "help", "") or ""  # napari's own hints again
        for provider, previous in self._saved.values():
            for key in KEYS:
                if _has(provider, key):
                    provider.bind_key(key, None)
                if previous.get(key) is not None:
                    provider.bind_key(key, previous[key], overwrite=True)
        self._saved.clear()
        self.bound = False


def _has(provider, key: str) -> bool:
    from napari.utils.key_bindings import coerce_keybinding

    return coerce_keybinding(key) in provider.keymap



class _QuestionMark(QObject):
    """Qt event filter: a key press that types "?" calls ``on_press`` (and goes no further)."""

    def __init__(self, on_press: Callable[[], None]):
        super().__init__()
        self.on_press = on_press

    def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
        if event.type() == QEvent.KeyPress and event.text() == "?":
            self.on_press()
            return True
        return False
