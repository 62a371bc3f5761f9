"""The core never imports napari, Qt or magicgui (DESIGN §2): import every core module with those blocked."""

import pkgutil
import subprocess
import sys

import cytoreview

BLOCKED = ("napari", "qtpy", "PyQt5", "PySide2", "PySide6", "magicgui", "vispy", "superqt")


def _core_modules():
    for info in pkgutil.walk_packages(cytoreview.__path__, "cytoreview."):
        if not info.name.startswith("cytoreview._napari"):
            yield info.name


def test_core_imports_without_napari_or_qt():
    modules = sorted(_core_modules())
    assert "cytoreview.io.open" in modules
    code = f"""
import importlib, importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {BLOCKED!r}:
            raise ImportError('core module imported GUI package ' + name)
sys.meta_path.insert(0, Block())
for m in {modules!r}:
    importlib.import_module(m)
print('ok', len({modules!r}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
