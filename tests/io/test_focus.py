"""Focus planes collapsed: plane K, the sharpest plane, and the extended-depth-of-field plane."""

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

import cytoreview.io.focus as focus_module
from cytoreview.errors import ImageReadError
from cytoreview.io import open_image
from cytoreview.io.focus import extended_focus, focus_image, sharpness
from cytoreview.samples.focus_stack import defocus_stack, region_plane_map

N_Z = 4


def detailed_texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Cell-like dots on a pale background: fine detail that defocus visibly removes."""
    rng = np.random.default_rng(seed)
    out = np.full((height, width, 3), 235, np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(height * width // 250):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(2, 5)
        y0, y1, x0, x1 = int(max(cy - r - 1, 0)), int(min(cy + r + 2, height)), int(max(cx - r - 1, 0)), int(min(cx + r + 2, width))
        inside = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r
        out[y0:y1, x0:x1][inside] = rng.uniform(40, 140, 3)
    return out.astype(np.uint8)


@pytest.fixture
def stack_folder(tmp_path):
    """Two fields of 4 focus planes (PNG, lossless); each of 2x3 regions is sharp in its own plane."""
    folder = tmp_path / "stack"
    folder.mkdir()
    sharps, maps = [], []
    for f in range(2):
        sharp = detailed_texture(240, 360, seed=f)
        plane_map = region_plane_map(sharp.shape[:2], N_Z, rows=2, cols=3, seed=f)
        for z, plane in enumerate(defocus_stack(sharp, plane_map, N_Z)):
            PILImage.fromarray(plane).save(folder / f"field_{f}_z{z}.png")
        sharps.append(sharp)
        maps.append(plane_map)
    return folder, sharps, maps


def test_region_map_uses_every_plane():
    plane_map = region_plane_map((90, 120), 4, rows=2, cols=3, seed=3)
    assert set(np.unique(plane_map)) == {0, 1, 2, 3}


def test_edf_is_sharper_than_every_single_plane(stack_folder):
    folder, sharps, _ = stack_folder
    stack = open_image(folder)
    edf = open_image(folder, focus="edf")
    assert stack.n_z == N_Z and edf.n_z == 1 and edf.shape == (2, 240, 360, 3)
    assert edf.metadata["focus"] == "edf" and edf.metadata["focus_planes"] == N_Z
    for f in range(2):
        planes = [stack.read_plane(0, f, z) for z in range(N_Z)]
        fused = edf.read_plane(0, f)
        best_single = max(sharpness(p) for p in planes)
        assert sharpness(fused) > 1.2 * best_single
        # and it is closer to the truth than any single plane
        error = lambda a: float(np.abs(a.astype(float) - sharps[f]).mean())  # noqa: E731
        assert error(fused) < min(error(p) for p in planes)


def test_best_and_plane_k(stack_folder):
    folder, _, _ = stack_folder
    stack = open_image(folder)
    planes = [stack.read_plane(0, 1, z) for z in range(N_Z)]
    best = open_image(folder, focus="best").read_plane(0, 1)
    assert any(np.array_equal(best, p) for p in planes)
    assert sharpness(best) == pytest.approx(max(sharpness(p) for p in planes))
    np.testing.assert_array_equal(open_image(folder, focus=2).read_plane(0, 1), planes[2])
    np.testing.assert_array_equal(open_image(folder, focus="3").read_region(10, 20, 30, 40, field=1),
                                  planes[3][10:40, 20:60])


def test_edf_is_lazy_and_computed_once_per_field(stack_folder, monkeypatch):
    folder, _, _ = stack_folder
    calls = []
    original = focus_module.extended_focus
    monkeypatch.setattr(focus_module, "extended_focus", lambda planes, *a: calls.append(1) or original(planes, *a))
    edf = open_image(folder, focus="edf")
    assert calls == []
    for row in range(0, 240, 60):  # patch-sized reads, as inference makes them
        edf.read_region(row, 0, 60, 60, field=1)
    assert len(calls) == 1


def test_seams_are_blended_not_stepped():
    """Two flat planes, left half chosen from one and right half from the other: the step becomes a ramp."""
    a = np.full((96, 192, 3), 50, np.uint8)
    b = np.full((96, 192, 3), 150, np.uint8)
    index = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    out = focus_module.blend_planes([a, b], index, block_px=48, seam_px=12)
    row = out[40, :, 0].astype(int)
    assert row[0] == 50 and row[-1] == 150
    assert np.all(np.diff(row) >= 0) and np.max(np.diff(row)) <= 100 / 12 + 1
    assert ((row > 50) & (row < 150)).sum() >= 10


def test_single_plane_images_pass_through(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    PILImage.fromarray(detailed_texture(60, 80)).save(folder / "f.png")
    image = open_image(folder)
    assert focus_image(image, "edf") is image and focus_image(image, 0) is image
    with pytest.raises(ImageReadError, match="focus plane 1 out of range"):
        open_image(folder, focus=1)


@pytest.mark.parametrize("bad", ["sharpest", -1, "1.5", True])
def test_bad_focus_is_a_clear_error(stack_folder, bad):
    folder, _, _ = stack_folder
    with pytest.raises(ImageReadError, match="focus"):
        open_image(folder, focus=bad)


def test_multipage_tiff_fields(tmp_path):
    folder = tmp_path / "mp"
    folder.mkdir()
    sharp = detailed_texture(120, 150, seed=5)
    planes = defocus_stack(sharp, region_plane_map(sharp.shape[:2], 3, rows=1, cols=3), 3)
    tifffile.imwrite(folder / "f0.tif", np.stack(planes), photometric="rgb")
    fused = open_image(folder, focus="edf").read_plane(0, 0)
    assert sharpness(fused) > max(sharpness(p) for p in planes)


def test_extended_focus_of_one_plane_is_that_plane():
    plane = detailed_texture(50, 70)
    assert extended_focus([plane]) is plane
