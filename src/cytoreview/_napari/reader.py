"""npe2 reader contribution: slides and field sets through :func:`cytoreview.open_image`.

Why ``napari case_folder/`` asks which reader to use: npe2 matches readers on the path alone (``filename_patterns``,
and ``accepts_directories`` for any folder) without asking them, and napari's builtin reader claims every folder and
``*.tif``, ``*.svs``, ``*.jpg`` ... too, so two readers match and, with no saved preference, napari shows its dialog.
A plugin cannot outrank the builtin one; napari's only lever is its ``plugins.extension2reader`` setting, and the
dialog's "remember" saves a pattern for the whole file type (every ``*.tif``). So cytoreview keeps that setting to the
paths it opens: each slide or field set it reads is remembered under its own exact path
(:func:`remember_reader`), never a file type, so napari opens that path with cytoreview from then on, and every
other file and folder is left as the user's settings say. ``cytoreview open PATH...`` opens paths with cytoreview
without any dialog, the first time too.
"""

from __future__ import annotations

import logging
import os
import re

from cytoreview.io import can_open, open_image

log = logging.getLogger(__name__)

#: The plugin name napari's reader preferences use.
PLUGIN = "cytoreview"
#: Most exact-path preferences :func:`remember_reader` keeps in napari's settings (the oldest go first): napari
#: loads them at every start and matches each against every path it opens.
MAX_REMEMBERED_PATHS = 200


def get_reader(path):
    """Return a reader function for ``path``, or None when cytoreview does not take it (never raises)."""
    try:
        return read_layers if can_open(path) else None
    except Exception:  # noqa: BLE001 - a reader hook must not raise for paths it does not take
        return None


def read_layers(path) -> list[tuple]:
    """Open ``path`` and return its image layer; problems that did not stop it are shown as warnings.

    A field set with focus planes gets a second layer on top: its all-in-focus plane (extended depth of field,
    computed per field when first shown); hiding it shows the planes, with the z slider.
    """
    from cytoreview._napari.layers import (
        bound_dask_cache,
        focus_layer_data,
        image_layer_data,
        show_scale_bar_in_current_viewer,
    )

    bound_dask_cache()
    show_scale_bar_in_current_viewer()
    single = path if isinstance(path, (str,)) or not isinstance(path, list) or len(path) > 1 else path[0]
    image = open_image(single)
    if not isinstance(single, list):
        remember_reader(single)
    for warning in image.warnings:
        log.warning(warning)
        _notify(warning)
    layers = [image_layer_data(image)]
    if image.n_z > 1:
        layers.append(focus_layer_data(image, "edf"))
    return layers


def _notify(message: str) -> None:
    try:
        from napari.utils.notifications import show_warning

        show_warning(message)
    except Exception:  # noqa: BLE001 - notifications are best effort outside a viewer
        pass


def reader_pattern(path) -> str:
    """The napari reader-preference pattern that matches exactly ``path`` and nothing else: its real absolute path
    (a folder with a trailing separator, as napari matches folders), fnmatch's special characters escaped."""
    real = os.path.realpath(os.fspath(path))
    if os.path.isdir(real) and not real.endswith(os.sep):
        real += os.sep
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in real)


def remember_reader(path) -> str | None:
    """Have napari open ``path`` (that exact slide or folder) with cytoreview from now on, without its dialog.

    Adds one entry to napari's ``plugins.extension2reader`` setting, keyed by :func:`reader_pattern`; a preference
    the user already saved for that exact path (for any plugin) is kept, and no file type or folder pattern is ever
    written. The setting stays bounded: cytoreview's exact-path entries whose path is gone are dropped, and past
    :data:`MAX_REMEMBERED_PATHS` the oldest (such a path asks again, once, the next time napari opens it).
    Returns the pattern added, or None when nothing was added (or napari's settings cannot be written).
    """
    try:
        from napari.settings import get_settings

        plugins = get_settings().plugins
        pattern = reader_pattern(path)
        current = dict(plugins.extension2reader)
        if pattern in current:
            return None
        ours = {key: _remembered_path(key, reader) for key, reader in current.items()}  # in the order added
        live = [key for key, where in ours.items() if where is not None and os.path.exists(where)]
        gone = [key for key, where in ours.items() if where is not None and key not in live]
        for key in gone + live[:max(0, len(live) - MAX_REMEMBERED_PATHS + 1)]:
            del current[key]
        current[pattern] = PLUGIN
        plugins.extension2reader = current  # a new dict: napari saves the setting
    except Exception as exc:  # noqa: BLE001 - remembering is a convenience; opening the image never fails for it
        log.debug("reader preference for %s not saved: %s", path, exc)
        return None
    log.info("napari will open %s with cytoreview (reader preference for this path only)", path)
    return pattern


def _remembered_path(pattern: str, reader: str) -> str | None:
    """The path of a preference :func:`remember_reader` writes (cytoreview's, one exact absolute path), else None."""
    if reader != PLUGIN or not pattern.startswith(os.sep):
        return None
    plain = re.sub(r"\[([*?\[])\]", r"\1", pattern)  # undo reader_pattern's escapes
    exact = "".join(f"[{ch}]" if ch in "*?[" else ch for ch in plain) == pattern
    return plain if exact else None
