"""Benchmark: accuracy of a refit pack vs its base pack, after N corrections chosen by the review queue.

A simulated reviewer corrects N tiles of a *pool* case (a Warthin field set rendered with a seed the pack never saw):
the tiles come from the uncertainty queue (most uncertain first) or at random, and the reviewer's answer is the
ground-truth tile label (``ground_truth/labelmap_*.png``, the pack's own rule: majority class, oncocytic epithelium or
lymphocytes win a tile at >= 25 % -- ``LABEL_RULE`` of ``plugins/warthin-tiles/train.py`` is used when present).
The pack is refit from that project (:func:`cytoreview.train.refit_detailed`, no holdout) and scored on the tiles of
*test* cases that neither the pack nor the refit saw (the committed sample case, seed 0, and a fresh seed): accuracy,
balanced accuracy and Cohen's kappa against ground truth, next to the base pack's scores on the same tiles
(reference, same run). Variants: the training set is the N reviewed tiles alone, or those plus the base pack's
confident calls on the rest of the pool (``select="reviewed+confident"``); the head is fitted from zero or from the
base pack's own head (``prior="base"``).

``--stain-shift`` renders the same cases as if stained and scanned elsewhere: every field's optical density
(Beer-Lambert, ``-log(I/255)``) is scaled per RGB channel (default factors 2.2, 0.45, 1.8: a much heavier, bluer
staining) before anything sees it -- the situation a refit is for (the base pack was trained on the unshifted
generator).

The refit head is scored on the test stores' base embeddings (the refit pack computes exactly that; checked once by
running the refit pack through ``predict`` on the test case).

Usage: python benchmarks/bench_refit.py [--pack warthin-tiles] [--n 50,200] [--repeats 3] [--pool-fields 24]
       [--stain-shift [R,G,B]] [--work DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from cytoreview.inference import predict
from cytoreview.models import load_pack
from cytoreview.review import Project
from cytoreview.samples import make_warthin_fields, warthin_case
from cytoreview.samples.truth import pack_tile_labels
from cytoreview.train import refit_detailed
from cytoreview.train.evaluate import kappa

POOL_SEED = 301
TEST_SEED = 302
#: The pack's tile-labelling rule when its train.py cannot be imported (same numbers as plugins/warthin-tiles).
FALLBACK_RULE = {"class_map": [0, 1, 2, 3], "priority": [2, 3], "min_frac": 0.25}


def _pack_rule(pack):
    """``(tile_labels, rule)`` from the pack's train.py, else this file's copy of the rule."""
    script = Path(pack.path) / "train.py"
    if script.is_file():
        spec = importlib.util.spec_from_file_location("_pack_train", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if hasattr(module, "LABEL_RULE"):
            return pack_tile_labels, module.LABEL_RULE, f"{script.name} of the pack"
    return pack_tile_labels, FALLBACK_RULE, "fallback copy of the rule"


def truth_grid(case: Path, store, labeller, rule) -> np.ndarray:
    """Ground-truth pack class id per tile ``(n_fields, n_rows, n_cols)``."""
    nf, nr, nc = store.grid_shape
    out = np.full((nf, nr, nc), -1, dtype=np.int64)
    for f in range(nf):
        lm = np.asarray(PILImage.open(case / "ground_truth" / f"labelmap_{f:03d}.png"))
        lab, _ = labeller(lm, store.tile_px_level0, rule)
        out[f] = lab[:nr, :nc]
    return out


def stain_shift(src: Path, dst: Path, factors) -> Path:
    """Copy field set ``src`` to ``dst`` with every field's optical density scaled per channel by ``factors``."""
    if (dst / "cytoscan.json").is_file():
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    f = np.asarray(factors, dtype=np.float32)
    for field in sorted(tmp.glob("field_*.jpg")):
        rgb = np.asarray(PILImage.open(field).convert("RGB"), dtype=np.float32)
        od = -np.log(np.clip(rgb, 1, 255) / 255.0)
        out = np.clip(255.0 * np.exp(-od * f), 0, 255).astype(np.uint8)
        PILImage.fromarray(out).save(field, quality=95)
    tmp.rename(dst)
    return dst


def scores(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> dict:
    recalls = [float((pred[truth == k] == k).mean()) for k in range(n_classes) if (truth == k).any()]
    return {"accuracy": float((pred == truth).mean()), "balanced": float(np.mean(recalls)),
            "kappa": kappa(truth, pred, n_classes)}  # fmt: skip


def run(repeats: int = 3):
    """Return the ratio rows for ``benchmarks/run_all.py``: refit accuracy ÷ base accuracy per queue and N."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import Ratio

    with tempfile.TemporaryDirectory(prefix="bench_refit_rows_") as tmp:
        out = Path(tmp) / "rows.json"
        main(["--repeats", str(repeats), "--json", str(out)])
        rows = json.loads(out.read_text())
    base = next(r for r in rows if r["n"] == 0)
    base_acc = statistics.mean(base["accuracy"])
    return [
        Ratio(f"accuracy after {r['n']} {r['strategy']}-queue corrections ({r['method']}) ÷ base pack",
              statistics.mean(r["accuracy"]), base_acc, "accuracy", "")
        for r in rows if r["n"] > 0
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pack", default="warthin-tiles", help="base pack (name or folder)")
    ap.add_argument("--n", default="50,200", help="numbers of corrections, comma-separated")
    ap.add_argument("--repeats", type=int, default=3, help="random-queue repeats (different seeds)")
    ap.add_argument("--pool-fields", type=int, default=24, help="fields of the pool case the reviewer corrects")
    ap.add_argument("--test-fields", type=int, default=8, help="fields of the fresh test case")
    ap.add_argument("--min-confidence", type=float, default=0.9, help="for the reviewed+confident variant")
    ap.add_argument("--reg", type=float, default=1e-3)
    ap.add_argument("--work", type=Path, help="work folder (kept); default a temporary one (removed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the rows as JSON")
    ap.add_argument("--stain-shift", nargs="?", const="2.2,0.45,1.8", default=None, metavar="R,G,B",
                    help="scale the optical density of every case per channel (default 2.2,0.45,1.8)")
    args = ap.parse_args(argv)
    ns = [int(v) for v in args.n.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_refit_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = load_pack(args.pack)
    labeller, rule, rule_from = _pack_rule(base)
    names = [c["name"] for c in base.classes]
    k = len(names)
    print(f"base pack {base.ref} ({base.path}); tile truth by the {rule_from}", file=sys.stderr)

    # ---- cases and base predictions
    pool = work / f"warthin_pool_s{POOL_SEED}"
    if not (pool / "cytoscan.json").is_file():
        make_warthin_fields(pool, n_fields=args.pool_fields, seed=POOL_SEED)
    fresh = work / f"warthin_test_s{TEST_SEED}"
    if not (fresh / "cytoscan.json").is_file():
        make_warthin_fields(fresh, n_fields=args.test_fields, seed=TEST_SEED)
    tests = [warthin_case(), fresh]
    shift_text = "none"
    if args.stain_shift:
        factors = [float(v) for v in args.stain_shift.split(",")]
        tag = "x".join(f"{v:g}" for v in factors)
        pool = stain_shift(pool, work / f"{pool.name}_shift{tag}", factors)
        tests = [stain_shift(case, work / f"{case.name}_shift{tag}", factors) for case in tests]
        shift_text = f"optical density x ({args.stain_shift})"
    preds = work / "predictions"
    pool_store = predict(pool, base, preds, threads=args.threads)
    test_stores = [predict(case, base, preds, threads=args.threads) for case in tests]
    print(f"cases and base predictions ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    # ---- test tiles: predicted by the base (tissue) and their ground truth
    emb_t, truth_t, base_t = [], [], []
    for case, store in zip(tests, test_stores):
        cls = np.asarray(store.tile_class[:])
        truth = truth_grid(case, store, labeller, rule)
        done = cls >= 0
        emb_t.append(np.asarray(store.embedding[:])[done])
        truth_t.append(truth[done])
        base_t.append(cls[done])
    emb_t, truth_t, base_t = np.concatenate(emb_t), np.concatenate(truth_t), np.concatenate(base_t)
    base_scores = scores(truth_t, base_t, k)
    pool_truth = truth_grid(pool, pool_store, labeller, rule)

    # ---- the pool project: base predictions imported once, copied for every run
    template = work / "pool_project"
    if template.exists():
        shutil.rmtree(template)
    p = Project.open(template, create=True)
    image_id = p.add_image(pool, kind="fields", mpp=0.293, case_id="pool")
    p.import_predictions(image_id, pool_store.path)
    n_tiles = len(p.items(level="tile"))
    p.close()

    rows = [{"method": "base pack", "strategy": "-", "n": 0, **{m: [base_scores[m]] for m in base_scores}}]
    variants = [("reviewed only", "reviewed", None), ("reviewed only, base prior", "reviewed", "base"),
                ("reviewed + confident calls", "reviewed+confident", None),
                ("reviewed + confident calls, base prior", "reviewed+confident", "base")]  # fmt: skip
    checked = False
    run = 0
    for n in ns:
        for strategy in ("uncertainty", "random"):
            seeds = [0] if strategy == "uncertainty" else list(range(args.repeats))
            results = {v[0]: {"accuracy": [], "balanced": [], "kappa": []} for v in variants}
            for seed in seeds:
                run += 1
                folder = work / f"run{run}"
                if folder.exists():
                    shutil.rmtree(folder)
                folder.mkdir()
                shutil.copy(template / "project.sqlite", folder / "project.sqlite")
                proj = Project.open(folder)
                ids = {c.name: c.id for c in proj.schema.active_classes}
                items = proj.items(level="tile")
                where = {int(i): (int(f), g["row"], g["col"]) for i, f, g in
                         zip(items["item_id"], items["field"], items["geometry"])}  # fmt: skip
                chosen = proj.queue(strategy, level="tile", seed=seed, limit=n)
                for iid in chosen:  # the simulated reviewer answers with the ground truth
                    f, r, c = where[iid]
                    proj.set_label(iid, ids[names[pool_truth[f, r, c]]], "sim")
                for label, select, prior in variants:
                    out = folder / f"pack-{label.replace(' ', '-').replace(',', '').replace('+', 'plus')}"
                    res = refit_detailed(proj, base, out, holdout=0.0, select=select, prior=prior, reg=args.reg,
                                         min_confidence=args.min_confidence, seed=seed)  # fmt: skip
                    name_of = [c["name"] for c in res.pack.classes]
                    pred_names = np.array(name_of)[res.head.predict(emb_t)]
                    pred = np.array([names.index(x) for x in pred_names])
                    sc = scores(truth_t, pred, k)
                    for m in sc:
                        results[label][m].append(sc[m])
                    if not checked:  # the real pack through predict gives the same calls on the fresh test case
                        store = predict(tests[1], res.pack, folder / "check", threads=args.threads)
                        cls = np.asarray(store.tile_class[:])
                        done = np.asarray(test_stores[1].tile_class[:]) >= 0
                        via_pack = np.array(name_of)[cls[done]]
                        n1 = int(done.sum())
                        offset = len(truth_t) - n1
                        agree = float((via_pack == pred_names[offset:]).mean())
                        print(f"check: refit pack through predict agrees with the head on {agree:.4f} of "
                              f"{n1} test tiles", file=sys.stderr)  # fmt: skip
                        checked = True
                proj.close()
                print(f"  n={n} {strategy} seed {seed} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
            for label, _, _ in variants:
                rows.append({"method": label, "strategy": strategy, "n": n, **results[label]})

    # ---- table
    print(f"\nbase {base.ref}; stain shift: {shift_text}; pool: {args.pool_fields} fields (seed {POOL_SEED}, "
          f"{n_tiles} tiles); test: {len(truth_t)} tiles of sample case seed 0 + seed {TEST_SEED}; random queue: "
          f"{args.repeats} seeds")
    print(f"{'method':40s} {'queue':12s} {'N':>4s} {'accuracy':>15s} {'bal. acc':>15s} {'kappa':>15s} "
          f"{'acc / base':>10s}")
    for r in rows:
        def cell(vals):
            vals = [v for v in vals if v is not None]
            if not vals:
                return "n/a"
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            return f"{statistics.mean(vals):.3f}" + (f" ± {sd:.3f}" if len(vals) > 1 else "        ")
        ratio = statistics.mean(r["accuracy"]) / base_scores["accuracy"]
        print(f"{r['method']:40s} {r['strategy']:12s} {r['n']:4d} {cell(r['accuracy']):>15s} "
              f"{cell(r['balanced']):>15s} {cell(r['kappa']):>15s} {ratio:10.3f}")
    print("\nuncertainty ÷ random accuracy (same N, same variant):")
    for n in ns:
        for label, _, _ in variants:
            u = next(r for r in rows if r["method"] == label and r["n"] == n and r["strategy"] == "uncertainty")
            q = next(r for r in rows if r["method"] == label and r["n"] == n and r["strategy"] == "random")
            print(f"  N={n:4d} {label:40s} {statistics.mean(u['accuracy']) / statistics.mean(q['accuracy']):.3f}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
