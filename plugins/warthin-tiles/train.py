"""Train the ``warthin-tiles`` model pack from synthetic Warthin tumour FNA field sets (development tool).

Reproduces ``model.onnx`` and ``cytoreview.yaml`` in this folder::

    PYTHONPATH=src python plugins/warthin-tiles/train.py [--work-dir DIR] [--out-dir DIR] [--evaluate-only]

Needs torch (CPU) besides cytoreview; the shipped pack itself runs with onnxruntime alone.
``--evaluate-only`` keeps ``model.onnx`` and only re-measures ``provenance.metrics``. Training is deterministic
(fixed seeds, one torch thread, ``torch.use_deterministic_algorithms``).

Steps
-----
1. Render training field sets with :func:`cytoreview.samples.make_warthin_fields` (seeds ``TRAIN_SEEDS``) and
   held-out sets (seeds ``HELDOUT_SEEDS``); the committed case ``sample_data/warthin_fna`` (seed 0) is never trained on.
2. Cut every field into the same tile grid the inference engine uses, reading patches with
   :meth:`cytoreview.inference.grid.PatchGrid.read_tile` (same resampling as ``predict``), and label each tile from
   ``ground_truth/labelmap_*.png`` with :func:`tile_labels`.
3. Train a small CNN (stride-2 stem + 4 conv blocks, 16-64 channels, 64-d embedding) with fixed seeds on CPU.
4. Export one ONNX graph (opset 17, dynamic batch) with outputs ``logits`` and ``embedding``.
5. Evaluate with the real :func:`cytoreview.inference.predict` on the held-out sets and on the committed case, and
   write the metrics into the card's ``provenance.metrics``.

Tile ground truth (:func:`tile_labels`) -- ``cytoreview.samples.truth.pack_tile_labels``, the rule the pack tests and ``benchmarks/bench_refit.py`` use too:
the fraction of each pack class among the in-image pixels of the tile; the tile takes the majority class, unless a
"priority" class (oncocytic epithelium, lymphocytes) covers at least ``PRIORITY_MIN_FRAC`` of it, in which case the
priority class with the largest fraction wins (cells matter more than background).
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
from PIL import Image as PILImage

from cytoreview.samples.truth import pack_tile_labels as tile_labels

NAME = "warthin-tiles"
VERSION = "1.0.0"
SIZE_PX = 64
MPP = 1.172  # 4 x 0.293 um/px: a 64 px tile is 75 um
TRAIN_SEEDS = tuple(range(1, 9))
HELDOUT_SEEDS = (101, 102)
N_FIELDS = 8
PRIORITY_MIN_FRAC = 0.25
CLASSES = [
    {"id": 0, "name": "clean background", "color": "#e4e2dc", "hotkey": "1", "level": "tile"},
    {"id": 1, "name": "dirty background", "color": "#8e7f9a", "hotkey": "2", "level": "tile"},
    {"id": 2, "name": "oncocytic epithelium", "color": "#f08c28", "hotkey": "3", "level": "tile"},
    {"id": 3, "name": "lymphocytes", "color": "#23329b", "hotkey": "4", "level": "tile"},
]
#: Tile labelling rule for :func:`tile_labels`: ground-truth ids map 1:1 to pack ids; oncocytic epithelium or
#: lymphocytes take a tile when they cover >= 25 % of it (the larger of the two when both do).
LABEL_RULE = {"class_map": [0, 1, 2, 3], "priority": [2, 3], "min_frac": PRIORITY_MIN_FRAC}
EPOCHS = 16
BATCH = 64
SEED = 1234
EMBED_DIM = 64


def pack_stub():
    """The parts of a pack that :func:`cytoreview.inference.grid.make_grid` reads."""
    card = {"input": {"mpp": MPP, "size_px": SIZE_PX}, "outputs": {"halo_px": 0}}
    return SimpleNamespace(card=card, name=NAME, version=VERSION)


def case_tiles(case_dir: Path):
    """All tiles of one field set: patches uint8 (n, S, S, 3), labels (n,), and (field, row, col) per tile."""
    from cytoreview.inference.grid import make_grid
    from cytoreview.io import Image, open_image

    patches, labels, where = [], [], []
    with open_image(case_dir) as lazy:
        # decode each field once; read_tile then cuts and resamples exactly as predict() does
        planes = np.stack([lazy.read_plane(0, f) for f in range(lazy.n_fields)])
        image = Image(path=lazy.path, kind="fields", levels=[planes], mpp=lazy.mpp, reader="memory")
        grid = make_grid(image, pack_stub())
        for f in range(image.n_fields):
            lm = np.asarray(PILImage.open(case_dir / "ground_truth" / f"labelmap_{f:03d}.png"))
            lab, _ = tile_labels(lm, grid.tile_px_level0, LABEL_RULE)
            for r in range(grid.n_rows):
                for c in range(grid.n_cols):
                    patches.append(grid.read_tile(image, f, r, c))
                    labels.append(lab[r, c])
                    where.append((f, r, c))
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
    steps = EPOCHS * math.ceil(len(x) / BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    for epoch in range(EPOCHS):
        net.train()
        order = rng.permutation(len(x))
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(x), BATCH):
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
            "Tile classifier for Warthin tumour FNA field sets (Papanicolaou): clean background, dirty background, "
            "oncocytic epithelium, lymphocytes; 75 um tiles. Trained on synthetic data only; not for clinical use."
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


def decoded(case_dir: Path):
    """The field set opened with ``open_image`` and decoded into memory once.

    Same pixels as the lazy reader (``read_region`` on a lazily opened field set decodes the whole JPEG for every
    tile, which makes a full evaluation slow); ``predict`` then runs unchanged on it.
    """
    from cytoreview.io import Image, open_image

    with open_image(case_dir) as lazy:
        planes = np.stack([lazy.read_plane(0, f) for f in range(lazy.n_fields)])
        return Image(path=lazy.path, kind="fields", levels=[planes], mpp=lazy.mpp, reader="memory")


def evaluate(case_dirs, pack_dir: Path, work: Path) -> dict:
    """Run :func:`cytoreview.inference.predict` on field sets; compare predicted tiles with :func:`tile_labels`."""
    from cytoreview.inference import predict

    n = len(CLASSES)
    confusion = np.zeros((n, n), dtype=np.int64)
    skipped = np.zeros(n, dtype=np.int64)
    for case in case_dirs:
        store = predict(decoded(Path(case)), pack_dir, work / "predictions", threads=1)
        pred = np.asarray(store.tile_class[:])
        t = store.tile_px_level0
        for f in range(pred.shape[0]):
            lm = np.asarray(PILImage.open(Path(case) / "ground_truth" / f"labelmap_{f:03d}.png"))
            truth, _ = tile_labels(lm, t, LABEL_RULE)
            run = pred[f] >= 0
            np.add.at(confusion, (truth[run], pred[f][run]), 1)
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
    parser.add_argument("--work-dir", type=Path, default=None, help="where generated cases go (default: a temp dir)")
    parser.add_argument("--out-dir", type=Path, default=here, help="pack folder to write (default: this folder)")
    parser.add_argument("--sample-case", type=Path, default=here.parents[1] / "sample_data" / "warthin_fna")
    parser.add_argument(
        "--evaluate-only", action="store_true",
        help="keep model.onnx and the card's normalisation; only re-measure and rewrite provenance.metrics",
    )  # fmt: skip
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)  # one thread: far faster than two on a shared 2-core machine
    from cytoreview.samples import make_warthin_fields

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="warthin-tiles-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.evaluate_only:
        card = yaml.safe_load((args.out_dir / "cytoreview.yaml").read_text())
        norm = {k: card["input"][k] for k in ("scale", "mean", "std")}
        training_set = card["provenance"]["training_set"]
        n_train = card["provenance"]["metrics"]["train_tiles"]
        t_train = card["provenance"]["metrics"]["train_seconds"]
    else:
        t0 = time.perf_counter()
        xs, ys = [], []
        for seed in TRAIN_SEEDS:
            case = work / f"warthin_seed{seed}"
            if not (case / "ground_truth" / f"labelmap_{N_FIELDS - 1:03d}.png").is_file():
                make_warthin_fields(case, n_fields=N_FIELDS, seed=seed)
            x, y, _ = case_tiles(case)
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
        training_set = (f"cytoreview.samples.make_warthin_fields, seeds {TRAIN_SEEDS[0]}-{TRAIN_SEEDS[-1]}, "
                        f"{N_FIELDS} fields each ({len(x)} tiles); held out: seeds {list(HELDOUT_SEEDS)} and the "
                        "committed seed-0 case sample_data/warthin_fna")
        write_card(args.out_dir, norm, training_set, {})
        n_train = len(x)

    heldout = []
    for seed in HELDOUT_SEEDS:
        case = work / f"warthin_seed{seed}"
        if not (case / "ground_truth" / f"labelmap_{N_FIELDS - 1:03d}.png").is_file():
            make_warthin_fields(case, n_fields=N_FIELDS, seed=seed)
        heldout.append(case)
    shutil.rmtree(work / "predictions", ignore_errors=True)
    metrics = {
        "heldout_generated": evaluate(heldout, args.out_dir, work),
        "sample_case_seed0": evaluate([args.sample_case], args.out_dir, work),
        "train_tiles": n_train,
        "train_seconds": round(t_train, 1),
    }
    metrics["accuracy"] = metrics["sample_case_seed0"]["accuracy"]
    write_card(args.out_dir, norm, training_set, metrics)
    print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
