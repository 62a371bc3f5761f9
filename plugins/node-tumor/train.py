"""Train the ``node-tumor`` model pack from synthetic lymph-node whole-slide images (development tool).

Reproduces ``model.onnx`` and ``cytoreview.yaml`` in this folder::

    PYTHONPATH=src python plugins/node-tumor/train.py [--work-dir DIR] [--out-dir DIR] [--evaluate-only]

Needs torch (CPU) besides cytoreview; the shipped pack itself runs with onnxruntime alone.
``--evaluate-only`` keeps ``model.onnx`` and only re-measures ``provenance.metrics``. Training is deterministic
(fixed seeds, one torch thread, ``torch.use_deterministic_algorithms``).

Steps
-----
1. Render training slides with :func:`cytoreview.samples.make_lymph_node_slide` (seeds ``TRAIN_SEEDS``, side
   ``TRAIN_SIZE_PX``) and held-out slides (seeds ``HELDOUT_SEEDS``); the demo slide (seed 0, 16384 px, what
   :func:`cytoreview.samples.lymph_node_slide` returns) is never trained on.
2. Cut each slide into the tile grid the inference engine uses (64 px at 2 um/px = pyramid level 1, downsample 4,
   of the 0.5 um/px slide: no resampling), reading patches with
   :meth:`cytoreview.inference.grid.PatchGrid.read_tile`, and label each tile from the tumour mask
   (``<stem>_tumor_mask.tif``, downsample 32: 8 x 8 mask pixels per tile) with :func:`tile_labels`. Every tissue
   tile is kept; glass tiles are subsampled (``BACKGROUND_KEEP``).
3. Train a small CNN (stride-2 stem + 4 conv blocks, 16-64 channels, 64-d embedding) with fixed seeds on CPU; the loss is
   class-weighted (tumour tiles are a few percent of a slide).
4. Export one ONNX graph (opset 17, dynamic batch) with outputs ``logits`` and ``embedding``.
5. Evaluate with the real :func:`cytoreview.inference.predict` on the held-out slides and the seed-0 demo slide, and
   write the metrics into the card's ``provenance.metrics``.

Tile ground truth (:func:`tile_labels`) -- ``cytoreview.samples.truth.pack_tile_labels``, the rule the pack tests and ``benchmarks/bench_refit.py`` use too:
mask classes 0 glass, 1 node tissue, 2 tumour map 1:1 to the pack classes; a tile is tumour whenever tumour covers
>= 25 % of its mask pixels, else normal node when node tissue covers >= 25 %, else the majority class.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import yaml

from cytoreview.samples.truth import pack_tile_labels as tile_labels

NAME = "node-tumor"
VERSION = "1.0.0"
SIZE_PX = 64
MPP = 2.0  # level 1 (downsample 4) of a 0.5 um/px slide: a 64 px tile is 128 um
TRAIN_SEEDS = (1, 2, 3, 4, 5)
TRAIN_SIZE_PX = 12288
HELDOUT_SEEDS = (101, 102)
HELDOUT_SIZE_PX = 8192
MIN_FRAC = 0.25
CLASSES = [
    {"id": 0, "name": "background", "color": "#f2f0ec", "hotkey": "1", "level": "tile"},
    {"id": 1, "name": "normal node", "color": "#5b4ea8", "hotkey": "2", "level": "tile"},
    {"id": 2, "name": "tumour", "color": "#d62728", "hotkey": "3", "level": "tile"},
]
#: Tile labelling rule for :func:`tile_labels` on the tumour mask (0 glass, 1 node tissue, 2 tumour).
LABEL_RULE = {"class_map": [0, 1, 2], "priority": [1], "min_frac": MIN_FRAC, "override": [(2, MIN_FRAC)]}
BACKGROUND_KEEP = 0.15
TUMOUR_REPEAT = 2
EPOCHS = 16
BATCH = 64
SEED = 1234
EMBED_DIM = 64


def pack_stub():
    """The parts of a pack that :func:`cytoreview.inference.grid.make_grid` reads."""
    card = {"input": {"mpp": MPP, "size_px": SIZE_PX}, "outputs": {"halo_px": 0}}
    return SimpleNamespace(card=card, name=NAME, version=VERSION)


def slide_truth(slide: Path, tile_px_level0: int) -> np.ndarray:
    """Tile labels of a generated slide from its ``<stem>_tumor_mask.tif`` (downsample read from ``<stem>.json``)."""
    import tifffile

    meta = json.loads(slide.with_suffix(".json").read_text())
    mask = tifffile.imread(slide.with_name(f"{slide.stem}_tumor_mask.tif"))
    ds = int(meta["mask_downsample"])
    if tile_px_level0 % ds:
        raise ValueError(f"{slide}: tile of {tile_px_level0} px is not a whole number of mask pixels ({ds})")
    labels, _ = tile_labels(mask, tile_px_level0 // ds, LABEL_RULE)
    return labels


def case_tiles(slide: Path, rng: np.random.Generator):
    """Tissue tiles and a random ``BACKGROUND_KEEP`` share of glass tiles of one slide.

    Returns patches uint8 (n, S, S, 3), labels (n,), and (field, row, col) per tile.
    """
    from cytoreview.inference.grid import make_grid
    from cytoreview.io import open_image

    patches, labels, where = [], [], []
    with open_image(slide) as image:
        grid = make_grid(image, pack_stub())
        if grid.resample:
            raise RuntimeError(f"{slide}: expected a pyramid level at {MPP} um/px (no resampling)")
        lab = slide_truth(slide, grid.tile_px_level0)[: grid.n_rows, : grid.n_cols]
        keep = (lab > 0) | (rng.random(lab.shape) < BACKGROUND_KEEP)
        for r, c in np.argwhere(keep):
            patches.append(grid.read_tile(image, 0, int(r), int(c)))
            labels.append(lab[r, c])
            where.append((0, r, c))
    return np.stack(patches), np.asarray(labels, dtype=np.int64), np.asarray(where)


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


def train(x: np.ndarray, y: np.ndarray, norm: dict, n_classes: int):
    """Train with class-balanced loss weights, Adam + cosine schedule; returns the model (eval mode)."""
    import torch

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(SEED)
    net = build_net(n_classes).to(memory_format=torch.channels_last)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = torch.tensor((counts.sum() / np.maximum(counts, 1) / n_classes) ** 0.5, dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    epoch_index = np.concatenate([np.arange(len(x))] + [np.flatnonzero(y == 2)] * (TUMOUR_REPEAT - 1))
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


def export_onnx(net, path: Path) -> None:
    """One graph: input ``image`` (N, 3, S, S) float32 -> ``logits`` (N, C), ``embedding`` (N, D); dynamic N."""
    import torch

    dummy = torch.zeros(2, 3, SIZE_PX, SIZE_PX)
    torch.onnx.export(
        net, (dummy,), str(path), dynamo=False, opset_version=17, input_names=["image"],
        output_names=["logits", "embedding"], do_constant_folding=True,
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "embedding": {0: "batch"}},
    )  # fmt: skip


def write_card(out_dir: Path, norm: dict, training_set: str, metrics: dict) -> None:
    card = {
        "name": NAME,
        "version": VERSION,
        "task": "tile-classification",
        "description": (
            "Tile classifier for H&E lymph-node whole-slide images: background (glass), normal node tissue, "
            "metastatic tumour; 128 um tiles read at 2 um/px. Trained on synthetic slides only; not for clinical use."
        ),
        "input": {"name": "image", "layout": "NCHW", "size_px": SIZE_PX, "mpp": MPP, "channel_order": "RGB",
                  "scale": norm["scale"], "mean": norm["mean"], "std": norm["std"]},
        "outputs": {"probabilities": {"name": "logits", "activation": "softmax"}, "embedding": {"name": "embedding"}},
        "classes": CLASSES,
        "provenance": {"parent": None, "training_set": training_set, "metrics": metrics,
                       "created": datetime.date.today().isoformat()},
    }
    with open(out_dir / "cytoreview.yaml", "w") as fh:
        yaml.safe_dump(card, fh, sort_keys=False, default_flow_style=None, width=120)


def evaluate(slides, pack_dir: Path, work: Path) -> dict:
    """Run :func:`cytoreview.inference.predict` on slides; compare predicted tiles with :func:`slide_truth`."""
    from cytoreview.inference import predict

    n = len(CLASSES)
    confusion = np.zeros((n, n), dtype=np.int64)
    skipped = np.zeros(n, dtype=np.int64)
    for slide in slides:
        store = predict(slide, pack_dir, work / "predictions", threads=1)
        pred = np.asarray(store.tile_class[0])
        truth = slide_truth(Path(slide), store.tile_px_level0)[: pred.shape[0], : pred.shape[1]]
        run = pred >= 0
        np.add.at(confusion, (truth[run], pred[run]), 1)
        skipped += np.bincount(truth[~run], minlength=n)
    return summarise(confusion, skipped)


def summarise(confusion: np.ndarray, skipped: np.ndarray) -> dict:
    """Accuracy, per-class recall and the confusion matrix (rows truth, columns prediction) as plain numbers.

    ``confusion`` counts the tiles the model ran on; ``skipped`` counts, per true class, the tiles the engine's
    tissue mask did not send to the model. ``recall_with_skipped`` counts those as misses (end-to-end recall).
    """
    total = int(confusion.sum())
    recall, recall_all = {}, {}
    for c in CLASSES:
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
        "not_predicted_by_class": {c["name"]: int(skipped[c["id"]]) for c in CLASSES},
        "recall_with_skipped": recall_all,
    }


def main(argv=None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=None, help="where generated slides go (default: a temp dir)")
    parser.add_argument("--out-dir", type=Path, default=here, help="pack folder to write (default: this folder)")
    parser.add_argument("--skip-demo-slide", action="store_true", help="do not evaluate on the seed-0 demo slide")
    parser.add_argument(
        "--evaluate-only", action="store_true",
        help="keep model.onnx and the card's normalisation; only re-measure and rewrite provenance.metrics",
    )  # fmt: skip
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)  # one thread: far faster than two on a shared 2-core machine
    from cytoreview.samples import lymph_node_slide, make_lymph_node_slide

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="node-tumor-"))
    work.mkdir(parents=True, exist_ok=True)

    def slide_for(seed: int, size_px: int) -> Path:
        path = work / f"node_seed{seed}_{size_px}" / "lymph_node.tif"
        if not path.with_suffix(".json").is_file():
            make_lymph_node_slide(path, size_px=size_px, seed=seed)
        return path

    if args.evaluate_only:
        card = yaml.safe_load((args.out_dir / "cytoreview.yaml").read_text())
        norm = {k: card["input"][k] for k in ("scale", "mean", "std")}
        training_set = card["provenance"]["training_set"]
        n_train = card["provenance"]["metrics"]["train_tiles"]
        t_train = card["provenance"]["metrics"]["train_seconds"]
    else:
        t0 = time.perf_counter()
        xs, ys = [], []
        sample_rng = np.random.default_rng(SEED)
        for seed in TRAIN_SEEDS:
            x, y, _ = case_tiles(slide_for(seed, TRAIN_SIZE_PX), sample_rng)
            xs.append(x)
            ys.append(y)
        x, y = np.concatenate(xs), np.concatenate(ys)
        t_data = time.perf_counter() - t0
        print(f"{len(x)} training tiles, class counts {np.bincount(y, minlength=len(CLASSES)).tolist()}, "
              f"{t_data:.0f} s", flush=True)
        scale = 1.0 / 255.0
        flat = x.reshape(-1, 3).astype(np.float64) * scale
        norm = {"scale": scale, "mean": [round(float(v), 3) for v in flat.mean(0)],
                "std": [round(float(v), 3) for v in flat.std(0)]}

        t1 = time.perf_counter()
        net = train(x, y, norm, len(CLASSES))
        t_train = time.perf_counter() - t1
        args.out_dir.mkdir(parents=True, exist_ok=True)
        export_onnx(net, args.out_dir / "model.onnx")
        training_set = (f"cytoreview.samples.make_lymph_node_slide, seeds {list(TRAIN_SEEDS)} at size_px="
                        f"{TRAIN_SIZE_PX} ({len(x)} tiles: all tissue tiles, {BACKGROUND_KEEP:.0%} of glass tiles); "
                        f"held out: seeds {list(HELDOUT_SEEDS)} at size_px={HELDOUT_SIZE_PX} and the seed-0 demo slide "
                        "(size_px=16384)")
        write_card(args.out_dir, norm, training_set, {})
        n_train = len(x)

    heldout = [slide_for(seed, HELDOUT_SIZE_PX) for seed in HELDOUT_SEEDS]
    shutil.rmtree(work / "predictions", ignore_errors=True)
    metrics = {"heldout_generated": evaluate(heldout, args.out_dir, work)}
    if not args.skip_demo_slide:
        metrics["demo_slide_seed0"] = evaluate([lymph_node_slide()], args.out_dir, work)
    metrics["train_tiles"] = n_train
    metrics["train_seconds"] = round(t_train, 1)
    metrics["accuracy"] = metrics.get("demo_slide_seed0", metrics["heldout_generated"])["accuracy"]
    write_card(args.out_dir, norm, training_set, metrics)
    print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
