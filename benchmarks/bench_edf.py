"""Extended depth of field on a synthetic focus stack, as ratios measured in the same run.

1. EDF fields/s (``open_image(folder, focus="edf")``: decode every plane + fuse) ÷ fields/s of decoding the same
   planes alone with Pillow (the raw decode, no fusing)                                       goal >= 0.5
2. sharpness (mean squared gradient) of the EDF plane ÷ that of the sharpest single plane     goal >= 1.0
3. mean absolute error to the sharp ground truth, sharpest single plane ÷ EDF plane           (reported)

The stack: CytoScan-size (1208 x 1928) rendered Warthin fields, 5 focus planes as JPEG, each of 3 x 4 regions sharp
in its own plane (``cytoreview.samples.focus_stack``). Run: ``python benchmarks/bench_edf.py [--json out.json]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Ratio, best_of, print_table, write_json  # noqa: E402

from cytoreview.io import open_image  # noqa: E402
from cytoreview.io.focus import sharpness  # noqa: E402
from cytoreview.samples.focus_stack import make_focus_fields  # noqa: E402

N_FIELDS = 2
N_Z = 5


def run(repeats: int = 3) -> list[Ratio]:
    """The three rows (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_focus_fields(Path(tmp) / "stack", n_fields=N_FIELDS, n_z=N_Z, seed=0)
        files = sorted(folder.glob("field_*_z*.jpg"))

        def raw_decode():
            for path in files:
                with PILImage.open(path) as im:
                    np.asarray(im.convert("RGB"))

        def edf_decode():
            image = open_image(folder, focus="edf")  # a fresh image: nothing decoded or fused yet
            for field in range(N_FIELDS):
                image.read_plane(0, field)

        t_raw = best_of(raw_decode, repeats)
        t_edf = best_of(edf_decode, repeats)

        stack = open_image(folder)
        edf = open_image(folder, focus="edf")
        sharp_edf, sharp_best, err_edf, err_best = [], [], [], []
        for field in range(N_FIELDS):
            truth = np.asarray(PILImage.open(folder / "ground_truth" / f"sharp_{field:03d}.png")).astype(np.float32)
            planes = [stack.read_plane(0, field, z) for z in range(N_Z)]
            best = planes[int(np.argmax([sharpness(p) for p in planes]))]
            fused = edf.read_plane(0, field)
            sharp_edf.append(sharpness(fused))
            sharp_best.append(sharpness(best))
            err_edf.append(float(np.abs(fused - truth).mean()))
            err_best.append(float(np.abs(best - truth).mean()))
    size = f"{N_FIELDS} fields x {N_Z} planes of 1208x1928 JPEG"
    return [
        Ratio("EDF fields/s ÷ raw decode of the same planes", N_FIELDS / t_edf, N_FIELDS / t_raw, "fields/s",
              ">= 0.5", size),
        Ratio("EDF sharpness ÷ sharpest single plane", float(np.mean(sharp_edf)), float(np.mean(sharp_best)),
              "grad²", ">= 1.0", "each of 3x4 regions sharp in its own plane"),
        Ratio("error to truth: sharpest plane ÷ EDF", float(np.mean(err_best)), float(np.mean(err_edf)), "grey lvl",
              "", "mean |pixel - sharp truth|"),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    rows = run()
    print_table(rows)
    if args.json:
        write_json(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
