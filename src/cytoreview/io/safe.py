"""A level wrapper that keeps a slide viewable when some of its tiles cannot be decoded.

A zarr read of a region fails as a whole when one tile in it is corrupt or truncated. :class:`TolerantLevel` tries the
fast whole-region read first; only when that raises does it read the region tile by tile, fills the tiles that fail
with white and records them, so the rest of the slide still shows and the failures are reported once.
"""

from __future__ import annotations

import logging
from itertools import product

import numpy as np

log = logging.getLogger(__name__)


class TolerantLevel:
    """Array-like over a zarr (or any sliceable) level whose failing tiles read as white.

    Parameters
    ----------
    array : array-like
        The level, with ``shape``, ``dtype``, ``chunks`` and ``__getitem__`` (zarr array).
    name : str
        What to call the source in warnings (the file name and level).
    fill_value : int
        Value used for tiles that cannot be decoded (255: white, like glass).
    """

    def __init__(self, array, name: str, fill_value: int = 255):
        self.array = array
        self.name = name
        self.fill_value = fill_value
        self.failed_tiles: set[tuple[int, ...]] = set()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self):
        return self.array.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self.array.chunks)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __array__(self, dtype=None, copy=None):
        data = self[...]
        return data if dtype is None else data.astype(dtype)

    def __getitem__(self, index):
        try:
            return np.asarray(self.array[index])
        except (KeyError, IndexError, TypeError):
            raise
        except Exception as exc:  # noqa: BLE001 - a codec or truncation error inside one or more tiles
            return self._read_tile_by_tile(index, exc)

    def _read_tile_by_tile(self, index, first_error: Exception) -> np.ndarray:
        slices = _normalise_index(index, self.shape)
        if slices is None:
            raise first_error
        starts = [s.start for s in slices]
        stops = [s.stop for s in slices]
        out = np.full([b - a for a, b in zip(starts, stops)], self.fill_value, dtype=self.dtype)
        chunk_ranges = [
            range(a // c, (b - 1) // c + 1) if b > a else range(0)
            for a, b, c in zip(starts, stops, self.chunks)
        ]
        for chunk_index in product(*chunk_ranges):
            lo = [max(i * c, a) for i, c, a in zip(chunk_index, self.chunks, starts)]
            hi = [min((i + 1) * c, b) for i, c, b in zip(chunk_index, self.chunks, stops)]
            src = tuple(slice(a, b) for a, b in zip(lo, hi))
            dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, starts))
            try:
                out[dst] = np.asarray(self.array[src])
            except Exception as exc:  # noqa: BLE001
                if chunk_index not in self.failed_tiles:
                    self.failed_tiles.add(chunk_index)
                    log.warning("%s: tile %s cannot be decoded (%s); shown as blank", self.name, chunk_index, exc)
        return out


def _normalise_index(index, shape) -> list[slice] | None:
    """Turn a basic index (slices, Ellipsis) into one step-1 slice per axis; None if it is not that simple."""
    if not isinstance(index, tuple):
        index = (index,)
    if any(i is Ellipsis for i in index):
        at = next(k for k, i in enumerate(index) if i is Ellipsis)
        index = index[:at] + (slice(None),) * (len(shape) - len(index) + 1) + index[at + 1 :]
    index = index + (slice(None),) * (len(shape) - len(index))
    result = []
    for i, n in zip(index, shape):
        if not isinstance(i, slice):
            return None
        start, stop, step = i.indices(n)
        if step != 1:
            return None
        result.append(slice(start, max(start, stop)))
    return result
