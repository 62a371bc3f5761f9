"""Benchmark: export N cell items to CSV + GeoJSON + COCO, as a ratio to pandas ``to_csv`` of the same table.

Run: ``PYTHONPATH=src python benchmarks/bench_export.py [--n 100000] [--repeat 3]`` (the goal's figure:
``--n 1000000 --repeat 1 --no-per-format``; wall and CPU time). Prints the time of each
format and the ratio ours / reference, where the reference (pandas ``DataFrame.to_csv`` of the label table itself)
is measured in the same run. Images are stand-ins whose pixels are never read (only plane sizes, for COCO): the
exports run with ``include_paths=True``, so COCO names the original images instead of writing a pixel copy of every
plane (copying ten 40000² planes is image writing, not label export; a real export does it once per plane). All three
are streamed, formatted a chunk of rows at a time; the peak RSS of the process (the table included) is printed too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cytoreview.export import export_labels
from cytoreview.io.image import Image


def make_table(n_items: int, n_images: int = 10, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """A label table of ``n_items`` reviewed cells, built from numpy arrays: the repeating values (paths, case ids,
    label lists) are shared objects, as in ``Project.label_table()``, so a 10⁶-row table stays a few hundred MB."""
    rng = np.random.default_rng(seed)
    names = ["lymphocyte", "macrophage", "mesothelial", "atypical"]
    image_id = np.arange(n_items) % n_images + 1
    # as a project stores cells: centres to 0.001 px (review.geometry), the model's float32 probability as a float
    x = rng.uniform(0, 40000, n_items).round(3)
    y = rng.uniform(0, 40000, n_items).round(3)
    cls = rng.integers(0, len(names), n_items)

    def shared(values, index):
        table = np.empty(len(values), dtype=object)
        table[:] = values
        return pd.Series(table[index], dtype=object)

    paths = [f"/slides/case{i:02d}.svs" for i in range(1, n_images + 1)]
    cases = [f"case{i:02d}" for i in range(1, n_images + 1)]
    table = pd.DataFrame(
        {
            "item_id": np.arange(1, n_items + 1),
            "image_id": image_id,
            "image_path": shared(paths, image_id - 1),
            "case_id": shared(cases, image_id - 1),
            "level": "cell",
            "field": 0,
            "z": 0,
            "x_min": x, "y_min": y, "x_max": x, "y_max": y,
            "geometry": [f'{{"type":"point","x":{a!r},"y":{b!r}}}' for a, b in zip(x.tolist(), y.tolist())],
            "labels": shared([[n] for n in names], cls),
            "label_ids": shared([[k] for k in range(len(names))], cls),
            "model_label": shared(names, cls),
            "confidence": rng.uniform(0.3, 1.0, n_items).astype(np.float32).astype(np.float64),
            "source": "reviewer",
            "reviewer": "ana",
            "model": "effusion-cells@1.0.0",
            "mpp": 0.25,
            "reviewed": True,
            "corrected": rng.random(n_items) < 0.2,
            "unsure": False,
            "updated_at": "2026-11-22T10:00:00+00:00",
        }
    )
    blank = np.broadcast_to(np.uint8(255), (40000, 40000, 3))  # plane size only; never read
    images = {
        i: Image(path=Path(f"/slides/case{i:02d}.svs"), kind="wsi", levels=[blank], mpp=0.25, reader="bench")
        for i in range(1, n_images + 1)
    }
    return table, images


def run(items: int = 100_000, repeat: int = 3):
    """Return the ratio rows for ``benchmarks/run_all.py``."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import Ratio

    best_ours, best_ref = measure(argparse.Namespace(items=items, repeat=repeat, per_format=True), quiet=True)
    return [Ratio(f"export {items:,} cells to CSV+GeoJSON+COCO ÷ pandas to_csv", best_ours, best_ref, "s", "")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", "--items", dest="items", type=int, default=100_000, help="cells (10^6 for the goal)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (best of); 1 is enough at 10^6")
    parser.add_argument("--no-per-format", dest="per_format", action="store_false",
                        help="skip timing each format alone")
    measure(parser.parse_args())


def measure(args, quiet: bool = False) -> tuple[float, float]:
    """Time the export and the reference; print unless ``quiet``; return (ours, reference) best seconds."""
    table, images = make_table(args.items)
    tmp = Path(tempfile.mkdtemp(prefix="bench_export_"))
    try:
        ref, ours, per_format = [], [], {"csv": [], "geojson": [], "coco": []}
        cpu_ref, cpu_ours = [], []
        for r in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            table.to_csv(tmp / f"ref{r}.csv", index=False)
            ref.append(time.perf_counter() - t0)
            cpu_ref.append(time.process_time() - c0)
            t0, c0 = time.perf_counter(), time.process_time()
            export_labels(table, tmp / f"all{r}", ("csv", "geojson", "coco"), images=images, select="all",
                          include_paths=True)
            ours.append(time.perf_counter() - t0)
            cpu_ours.append(time.process_time() - c0)
            shutil.rmtree(tmp / f"all{r}", ignore_errors=True)
            (tmp / f"ref{r}.csv").unlink()
            for fmt in per_format if getattr(args, "per_format", True) else ():
                t0 = time.perf_counter()
                export_labels(table, tmp / f"{fmt}{r}", fmt, images=images, select="all", include_paths=True)
                per_format[fmt].append(time.perf_counter() - t0)
                shutil.rmtree(tmp / f"{fmt}{r}", ignore_errors=True)
        best_ref, best_ours = min(ref), min(ours)
        if quiet:
            return best_ours, best_ref
        print(f"items: {args.items}, repeats: {args.repeat} (best of)")
        print(f"reference pandas to_csv of the label table: {best_ref:.3f} s")
        for fmt, times in per_format.items():
            if times:
                print(f"  {fmt:8s} alone: {min(times):.3f} s  ratio {min(times) / best_ref:.2f}")
        print(f"csv+geojson+coco export: {best_ours:.3f} s")
        print(f"RATIO ours / pandas to_csv = {best_ours / best_ref:.2f} (CPU time {min(cpu_ours):.2f} s / "
              f"{min(cpu_ref):.2f} s = {min(cpu_ours) / min(cpu_ref):.2f})")
        import resource

        print(f"peak RSS of this process (table included): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        return best_ours, best_ref
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
