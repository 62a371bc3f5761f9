"""Million-cell project benchmark: ours ÷ bare SQLite on the same rows, in the same run.

1. ``Project.add_items`` of N cell items (with model calls, so each also becomes the item's label, journalled) ÷ a
   bare ``executemany`` of the same N rows, pre-built (geometry text and its 64-bit key), into an SQLite table of the
   same columns (WAL, synchronous=FULL, one transaction, the same page cache as a project connection) — goal <= 4.
   Also shown: the same bare insert into a table with the project's indexes (what SQLite alone costs us), wall and
   CPU time;
2. ``Project.label_table()`` ÷ bare ``pandas.read_sql`` of the same item rows — goal <= 3;
3. ``Project.queue("uncertainty")`` (every pending id, in order) ÷ the same bare ``read_sql`` — goal <= 3;
4. ``Project.progress()`` (what ``review-status`` prints) and ``Project.queue(limit=100)``: seconds (no goal).

Run it once or twice only on a shared machine (N = 10⁶ takes a few minutes). Usage::

    PYTHONPATH=src python benchmarks/bench_million.py [--n 1000000]
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

_COLUMNS = ("image_id INT, level TEXT, field INT, z INT, geometry TEXT, geometry_key INT, x_min INT, y_min INT, "
            "x_max INT, y_max INT, "
            "model TEXT, model_class INT, model_labels TEXT, model_prob REAL, uncertainty REAL, label TEXT, "
            "reviewed INT, source TEXT, updated_at TEXT")
_INSERT = ("INSERT INTO items(image_id, level, field, z, geometry, geometry_key, x_min, y_min, x_max, y_max, model, "
           "model_class, model_labels, model_prob, uncertainty, label, reviewed, source, updated_at) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", "--items", dest="n", type=int, default=1_000_000, help="cell items (default 10^6)")
    return parser


class _Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def _bare_insert(path: Path, rows: list, indexes: tuple, cache_kib: int) -> _Clock:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute(f"PRAGMA cache_size=-{cache_kib}")
    con.execute(f"CREATE TABLE items(id INTEGER PRIMARY KEY, {_COLUMNS})")
    for stmt in indexes:
        con.execute(stmt)
    with _Clock() as clock:
        con.execute("BEGIN IMMEDIATE")
        con.executemany(_INSERT, rows)
        con.execute("COMMIT")
    con.close()
    return clock


def measure(args) -> dict:
    import pandas as pd

    from cytoreview.review import Project
    from cytoreview.review.connection import CACHE_KIB, ITEMS_DDL
    from cytoreview.review.geometry import identity_keys

    # the project's item indexes (for the "bare + indexes" line), kept up row by row as the rows go in
    indexes = tuple(line for line in ITEMS_DDL.splitlines() if line.startswith("CREATE") and " INDEX " in line)

    n = args.n
    rng = np.random.default_rng(0)
    # as predict hands cells over: centroids with every digit (the project keeps 0.001 px), float32 probabilities
    x, y = rng.uniform(0, 40000, n).tolist(), rng.uniform(0, 40000, n).tolist()
    prob = rng.uniform(0.3, 1.0, n).astype(np.float32).astype(np.float64).tolist()

    def stored(v: float):  # the coordinate as the project stores it (review.geometry)
        return int(v) if float(v).is_integer() else round(v, 3)

    out: dict = {"n": n}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "slide.tif").write_bytes(b"")
        # bare reference: the same rows, pre-built, one executemany, WAL + synchronous=FULL, one transaction
        stamp = "2026-12-01T00:00:00.000000+00:00"
        texts = [f'{{"type":"point","x":{stored(a)!r},"y":{stored(b)!r}}}' for a, b in zip(x, y)]
        rows = [(1, "cell", 0, 0, t, k, int(a), int(b), int(a), int(b), "m@1", 1, "[1]", p, 1 - p, "[1]", 0,
                 "model:m@1", stamp) for t, k, a, b, p in zip(texts, identity_keys(texts), x, y, prob)]
        del texts
        rows = list({r[4]: r for r in rows}.values())  # the few repeated points once (the project keeps one item)
        bare = _bare_insert(tmp / "bare.sqlite", rows, (), CACHE_KIB)
        indexed = _bare_insert(tmp / "indexed.sqlite", rows, indexes, CACHE_KIB)
        del rows
        con = sqlite3.connect(tmp / "bare.sqlite")
        with _Clock() as read:
            bare_table = pd.read_sql("SELECT * FROM items", con)
        con.close()
        del bare_table
        out.update(bare=bare, indexed=indexed, read=read)

        with Project.open(tmp / "proj", create=True) as p:
            img = p.add_image(tmp / "slide.tif", kind="wsi", mpp=0.25, plane_shape=(40000, 40000))
            cls = p.schema.add("lymphocyte").id
            items = [{"level": "cell", "geometry": {"type": "point", "y": b, "x": a}, "model": "m@1",
                      "model_class": cls, "model_prob": q, "uncertainty": 1 - q} for a, b, q in zip(x, y, prob)]
            del x, y, prob
            with _Clock() as add:
                ids = p.add_items(img, items)
            del items
            with _Clock() as table_clock:
                table = p.label_table()
            n_rows = len(table)
            del table
            with _Clock() as queue_clock:
                order = p.queue("uncertainty")
            n_queue = len(order)
            del order
            with _Clock() as top:
                p.queue("uncertainty", limit=100)
            with _Clock() as progress:
                p.progress()
            assert n_rows == len(set(ids)) == n_queue, (n_rows, len(set(ids)), n_queue)
            out.update(add=add, table=table_clock, queue=queue_clock, top=top, progress=progress)

    def line(name, ours, ref, goal):
        print(f"{name:34s}: {ours.wall:7.2f} s ÷ {ref.wall:6.2f} s = {ours.wall / ref.wall:5.2f} "
              f"(CPU {ours.cpu:6.2f} ÷ {ref.cpu:6.2f} = {ours.cpu / max(ref.cpu, 1e-9):5.2f})  goal {goal}")

    print(f"{n:,} cell items")
    line("add_items ÷ bare executemany", out["add"], out["bare"], "<= 4")
    line("  bare + project indexes ÷ bare", out["indexed"], out["bare"], "-")
    line("  add_items ÷ bare + indexes", out["add"], out["indexed"], "-")
    line("label_table ÷ bare read_sql", out["table"], out["read"], "<= 3")
    line("queue('uncertainty') ÷ bare read_sql", out["queue"], out["read"], "<= 3")
    print(f"queue('uncertainty', limit=100)    : {out['top'].wall:7.3f} s;  progress(): {out['progress'].wall:7.3f} s")
    return out


def run(items: int = 1_000_000):
    """Rows for ``benchmarks/run_all.py``."""
    from _common import Ratio

    r = measure(_parser().parse_args(["--n", str(items)]))
    return [Ratio(f"add_items {r['n']:,} ÷ bare executemany", r["add"].wall, r["bare"].wall, "s", "<= 4"),
            Ratio(f"label_table {r['n']:,} ÷ bare read_sql", r["table"].wall, r["read"].wall, "s", "<= 3"),
            Ratio(f"queue('uncertainty') {r['n']:,} ÷ bare read_sql", r["queue"].wall, r["read"].wall, "s", "<= 3")]


def main(argv=None) -> int:
    measure(_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
