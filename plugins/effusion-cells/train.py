"""Train the ``effusion-cells`` cell-classification pack on the cells the bundled ``cell-detector`` finds in synthetic
serous effusion field sets (development tool).

    PYTHONPATH=src python plugins/effusion-cells/train.py [--work-dir DIR] [--out-dir DIR] [--evaluate-only]

Needs torch (CPU); the pack runs with onnxruntime alone. The training loop, ONNX export and evaluation are the shared
recipe in ``plugins/pack_training.py`` (:func:`pack_training.cell_patches`, :func:`pack_training.evaluate_cells`);
this file holds the pack's data and label rule.

Data
----
Training field sets are rendered with :func:`cytoreview.samples.make_effusion_fields` (seeds ``TRAIN_SEEDS``,
``N_FIELDS`` fields each), held-out sets with ``HELDOUT_SEEDS``; the committed case ``sample_data/serous_effusion``
(seed 0) is never trained on. ``cell-detector`` runs through :func:`cytoreview.inference.predict` on each; a detected
cell takes the class of the true instance (:func:`cytoreview.samples.truth.instance_map`) under its centroid, else
``other`` (debris, a false detection). Atypical cells (two clusters in every eight fields) are repeated
``ATYPICAL_REPEAT`` times per epoch.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # plugins/pack_training.py
from pack_training import (  # noqa: E402
    TileRecipe, cell_training, evaluate_cells, generated_case, main, sample_case_option,
)

HERE = Path(__file__).resolve().parent
TRAIN_SEEDS = (1, 2, 3, 4)
HELDOUT_SEEDS = (101,)
N_FIELDS = 8
ATYPICAL_REPEAT = 3
#: Ground truth 1 mesothelial, 2 macrophage, 3 lymphocyte, 4 atypical -> pack 0-3; a detection on no true cell is
#: ``other`` (4).
LABEL_RULE = {"detector": "cell-detector", "cell_classes": [1, 2, 3, 4], "class_map": {1: 0, 2: 1, 3: 2, 4: 3}}


def case(work: Path, seed: int) -> Path:
    """The generated field set of ``seed`` in ``work`` (rendered on first use)."""
    from cytoreview.samples import make_effusion_fields

    return generated_case(work, make_effusion_fields, "effusion", seed, N_FIELDS)


RECIPE = TileRecipe(
    name="effusion-cells",
    version="1.2.0",
    size_px=48,
    mpp=0.586,  # 48 px = 28 um: a whole mesothelial cell or macrophage with some context
    classes=[
        {"id": 0, "name": "mesothelial", "color": "#4fa3a5", "hotkey": "1", "level": "cell"},
        {"id": 1, "name": "macrophage", "color": "#c9a66b", "hotkey": "2", "level": "cell"},
        {"id": 2, "name": "lymphocyte", "color": "#3b3f9e", "hotkey": "3", "level": "cell"},
        {"id": 3, "name": "atypical", "color": "#d62728", "hotkey": "4", "level": "cell"},
        {"id": 4, "name": "other", "color": "#9e9e9e", "hotkey": "5", "level": "cell"},
    ],
    label_rule=LABEL_RULE,
    description=("Cell classifier for serous effusion (Papanicolaou), run on each cell cell-detector finds: "
                 "mesothelial cell, macrophage, lymphocyte, atypical cell, other (debris / not a cell). "
                 "28 um crop centred on the cell. Trained on synthetic data only; not for clinical use."),
    training_tiles=cell_training(lambda work: [case(work, seed) for seed in TRAIN_SEEDS]),
    training_set=lambda n: (f"cells found by cell-detector in cytoreview.samples make_effusion_fields, seeds "
                            f"{list(TRAIN_SEEDS)}, {N_FIELDS} fields each ({n} cells; a detection takes the type of "
                            f"the true cell under its centroid, else 'other'); held out: seeds {list(HELDOUT_SEEDS)} "
                            "and the committed seed-0 case sample_data/serous_effusion"),
    heldout_cases=lambda work: [case(work, seed) for seed in HELDOUT_SEEDS],
    reference_case=lambda args: ("sample_case_seed0", args.sample_case),
    add_arguments=sample_case_option("serous_effusion"),
    repeat={3: ATYPICAL_REPEAT},
    task="cell-classification",
    evaluate=evaluate_cells,
)

if __name__ == "__main__":
    raise SystemExit(main(RECIPE, HERE, __doc__.splitlines()[0]))
