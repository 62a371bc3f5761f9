"""Whole-slide images through tifffile + zarr: pyramidal TIFF, SVS, OME-TIFF (SubIFD and IFD-chain pyramids).

Levels are handed out as zarr arrays over tifffile's store (no dask graph per 256² tile, see DESIGN §4), wrapped so a
corrupt tile reads as blank instead of breaking the view. A single-level large TIFF gets lazily computed lower levels
(dask, 2048² chunks) and a note that it will be slow to browse.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from cytoreview.errors import ImageReadError
from cytoreview.io.image import Image
from cytoreview.io.mpp import tiff_mpp
from cytoreview.io.safe import TiffTileSource, TolerantLevel, ZarrTileSource, check_tile_bytes

#: Assumed pixel size (40x scanner) when a slide declares none; always reported in Image.warnings.
ASSUMED_WSI_MPP = 0.25
#: A single-level image larger than this (pixels on the long side) gets lazily computed lower levels.
LAZY_PYRAMID_MIN_PX = 4096


def open_tiff_slide(path: Path, mpp: float | None = None) -> Image:
    """Open a TIFF-family slide with tifffile.

    Parameters
    ----------
    path : Path
        The slide file.
    mpp : float, optional
        Override the pixel size of level 0 (µm/px).

    Raises
    ------
    ImageReadError
        When the file is not a readable TIFF, holds no RGB image, or its tiles cannot be decoded.
    """
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types for a bad file
        raise ImageReadError(f"{path.name}: not a readable TIFF ({exc})") from exc
    try:
        series = _main_series(tif, path)
        tif.filehandle.set_lock(True)  # one lock for our tile reads and tifffile's own (zarr store, lazy tags)
        lock = tif.filehandle.lock
        warnings: list[str] = []
        levels = [_level_array(tif, series, i, path, lock, warnings) for i in range(len(series.levels))]
        levels = _drop_unusable_levels(levels)
        warnings.extend(_truncation_warnings(tif, series, path))
        _check_codecs(series, path)
        _check_decodable(levels[-1], path, tif)
        if len(levels) == 1 and max(levels[0].shape[:2]) > LAZY_PYRAMID_MIN_PX:
            levels = _lazy_pyramid(levels[0])
            warnings.append(
                f"{path.name}: single-level TIFF; lower levels are computed on the fly, so browsing is slow. "
                "Convert it to a tiled pyramid for speed."
            )
        found_mpp, mpp_source = tiff_mpp(tif)
        if mpp is not None:
            found_mpp, mpp_source = float(mpp), "given"
        elif found_mpp is None:
            found_mpp, mpp_source = ASSUMED_WSI_MPP, "assumed"
            warnings.append(
                f"{path.name}: no pixel size in the file; assuming {ASSUMED_WSI_MPP} µm/px (pass mpp= to override)"
            )
    except ImageReadError:
        tif.close()
        raise
    except Exception as exc:  # noqa: BLE001
        tif.close()
        raise ImageReadError(f"{path.name}: cannot read the image in this TIFF ({exc})") from exc
    metadata = {"vendor": "aperio" if tif.is_svs else ("ome" if tif.is_ome else "tiff")}
    page = tif.pages.first
    metadata["compression"] = getattr(page.compression, "name", str(page.compression))
    metadata["tile_px"] = list(page.tilelength and (page.tilelength, page.tilewidth) or ())
    return Image(
        path=path,
        kind="wsi",
        levels=levels,
        mpp=found_mpp,
        reader="tifffile",
        mpp_source=mpp_source,
        warnings=warnings,
        metadata=metadata,
        _closers=[tif.close],
    )


def _main_series(tif: tifffile.TiffFile, path: Path) -> tifffile.TiffPageSeries:
    """The slide's main image series (SVS: the baseline, not label/macro), with its pyramid levels."""
    candidates = [s for s in tif.series if s.name not in ("Label", "Macro", "Thumbnail")]
    if not candidates:
        raise ImageReadError(f"{path.name}: TIFF holds no image series")
    series = max(candidates, key=lambda s: int(np.prod(s.levels[0].shape)))
    axes = series.axes
    if axes == "YX":
        raise ImageReadError(f"{path.name}: greyscale slides are not supported (expected RGB)")
    if axes != "YXS" or series.dtype != np.uint8 or series.shape[-1] not in (3, 4):
        raise ImageReadError(
            f"{path.name}: unsupported image layout {axes} {series.dtype} (expected 8-bit RGB, axes YXS)"
        )
    if len(series.levels) == 1 and series.kind in ("generic", "shaped"):
        _adopt_series_pyramid(tif, series)
    return series


def _adopt_series_pyramid(tif: tifffile.TiffFile, base: tifffile.TiffPageSeries) -> None:
    """Treat further series that are downsampled copies of ``base`` (same aspect ratio) as its pyramid levels."""
    height, width = base.shape[:2]
    for other in tif.series:
        if other is base or other.dtype != base.dtype or other.axes != base.axes:
            continue
        h, w = other.shape[:2]
        if h < base.levels[-1].shape[0] and abs(h / w - height / width) < 0.01:
            base.levels.append(other)


def _level_array(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries, level: int, path: Path, lock,
                 warnings: list):
    """One level: tiles decoded straight from the file when the layout allows, else through tifffile's zarr store."""
    level_series = series.levels[level]
    pages = level_series.pages
    if len(pages) == 1 and pages[0] is not None and TiffTileSource.supports(pages[0]):
        source = TiffTileSource(pages[0], tif.filehandle, lock)
    else:
        import zarr  # only for layouts tifffile cannot hand out tile by tile (keeps `cytoreview info` quick)

        source = ZarrTileSource(zarr.open(series.aszarr(level=level), mode="r"))
    check_tile_bytes(source, f"{path.name} level {level}")
    return TolerantLevel(source, name=f"{path.name} level {level}", warnings=warnings)


def _truncation_warnings(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries, path: Path) -> list[str]:
    """Say at open what a cut-short file lost: tiles stored past its end, and pages (levels) its IFD chain lost.

    Read from the IFD entries only (no pixel decoding): a level's tile byte ranges past the end of the file, and a
    next-IFD pointer of the last readable page that points past the end (every page after it, lower pyramid levels
    included, is gone).
    """
    import struct

    size = tif.filehandle.size
    found = []
    for k, level in enumerate(series.levels):
        page = level.pages[0] if level.pages else None
        if page is None:
            continue
        ends = np.asarray(page.dataoffsets, np.int64) + np.asarray(page.databytecounts, np.int64)
        lost = int(np.count_nonzero(ends > size))
        if lost:
            found.append(f"{path.name}: file is cut short; {lost} of {len(ends)} tiles of level {k} lie past its end "
                         "and show blank")
    try:
        last = tif.pages[len(tif.pages) - 1]
        fmt = tif.tiff
        with tif.filehandle.lock:
            tif.filehandle.seek(last.offset)
            n_tags = struct.unpack(fmt.tagnoformat, tif.filehandle.read(fmt.tagnosize))[0]
            tif.filehandle.seek(last.offset + fmt.tagnosize + n_tags * fmt.tagsize)
            raw = tif.filehandle.read(fmt.offsetsize)
        next_ifd = struct.unpack(fmt.offsetformat, raw)[0] if len(raw) == fmt.offsetsize else size + 1
    except Exception:  # noqa: BLE001 - a chain we cannot follow says nothing more than tifffile did
        return found
    if next_ifd > size or next_ifd < 0:
        found.append(
            f"{path.name}: file is cut short; the pages stored after page {len(tif.pages) - 1} are lost "
            f"(only {len(series.levels)} pyramid level(s) remain: lower resolutions are missing or computed)"
        )
    return found


def _drop_unusable_levels(levels: list) -> list:
    """Keep levels strictly decreasing in size (some files repeat or append odd IFDs)."""
    kept = [levels[0]]
    for level in levels[1:]:
        if level.shape[0] < kept[-1].shape[0] and level.shape[-1] == kept[0].shape[-1]:
            kept.append(level)
    return kept


def _check_codecs(series: tifffile.TiffPageSeries, path: Path) -> None:
    """Refuse a slide whose levels use a compression this installation cannot decode (checked without decoding)."""
    for level in series.levels:
        compression = level.keyframe.compression
        if compression == 1:
            continue
        try:
            tifffile.TIFF.DECOMPRESSORS[compression]
        except (KeyError, ValueError) as exc:
            name = getattr(compression, "name", str(compression))
            raise ImageReadError(f"{path.name}: unsupported compression {name} (no decoder for it here)") from exc


def _check_decodable(level, path: Path, tif: tifffile.TiffFile) -> None:
    """Decode one tile of the smallest level so an unsupported codec fails now, with a clear message."""
    try:
        level.source.read_tile((0, 0, 0))
    except Exception as exc:  # noqa: BLE001
        compression = getattr(tif.pages.first.compression, "name", "?")
        raise ImageReadError(f"{path.name}: cannot decode its tiles (compression {compression}: {exc})") from exc


def _lazy_pyramid(level0, factor: int = 4, min_px: int = 1024) -> list:
    """Lower levels of a single-level image, computed lazily with dask by block-averaging."""
    import dask.array as da

    base = da.from_array(level0, chunks=(2048, 2048, level0.shape[-1]), asarray=True)
    levels = [level0]
    current = base
    while max(current.shape[:2]) > min_px:
        h, w = (current.shape[0] // factor) * factor, (current.shape[1] // factor) * factor
        if h == 0 or w == 0:
            break
        current = da.coarsen(np.mean, current[:h, :w], {0: factor, 1: factor}).astype(np.uint8)
        current = current.rechunk((1024, 1024, current.shape[-1]))
        levels.append(current)
    return levels
