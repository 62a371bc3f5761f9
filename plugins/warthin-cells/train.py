"""Train the ``warthin-cells`` cell-classification pack: ``plugins/effusion-cells/train.py --case warthin``.

    PYTHONPATH=src python plugins/warthin-cells/train.py [--work-dir DIR] [--out-dir DIR]

The recipe (detections of ``cell-detector`` labelled by the generator's truth, crops centred on each cell, a small
CNN with an embedding) is the effusion one; see that script's docstring.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "--case", "warthin", *sys.argv[1:]]
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "effusion-cells" / "train.py"), run_name="__main__")
