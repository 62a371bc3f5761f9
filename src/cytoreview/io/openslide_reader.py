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
from cytoreview.io.safe import TolerantLevel, check_tile_bytes

#: Tile size (px) the openslide fallback reads and caches.
OPENSLIDE_TILE_PX = 512


class OpenSlideTileSource:
    """Tiles of one openslide level (``read_region`` per tile), for :class:`~cytoreview.io.safe.TolerantLevel`.

    Going through the same tile assembler as the tifffile reader gives the fallback the same contract: any index
    decodes only the tiles it touches, decoded tiles are cached, and a tile openslide cannot decode reads blank and is
    reported once in ``Image.warnings``.
    """

    def __init__(self, slide, level: int, tile_px: int = OPENSLIDE_TILE_PX):
        self.slide = slide
        self.level = level
        width, height = slide.level_dimensions[level]
        self.shape = (int(height), int(width), 4)
        self.dtype = np.dtype(np.uint8)
        self.chunks = (tile_px, tile_px, 4)
        self.downsample = float(slide.level_downsamples[level])

    def read_tile(self, chunk_index: tuple[int, ...]) -> np.ndarray:
        """Read one tile as premultiplied RGBA (clipped to the level's edge)."""
        row, col = int(chunk_index[0]), int(chunk_index[1])
        tile_h, tile_w = self.chunks[:2]
        y, x = row * tile_h, col * tile_w
        height, width = min(tile_h, self.shape[0] - y), min(tile_w, self.shape[1] - x)
        origin = (int(round(x * self.downsample)), int(round(y * self.downsample)))
        return _unpremultiply(np.asarray(self.slide.read_region(origin, self.level, (width, height))))


def _unpremultiply(rgba: np.ndarray) -> np.ndarray:
    """openslide's premultiplied RGBA as straight RGBA, so the shared on-white compositing applies to it."""
    alpha = rgba[..., 3:4].astype(np.float32)
    if (alpha == 255).all():
        return rgba
    rgb = np.where(alpha > 0, rgba[..., :3].astype(np.float32) * 255.0 / np.maximum(alpha, 1.0), 255.0)
    out = np.empty_like(rgba)
    out[..., :3] = np.clip(np.round(rgb), 0, 255)
    out[..., 3:] = rgba[..., 3:]
    return out


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
    warnings: list[str] = []
    levels = []
    for i in range(slide.level_count):
        source = OpenSlideTileSource(slide, i)
        check_tile_bytes(source, f"{path.name} level {i}")
        levels.append(TolerantLevel(source, name=f"{path.name} level {i}", warnings=warnings))
    try:  # openslide opens some files whose pixels it cannot decode (a corrupt JPEG): refuse them now, clearly
        levels[-1].source.read_tile((0, 0, 0))
    except Exception as exc:  # noqa: BLE001 - OpenSlideError and codec errors
        slide.close()
        raise ImageReadError(f"{path.name}: openslide opens it but cannot decode its pixels ({exc})") from exc
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
