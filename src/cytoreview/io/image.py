"""The :class:`Image` every reader returns: lazy pixel levels plus the physical pixel size.

Axis order is fixed so every consumer (inference, export, napari) can rely on it:

* ``kind == "wsi"``: each level is ``(y, x, c)``.
* ``kind == "fields"``: each level is ``(field, y, x, c)``, or ``(field, z, y, x, c)`` when the fields were captured
  at several focus planes (``n_z > 1``).

Levels are array-likes (zarr arrays or dask arrays) that decode only what is indexed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: CytoScan default pixel size at 450x, micrometres per pixel.
CYTOSCAN_MPP = 0.293


@dataclass
class Image:
    """A lazily read slide or field set.

    Attributes
    ----------
    path : Path
        The file or folder that was opened.
    kind : {"wsi", "fields"}
        Whole-slide image or CytoScan field set.
    levels : list of array-like
        Pixel levels, largest first. See the module docstring for the axis order.
    mpp : float
        Micrometres per pixel of level 0 (same in y and x).
    reader : str
        Which reader opened it (``"tifffile"``, ``"openslide"``, ``"fields"``).
    field_names : list of str
        For field sets, the file name of each field (empty for a WSI).
    mpp_source : str
        Where ``mpp`` came from (``"svs-description"``, ``"ome-xml"``, ``"tiff-resolution"``, ``"sidecar"``,
        ``"default"``, ...), shown by ``cytoreview info``.
    warnings : list of str
        Problems found while opening that did not stop it (a skipped field, a missing resolution tag, ...).
    metadata : dict
        Anything else the reader found (vendor, objective power, ...).
    """

    path: Path
    kind: str
    levels: list
    mpp: float
    reader: str
    field_names: list[str] = field(default_factory=list)
    mpp_source: str = "default"
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    _closers: list = field(default_factory=list, repr=False)

    # ------------------------------------------------------------------ shape helpers
    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of level 0."""
        return tuple(int(s) for s in self.levels[0].shape)

    @property
    def n_fields(self) -> int:
        """Number of fields (1 for a WSI)."""
        return self.shape[0] if self.kind == "fields" else 1

    @property
    def n_z(self) -> int:
        """Number of focus planes (1 unless a field set has a z axis)."""
        return self.shape[1] if self.kind == "fields" and len(self.shape) == 5 else 1

    @property
    def plane_shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels of one level-0 plane (one field, or the whole slide)."""
        return self.shape[-3], self.shape[-2]

    def level_shape(self, level: int) -> tuple[int, int]:
        """``(height, width)`` in pixels of one plane of ``level``."""
        shape = self.levels[level].shape
        return int(shape[-3]), int(shape[-2])

    def level_downsample(self, level: int) -> float:
        """Downsample factor of ``level`` relative to level 0 (from the widths)."""
        return self.plane_shape[1] / self.level_shape(level)[1]

    def level_mpp(self, level: int) -> float:
        """Micrometres per pixel of ``level``."""
        return self.mpp * self.level_downsample(level)

    def best_level_for_mpp(self, target_mpp: float, tolerance: float = 0.1) -> int:
        """Return the coarsest level whose pixel size is at most ``target_mpp * (1 + tolerance)``.

        Reading from that level and downsampling (if needed) never upsamples beyond the tolerance.
        """
        best = 0
        for level in range(len(self.levels)):
            if self.level_mpp(level) <= target_mpp * (1 + tolerance):
                best = level
        return best

    # ------------------------------------------------------------------ pixel access
    def _check_plane(self, level: int, field: int, z: int) -> None:
        if field == 0 and z == 0 and type(level) is int and 0 <= level < len(self.levels):
            return  # every image has field 0 and plane 0 (the check of each read of a slide)
        from cytoreview.errors import ImageReadError

        for what, value, count in (("level", level, len(self.levels)), ("field", field, self.n_fields),
                                   ("focus plane", z, self.n_z)):
            if not 0 <= int(value) < count:
                raise ImageReadError(f"{self.path.name}: {what} {value} out of range (it has {count})")

    def plane(self, level: int = 0, field: int = 0, z: int = 0):
        """The lazy ``(y, x, c)`` array of one plane: the slide, or one field (and focus plane)."""
        self._check_plane(level, field, z)
        arr = self.levels[level]
        if self.kind == "wsi":
            return arr
        if len(arr.shape) == 5:
            return arr[field, z]
        return arr[field]

    def read_region(
        self, row: int, col: int, height: int, width: int, level: int = 0, field: int = 0, z: int = 0,
        out: np.ndarray | None = None, cache: bool = True,
    ) -> np.ndarray:
        """Read a ``(height, width, c)`` uint8 region whose top-left pixel is ``(row, col)`` of ``level``.

        Coordinates are in pixels of ``level`` (row = y, col = x). Parts outside the image are filled with white
        (255), as glass looks, so tiles at the border keep their size. ``out`` (uint8, that shape, any strides) is
        filled and returned instead of a new array; ``cache=False`` keeps the region's tiles out of a slide level's
        decoded-tile cache (for a caller that reads each tile once).
        """
        self._check_plane(level, field, z)
        arr = self.levels[level]
        h, w = self.level_shape(level)
        n_c = int(arr.shape[-1])
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + height, h), min(col + width, w)
        if out is not None:
            if out.shape != (height, width, n_c) or out.dtype != np.uint8:
                raise ValueError(f"read_region out= must be uint8 {(height, width, n_c)}, got {out.dtype} {out.shape}")
            inside = out[max(r0 - row, 0) : max(r1 - row, 0), max(c0 - col, 0) : max(c1 - col, 0)]
            if inside.shape[:2] != (height, width):
                out[...] = 255
            if inside.size:
                if self.kind == "wsi" and hasattr(arr, "read_into"):
                    arr.read_into(inside, r0, c0, cache=cache)
                else:
                    inside[...] = self.read_region(r0, c0, r1 - r0, c1 - c0, level, field, z)
            return out
        if r1 <= r0 or c1 <= c0:
            return np.full((height, width, n_c), 255, dtype=np.uint8)
        if self.kind == "wsi":
            index: tuple = (slice(r0, r1), slice(c0, c1))
        elif len(arr.shape) == 5:
            index = (field, z, slice(r0, r1), slice(c0, c1))
        else:
            index = (field, slice(r0, r1), slice(c0, c1))
        region = materialise(arr[index])
        if (r0, c0, r1, c1) == (row, col, row + height, col + width) and _owned_uint8(region):
            return region  # inside the image: the level assembled a new array already (no white fill, no 2nd copy)
        out = np.full((height, width, n_c), 255, dtype=np.uint8)
        out[r0 - row : r1 - row, c0 - col : c1 - col] = region
        return out

    def read_plane(self, level: int = 0, field: int = 0, z: int = 0) -> np.ndarray:
        """Decode one whole ``(y, x, c)`` plane of ``level`` (a field, or a small slide level) into memory."""
        return materialise(self.plane(level, field, z))

    def thumbnail(self, max_px: int = 1024, field: int = 0, z: int = 0) -> np.ndarray:
        """Return an RGB thumbnail whose longer side is at most about ``max_px``, from the smallest fitting level."""
        level = len(self.levels) - 1
        for lvl in range(len(self.levels)):
            if max(self.level_shape(lvl)) <= max_px * 2:
                level = lvl
                break
        plane = materialise(self.plane(level, field, z))
        step = max(1, int(np.ceil(max(plane.shape[:2]) / max_px)))
        return np.ascontiguousarray(plane[::step, ::step])

    def close(self) -> None:
        """Release file handles held by the reader."""
        for closer in self._closers:
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing must never raise
                pass
        self._closers.clear()

    def __enter__(self) -> "Image":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _owned_uint8(region: np.ndarray) -> bool:
    """True for a writable, C-contiguous uint8 array that owns its memory (not a view of a level or its cache)."""
    return (region.dtype == np.uint8 and region.base is None and region.flags.writeable
            and region.flags.c_contiguous)


def materialise(array) -> np.ndarray:
    """Compute a lazy array into numpy; dask graphs of a few chunks run on the calling thread (no pool overhead)."""
    if hasattr(array, "compute"):
        return np.asarray(array.compute(scheduler="synchronous"))
    return np.asarray(array)


def as_path_list(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Normalise one path or a list of paths to a list of :class:`Path`."""
    if isinstance(paths, (str, Path)):
        return [Path(paths)]
    return [Path(p) for p in paths]
