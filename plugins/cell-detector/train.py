"""Train the ``cell-detector`` model pack from synthetic effusion and Warthin field sets (development tool).

Reproduces ``model.onnx`` and ``cytoreview.yaml`` in this folder::

    PYTHONPATH=src python plugins/cell-detector/train.py [--work-dir DIR] [--out-dir DIR] [--evaluate-only]

Needs torch (CPU) besides cytoreview; the shipped pack runs with onnxruntime alone. Deterministic (fixed seeds, one
torch thread).

Steps
-----
1. Render training field sets (:func:`cytoreview.samples.make_effusion_fields` and
   :func:`~cytoreview.samples.make_warthin_fields`, seeds ``TRAIN_SEEDS``) and held-out sets (``HELDOUT_SEEDS``); the
   committed seed-0 cases in ``sample_data/`` are never trained on.
2. Per field, the true cell instances: :func:`cytoreview.samples.truth.instance_map` (the generator's cell centres
   grown over the pixels of cell classes). Targets at the model's 0.586 µm/px (2 x 2 block mean, exactly as
   ``predict`` reads): foreground = any cell pixel, boundary = a 3 px band on the inner contour of every instance,
   markers = a disc of ``MARKER_RADIUS_UM`` at each true cell's centre (:func:`marker_target`).
3. A tiny U-Net (8-16-32 channels, two down/up steps, same padding) with three one-channel heads, cropped in the
   graph to the centre ``SIZE_PX - 2 * HALO_PX`` (valid output with a halo), trained on random crops (and crops near
   the atypical cells) with flips.
4. Export one ONNX graph (opset 17, dynamic batch): ``foreground``, ``boundary`` and ``markers`` logits
   (N, 1, 64, 64).
5. Evaluate through :func:`cytoreview.inference.predict` on the held-out sets and the committed cases: detection
   precision / recall / F1 at IoU 0.5 (:mod:`cytoreview.train.detection`), written into ``provenance.metrics``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # plugins/pack_training.py
from pack_training import decoded  # noqa: E402 - the field set decoded once, as every pack's evaluation reads it

NAME = "cell-detector"
VERSION = "1.3.0"
SIZE_PX = 96
HALO_PX = 16
MPP = 0.586
TRAIN_SEEDS = (1, 2, 3)
HELDOUT_SEEDS = (101,)
N_FIELDS = 8
CROPS_PER_FIELD = 48
EPOCHS = 8
BATCH = 16
SEED = 4321
#: Ground-truth classes that are cells, per case.
CELL_CLASSES = {"effusion": (1, 2, 3, 4), "warthin": (2, 3)}
#: Ground-truth classes of the rare, crowded cells (the atypical clusters): each field that has some gets
#: ``CROPS_PER_RARE_FIELD`` extra crops centred near one of them (a random crop meets a cluster seldom).
RARE_CLASSES = {"effusion": (4,), "warthin": ()}
CROPS_PER_RARE_FIELD = 48
#: Weight of the marker head's loss beside the foreground's (1) and the boundary's (0.5).
MARKER_LOSS_WEIGHT = 1.0
#: Radius of the marker target around each true cell centre (the centre of its nucleus as the generator draws it), µm.
MARKER_RADIUS_UM = 1.5
#: The split and marker cut-off, chosen on training fields (seed 1, all 8 fields of each case; :func:`choose_cutoffs`)
#: for the issue's goal: the highest atypical recall among the candidates whose mean F1 of the two cases is at least
#: 0.95. ``boundary`` at 0.3: F1 0.960 / 0.973, atypical 0.53; the best marker split, 0.9: F1 0.963 / 0.996, atypical
#: 0.37 (0.85: 0.959 / 0.996, 0.42); see the README for the whole table.
SPLIT = "boundary"
MARKER_THRESHOLD = 0.9
CARD_CELLS = {"min_area_um2": 12.0, "max_area_um2": 1200.0, "split": SPLIT, "marker_threshold": MARKER_THRESHOLD,
              "min_distance_um": 3.0}
#: Cut-offs chosen on training fields (seed 1, all 8 fields of each case) among foreground 0.4 / 0.5 and boundary
#: 0.3 / 0.5 / 0.7: 0.5 / 0.3 gave the best mean F1 of the two cases there (effusion 0.897, Warthin 0.894; 0.916 /
#: 0.869 at 0.5 / 0.5, 0.933 / 0.752 at 0.5 / 0.7).
FOREGROUND_THRESHOLD = 0.5
BOUNDARY_THRESHOLD = 0.3


def marker_target(inst: np.ndarray, cells: np.ndarray, radius_px: float) -> np.ndarray:
    """Bool marker target at level 0: a disc of ``radius_px`` around each true cell's centre (its nucleus centre),
    kept inside that cell's own instance and off the instance contours, so the discs of two overlapping cells whose
    centres are close stay two blobs."""
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    centres = np.zeros(inst.shape, dtype=bool)
    ids = np.zeros(inst.shape, dtype=np.int32)
    for i, (y, x, _) in enumerate(np.asarray(cells, dtype=np.int64).tolist()):
        if 0 <= y < inst.shape[0] and 0 <= x < inst.shape[1] and inst[y, x] == i + 1:
            centres[y, x] = True
            ids[y, x] = i + 1
    if not centres.any():
        return np.zeros(inst.shape, dtype=bool)
    dist, (iy, ix) = ndi.distance_transform_edt(~centres, return_indices=True)
    return (dist <= radius_px) & (inst == ids[iy, ix]) & ~find_boundaries(inst, mode="inner")


def field_targets(case_dir: Path, kind: str):
    """Per field: image at model µm/px (uint8 H x W x 3), foreground, boundary and marker targets (float32),
    instances."""
    from scipy.ndimage import binary_dilation
    from skimage.segmentation import find_boundaries

    from cytoreview.inference.grid import block_mean
    from cytoreview.io import open_image
    from cytoreview.samples.truth import instance_map, read_ground_truth

    gt = read_ground_truth(case_dir)
    out = []
    with open_image(case_dir) as image:
        for f in range(image.n_fields):
            rgb = image.read_plane(0, f)
            sel = gt.cells["field"] == f
            cells = np.c_[gt.cells["y_px"][sel], gt.cells["x_px"][sel], gt.cells["class"][sel]]
            inst = instance_map(gt.labelmap(f), cells, CELL_CLASSES[kind])
            small = block_mean(np.ascontiguousarray(rgb), 2)
            h, w = small.shape[:2]
            fg = (inst > 0)[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3)).astype(np.float32)
            bnd = find_boundaries(inst, mode="inner")[: 2 * h, : 2 * w].reshape(h, 2, w, 2).max(axis=(1, 3))
            # a 3 px band, not a 1 px line: the faint borders inside an oncocytic sheet or an atypical cluster are
            # then a target the net learns, and the seeds of touching cells come apart
            bnd = binary_dilation(bnd) & (fg > 0)
            mk = marker_target(inst, cells, MARKER_RADIUS_UM / image.mpp)
            mk = mk[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3)) >= 0.5
            rare = np.isin(cells[:, 2], RARE_CLASSES[kind])
            out.append((small, fg, bnd.astype(np.float32), mk.astype(np.float32), inst, cells[rare, :2] // 2))
    return out


def build_net():
    import torch
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.e1, self.e2, self.e3 = block(3, 8), block(8, 16), block(16, 32)
            self.d2, self.d1 = block(48, 16), block(24, 8)
            self.head = nn.Conv2d(8, 3, 1)
            self.pool = nn.MaxPool2d(2)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")

        def forward(self, x):
            a = self.e1(x)
            b = self.e2(self.pool(a))
            c = self.e3(self.pool(b))
            d = self.d2(torch.cat([self.up(c), b], 1))
            e = self.d1(torch.cat([self.up(d), a], 1))
            y = self.head(e)[:, :, HALO_PX : SIZE_PX - HALO_PX, HALO_PX : SIZE_PX - HALO_PX]
            return y[:, 0:1], y[:, 1:2], y[:, 2:3]

    return UNet()


def sample_crops(fields, rng, n_per_field):
    xs, fgs, bds, mks = [], [], [], []
    o = SIZE_PX - 2 * HALO_PX
    for small, fg, bnd, mk, _, rare in fields:
        h, w = fg.shape
        corners = [(int(rng.integers(0, h - SIZE_PX)), int(rng.integers(0, w - SIZE_PX))) for _ in range(n_per_field)]
        for _ in range(CROPS_PER_RARE_FIELD if len(rare) else 0):
            cy, cx = rare[int(rng.integers(len(rare)))] + rng.integers(-o // 3, o // 3 + 1, 2)
            corners.append((int(np.clip(cy - SIZE_PX // 2, 0, h - SIZE_PX)),
                            int(np.clip(cx - SIZE_PX // 2, 0, w - SIZE_PX))))
        for y, x in corners:
            xs.append(small[y : y + SIZE_PX, x : x + SIZE_PX])
            fgs.append(fg[y + HALO_PX : y + HALO_PX + o, x + HALO_PX : x + HALO_PX + o])
            bds.append(bnd[y + HALO_PX : y + HALO_PX + o, x + HALO_PX : x + HALO_PX + o])
            mks.append(mk[y + HALO_PX : y + HALO_PX + o, x + HALO_PX : x + HALO_PX + o])
    return np.stack(xs), np.stack(fgs), np.stack(bds), np.stack(mks)


def train(x, fg, bd, mk, norm):
    import torch

    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    net = build_net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    steps = EPOCHS * (len(x) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps, pct_start=0.2)
    mean = np.asarray(norm["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(norm["std"], np.float32).reshape(1, 3, 1, 1)
    pos = float(bd.mean())
    bce_fg = torch.nn.BCEWithLogitsLoss()
    bce_bd = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(min(10.0, (1 - pos) / max(pos, 1e-3))))
    pos_mk = float(mk.mean())
    bce_mk = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(min(10.0, (1 - pos_mk) / max(pos_mk, 1e-3))))
    net.train()
    for epoch in range(EPOCHS):
        order = rng.permutation(len(x))
        total = 0.0
        for s in range(len(x) // BATCH):
            idx = order[s * BATCH : (s + 1) * BATCH]
            xb, fb, bb, mb = x[idx], fg[idx], bd[idx], mk[idx]
            if rng.random() < 0.5:
                xb, fb, bb, mb = xb[:, :, ::-1], fb[:, :, ::-1], bb[:, :, ::-1], mb[:, :, ::-1]
            if rng.random() < 0.5:
                xb, fb, bb, mb = xb[:, ::-1], fb[:, ::-1], bb[:, ::-1], mb[:, ::-1]
            k = int(rng.integers(4))
            xb, fb, bb, mb = (np.rot90(a, k, (1, 2)) for a in (xb, fb, bb, mb))
            inp = (xb.transpose(0, 3, 1, 2).astype(np.float32) * norm["scale"] - mean) / std
            inp = torch.from_numpy(np.ascontiguousarray(inp))
            tf = torch.from_numpy(np.ascontiguousarray(fb)[:, None])
            tb = torch.from_numpy(np.ascontiguousarray(bb)[:, None])
            tm = torch.from_numpy(np.ascontiguousarray(mb)[:, None])
            pf, pb, pm = net(inp)
            loss = bce_fg(pf, tf) + 0.5 * bce_bd(pb, tb) + MARKER_LOSS_WEIGHT * bce_mk(pm, tm)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss)
        print(f"epoch {epoch + 1}/{EPOCHS}: loss {total / max(1, len(x) // BATCH):.4f}", flush=True)
    net.eval()
    return net


def export_onnx(net, path: Path) -> None:
    import torch

    torch.onnx.export(
        net, (torch.zeros(2, 3, SIZE_PX, SIZE_PX),), str(path), dynamo=False, opset_version=17,
        input_names=["image"], output_names=["foreground", "boundary", "markers"], do_constant_folding=True,
        dynamic_axes={"image": {0: "batch"}, "foreground": {0: "batch"}, "boundary": {0: "batch"},
                      "markers": {0: "batch"}},
    )  # fmt: skip


def write_card(out_dir: Path, norm: dict, training_set: str, metrics: dict) -> None:
    card = {
        "name": NAME,
        "version": VERSION,
        "task": "segmentation",
        "description": (
            "Cell detector for Papanicolaou cytology field sets (serous effusion, Warthin FNA): per-pixel foreground, "
            "cell-boundary and cell-centre (nucleus) probability at 0.586 um/px; touching cells split on the boundary "
            "output (cells.split: markers seeds one cell per centre marker instead). Trained on synthetic data only; "
            "not for clinical use."
        ),
        "input": {"name": "image", "layout": "NCHW", "size_px": SIZE_PX, "mpp": MPP, "channel_order": "RGB",
                  "scale": norm["scale"], "mean": norm["mean"], "std": norm["std"], "pad": "reflect"},
        "outputs": {"probabilities": {"name": "foreground", "activation": "sigmoid",
                                      "threshold": FOREGROUND_THRESHOLD},
                    "boundary": {"name": "boundary", "activation": "sigmoid", "threshold": BOUNDARY_THRESHOLD},
                    "markers": {"name": "markers", "activation": "sigmoid"},
                    "halo_px": HALO_PX},
        "cells": CARD_CELLS,
        "classes": [{"id": 1, "name": "cell", "color": "#e4572e", "hotkey": "1", "level": "cell"}],
        "provenance": {"parent": None, "training_set": training_set, "metrics": metrics,
                       "created": datetime.date.today().isoformat()},
    }
    with open(out_dir / "cytoreview.yaml", "w") as fh:
        yaml.safe_dump(card, fh, sort_keys=False, default_flow_style=None, width=120)


def score_cells(cells: dict, case: Path, kind: str, tally: dict) -> None:
    """Add one case's matches (predicted cells against the true instances, IoU 0.5) to ``tally``: matched /
    predicted / true counts and, per true cell type, the true cells and the found ones."""
    from cytoreview.samples.truth import instance_map, read_ground_truth
    from cytoreview.train.detection import matched_pairs, rasterise_cells

    gt = read_ground_truth(case)
    names = {int(c["id"]): c["name"] for c in gt.classes}
    for f in range(len(gt.field_names)):
        lm = gt.labelmap(f)
        sel = gt.cells["field"] == f
        rows = np.c_[gt.cells["y_px"][sel], gt.cells["x_px"][sel], gt.cells["class"][sel]]
        truth = instance_map(lm, rows, CELL_CLASSES[kind])
        pred = rasterise_cells(cells, f, lm.shape)
        pairs = matched_pairs(pred, truth, 0.5)
        true_ids = np.unique(truth[truth > 0])
        for ids, counts in ((true_ids, tally["total"]), (list(pairs), tally["found"])):
            for i in ids:
                name = names[int(rows[int(i) - 1, 2])]
                counts[name] = counts.get(name, 0) + 1
        tally["m"] += len(pairs)
        tally["p"] += len(np.unique(pred[pred > 0]))
        tally["t"] += len(true_ids)


def summary(tally: dict) -> dict:
    from cytoreview.train.detection import detection_f1, recall_by_class

    return {**detection_f1(tally["m"], tally["p"], tally["t"]),
            "recall_by_class": recall_by_class(tally["found"], tally["total"])}


def new_tally() -> dict:
    return {"m": 0, "p": 0, "t": 0, "found": {}, "total": {}}


def evaluate(cases, pack_dir: Path, work: Path) -> dict:
    """Detection F1 at IoU 0.5 of :func:`cytoreview.inference.predict` on ``(case_dir, kind)`` pairs, with the
    detection recall of each true cell type (a true cell counts as found when one predicted cell matches it)."""
    from cytoreview.inference import predict

    tally = new_tally()
    for case, kind in cases:
        store = predict(decoded(Path(case)), pack_dir, work / "predictions", threads=1, resume=False)
        score_cells(store.cells(), Path(case), kind, tally)
    return summary(tally)


#: Candidates tried on the training fields (:func:`choose_cutoffs`): the split, its threshold and, for ``markers``,
#: the compactness of the seeded watershed (:data:`cytoreview.inference.instances.MARKER_COMPACTNESS`).
CANDIDATES = [("boundary", 0.3, None), ("markers", 0.3, 0.01), ("markers", 0.5, 0.01), ("markers", 0.6, 0.01),
              ("markers", 0.7, 0.01), ("markers", 0.8, 0.01), ("markers", 0.85, 0.01), ("markers", 0.9, 0.01),
              ("markers", 0.5, 0.0), ("markers", 0.5, 0.05)]


def choose_cutoffs(cases, pack_dir: Path, work: Path) -> dict:
    """Per candidate split of :data:`CANDIDATES`, the detection figures of each training case: the net runs once per
    case through :func:`cytoreview.inference.predict`, then the cells are extracted again from its store
    (:func:`cytoreview.inference.instances.cells_from_store`) with each candidate's card."""
    import copy

    from cytoreview.inference import instances, predict
    from cytoreview.inference.instances import cells_from_store
    from cytoreview.models import load_pack

    pack = load_pack(pack_dir)
    stores = [(predict(decoded(Path(c)), pack_dir, work / "predictions", threads=1, resume=False), c, k)
              for c, k in cases]
    out = {}
    shipped = instances.MARKER_COMPACTNESS
    for split, thr, compactness in CANDIDATES:
        instances.MARKER_COMPACTNESS = shipped if compactness is None else compactness
        card = copy.deepcopy(pack.card)
        card["cells"]["split"] = split
        if split == "boundary":
            card["outputs"]["boundary"]["threshold"] = thr
        else:
            card["cells"]["marker_threshold"] = thr
        per_case = {}
        for store, case, kind in stores:
            cells, _ = cells_from_store(store.group, card, pack.classes)
            tally = new_tally()
            score_cells(cells, Path(case), kind, tally)
            per_case[kind] = summary(tally)
        out[f"{split} {thr} {compactness}"] = per_case
        print(f"{split} {thr} compactness {compactness}: " + ", ".join(
            f"{k} F1 {v['f1']:.3f} " + " ".join(f"{n} {r:.2f}" for n, r in v["recall_by_class"].items())
            for k, v in per_case.items()), flush=True)
    instances.MARKER_COMPACTNESS = shipped
    return out


def main(argv=None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--out-dir", type=Path, default=here)
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--choose-cutoffs", action="store_true",
                        help="score the candidate splits on the training fields (seed 1) and stop")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from cytoreview.samples import make_effusion_fields, make_warthin_fields

    makers = {"effusion": make_effusion_fields, "warthin": make_warthin_fields}
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cell-detector-"))
    work.mkdir(parents=True, exist_ok=True)

    def case(kind, seed):
        folder = work / f"{kind}_seed{seed}"
        if not (folder / "cytoscan.json").is_file():
            makers[kind](folder, n_fields=N_FIELDS, seed=seed)
        return folder

    training_set = (f"cytoreview.samples make_effusion_fields + make_warthin_fields, seeds {list(TRAIN_SEEDS)}, "
                    f"{N_FIELDS} fields each, {CROPS_PER_FIELD} random {SIZE_PX} px crops per field"
                    + (f" and {CROPS_PER_RARE_FIELD} more near the atypical cells of a field that has some"
                       if CROPS_PER_RARE_FIELD else "")
                    + f"; held out: seeds {list(HELDOUT_SEEDS)} and the committed seed-0 cases in sample_data/")
    if args.choose_cutoffs:
        choose_cutoffs([(case(k, TRAIN_SEEDS[0]), k) for k in makers], args.out_dir, work)
        return 0
    if args.evaluate_only:
        card = yaml.safe_load((args.out_dir / "cytoreview.yaml").read_text())
        norm = {k: card["input"][k] for k in ("scale", "mean", "std")}
        old = card["provenance"]["metrics"]
        n_train, t_train = old["train_crops"], old["train_seconds"]
    else:
        t0 = time.perf_counter()
        rng = np.random.default_rng(SEED)
        fields = []
        for kind in makers:
            for seed in TRAIN_SEEDS:
                fields += field_targets(case(kind, seed), kind)
        x, fg, bd, mk = sample_crops(fields, rng, CROPS_PER_FIELD)
        del fields
        flat = x.reshape(-1, 3).astype(np.float64) / 255.0
        norm = {"scale": 1.0 / 255.0, "mean": [round(float(v), 3) for v in flat.mean(0)],
                "std": [round(float(v), 3) for v in flat.std(0)]}
        print(f"{len(x)} crops, foreground {fg.mean():.3f}, boundary {bd.mean():.3f}, markers {mk.mean():.3f}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        t1 = time.perf_counter()
        net = train(x, fg, bd, mk, norm)
        t_train, n_train = round(time.perf_counter() - t1, 1), int(len(x))
        args.out_dir.mkdir(parents=True, exist_ok=True)
        export_onnx(net, args.out_dir / "model.onnx")
    write_card(args.out_dir, norm, training_set, {})
    sample = here.parents[1] / "sample_data"
    heldout = [(case(k, s), k) for k in makers for s in HELDOUT_SEEDS]
    metrics = {
        "heldout_generated": evaluate(heldout, args.out_dir, work),
        "sample_cases_seed0": evaluate([(sample / "serous_effusion", "effusion"), (sample / "warthin_fna", "warthin")],
                                       args.out_dir, work),
        "iou": 0.5,
        "train_crops": n_train,
        "train_seconds": t_train,
    }
    write_card(args.out_dir, norm, training_set, metrics)
    print(yaml.safe_dump(metrics, sort_keys=False), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
