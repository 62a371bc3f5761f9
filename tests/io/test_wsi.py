import numpy as np
import pytest
import tifffile

from cytoreview.errors import ImageReadError
from cytoreview.io import open_image

from .conftest import tissue_like, write_pyramid


def test_pyramid_levels_mpp_and_pixels(pyramid_tif):
    image = open_image(pyramid_tif)
    assert image.kind == "wsi" and image.reader == "tifffile"
    assert [image.level_shape(i) for i in range(3)] == [(1024, 1536), (512, 768), (256, 384)]
    assert image.mpp == pytest.approx(0.5) and image.mpp_source == "tiff-resolution"
    assert image.level_mpp(2) == pytest.approx(2.0)
    for level in range(3):
        expected = tifffile.imread(pyramid_tif, level=level) if "subifd" in pyramid_tif.name else None
        region = image.read_region(100 // 2**level, 200 // 2**level, 64, 80, level=level)
        if expected is not None:
            np.testing.assert_array_equal(region, expected[100 // 2**level:100 // 2**level + 64,
                                                           200 // 2**level:200 // 2**level + 80])
    image.close()


def test_read_region_pads_outside_with_white(pyramid_tif):
    with open_image(pyramid_tif) as image:
        region = image.read_region(-10, 1536 - 20, 30, 40)
        assert region.shape == (30, 40, 3)
        assert (region[:10] == 255).all() and (region[:, 20:] == 255).all()
        assert not (region[10:, :20] == 255).all()


def test_best_level_for_mpp(pyramid_tif):
    with open_image(pyramid_tif) as image:
        assert image.best_level_for_mpp(0.5) == 0
        assert image.best_level_for_mpp(1.0) == 1
        assert image.best_level_for_mpp(1.5) == 1
        assert image.best_level_for_mpp(8.0) == 2


def test_ome_tiff_pixel_size_from_ome_xml(tmp_path):
    path = write_pyramid(tmp_path / "s.ome.tif", tissue_like(512, 512), n_levels=2, mpp=0.34, ome=True)
    with open_image(path) as image:
        assert image.mpp == pytest.approx(0.34)
        assert len(image.levels) == 2


def test_svs_matches_openslide(cmu_svs):
    openslide = pytest.importorskip("openslide")
    slide = openslide.OpenSlide(str(cmu_svs))
    with open_image(cmu_svs) as image:
        assert image.reader == "tifffile" and image.metadata["vendor"] == "aperio"
        assert image.mpp == pytest.approx(float(slide.properties["openslide.mpp-x"]))
        assert [image.level_shape(i)[::-1] for i in range(len(image.levels))] == list(slide.level_dimensions)
        for level, (row, col) in [(0, (700, 1100)), (0, (0, 0)), (len(image.levels) - 1, (10, 20))]:
            ours = image.read_region(row, col, 256, 300, level=level)
            ds = slide.level_downsamples[level]
            theirs = np.asarray(slide.read_region((int(col * ds), int(row * ds)), level, (300, 256)))[..., :3]
            np.testing.assert_array_equal(ours, theirs)  # same tiles, same decoder result: pixel for pixel
    slide.close()


def test_opening_huge_slide_decodes_no_level0_tile(huge_sparse_slide, monkeypatch):
    import time

    from cytoreview.io.safe import TiffTileSource

    decoded = []  # (level shape, tile index) of every tile decoded
    original = TiffTileSource.read_tile

    def recording_read(self, chunk_index):
        decoded.append((self.shape[:2], chunk_index))
        return original(self, chunk_index)

    monkeypatch.setattr(TiffTileSource, "read_tile", recording_read)
    started = time.perf_counter()
    image = open_image(huge_sparse_slide)
    thumb = image.thumbnail(1024)
    elapsed = time.perf_counter() - started
    assert image.shape == (100_000, 100_000, 3) and len(image.levels) == 4
    assert thumb.shape[0] <= 2048
    assert decoded, "the thumbnail must have decoded tiles of the smallest level"
    assert all(shape == (1562, 1562) for shape, _ in decoded)
    assert elapsed < 1.0
    # and reading level 0 does decode a level-0 tile (the recorder can fail)
    image.read_region(0, 0, 256, 256)
    assert decoded[-1] == ((100_000, 100_000), (0, 0, 0))
    image.close()


def test_single_level_large_tiff_gets_lazy_pyramid(tmp_path):
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, tissue_like(5000, 4200), tile=(512, 512), compression="zlib",
                     resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER", metadata=None)
    with open_image(path) as image:
        assert len(image.levels) >= 2
        assert image.level_shape(1) == (1250, 1050)
        assert any("single-level" in w for w in image.warnings)
        small = np.asarray(image.levels[-1][:8, :8])
        assert small.dtype == np.uint8


def test_missing_resolution_is_assumed_and_reported(tmp_path):
    path = tmp_path / "nores.tif"
    tifffile.imwrite(path, tissue_like(5000, 300), tile=(256, 256), compression="zlib", metadata=None)
    with open_image(path) as image:
        assert image.mpp_source == "assumed"
        assert any("no pixel size" in w for w in image.warnings)
    with open_image(path, mpp=0.3) as image:
        assert image.mpp == 0.3 and image.mpp_source == "given"


def test_corrupt_tile_shows_rest_of_slide(tmp_path):
    path = write_pyramid(tmp_path / "bad.tif", tissue_like(1024, 1024), n_levels=2, compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages.first.dataoffsets[1], tif.pages.first.databytecounts[1]
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00garbage" * (count // 8))
    with open_image(path) as image:
        region = image.read_region(0, 0, 256, 512)
        assert (region[:, 256:] == 255).all()  # the broken tile (row 0, col 1) is blank
        assert not (region[:, :256] == 255).all()  # its neighbour still shows
        assert image.levels[0].failed_tiles == {(0, 1, 0)}


@pytest.mark.parametrize("content", [b"", b"this is not a tiff at all", b"II*\x00" + b"\x00" * 20])
def test_bad_files_give_clear_errors(tmp_path, content):
    path = tmp_path / "slide.svs"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="slide.svs"):
        open_image(path)


def test_truncated_tiff_is_a_clear_error_or_partial_view(tmp_path):
    path = write_pyramid(tmp_path / "cut.tif", tissue_like(1024, 1024), n_levels=2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    try:
        image = open_image(path)
    except ImageReadError as exc:
        assert "cut.tif" in str(exc)
    else:  # header survived: the tiles that were cut read blank, no exception reaches the caller
        region = image.read_region(0, 0, 1024, 1024)
        assert region.shape == (1024, 1024, 3)
        image.close()


def test_unsupported_suffix_and_missing_path(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(ImageReadError, match="unsupported file type"):
        open_image(other)
    with pytest.raises(ImageReadError, match="no such file"):
        open_image(tmp_path / "absent.svs")


def test_greyscale_slide_falls_back_to_openslide_as_rgb(tmp_path):
    pytest.importorskip("openslide")
    path = tmp_path / "grey.tif"
    grey = tissue_like(5000, 600)[..., 0]
    tifffile.imwrite(path, grey, tile=(256, 256), metadata=None)
    with open_image(path) as image:
        assert image.reader == "openslide" and image.shape == (5000, 600, 3)
        region = image.read_region(100, 100, 8, 8)
        np.testing.assert_array_equal(region[..., 0], grey[100:108, 100:108])
        np.testing.assert_array_equal(region[..., 0], region[..., 2])


def test_rgba_slide_reads_rgb_on_white(tmp_path):
    rgba = np.zeros((512, 512, 4), np.uint8)
    rgba[..., :3] = tissue_like(512, 512)
    rgba[:, :256, 3] = 255  # left half opaque, right half transparent
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, rgba, tile=(256, 256), photometric="rgb", extrasamples=["unassalpha"], metadata=None,
                     resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    with open_image(path) as image:
        assert image.shape == (512, 512, 3)
        region = image.read_region(0, 0, 512, 512)
        assert region.shape == (512, 512, 3)
        np.testing.assert_array_equal(region[:, :256], rgba[:, :256, :3])
        assert (region[:, 256:] == 255).all()


def test_out_of_range_plane_is_clear_error(pyramid_tif):
    with open_image(pyramid_tif) as image:
        with pytest.raises(ImageReadError, match="level 5 out of range"):
            image.read_region(0, 0, 8, 8, level=5)


@pytest.mark.parametrize("photometric", ["rgb", "ycbcr"])
def test_jpeg_tiles_decode_like_tifffile_with_the_cache_on_and_off(tmp_path, photometric):
    path = tmp_path / f"{photometric}.tif"
    pixels = tissue_like(700, 600, seed=3)
    tifffile.imwrite(path, pixels, tile=(256, 256), compression="jpeg", photometric=photometric)
    expected = np.pad(tifffile.imread(path), ((0, 200), (0, 200), (0, 0)), constant_values=255)
    with open_image(path, mpp=0.5) as image:
        level = image.levels[0]
        for cache_bytes in (0, 64 * 1024**2):
            level.cache_bytes = cache_bytes
            regions = {(row, col): image.read_region(row, col, 120, 100)
                       for row, col in ((0, 0), (200, 230), (500, 400), (650, 550))}
            for (row, col), region in regions.items():  # earlier reads are not overwritten by later decodes
                np.testing.assert_array_equal(region, expected[row:row + 120, col:col + 100])
            np.testing.assert_array_equal(level[:, :], expected[:700, :600])


def test_svs_rgb_jpeg_tiles_read_the_same_with_the_cache_off(cmu_svs):
    with open_image(cmu_svs) as cached, open_image(cmu_svs) as uncached:
        uncached.levels[0].cache_bytes = 0
        for row, col in ((700, 1100), (0, 0), (2967 - 256, 2220 - 300)):
            np.testing.assert_array_equal(uncached.read_region(row, col, 256, 300), cached.read_region(row, col, 256, 300))
        with tifffile.TiffFile(cmu_svs) as tif:
            np.testing.assert_array_equal(uncached.levels[0][:, :], tif.pages.first.asarray())


def test_a_region_inside_the_image_is_a_new_array_never_a_view_of_the_level(pyramid_tif, tmp_path):
    from cytoreview.io.image import Image

    plane = tissue_like(300, 400, seed=5)
    in_memory = Image(path=tmp_path / "plane", kind="wsi", levels=[plane], mpp=0.5, reader="numpy")
    with open_image(pyramid_tif) as tiled:
        for image in (in_memory, tiled):
            before = image.read_region(10, 20, 64, 80).copy()
            region = image.read_region(10, 20, 64, 80)
            region[...] = 0  # a caller may write into what it got
            np.testing.assert_array_equal(image.read_region(10, 20, 64, 80), before)
    assert plane.any()


def test_tile_bytes_read_with_pread_match_seek_and_read_and_an_embedded_tiff_falls_back(tmp_path):
    from cytoreview.io.safe import _pread_fd

    path = tmp_path / "tiles.tif"
    pixels = tissue_like(700, 600, seed=4)
    tifffile.imwrite(path, pixels, tile=(256, 256), compression="jpeg", photometric="rgb")
    expected = tifffile.imread(path)
    with open_image(path, mpp=0.5) as image:
        level = image.levels[0]
        level.cache_bytes = 0
        source = level.source
        assert source._fd is not None  # a plain file: one pread per tile
        windows = [(0, 0, 256, 256), (100, 130, 300, 256), (450, 350, 250, 250)]
        by_pread = [image.read_region(*w) for w in windows]
        source._fd = None  # the seek + read path under the file's lock
        by_seek = [image.read_region(*w) for w in windows]
        for (row, col, h, w), a, b in zip(windows, by_pread, by_seek):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, expected[row:row + h, col:col + w])
    # a TIFF embedded inside a bigger file: tifffile shifts its offsets, so pread at them would read the wrong bytes
    blob = tmp_path / "embedded.bin"
    blob.write_bytes(b"\0" * 1000 + path.read_bytes() + b"\0" * 10)
    handle = tifffile.FileHandle(str(blob), offset=1000, size=path.stat().st_size)
    try:
        assert _pread_fd(handle) is None
    finally:
        handle.close()
    with open(path, "rb") as plain:
        whole = tifffile.FileHandle(plain)
        assert _pread_fd(whole) == plain.fileno()


def test_level_windows_and_general_indexes_read_the_same_pixels_as_numpy(tmp_path):
    path = tmp_path / "windows.tif"
    pixels = tissue_like(300, 260, seed=6)
    tifffile.imwrite(path, pixels, tile=(64, 64), compression="zlib")
    with open_image(path, mpp=0.5) as image:
        level = image.levels[0]
        for cache_bytes in (0, 64 * 1024**2):
            level.cache_bytes = cache_bytes
            for index in [(slice(10, 200), slice(5, 250)),  # the readers' window (fast path)
                          (slice(0, 300), slice(0, 260)), (slice(63, 65), slice(127, 129)),
                          (slice(-50, None), slice(None, 40)), (slice(290, 400), slice(0, 10)),  # general paths
                          (slice(20, 20), slice(0, 10)), (5, slice(3, 9)), (slice(1, 9), slice(2, 7), 1),
                          (slice(10, 200, 7), slice(5, 250, 3)), (np.int64(4), np.int64(7))]:
                np.testing.assert_array_equal(level[index], pixels[index], err_msg=str(index))
        with pytest.raises(ImageReadError, match="level 1 out of range"):
            image.read_region(0, 0, 8, 8, level=1)
        with pytest.raises(ImageReadError, match="field 1 out of range"):
            image.read_region(0, 0, 8, 8, field=1)
        with pytest.raises(ImageReadError, match="focus plane 2 out of range"):
            image.read_region(0, 0, 8, 8, z=2)


def test_read_region_into_a_caller_buffer_with_and_without_the_tile_cache(tmp_path, pyramid_tif):
    """``out=`` fills a caller's (strided) buffer with what read_region returns, white beyond the image, for a
    tiled slide and an in-memory plane; ``cache=False`` decodes the same pixels and adds nothing to the cache."""
    from cytoreview.io.image import Image

    path = tmp_path / "ycbcr.tif"
    pixels = tissue_like(700, 600, seed=4)
    tifffile.imwrite(path, pixels, tile=(256, 256), compression="jpeg", photometric="ycbcr")
    plane = tissue_like(300, 400, seed=6)
    in_memory = Image(path=tmp_path / "plane", kind="wsi", levels=[plane], mpp=0.5, reader="numpy")
    with open_image(path, mpp=0.5) as jpeg, open_image(pyramid_tif) as tiled:
        for image in (jpeg, tiled, in_memory):
            for row, col, height, width in ((0, 0, 256, 512), (200, 230, 120, 100), (-10, 250, 40, 300)):
                expected = image.read_region(row, col, height, width)
                for cache in (True, False):
                    buffer = np.zeros((height + 5, width + 7, 3), dtype=np.uint8)
                    got = image.read_region(row, col, height, width, out=buffer[:height, :width], cache=cache)
                    np.testing.assert_array_equal(got, expected)
                    assert np.shares_memory(got, buffer) and not buffer[height:].any() and not buffer[:, width:].any()
        level = jpeg.levels[0]
        level.cache_bytes = 0
        level.cache_bytes = 64 * 1024**2  # emptied
        jpeg.read_region(0, 0, 512, 512, out=np.empty((512, 512, 3), np.uint8), cache=False)
        assert len(level._cache) == 0
        jpeg.read_region(0, 0, 512, 512, out=np.empty((512, 512, 3), np.uint8))
        assert len(level._cache) == 4
        with pytest.raises(ValueError, match="out="):
            jpeg.read_region(0, 0, 10, 10, out=np.empty((10, 11, 3), np.uint8))
