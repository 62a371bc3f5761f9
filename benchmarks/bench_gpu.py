"""GPU benchmark (needs onnxruntime-gpu and a CUDA device; says so and exits 0 elsewhere).

Ratios measured in the same run on a generated JPEG-tiled slide:

1. ``predict(..., providers="cuda")`` patches/s ÷ the best bare CUDA ``session.run`` on the same pre-decoded,
   pre-normalised patches (best of plain ``run`` and IO binding, over batch sizes 16..256) — goal >= 0.85: decoding
   on the CPU cores keeps the GPU fed;
2. the same pipeline on CUDA ÷ on CPU (what the GPU buys end to end).

Usage::

    PYTHONPATH=src python benchmarks/bench_gpu.py [--size-px 8192] [--patch-px 224] [--widths 64,128,256]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-px", type=int, default=8192)
    parser.add_argument("--patch-px", type=int, default=224)
    parser.add_argument("--widths", default="64,128,256")
    parser.add_argument("--repeats", type=int, default=3)
    return parser


def measure(args) -> dict | None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("no CUDAExecutionProvider in this onnxruntime (install onnxruntime-gpu on a machine with a GPU): "
              "nothing measured")
        return None
    from bench_inference import build_pack, make_slide, open_slide

    from cytoreview.inference import predict
    from cytoreview.inference.grid import make_grid
    from cytoreview.models import load_pack

    mpp = 0.5
    tmp = Path(tempfile.mkdtemp(prefix="cytoreview-bench-gpu-"))
    try:
        widths = tuple(int(w) for w in args.widths.split(","))
        pack = load_pack(build_pack(tmp / "pack", args.patch_px, mpp, widths))
        make_slide(tmp / "slide.tif", args.size_px, mpp)
        image = open_slide(tmp / "slide.tif", mpp)
        gpu = pack.session(providers="cuda")
        if gpu.providers[0] != "CUDAExecutionProvider":
            print(f"CUDA session fell back to {gpu.providers}: nothing measured")
            return None
        grid = make_grid(image, pack)
        patches = np.stack([grid.read_tile(image, 0, r, c) for r in range(grid.n_rows) for c in range(grid.n_cols)])
        x = gpu.preprocess(patches)
        n = len(x)

        def bare(bs: int, bound: bool):
            def go():
                for i in range(0, n, bs):
                    chunk = x[i : i + bs]
                    if bound:
                        gpu.run_bound([gpu.prob_name], chunk)
                    else:
                        gpu.session.run([gpu.prob_name], {gpu.input_name: chunk})

            return go

        def pipeline(providers, batch):
            def go():
                shutil.rmtree(tmp / "out", ignore_errors=True)
                predict(image, pack, tmp / "out", providers=providers, batch_size=batch, tissue_threshold=0.0,
                        resume=False)

            return go

        bare(64, True)()  # warm-up: CUDA kernels, cuDNN autotuning
        times: dict[str, float] = {}
        for _ in range(args.repeats):
            for bs in (16, 32, 64, 128, 256):
                for bound in (False, True):
                    key = f"bare bs{bs} {'iobinding' if bound else 'run'}"
                    start = time.perf_counter()
                    bare(bs, bound)()
                    times[key] = min(times.get(key, np.inf), time.perf_counter() - start)
        best_key = min((k for k in times if k.startswith("bare")), key=times.get)
        batch = int(best_key.split()[1][2:])
        for _ in range(args.repeats):
            for key, fn in (("predict cuda", pipeline("cuda", batch)), ("predict cpu", pipeline("cpu", None))):
                start = time.perf_counter()
                fn()
                times[key] = min(times.get(key, np.inf), time.perf_counter() - start)
        for key, t in sorted(times.items(), key=lambda kv: kv[1]):
            print(f"{key:28s} {n / t:9.1f} patches/s")
        print(f"ratio predict(cuda) / best bare CUDA run ({best_key}) = {times[best_key] / times['predict cuda']:.3f}"
              "   (goal >= 0.85)")
        print(f"ratio predict cuda / predict cpu (speed-up)           = {times['predict cpu'] / times['predict cuda']:.2f}")
        image.close()
        return {"n": n, "t_bare": times[best_key], "best": best_key, "t_cuda": times["predict cuda"],
                "t_cpu": times["predict cpu"]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(repeats: int = 3):
    """Rows for ``benchmarks/run_all.py`` (none without a GPU)."""
    from _common import Ratio

    r = measure(_parser().parse_args(["--repeats", str(repeats)]))
    if r is None:
        return []
    return [Ratio("predict on CUDA patches/s ÷ best bare CUDA session.run", r["n"] / r["t_cuda"], r["n"] / r["t_bare"],
                  "patches/s", ">= 0.85", note=r["best"]),
            Ratio("predict on CUDA ÷ predict on CPU (speed-up)", r["t_cpu"], r["t_cuda"], "s", "")]


def main(argv=None) -> int:
    measure(_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
