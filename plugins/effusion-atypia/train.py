"""Train the ``effusion-atypia`` model pack from synthetic serous effusion field sets (development tool).

Reproduces ``model.onnx`` and ``cytoreview.yaml`` in this folder::

    PYTHONPATH=src python plugins/effusion-atypia/train.py [--work-dir DIR] [--out-dir DIR] [--evaluate-only]

Needs torch (CPU) besides cytoreview; the shipped pack itself runs with onnxruntime alone. The training loop, ONNX
export and evaluation are the shared recipe in ``plugins/pack_training.py``; this file holds the pack's data and
label rule. ``--evaluate-only`` keeps ``model.onnx`` and only re-measures ``provenance.metrics``.

Data
----
Training field sets are rendered with :func:`cytoreview.samples.make_effusion_fields` (seeds ``TRAIN_SEEDS``,
``N_FIELDS`` fields each), held-out sets with seeds ``HELDOUT_SEEDS``; the committed case
``sample_data/serous_effusion`` (seed 0) is never trained on. Every cell tile is kept, background tiles are
subsampled (``BACKGROUND_KEEP``) since they are most of a cytospin. Atypical tiles are rare (about 1.5 % of tiles),
so they are repeated ``ATYPICAL_REPEAT`` times per epoch (and the loss is class-weighted).

Tile ground truth -- ``cytoreview.samples.truth.pack_tile_labels``, the rule the pack tests and
``benchmarks/bench_refit.py`` use too: ground-truth classes map to background (0), benign (mesothelial, macrophage,
lymphocyte) and atypical; a tile is benign when benign cells cover >= 10 % of its in-image pixels, and atypical
whenever atypical cells cover >= 10 % of it (atypia outranks everything), else background.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # plugins/pack_training.py
from pack_training import TileRecipe, decoded, field_set_tiles, field_set_truth, main  # noqa: E402

HERE = Path(__file__).resolve().parent
TRAIN_SEEDS = tuple(range(1, 11))
HELDOUT_SEEDS = (101, 102)
N_FIELDS = 8
CELL_MIN_FRAC = 0.10
#: Tile labelling rule for ``pack_tile_labels``: ground truth 0 background, 1 mesothelial, 2 macrophage,
#: 3 lymphocyte, 4 atypical -> pack 0 background, 1 benign, 2 atypical.
LABEL_RULE = {"class_map": [0, 1, 1, 1, 2], "priority": [1], "min_frac": CELL_MIN_FRAC,
              "override": [(2, CELL_MIN_FRAC)]}
BACKGROUND_KEEP = 0.2
ATYPICAL_REPEAT = 5


def case(work: Path, seed: int) -> Path:
    """The generated field set of ``seed`` in ``work`` (rendered on first use)."""
    from cytoreview.samples import make_effusion_fields

    folder = work / f"effusion_seed{seed}"
    if not (folder / "ground_truth" / f"labelmap_{N_FIELDS - 1:03d}.png").is_file():
        make_effusion_fields(folder, n_fields=N_FIELDS, seed=seed)
    return folder


def training_tiles(work: Path, recipe: TileRecipe, rng: np.random.Generator):
    """Every cell tile and a random ``BACKGROUND_KEEP`` share of the background tiles of the training sets."""
    tiles = [field_set_tiles(case(work, seed), recipe, rng, BACKGROUND_KEEP)[:2] for seed in TRAIN_SEEDS]
    return np.concatenate([x for x, _ in tiles]), np.concatenate([y for _, y in tiles])


def add_arguments(parser) -> None:
    parser.add_argument("--sample-case", type=Path, default=HERE.parents[1] / "sample_data" / "serous_effusion")


RECIPE = TileRecipe(
    name="effusion-atypia",
    version="1.0.0",
    size_px=64,
    mpp=0.586,  # 2 x 0.293 um/px: a 64 px tile is 37.5 um, about one cell group
    classes=[
        {"id": 0, "name": "background", "color": "#ece8e0", "hotkey": "1", "level": "tile"},
        {"id": 1, "name": "benign", "color": "#4fa3a5", "hotkey": "2", "level": "tile"},
        {"id": 2, "name": "atypical", "color": "#d62728", "hotkey": "3", "level": "tile"},
    ],
    label_rule=LABEL_RULE,
    description=(
        "Tile classifier for serous effusion field sets (Papanicolaou): background, benign cells (mesothelial, "
        "macrophage, lymphocyte), atypical cells; 37.5 um tiles (about one cell group). Flags atypia for review; "
        "trained on synthetic data only; not for clinical use."
    ),
    training_tiles=training_tiles,
    training_set=lambda n: (
        f"cytoreview.samples.make_effusion_fields, seeds {TRAIN_SEEDS[0]}-{TRAIN_SEEDS[-1]}, {N_FIELDS} fields each "
        f"({n} tiles: all cell tiles, {BACKGROUND_KEEP:.0%} of background tiles); held out: seeds "
        f"{list(HELDOUT_SEEDS)} and the committed seed-0 case sample_data/serous_effusion"
    ),
    heldout_cases=lambda work: [case(work, seed) for seed in HELDOUT_SEEDS],
    reference_case=lambda args: ("sample_case_seed0", args.sample_case),
    open_case=decoded,
    case_truth=field_set_truth,
    add_arguments=add_arguments,
    repeat={2: ATYPICAL_REPEAT},
)

if __name__ == "__main__":
    raise SystemExit(main(RECIPE, HERE, __doc__.splitlines()[0]))
