"""Slides and field sets written in fixtures."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage


def tissue_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB texture (JPEG-friendly, not noise) so lossy round trips stay comparable."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 6.28, 3)
    channels = [
        127 + 100 * np.sin(xx / (23 + 7 * k) + phase[k]) * np.cos(yy / (31 + 5 * k) + phase[k]) for k in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


def write_pyramid(path: Path, base: np.ndarray, n_levels: int = 3, layout: str = "subifd", mpp: float = 0.5,
                  ome: bool = False, compression: str = "jpeg") -> Path:
    """Write a tiled pyramid with factor-2 levels, as SubIFDs or as a chain of reduced IFDs."""
    levels = [base]
    for _ in range(n_levels - 1):
        levels.append(levels[-1][::2, ::2])
    resolution = (1e4 / mpp, 1e4 / mpp)
    options = dict(tile=(256, 256), compression=compression, photometric="rgb")
    with tifffile.TiffWriter(path, bigtiff=True, ome=ome) as tw:
        if layout == "subifd":
            tw.write(levels[0], subifds=n_levels - 1, resolution=resolution, resolutionunit="CENTIMETER",
                     metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp} if ome else None,
                     **options)
            for level in levels[1:]:
                tw.write(level, subfiletype=1, metadata=None, **options)
        else:
            tw.write(levels[0], resolution=resolution, resolutionunit="CENTIMETER", metadata=None, **options)
            for level in levels[1:]:
                tw.write(level, subfiletype=1, metadata=None, **options)
    return path


@pytest.fixture
def base_rgb():
    return tissue_like(1024, 1536)


@pytest.fixture(params=["subifd", "ifd-chain"])
def pyramid_tif(request, tmp_path, base_rgb):
    return write_pyramid(tmp_path / f"slide-{request.param}.tif", base_rgb, layout=request.param)


def write_fields(folder: Path, n: int, height: int = 60, width: int = 96, suffix: str = ".jpg",
                 names=None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        name = names[i] if names else f"field_{i:03d}{suffix}"
        path = folder / name
        PILImage.fromarray(tissue_like(height, width, seed=i)).save(path, quality=95)
        paths.append(path)
    return paths


@pytest.fixture
def field_folder(tmp_path):
    folder = tmp_path / "case"
    write_fields(folder, 5)
    return folder


@pytest.fixture(scope="session")
def huge_sparse_slide(tmp_path_factory):
    """A 100,000 x 100,000 px level-0 pyramid written sparsely in well under a second (empty tiles are not stored)."""
    path = tmp_path_factory.mktemp("huge") / "huge.tif"
    n = 100_000
    tile = tissue_like(256, 256)

    def tiles(size):
        count = (-(-size // 256)) ** 2
        for i in range(count):
            yield tile if i % 997 == 0 else None

    options = dict(dtype="uint8", tile=(256, 256), compression="jpeg", photometric="rgb", metadata=None)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(tiles(n), shape=(n, n, 3), subifds=3, resolution=(1e4 / 0.25, 1e4 / 0.25),
                 resolutionunit="CENTIMETER", **options)
        for size in (n // 4, n // 16):
            tw.write(tiles(size), shape=(size, size, 3), subfiletype=1, **options)
        small = n // 64
        tw.write(tissue_like(small, small), subfiletype=1, **{k: v for k, v in options.items() if k != "dtype"})
    return path
