"""Train a cell-classification pack (``effusion-cells`` or ``warthin-cells``) on the cells the bundled
``cell-detector`` finds in synthetic field sets (development tool).

    PYTHONPATH=src python plugins/effusion-cells/train.py [--case effusion|warthin] [--work-dir DIR] [--out-dir DIR]

(``plugins/warthin-cells/train.py`` runs this with ``--case warthin``.) Needs torch (CPU); the pack runs with
onnxruntime alone. Deterministic (fixed seeds, one torch thread).

Steps
-----
1. Render training field sets (seeds ``TRAIN_SEEDS``) and held-out sets (``HELDOUT_SEEDS``); the committed seed-0
   case is never trained on.
2. Run ``cell-detector`` through :func:`cytoreview.inference.predict` on every field set. Each detected cell takes the
   class of the true instance (:func:`cytoreview.samples.truth.instance_map`) under its centroid, else ``other``
   (debris, dirty background, a false detection): the classifier learns on the cells it will be given.
3. Crops centred on each detection with :func:`cytoreview.inference.classify.crop_at` (the crop ``predict --then``
   and refit read), ``SIZE_PX`` px at ``MPP`` µm/px.
4. A small CNN (16-32-48 channels, 32-d embedding), class-weighted, flips and rotations; ONNX export with outputs
   ``logits`` and ``embedding``.
5. Accuracy measured through :func:`cytoreview.inference.classify.predict_cells` on the held-out sets and on the
   committed case: over the detected cells that match a true cell (their true type) and over all detections (the
   unmatched ones count as ``other``); written to ``provenance.metrics``.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

SIZE_PX = 48
MPP = 0.586  # 48 px = 28 um: a whole mesothelial cell or macrophage with some context
TRAIN_SEEDS = (1, 2, 3)
HELDOUT_SEEDS = (101,)
N_FIELDS = 8
EPOCHS = 10
BATCH = 64
SEED = 777
EMBED_DIM = 32
CASES = {
    "effusion": {
        "name": "effusion-cells",
        "sample": "serous_effusion",
        # ground-truth class id -> pack class id
        "class_map": {1: 0, 2: 1, 3: 2, 4: 3},
        "classes": [
            {"id": 0, "name": "mesothelial", "color": "#4fa3a5", "hotkey": "1", "level": "cell"},
            {"id": 1, "name": "macrophage", "color": "#c9a66b", "hotkey": "2", "level": "cell"},
            {"id": 2, "name": "lymphocyte", "color": "#3b3f9e", "hotkey": "3", "level": "cell"},
            {"id": 3, "name": "atypical", "color": "#d62728", "hotkey": "4", "level": "cell"},
            {"id": 4, "name": "other", "color": "#9e9e9e", "hotkey": "5", "level": "cell"},
        ],
        "description": ("Cell classifier for serous effusion (Papanicolaou), run on each cell cell-detector finds: "
                        "mesothelial cell, macrophage, lymphocyte, atypical cell, other (debris / not a cell). "
                        "28 um crop centred on the cell. Trained on synthetic data only; not for clinical use."),
    },
    "warthin": {
        "name": "warthin-cells",
        "sample": "warthin_fna",
        "class_map": {2: 0, 3: 1},
        "classes": [
            {"id": 0, "name": "oncocytic", "color": "#e8825a", "hotkey": "1", "level": "cell"},
            {"id": 1, "name": "lymphocyte", "color": "#3b3f9e", "hotkey": "2", "level": "cell"},
            {"id": 2, "name": "other", "color": "#9e9e9e", "hotkey": "3", "level": "cell"},
        ],
        "description": ("Cell classifier for Warthin tumour FNA (Papanicolaou), run on each cell cell-detector finds: "
                        "oncocytic cell, lymphocyte, other (debris, dirty background, not a cell). 28 um crop centred "
                        "on the cell. Trained on synthetic data only; not for clinical use."),
    },
}
CELL_CLASSES = {"effusion": (1, 2, 3, 4), "warthin": (2, 3)}


def decoded(case_dir: Path):
    from cytoreview.io import Image, open_image

    with open_image(case_dir) as lazy:
        planes = np.stack([lazy.read_plane(0, f) for f in range(lazy.n_fields)])
        return Image(path=lazy.path, kind="fields", levels=[planes], mpp=lazy.mpp, reader="memory")


def detected_cells(case_dir: Path, kind: str, detector, work: Path):
    """Detections of ``detector`` on a case with their true pack class (``other`` when unmatched)."""
    from cytoreview.inference import predict
    from cytoreview.samples.truth import instance_map, read_ground_truth

    spec = CASES[kind]
    other = len(spec["classes"]) - 1
    image = decoded(case_dir)
    store = predict(image, detector, work / "detections", threads=1)
    cells = store.cells()
    gt = read_ground_truth(case_dir)
    labels = np.full(len(cells["field"]), other, dtype=np.int64)
    for f in range(image.n_fields):
        sel = gt.cells["field"] == f
        table = np.c_[gt.cells["y_px"][sel], gt.cells["x_px"][sel], gt.cells["class"][sel]]
        inst = instance_map(gt.labelmap(f), table, CELL_CLASSES[kind])
        rows = np.nonzero(cells["field"] == f)[0]
        y = np.clip(np.round(cells["y_px"][rows]).astype(int), 0, inst.shape[0] - 1)
        x = np.clip(np.round(cells["x_px"][rows]).astype(int), 0, inst.shape[1] - 1)
        hit = inst[y, x]
        for r, h in zip(rows, hit):
            if h > 0:
                labels[r] = spec["class_map"][int(table[h - 1, 2])]
    return image, store, cells, labels


def crops(image, cells) -> np.ndarray:
    from cytoreview.inference.classify import crop_at

    side = max(1, round(SIZE_PX * MPP / image.mpp))
    return np.stack([crop_at(image, y, x, side, SIZE_PX, f)
                     for f, y, x in zip(cells["field"], cells["y_px"], cells["x_px"])])


def build_net(n_classes: int):
    import torch
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.MaxPool2d(2))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(block(3, 16), block(16, 32), block(32, 48),
                                          nn.Conv2d(48, EMBED_DIM, 3, padding=1), nn.ReLU(inplace=True))
            self.head = nn.Linear(EMBED_DIM, n_classes)

        def forward(self, x):
            emb = torch.flatten(self.features(x).mean(dim=(2, 3)), 1)
            return self.head(emb), emb

    return Net()


def train(x, y, norm, n_classes):
    import torch

    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    net = build_net(n_classes)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = torch.tensor((counts.sum() / np.maximum(counts, 1) / n_classes) ** 0.5, dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = EPOCHS * max(1, len(x) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.2)
    mean = np.asarray(norm["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(norm["std"], np.float32).reshape(1, 3, 1, 1)
    net.train()
    for epoch in range(EPOCHS):
        order = rng.permutation(len(x))
        total = 0.0
        for s in range(max(1, len(x) // BATCH)):
            idx = order[s * BATCH : (s + 1) * BATCH]
            xb = x[idx]
            if rng.random() < 0.5:
                xb = xb[:, :, ::-1]
            xb = np.rot90(xb, int(rng.integers(4)), (1, 2))
            gain = rng.uniform(0.94, 1.06, (len(xb), 1, 1, 3))
            xb = np.clip(xb * gain, 0, 255)
            inp = (xb.transpose(0, 3, 1, 2).astype(np.float32) * norm["scale"] - mean) / std
            logits, _ = net(torch.from_numpy(np.ascontiguousarray(inp)))
            loss = loss_fn(logits, torch.from_numpy(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        print(f"epoch {epoch + 1}/{EPOCHS}: loss {total / max(1, len(x) // BATCH):.4f}", flush=True)
    net.eval()
    return net


def export_onnx(net, path: Path) -> None:
    import torch

    torch.onnx.export(
        net, (torch.zeros(2, 3, SIZE_PX, SIZE_PX),), str(path), dynamo=False, opset_version=17,
        input_names=["image"], output_names=["logits", "embedding"], do_constant_folding=True,
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "embedding": {0: "batch"}},
    )  # fmt: skip


def write_card(out_dir: Path, kind: str, norm: dict, training_set: str, metrics: dict) -> None:
    spec = CASES[kind]
    card = {
        "name": spec["name"], "version": "1.0.0", "task": "cell-classification", "description": spec["description"],
        "input": {"name": "image", "layout": "NCHW", "size_px": SIZE_PX, "mpp": MPP, "channel_order": "RGB",
                  "scale": norm["scale"], "mean": norm["mean"], "std": norm["std"]},
        "outputs": {"probabilities": {"name": "logits", "activation": "softmax"}, "embedding": {"name": "embedding"}},
        "classes": spec["classes"],
        "provenance": {"parent": None, "training_set": training_set, "metrics": metrics,
                       "created": datetime.date.today().isoformat()},
    }
    with open(out_dir / "cytoreview.yaml", "w") as fh:
        yaml.safe_dump(card, fh, sort_keys=False, default_flow_style=None, width=120)


def evaluate(cases, kind: str, detector, pack_dir: Path, work: Path) -> dict:
    """Accuracy of ``predict_cells`` (detector, then this classifier) against the true type of each detection."""
    from cytoreview.inference.classify import classify_cells

    spec = CASES[kind]
    n = len(spec["classes"])
    other = n - 1
    confusion = np.zeros((n, n), dtype=np.int64)
    for case in cases:
        image, store, cells, labels = detected_cells(Path(case), kind, detector, work)
        out = classify_cells(image, store, pack_dir, work / "classified", threads=1)
        pred = out.cells()["class"].astype(np.int64)
        np.add.at(confusion, (labels, pred), 1)
    matched = confusion[:other]
    return {
        "cells": int(confusion.sum()),
        "accuracy_all_detections": round(float(np.trace(confusion) / max(1, confusion.sum())), 4),
        "accuracy_matched_cells": round(float(np.trace(matched[:, :other]) / max(1, matched.sum())), 4),
        "recall": {c["name"]: (round(float(confusion[i, i] / confusion[i].sum()), 4) if confusion[i].sum() else None)
                   for i, c in enumerate(spec["classes"])},
        "confusion": confusion.tolist(),
    }


def main(argv=None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), default="effusion")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    kind = args.case
    spec = CASES[kind]
    out_dir = args.out_dir or here.parent / spec["name"]
    import torch

    torch.set_num_threads(1)
    from cytoreview.models import load_pack
    from cytoreview.samples import make_effusion_fields, make_warthin_fields

    maker = {"effusion": make_effusion_fields, "warthin": make_warthin_fields}[kind]
    detector = load_pack(here.parent / "cell-detector")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix=f"{spec['name']}-"))

    def case(seed):
        folder = work / f"{kind}_seed{seed}"
        if not (folder / "cytoscan.json").is_file():
            maker(folder, n_fields=N_FIELDS, seed=seed)
        return folder

    t0 = time.perf_counter()
    xs, ys = [], []
    for seed in TRAIN_SEEDS:
        image, _, cells, labels = detected_cells(case(seed), kind, detector, work)
        xs.append(crops(image, cells))
        ys.append(labels)
    x, y = np.concatenate(xs), np.concatenate(ys)
    flat = x.reshape(-1, 3).astype(np.float64) / 255.0
    norm = {"scale": 1.0 / 255.0, "mean": [round(float(v), 3) for v in flat.mean(0)],
            "std": [round(float(v), 3) for v in flat.std(0)]}
    print(f"{len(x)} cells, classes {np.bincount(y, minlength=len(spec['classes'])).tolist()}, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    t1 = time.perf_counter()
    net = train(x, y, norm, len(spec["classes"]))
    t_train = round(time.perf_counter() - t1, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(net, out_dir / "model.onnx")
    training_set = (f"cells found by cell-detector@{detector.version} in cytoreview.samples {maker.__name__}, seeds "
                    f"{list(TRAIN_SEEDS)}, {N_FIELDS} fields each ({len(x)} cells; a detection takes the type of the "
                    f"true cell under its centroid, else 'other'); held out: seeds {list(HELDOUT_SEEDS)} and the "
                    f"committed seed-0 case sample_data/{spec['sample']}")
    write_card(out_dir, kind, norm, training_set, {})
    sample = here.parents[1] / "sample_data" / spec["sample"]
    metrics = {
        "heldout_generated": evaluate([case(s) for s in HELDOUT_SEEDS], kind, detector, out_dir, work),
        "sample_case_seed0": evaluate([sample], kind, detector, out_dir, work),
        "train_cells": int(len(x)),
        "train_seconds": t_train,
    }
    write_card(out_dir, kind, norm, training_set, metrics)
    print(yaml.safe_dump(metrics, sort_keys=False), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
