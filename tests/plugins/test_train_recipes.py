"""The pack training scripts: each ``plugins/<pack>/train.py`` holds only its pack's data and label rule, and the
shared recipe (``plugins/pack_training.py``) trains deterministically and exports a graph cytoreview can run.

The scripts import without torch; the training test needs torch (a development tool, not a dependency) and is
skipped without it.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import yaml

from .conftest import LABEL_RULES, PACK_NAMES, PLUGINS


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_train_{name.replace('-', '_')}", PLUGINS / name / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def recipe_module():
    sys.path.insert(0, str(PLUGINS))
    try:
        import pack_training

        yield pack_training
    finally:
        sys.path.remove(str(PLUGINS))


@pytest.mark.parametrize("name", PACK_NAMES)
def test_each_script_describes_its_committed_card(name):
    recipe = _script(name).RECIPE
    card = yaml.safe_load((PLUGINS / name / "cytoreview.yaml").read_text())
    assert (recipe.name, recipe.version, recipe.description) == (card["name"], card["version"], card["description"])
    assert recipe.classes == card["classes"]
    assert (recipe.size_px, recipe.mpp) == (card["input"]["size_px"], card["input"]["mpp"])
    assert recipe.label_rule == LABEL_RULES[name]
    # the shared recipe holds the loop: no script defines its own training, export or evaluation
    source = (PLUGINS / name / "train.py").read_text()
    for shared in ("def train(", "def export_onnx(", "def evaluate(", "def build_net(", "torch.onnx"):
        assert shared not in source, f"{name}/train.py still defines {shared!r}"


@pytest.mark.slow
def test_recipe_trains_deterministically_and_exports_a_runnable_graph(tmp_path, recipe_module, monkeypatch):
    pytest.importorskip("torch")
    import onnxruntime as ort

    monkeypatch.setattr(recipe_module, "EPOCHS", 1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    y = np.arange(48) % 3
    x[y == 1] //= 2  # something to learn
    norm = recipe_module.normalisation(x)
    blobs = []
    for run in range(2):
        net = recipe_module.train(x, y, norm, 3, repeat={2: 2})
        path = tmp_path / f"model{run}.onnx"
        recipe_module.export_onnx(net, path, 32)
        blobs.append(path.read_bytes())
    assert blobs[0] == blobs[1], "two identical training runs wrote different ONNX files"
    session = ort.InferenceSession(str(tmp_path / "model0.onnx"), providers=["CPUExecutionProvider"])
    logits, embedding = session.run(["logits", "embedding"],
                                    {"image": recipe_module.to_input(x[:5], norm["mean"], norm["std"], norm["scale"])})
    assert logits.shape == (5, 3) and embedding.shape == (5, recipe_module.EMBED_DIM)


@pytest.mark.parametrize("name", ["effusion-cells", "warthin-cells"])
def test_each_cell_pack_script_is_its_data_and_label_rule_on_the_shared_recipe(name):
    recipe = _script(name).RECIPE
    card = yaml.safe_load((PLUGINS / name / "cytoreview.yaml").read_text())
    assert recipe.task == card["task"] == "cell-classification" and recipe.unit == "cells"
    assert (recipe.name, recipe.version, recipe.description) == (card["name"], card["version"], card["description"])
    assert recipe.classes == card["classes"] and recipe.classes[-1]["name"] == "other"
    assert (recipe.size_px, recipe.mpp) == (card["input"]["size_px"], card["input"]["mpp"])
    assert recipe.label_rule["detector"] == "cell-detector" and set(recipe.label_rule["class_map"].values()) == set(
        range(len(recipe.classes) - 1))
    assert "train_cells" in card["provenance"]["metrics"]
    source = (PLUGINS / name / "train.py").read_text()
    for shared in ("def train(", "def export_onnx(", "def evaluate(", "def build_net(", "torch.onnx", "runpy"):
        assert shared not in source, f"{name}/train.py still defines {shared!r}"
