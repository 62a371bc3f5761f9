"""Lymph node WSI: pyramid layout, resolution, mask consistency, determinism, speed."""

import json

import numpy as np
import pytest
import tifffile

from cytoreview.errors import CytoreviewError


def test_pyramid_levels_and_resolution(small_slide):
    path, _ = small_slide
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 1  # reduced levels are SubIFDs, not top-level pages
        series = tif.series[0]
        assert [lvl.shape for lvl in series.levels] == [(4096, 4096, 3), (1024, 1024, 3), (256, 256, 3)]
        page = tif.pages[0]
        assert page.is_tiled and page.tilewidth == 256 and page.tilelength == 256
        assert page.compression == tifffile.COMPRESSION.JPEG
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        num, den = page.tags["XResolution"].value
        assert 1e4 / (num / den) == pytest.approx(0.5)
        sub = series.levels[1].keyframe
        num, den = sub.tags["XResolution"].value
        assert 1e4 / (num / den) == pytest.approx(2.0)
        region = series.levels[0].asarray()[0:256, 0:256]
        assert region.dtype == np.uint8


def test_mask_and_metadata_match_the_image(small_slide):
    path, _ = small_slide
    info = json.loads(path.with_name("lymph_node.json").read_text())
    assert info["mpp"] == 0.5 and info["mask_downsample"] == 32 and info["case_id"]
    mask = tifffile.imread(path.with_name("lymph_node_tumor_mask.tif"))
    assert mask.shape == (128, 128) and mask.dtype == np.uint8
    counts = np.bincount(mask.ravel(), minlength=3)
    assert counts.tolist() == info["mask_pixel_counts"]
    assert counts[0] > counts[1] > counts[2] > 0  # mostly glass, some node, a tumour inside
    with tifffile.TiffFile(path) as tif:
        level = tif.series[0].levels[1].asarray()  # downsample 4
    # mask pixel (i, j) covers level-1 block [8i, 8i+8) x [8j, 8j+8)
    blocks = level.reshape(128, 8, 128, 8, 3).mean(axis=(1, 3))
    glass = blocks[mask == 0]
    node = blocks[mask == 1]
    tumour = blocks[mask == 2]
    assert np.median(glass.mean(axis=1)) > 235  # glass is flat near-white
    assert node.mean() < 200 and tumour.mean() < 215
    # tumour nests are pinker (red over blue) than the blue lymphoid tissue
    assert (tumour[:, 0] - tumour[:, 2]).mean() > (node[:, 0] - node[:, 2]).mean() + 10


def test_small_slide_is_fast_and_small(small_slide):
    path, seconds = small_slide
    assert seconds < 40, f"4096 px slide took {seconds:.1f} s"
    assert path.stat().st_size < 6e6


def test_deterministic(tmp_path):
    from cytoreview.samples import make_lymph_node_slide

    a = make_lymph_node_slide(tmp_path / "a" / "lymph_node.tif", size_px=1024, seed=3)
    b = make_lymph_node_slide(tmp_path / "b" / "lymph_node.tif", size_px=1024, seed=3)
    assert a.read_bytes() == b.read_bytes()
    assert (a.with_name("lymph_node_tumor_mask.tif").read_bytes()
            == b.with_name("lymph_node_tumor_mask.tif").read_bytes())


@pytest.mark.parametrize("size_px", [1000, 512, 0])
def test_bad_size_is_refused(tmp_path, size_px):
    from cytoreview.samples import make_lymph_node_slide

    with pytest.raises(CytoreviewError, match="size_px"):
        make_lymph_node_slide(tmp_path / "x.tif", size_px=size_px)
