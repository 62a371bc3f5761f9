"""Benchmark: set_label latency in a project with 100,000 cell items, against a bare SQLite commit.

Reference (same run, same disk): one ``BEGIN IMMEDIATE; INSERT; COMMIT`` on a bare table in a WAL database with
``synchronous=FULL`` -- the cheapest durable write SQLite can do. ``set_label`` does that plus the read of the old
value, the class check, the items/reviews updates and the journal row; the ratio is what our bookkeeping costs.

Also printed (no reference): opening the project (integrity check), adding the items, queue and next_item,
label_table, undo.

Usage: python benchmarks/bench_review.py [--items 100000] [--ops 300] [--dir DIR]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cytoreview.review import Project


def _pct(values, q):
    return float(np.percentile(np.asarray(values) * 1e3, q))


class BareSqlite:
    """The reference: durable single-row commits in a bare WAL/FULL database."""

    def __init__(self, folder: Path):
        self.con = sqlite3.connect(folder / "bare.sqlite", isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=FULL")
        self.con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, item INTEGER, v TEXT, ts TEXT)")

    def write(self, k: int) -> float:
        """One INSERT+COMMIT; return its latency in s."""
        t0 = time.perf_counter()
        self.con.execute("BEGIN IMMEDIATE")
        self.con.execute("INSERT INTO t (item, v, ts) VALUES (?, ?, ?)", (k, "[1]", "2026-01-01T00:00:00"))
        self.con.execute("COMMIT")
        return time.perf_counter() - t0


def run(items: int = 100_000, ops: int = 300):
    """Return the ratio rows for ``benchmarks/run_all.py``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import Ratio

    with tempfile.TemporaryDirectory(prefix="bench_review_") as tmp:
        result = measure(argparse.Namespace(items=items, ops=ops, dir=Path(tmp)), quiet=True)
    ours, ref = result["ours"], result["ref"]
    return [
        Ratio(f"set_label p95 latency ÷ bare SQLite commit p95 ({items:,} cells)", _pct(ours, 95), _pct(ref, 95),
              "ms", "", "durable WAL/FULL writes on this disk"),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--ops", type=int, default=300)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    measure(ap.parse_args(argv))
    return 0


def measure(args, quiet: bool = False) -> dict:
    """Run the measurement; print it unless ``quiet``; return the raw latencies."""
    base = Path(tempfile.mkdtemp(prefix="bench_review_", dir=args.dir))
    image = base / "slide.tif"
    image.write_bytes(b"\0" * 1024)

    p = Project.open(base / "proj", create=True)
    img = p.add_image(image, kind="wsi", mpp=0.5, plane_shape=(100_000, 100_000))
    for name in ("lymphocyte", "tumour", "macrophage", "stroma"):
        p.schema.add(name)
    rng = np.random.default_rng(0)
    ys, xs = rng.uniform(0, 100_000, (2, args.items))
    cls = rng.integers(0, 4, args.items)
    unc = rng.uniform(0, 1, args.items)
    t0 = time.perf_counter()
    ids = p.add_items(img, ({"level": "cell", "geometry": {"type": "point", "y": float(y), "x": float(x)},
                             "model": "bench@1", "model_class": int(c), "model_prob": 1 - float(u) / 2,
                             "uncertainty": float(u)} for y, x, c, u in zip(ys, xs, cls, unc)))
    t_add = time.perf_counter() - t0
    p.close()

    t0 = time.perf_counter()
    p = Project.open(base / "proj")
    t_open = time.perf_counter() - t0

    pick = random.Random(1)
    bare = BareSqlite(base)
    ours, ref = [], []
    for k in range(args.ops):  # interleaved, so load from other processes hits both alike
        item = pick.choice(ids)
        t0 = time.perf_counter()
        p.set_label(item, pick.randrange(4), "bench", dwell_s=1.0)
        ours.append(time.perf_counter() - t0)
        ref.append(bare.write(k))
    bare.con.close()

    t0 = time.perf_counter()
    q = p.queue("uncertainty")
    t_queue = time.perf_counter() - t0
    t0 = time.perf_counter()
    p.next_item("bench", "uncertainty")
    t_next = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = p.label_table()
    t_table = time.perf_counter() - t0
    t0 = time.perf_counter()
    p.undo("bench")
    t_undo = time.perf_counter() - t0
    p.close()
    db_mb = (base / "proj" / "project.sqlite").stat().st_size / 1e6
    if quiet:
        return {"ours": ours, "ref": ref}
    print(f"project: {args.items:,} cell items, {args.ops} set_label calls, db {db_mb:.1f} MB in {base}")
    print(f"set_label           p50 {_pct(ours, 50):7.3f} ms   p95 {_pct(ours, 95):7.3f} ms   "
          f"mean {statistics.fmean(ours) * 1e3:7.3f} ms")
    print(f"bare INSERT+COMMIT  p50 {_pct(ref, 50):7.3f} ms   p95 {_pct(ref, 95):7.3f} ms   "
          f"mean {statistics.fmean(ref) * 1e3:7.3f} ms   (WAL, synchronous=FULL, same disk)")
    print(f"ratio set_label / bare commit: p50 {_pct(ours, 50) / _pct(ref, 50):.2f}x   "
          f"p95 {_pct(ours, 95) / _pct(ref, 95):.2f}x")
    print(f"add_items {args.items:,}: {t_add:.2f} s | open (integrity_check): {t_open * 1e3:.0f} ms | "
          f"queue ({len(q):,} ids): {t_queue * 1e3:.0f} ms | next_item: {t_next * 1e3:.0f} ms | "
          f"label_table ({len(table):,} rows): {t_table * 1e3:.0f} ms | undo: {t_undo * 1e3:.1f} ms")
    return {"ours": ours, "ref": ref}


if __name__ == "__main__":
    sys.exit(main())
