"""The napari contract of cytoreview's layers: what each one carries in ``layer.metadata["cytoreview"]``, read and
written as one dataclass, :class:`LayerMeta`, by every dock.

* An **image layer** (made by the reader, a sample or the focus view) has no role; its metadata is the image's
  description (:func:`cytoreview.io.info.describe`: ``path``, ``kind``, ``mpp``, ``levels`` ...) plus ``uid``, an id
  given when the layer is made.
* An **overlay** (:data:`ROLES`: tile classes, probability, uncertainty, cells) names the image it belongs to by
  ``image_path`` *and* ``image_uid``, never by layer name: renaming a layer changes nothing, and two layers of the
  same file (a focus view beside the planes) keep their own overlays. It also names its ``pack``,
  ``pack_version``, ``store`` and ``tile_px_level0``.
* A review session's own layers (:data:`SESSION_ROLES`) carry just their role and image.

The dict stays the storage form (napari keeps and copies metadata as a dict); :meth:`LayerMeta.of` reads it,
:meth:`LayerMeta.to_metadata` writes it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path

#: Roles of the prediction overlays (the GUI contract); the last three are a segmentation store's per-pixel class
#: mask, foreground probability and cell outlines (:mod:`cytoreview._napari.pixel_layers`).
ROLES = ("tile_classes", "probability", "uncertainty", "cells", "cell_mask", "foreground", "cell_outlines")
#: Roles of the layers a review session draws itself.
SESSION_ROLES = ("cell_edits", "current_item")
#: The key of cytoreview's entry in ``layer.metadata``.
KEY = "cytoreview"
# keys of the storage dict that LayerMeta names as attributes (the rest are kept in ``extra``)
_IMAGE_KEYS = {"path": "image_path", "uid": "image_uid"}
_OVERLAY_KEYS = {"image_path": "image_path", "image_uid": "image_uid"}
_COMMON = ("role", "kind", "mpp", "units", "pack", "pack_version", "store", "tile_px_level0")


@dataclass(frozen=True)
class LayerMeta:
    """What a cytoreview layer is, and what it belongs to.

    Attributes
    ----------
    role : str or None
        None for an image layer; one of :data:`ROLES` or :data:`SESSION_ROLES` otherwise.
    image_path : str or None
        The image file / field-set folder the layer shows (image) or belongs to (overlay).
    image_uid : str or None
        Id of the image layer (given when it is made); overlays copy it from their image.
    kind : {"wsi", "fields"} or None
    mpp : float or None
        µm per level-0 pixel of the image.
    units : tuple of str or None
        Axis units of the layer (``("pixel", "µm", "µm")`` for a field set).
    pack, pack_version, store : str or None
        The model pack and prediction store an overlay shows.
    tile_px_level0 : int or None
        Tile size of an overlay's grid in level-0 px.
    extra : dict
        Everything else in the metadata (an image's levels / fields / metadata, an overlay's classes ...).
    """

    role: str | None = None
    image_path: str | None = None
    image_uid: str | None = None
    kind: str | None = None
    mpp: float | None = None
    units: tuple | None = None
    pack: str | None = None
    pack_version: str | None = None
    store: str | None = None
    tile_px_level0: int | None = None
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ reading / writing
    @classmethod
    def of(cls, layer) -> LayerMeta | None:
        """The metadata of ``layer`` (a layer or a metadata dict), None when it is not a cytoreview layer."""
        meta = layer if isinstance(layer, dict) else getattr(layer, "metadata", None)
        info = meta.get(KEY) if isinstance(meta, dict) else None
        if not isinstance(info, dict):
            return None
        names = _IMAGE_KEYS if info.get("role") is None else _OVERLAY_KEYS
        known = {**{k: k for k in _COMMON}, **names}
        values = {attr: info[key] for key, attr in known.items() if key in info}
        if values.get("units") is not None:
            values["units"] = tuple(str(u) for u in values["units"])
        extra = {k: v for k, v in info.items() if k not in known}
        return cls(**values, extra=extra)

    def to_metadata(self) -> dict:
        """``{"cytoreview": {...}}``: the storage form to give napari as ``metadata``."""
        names = _IMAGE_KEYS if self.role is None else _OVERLAY_KEYS
        out = dict(self.extra)
        for key, attr in names.items():
            if getattr(self, attr) is not None:
                out[key] = getattr(self, attr)
        for key in _COMMON:
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if key == "units" else value
        return {KEY: out}

    # ------------------------------------------------------------------ what a layer is
    @property
    def is_image(self) -> bool:
        """An image layer opened by cytoreview (not an overlay)."""
        return self.role is None and self.image_path is not None

    @property
    def is_overlay(self) -> bool:
        """One of the prediction overlays (:data:`ROLES`)."""
        return self.role in ROLES

    def overlay(self, role: str, **attrs) -> LayerMeta:
        """The metadata of an overlay (or session layer) of this image: ``role`` plus ``attrs`` (pack, store ...,
        anything else goes to ``extra``)."""
        if not self.is_image:
            raise ValueError("overlay metadata is made from an image layer's metadata")
        if role not in ROLES + SESSION_ROLES:
            raise ValueError(f"layer role {role!r} is not one of {', '.join(ROLES + SESSION_ROLES)}")
        own = {f.name for f in fields(self)} - {"extra", "role", "image_path", "image_uid"}
        named = {k: v for k, v in attrs.items() if k in own}
        extra = {k: v for k, v in attrs.items() if k not in own}
        base = {"kind": self.kind, "mpp": self.mpp, "units": self.units, **named}
        return LayerMeta(role=role, image_path=self.image_path, image_uid=self.image_uid, extra=extra, **base)

    def belongs_to(self, image: LayerMeta) -> bool:
        """Whether this overlay / session layer belongs to the image layer ``image``: the same image id when both
        have one, else the same image path."""
        if self.role is None or not image.is_image:
            return False
        if self.image_uid is not None and image.image_uid is not None:
            return self.image_uid == image.image_uid
        return _same_path(self.image_path, image.image_path)


def new_image_uid() -> str:
    """A fresh id for an image layer."""
    return uuid.uuid4().hex


def image_meta(layer) -> LayerMeta:
    """The metadata of a cytoreview image layer; ValueError for any other layer."""
    meta = LayerMeta.of(layer)
    if meta is None or not meta.is_image:
        raise ValueError(f"layer {getattr(layer, 'name', layer)!r} is not a cytoreview image layer")
    return meta


def overlays_of(viewer, image_layer=None, pack: str | None = None, roles=ROLES) -> list:
    """Layers of ``viewer`` with one of ``roles`` that belong to ``image_layer`` (every image when None) and
    ``pack`` (every pack when None), in layer order."""
    image = None if image_layer is None else image_meta(image_layer)
    found = []
    for layer in viewer.layers:
        meta = LayerMeta.of(layer)
        if meta is None or meta.role not in roles:
            continue
        if image is not None and not meta.belongs_to(image):
            continue
        if pack is not None and meta.pack != pack:
            continue
        found.append(layer)
    return found


def _same_path(a, b) -> bool:
    if a is None or b is None:
        return False
    return Path(str(a)).expanduser().absolute() == Path(str(b)).expanduser().absolute()
