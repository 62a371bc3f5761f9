"""A headless install (``pip install cytoreview`` without the ``napari`` extra) imports the core and runs the
commands that need no viewer; ``cytoreview demo`` says which extra it needs.

The subprocess installs a meta-path finder that refuses napari, Qt and magicgui, as if they were not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.io.conftest import tissue_like, write_pyramid

SRC = Path(__file__).resolve().parents[1] / "src"
GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy", "superqt")

_HEADLESS = f"""
import contextlib, importlib, importlib.abc, io, json, pkgutil, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {GUI!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

sys.meta_path.insert(0, NotInstalled())
import cytoreview
from cytoreview.cli import main

core = [m.name for m in pkgutil.walk_packages(cytoreview.__path__, "cytoreview.")
        if not m.name.startswith("cytoreview._napari")]
for name in core:
    importlib.import_module(name)

slide, out = sys.argv[1], sys.argv[2]
results = {{"core_modules": len(core)}}
for argv in (["--help"], ["info", slide], ["models"], ["predict", slide, "--model", "warthin-tiles", "--out", out,
             "--quiet"], ["demo"]):
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code
    results[argv[0]] = [status, stderr.getvalue()]
results["gui_loaded"] = sorted({{m.split(".")[0] for m in sys.modules}} & set({GUI!r}))
print(json.dumps(results))
"""


def test_core_and_cli_run_without_napari_or_qt(tmp_path):
    slide = write_pyramid(tmp_path / "slide.tif", tissue_like(512, 768))
    result = subprocess.run([sys.executable, "-c", _HEADLESS, str(slide), str(tmp_path / "predictions")],
                            capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert results["core_modules"] > 50
    for command in ("--help", "info", "models", "predict"):
        assert results[command][0] in (0, None), f"{command}: {results[command]}"
    assert list((tmp_path / "predictions").glob("*.zarr")), "predict wrote no store"
    status, stderr = results["demo"]
    assert status == 2
    assert stderr.count("\n") == 1 and 'pip install "cytoreview[napari]"' in stderr, stderr
    assert results["gui_loaded"] == []


def test_demo_without_a_display_says_so_instead_of_aborting(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run([sys.executable, "-m", "cytoreview.cli", "demo"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 2, result.stderr  # not 134 (Qt's abort)
    assert "no display" in result.stderr and "xvfb-run" in result.stderr and "Traceback" not in result.stderr
    from cytoreview._napari.cli import require_display

    require_display({"DISPLAY": ":1"}, "linux")  # a display: fine
    require_display({}, "darwin")  # not X11 / Wayland: Qt finds its own screen
    require_display({"QT_QPA_PLATFORM": "offscreen"}, "linux")


def test_demo_renders_the_slide_sample_before_any_window(monkeypatch):
    import io

    from cytoreview._napari import demo

    made = []
    monkeypatch.setattr("cytoreview.samples.lymph_node_slide", lambda: made.append(1))
    out = io.StringIO()
    demo.prepare_case("warthin", out)  # committed sample: nothing to do
    assert made == [] and out.getvalue() == ""
    demo.prepare_case("lymph-node", out)
    assert made == [1] and "first use" in out.getvalue()
