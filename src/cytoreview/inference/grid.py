"""The patch grid: which pyramid level to read, how big a tile is in level-0 pixels, and reading one model patch.

A tile classifier's tile is one model patch: ``T = round(size_px * model_mpp / image.mpp)`` level-0 pixels. A segmenter
with valid padding predicts only the centre ``out_px = size_px - 2*halo_px`` of its patch, so its tiles are
``T = round(out_px * model_mpp / image.mpp)`` level-0 pixels and each patch is read with ``halo_px`` model pixels of
context on every side. Patches are read from the coarsest level that is not coarser than the model needs
(``image.best_level_for_mpp``) and resampled only when that level's pixels differ from the model's: by an exact
block mean for an integer factor, else with Pillow's anti-aliased bilinear filter on whole bands
(see :meth:`PatchGrid.read_model_region`).

Edges. The grid is ``ceil(height / T) x ceil(width / T)``, so the last row and column run past the image. A tile
is its square **clipped to the image** (:meth:`PatchGrid.tile_bounds`): every pixel belongs to exactly one tile,
areas and counts add up, and no item, crop, box or mask reaches beyond the image. The model still reads the tile's
full patch, white beyond the image, as the packs were trained. Measured against the alternative of shifting an edge
tile's patch inward (so the model sees only image pixels): held-out accuracy through ``predict`` fell from 0.959 to
0.952 (warthin-tiles) and from 0.943 to 0.934 (effusion-atypia), because the packs learnt edge tiles with padding.
Shifting the tiles themselves inward would make the last two rows overlap (a pixel in two tiles, areas counted
twice) and break the segmenters' stitching grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cytoreview.errors import PackError

#: Relative mpp difference tolerated before the model counts as needing finer pixels than level 0 has.
UPSAMPLE_TOLERANCE = 0.10


class ResolutionError(PackError):
    """The model needs finer pixels than the image has (it would have to be upsampled)."""


@dataclass(frozen=True)
class PatchGrid:
    """Tile geometry of one image for one pack.

    Attributes
    ----------
    n_fields, n_rows, n_cols : int
        Grid size (every field has the same grid).
    tile_px_level0 : int
        Tile side ``T`` in level-0 pixels; tile ``(r, c)`` covers rows ``[r*T, (r+1)*T)``, cols ``[c*T, (c+1)*T)``,
        clipped to the image.
    level : int
        Pyramid level read.
    level_downsample : float
        Level-0 pixels per pixel of ``level``.
    image_mpp, model_mpp : float
        Micrometres per pixel of level 0 and of the model input.
    size_px, halo_px, out_px : int
        Model patch side, context lost per side, predicted side (``size_px - 2*halo_px``).
    plane_shape : tuple of int
        ``(height, width)`` of a level-0 plane.
    """

    n_fields: int
    n_rows: int
    n_cols: int
    tile_px_level0: int
    level: int
    level_downsample: float
    image_mpp: float
    model_mpp: float
    size_px: int
    halo_px: int
    out_px: int
    plane_shape: tuple[int, int]

    @property
    def read_scale(self) -> float:
        """Pixels of ``level`` per model pixel (1.0 when no resampling is needed)."""
        return self.tile_px_level0 / (self.out_px * self.level_downsample)

    @property
    def resample(self) -> bool:
        """True when patches are resized after reading (level pixels differ from model pixels)."""
        side = self.size_px * self.read_scale
        return abs(side - round(side)) > 1e-6 or round(side) != self.size_px

    @property
    def mask_px_level0(self) -> float:
        """Level-0 pixels per pixel of the stitched segmentation mask (``T / out_px``)."""
        return self.tile_px_level0 / self.out_px

    @property
    def n_tiles(self) -> int:
        """Tiles per field times fields."""
        return self.n_fields * self.n_rows * self.n_cols

    def tile_bounds(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)`` of tile ``(row, col)`` in level-0 pixels, clipped to the image (see the module)."""
        t = self.tile_px_level0
        height, width = self.plane_shape
        return row * t, col * t, min((row + 1) * t, height), min((col + 1) * t, width)

    def inside_fraction(self, row: int, col: int) -> float:
        """Fraction of tile ``(row, col)``'s full square that lies inside the image (1.0 except at the edges)."""
        y0, x0, y1, x1 = self.tile_bounds(row, col)
        return max(0, y1 - y0) * max(0, x1 - x0) / float(self.tile_px_level0**2)

    def model_origin(self, index: int) -> int:
        """Model-pixel coordinate of the first pixel of the patch of grid row (or column) ``index``.

        Tiles lie on an integer grid of model pixels: tile ``r`` predicts model pixels ``[r*out_px, (r+1)*out_px)``
        and its patch starts ``halo_px`` before that.
        """
        return index * self.out_px - self.halo_px

    def read_model_region(self, image, field: int, y0: int, x0: int, height: int, width: int, z: int = 0):
        """Read a region given in model pixels (origin = level-0 origin): uint8 ``(height, width, 3)``.

        Reads ``level`` directly when its pixels are the model's; shrinks by an exact block mean when the factor is an
        integer; otherwise resamples the whole region at once with Pillow's bilinear filter (anti-aliased: its support
        widens with the shrink factor) using the exact sub-pixel source box, so tiles cut from a resampled band line
        up exactly. Outside the image is white.
        """
        scale = self.read_scale
        if not self.resample:
            return image.read_region(y0, x0, height, width, self.level, field, z)
        k = round(scale)
        if k >= 2 and abs(scale - k) < 1e-9:
            region = image.read_region(y0 * k, x0 * k, height * k, width * k, self.level, field, z)
            return block_mean(region, k)
        ly0, lx0, ly1, lx1 = y0 * scale, x0 * scale, (y0 + height) * scale, (x0 + width) * scale
        pad = math.ceil(scale) + 1  # filter support beyond the box
        ry0, rx0 = math.floor(ly0) - pad, math.floor(lx0) - pad
        ry1, rx1 = math.ceil(ly1) + pad, math.ceil(lx1) + pad
        region = image.read_region(ry0, rx0, ry1 - ry0, rx1 - rx0, self.level, field, z)
        from PIL import Image as PILImage

        resized = PILImage.fromarray(np.ascontiguousarray(region[..., :3])).resize(
            (width, height), PILImage.Resampling.BILINEAR, box=(lx0 - rx0, ly0 - ry0, lx1 - rx0, ly1 - ry0)
        )
        return np.asarray(resized, dtype=np.uint8)

    def read_tile(self, image, field: int, row: int, col: int, z: int = 0) -> np.ndarray:
        """Read the model patch for tile ``(row, col)`` of ``field``: uint8 ``(size_px, size_px, 3)``.

        The patch covers the tile's full square plus ``halo_px`` model pixels of context per side; outside the image
        it is white.
        """
        s = self.size_px
        return self.read_model_region(image, field, self.model_origin(row), self.model_origin(col), s, s, z)


class PatchReader:
    """Reads batches of model patches through a small cache of bands (blocks of tiles read as one region).

    Reading one patch at a time decodes a compressed chunk (e.g. a 256 px JPEG tile) once per patch that touches it;
    reading a band of tiles decodes each chunk about once. Bands are about ``max_band_px`` square, follow the level's
    chunk grid where the level array exposes its chunks (a chunk bigger than that, like a whole JPEG field, is one
    band), and span only the tiles that will be read, so glass between tissue is not decoded. Bands are read (and
    resampled) in model pixels, where tiles lie on an integer grid; without resampling or with an integer shrink
    factor the pixels are identical to :meth:`PatchGrid.read_tile`, otherwise equal up to the filter's rounding (a
    grey level or two, where a band and a lone tile are split differently into Pillow's two passes).

    Parameters
    ----------
    grid : PatchGrid
    image : Image
    tiles : ndarray of int, shape (n, 3)
        Every ``(field, row, col)`` that will be read (bounds the bands to what is needed).
    z : int
        Focus plane.
    max_band_px : int
        Band side in pixels of the level read (about).
    capacity : int
        Decoded bands kept (at least 2).
    """

    def __init__(
        self,
        grid: PatchGrid,
        image,
        tiles: np.ndarray,
        z: int = 0,
        max_band_px: int = 1024,
        capacity: int = 4,
    ):
        import threading
        from collections import OrderedDict

        self.grid, self.image, self.z = grid, image, z
        self._tile_level = grid.tile_px_level0 / grid.level_downsample  # tile side in pixels of the level read
        chunk_h, chunk_w = _chunk_yx(image.levels[grid.level])
        self.rows_per_band = self._per_band(chunk_h, max_band_px)
        self.cols_per_band = self._per_band(chunk_w, max_band_px)
        self._span = self._spans(np.asarray(tiles, dtype=np.int64).reshape(-1, 3))
        self._cache: OrderedDict = OrderedDict()
        # tiles are read band by band (see order()); a few bands cover the batches in flight
        self._capacity = max(2, int(capacity))
        self._lock = threading.Lock()
        self._loading: dict = {}
        # Without resampling a band is read straight into a reused buffer (a fresh 3 MB band per 64 tiles was mapped
        # and page-faulted anew each time: ~25k minor faults per 4,096 tiles). Bands that share no compressed chunk
        # (no halo, band edges on chunk edges) also bypass the level's decoded-tile cache: each of their tiles is
        # decoded exactly once anyway.
        self._reuse = not grid.resample
        t = self._tile_level
        self._own_chunks = bool(self._reuse and grid.halo_px == 0 and float(t).is_integer() and chunk_h > 0
                                and chunk_w > 0 and (self.rows_per_band * int(t)) % chunk_h == 0
                                and (self.cols_per_band * int(t)) % chunk_w == 0)
        self._band_shape = ((self.rows_per_band - 1) * grid.out_px + grid.size_px,
                            (self.cols_per_band - 1) * grid.out_px + grid.size_px,
                            int(image.levels[grid.level].shape[-1]))
        self._free: list[np.ndarray] = []

    def _spans(self, tiles: np.ndarray) -> dict[tuple, tuple[int, int, int, int]]:
        """``{band key: (first row, last row, first col, last col)}`` of the tiles in each band (vectorised: a
        slide has 10^5 tiles)."""
        if not len(tiles):
            return {}
        f, r, c = tiles[:, 0], tiles[:, 1], tiles[:, 2]
        keys = np.stack([f, r // self.rows_per_band, c // self.cols_per_band], axis=1)
        unique, group = np.unique(keys, axis=0, return_inverse=True)
        group = group.reshape(-1)
        n = len(unique)
        lo_r, hi_r = np.full(n, np.iinfo(np.int64).max), np.full(n, -1)
        lo_c, hi_c = lo_r.copy(), hi_r.copy()
        np.minimum.at(lo_r, group, r)
        np.maximum.at(hi_r, group, r)
        np.minimum.at(lo_c, group, c)
        np.maximum.at(hi_c, group, c)
        return {tuple(k): span for k, span in zip(unique.tolist(), zip(lo_r.tolist(), hi_r.tolist(), lo_c.tolist(),
                                                                       hi_c.tolist()))}

    def order(self, tiles: np.ndarray) -> np.ndarray:
        """``tiles`` sorted band by band (field, band row, band column, row, col): the order reading each band once."""
        tiles = np.asarray(tiles, dtype=np.int64).reshape(-1, 3)
        if len(tiles) == 0:
            return tiles
        f, r, c = tiles[:, 0], tiles[:, 1], tiles[:, 2]
        return tiles[np.lexsort((c, r, c // self.cols_per_band, r // self.rows_per_band, f))]

    def band_key(self, tile) -> tuple[int, int, int]:
        """``(field, band row, band column)`` of the band tile ``(field, row, col)`` is read from."""
        f, r, c = (int(v) for v in tile)
        return f, r // self.rows_per_band, c // self.cols_per_band

    def close(self) -> None:
        """Drop cached bands and their buffers."""
        self._cache.clear()
        self._loading.clear()
        self._free.clear()

    def _per_band(self, chunk_px: int, limit_px: int) -> int:
        """Tiles per band along one axis: about ``limit_px`` of pixels, or enough tiles to cover a bigger chunk.

        A chunk larger than the limit (a whole JPEG field) is covered by one band so that it is decoded once; a chunk
        more than 4x the limit (an untiled strip of a slide) is not, to bound memory.
        """
        if limit_px < chunk_px <= 4 * limit_px:
            return max(1, math.ceil(chunk_px / self._tile_level))
        if chunk_px > limit_px:
            chunk_px = 0
        if self._tile_level >= limit_px:
            return 1
        target = limit_px if chunk_px <= 0 else (limit_px // chunk_px) * chunk_px
        return max(1, int(target // self._tile_level))

    def _load(self, key: tuple, entry: "_Band") -> None:
        """Decode band ``key`` into ``entry`` (into a reused buffer where the band needs no resampling)."""
        f, _, _ = key
        r0, r1, c0, c1 = self._span[key]
        g = self.grid
        y0, x0 = g.model_origin(r0), g.model_origin(c0)
        height, width = g.model_origin(r1) + g.size_px - y0, g.model_origin(c1) + g.size_px - x0
        entry.y0, entry.x0 = y0, x0
        if not self._reuse:
            entry.pixels = g.read_model_region(self.image, f, y0, x0, height, width, self.z)
            return
        with self._lock:
            entry.buffer = self._free.pop() if self._free else None
        if entry.buffer is None:
            entry.buffer = np.empty(self._band_shape, dtype=np.uint8)
        view = entry.buffer[:height, :width]
        entry.pixels = self.image.read_region(y0, x0, height, width, g.level, f, self.z, out=view,
                                              cache=not self._own_chunks)

    def _claim(self, key):
        """``(future, mine)`` for band ``key``: a new future the caller must fill, or the one already on its way.

        Call with the lock held; None when the band is cached.
        """
        from concurrent.futures import Future

        if key in self._cache:
            return None, False
        future = self._loading.get(key)
        if future is not None:
            return future, False
        future = Future()
        future.entry = _Band()
        self._loading[key] = future
        return future, True

    def _fill(self, key, future) -> None:
        """Decode band ``key`` into ``future``'s entry (in the calling thread), then cache it."""
        entry = future.entry
        try:
            self._load(key, entry)
        except BaseException as exc:
            with self._lock:
                self._loading.pop(key, None)
                entry.evicted = True
                self._recycle(entry)
            future.set_exception(exc)
            return
        with self._lock:
            self._loading.pop(key, None)
            self._cache[key] = entry
            while len(self._cache) > self._capacity:
                _, old = self._cache.popitem(last=False)
                old.evicted = True
                self._recycle(old)
        future.set_result(entry)

    def _recycle(self, entry: "_Band") -> None:
        """Put an evicted band's buffer back for reuse once no reader copies from it any more (lock held)."""
        if entry.evicted and entry.users == 0 and entry.buffer is not None:
            if len(self._free) < self._capacity:
                self._free.append(entry.buffer)
            entry.buffer = entry.pixels = None

    def _band(self, key: tuple) -> "_Band":
        """The decoded band ``key``, counted as in use until :meth:`_release` (its buffer is not reused before)."""
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                hit.users += 1
                return hit
            future, mine = self._claim(key)
            future.entry.users += 1
        if mine:
            self._fill(key, future)  # decoded by the thread that needs it first; others wait for it
        try:
            return future.result()
        except BaseException:
            self._release(future.entry)
            raise

    def _release(self, entry: "_Band") -> None:
        with self._lock:
            entry.users -= 1
            self._recycle(entry)

    def read(self, tiles: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 ``(n, size_px, size_px, 3)`` patches of ``(field, row, col)`` tiles (into ``out`` when given).

        Safe to call from several threads at once: a band needed by two of them is decoded once. Consecutive tiles of
        one band (a batch is nearly always one run) look the band up once, not once per tile.
        """
        g = self.grid
        side = g.size_px
        tiles = np.asarray(tiles, dtype=np.int64).reshape(-1, 3)
        n = len(tiles)
        if out is None:
            out = np.empty((n, side, side, 3), dtype=np.uint8)
        if not n:
            return out
        f, r, c = tiles[:, 0], tiles[:, 1], tiles[:, 2]
        band_r, band_c = r // self.rows_per_band, c // self.cols_per_band
        cut = np.flatnonzero((f[1:] != f[:-1]) | (band_r[1:] != band_r[:-1]) | (band_c[1:] != band_c[:-1])) + 1
        ys, xs = (r * g.out_px - g.halo_px).tolist(), (c * g.out_px - g.halo_px).tolist()  # model_origin
        bounds = [0, *cut.tolist(), n]
        for start, stop in zip(bounds[:-1], bounds[1:]):
            key = (int(f[start]), int(band_r[start]), int(band_c[start]))
            if key not in self._span:
                for i in range(start, stop):
                    out[i] = g.read_tile(self.image, key[0], int(r[i]), int(c[i]), self.z)
                continue
            entry = self._band(key)
            try:
                y0, x0, band = entry.y0, entry.x0, entry.pixels
                for i in range(start, stop):
                    y, x = ys[i] - y0, xs[i] - x0
                    out[i] = band[y : y + side, x : x + side]
            finally:
                self._release(entry)
        return out


class _Band:
    """One decoded band of a :class:`PatchReader`: its origin in model pixels, its pixels (a view of ``buffer`` when
    reused), and how many readers are copying from it (an evicted band's buffer is reused only when none is)."""

    __slots__ = ("y0", "x0", "pixels", "buffer", "users", "evicted")

    def __init__(self):
        self.y0 = self.x0 = 0
        self.pixels = self.buffer = None
        self.users = 0
        self.evicted = False


def _chunk_yx(level) -> tuple[int, int]:
    """``(height, width)`` of the storage chunks of a ``(..., y, x, c)`` level (zarr or dask), ``(0, 0)`` if unknown."""
    chunks = getattr(level, "chunksize", None) or getattr(level, "chunks", None)  # dask: chunksize; zarr: chunks
    try:
        dims = [max(d) if isinstance(d, tuple) else int(d) for d in chunks[-3:-1]]
    except (TypeError, ValueError, IndexError):
        return 0, 0
    return (dims[0], dims[1]) if len(dims) == 2 else (0, 0)


def block_mean(region: np.ndarray, k: int) -> np.ndarray:
    """Shrink a uint8 ``(k*h, k*w, c)`` region by an integer factor ``k``: the mean of each k x k block, rounded."""
    h, w = region.shape[0] // k, region.shape[1] // k
    region = region[: h * k, : w * k]
    if k <= 8:  # integer adds are much faster than a mean over a reshaped float view
        # rows first, whole rows at a time (contiguous), then the k columns of each block: uint16 holds k*k*255
        rows = region[0::k].astype(np.uint16)
        for dy in range(1, k):
            rows += region[dy::k]
        rows = rows.reshape(h, w, k, region.shape[2])
        acc = rows[:, :, 0].copy()
        for dx in range(1, k):
            acc += rows[:, :, dx]
        acc += (k * k) // 2
        acc //= k * k
        return acc.astype(np.uint8)
    blocks = region.reshape(h, k, w, k, region.shape[2]).astype(np.float32)
    return np.floor(blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)


def resize_patch(region: np.ndarray, size_px: int) -> np.ndarray:
    """Resize a square uint8 ``(n, n, c)`` region to the model's ``(size_px, size_px, 3)``.

    The same resampling as prediction: an exact block mean when ``n`` is a multiple of ``size_px``, else Pillow's
    anti-aliased bilinear filter.
    """
    n = region.shape[0]
    if region.shape[:2] == (size_px, size_px):
        return np.ascontiguousarray(region[..., :3])
    if region.shape[1] == n and n % size_px == 0:
        return block_mean(np.ascontiguousarray(region[..., :3]), n // size_px)
    from PIL import Image as PILImage

    resized = PILImage.fromarray(np.ascontiguousarray(region[..., :3])).resize(
        (size_px, size_px), PILImage.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.uint8)


def make_grid(image, pack, allow_upsample: bool = False) -> PatchGrid:
    """Patch grid of ``image`` for ``pack``.

    Parameters
    ----------
    image : Image
        The slide or field set.
    pack : ModelPack
        The model pack (its ``input.mpp``, ``input.size_px`` and ``outputs.halo_px`` are used).
    allow_upsample : bool
        Allow a model that needs finer pixels than level 0 has (by more than 10%); patches are then upsampled.

    Raises
    ------
    ResolutionError
        When the model needs upsampling and ``allow_upsample`` is False, or when one model patch covers more than the
        whole image (a card whose ``size_px`` / ``mpp`` does not fit the image).
    """
    model_mpp = float(pack.card["input"]["mpp"])
    size_px = int(pack.card["input"]["size_px"])
    halo_px = int(pack.card["outputs"].get("halo_px", 0))
    out_px = size_px - 2 * halo_px
    image_mpp = float(image.mpp)
    if model_mpp * (1 + UPSAMPLE_TOLERANCE) < image_mpp and not allow_upsample:
        raise ResolutionError(
            f"{image.path}: model {pack.name}@{pack.version} expects {model_mpp:g} um/px but the finest level of the "
            f"image is {image_mpp:g} um/px; patches would be upsampled {image_mpp / model_mpp:.2f}x "
            "(pass allow_upsample=True / --allow-upsample to do it anyway)"
        )
    level = image.best_level_for_mpp(model_mpp, UPSAMPLE_TOLERANCE)
    tile_px_level0 = max(1, round(out_px * model_mpp / image_mpp))
    height, width = image.plane_shape
    patch_px_level0 = size_px * model_mpp / image_mpp
    if patch_px_level0 > max(height, width):
        raise ResolutionError(
            f"{image.path}: model {pack.name}@{pack.version}'s patch ({size_px} px at {model_mpp:g} um/px) covers "
            f"{patch_px_level0:.0f} px of the image, larger than the whole image ({width}x{height} px at "
            f"{image_mpp:g} um/px); check the card's input.size_px and input.mpp, or the image's pixel size"
        )
    return PatchGrid(
        n_fields=int(image.n_fields),
        n_rows=math.ceil(height / tile_px_level0),
        n_cols=math.ceil(width / tile_px_level0),
        tile_px_level0=tile_px_level0,
        level=int(level),
        level_downsample=float(image.level_downsample(level)),
        image_mpp=image_mpp,
        model_mpp=model_mpp,
        size_px=size_px,
        halo_px=halo_px,
        out_px=out_px,
        plane_shape=(int(height), int(width)),
    )
