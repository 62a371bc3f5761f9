"""Patch grid: level choice, tile size in level-0 pixels, resampling, and refusing to upsample."""

from __future__ import annotations

import numpy as np
import pytest
from .conftest import wsi
from tests.models.onnx_graphs import base_card

from cytoreview.errors import PackError
from cytoreview.inference.grid import ResolutionError, make_grid
from cytoreview.models.pack import ModelPack


def _pack(mpp, size_px=8, halo_px=0, task="tile-classification"):
    card = base_card(
        "g",
        task=task,
        input={"mpp": mpp, "size_px": size_px},
        outputs={"probabilities": {"name": "probs"}, "halo_px": halo_px},
    )
    return ModelPack(card=card, classes=card["classes"], path=None, onnx_path=None)


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return wsi(rng.integers(0, 256, (128, 160, 3), dtype=np.uint8), mpp=0.25, n_levels=3)  # 0.25, 0.5, 1.0 um/px


def test_exact_level_no_resampling(image):
    grid = make_grid(image, _pack(1.0))
    assert (grid.level, grid.tile_px_level0, grid.n_rows, grid.n_cols) == (2, 32, 4, 5)
    assert not grid.resample
    np.testing.assert_array_equal(grid.read_tile(image, 0, 1, 2), image.levels[2][8:16, 16:24])


def test_between_levels_reads_finer_level_and_resamples(image):
    grid = make_grid(image, _pack(0.8))
    assert grid.level == 1  # 1.0 um/px is coarser than 0.8 * 1.1; 0.5 is the coarsest that is fine enough
    assert grid.tile_px_level0 == 26 and grid.resample  # round(8 * 0.8 / 0.25)
    tile = grid.read_tile(image, 0, 0, 0)
    assert tile.shape == (8, 8, 3) and tile.dtype == np.uint8
    # anti-aliased: the patch is close to the block mean of the level-1 region it covers
    region = image.levels[1][:13, :13].astype(float)
    assert abs(tile.astype(float).mean() - region.mean()) < 6


def test_upsampling_refused_unless_allowed(image):
    with pytest.raises(ResolutionError, match=r"expects 0.2 um/px but the finest level .* 0.25 um/px") as err:
        make_grid(image, _pack(0.2))
    assert isinstance(err.value, PackError) and "allow_upsample" in str(err.value)
    grid = make_grid(image, _pack(0.2), allow_upsample=True)
    assert grid.level == 0 and grid.resample and grid.tile_px_level0 == 6
    assert grid.read_tile(image, 0, 3, 3).shape == (8, 8, 3)
    # within 10%: allowed, level 0, slight resampling
    assert make_grid(image, _pack(0.24)).level == 0


def test_segmenter_tiles_are_the_valid_centre_with_halo_context(image):
    grid = make_grid(image, _pack(0.5, size_px=12, halo_px=2, task="segmentation"))
    assert (grid.level, grid.out_px, grid.tile_px_level0, grid.mask_px_level0) == (1, 8, 16, 2.0)
    tile = grid.read_tile(image, 0, 1, 1)
    np.testing.assert_array_equal(tile, image.levels[1][6:18, 6:18])  # centre 8:16 plus 2 px context
    corner = grid.read_tile(image, 0, 0, 0)
    assert (corner[:2] == 255).all() and (corner[:, :2] == 255).all()  # outside the image is white


@pytest.mark.parametrize(
    "mpp, halo_px, task, n_levels, exact",
    [
        (1.0, 0, "tile-classification", 3, True),  # level 2, no resampling
        (0.5, 2, "segmentation", 3, True),  # level 1, no resampling, halo
        (0.5, 1, "segmentation", 1, True),  # level 0, integer shrink x2: block mean
        (0.8, 0, "tile-classification", 3, False),  # level 1, shrink x1.6: bilinear on the band
        (0.3, 1, "segmentation", 3, False),  # level 0, shrink x1.2 with halo
    ],
)
def test_band_reader_gives_the_same_pixels_as_tile_reads(tmp_path, mpp, halo_px, task, n_levels, exact):
    import zarr

    from cytoreview.inference.grid import PatchReader

    rng = np.random.default_rng(5)
    arr = rng.integers(0, 256, (100, 136, 3), dtype=np.uint8)
    levels = []
    for i, level in enumerate(wsi(arr, mpp=0.25, n_levels=n_levels).levels):
        z = zarr.create_array(str(tmp_path / f"l{i}.zarr"), shape=level.shape, dtype="uint8", chunks=(16, 16, 3))
        z[:] = level
        levels.append(z)
    image = wsi(arr, mpp=0.25, n_levels=n_levels)
    image.levels = levels
    grid = make_grid(image, _pack(mpp, size_px=12, halo_px=halo_px, task=task))
    tiles = np.array([(0, r, c) for r in range(grid.n_rows) for c in range(grid.n_cols) if (r + c) % 3], dtype=np.int64)
    reader = PatchReader(grid, image, tiles, max_band_px=64)
    ordered = reader.order(tiles)
    assert sorted(map(tuple, ordered)) == sorted(map(tuple, tiles))
    expected = np.stack([grid.read_tile(image, 0, r, c) for _, r, c in ordered])
    got = reader.read(ordered)
    if exact:
        np.testing.assert_array_equal(got, expected)
    else:
        diff = np.abs(got.astype(int) - expected)  # Pillow rounds between its two passes
        assert diff.max() <= 2 and diff.mean() < 0.25


def test_block_mean_and_resampling_are_anti_aliased(image):
    from cytoreview.inference.grid import block_mean

    stripes = np.zeros((32, 32, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes alias to black or white without a low-pass filter
    half = block_mean(stripes, 2)
    assert half.shape == (16, 16, 3) and (half == 128).all()
    np.testing.assert_array_equal(block_mean(stripes, 16), np.full((2, 2, 3), 128))
    rng = np.random.default_rng(3)
    for k in range(2, 10):  # the integer path (k <= 8) and the float one: each block's mean, rounded half up
        region = rng.integers(0, 256, (5 * k + k - 1, 7 * k + 1, 3), dtype=np.uint8)  # ragged edges are cut off
        region[:k, :k] = 255  # a saturated block: k*k*255 must not overflow
        blocks = region[: 5 * k, : 7 * k].reshape(5, k, 7, k, 3).astype(np.float64)
        np.testing.assert_array_equal(block_mean(region, k), np.floor(blocks.mean(axis=(1, 3)) + 0.5))

    striped = wsi(np.repeat(np.repeat(stripes, 4, axis=0), 4, axis=1)[:, ::4], mpp=0.25)  # 128 x 32, 1 px stripes
    grid = make_grid(striped, _pack(0.4, size_px=8))  # shrink x1.6: not an integer factor
    assert grid.resample and grid.level == 0
    patch = grid.read_tile(striped, 0, 1, 0)
    assert patch.shape == (8, 8, 3) and patch.std() < 25 and 100 < patch.mean() < 155



def test_edge_tiles_are_clipped_to_the_image():
    # 100 x 136 px at 0.25 um/px, 8 px patches at 1 um/px: T = 32 level-0 px, the last row/column run past the image
    rng = np.random.default_rng(1)
    image = wsi(rng.integers(0, 250, (100, 136, 3), dtype=np.uint8), mpp=0.25, n_levels=3)
    grid = make_grid(image, _pack(1.0))
    assert (grid.n_rows, grid.n_cols, grid.tile_px_level0) == (4, 5, 32)
    assert grid.tile_bounds(0, 0) == (0, 0, 32, 32)
    assert grid.tile_bounds(3, 4) == (96, 128, 100, 136)  # clipped: 4 x 8 px of the 32 x 32 square are inside
    assert grid.inside_fraction(3, 4) == pytest.approx(4 * 8 / 32**2) and grid.inside_fraction(1, 1) == 1.0
    boxes = [grid.tile_bounds(r, c) for r in range(grid.n_rows) for c in range(grid.n_cols)]
    assert sum((y1 - y0) * (x1 - x0) for y0, x0, y1, x1 in boxes) == 100 * 136  # every pixel in exactly one tile
    corner = grid.read_tile(image, 0, 3, 4)  # the model still gets the full patch, white beyond the image
    assert (corner[1:, :] == 255).all() and (corner[:1, :2] != 255).all()


def test_band_spans_and_band_order_cover_exactly_the_tiles_to_read(image):
    """The vectorised band bookkeeping: each band spans the first..last row and column of its tiles (over several
    fields), and the order reads band by band, each band's tiles together."""
    from cytoreview.inference.grid import PatchReader

    grid = make_grid(image, _pack(0.25, size_px=8))
    rng = np.random.default_rng(9)
    tiles = np.array([(f, r, c) for f in range(3) for r in range(grid.n_rows) for c in range(grid.n_cols)
                      if rng.random() < 0.4], dtype=np.int64)
    reader = PatchReader(grid, image, tiles, max_band_px=40)
    assert reader.rows_per_band > 1 and reader.cols_per_band > 1
    expected: dict = {}
    for f, r, c in tiles.tolist():
        key = (f, r // reader.rows_per_band, c // reader.cols_per_band)
        r0, r1, c0, c1 = expected.get(key, (r, r, c, c))
        expected[key] = (min(r0, r), max(r1, r), min(c0, c), max(c1, c))
    assert reader._span == expected
    ordered = reader.order(tiles[::-1])
    keys = [(f, r // reader.rows_per_band, c // reader.cols_per_band) for f, r, c in ordered.tolist()]
    assert keys == sorted(keys)  # band by band
    assert set(keys) == set(expected)  # every band, each in one run (sorted above)
    assert reader._spans(np.zeros((0, 3), dtype=np.int64)) == {}


@pytest.mark.parametrize("size_px, halo_px, task, own_chunks", [
    (16, 0, "tile-classification", True),  # bands of 64 px on the 32 px JPEG tiles: no tile in two bands
    (12, 0, "tile-classification", False),  # 60 px bands: tiles shared between bands stay in the tile cache
    (16, 2, "segmentation", False),  # the halo overlaps the bands
])
def test_bands_of_a_jpeg_slide_read_into_reused_buffers_give_the_tile_pixels(tmp_path, size_px, halo_px, task,
                                                                               own_chunks):
    """Bands are decoded into a few reused buffers (an evicted band's buffer serves the next once no reader copies
    from it), past the decoded-tile cache where no tile lies in two bands, with the pixels of lone tile reads."""
    import tifffile

    from cytoreview.inference.grid import PatchReader
    from cytoreview.io import open_image

    rng = np.random.default_rng(2)
    arr = np.repeat(np.repeat(rng.integers(0, 256, (30, 25, 3), dtype=np.uint8), 8, axis=0), 8, axis=1)
    tifffile.imwrite(tmp_path / "s.tif", arr, tile=(32, 32), compression="jpeg", photometric="ycbcr")
    with open_image(tmp_path / "s.tif", mpp=0.5) as image:
        grid = make_grid(image, _pack(0.5, size_px=size_px, halo_px=halo_px, task=task))
        tiles = np.array([(0, r, c) for r in range(grid.n_rows) for c in range(grid.n_cols) if (r * 7 + c) % 5],
                         dtype=np.int64)
        reader = PatchReader(grid, image, tiles, max_band_px=64, capacity=2)
        assert reader._own_chunks is own_chunks
        ordered = reader.order(tiles)
        expected = np.stack([grid.read_tile(image, 0, r, c) for _, r, c in ordered])
        image.levels[0].cache_bytes = 0
        image.levels[0].cache_bytes = 64 * 1024**2
        buffers = set()
        load = reader._load

        def counting_load(key, entry):
            load(key, entry)
            buffers.add(id(entry.buffer))

        reader._load = counting_load
        out = np.empty((7, size_px, size_px, 3), dtype=np.uint8)
        got = np.concatenate([reader.read(ordered[i : i + 7], out=out[: len(ordered[i : i + 7])]).copy()
                              for i in range(0, len(ordered), 7)])
        np.testing.assert_array_equal(got, expected)
        n_bands = len({reader.band_key(t) for t in ordered})
        assert n_bands > 6 and len(buffers) <= 3  # capacity 2 + the one being filled
        assert (len(image.levels[0]._cache) == 0) is own_chunks
        reader.close()
