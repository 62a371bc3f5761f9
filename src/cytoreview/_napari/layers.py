"""Turn an :class:`~cytoreview.io.Image` into napari layer data, in micrometres."""

from __future__ import annotations

import weakref

from cytoreview._napari.layer_meta import new_image_uid
from cytoreview.io.image import Image
from cytoreview.io.info import describe

#: Upper bound for napari's dask chunk cache (bytes); napari's default is 25% of RAM.
DASK_CACHE_BYTES = 512 * 1024**2


def image_layer_data(image: Image, name: str | None = None) -> tuple:
    """Return ``(data, kwargs, "image")`` for napari: multiscale when there are levels, scale in µm.

    The metadata is the image's description plus a fresh image id (see :mod:`cytoreview._napari.layer_meta`).

    Field sets get one slider per leading axis (field, and focus plane when present).
    """
    n_lead = len(image.shape) - 3
    lead_labels = ("field", "z")[:n_lead] if image.kind == "fields" else ()
    scale = (1.0,) * n_lead + (image.mpp, image.mpp)
    data = image.levels if len(image.levels) > 1 else image.levels[0]
    units = ("pixel",) * n_lead + ("µm", "µm")
    kwargs = {
        "name": name or image.path.name,
        "rgb": True,
        "multiscale": len(image.levels) > 1,
        "scale": scale,
        "units": units,
        "axis_labels": (*lead_labels, "y", "x"),
        "contrast_limits": (0, 255),
        "metadata": {"cytoreview": {**describe(image), "uid": new_image_uid(), "units": list(units)}},
    }
    return data, kwargs, "image"


#: Viewers whose new cytoreview layers turn the scale bar on (weak: a closed viewer drops out).
_WATCHED: "weakref.WeakSet" = weakref.WeakSet()


def scale_bar(viewer):
    """napari's scale bar overlay model (``viewer.canvas.overlays.scale_bar`` since napari 0.9)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    bar = getattr(overlays, "scale_bar", None)
    return bar if bar is not None else viewer.scale_bar


def show_scale_bar(viewer) -> None:
    """Turn on napari's scale bar (its unit comes from the layers: µm for a cytoreview image) and keep it on for
    every cytoreview case added later to ``viewer`` (idempotent)."""
    bar = scale_bar(viewer)
    bar.visible = True
    bar.ticks = True
    bar.box = True  # readable over white glass as over the black canvas
    if viewer in _WATCHED:
        return

    def on_inserted(event) -> None:
        info = getattr(event.value, "metadata", {}).get("cytoreview")
        if isinstance(info, dict) and "path" in info and "role" not in info:
            scale_bar(viewer).visible = True

    viewer.layers.events.inserted.connect(on_inserted)
    _WATCHED.add(viewer)


def show_scale_bar_in_current_viewer() -> None:
    """:func:`show_scale_bar` on napari's current viewer, if there is one (readers get no viewer)."""
    try:
        from napari import current_viewer

        viewer = current_viewer()
    except Exception:  # noqa: BLE001 - no napari / no Qt: nothing to show
        return
    if viewer is not None:
        show_scale_bar(viewer)


def focus_layer_data(image: Image, focus="edf", name: str | None = None) -> tuple:
    """Layer data of a focus stack collapsed by :func:`cytoreview.io.focus.focus_image` (``"edf"``, ``"best"``, K).

    The layer keeps the stack's axes ``(field, z, y, x)``: every z shows the same collapsed plane, so it sits on the
    stack's sliders (and overlays placed over the stack fit it too). ``metadata["cytoreview"]["focus"]`` names the
    choice, so the docks predict on what is shown.
    """
    import dask.array as da

    from cytoreview.io.focus import focus_image

    collapsed = focus_image(image, focus)
    data, kwargs, kind = image_layer_data(image, name=name or f"{image.path.name} [{_FOCUS_NAMES.get(focus, focus)}]")
    n_fields, n_z = image.n_fields, image.n_z
    stacked = [da.broadcast_to(level[:, None], (n_fields, n_z, *level.shape[1:])) for level in collapsed.levels]
    kwargs["metadata"]["cytoreview"] = {**kwargs["metadata"]["cytoreview"], "focus": str(focus)}
    return (stacked if len(stacked) > 1 else stacked[0]), kwargs, kind


#: Layer-name suffixes of the focus choices.
_FOCUS_NAMES = {"edf": "all-in-focus", "best": "sharpest plane"}


def bound_dask_cache() -> None:
    """Keep napari's dask cache small whatever the slide size."""
    from napari.utils import resize_dask_cache

    resize_dask_cache(DASK_CACHE_BYTES)


def refill_combo(combo, names: list[str]) -> bool:
    """Replace a combo box's items with ``names``, keeping the current choice when it is still listed (else the
    newest, the last name), with its signals blocked meanwhile; return whether the choice changed."""
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentIndex(names.index(current))
    elif names:
        combo.setCurrentIndex(len(names) - 1)
    combo.blockSignals(False)
    return combo.currentText() != current
