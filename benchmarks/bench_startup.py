"""Benchmark: start-up cost of the ``cytoreview`` command over a bare interpreter (issue 11 item 3).

Reference (same run, same interpreter and environment): ``python -c pass``. Ours: ``cytoreview --help``,
``cytoreview info SLIDE`` (a small tiled pyramid written here) and ``cytoreview info FIELDS`` (the committed
Warthin field set), each run as the console script runs it (``from cytoreview.cli import main``). The runs are
interleaved, repeated, and the medians compared; the goal is ``info`` wall − bare wall ≤ 0.5 s. A floor is measured
beside them: ``python -c "import numpy"``, the one library every ``info`` needs (the reader and header code is
numpy; a slide's headers are then read with tifffile, a field set's with Pillow).

Usage: python benchmarks/bench_startup.py [--repeats 7] [--json FILE]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import Difference, Ratio, print_table, write_json  # noqa: E402

FIELDS = HERE.parent / "sample_data" / "warthin_fna"
_CLI = "import sys; from cytoreview.cli import main; sys.exit(main())"
_FLOOR = "import numpy"


def write_slide(path: Path) -> Path:
    """A 2048² JPEG-tiled pyramid (3 levels, 0.5 µm/px), as scanners write them."""
    import numpy as np
    import tifffile

    yy, xx = np.mgrid[0:2048, 0:2048]
    base = np.stack([(127 + 100 * np.sin(xx / (20 + 5 * k)) * np.cos(yy / 30)) for k in range(3)], -1).astype(np.uint8)
    options = dict(tile=(256, 256), compression="jpeg", photometric="rgb")
    with tifffile.TiffWriter(path) as tw:
        tw.write(base, subifds=2, resolution=(2e4, 2e4), resolutionunit="CENTIMETER", **options)
        tw.write(base[::2, ::2], subfiletype=1, **options)
        tw.write(base[::4, ::4], subfiletype=1, **options)
    return path


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of ``argv``."""
    cpu, start = _cpu_children(), time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start, _cpu_children() - cpu


def measure(repeats: int = 7) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds of each command, runs interleaved (``repeats`` rounds after a warm-up round).

    CPU time is reported beside the wall time: on a shared machine it shows how much of a slow wall is waiting for a
    core rather than work.
    """
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        slide = write_slide(Path(tmp) / "slide.tif")
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "floor": [sys.executable, "-c", _FLOOR],
            "cytoreview --help": [sys.executable, "-c", _CLI, "--help"],
            "cytoreview info SLIDE": [sys.executable, "-c", _CLI, "info", str(slide)],
            "cytoreview info FIELDS": [sys.executable, "-c", _CLI, "info", str(FIELDS)],
        }
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for round_ in range(repeats + 1):
            for name, argv in commands.items():
                result = _run(argv)
                if round_:  # the first round only warms the file cache
                    runs[name].append(result)
    return {name: (statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
            for name, values in runs.items()}


def run(repeats: int = 7) -> list[Ratio]:
    """Return the rows for ``benchmarks/run_all.py``."""
    medians = measure(repeats)
    bare_wall, bare_cpu = medians["python -c pass"]
    floor_wall, floor_cpu = medians["floor"]
    rows = []
    for name, label, goal in (("cytoreview --help", "`cytoreview --help`", ""),
                              ("cytoreview info SLIDE", "`cytoreview info` (2048² pyramid)", "<= 0.5"),
                              ("cytoreview info FIELDS", "`cytoreview info` (CytoScan field set)", "<= 0.5")):
        wall, cpu = medians[name]
        note = (f"medians of {repeats}; bare interpreter {bare_wall * 1e3:.0f} ms; CPU time {cpu - bare_cpu:.3f} s "
                f"over bare; floor (import numpy) {floor_wall - bare_wall:.3f} s wall, "
                f"{floor_cpu - bare_cpu:.3f} s CPU over bare")
        rows.append(Difference(f"{label} wall − `python -c pass` wall", wall, bare_wall, "s", goal, note))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    rows = run(args.repeats)
    print_table(rows)
    if args.json:
        write_json(rows, args.json)
