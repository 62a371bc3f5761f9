"""The region brush of a review session: strokes on a Labels layer become region items.

A Labels layer ("<image> region brush", over the whole image, ``px_level0`` level-0 pixels per brush pixel, a field
axis for a field set and one plane standing for every focus plane of a focus stack) is a scratch surface. When a
stroke ends, what it painted (per field and per painted value: a class's value is ``class id + 1``,
:data:`ERASE_VALUE` erases, any other value means the palette's class) goes to
:func:`cytoreview.review.brush.paint_region` (or :func:`~cytoreview.review.brush.erase_regions`), which decides how
it makes, extends or cuts region items; the surface is cleared and the outlines appear on the session's regions layer
(:class:`~cytoreview._napari.review_regions.RegionLayerSync`). One stroke is one Ctrl+Z.
"""

from __future__ import annotations

import math

import numpy as np

from cytoreview._napari.review_regions import notify
from cytoreview.errors import CytoreviewError
from cytoreview.review import brush

#: The brush layer has at most this many pixels along a side, and in all (uint8): coarser brush pixels beyond.
BRUSH_MAX_SIDE = 4096
BRUSH_MAX_PIXELS = 1 << 26
#: The brush layer's label value that erases regions instead of painting a class.
ERASE_VALUE = 255
ERASE_COLOR = "#ffffff"
#: Opacity of a stroke while it is painted.
BRUSH_OPACITY = 0.5


class RegionBrush:
    """The brush Labels layer of a :class:`~cytoreview._napari.review_regions.RegionLayerSync`.

    Parameters
    ----------
    regions : RegionLayerSync
        Its session, viewer, field/focus layout, palette class and ``reload`` are used.
    """

    def __init__(self, regions):
        self.regions = regions
        self.session, self.viewer = regions.session, regions.viewer
        self._pending = False
        self._muted = False
        self.layer = self._add_layer()
        self.set_class(regions.class_id())

    def _add_layer(self):
        from napari.utils.colormaps import DirectLabelColormap

        image = self.session.image_layer
        is_fields, n_z = self.regions.is_fields, self.regions.n_z
        shape = tuple(image.data[0].shape if image.multiscale else image.data.shape)
        if image.rgb:
            shape = shape[:-1]
        height, width = int(shape[-2]), int(shape[-1])
        n_fields = int(shape[0]) if is_fields else 1
        b = max(1, math.ceil(max(height, width) / BRUSH_MAX_SIDE),
                math.ceil(math.sqrt(n_fields * height * width / BRUSH_MAX_PIXELS)))
        self.px_level0 = b
        plane = (max(1, height // b), max(1, width // b))  # whole brush pixels only: never past the image
        lead = ((n_fields,) + ((1,) if n_z > 1 else ())) if is_fields else ()
        data = np.zeros(lead + plane, dtype=np.uint8)
        sy, sx = (float(v) for v in image.scale[-2:])
        ty, tx = (float(v) for v in image.translate[-2:])
        scale = [b * sy, b * sx]
        translate = [ty + (b / 2 - 0.5) * sy, tx + (b / 2 - 0.5) * sx]
        if is_fields:
            lead_scale = [float(image.scale[0])]
            lead_translate = [float(image.translate[0])]
            if n_z > 1:  # one plane standing for every focus plane, as the tile overlays do
                z_scale = float(image.scale[1])
                lead_scale.append(z_scale * n_z)
                lead_translate.append(float(image.translate[1]) + (n_z - 1) / 2 * z_scale)
            scale, translate = lead_scale + scale, lead_translate + translate
        colors: dict = {None: "#808080", 0: "transparent"}
        for cls in self.session.project.schema.active_classes:
            if 0 <= int(cls.id) + 1 < ERASE_VALUE:
                colors[int(cls.id) + 1] = cls.color or "#808080"
        colors[ERASE_VALUE] = ERASE_COLOR
        units = tuple(str(u) for u in image.units)[-len(scale):] if getattr(image, "units", None) else None
        layer = self.viewer.add_labels(
            data, name=f"{image.name} region brush", scale=scale, translate=translate, opacity=BRUSH_OPACITY,
            colormap=DirectLabelColormap(color_dict=colors), **({"units": units} if units else {}),
            metadata={"cytoreview": {"role": "region_brush", "image_layer": image.name, "brush_px": b}})
        layer.events.paint.connect(self._on_paint)
        return layer

    def set_class(self, class_id: int) -> None:
        """Make the brush paint ``class_id`` (its label value, ``class id + 1``), as the palette chose it."""
        value = int(class_id) + 1
        if 0 < value < ERASE_VALUE:
            self.layer.selected_label = value

    def _on_paint(self, event=None) -> None:
        """napari emits ``paint`` before a single stroke's pixels are written: read them once control is back."""
        if self._muted or self._pending:
            return
        from qtpy.QtCore import QTimer

        self._pending = True
        QTimer.singleShot(0, self.flush)

    def flush(self) -> list[int]:
        """Turn what was painted into region items, clear the layer, and show the regions; return the ids of the
        regions made, extended or cut (or erased whole)."""
        self._pending = False
        layer = self.layer
        if layer not in self.viewer.layers:
            return []
        data = np.asarray(layer.data)
        if not data.any():
            return []
        is_fields, n_z = self.regions.is_fields, self.regions.n_z
        planes = (data[:, 0] if n_z > 1 else data) if is_fields else data[None]
        made: list[int] = []
        try:
            results = brush.apply_strokes(self.session.project, self.session.image_id, planes, self.session.reviewer,
                                          erase_value=ERASE_VALUE, default_class=self.regions.class_id(),
                                          px_level0=float(self.px_level0))
            made = [result.item_id for result in results]
        except CytoreviewError as exc:
            notify(f"brush region not made: {exc}")
        finally:
            self._muted = True
            try:
                layer.data[...] = 0  # the scratch surface is cleared; the regions layer shows the result
                layer.refresh()
            finally:
                self._muted = False
        self.regions.reload()
        if made and self.regions.on_change is not None:
            self.regions.on_change(made, "region")
        return made

    def close(self) -> None:
        """Stop listening and remove the layer."""
        try:
            self.layer.events.paint.disconnect(self._on_paint)
        except (TypeError, ValueError, RuntimeError):
            pass
        if self.layer in self.viewer.layers:
            self.viewer.layers.remove(self.layer)
