"""Benchmark: one gallery key press on a page of 100 cells, against one bare SQLite transaction of 100 rows.

A key press (``gallery.reclassify`` -> ``Project.set_labels``) writes every cell's label, review and journal row
in ONE ``BEGIN IMMEDIATE ... COMMIT`` (one fsync). Reference (same run, same disk): one bare transaction inserting
100 rows into a table of a WAL database with ``synchronous=FULL``. Also measured: undoing that key press (one
``Project.undo``: the whole group), and the same 100 cells written as 100 ``set_label`` calls (one commit each,
how the gallery wrote a key press before). Runs interleaved, medians.

Usage: python benchmarks/bench_key_press.py [--items 10000] [--repeats 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Ratio, print_table, write_json  # noqa: E402

PAGE = 100


def _bare_page(con: sqlite3.Connection, k: int) -> float:
    """One durable transaction of ``PAGE`` rows; its latency in s."""
    rows = [(k * PAGE + i, "[1]", "2026-01-01T00:00:00") for i in range(PAGE)]
    t0 = time.perf_counter()
    con.execute("BEGIN IMMEDIATE")
    con.executemany("INSERT INTO t (item, v, ts) VALUES (?, ?, ?)", rows)
    con.execute("COMMIT")
    return time.perf_counter() - t0


def run(items: int = 10_000, repeats: int = 15) -> list[Ratio]:
    from cytoreview.review import Project, gallery

    with tempfile.TemporaryDirectory(prefix="bench_key_press_") as tmp:
        base = Path(tmp)
        (base / "slide.tif").write_bytes(b"\0" * 1024)
        p = Project.open(base / "proj", create=True)
        img = p.add_image(base / "slide.tif", kind="wsi", mpp=0.5, plane_shape=(100_000, 100_000))
        classes = [p.schema.add(name, level="cell").id for name in ("lymphocyte", "neutrophil", "macrophage")]
        rng = np.random.default_rng(0)
        ys, xs = rng.uniform(0, 100_000, (2, items))
        ids = p.add_items(img, ({"level": "cell", "geometry": {"type": "point", "y": float(y), "x": float(x)},
                                 "model": "bench@1", "model_class": classes[k % 3], "model_prob": 0.6}
                                for k, (y, x) in enumerate(zip(ys, xs))))
        bare = sqlite3.connect(base / "bare.sqlite", isolation_level=None)
        bare.execute("PRAGMA journal_mode=WAL")
        bare.execute("PRAGMA synchronous=FULL")
        bare.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, item INTEGER, v TEXT, ts TEXT)")
        press, undo, singles, ref = [], [], [], []
        for k in range(repeats):  # interleaved, so load from other processes hits all alike
            page = [int(i) for i in ids[(k * PAGE) % (items - PAGE):][:PAGE]]
            cls = classes[k % 3]
            t0 = time.perf_counter()
            gallery.reclassify(p, page, cls, "bench")
            press.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            p.undo("bench")
            undo.append(time.perf_counter() - t0)
            ref.append(_bare_page(bare, k))
            t0 = time.perf_counter()
            for iid in page:
                p.set_label(iid, [cls], "bench")
            singles.append(time.perf_counter() - t0)
        bare.close()
        p.close()
    ms = [statistics.median(v) * 1e3 for v in (press, undo, singles, ref)]
    return [
        Ratio(f"gallery key press on {PAGE} cells ÷ one bare SQLite transaction of {PAGE} rows", ms[0], ms[3], "ms",
              "", "WAL, synchronous=FULL"),
        Ratio("undo of that key press (one Project.undo) ÷ the same bare transaction", ms[1], ms[3], "ms", ""),
        Ratio(f"{PAGE} set_label calls (the gallery's key press before) ÷ one key press", ms[2], ms[0], "ms", ""),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = run(args.items, args.repeats)
    print_table(rows)
    if args.json:
        write_json(rows, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
