"""Fallback reader for slide formats tifffile cannot read (MRXS, some NDPI, ...), through openslide.

openslide is optional (``pip install cytoreview[openslide]``); each level is exposed as an array-like that calls
``read_region`` only for the indexed window.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cytoreview.errors import ImageReadError
from cytoreview.io.image import Image
from cytoreview.io.mpp import _plausible


class OpenSlideLevel:
    """One openslide level as a lazy ``(y, x, 3)`` uint8 array-like (basic slicing only)."""

    def __init__(self, slide, level: int):
        self.slide = slide
        self.level = level
        width, height = slide.level_dimensions[level]
        self.shape = (height, width, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self.downsample = float(slide.level_downsamples[level])
        self.chunks = (1024, 1024, 3)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __array__(self, dtype=None, copy=None):
        data = self[...]
        return data if dtype is None else data.astype(dtype)

    def __getitem__(self, index):
        from cytoreview.io.safe import _normalise_index

        basic = _normalise_index(index, self.shape)
        if basic is None or any(basic[1][:2]):
            return np.asarray(self[...])[index]
        (rows, cols, channels), squeeze = basic
        height, width = rows.stop - rows.start, cols.stop - cols.start
        if height <= 0 or width <= 0:
            return np.zeros((max(height, 0), max(width, 0), 3), np.uint8)[..., channels]
        x0 = int(round(cols.start * self.downsample))
        y0 = int(round(rows.start * self.downsample))
        rgba = np.asarray(self.slide.read_region((x0, y0), self.level, (width, height)))
        rgb = _rgba_on_white(rgba)[..., channels]
        return rgb[..., 0] if squeeze[2] else rgb


def _rgba_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite openslide's premultiplied RGBA onto white (transparent = no tissue scanned)."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16) + (255 - alpha)
    return np.minimum(rgb, 255).astype(np.uint8)


def open_openslide(path: Path, mpp: float | None = None) -> Image:
    """Open ``path`` with openslide.

    Raises
    ------
    ImageReadError
        When openslide is not installed or cannot open the file.
    """
    try:
        import openslide
    except ImportError as exc:
        raise ImageReadError(
            f"{path.name}: this format needs openslide (pip install 'cytoreview[openslide]')"
        ) from exc
    try:
        slide = openslide.OpenSlide(str(path))
    except Exception as exc:  # noqa: BLE001 - OpenSlideError, OpenSlideUnsupportedFormatError, OSError
        raise ImageReadError(f"{path.name}: openslide cannot open it ({exc})") from exc
    levels = [OpenSlideLevel(slide, i) for i in range(slide.level_count)]
    warnings = []
    props = slide.properties
    found = None
    try:
        found = _plausible(float(props.get(openslide.PROPERTY_NAME_MPP_X, "nan")))
    except ValueError:
        found = None
    if mpp is not None:
        found, source = float(mpp), "given"
    elif found is not None:
        source = "openslide"
    else:
        from cytoreview.io.wsi import ASSUMED_WSI_MPP

        found, source = ASSUMED_WSI_MPP, "assumed"
        warnings.append(f"{path.name}: no pixel size in the file; assuming {ASSUMED_WSI_MPP} µm/px")
    return Image(
        path=path,
        kind="wsi",
        levels=levels,
        mpp=found,
        reader="openslide",
        mpp_source=source,
        warnings=warnings,
        metadata={"vendor": props.get(openslide.PROPERTY_NAME_VENDOR, "unknown")},
        _closers=[slide.close],
    )
