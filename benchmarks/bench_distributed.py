"""Scale-out benchmark: ``predict_many`` on a local dask cluster of N worker processes ÷ serial ``predict``.

Two generated JPEG-tiled slides and the small benchmark CNN (see ``bench_inference.py``). The serial reference is what
``cytoreview predict A B`` does without ``--workers``: one process, one session, the images one after the other, each
through the full pipeline (which already uses every core). The scale-out run includes everything a user waits for:
starting the cluster (worker processes, imports), each worker loading its session once, and the workers writing the
stores. Printed:

* wall(--workers N) ÷ wall(serial) (goal <= 1.05 for 2 slides on 2 cores);
* the same without the cluster's start-up (its fixed cost, measured alone);
* per-worker efficiency = serial throughput per core ÷ scale-out throughput per core (1.0 = no loss from splitting
  the cores between processes).

Usage::

    PYTHONPATH=src python benchmarks/bench_distributed.py [--size-px 8192] [--workers 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-px", type=int, default=8192, help="side of each slide at level 0")
    parser.add_argument("--slides", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    return parser


def measure(args) -> dict:
    from bench_inference import build_pack, make_slide
    from distributed import Client, LocalCluster

    from cytoreview.inference import predict
    from cytoreview.inference.distributed import predict_many
    from cytoreview.inference.predict import available_cores
    from cytoreview.models import load_pack

    tmp = Path(tempfile.mkdtemp(prefix="cytoreview-bench-dist-"))
    try:
        pack = load_pack(build_pack(tmp / "pack", 128, 0.5))
        slides = []
        for i in range(args.slides):
            make_slide(tmp / f"slide{i}.tif", args.size_px, 0.5)
            slides.append(tmp / f"slide{i}.tif")
        cores = available_cores()

        def serial():
            out = tmp / "serial"
            shutil.rmtree(out, ignore_errors=True)
            session = pack.session()
            for path in slides:
                predict(path, pack, out, session=session, resume=False)

        def scaled():
            out = tmp / "dist"
            shutil.rmtree(out, ignore_errors=True)
            predict_many(slides, pack, out, n_workers=args.workers, resume=False)

        def startup():  # the cluster's fixed cost: processes up, one trivial task on each
            with LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None) as cluster:
                with Client(cluster) as client:
                    client.run(lambda: __import__("cytoreview.inference.predict"))

        times: dict[str, list[float]] = {"serial": [], "scaled": [], "startup": []}
        for _ in range(args.repeats):
            for name, fn in (("serial", serial), ("scaled", scaled), ("startup", startup)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        t_serial, t_scaled, t_start = (min(times[k]) for k in ("serial", "scaled", "startup"))
        per_core_serial = 1.0 / (t_serial * cores)
        per_core_scaled = 1.0 / (max(t_scaled - t_start, 1e-9) * min(cores, args.workers * max(1, cores // args.workers)))
        print(f"{args.slides} slides of {args.size_px}^2 px, {args.workers} worker processes, {cores} cores")
        print(f"serial predict          : {t_serial:7.2f} s   ({' '.join(f'{t:.2f}' for t in times['serial'])})")
        print(f"predict_many, {args.workers} workers : {t_scaled:7.2f} s   ({' '.join(f'{t:.2f}' for t in times['scaled'])})")
        print(f"cluster start-up alone  : {t_start:7.2f} s")
        print(f"ratio workers / serial             = {t_scaled / t_serial:.3f}   (goal <= 1.05)")
        print(f"ratio (workers - start-up) / serial = {(t_scaled - t_start) / t_serial:.3f}")
        print(f"per-worker efficiency               = {per_core_scaled / per_core_serial:.3f}")
        return {"t_serial": t_serial, "t_scaled": t_scaled, "t_start": t_start,
                "efficiency": per_core_scaled / per_core_serial, "workers": args.workers, "slides": args.slides}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(repeats: int = 2):
    """Rows for ``benchmarks/run_all.py``."""
    from _common import Ratio

    r = measure(_parser().parse_args(["--repeats", str(repeats)]))
    return [
        Ratio(f"predict --workers {r['workers']} wall ÷ serial ({r['slides']} slides)", r["t_scaled"], r["t_serial"],
              "s", "<= 1.05", note=f"cluster start-up {r['t_start']:.1f} s; per-worker efficiency "
                                   f"{r['efficiency']:.2f}"),
    ]


def main(argv=None) -> int:
    measure(_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
