"""The patch grid: which pyramid level to read, how big a tile is in level-0 pixels, and reading one model patch.

A tile classifier's tile is one model patch: ``T = round(size_px * model_mpp / image.mpp)`` level-0 pixels. A segmenter
with valid padding predicts only the centre ``out_px = size_px - 2*halo_px`` of its patch, so its tiles are
``T = round(out_px * model_mpp / image.mpp)`` level-0 pixels and each patch is read with ``halo_px`` model pixels of
context on every side. Patches are read from the coarsest level that is not coarser than the model needs
(``image.best_level_for_mpp``) and resampled (anti-aliased) only when that level's pixels differ from the model's.
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
        Tile side ``T`` in level-0 pixels; tile ``(r, c)`` covers rows ``[r*T, (r+1)*T)``, cols ``[c*T, (c+1)*T)``.
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
        """``(y0, x0, y1, x1)`` of tile ``(row, col)`` in level-0 pixels (may run past the image edge)."""
        t = self.tile_px_level0
        return row * t, col * t, (row + 1) * t, (col + 1) * t

    def read_tile(self, image, field: int, row: int, col: int, z: int = 0) -> np.ndarray:
        """Read the model patch for tile ``(row, col)`` of ``field``: uint8 ``(size_px, size_px, 3)``.

        The patch covers the tile plus ``halo_px`` model pixels of context per side; outside the image it is white.
        """
        scale = self.read_scale
        ds = self.level_downsample
        t = self.tile_px_level0
        halo_level = self.halo_px * scale
        y = row * t / ds - halo_level
        x = col * t / ds - halo_level
        side = self.size_px * scale
        if not self.resample:
            return image.read_region(int(round(y)), int(round(x)), self.size_px, self.size_px, self.level, field, z)
        side_i = max(1, int(round(side)))
        region = image.read_region(int(round(y)), int(round(x)), side_i, side_i, self.level, field, z)
        return resize_patch(region, self.size_px)


def resize_patch(region: np.ndarray, size_px: int) -> np.ndarray:
    """Resize a uint8 RGB region to ``(size_px, size_px, 3)``, anti-aliased when shrinking."""
    from skimage.transform import resize

    if region.shape[0] == size_px and region.shape[1] == size_px:
        return region
    shrink = region.shape[0] > size_px
    out = resize(
        region, (size_px, size_px, region.shape[2]), order=1, mode="edge",
        anti_aliasing=shrink, preserve_range=True,
    )  # fmt: skip
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


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
        When the model needs upsampling and ``allow_upsample`` is False.
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
    tile_px_level0 = max(1, int(round(out_px * model_mpp / image_mpp)))
    height, width = image.plane_shape
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
