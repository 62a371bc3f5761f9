"""npe2 reader contribution: slides and field sets through :func:`cytoreview.open_image`."""

from __future__ import annotations

import logging

from cytoreview.io import can_open, open_image

log = logging.getLogger(__name__)


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
    image = open_image(path if isinstance(path, (str,)) or not isinstance(path, list) or len(path) > 1 else path[0])
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
