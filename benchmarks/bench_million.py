"""Million-cell project benchmark: ours ÷ bare SQLite on the same rows, in the same run.

1. ``Project.add_items`` of N cell items (with model calls, so each also gets its "import" journal row) ÷ a bare
   ``executemany`` of the same N rows into an SQLite table of the same columns (WAL, synchronous=FULL, one
   transaction) — goal <= 4;
2. ``Project.label_table()`` ÷ bare ``pandas.read_sql`` of the same item rows — goal <= 3;
3. ``Project.queue("uncertainty")`` (the first item) ÷ the same bare ``read_sql`` — goal <= 3.

Measure it once or twice only on a shared machine (N = 10⁶ takes minutes). Usage::

    PYTHONPATH=src python benchmarks/bench_million.py [--items 1000000]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    return parser


def measure(args) -> dict:
    import pandas as pd

    from cytoreview.review import Project

    n = args.items
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 40000, n).round(1), rng.uniform(0, 40000, n).round(1)
    prob = rng.uniform(0.3, 1.0, n).round(4)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "slide.tif").write_bytes(b"")
        # bare reference: the same rows, one executemany, WAL + synchronous=FULL, one transaction
        con = sqlite3.connect(tmp / "bare.sqlite", isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, image_id INT, level TEXT, field INT, z INT, "
                    "geometry TEXT, x_min INT, y_min INT, x_max INT, y_max INT, model TEXT, model_class INT, "
                    "model_labels TEXT, model_prob REAL, uncertainty REAL, label TEXT, reviewed INT, source TEXT, "
                    "updated_at TEXT)")
        rows = [(1, "cell", 0, 0, json.dumps({"type": "point", "y": float(b), "x": float(a)}), int(a), int(b),
                 int(a), int(b), "m@1", 1, "[1]", float(p), 1 - float(p), "[1]", 0, "model:m@1",
                 "2026-12-01T00:00:00Z") for a, b, p in zip(x, y, prob)]
        start = time.perf_counter()
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT INTO items(image_id, level, field, z, geometry, x_min, y_min, x_max, y_max, model, "
                        "model_class, model_labels, model_prob, uncertainty, label, reviewed, source, updated_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        con.execute("COMMIT")
        t_bare = time.perf_counter() - start
        del rows
        start = time.perf_counter()
        bare_table = pd.read_sql("SELECT * FROM items", con)
        t_read = time.perf_counter() - start
        con.close()
        del bare_table

        with Project.open(tmp / "proj", create=True) as p:
            img = p.add_image(tmp / "slide.tif", kind="wsi", mpp=0.25, plane_shape=(40000, 40000))
            cls = p.schema.add("lymphocyte").id
            items = [{"level": "cell", "geometry": {"type": "point", "y": float(b), "x": float(a)}, "model": "m@1",
                      "model_class": cls, "model_prob": float(q), "uncertainty": 1 - float(q)}
                     for a, b, q in zip(x, y, prob)]
            start = time.perf_counter()
            p.add_items(img, items)
            t_add = time.perf_counter() - start
            del items
            start = time.perf_counter()
            table = p.label_table()
            t_table = time.perf_counter() - start
            start = time.perf_counter()
            first = p.queue("uncertainty")
            t_queue = time.perf_counter() - start
            assert len(table) == n and len(first) == n
    print(f"{n:,} cell items")
    print(f"bare executemany        : {t_bare:7.2f} s;  add_items   : {t_add:7.2f} s  ratio {t_add / t_bare:.2f} (<= 4)")
    print(f"bare read_sql           : {t_read:7.2f} s;  label_table : {t_table:7.2f} s  ratio {t_table / t_read:.2f} "
          "(<= 3)")
    print(f"                                   queue(uncertainty): {t_queue:7.2f} s  ratio {t_queue / t_read:.2f} (<= 3)")
    return {"n": n, "t_bare": t_bare, "t_add": t_add, "t_read": t_read, "t_table": t_table, "t_queue": t_queue}


def run(items: int = 1_000_000):
    """Rows for ``benchmarks/run_all.py``."""
    from _common import Ratio

    r = measure(_parser().parse_args(["--items", str(items)]))
    return [Ratio(f"add_items {r['n']:,} ÷ bare executemany", r["t_add"], r["t_bare"], "s", "<= 4"),
            Ratio(f"label_table {r['n']:,} ÷ bare read_sql", r["t_table"], r["t_read"], "s", "<= 3"),
            Ratio(f"queue('uncertainty') {r['n']:,} ÷ bare read_sql", r["t_queue"], r["t_read"], "s", "<= 3")]


def main(argv=None) -> int:
    measure(_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
