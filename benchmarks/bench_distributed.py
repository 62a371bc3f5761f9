"""Scale-out benchmark: ``predict_many`` on a local dask cluster of N worker processes ÷ serial ``predict``.

Two generated JPEG-tiled slides and the small benchmark CNN (see ``bench_inference.py``). The serial reference is what
``cytoreview predict A B`` does without ``--workers``: one process, one session, the images one after the other, each
through the full pipeline (which already uses every core). The scale-out run includes everything a user waits for:
starting the cluster (worker processes, imports), each worker loading its session once, and the workers writing the
stores. Printed:

* wall(--workers N) ÷ wall(serial) (goal <= 1.05 for 2 slides on 2 cores), the local cluster as ``--workers`` starts
  it (worker threads of this process);
* the same with worker processes (``--workers N --processes``), and without the cluster's start-up (its fixed cost,
  measured alone: processes up, each importing the pipeline and opening its session);
* per-worker efficiency = scale-out throughput per core ÷ serial throughput per core, start-up left out (1.0 = no
  loss from splitting the cores between workers).

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
    from distributed import Client

    from cytoreview.inference import predict
    from cytoreview.inference.distributed import local_cluster, predict_many
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

        def scaled(processes: bool):
            def run():
                out = tmp / "dist"
                shutil.rmtree(out, ignore_errors=True)
                predict_many(slides, pack, out, n_workers=args.workers, processes=processes, resume=False)

            return run

        def startup(processes: bool):  # the cluster's fixed cost: workers up, each with the pipeline and a session
            def run():
                with local_cluster(args.workers, 1, processes) as cluster, Client(cluster) as client:
                    client.run(_open_session, str(pack.path))

            return run

        jobs = {"serial": serial, "threads": scaled(False), "processes": scaled(True),
                "start threads": startup(False), "start processes": startup(True)}
        times: dict[str, list[float]] = {name: [] for name in jobs}
        for _ in range(args.repeats):
            for name, fn in jobs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        best = {name: min(t) for name, t in times.items()}
        t_serial = best["serial"]
        workers_cores = min(cores, args.workers * max(1, cores // args.workers))

        def efficiency(kind: str) -> float:
            """Scale-out throughput per core ÷ serial throughput per core, start-up left out."""
            return (t_serial * cores) / (max(best[kind] - best[f"start {kind}"], 1e-9) * workers_cores)

        print(f"{args.slides} slides of {args.size_px}^2 px, {args.workers} workers, {cores} cores")
        print(f"serial predict            : {t_serial:7.2f} s   ({' '.join(f'{t:.2f}' for t in times['serial'])})")
        for kind in ("threads", "processes"):
            print(f"{args.workers} worker {kind:9s}     : {best[kind]:7.2f} s   "
                  f"({' '.join(f'{t:.2f}' for t in times[kind])}); cluster start-up alone {best['start ' + kind]:.2f} s")
        print(f"ratio workers (threads) / serial     = {best['threads'] / t_serial:.3f}   (goal <= 1.05)")
        print(f"ratio workers (processes) / serial   = {best['processes'] / t_serial:.3f}")
        print(f"  without start-up                   = {(best['processes'] - best['start processes']) / t_serial:.3f}")
        print(f"per-worker efficiency threads; processes = {efficiency('threads'):.3f}; {efficiency('processes'):.3f}")
        return {"t_serial": t_serial, "t_scaled": best["threads"], "t_processes": best["processes"],
                "t_start": best["start threads"], "t_start_processes": best["start processes"],
                "efficiency": efficiency("threads"), "efficiency_processes": efficiency("processes"),
                "workers": args.workers, "slides": args.slides}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _open_session(pack_path: str) -> bool:
    """Worker side: load the pack and open its session as a prediction task would (only a flag comes back)."""
    from cytoreview.inference.distributed import worker_session

    return worker_session(pack_path, None, 1) is not None


def run(repeats: int = 2):
    """Rows for ``benchmarks/run_all.py``."""
    from _common import Ratio

    r = measure(_parser().parse_args(["--repeats", str(repeats)]))
    return [
        Ratio(f"predict --workers {r['workers']} wall ÷ serial ({r['slides']} slides)", r["t_scaled"], r["t_serial"],
              "s", "<= 1.05", note=f"worker threads; cluster start-up {r['t_start']:.1f} s; per-worker efficiency "
                                   f"{r['efficiency']:.2f}"),
        Ratio(f"predict --workers {r['workers']} --processes wall ÷ serial ({r['slides']} slides)", r["t_processes"],
              r["t_serial"], "s", "", note=f"cluster start-up {r['t_start_processes']:.1f} s; per-worker "
                                            f"efficiency {r['efficiency_processes']:.2f}"),
    ]


def main(argv=None) -> int:
    measure(_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
