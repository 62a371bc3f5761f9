"""Run every ratio benchmark, print one table and write it as JSON.

Each ``bench_*.py`` here exposes ``run() -> list[Ratio]``: ours and a reference measured in the same run, the ratio
and the goal from the issues (a blank goal is reported only). Usage::

    xvfb-run -a python benchmarks/run_all.py [--json benchmarks/results.json] [--only io,review]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import print_table, write_json  # noqa: E402

#: Benchmark modules in the order the table lists them.
MODULES = ["bench_io", "bench_inference", "bench_distributed", "bench_review", "bench_review_gui", "bench_export",
           "bench_million", "bench_refit", "bench_cells", "bench_edf", "bench_gallery", "bench_key_press", "bench_gpu",
           "bench_startup"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(HERE / "results.json"), help="where to write the rows")
    parser.add_argument("--only", default="", help="comma-separated subset, e.g. io,review")
    args = parser.parse_args(argv)
    wanted = {f"bench_{name.strip()}" for name in args.only.split(",") if name.strip()}
    rows, failures = [], []
    for name in MODULES:
        if wanted and name not in wanted:
            continue
        if not (HERE / f"{name}.py").exists():
            continue
        started = time.perf_counter()
        try:
            module = importlib.import_module(name)
            rows.extend(module.run())
        except Exception:  # noqa: BLE001 - report every failure, keep the rest of the table
            failures.append((name, traceback.format_exc()))
        print(f"({name}: {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    print_table(rows)
    write_json(rows, args.json)
    for name, trace in failures:
        print(f"\n{name} failed:\n{trace}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
