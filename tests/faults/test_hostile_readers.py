"""Hostile images: memory bombs, indexes that must not decode a whole level, the openslide fallback's contract,
multi-page fields of mixed sizes, fields converted by rule, truncated JPEG fields and cut-short slides."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from tests.faults.conftest import child_env
from tests.faults.hostile import tiff_bomb
from tests.io.conftest import huge_sparse_slide, tissue_like, write_pyramid  # noqa: F401 - a fixture
from tests.models.onnx_graphs import base_card, write_pack
from tests.pypi import downloaded

from cytoreview.errors import ImageReadError
from cytoreview.io import open_image


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "cytoreview.cli", *map(str, args)], capture_output=True, text=True,
                          env=child_env(), timeout=timeout)


def _one_clear_line(result):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# ------------------------------------------------------------------ openslide-python's own bad files
@pytest.fixture(scope="session")
def openslide_fixtures(tmp_path_factory):
    """``unreadable.svs`` and ``unopenable.tiff`` from openslide-python's sdist (LGPL, so fetched, not committed)."""
    pytest.importorskip("openslide")
    folder = tmp_path_factory.mktemp("openslide-sdist")
    sdist = downloaded("openslide-python", folder, "openslide*python-*.tar.gz", sdist=True, timeout_s=120)
    out = {}
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if member.isfile() and "/tests/fixtures/" in member.name and name in ("unreadable.svs", "unopenable.tiff",
                                                                                   "small.svs"):
                (folder / name).write_bytes(tar.extractfile(member).read())
                out[name] = folder / name
    if len(out) < 3:
        pytest.skip("openslide-python's sdist no longer carries its bad test files")
    return out


def test_unreadable_svs_is_refused_clearly_by_both_readers(openslide_fixtures):
    path = openslide_fixtures["unreadable.svs"]
    with pytest.raises(ImageReadError) as info:
        open_image(path)
    message = str(info.value)
    assert "unreadable.svs" in message and "openslide" in message and "decode" in message, message
    _one_clear_line(_cli("info", path))


def test_unreadable_svs_predict_exits_2_and_leaves_no_store(openslide_fixtures, tmp_path):
    pack = write_pack(tmp_path / "pack", base_card("bad-slide-pack"))
    out = tmp_path / "out"
    result = _cli("predict", openslide_fixtures["unreadable.svs"], "--model", pack, "--out", out, "--quiet")
    _one_clear_line(result)
    assert not out.exists() or not any(out.rglob("*.zarr")), list(out.rglob("*"))


def test_unopenable_tiff_is_refused_clearly(openslide_fixtures):
    path = openslide_fixtures["unopenable.tiff"]
    with pytest.raises(ImageReadError, match="unopenable.tiff"):
        open_image(path)
    _one_clear_line(_cli("info", path))


def test_openslide_fallback_keeps_the_tile_contract(openslide_fixtures):
    """A tile openslide fails on mid-slide reads blank, is reported once, and the rest still reads."""
    from cytoreview.io.openslide_reader import open_openslide

    image = open_openslide(openslide_fixtures["small.svs"])
    level = image.levels[0]
    good = image.read_region(0, 0, 16, 16)
    real = level.source.read_tile

    def failing(chunk_index):
        raise RuntimeError("Bogus marker length")

    level.source.read_tile = failing
    level._cache.clear()
    for _ in range(3):
        assert (image.read_region(0, 0, 16, 16) == 255).all()
    assert sum("cannot be decoded" in w for w in image.warnings) == 1, image.warnings
    level.source.read_tile = real
    assert good.shape == (16, 16, 3) and good.dtype == np.uint8
    image.close()


# ------------------------------------------------------------------ memory bombs
def test_bomb_field_is_left_out_before_decoding(tmp_path):
    folder = tmp_path / "fields"
    folder.mkdir()
    for k in range(2):
        PILImage.fromarray(tissue_like(40, 60, seed=k)).save(folder / f"field_{k}.png")
    tiff_bomb(folder / "field_9.tif")
    assert (folder / "field_9.tif").stat().st_size < 1024
    image = open_image(folder)
    assert image.field_names == ["field_0.png", "field_1.png"]
    assert any("field_9.tif" in w and "100000x100000" in w and "refused" in w for w in image.warnings), image.warnings
    assert image.read_region(0, 0, 64, 64).shape == (64, 64, 3)


def test_folder_of_only_bombs_is_refused(tmp_path):
    folder = tmp_path / "fields"
    folder.mkdir()
    tiff_bomb(folder / "a.tif")
    with pytest.raises(ImageReadError, match="a.tif.*claims 100000x100000"):
        open_image(folder)


def test_stripped_slide_bomb_is_refused_before_decoding(tmp_path):
    path = tiff_bomb(tmp_path / "bomb.svs")
    with pytest.raises(ImageReadError, match="bomb.svs.*refused before decoding"):
        open_image(path)
    _one_clear_line(_cli("info", path))


# ------------------------------------------------------------------ indexing decodes only the touched tiles
def _counting(level):
    seen = []
    real = level.source.read_tile

    def read_tile(chunk_index):
        seen.append(tuple(chunk_index[:2]))
        return real(chunk_index)

    level.source.read_tile = read_tile
    level._cache.clear()
    return seen


INDEXES = [
    (5,),  # one row
    (slice(None, None, 512), slice(None, None, 512)),  # a coarse step
    (-1, slice(None, None, -7)),  # negative int and step
    (slice(300, 20, -3), 700),
    (np.array([3, 1000]),),  # one index array
    (Ellipsis, 1),
]


@pytest.mark.parametrize("index", INDEXES, ids=range(len(INDEXES)))
def test_tifffile_level_indexing_decodes_only_touched_tiles(tmp_path, index):
    base = tissue_like(1024, 1024)
    image = open_image(write_pyramid(tmp_path / "s.tif", base, n_levels=2))
    level = image.levels[0]
    reference = np.asarray(level[0:1024, 0:1024])
    seen = _counting(level)
    np.testing.assert_array_equal(level[index], reference[index])
    rows = np.unique(np.arange(1024)[index[0]] // 256) if not isinstance(index[0], type(Ellipsis)) else range(4)
    assert len(set(seen)) <= 4 * len(np.atleast_1d(rows)), seen
    assert len(set(seen)) < 16 or index == (Ellipsis, 1)


def test_step_index_of_a_100k_slide_stays_bounded(huge_sparse_slide):
    """``level[::25600, ::25600]`` of a 100,000² slide decodes 16 tiles, not the 150,000 of the level."""
    image = open_image(huge_sparse_slide)
    seen = _counting(image.levels[0])
    sample = image.levels[0][::25600, ::25600]
    assert sample.shape == (4, 4, 3)
    assert len(set(seen)) == 16
    seen.clear()
    assert image.levels[0][-1, 99_000:].shape == (1000, 3) and len(set(seen)) == 5  # tiles 386-390


def test_openslide_level_integer_and_step_index(openslide_fixtures):
    from cytoreview.io.openslide_reader import open_openslide

    image = open_openslide(openslide_fixtures["small.svs"])
    level = image.levels[0]
    full = np.asarray(level[:, :])
    np.testing.assert_array_equal(level[5], full[5])
    np.testing.assert_array_equal(level[::3, ::5], full[::3, ::5])
    with tifffile.TiffFile(openslide_fixtures["small.svs"]) as tif:
        direct = tif.pages[0].asarray()
    assert np.abs(full.astype(int) - direct[..., :3].astype(int)).max() <= 2
    image.close()


def test_openslide_level_reads_tiles_not_the_level(tmp_path):
    """The openslide reader (on a generic tiled TIFF) decodes only the tiles an integer or step index touches."""
    pytest.importorskip("openslide")
    from cytoreview.io.openslide_reader import open_openslide

    base = tissue_like(2048, 2048)
    path = tmp_path / "generic.tif"
    tifffile.imwrite(path, base, tile=(256, 256), photometric="rgb", compression="jpeg")
    image = open_openslide(path)
    level = image.levels[0]
    seen = _counting(level)
    row = level[600]
    assert row.shape == (2048, 3) and len(set(seen)) == 4  # one row of 512² tiles
    seen.clear()
    level._cache.clear()
    assert level[::1024, ::1024].shape == (2, 2, 3) and len(set(seen)) == 4
    image.close()


# ------------------------------------------------------------------ field sets: pages and pixel types by rule
def test_multipage_field_with_mixed_page_sizes_keeps_the_valid_pages(tmp_path):
    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as tw:
        for side, value in ((100, 10), (50, 20), (100, 30)):
            tw.write(np.full((side, side, 3), value, np.uint8), photometric="rgb")
    image = open_image(path)
    assert image.n_z == 2
    assert [int(image.read_plane(z=k)[0, 0, 0]) for k in range(2)] == [10, 30]
    assert any("page 1 is 50x50" in w and "left out" in w for w in image.warnings), image.warnings


@pytest.fixture
def mixed_fields(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    base = tissue_like(40, 60)
    PILImage.fromarray(base).save(folder / "a_rgb.png")
    nan = base.astype(np.float32) / 255
    nan[:5, :5] = np.nan
    tifffile.imwrite(folder / "b_nan.tif", nan, photometric="rgb")
    tifffile.imwrite(folder / "c_16bit.tif", np.full((40, 60, 3), 7, np.uint16), photometric="rgb")
    PILImage.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(folder / "d_grey.png")
    rgba = np.dstack([base, np.zeros((40, 60), np.uint8)])
    rgba[:, 30:, 3] = 255
    PILImage.fromarray(rgba).save(folder / "e_rgba.png")
    tifffile.imwrite(folder / "f_rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    big16 = (base.astype(np.uint16) * 257)
    PILImage.fromarray(big16[..., 0]).save(folder / "g_16bit.png")
    return folder, base


def test_fields_of_odd_pixel_types_convert_by_rule_with_warnings(mixed_fields):
    folder, base = mixed_fields
    image = open_image(folder)
    names = image.field_names
    assert names == sorted(p.name for p in folder.iterdir())
    pixels = {name: image.read_plane(field=i) for i, name in enumerate(names)}
    # NaN shows white (like glass, as blank tiles do); the rest is the 0-1 float scaled to 8 bits
    assert (pixels["b_nan.tif"][:5, :5] == 255).all()
    assert np.abs(pixels["b_nan.tif"][5:, 5:].astype(int) - base[5:, 5:]).max() <= 1
    # 16-bit by the dtype range: a constant 7 stays near black, never stretched to white
    assert (pixels["c_16bit.tif"] == 0).all()
    assert np.abs(pixels["g_16bit.png"].astype(int) - base[..., :1]).max() <= 1
    # transparency composited on white, opaque part kept
    for name in ("e_rgba.png", "f_rgba.tif"):
        assert (pixels[name][:, :30] == 255).all(), name
        np.testing.assert_array_equal(pixels[name][:, 30:], base[:, 30:])
    assert (pixels["d_grey.png"] == 128).all()
    warnings = "\n".join(image.warnings)
    for expected in ("b_nan.tif: float32", "NaN", "c_16bit.tif: uint16", "e_rgba.png: transparency",
                     "f_rgba.tif: transparency", "d_grey.png: the whole field is one flat value (128)",
                     "g_16bit.png: uint16"):
        assert expected in warnings, (expected, warnings)


def test_info_lists_header_level_conversions(mixed_fields):
    folder, _ = mixed_fields
    result = _cli("info", folder, "--json")
    assert result.returncode == 0, result.stderr
    warnings = json.loads(result.stdout)["warnings"]
    assert any("c_16bit.tif" in w for w in warnings) and any("e_rgba.png" in w for w in warnings)


# ------------------------------------------------------------------ truncated JPEG fields
@pytest.fixture
def truncated_jpeg_fields(tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()
    for k in range(3):
        PILImage.fromarray(tissue_like(256, 384, seed=k)).save(folder / f"field_{k}.jpg", quality=90)
    data = (folder / "field_1.jpg").read_bytes()
    (folder / "field_1.jpg").write_bytes(data[: len(data) // 2])
    return folder


def test_info_reports_a_truncated_jpeg_field(truncated_jpeg_fields):
    result = _cli("info", truncated_jpeg_fields)
    assert result.returncode == 0, result.stderr
    assert "field_1.jpg: JPEG is truncated" in result.stdout, result.stdout
    assert "field_0.jpg" not in result.stdout.split("warning:", 1)[-1]


def test_predict_summary_names_the_truncated_field_and_marks_its_tiles(truncated_jpeg_fields, tmp_path):
    import zarr

    card = base_card("trunc-pack", input={"mpp": 0.293, "size_px": 16})
    pack = write_pack(tmp_path / "pack", card)
    out = tmp_path / "out"
    result = _cli("predict", truncated_jpeg_fields, "--model", pack, "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "field_1.jpg" in result.stderr and "marked unpredicted" in result.stderr, result.stderr
    store = zarr.open_group(result.stdout.strip().splitlines()[-1], mode="r")
    tile_class = np.asarray(store["tile_class"])
    assert (tile_class[1] == -1).all() and (tile_class[0] >= 0).all() and (tile_class[2] >= 0).all()


# ------------------------------------------------------------------ cut-short slides
def test_cut_short_slide_warns_at_open_about_lost_levels(tmp_path, caplog):
    path = write_pyramid(tmp_path / "full.tif", tissue_like(1024, 1024), n_levels=3, layout="chain")
    data = path.read_bytes()
    cut = tmp_path / "half.svs"
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        image = open_image(cut)
    lost = [w for w in image.warnings if "cut short" in w]
    assert any("pages stored after" in w for w in lost) and any("tiles of level 0" in w for w in lost), image.warnings
    result = _cli("info", cut)
    assert result.returncode == 0 and "cut short" in result.stdout
    assert not open_image(path).warnings


def test_predict_into_a_project_reports_the_truncated_field_in_its_notes(truncated_jpeg_fields, tmp_path):
    """The notes a project run returns are what the predict dock shows after a run."""
    from cytoreview.workflows import predict_into_project

    pack = write_pack(tmp_path / "pack", base_card("trunc-pack2", input={"mpp": 0.293, "size_px": 16}))
    run = predict_into_project(truncated_jpeg_fields, pack, tmp_path / "proj", create=True, threads=1)
    assert run.complete
    assert any("field_1.jpg" in note and "marked unpredicted" in note for note in run.notes), run.notes
    assert any("JPEG is truncated" in note for note in run.notes), run.notes
    result = _cli("predict", truncated_jpeg_fields, "--model", pack, "--project", tmp_path / "proj", "--quiet")
    assert result.returncode == 0 and "field_1.jpg" in result.stderr, result.stderr


def test_a_level_of_failing_tiles_is_reported_without_a_flood(tmp_path):
    """Every tile failing (a sticky codec error) reads blank; the warnings stop after MAX_TILE_REPORTS + 1 lines."""
    from cytoreview.io.safe import MAX_TILE_REPORTS

    image = open_image(write_pyramid(tmp_path / "s.tif", tissue_like(2048, 2048), n_levels=2))
    level = image.levels[0]

    def failing(chunk_index):
        raise RuntimeError("slide handle in error state")

    level.source.read_tile = failing
    level._cache.clear()
    assert (image.read_region(0, 0, 2048, 2048) == 255).all()
    assert len(level.failed_tiles) == 64
    reports = [w for w in image.warnings if "s.tif level 0" in w]
    assert len(reports) == MAX_TILE_REPORTS + 1 and "more tiles" in reports[-1], reports[-3:]


def test_slide_tiles_that_read_blank_are_marked_unpredicted(tmp_path):
    """A WSI tile that cannot be decoded reads blank; the grid tiles over it are set back to "not predicted"."""
    import zarr

    from cytoreview.inference import predict
    from cytoreview.inference.predict import image_problems

    path = write_pyramid(tmp_path / "slide.tif", tissue_like(512, 768), n_levels=1)
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[4], tif.pages[0].databytecounts[4]  # tile (1, 1)
    data[offset: offset + count] = np.random.default_rng(0).integers(0, 256, count, np.uint8).tobytes()
    bad = tmp_path / "bad.tif"
    bad.write_bytes(bytes(data))
    pack = write_pack(tmp_path / "pack", base_card("blank-tiles", input={"mpp": 0.5, "size_px": 64}), size_px=64)
    store = predict(bad, pack, tmp_path / "out", threads=1, tissue_threshold=0.0)
    tile_class = np.asarray(zarr.open_group(str(store.path), mode="r")["tile_class"])[0]
    assert tile_class.shape == (8, 12)
    assert (tile_class[4:8, 4:8] == -1).all()  # level-0 px 256..512 x 256..512, 64 px tiles
    outside = np.ones_like(tile_class, bool)
    outside[4:8, 4:8] = False
    assert (tile_class[outside] >= 0).all()
    assert "16 tile(s) that read blank marked unpredicted" in image_problems(store.path)[0]
