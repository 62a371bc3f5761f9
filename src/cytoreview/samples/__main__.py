"""``python -m cytoreview.samples``: regenerate the committed sample cases (and optionally the WSI).

Usage::

    python -m cytoreview.samples [--out DIR] [--wsi] [--wsi-size-px N] [--seed N]

Without ``--out`` the field sets are rewritten in the ``sample_data/`` folder of this checkout.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from .._paths import bundled_dir
from .cases import EFFUSION_NAME, LYMPH_NODE_FILE, LYMPH_NODE_NAME, WARTHIN_NAME, ensure_generated


def main(argv=None) -> int:
    """Regenerate the sample cases; returns the exit code."""
    ap = argparse.ArgumentParser(prog="python -m cytoreview.samples", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="destination folder (default: the bundled sample_data/)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wsi", action="store_true", help="also render the lymph node whole-slide image")
    ap.add_argument("--wsi-size-px", type=int, default=16384)
    args = ap.parse_args(argv)
    from .effusion import make_effusion_fields
    from .warthin import make_warthin_fields

    out = args.out if args.out is not None else bundled_dir("sample_data")
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(WARTHIN_NAME, "cytoscan.json", lambda d: make_warthin_fields(d, seed=args.seed)),
            (EFFUSION_NAME, "cytoscan.json", lambda d: make_effusion_fields(d, seed=args.seed))]
    if args.wsi:
        from .lymph_node import make_lymph_node_slide

        jobs.append((LYMPH_NODE_NAME, "lymph_node.json",
                     lambda d: make_lymph_node_slide(d / LYMPH_NODE_FILE, size_px=args.wsi_size_px, seed=args.seed)))
    for name, marker, build in jobs:
        t0 = time.perf_counter()
        final = out / name
        fresh = ensure_generated(out / f".{name}.new", build, marker)  # complete before the old copy goes
        old = out / f".{name}.old"
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        fresh.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
        print(f"{final}: {size / 1e6:.2f} MB in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
