"""Train the ``warthin-tiles`` model pack from synthetic Warthin tumour FNA field sets (development tool).

Reproduces ``model.onnx`` and ``cytoreview.yaml`` in this folder::

    PYTHONPATH=src python plugins/warthin-tiles/train.py [--work-dir DIR] [--out-dir DIR] [--evaluate-only]

Needs torch (CPU) besides cytoreview; the shipped pack itself runs with onnxruntime alone. The training loop, ONNX
export and evaluation are the shared recipe in ``plugins/pack_training.py``; this file holds the pack's data and
label rule. ``--evaluate-only`` keeps ``model.onnx`` and only re-measures ``provenance.metrics``.

Data
----
Training field sets are rendered with :func:`cytoreview.samples.make_warthin_fields` (seeds ``TRAIN_SEEDS``,
``N_FIELDS`` fields each), held-out sets with seeds ``HELDOUT_SEEDS``; the committed case ``sample_data/warthin_fna``
(seed 0) is never trained on. Every tile of every field is used.

Tile ground truth -- ``cytoreview.samples.truth.pack_tile_labels``, the rule the pack tests and
``benchmarks/bench_refit.py`` use too: the fraction of each pack class among the in-image pixels of the tile; the
tile takes the majority class, unless a "priority" class (oncocytic epithelium, lymphocytes) covers at least
``PRIORITY_MIN_FRAC`` of it, in which case the priority class with the largest fraction wins (cells matter more than
background).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # plugins/pack_training.py
from pack_training import TileRecipe, decoded, field_set_tiles, field_set_truth, main  # noqa: E402

HERE = Path(__file__).resolve().parent
TRAIN_SEEDS = tuple(range(1, 9))
HELDOUT_SEEDS = (101, 102)
N_FIELDS = 8
PRIORITY_MIN_FRAC = 0.25
#: Tile labelling rule for ``pack_tile_labels``: ground-truth ids map 1:1 to pack ids; oncocytic epithelium or
#: lymphocytes take a tile when they cover >= 25 % of it (the larger of the two when both do).
LABEL_RULE = {"class_map": [0, 1, 2, 3], "priority": [2, 3], "min_frac": PRIORITY_MIN_FRAC}


def case(work: Path, seed: int) -> Path:
    """The generated field set of ``seed`` in ``work`` (rendered on first use)."""
    from cytoreview.samples import make_warthin_fields

    folder = work / f"warthin_seed{seed}"
    if not (folder / "ground_truth" / f"labelmap_{N_FIELDS - 1:03d}.png").is_file():
        make_warthin_fields(folder, n_fields=N_FIELDS, seed=seed)
    return folder


def training_tiles(work: Path, recipe: TileRecipe, rng: np.random.Generator):
    """Every tile of the training field sets."""
    tiles = [field_set_tiles(case(work, seed), recipe)[:2] for seed in TRAIN_SEEDS]
    return np.concatenate([x for x, _ in tiles]), np.concatenate([y for _, y in tiles])


def add_arguments(parser) -> None:
    parser.add_argument("--sample-case", type=Path, default=HERE.parents[1] / "sample_data" / "warthin_fna")


RECIPE = TileRecipe(
    name="warthin-tiles",
    version="1.0.0",
    size_px=64,
    mpp=1.172,  # 4 x 0.293 um/px: a 64 px tile is 75 um
    classes=[
        {"id": 0, "name": "clean background", "color": "#e4e2dc", "hotkey": "1", "level": "tile"},
        {"id": 1, "name": "dirty background", "color": "#8e7f9a", "hotkey": "2", "level": "tile"},
        {"id": 2, "name": "oncocytic epithelium", "color": "#f08c28", "hotkey": "3", "level": "tile"},
        {"id": 3, "name": "lymphocytes", "color": "#23329b", "hotkey": "4", "level": "tile"},
    ],
    label_rule=LABEL_RULE,
    description=(
        "Tile classifier for Warthin tumour FNA field sets (Papanicolaou): clean background, dirty background, "
        "oncocytic epithelium, lymphocytes; 75 um tiles. Trained on synthetic data only; not for clinical use."
    ),
    training_tiles=training_tiles,
    training_set=lambda n: (f"cytoreview.samples.make_warthin_fields, seeds {TRAIN_SEEDS[0]}-{TRAIN_SEEDS[-1]}, "
                            f"{N_FIELDS} fields each ({n} tiles); held out: seeds {list(HELDOUT_SEEDS)} and the "
                            "committed seed-0 case sample_data/warthin_fna"),
    heldout_cases=lambda work: [case(work, seed) for seed in HELDOUT_SEEDS],
    reference_case=lambda args: ("sample_case_seed0", args.sample_case),
    open_case=decoded,
    case_truth=field_set_truth,
    add_arguments=add_arguments,
)

if __name__ == "__main__":
    raise SystemExit(main(RECIPE, HERE, __doc__.splitlines()[0]))
