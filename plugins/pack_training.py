"""The shared recipe behind ``plugins/<pack>/train.py`` (development tool; needs torch, which the package does not).

Every bundled tile-classification and cell-classification pack is made the same way; each pack's ``train.py`` holds only what is its own
(the synthetic data it renders, its classes and tile-labelling rule, the card text) as a :class:`TileRecipe`, and
calls :func:`main`. The recipe:

1. gets the training tiles from the pack (``recipe.training_tiles``: patches cut with
   :meth:`cytoreview.inference.grid.PatchGrid.read_tile`, the same resampling as ``predict``, and their labels);
2. trains a small CNN (:func:`build_net`: stride-2 stem + 4 conv blocks, 16-64 channels, ``EMBED_DIM`` embedding)
   with fixed seeds on one CPU thread and ``torch.use_deterministic_algorithms`` (:func:`train`), rare classes
   repeated per epoch (``recipe.repeat``) and the loss class-weighted;
3. exports one ONNX graph, opset 17, dynamic batch, outputs ``logits`` and ``embedding`` (:func:`export_onnx`);
4. evaluates with the real :func:`cytoreview.inference.predict` on the pack's held-out cases and its reference case
   and writes the metrics into the card's ``provenance.metrics`` (:func:`evaluate`, :func:`write_card`).

A cell-classification pack (``task="cell-classification"``) trains on crops centred on the cells the bundled
detector finds, each labelled with the true cell under it (:func:`cell_patches`), and is measured through
``classify_cells`` on the detector's cells (:func:`evaluate_cells`).

torch is imported inside the functions that use it, so this module imports without it (``--evaluate-only`` then
still needs it only for the thread setting). Re-running a pack's ``train.py`` writes a bit-identical ``model.onnx``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import yaml
from PIL import Image as PILImage

from cytoreview.samples.truth import pack_tile_labels

#: The folder of the bundled packs (a cell pack's detector is one of them).
PLUGINS = Path(__file__).resolve().parent

EPOCHS = 16
BATCH = 64
SEED = 1234
EMBED_DIM = 64


@dataclass
class TileRecipe:
    """What one tile-classification pack contributes to the shared recipe.

    Attributes
    ----------
    name, version : str
        The pack's name and version (written into the card).
    size_px : int
        Patch side in pixels.
    mpp : float
        Patch pixel size in µm/px.
    classes : list of dict
        The card's classes (id, name, color, hotkey, level).
    label_rule : dict
        The rule :func:`cytoreview.samples.truth.pack_tile_labels` applies to the ground truth.
    description : str
        The card's description.
    training_tiles : callable
        ``training_tiles(work_dir, recipe, rng) -> (patches uint8 (n, S, S, 3), labels int64 (n,))``; renders the
        training cases into ``work_dir`` if they are not there yet.
    training_set : callable
        ``training_set(n_tiles) -> str``: the card's ``provenance.training_set``.
    heldout_cases : callable
        ``heldout_cases(work_dir) -> list`` of cases (rendered if missing) for ``metrics.heldout_generated``.
    reference_case : callable
        ``reference_case(args) -> (metrics key, case)`` or None: the committed / demo case the card's ``accuracy``
        is measured on (``args`` are the parsed command line, see ``add_arguments``).
    open_case : callable
        ``open_case(case)``: what :func:`cytoreview.inference.predict` is given for a case (a path or an Image).
    case_truth : callable
        ``case_truth(recipe, case, plane, tile_px_level0) -> int array (rows, cols)``: true tile classes of one
        field or slide, on the grid of tiles of ``tile_px_level0`` pixels (:func:`field_set_truth` for field sets).
    add_arguments : callable, optional
        Adds the pack's own command-line options to the parser.
    repeat : dict, optional
        ``{class id: times}``: tiles of these classes are repeated this often per epoch (rare classes).
    task : str
        The card's task: ``tile-classification``, or ``cell-classification`` for a classifier of the cells a
        detector finds (its patches are crops centred on each detected cell, :func:`cell_patches`).
    evaluate : callable, optional
        ``evaluate(recipe, cases, pack_dir, work) -> metrics`` with an ``accuracy``; default :func:`evaluate`
        (tiles through ``predict``); cell packs use :func:`evaluate_cells`.
    """

    name: str
    version: str
    size_px: int
    mpp: float
    classes: list
    label_rule: dict
    description: str
    training_tiles: Callable
    training_set: Callable
    heldout_cases: Callable
    reference_case: Callable
    open_case: Callable | None = None
    case_truth: Callable | None = None
    add_arguments: Callable | None = None
    repeat: dict = field(default_factory=dict)
    task: str = "tile-classification"
    evaluate: Callable | None = None

    @property
    def unit(self) -> str:
        """What one training patch is: ``tiles`` or ``cells`` (the ``train_<unit>`` metric)."""
        return "cells" if self.task == "cell-classification" else "tiles"

    def pack_stub(self):
        """The parts of a pack that :func:`cytoreview.inference.grid.make_grid` reads."""
        card = {"input": {"mpp": self.mpp, "size_px": self.size_px}, "outputs": {"halo_px": 0}}
        return SimpleNamespace(card=card, name=self.name, version=self.version)


# ---------------------------------------------------------------------------------------------------- field sets
def labelmap(case_dir: Path, field_index: int) -> np.ndarray:
    """The ground-truth class map ``ground_truth/labelmap_<field>.png`` of a generated field set."""
    return np.asarray(PILImage.open(Path(case_dir) / "ground_truth" / f"labelmap_{field_index:03d}.png"))


def decoded(case_dir: Path):
    """The field set opened with ``open_image`` and decoded into memory once.

    Same pixels as the lazy reader (``read_region`` on a lazily opened field set decodes the whole JPEG for every
    tile, which makes a full evaluation slow); ``predict`` then runs unchanged on it.
    """
    from cytoreview.io import Image, open_image

    with open_image(case_dir) as lazy:
        planes = np.stack([lazy.read_plane(0, f) for f in range(lazy.n_fields)])
        return Image(path=lazy.path, kind="fields", levels=[planes], mpp=lazy.mpp, reader="memory")


def field_set_tiles(case_dir: Path, recipe: TileRecipe, rng: np.random.Generator | None = None,
                    background_keep: float | None = None):
    """Tiles of one generated field set, labelled from its label maps with the recipe's rule.

    Parameters
    ----------
    case_dir : Path
        A field set written by one of the ``cytoreview.samples.make_*_fields`` generators.
    recipe : TileRecipe
    rng : numpy.random.Generator, optional
        Draws which background (class 0) tiles are kept; needed with ``background_keep``.
    background_keep : float, optional
        Share of background tiles kept (every other tile is kept); None keeps every tile.

    Returns
    -------
    tuple
        Patches uint8 (n, S, S, 3), labels int64 (n,), and (field, row, col) per tile.
    """
    from cytoreview.inference.grid import make_grid

    patches, labels, where = [], [], []
    image = decoded(case_dir)  # read_tile then cuts and resamples exactly as predict() does
    grid = make_grid(image, recipe.pack_stub())
    for f in range(image.n_fields):
        lab, _ = pack_tile_labels(labelmap(case_dir, f), grid.tile_px_level0, recipe.label_rule)
        keep = None if background_keep is None else (lab > 0) | (rng.random(lab.shape) < background_keep)
        for r in range(grid.n_rows):
            for c in range(grid.n_cols):
                if keep is not None and not keep[r, c]:
                    continue
                patches.append(grid.read_tile(image, f, r, c))
                labels.append(lab[r, c])
                where.append((f, r, c))
    return np.stack(patches), np.asarray(labels, dtype=np.int64), np.asarray(where)


def field_set_truth(recipe: TileRecipe, case_dir: Path, field_index: int, tile_px_level0: int) -> np.ndarray:
    """``case_truth`` for generated field sets: the recipe's rule on ``ground_truth/labelmap_<field>.png``."""
    return pack_tile_labels(labelmap(case_dir, field_index), tile_px_level0, recipe.label_rule)[0]


# ---------------------------------------------------------------------------------------------------- cells
def detected_cells(case_dir: Path, recipe: TileRecipe, work: Path):
    """A detector's cells on a generated field set, each with the pack class of the true cell under its centroid.

    ``recipe.label_rule`` says ``detector`` (a pack in ``plugins/``), ``cell_classes`` (the ground-truth ids that
    are cells, as :func:`cytoreview.samples.truth.instance_map` takes them) and ``class_map`` (ground-truth id ->
    pack id); a detection on no true cell (debris, dirty background, a false detection) takes the recipe's last
    class (``other``): the classifier learns on the cells it will be given. Returns ``(image, store, labels)``.
    """
    from cytoreview.inference import predict
    from cytoreview.samples.truth import instance_map, read_ground_truth

    rule = recipe.label_rule
    other = recipe.classes[-1]["id"]
    image = decoded(case_dir)
    store = predict(image, PLUGINS / rule["detector"], work / "detections", threads=1)
    cells = store.cells()
    gt = read_ground_truth(case_dir)
    labels = np.full(len(cells["field"]), other, dtype=np.int64)
    for f in range(image.n_fields):
        sel = gt.cells["field"] == f
        table = np.c_[gt.cells["y_px"][sel], gt.cells["x_px"][sel], gt.cells["class"][sel]]
        inst = instance_map(gt.labelmap(f), table, rule["cell_classes"])
        rows = np.nonzero(cells["field"] == f)[0]
        y = np.clip(np.round(cells["y_px"][rows]).astype(int), 0, inst.shape[0] - 1)
        x = np.clip(np.round(cells["x_px"][rows]).astype(int), 0, inst.shape[1] - 1)
        for r, hit in zip(rows, inst[y, x]):
            if hit > 0:
                labels[r] = rule["class_map"][int(table[hit - 1, 2])]
    return image, store, labels


def generated_case(work: Path, maker: Callable, kind: str, seed: int, n_fields: int) -> Path:
    """The field set ``maker`` (a ``cytoreview.samples.make_*_fields`` generator) renders for ``seed`` into
    ``work/<kind>_seed<seed>``, rendered on first use."""
    folder = Path(work) / f"{kind}_seed{seed}"
    if not (folder / "ground_truth" / f"labelmap_{n_fields - 1:03d}.png").is_file():
        maker(folder, n_fields=n_fields, seed=seed)
    return folder


def sample_case_option(name: str) -> Callable:
    """``add_arguments`` giving ``--sample-case`` (default ``sample_data/<name>``, the pack's reference case)."""

    def add(parser) -> None:
        parser.add_argument("--sample-case", type=Path, default=PLUGINS.parent / "sample_data" / name)

    return add


def cell_training(cases: Callable[[Path], list]) -> Callable:
    """``training_tiles`` of a cell pack: :func:`cell_patches` of every case ``cases(work)`` lists, joined."""

    def training_cells(work: Path, recipe: TileRecipe, rng: np.random.Generator):
        parts = [cell_patches(case, recipe, work) for case in cases(work)]
        return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])

    return training_cells


def cell_patches(case_dir: Path, recipe: TileRecipe, work: Path):
    """``(crops uint8 (n, S, S, 3), labels)`` of :func:`detected_cells`: the crop centred on each detected cell
    that ``predict --then`` and refit read (:func:`cytoreview.inference.classify.crop_at`)."""
    from cytoreview.inference.classify import crop_at

    image, store, labels = detected_cells(case_dir, recipe, work)
    cells = store.cells()
    side = max(1, round(recipe.size_px * recipe.mpp / image.mpp))
    crops = [crop_at(image, y, x, side, recipe.size_px, f)
             for f, y, x in zip(cells["field"], cells["y_px"], cells["x_px"])]
    empty = np.zeros((0, recipe.size_px, recipe.size_px, 3), np.uint8)
    return (np.stack(crops) if crops else empty), labels


def evaluate_cells(recipe: TileRecipe, cases, pack_dir: Path, work: Path) -> dict:
    """The detector then this classifier (:func:`cytoreview.inference.classify.classify_cells`) on ``cases``,
    against the true type of each detection (:func:`detected_cells`).

    ``accuracy`` is over the detections that lie on a true cell (their true type; ``other`` calls count as
    wrong), ``accuracy_all_detections`` over every detection (the others are truly ``other``).
    """
    from cytoreview.inference.classify import classify_cells

    n = len(recipe.classes)
    other = recipe.classes[-1]["id"]
    confusion = np.zeros((n, n), dtype=np.int64)
    for case in cases:
        image, store, labels = detected_cells(Path(case), recipe, work)
        out = classify_cells(image, store, pack_dir, work / "classified", threads=1)
        np.add.at(confusion, (labels, out.cells()["class"].astype(np.int64)), 1)
    on_cells = np.delete(confusion, other, axis=0)
    return {
        "cells": int(confusion.sum()),
        "accuracy": round(float(sum(confusion[i, i] for i in range(n) if i != other) / max(1, on_cells.sum())), 4),
        "accuracy_all_detections": round(float(np.trace(confusion) / max(1, confusion.sum())), 4),
        "recall": {c["name"]: (round(float(confusion[i, i] / confusion[i].sum()), 4) if confusion[i].sum() else None)
                   for i, c in enumerate(recipe.classes)},
        "confusion": confusion.tolist(),
    }


# ---------------------------------------------------------------------------------------------------- the model
def build_net(n_classes: int):
    """Small CNN: a stride-2 stem and 4 conv blocks (16, 24, 32, 48, 64 channels) each followed by 2x2 max pooling,
    global average pooling -> ``EMBED_DIM`` embedding -> linear classifier. About 53 k parameters and 7 M
    multiply-adds per 64 px patch, so that it trains on two shared CPU cores in minutes."""
    import torch
    from torch import nn

    def block(cin, cout, stride=1):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
        )

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                block(3, 16, stride=2), block(16, 24), nn.MaxPool2d(2),  # 64 -> 32 -> 16
                block(24, 32), nn.MaxPool2d(2),  # -> 8
                block(32, 48), nn.MaxPool2d(2),  # -> 4
                block(48, EMBED_DIM),
            )  # fmt: skip
            self.head = nn.Linear(EMBED_DIM, n_classes)

        def forward(self, x):
            emb = torch.flatten(self.features(x).mean(dim=(2, 3)), 1)
            return self.head(emb), emb

    return Net()


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random dihedral transform (rotation by 90 deg steps, flip) and mild brightness / per-channel gain, uint8."""
    out = np.empty_like(x)
    k = rng.integers(0, 4, len(x))
    flip = rng.random(len(x)) < 0.5
    for i in range(len(x)):
        p = np.rot90(x[i], k[i])
        out[i] = p[:, ::-1] if flip[i] else p
    gain = rng.uniform(0.92, 1.08, (len(x), 1, 1, 1)) * rng.uniform(0.96, 1.04, (len(x), 1, 1, 3))
    return np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def to_input(x: np.ndarray, mean, std, scale: float) -> np.ndarray:
    """uint8 NHWC RGB -> float32 NCHW, ``(x * scale - mean) / std`` (as cytoreview's session does)."""
    mul = (scale / np.asarray(std, dtype=np.float32)).astype(np.float32)
    sub = (np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)).astype(np.float32)
    return (x.astype(np.float32) * mul - sub).transpose(0, 3, 1, 2).copy()


def normalisation(x: np.ndarray) -> dict:
    """The card's ``scale`` / ``mean`` / ``std`` measured on the training patches (rounded to 3 decimals)."""
    scale = 1.0 / 255.0
    flat = x.reshape(-1, 3).astype(np.float64) * scale
    return {"scale": scale, "mean": [round(float(v), 3) for v in flat.mean(0)],
            "std": [round(float(v), 3) for v in flat.std(0)]}


def train(x: np.ndarray, y: np.ndarray, norm: dict, n_classes: int, repeat: dict | None = None):
    """Train with class-balanced loss weights, Adam + one-cycle schedule; returns the model (eval mode).

    ``repeat`` (``{class id: times}``) puts the tiles of rare classes into every epoch that many times.
    """
    import torch

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(SEED)
    net = build_net(n_classes).to(memory_format=torch.channels_last)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = torch.tensor((counts.sum() / np.maximum(counts, 1) / n_classes) ** 0.5, dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    extra = [np.flatnonzero(y == cls) for cls, times in (repeat or {}).items() for _ in range(times - 1)]
    epoch_index = np.concatenate([np.arange(len(x)), *extra])
    steps = EPOCHS * math.ceil(len(epoch_index) / BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    for epoch in range(EPOCHS):
        net.train()
        order = rng.permutation(epoch_index)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(epoch_index), BATCH):
            idx = order[i : i + BATCH]
            xb = torch.from_numpy(to_input(augment(x[idx], rng), norm["mean"], norm["std"], norm["scale"]))
            xb = xb.contiguous(memory_format=torch.channels_last)
            yb = torch.from_numpy(y[idx])
            logits, _ = net(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            total += len(idx)
        print(f"epoch {epoch + 1}/{EPOCHS}: loss {loss_sum / total:.4f}, train acc {correct / total:.4f}", flush=True)
    net.eval()
    return net.to(memory_format=torch.contiguous_format)


def export_onnx(net, path: Path, size_px: int) -> None:
    """One graph: input ``image`` (N, 3, S, S) float32 -> ``logits`` (N, C), ``embedding`` (N, D); dynamic N."""
    import torch

    dummy = torch.zeros(2, 3, size_px, size_px)
    torch.onnx.export(
        net, (dummy,), str(path), dynamo=False, opset_version=17, input_names=["image"],
        output_names=["logits", "embedding"], do_constant_folding=True,
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "embedding": {0: "batch"}},
    )  # fmt: skip


def write_card(out_dir: Path, recipe: TileRecipe, norm: dict, training_set: str, metrics: dict) -> None:
    """Write ``cytoreview.yaml`` for the trained pack."""
    card = {
        "name": recipe.name,
        "version": recipe.version,
        "task": recipe.task,
        "description": recipe.description,
        "input": {"name": "image", "layout": "NCHW", "size_px": recipe.size_px, "mpp": recipe.mpp,
                  "channel_order": "RGB", "scale": norm["scale"], "mean": norm["mean"], "std": norm["std"]},
        "outputs": {"probabilities": {"name": "logits", "activation": "softmax"}, "embedding": {"name": "embedding"}},
        "classes": recipe.classes,
        "provenance": {"parent": None, "training_set": training_set, "metrics": metrics,
                       "created": datetime.date.today().isoformat()},
    }
    with open(out_dir / "cytoreview.yaml", "w") as fh:
        yaml.safe_dump(card, fh, sort_keys=False, default_flow_style=None, width=120)


# ---------------------------------------------------------------------------------------------------- evaluation
def evaluate(recipe: TileRecipe, cases, pack_dir: Path, work: Path) -> dict:
    """Run :func:`cytoreview.inference.predict` on cases; compare predicted tiles with ``recipe.case_truth``."""
    from cytoreview.inference import predict

    n = len(recipe.classes)
    confusion = np.zeros((n, n), dtype=np.int64)
    skipped = np.zeros(n, dtype=np.int64)
    for case in cases:
        store = predict(recipe.open_case(case), pack_dir, work / "predictions", threads=1)
        pred = np.asarray(store.tile_class[:])
        for plane in range(pred.shape[0]):
            rows, cols = pred[plane].shape
            truth = recipe.case_truth(recipe, Path(case), plane, store.tile_px_level0)[:rows, :cols]
            run = pred[plane] >= 0
            np.add.at(confusion, (truth[run], pred[plane][run]), 1)
            skipped += np.bincount(truth[~run], minlength=n)
    return summarise(recipe.classes, confusion, skipped)


def summarise(classes: list, confusion: np.ndarray, skipped: np.ndarray) -> dict:
    """Accuracy, per-class recall and the confusion matrix (rows truth, columns prediction) as plain numbers.

    ``confusion`` counts the tiles the model ran on; ``skipped`` counts, per true class, the tiles the engine's
    tissue mask did not send to the model. ``recall_with_skipped`` counts those as misses (end-to-end recall).
    """
    total = int(confusion.sum())
    recall, recall_all = {}, {}
    for c in classes:
        i = c["id"]
        row = confusion[i].sum()
        recall[c["name"]] = round(float(confusion[i, i] / row), 4) if row else None
        row_all = row + skipped[i]
        recall_all[c["name"]] = round(float(confusion[i, i] / row_all), 4) if row_all else None
    return {
        "tiles": total,
        "accuracy": round(float(np.trace(confusion) / max(total, 1)), 4),
        "recall": recall,
        "confusion": confusion.tolist(),
        "not_predicted_by_class": {c["name"]: int(skipped[c["id"]]) for c in classes},
        "recall_with_skipped": recall_all,
    }


# ---------------------------------------------------------------------------------------------------- the command
def main(recipe: TileRecipe, pack_dir: Path, description: str, argv=None) -> int:
    """Train (or, with ``--evaluate-only``, re-measure) the pack ``recipe`` describes; returns the exit status.

    Parameters
    ----------
    recipe : TileRecipe
    pack_dir : Path
        The pack's folder in ``plugins/`` (the default ``--out-dir``).
    description : str
        The command's one-line description.
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work-dir", type=Path, default=None, help="where generated cases go (default: a temp dir)")
    parser.add_argument("--out-dir", type=Path, default=pack_dir, help="pack folder to write (default: this folder)")
    if recipe.add_arguments is not None:
        recipe.add_arguments(parser)
    parser.add_argument(
        "--evaluate-only", action="store_true",
        help="keep model.onnx and the card's normalisation; only re-measure and rewrite provenance.metrics",
    )  # fmt: skip
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)  # one thread: far faster than two on a shared 2-core machine
    work = args.work_dir or Path(tempfile.mkdtemp(prefix=f"{recipe.name}-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.evaluate_only:
        card = yaml.safe_load((args.out_dir / "cytoreview.yaml").read_text())
        norm = {k: card["input"][k] for k in ("scale", "mean", "std")}
        training_set = card["provenance"]["training_set"]
        n_train = card["provenance"]["metrics"][f"train_{recipe.unit}"]
        t_train = card["provenance"]["metrics"]["train_seconds"]
    else:
        t0 = time.perf_counter()
        x, y = recipe.training_tiles(work, recipe, np.random.default_rng(SEED))
        t_data = time.perf_counter() - t0
        print(f"{len(x)} training {recipe.unit}, class counts {np.bincount(y, minlength=len(recipe.classes)).tolist()}, "
              f"{t_data:.0f} s", flush=True)
        norm = normalisation(x)
        t1 = time.perf_counter()
        net = train(x, y, norm, len(recipe.classes), recipe.repeat)
        t_train = time.perf_counter() - t1
        args.out_dir.mkdir(parents=True, exist_ok=True)
        export_onnx(net, args.out_dir / "model.onnx", recipe.size_px)
        training_set = recipe.training_set(len(x))
        write_card(args.out_dir, recipe, norm, training_set, {})
        n_train = len(x)

    heldout = recipe.heldout_cases(work)
    shutil.rmtree(work / "predictions", ignore_errors=True)
    measure = recipe.evaluate or evaluate
    metrics = {"heldout_generated": measure(recipe, heldout, args.out_dir, work)}
    reference = recipe.reference_case(args)
    if reference is not None:
        key, case = reference
        metrics[key] = measure(recipe, [case], args.out_dir, work)
    metrics[f"train_{recipe.unit}"] = n_train
    metrics["train_seconds"] = round(t_train, 1)
    metrics["accuracy"] = metrics[reference[0] if reference else "heldout_generated"]["accuracy"]
    write_card(args.out_dir, recipe, norm, training_set, metrics)
    print(json.dumps(metrics, indent=1))
    return 0
