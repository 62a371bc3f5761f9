"""Train the ``node-tumor`` model pack from synthetic lymph-node whole-slide images (development tool).

Reproduces ``model.onnx`` and ``cytoreview.yaml`` in this folder::

    PYTHONPATH=src python plugins/node-tumor/train.py [--work-dir DIR] [--out-dir DIR] [--evaluate-only]

Needs torch (CPU) besides cytoreview; the shipped pack itself runs with onnxruntime alone. The training loop, ONNX
export and evaluation are the shared recipe in ``plugins/pack_training.py``; this file holds the pack's data and
label rule. ``--evaluate-only`` keeps ``model.onnx`` and only re-measures ``provenance.metrics``.

Data
----
Training slides are rendered with :func:`cytoreview.samples.make_lymph_node_slide` (seeds ``TRAIN_SEEDS``, side
``TRAIN_SIZE_PX``), held-out slides with seeds ``HELDOUT_SEEDS``; the demo slide (seed 0, 16384 px, what
:func:`cytoreview.samples.lymph_node_slide` returns) is never trained on. Each slide is cut into the tile grid the
inference engine uses (64 px at 2 um/px = pyramid level 1, downsample 4, of the 0.5 um/px slide: no resampling),
and each tile is labelled from the tumour mask (``<stem>_tumor_mask.tif``, downsample 32: 8 x 8 mask pixels per
tile). Every tissue tile is kept; glass tiles are subsampled (``BACKGROUND_KEEP``); tumour tiles (a few percent of a
slide) are repeated ``TUMOUR_REPEAT`` times per epoch (and the loss is class-weighted).

Tile ground truth -- ``cytoreview.samples.truth.pack_tile_labels``, the rule the pack tests and
``benchmarks/bench_refit.py`` use too: mask classes 0 glass, 1 node tissue, 2 tumour map 1:1 to the pack classes; a
tile is tumour whenever tumour covers >= 25 % of its mask pixels, else normal node when node tissue covers >= 25 %,
else the majority class.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # plugins/pack_training.py
from pack_training import TileRecipe, main  # noqa: E402

from cytoreview.samples.truth import pack_tile_labels  # noqa: E402

HERE = Path(__file__).resolve().parent
TRAIN_SEEDS = (1, 2, 3, 4, 5)
TRAIN_SIZE_PX = 12288
HELDOUT_SEEDS = (101, 102)
HELDOUT_SIZE_PX = 8192
MIN_FRAC = 0.25
#: Tile labelling rule for ``pack_tile_labels`` on the tumour mask (0 glass, 1 node tissue, 2 tumour).
LABEL_RULE = {"class_map": [0, 1, 2], "priority": [1], "min_frac": MIN_FRAC, "override": [(2, MIN_FRAC)]}
BACKGROUND_KEEP = 0.15
TUMOUR_REPEAT = 2


def slide_for(work: Path, seed: int, size_px: int) -> Path:
    """The generated slide of ``seed`` and side ``size_px`` in ``work`` (rendered on first use)."""
    from cytoreview.samples import make_lymph_node_slide

    path = work / f"node_seed{seed}_{size_px}" / "lymph_node.tif"
    if not path.with_suffix(".json").is_file():
        make_lymph_node_slide(path, size_px=size_px, seed=seed)
    return path


def slide_truth(recipe: TileRecipe, slide: Path, plane: int, tile_px_level0: int) -> np.ndarray:
    """Tile labels of a generated slide from its ``<stem>_tumor_mask.tif`` (downsample read from ``<stem>.json``)."""
    import tifffile

    meta = json.loads(slide.with_suffix(".json").read_text())
    mask = tifffile.imread(slide.with_name(f"{slide.stem}_tumor_mask.tif"))
    ds = int(meta["mask_downsample"])
    if tile_px_level0 % ds:
        raise ValueError(f"{slide}: tile of {tile_px_level0} px is not a whole number of mask pixels ({ds})")
    labels, _ = pack_tile_labels(mask, tile_px_level0 // ds, recipe.label_rule)
    return labels


def slide_tiles(recipe: TileRecipe, slide: Path, rng: np.random.Generator):
    """Tissue tiles and a random ``BACKGROUND_KEEP`` share of glass tiles of one slide: patches, labels."""
    from cytoreview.inference.grid import make_grid
    from cytoreview.io import open_image

    patches, labels = [], []
    with open_image(slide) as image:
        grid = make_grid(image, recipe.pack_stub())
        if grid.resample:
            raise RuntimeError(f"{slide}: expected a pyramid level at {recipe.mpp} um/px (no resampling)")
        lab = slide_truth(recipe, slide, 0, grid.tile_px_level0)[: grid.n_rows, : grid.n_cols]
        keep = (lab > 0) | (rng.random(lab.shape) < BACKGROUND_KEEP)
        for r, c in np.argwhere(keep):
            patches.append(grid.read_tile(image, 0, int(r), int(c)))
            labels.append(lab[r, c])
    return np.stack(patches), np.asarray(labels, dtype=np.int64)


def training_tiles(work: Path, recipe: TileRecipe, rng: np.random.Generator):
    tiles = [slide_tiles(recipe, slide_for(work, seed, TRAIN_SIZE_PX), rng) for seed in TRAIN_SEEDS]
    return np.concatenate([x for x, _ in tiles]), np.concatenate([y for _, y in tiles])


def reference_case(args):
    """The seed-0 demo slide (rendered into the user cache on first use), unless ``--skip-demo-slide``."""
    from cytoreview.samples import lymph_node_slide

    return None if args.skip_demo_slide else ("demo_slide_seed0", lymph_node_slide())


def add_arguments(parser) -> None:
    parser.add_argument("--skip-demo-slide", action="store_true", help="do not evaluate on the seed-0 demo slide")


RECIPE = TileRecipe(
    name="node-tumor",
    version="1.0.0",
    size_px=64,
    mpp=2.0,  # level 1 (downsample 4) of a 0.5 um/px slide: a 64 px tile is 128 um
    classes=[
        {"id": 0, "name": "background", "color": "#f2f0ec", "hotkey": "1", "level": "tile"},
        {"id": 1, "name": "normal node", "color": "#5b4ea8", "hotkey": "2", "level": "tile"},
        {"id": 2, "name": "tumour", "color": "#d62728", "hotkey": "3", "level": "tile"},
    ],
    label_rule=LABEL_RULE,
    description=(
        "Tile classifier for H&E lymph-node whole-slide images: background (glass), normal node tissue, "
        "metastatic tumour; 128 um tiles read at 2 um/px. Trained on synthetic slides only; not for clinical use."
    ),
    training_tiles=training_tiles,
    training_set=lambda n: (
        f"cytoreview.samples.make_lymph_node_slide, seeds {list(TRAIN_SEEDS)} at size_px={TRAIN_SIZE_PX} ({n} tiles: "
        f"all tissue tiles, {BACKGROUND_KEEP:.0%} of glass tiles); held out: seeds {list(HELDOUT_SEEDS)} at "
        f"size_px={HELDOUT_SIZE_PX} and the seed-0 demo slide (size_px=16384)"
    ),
    heldout_cases=lambda work: [slide_for(work, seed, HELDOUT_SIZE_PX) for seed in HELDOUT_SEEDS],
    reference_case=reference_case,
    open_case=lambda slide: slide,
    case_truth=slide_truth,
    add_arguments=add_arguments,
    repeat={2: TUMOUR_REPEAT},
)

if __name__ == "__main__":
    raise SystemExit(main(RECIPE, HERE, __doc__.splitlines()[0]))
