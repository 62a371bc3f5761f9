"""Fixtures for the bundled model packs: where they are, and tile ground truth from the sample generators' labels.

:func:`tile_labels` is :func:`cytoreview.samples.truth.pack_tile_labels`, the labelling rule every pack's
``train.py`` uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"
SAMPLE_DATA = REPO / "sample_data"
PACK_NAMES = ("warthin-tiles", "effusion-atypia", "node-tumor")

#: Per pack: how ground-truth ids become pack classes and which cell classes take a tile (see ``tile_labels``).
LABEL_RULES = {
    "warthin-tiles": {"class_map": [0, 1, 2, 3], "priority": [2, 3], "min_frac": 0.25},
    "effusion-atypia": {"class_map": [0, 1, 1, 1, 2], "priority": [1], "min_frac": 0.10, "override": [(2, 0.10)]},
    "node-tumor": {"class_map": [0, 1, 2], "priority": [1], "min_frac": 0.25, "override": [(2, 0.25)]},
}


from cytoreview.samples.truth import pack_tile_labels as tile_labels  # noqa: F401 - the rule every pack uses


def field_set_truth(case_dir: Path, tile_px: int, rule: dict) -> np.ndarray:
    """Tile labels ``(n_fields, n_rows, n_cols)`` of a generated field set from ``ground_truth/labelmap_*.png``."""
    maps = sorted((Path(case_dir) / "ground_truth").glob("labelmap_*.png"))
    return np.stack([tile_labels(np.asarray(PILImage.open(p)), tile_px, rule)[0] for p in maps])


def slide_truth(slide: Path, tile_px_level0: int, rule: dict) -> np.ndarray:
    """Tile labels ``(n_rows, n_cols)`` of a generated lymph-node slide from its tumour mask."""
    import tifffile

    meta = json.loads(Path(slide).with_suffix(".json").read_text())
    ds = int(meta["mask_downsample"])
    assert tile_px_level0 % ds == 0, f"tile {tile_px_level0} px is not whole mask pixels ({ds})"
    mask = tifffile.imread(Path(slide).with_name(f"{Path(slide).stem}_tumor_mask.tif"))
    return tile_labels(mask, tile_px_level0 // ds, rule)[0]


def decoded_field_set(case_dir: Path):
    """The field set opened with ``open_image`` and decoded into memory (same pixels, read once).

    ``Image.read_region`` on a lazily opened field set decodes the whole JPEG field for every tile it cuts, which
    makes a full ``predict`` on a sample case take tens of seconds on this machine; decoding each field once keeps
    these tests fast while ``predict`` runs unchanged.
    """
    from cytoreview.io import Image, open_image

    with open_image(case_dir) as lazy:
        planes = np.stack([lazy.read_plane(0, f) for f in range(lazy.n_fields)])
        return Image(path=lazy.path, kind="fields", levels=[planes], mpp=lazy.mpp, reader="memory")


def confusion(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix (rows truth, columns prediction) over predicted tiles (``pred >= 0``)."""
    run = pred >= 0
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (truth[run], pred[run]), 1)
    return out


@pytest.fixture(scope="session")
def node_slide(tmp_path_factory):
    """A small lymph-node slide (4096 px) from a seed no pack was trained or evaluated on."""
    from cytoreview.samples import make_lymph_node_slide

    return make_lymph_node_slide(tmp_path_factory.mktemp("node") / "lymph_node.tif", size_px=4096, seed=7)
