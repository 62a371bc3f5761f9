"""Small data for the workflow tests: a tiny refittable pack (16 px, 0.5 µm/px, red / green / blue with an embedding
output), a slide of coloured tiles and a field set of the same tiles, all made in the test's tmp folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.train.conftest import MPP, TILE_PX, tile_slide, write_pack, write_tiff


def write_tile_fields(folder: Path, n_fields: int = 3, rows: int = 4, cols: int = 6, seed: int = 10,
                      case_id: str | None = "fs-case", mpp: float | None = MPP) -> tuple[Path, np.ndarray]:  # fmt: skip
    """PNG fields of coloured 16 px tiles; returns (folder, truth of shape (n_fields, rows, cols))."""
    folder.mkdir(parents=True, exist_ok=True)
    truths = []
    for i in range(n_fields):
        arr, truth = tile_slide(rows, cols, seed=seed + i)
        PILImage.fromarray(arr).save(folder / f"field_{i:03d}.png")
        truths.append(truth)
    meta = {}
    if mpp is not None:
        meta["mpp"] = mpp
    if case_id is not None:
        meta["case_id"] = case_id
    if meta:
        (folder / "cytoscan.json").write_text(json.dumps(meta))
    return folder, np.stack(truths)


@pytest.fixture
def pack(tmp_path) -> Path:
    return write_pack(tmp_path / "packs" / "tiny-tiles")


@pytest.fixture
def slide(tmp_path) -> tuple[Path, np.ndarray]:
    arr, truth = tile_slide()
    return write_tiff(tmp_path / "slide.tif", arr), truth


@pytest.fixture
def fields(tmp_path) -> tuple[Path, np.ndarray]:
    return write_tile_fields(tmp_path / "case-fields")


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """``cytoreview.cli.main`` with no bundled packs and no $CYTOREVIEW_MODEL_PATH (the tests name their packs)."""
    import cytoreview.cli

    monkeypatch.delenv("CYTOREVIEW_MODEL_PATH", raising=False)
    monkeypatch.setattr("cytoreview._paths.bundled_dir", lambda name: tmp_path / "no-bundled")
    return cytoreview.cli.main


def tree(folder: Path) -> set[str]:
    """Every path under ``folder`` (relative), to prove a failed command left nothing behind."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


__all__ = ["MPP", "TILE_PX", "tree", "write_tile_fields"]
