"""The inference and model-pack core imports neither napari nor Qt, and onnxruntime only when a session opens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def test_core_does_not_import_gui_or_onnxruntime_eagerly():
    code = (
        "import sys\n"
        "for name in ('napari', 'qtpy', 'magicgui', 'PyQt5'):\n"
        "    sys.modules[name] = None  # importing them now raises ImportError\n"
        "import cytoreview.models, cytoreview.inference, cytoreview.models.cli, cytoreview.inference.cli, cytoreview.workflows.cli\n"
        "assert 'onnxruntime' not in sys.modules, 'onnxruntime imported at import time'\n"
        "assert 'distributed' not in sys.modules, 'dask.distributed imported at import time'\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)}, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
