"""Foreground mask on thumbnails and per-tile tissue fractions."""

from __future__ import annotations

import numpy as np
from .conftest import blob_slide, wsi

from cytoreview.inference.tissue import TissueMask, foreground_mask, tissue_mask
from cytoreview.io.image import Image


def test_foreground_colour_and_darkness_cues():
    img = np.full((64, 64, 3), 240, dtype=np.uint8)
    img[8:24, 8:24] = [180, 60, 150]  # stained: saturated
    img[40:56, 40:56] = [40, 40, 40]  # dense / dark, not saturated
    img[2, 60] = [200, 0, 0]  # a single-pixel speck
    mask = foreground_mask(img)
    assert mask[8:24, 8:24].all() and mask[40:56, 40:56].all()
    assert not mask[2, 60] and not mask[30, 2]
    assert mask.sum() == 2 * 16 * 16


def test_blank_glass_has_no_foreground():
    rng = np.random.default_rng(1)
    glass = (235 + rng.integers(0, 8, (64, 64, 1))).repeat(3, axis=2).astype(np.uint8)
    assert not foreground_mask(glass).any()


def test_tile_fraction_exact_and_subpixel_tiles():
    mask = np.zeros((1, 4, 6), dtype=bool)
    mask[0, 0, 0] = mask[0, 0, 1] = mask[0, 1, 0] = True
    tm = TissueMask(mask=mask, downsample_yx=(8.0, 8.0))
    frac = tm.tile_fraction(16, 2, 3)  # 2x2 mask px per tile
    np.testing.assert_allclose(frac[0], [[0.75, 0, 0], [0, 0, 0]])
    small = tm.tile_fraction(4, 8, 12)  # tiles smaller than a mask pixel take the pixel under their centre
    np.testing.assert_array_equal(small[0, :4, :4], [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]])
    assert small.sum() == 12


def test_tissue_mask_of_a_slide_and_of_fields():
    arr = blob_slide()
    tm = tissue_mask(wsi(arr))
    assert tm.mask.shape == (1, 96, 128) and tm.downsample_yx == (1.0, 1.0)
    frac = tm.tile_fraction(16, 6, 8)
    coloured = arr.reshape(6, 16, 8, 16, 3).min(axis=(1, 3, 4)) < 200
    np.testing.assert_array_equal(frac[0] > 0.5, coloured)

    fields = np.full((3, 64, 96, 3), 240, dtype=np.uint8)
    fields[1, :32, :48] = [150, 40, 160]
    fields[2, 32:, 48:] = [30, 30, 30]
    image = Image(
        path=__import__("pathlib").Path("/tmp/fields"), kind="fields", levels=[fields], mpp=0.293, reader="test"
    )
    fm = tissue_mask(image, max_px=48)
    assert fm.mask.shape[0] == 3 and fm.downsample_yx == (2.0, 2.0)
    f = fm.tile_fraction(32, 2, 3)
    assert f[0].sum() == 0
    np.testing.assert_allclose(f[1], [[1, 0.5, 0], [0, 0, 0]])
    np.testing.assert_allclose(f[2], [[0, 0, 0], [0, 0.5, 1]])
