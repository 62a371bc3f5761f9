"""Review hotkeys on the napari viewer: 1-9 classes, 0 unsure, Enter accept, Space/Right next, Left previous,
Ctrl+Z undo, Ctrl+Shift+Z redo.

napari looks a key up in the active layer's keymaps before the viewer's, and layers bind digits to their modes
(Labels "2" = paint, Points "2" = add, ...). So while the review keys are on, the same handlers are bound on the
viewer *and* on every layer instance (instance keymaps win over class keymaps), with ``overwrite=True``; whatever
they replaced is put back by :meth:`ReviewKeys.unbind`. Layers added later get the keys too.
"""

from __future__ import annotations

from collections.abc import Callable

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
}


class ReviewKeys:
    """Bind :data:`KEYS` on a viewer and its layers to ``handler(action)``.

    Parameters
    ----------
    viewer : napari.Viewer
    handler : callable
        Called with the action name (``"class:3"``, ``"accept"``, ...).
    """

    def __init__(self, viewer, handler: Callable[[str], None]):
        self.viewer = viewer
        self.handler = handler
        self._saved: dict[int, tuple[object, dict]] = {}  # id(provider) -> (provider, {key: previous})
        self.bound = False

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

    def _on_inserted(self, event) -> None:
        self._bind_provider(event.value)

    def unbind(self) -> None:
        """Remove the review keys and put back what they replaced."""
        if not self.bound:
            return
        try:
            self.viewer.layers.events.inserted.disconnect(self._on_inserted)
        except (TypeError, ValueError, RuntimeError):
            pass
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
