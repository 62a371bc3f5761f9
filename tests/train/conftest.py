"""Fixtures for the refit tests: a tiny ONNX pack with an embedding output, a slide of coloured tiles, and a
project whose tile items were predicted by the pack and corrected by a reviewer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper

from cytoreview.review import UNSURE, Project

TILE_PX = 16
MPP = 0.5
#: Class colours of the synthetic slide (RGB) and their names.
COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 60, 200)}
NAMES = list(COLOURS)
#: The base head confuses red and green: it maps the red direction to "green" and the green one to "red".
BASE_PERMUTATION = [1, 0, 2]


def embedding_graph(path: Path, *, n_classes: int = 3, permutation=BASE_PERMUTATION, extra_probs_branch=True,
                    embedding_output=True) -> Path:
    """NCHW (N,3,16,16) -> channel means -> MatMul P (3x6) -> Relu = ``embedding`` (N,6) -> MatMul -> ``probs``.

    The probabilities path has an extra Mul node of its own (dropped when a head is appended).
    """
    p = np.array([[4, 0, 0, -2, 1, 1], [0, 4, 0, 1, -2, 1], [0, 0, 4, 1, 1, -2]], dtype=np.float32)
    head = np.zeros((6, n_classes), dtype=np.float32)
    for src, dst in enumerate(permutation[:3]):
        head[src, dst] = 3.0
    nodes = [
        helper.make_node("ReduceMean", ["image", "axes"], ["means"], keepdims=0),
        helper.make_node("MatMul", ["means", "P"], ["proj"]),
        helper.make_node("Relu", ["proj"], ["embedding"]),
        helper.make_node("MatMul", ["embedding", "H"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"), numpy_helper.from_array(p, "P"),
             numpy_helper.from_array(head, "H")]
    if extra_probs_branch:
        nodes.append(helper.make_node("Mul", ["logits", "temp"], ["probs"]))
        inits.append(numpy_helper.from_array(np.array(2.0, dtype=np.float32), "temp"))
    else:
        nodes.append(helper.make_node("Identity", ["logits"], ["probs"]))
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", n_classes])]
    if embedding_output:
        outputs.append(helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 6]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                          ["N", 3, TILE_PX, TILE_PX])],
                              outputs, inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def pack_card(name="tiny-tiles", embedding=True) -> dict:
    card = {
        "name": name, "version": "1.0.0", "task": "tile-classification", "description": "test pack",
        "input": {"name": "image", "layout": "NCHW", "size_px": TILE_PX, "mpp": MPP},
        "outputs": {"probabilities": {"name": "probs", "activation": "softmax"}},
        "classes": [{"id": i, "name": n, "color": c, "hotkey": str(i + 1), "level": "tile"}
                    for i, (n, c) in enumerate(zip(NAMES, ("#ff0000", "#00ff00", "#0000ff")))],
        "provenance": {"parent": None, "training_set": "synthetic", "metrics": {}, "created": "2026-11-22"},
    }  # fmt: skip
    if embedding:
        card["outputs"]["embedding"] = {"name": "embedding"}
    return card


def write_pack(folder: Path, card: dict | None = None, **graph_kwargs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    card = card or pack_card()
    (folder / "cytoreview.yaml").write_text(yaml.safe_dump(card, sort_keys=False), "utf-8")
    embedding_graph(folder / "model.onnx", embedding_output="embedding" in card["outputs"], **graph_kwargs)
    return folder


def tile_slide(n_rows=8, n_cols=8, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """RGB slide of 16 px tiles of the three colours (jittered) and the true class index per tile."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, (n_rows, n_cols))
    arr = np.empty((n_rows * TILE_PX, n_cols * TILE_PX, 3), dtype=np.uint8)
    for r in range(n_rows):
        for c in range(n_cols):
            base = np.array(COLOURS[NAMES[truth[r, c]]], dtype=np.int16) + rng.integers(-25, 26, 3)
            noise = rng.integers(-10, 11, (TILE_PX, TILE_PX, 3))
            arr[r * TILE_PX : (r + 1) * TILE_PX, c * TILE_PX : (c + 1) * TILE_PX] = np.clip(base + noise, 0, 255)
    return arr, truth


def write_tiff(path: Path, arr: np.ndarray, mpp: float = MPP) -> Path:
    import tifffile

    per_cm = 1e4 / mpp
    tifffile.imwrite(path, arr, tile=(16, 16), photometric="rgb", resolution=(per_cm, per_cm), resolutionunit=3)
    return path


@pytest.fixture
def base_pack(tmp_path) -> Path:
    return write_pack(tmp_path / "packs" / "tiny-tiles")


@pytest.fixture
def slide(tmp_path):
    """(path, truth) of an 8x8-tile slide."""
    arr, truth = tile_slide()
    return write_tiff(tmp_path / "slide.tif", arr), truth


def make_project(folder: Path, slides, pack_path: Path, *, label_fraction=1.0, unsure=(), reviewer="alice",
                 case_ids=None, seed=0) -> Project:
    """Project with the slides predicted by the pack and their tiles labelled with the truth by ``reviewer``."""
    from cytoreview.inference import predict
    from cytoreview.models import load_pack

    pack = load_pack(pack_path)
    p = Project.open(folder, create=True)
    rng = np.random.default_rng(seed)
    for n, (path, truth) in enumerate(slides):
        image_id = p.add_image(path, kind="wsi", mpp=MPP, case_id=None if case_ids is None else case_ids[n])
        store = predict(path, pack, p.predictions_dir, threads=1, readers=1)
        p.import_predictions(image_id, store.path)
        ids = {c.name: c.id for c in p.schema.active_classes}
        items = p.items(image_id=image_id, level="tile")
        for k, (iid, g) in enumerate(zip(items["item_id"], items["geometry"])):
            if (n, k) in unsure:
                p.set_label(int(iid), [UNSURE], reviewer)
            elif rng.random() < label_fraction:
                p.set_label(int(iid), ids[NAMES[truth[g["row"], g["col"]]]], reviewer)
    return p


@pytest.fixture
def project(tmp_path, slide, base_pack) -> Project:
    p = make_project(tmp_path / "proj", [slide], base_pack, unsure={(0, 0), (0, 1)})
    yield p
    p.close()
