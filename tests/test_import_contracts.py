"""The dependency rules in pyproject's ``[tool.importlinter]`` hold (run by import-linter, as napari does).

Contracts: the core never imports napari or Qt (only ``cytoreview._napari`` does), and the layer order
``_napari -> workflows -> (review, export, train, inference, samples) -> (models, io) -> errors``.
import-linter reads every import statement, including those inside functions, so a lazy import of napari in the
core breaks the contract too.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_LINT = ("import sys\n"
         "from importlinter.cli import lint_imports\n"
         "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))\n")


def test_contracts_name_the_gui_ban_and_the_layers():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = {c["id"]: c for c in config["contracts"]}
    assert {"napari", "qtpy", "PyQt5", "magicgui", "vispy", "superqt"} <= set(contracts["core-no-gui"]["forbidden_modules"])
    layers = contracts["layers"]["layers"]
    assert layers[0].startswith("cytoreview._napari") and "cytoreview.workflows" in layers[1]
    assert "cytoreview.review" in layers[2] and "cytoreview.models" in layers[3] and "cytoreview.io" in layers[3]


def test_import_contracts_are_kept():
    result = subprocess.run([sys.executable, "-c", _LINT], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-4000:]
    assert "0 broken" in report and report.count("KEPT") == 2, report[-4000:]
