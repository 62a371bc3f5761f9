"""Tile-level access to slide levels: a decoded-tile cache, and blank tiles instead of errors for corrupt ones.

A level is read tile by tile from a *tile source*: :class:`TiffTileSource` decodes a TIFF tile straight from its
byte range with tifffile's own decoder (4x less overhead per 256² tile than going through zarr here, measured in
benchmarks/bench_io.py), :class:`ZarrTileSource` reads one chunk of any zarr array. :class:`TolerantLevel` assembles
any basic-indexed region from those tiles, keeps recently decoded tiles in a bounded LRU cache (overlapping reads such
as patches with a halo decode each tile once, as openslide does), and when a tile fails to decode it reads as white,
is recorded in ``failed_tiles`` and reported once, so the rest of the slide still shows.

Any index decodes only the tiles it touches: integers and step-1 slices assemble their window, steps
(``level[::16, ::16]``) and one integer array per axis gather the selected rows and columns tile by tile, so memory
stays bounded by the output plus the cache. A tile whose decoded size exceeds :data:`MAX_TILE_BYTES` is refused when
the level is made (:func:`check_tile_bytes`), before anything is decoded.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from itertools import product

import numpy as np

log = logging.getLogger(__name__)

#: Default bound of the decoded-tile cache of one level, bytes.
DEFAULT_CACHE_BYTES = 64 * 1024**2
#: Largest decoded size of one tile (or strip, or chunk) a level may claim, bytes; larger is refused before decoding.
MAX_TILE_BYTES = 256 * 1024**2
#: Failing tiles of one level reported one by one; after that a single line says more failed.
MAX_TILE_REPORTS = 20


def check_tile_bytes(source, name: str) -> None:
    """Refuse a tile source whose one tile would decode to more than :data:`MAX_TILE_BYTES` (a memory bomb).

    Raises
    ------
    ImageReadError
        Naming ``name``, the claimed tile size and the bound.
    """
    from cytoreview.errors import ImageReadError

    tile_bytes = int(np.prod([int(c) for c in source.chunks], dtype=np.float64)) * np.dtype(source.dtype).itemsize
    if tile_bytes > MAX_TILE_BYTES:
        dims = "x".join(str(int(c)) for c in source.chunks)
        raise ImageReadError(
            f"{name}: one tile/strip claims {dims} pixels ({tile_bytes / 1024**3:.1f} GiB decoded), over the "
            f"{MAX_TILE_BYTES // 1024**2} MiB bound; refused before decoding (re-save it as a tiled TIFF)"
        )


class ZarrTileSource:
    """Tiles of a chunked array (zarr), one chunk per read."""

    def __init__(self, array):
        self.array = array
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.chunks = tuple(int(c) for c in array.chunks)

    def read_tile(self, chunk_index: tuple[int, ...]) -> np.ndarray:
        """Decode one chunk (clipped to the array's edge)."""
        return np.asarray(self.array[_tile_window(chunk_index, self.chunks, self.shape)])


class TiffTileSource:
    """Tiles of one tiled (or stripped), pixel-interleaved TIFF page, decoded with tifffile's decoder.

    Parameters
    ----------
    page : tifffile.TiffPage or TiffFrame
        The level's page (its byte ranges); decoding uses its keyframe.
    filehandle : tifffile.FileHandle
        The open file; reads are serialised with ``lock``, decoding runs outside it (imagecodecs releases the GIL).
    lock : threading.Lock
        Shared by all levels of one file.
    """

    def __init__(self, page, filehandle, lock):
        keyframe = page.keyframe
        self.page = page
        self.keyframe = keyframe
        self.filehandle = filehandle
        self.lock = lock
        height, width = keyframe.imagelength, keyframe.imagewidth
        samples = keyframe.samplesperpixel
        self.shape = (int(height), int(width), int(samples))
        self.dtype = np.dtype(keyframe.dtype)
        tile_h = keyframe.tilelength if keyframe.is_tiled else keyframe.rowsperstrip
        tile_w = keyframe.tilewidth if keyframe.is_tiled else width
        self.chunks = (int(min(tile_h, height)) if not keyframe.is_tiled else int(tile_h), int(tile_w), int(samples))
        self.tiles_across = -(-width // tile_w)
        self._decode = keyframe.decode
        self._offsets = page.dataoffsets
        self._counts = page.databytecounts
        self._jpeg = _jpeg_colorspaces(keyframe) if keyframe.is_tiled else None
        self._fd = _pread_fd(filehandle)
        if self._jpeg is not None:
            import imagecodecs

            self._jpeg_decode = imagecodecs.jpeg_decode

    @staticmethod
    def supports(page) -> bool:
        """True for pages this source can read: one pixel-interleaved 2-D image (RGB(A) tiles or strips)."""
        keyframe = page.keyframe
        return (
            keyframe.planarconfig == 1
            and keyframe.imagedepth == 1
            and len(keyframe.shape) == 3
            and (keyframe.is_tiled or keyframe.rowsperstrip > 0)
        )

    def read_tile(self, chunk_index: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
        """Decode one tile; a tile with no stored bytes (sparse) reads as white.

        ``out`` (C-contiguous, of :attr:`chunks` shape and :attr:`dtype`) is a buffer a JPEG tile may be decoded into
        instead of a new array (the result is then a view of it): a fresh 256² RGB tile is above glibc's mmap
        threshold, so each new one is mapped, page-faulted and unmapped again, about 15 % of its decode time.
        """
        row, col = chunk_index[0], chunk_index[1]
        index = row * self.tiles_across + col
        offset, count = self._offsets[index], self._counts[index]
        if not offset or not count:
            window = _tile_window(chunk_index, self.chunks, self.shape)
            return np.full([w.stop - w.start for w in window], 255, self.dtype)
        data = self._read_bytes(offset, count)
        if len(data) != count:
            raise OSError(f"tile {index}: file ends after {len(data)} of {count} bytes")
        if self._jpeg is not None:
            colorspace, outcolorspace = self._jpeg
            keyframe = self.keyframe
            tile = self._jpeg_decode(data, tables=keyframe.jpegtables, header=keyframe.jpegheader,
                                     colorspace=colorspace, outcolorspace=outcolorspace, shape=self.chunks[:2],
                                     out=out)
        else:
            tile = self._decode(data, index, jpegtables=self.keyframe.jpegtables,
                                jpegheader=self.keyframe.jpegheader)[0]
        tile = tile.reshape(tile.shape[-3:])
        height, width, samples = self.shape
        tile_h, tile_w = self.chunks[0], self.chunks[1]
        if (row + 1) * tile_h <= height and (col + 1) * tile_w <= width and tile.shape[-1] == samples:
            return tile  # an inner tile: nothing to clip
        return tile[: height - row * tile_h, : width - col * tile_w, :samples]

    def _read_bytes(self, offset: int, count: int) -> bytes:
        """``count`` bytes at ``offset``: one ``os.pread`` (no lock, no seek) where the file allows, else seek + read
        under the file's lock."""
        fd = self._fd
        if fd is not None and not self.filehandle.closed:
            return os.pread(fd, count, offset)
        with self.lock:
            self.filehandle.seek(offset)
            return self.filehandle.read(count)


def _pread_fd(filehandle) -> int | None:
    """The file descriptor tile bytes can be read from with ``os.pread`` at their TIFF offsets, or None.

    Only for a plain file that tifffile reads from its start (not a stream, not a TIFF embedded at an offset inside
    another file, whose offsets tifffile shifts): there its ``size`` is the whole file's.
    """
    if not hasattr(os, "pread") or not filehandle.is_file:
        return None
    try:
        fd = filehandle.fileno()
        return fd if os.fstat(fd).st_size == filehandle.size else None
    except OSError:
        return None


def _jpeg_colorspaces(keyframe) -> tuple[int | None, int] | None:
    """``(colorspace, outcolorspace)`` for ``imagecodecs.jpeg_decode`` of an 8-bit RGB JPEG-tiled page, else None.

    The two layouts slides use, with the colour spaces tifffile's own decoder picks for them: YCbCr JPEG decoded to
    RGB, and RGB JPEG without a JFIF marker (Aperio SVS) read as RGB. Anything else is left to tifffile's decoder.
    """
    if (keyframe.compression != 7 or keyframe.bitspersample != 8 or keyframe.planarconfig != 1
            or keyframe.extrasamples or keyframe.samplesperpixel != 3):
        return None
    if keyframe.photometric == 6:
        return None, 2
    if keyframe.photometric == 2:
        return (None if keyframe.is_jfif else 2), 2
    return None


class TolerantLevel:
    """Array-like ``(y, x, c)`` level assembled from the tiles of a tile source.

    Parameters
    ----------
    source : ZarrTileSource or TiffTileSource
        Where tiles come from.
    name : str
        What to call the source in warnings (the file name and level).
    fill_value : int
        Value used for tiles that cannot be decoded (255: white, like glass).
    cache_bytes : int
        Bound of the decoded-tile cache; 0 disables it.
    warnings : list of str, optional
        Where each failing tile is reported once (the image's ``Image.warnings``, shown by ``info`` and the GUI).
    """

    def __init__(self, source, name: str, fill_value: int = 255, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 warnings: list | None = None):
        self.source = source
        self.warnings = warnings
        self.name = name
        self.fill_value = fill_value
        self.failed_tiles: set[tuple[int, ...]] = set()
        self._cache: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached_bytes = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        # a source's geometry is fixed: worked out once, not on each of the several uses per tile of a read
        self._shape = (*source.shape[:-1], min(source.shape[-1], 3))
        self._chunks = (*source.chunks[:-1], self._shape[-1])
        self._direct = isinstance(source, TiffTileSource)  # can decode into a caller's buffer

    @property
    def cache_bytes(self) -> int:
        """Bound of the decoded-tile cache in bytes (0: no cache). Setting it drops what no longer fits."""
        return self._cache_bytes

    @cache_bytes.setter
    def cache_bytes(self, value: int) -> None:
        with self._lock:
            self._cache_bytes = max(0, int(value))
            while self._cache and self._cached_bytes > self._cache_bytes:
                _, dropped = self._cache.popitem(last=False)
                self._cached_bytes -= dropped.nbytes

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self):
        return self.source.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def chunks(self) -> tuple[int, ...]:
        return self._chunks

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __array__(self, dtype=None, copy=None):
        data = self[...]
        return data if dtype is None else data.astype(dtype)

    def __getitem__(self, index):
        window = self._window(index)
        if window is not None:  # the readers' usual (rows, cols) window, without the general index handling
            return self._assemble(window, _chunk_ranges(window, self._chunks))
        basic = _normalise_index(index, self.shape)
        if basic is None:  # steps or an index array: gather the selected pixels from the tiles they lie in
            return self._gather(index)
        slices, squeeze = basic
        out = self._assemble(slices, _chunk_ranges(slices, self.chunks))
        return out[tuple(0 if s else slice(None) for s in squeeze)] if any(squeeze) else out

    def _window(self, index) -> list[slice] | None:
        """``[rows, cols, all channels]`` for an index of two in-bounds step-1 slices of ints, else None."""
        if type(index) is not tuple or len(index) != 2 or len(self._shape) != 3:
            return None
        rows, cols = index
        if type(rows) is not slice or type(cols) is not slice or rows.step is not None or cols.step is not None:
            return None
        (y0, y1), (x0, x1) = (rows.start, rows.stop), (cols.start, cols.stop)
        if not (type(y0) is int and type(y1) is int and type(x0) is int and type(x1) is int):
            return None
        height, width, channels = self._shape
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            return None
        return [rows, cols, slice(0, channels)]

    def read_into(self, out: np.ndarray, y0: int, x0: int, cache: bool = True) -> np.ndarray:
        """Decode the ``out.shape[:2]`` window whose top-left pixel is ``(y0, x0)`` into ``out`` (uint8 ``(h, w, c)``
        inside the level; any strides) and return it.

        ``cache=False`` adds nothing to the decoded-tile cache: each tile not already in it is decoded into this
        thread's tile buffer and copied straight into ``out`` (for a caller that reads each tile once, such as the
        predictor's bands, whose tiles would only push the viewer's out of the cache and be mapped afresh each).
        """
        height, width = out.shape[:2]
        window = self._window((slice(y0, y0 + height), slice(x0, x0 + width)))
        if window is None or out.shape[2:] != self._shape[2:] or out.dtype != self.dtype:
            raise ValueError(f"{self.name}: cannot read a {out.shape} window at ({y0}, {x0}) of {self._shape}")
        return self._assemble(window, _chunk_ranges(window, self._chunks), out=out, cache=cache)

    def _assemble(self, slices: list[slice], ranges: list[range], out: np.ndarray | None = None,
                  cache: bool = True) -> np.ndarray:
        bounds = [(s.start, s.stop) for s in slices]
        if out is None:
            out = np.empty([stop - start for start, stop in bounds], dtype=self.dtype)
        chunks = self._chunks
        if len(bounds) == 3 and len(ranges[2]) == 1:  # a (y, x, c) window: per tile row and column, one copy each
            (y0, y1), (x0, x1), (c0, c1) = bounds
            channels = slice(c0, c1)
            rows, cols = _spans(ranges[0], chunks[0], y0, y1), _spans(ranges[1], chunks[1], x0, x1)
            tile = self._tile
            for i, src_y, dst_y in rows:
                for j, src_x, dst_x in cols:
                    out[dst_y, dst_x] = tile((i, j, 0), cache)[src_y, src_x, channels]
            return out
        for chunk_index in product(*ranges):
            tile = self._tile(chunk_index)
            src, dst = [], []
            for i, c, (start, stop) in zip(chunk_index, chunks, bounds):
                origin = i * c
                lo, hi = max(origin, start), min(origin + c, stop)
                src.append(slice(lo - origin, hi - origin))
                dst.append(slice(lo - start, hi - start))
            out[tuple(dst)] = tile[tuple(src)]
        return out

    def _gather(self, index) -> np.ndarray:
        """Orthogonal selection (ints, slices of any step, one 1-D integer array per axis), tile by tile."""
        selections, squeeze = _orthogonal_index(index, self.shape)
        out = np.empty([len(sel) for sel in selections], dtype=self.dtype)
        if out.size:
            # per axis: for each touched tile, where its selected pixels go in ``out`` and come from in the tile
            per_axis = []
            for sel, chunk in zip(selections, self.chunks):
                tile_of = sel // chunk
                per_axis.append([(int(t), np.flatnonzero(tile_of == t), sel[tile_of == t] - t * chunk)
                                 for t in np.unique(tile_of)])
            for parts in product(*per_axis):
                tile = self._tile(tuple(t for t, _, _ in parts))
                out[np.ix_(*[dst for _, dst, _ in parts])] = tile[np.ix_(*[src for _, _, src in parts])]
        return out[tuple(0 if s else slice(None) for s in squeeze)] if any(squeeze) else out

    def _tile(self, chunk_index: tuple[int, ...], cache: bool = True) -> np.ndarray:
        """One decoded tile, from the cache or decoded; ``cache=False``: not added to the cache (the caller copies
        it out before this thread decodes the next one)."""
        if self._cache_bytes:  # with the cache off it is empty (the setter drops what no longer fits)
            with self._lock:
                tile = self._cache.get(chunk_index)
                if tile is not None:
                    self._cache.move_to_end(chunk_index)
                    return tile
        keep = cache and self._cache_bytes
        try:
            if keep or not self._direct:
                tile = _on_white(self.source.read_tile(chunk_index))
            else:  # nothing keeps the tile: decode into this thread's buffer, which the caller copies out at once
                tile = _on_white(self.source.read_tile(chunk_index, out=self._scratch()))
        except Exception as exc:  # noqa: BLE001 - codec or truncation errors of every kind
            with self._lock:
                first = chunk_index not in self.failed_tiles
                self.failed_tiles.add(chunk_index)
                n_failed = len(self.failed_tiles)
            message = None
            if first and n_failed <= MAX_TILE_REPORTS:
                message = f"{self.name}: tile {chunk_index} cannot be decoded ({exc}); shown blank"
            elif first and n_failed == MAX_TILE_REPORTS + 1:
                message = f"{self.name}: more tiles cannot be decoded; shown blank (failed_tiles lists them all)"
            if message:
                log.warning(message)
                if self.warnings is not None:
                    self.warnings.append(message)
            window = _tile_window(chunk_index, self.chunks, self.shape)
            return np.full([w.stop - w.start for w in window], self.fill_value, dtype=self.dtype)
        if keep:
            with self._lock:
                self._cache[chunk_index] = tile
                self._cached_bytes += tile.nbytes
                while self._cached_bytes > self._cache_bytes and self._cache:
                    _, dropped = self._cache.popitem(last=False)
                    self._cached_bytes -= dropped.nbytes
        return tile

    def _scratch(self) -> np.ndarray:
        """This thread's tile-sized decode buffer (tiles are copied out of it before the next one is decoded)."""
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = self._local.buffer = np.empty(self.source.chunks, dtype=self.source.dtype)
        return buffer


def _on_white(tile: np.ndarray) -> np.ndarray:
    """RGBA -> RGB composited onto white (transparent = nothing scanned); RGB passes through."""
    if tile.shape[-1] != 4:
        return tile
    alpha = tile[..., 3:4].astype(np.float32) / 255.0
    rgb = tile[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.round(rgb).astype(tile.dtype)


def _tile_window(chunk_index, chunks, shape) -> tuple[slice, ...]:
    return tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(chunk_index, chunks, shape))


def _spans(tiles: range, chunk: int, start: int, stop: int) -> list[tuple[int, slice, slice]]:
    """``(tile, slice in the tile, slice in the window)`` along one axis for the tiles of window ``[start, stop)``."""
    spans = []
    for i in tiles:
        origin = i * chunk
        lo, hi = max(origin, start), min(origin + chunk, stop)
        spans.append((i, slice(lo - origin, hi - origin), slice(lo - start, hi - start)))
    return spans


def _chunk_ranges(slices: list[slice], chunks: tuple[int, ...]) -> list[range]:
    return [range(s.start // c, (s.stop - 1) // c + 1) if s.stop > s.start else range(0) for s, c in zip(slices, chunks)]


def _orthogonal_index(index, shape) -> tuple[list[np.ndarray], list[bool]]:
    """One array of selected positions per axis (and which axes an integer drops) for an orthogonal index.

    Raises
    ------
    IndexError
        For an out-of-range position or an index that is not orthogonal (boolean masks, several arrays, None).
    """
    if not isinstance(index, tuple):
        index = (index,)
    if sum(i is Ellipsis for i in index) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if any(i is Ellipsis for i in index):
        at = next(k for k, i in enumerate(index) if i is Ellipsis)
        index = index[:at] + (slice(None),) * (len(shape) - len(index) + 1) + index[at + 1 :]
    if len(index) > len(shape):
        raise IndexError(f"too many indices for a level of {len(shape)} axes")
    index = index + (slice(None),) * (len(shape) - len(index))
    if sum(not isinstance(i, (slice, int, np.integer)) for i in index) > 1:
        raise IndexError("levels take at most one index array (orthogonal indexing)")
    selections, squeeze = [], []
    for i, n in zip(index, shape):
        if isinstance(i, slice):
            selections.append(np.arange(*i.indices(n)))
            squeeze.append(False)
            continue
        array = np.asarray(i)
        if array.dtype.kind not in "iu" or array.ndim > 1:
            raise IndexError(f"unsupported index {i!r} (integers, slices or one 1-D integer array)")
        array = np.where(array < 0, array + n, array).astype(np.int64)
        if array.size and (array.min() < 0 or array.max() >= n):
            raise IndexError(f"index {i!r} out of range for axis of size {n}")
        selections.append(np.atleast_1d(array))
        squeeze.append(array.ndim == 0)
    return selections, squeeze


def _normalise_index(index, shape) -> tuple[list[slice], list[bool]] | None:
    """Turn a basic index (ints, step-1 slices, Ellipsis) into one slice per axis plus which axes to drop.

    Returns None for anything else (steps, arrays), which the caller hands to zarr as is.
    """
    if not isinstance(index, tuple):
        index = (index,)
    if any(i is Ellipsis for i in index):
        at = next(k for k, i in enumerate(index) if i is Ellipsis)
        index = index[:at] + (slice(None),) * (len(shape) - len(index) + 1) + index[at + 1 :]
    if len(index) > len(shape):
        return None
    index = index + (slice(None),) * (len(shape) - len(index))
    slices, squeeze = [], []
    for i, n in zip(index, shape):
        if isinstance(i, (int, np.integer)):
            k = int(i) + (n if i < 0 else 0)
            if not 0 <= k < n:
                raise IndexError(f"index {i} out of range for axis of size {n}")
            slices.append(slice(k, k + 1))
            squeeze.append(True)
            continue
        if not isinstance(i, slice):
            return None
        start, stop, step = i.indices(n)
        if step != 1:
            return None
        slices.append(slice(start, max(start, stop)))
        squeeze.append(False)
    return slices, squeeze
