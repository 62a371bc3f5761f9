"""Bad slides and field sets: one clear ImageReadError naming the file, or a partial read that reports what failed."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import tifffile

from tests.io.conftest import tissue_like, write_fields, write_pyramid

from cytoreview.errors import CytoreviewError, ImageReadError
from cytoreview.io import open_image


@pytest.fixture
def slide(tmp_path):
    """A 512 x 768 two-level JPEG pyramid with 256 px tiles (2 x 3 tiles at level 0)."""
    base = tissue_like(512, 768)
    return write_pyramid(tmp_path / "slide.tif", base, n_levels=2), base


def _refused(path, *words):
    with pytest.raises(ImageReadError) as info:
        open_image(path)
    message = str(info.value)
    assert path.name in message, message
    assert "Traceback" not in message
    for word in words:
        assert word.lower() in message.lower(), message
    return message


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.svs"
    path.write_bytes(b"")
    _refused(path, "empty")


@pytest.mark.parametrize("name", ["notes.jpg", "notes.tif", "notes.svs", "notes.png"])
def test_text_file_with_an_image_suffix(tmp_path, name):
    path = tmp_path / name
    path.write_text("this is a text file, not an image\n" * 20)
    _refused(path)


def test_header_only_tiff_is_refused(tmp_path, slide):
    path, _ = slide
    cut = tmp_path / "cut_header.tif"
    cut.write_bytes(path.read_bytes()[:50])
    _refused(cut, "tiff")


def test_truncated_tiff_reads_what_is_there_and_reports_the_rest(tmp_path, slide, caplog):
    path, base = slide
    cut = tmp_path / "truncated.tif"
    data = path.read_bytes()
    with tifffile.TiffFile(path) as tif:
        offsets = tif.pages[0].dataoffsets
    cut.write_bytes(data[: offsets[2] + 100])  # tiles 0 and 1 complete, tile 2 cut short, the rest gone
    with caplog.at_level(logging.WARNING):
        image = open_image(cut)
        region = image.read_region(0, 0, 512, 768)
    assert region.shape == (512, 768, 3) and region.dtype == np.uint8
    assert np.abs(region[:256, :512].astype(int) - base[:256, :512]).mean() < 4  # intact tiles decode
    assert (region[256:, :] == 255).all()  # lost tiles are white
    failed = image.levels[0].failed_tiles
    assert {(1, 0, 0), (1, 1, 0), (1, 2, 0)} <= failed and (0, 0, 0) not in failed
    assert any(cut.name in r.getMessage() for r in caplog.records)


def test_corrupt_jpeg_tiles_mid_slide(tmp_path, slide, caplog):
    path, base = slide
    bad = tmp_path / "corrupt_tiles.tif"
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        offsets, counts = tif.pages[0].dataoffsets, tif.pages[0].databytecounts
    rng = np.random.default_rng(0)
    for index in (1, 4):  # tiles (0, 1) and (1, 1)
        data[offsets[index] : offsets[index] + counts[index]] = rng.integers(0, 256, counts[index], np.uint8).tobytes()
    bad.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        image = open_image(bad)
        region = image.read_region(0, 0, 512, 768)
    assert image.levels[0].failed_tiles == {(0, 1, 0), (1, 1, 0)}
    good = np.ones((512, 768), bool)
    good[:, 256:512] = False
    assert np.abs(region[good].astype(int) - base[good]).mean() < 4  # the rest still reads
    assert (region[:, 256:512] == 255).all()
    assert sum(bad.name in r.getMessage() for r in caplog.records) == 2  # each failed tile reported once
    image.read_region(0, 0, 512, 768)
    assert sum(bad.name in r.getMessage() for r in caplog.records) == 2


def test_unknown_compression_is_refused_on_open(tmp_path, slide):
    path, _ = slide
    odd = tmp_path / "odd_codec.tif"
    shutil.copy(path, odd)
    with tifffile.TiffFile(odd, mode="r+b") as tif:
        tif.pages[0].tags["Compression"].overwrite(34999)
    _refused(odd, "compression")


def test_unknown_compression_never_crashes(tmp_path, slide):
    """What happens today, whatever the fix: no library traceback, and the failure is recorded, not silent."""
    path, _ = slide
    odd = tmp_path / "odd_codec.tif"
    shutil.copy(path, odd)
    with tifffile.TiffFile(odd, mode="r+b") as tif:
        tif.pages[0].tags["Compression"].overwrite(34999)
    try:
        image = open_image(odd)
    except CytoreviewError as exc:
        assert odd.name in str(exc)
        return
    image.read_region(0, 0, 256, 256)
    assert (0, 0, 0) in image.levels[0].failed_tiles


def test_mixed_field_sizes_leave_the_odd_one_out_by_name(tmp_path):
    folder = tmp_path / "mixed"
    write_fields(folder, 3)
    write_fields(folder, 1, height=80, width=100, names=["field_009.jpg"])
    image = open_image(folder)
    assert image.n_fields == 3 and image.plane_shape == (60, 96)
    assert len(image.warnings) == 1 and "field_009.jpg" in image.warnings[0]


def test_folder_of_only_unreadable_fields(tmp_path):
    folder = tmp_path / "broken"
    for path in write_fields(folder, 3):
        path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ImageReadError) as info:
        open_image(folder)
    message = str(info.value)
    assert str(folder) in message or folder.name in message
    assert all(f"field_{i:03d}.jpg" in message for i in range(3))


def test_fields_corrupt_after_the_header_read_blank_and_are_named(tmp_path):
    folder = tmp_path / "half"
    paths = write_fields(folder, 3)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])
    image = open_image(folder)
    assert image.n_fields == 3
    good = image.read_region(0, 0, 60, 96, field=0)
    assert good.std() > 10
    blank = image.read_region(0, 0, 60, 96, field=1)
    assert (blank == 255).all()
    assert any("field_001.jpg" in w for w in image.warnings)
    assert not any("field_000.jpg" in w for w in image.warnings)


def test_corrupt_wsi_tiles_are_reported_in_image_warnings(tmp_path, slide):
    path, _ = slide
    bad = tmp_path / "corrupt_tiles.tif"
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[4], tif.pages[0].databytecounts[4]
    data[offset : offset + count] = bytes(count)
    bad.write_bytes(bytes(data))
    image = open_image(bad)
    image.read_region(0, 0, 512, 768)
    assert image.levels[0].failed_tiles == {(1, 1, 0)}
    assert any("corrupt_tiles.tif" in w and "(1, 1" in w for w in image.warnings), image.warnings
