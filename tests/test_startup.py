"""``cytoreview --help``, every ``cytoreview COMMAND --help`` and ``cytoreview info`` import only what they use
(issue 11 item 3).

Each command runs in a fresh interpreter; the test then reads ``sys.modules``. pandas, scikit-image,
onnxruntime, napari/Qt and dask.distributed cost seconds to import and none of them is needed to list the commands,
show one command's options or describe an image; ``info`` does not need dask.array (nor the scipy it pulls in) either.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cytoreview.cli import COMMANDS
from tests.io.conftest import tissue_like, write_fields, write_pyramid

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("pandas", "skimage", "onnxruntime", "napari", "qtpy", "PyQt5", "magicgui", "distributed")
#: Not needed to describe an image either: only pixel access builds a dask graph.
HEAVY_FOR_INFO = (*HEAVY, "dask.array", "scipy")

_RUNNER = """
import json, sys
from cytoreview.cli import main
try:
    status = main(sys.argv[2:])
except SystemExit as exc:
    status = exc.code
with open(sys.argv[1], "w") as fh:
    json.dump({"status": status, "modules": sorted(sys.modules)}, fh)
"""


def _modules_after(tmp_path: Path, *argv: str) -> set[str]:
    """Top-level and full names of the modules loaded by ``cytoreview ARGV`` in a fresh interpreter."""
    out = tmp_path / "modules.json"
    result = subprocess.run([sys.executable, "-c", _RUNNER, str(out), *argv], capture_output=True, text=True,
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["status"] in (0, None), result.stderr[-2000:]
    return {name.split(".")[0] for name in data["modules"]} | set(data["modules"])


def _slide(tmp_path: Path) -> Path:
    return write_pyramid(tmp_path / "slide.tif", tissue_like(512, 768))


def _fields(tmp_path: Path) -> Path:
    write_fields(tmp_path / "case", 3)
    return tmp_path / "case"


@pytest.mark.parametrize("argv", [["--help"]] + [[name, "--help"] for name, _, _ in COMMANDS],
                         ids=lambda argv: " ".join(argv))
def test_help_imports_nothing_heavy(tmp_path, argv):
    loaded = _modules_after(tmp_path, *argv)
    heavy = sorted(loaded & set(HEAVY))
    assert not heavy, f"cytoreview {' '.join(argv)} imported {heavy}"


@pytest.mark.parametrize("make", [_slide, _fields], ids=["slide", "fields"])
def test_info_imports_nothing_heavy(tmp_path, make):
    loaded = _modules_after(tmp_path, "info", str(make(tmp_path)), "--json")
    assert "cytoreview" in loaded
    heavy = sorted(loaded & set(HEAVY_FOR_INFO))
    assert not heavy, f"cytoreview info imported {heavy}"


def test_model_and_inference_modules_import_onnxruntime_only_when_a_session_opens():
    code = ("import sys\n"
            "import cytoreview.models, cytoreview.inference, cytoreview.models.cli, cytoreview.inference.cli\n"
            "print(sorted({'onnxruntime', 'distributed'} & {m.split('.')[0] for m in sys.modules}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(SRC)}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("package", ["review", "export", "train", "inference", "models"])
def test_package_reexports_are_lazy_and_resolve(package):
    """Importing one area's module imports none of its siblings; every re-exported name still resolves, to the
    function (not the submodule) where a module and its function share a name (``train.refit``)."""
    code = (f"import sys, types, importlib\n"
            f"before = set(sys.modules)\n"
            f"pkg = importlib.import_module('cytoreview.{package}')\n"
            f"print(sorted(m for m in set(sys.modules) - before if m.startswith('cytoreview.{package}.')))\n"
            f"for name in pkg.__all__:\n"
            f"    importlib.import_module(pkg._EXPORTS[name])\n"
            f"    value = getattr(pkg, name)\n"
            f"    assert not isinstance(value, types.ModuleType), name\n"
            f"    assert value is getattr(importlib.import_module(pkg._EXPORTS[name]), name), name\n"
            f"    exec(f'from cytoreview.{package} import {{name}} as v'); assert v is value, name\n"
            f"print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(SRC)}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["[]", "ok"]
