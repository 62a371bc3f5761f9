"""Fixtures for the inference tests: tiny in-memory images and packs with tiny ONNX graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.models.onnx_graphs import base_card, classifier_graph, write_pack

from cytoreview.io.image import Image


def blob_slide(height=96, width=128, seed=0) -> np.ndarray:
    """White glass with saturated coloured squares in some 16 px tiles (at 0.5 um/px) and empty ones elsewhere."""
    rng = np.random.default_rng(seed)
    arr = np.full((height, width, 3), 245, dtype=np.uint8)
    colours = np.array([[200, 40, 40], [40, 190, 60], [50, 60, 200]], dtype=np.uint8)
    for r in range(0, height, 16):
        for c in range(0, width, 16):
            if rng.random() < 0.45:
                arr[r : r + 16, c : c + 16] = colours[rng.integers(3)] + rng.integers(0, 20, (16, 16, 3)).astype(
                    np.uint8
                )
    return arr


def pyramid(arr: np.ndarray, n_levels: int) -> list[np.ndarray]:
    levels = [arr]
    for _ in range(n_levels - 1):
        prev = levels[-1].astype(np.float32)
        h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
        levels.append(prev[:h:2, :w:2] / 4 + prev[1:h:2, :w:2] / 4 + prev[:h:2, 1:w:2] / 4 + prev[1:h:2, 1:w:2] / 4)
        levels[-1] = np.rint(levels[-1]).astype(np.uint8)
    return levels


def wsi(arr: np.ndarray, mpp: float = 0.5, n_levels: int = 1, path: Path = Path("/tmp/slide.tif")) -> Image:
    return Image(path=path, kind="wsi", levels=pyramid(arr, n_levels), mpp=mpp, reader="test")


@pytest.fixture
def make_pack(tmp_path):
    """``make_pack(name, graph_fn=..., card=..., **graph_kwargs) -> folder``."""

    def factory(name="test-pack", graph_fn=classifier_graph, card=None, **graph_kwargs):
        return write_pack(tmp_path / "packs" / name, card or base_card(name), graph_fn, **graph_kwargs)

    return factory


@pytest.fixture
def slide(tmp_path) -> Image:
    """A 96 x 128 px WSI at 0.5 um/px with coloured tiles on white."""
    return wsi(blob_slide(), path=tmp_path / "slide.tif")


def write_tiff(path: Path, arr: np.ndarray, mpp: float = 0.5) -> Path:
    """A tiled TIFF with its pixel size in the resolution tags (pixels per centimetre)."""
    import tifffile

    per_cm = 1e4 / mpp
    tifffile.imwrite(path, arr, tile=(16, 16), photometric="rgb", resolution=(per_cm, per_cm), resolutionunit=3)
    return path


@pytest.fixture
def image_opener(monkeypatch):
    """Make ``cytoreview.io.open_image`` available: the real reader once it is on this branch, else a tifffile one."""
    import cytoreview.io as cio

    if hasattr(cio, "open_image"):
        return cio.open_image

    def open_tiff(path, mpp=None):
        import tifffile

        path = Path(path)
        if not path.is_file():
            from cytoreview.errors import ImageReadError

            raise ImageReadError(f"{path}: no such file or folder")
        with tifffile.TiffFile(path) as tif:
            arr = tif.pages[0].asarray()
            num, den = tif.pages[0].tags["XResolution"].value
        return Image(path=path, kind="wsi", levels=[arr], mpp=mpp or 1e4 / (num / den), reader="tifffile")

    monkeypatch.setattr(cio, "open_image", open_tiff, raising=False)
    return open_tiff


class CountingSession:
    """Wraps a PackSession and counts the patches it runs."""

    def __init__(self, session):
        self.inner = session
        self.calls = 0
        self.patches = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run_prepared(self, x):
        self.calls += 1
        self.patches += len(x)
        return self.inner.run_prepared(x)

    def run(self, patches):
        return self.run_prepared(self.inner.preprocess(patches))
