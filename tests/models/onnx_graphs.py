"""Tiny ONNX graphs (built with onnx.helper) and pack folders for the model / inference tests (shared helpers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

OPSET = [helper.make_opsetid("", 18)]


def _save(model, path: Path, metadata: dict | None = None) -> Path:
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def classifier_graph(
    path: Path,
    *,
    layout: str = "NCHW",
    size_px: int | str = 16,
    batch: int | str = "N",
    weights: np.ndarray | None = None,
    embedding: bool = False,
    input_name: str = "image",
    nan: bool = False,
    metadata: dict | None = None,
) -> Path:
    """Channel means -> linear layer: logits = mean_rgb @ weights + 0. ``probs`` (N, C), ``embedding`` (N, 3)."""
    weights = np.eye(3, dtype=np.float32) * 10 if weights is None else np.asarray(weights, dtype=np.float32)
    n_classes = weights.shape[1]
    if layout == "NCHW":
        in_shape, axes = [batch, 3, size_px, size_px], [2, 3]
    else:
        in_shape, axes = [batch, size_px, size_px, 3], [1, 2]
    nodes = [
        helper.make_node("ReduceMean", [input_name, "axes"], ["means"], keepdims=0),
        helper.make_node("MatMul", ["means", "W"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(np.array(axes, dtype=np.int64), "axes"), numpy_helper.from_array(weights, "W")]
    if nan:
        nodes += [
            helper.make_node("Neg", ["logits"], ["neg_raw"]),
            helper.make_node("Sub", ["neg_raw", "one"], ["neg"]),
            helper.make_node("Sqrt", ["neg"], ["probs"]),
        ]
        inits.append(numpy_helper.from_array(np.array(100.0, dtype=np.float32), "one"))
    else:
        nodes.append(helper.make_node("Identity", ["logits"], ["probs"]))
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, n_classes])]
    if embedding:
        nodes.append(helper.make_node("Identity", ["means"], ["embedding"]))
        outputs.append(helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, 3]))
    graph = helper.make_graph(
        nodes, "classifier", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, in_shape)], outputs, inits
    )
    return _save(helper.make_model(graph, opset_imports=OPSET), path, metadata)


def segmenter_graph(path: Path, *, batch: int | str = "N") -> Path:
    """3x3 valid conv, NCHW: logit0 = mean3x3(rgb) - 0.5 (bright = class 0), logit1 = 0.5 - mean (dark = class 1)."""
    w = np.empty((2, 3, 3, 3), dtype=np.float32)
    w[0], w[1] = 1.0 / 27, -1.0 / 27
    b = np.array([-0.5, 0.5], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "W", "B"], ["probs"], kernel_shape=[3, 3], pads=[0, 0, 0, 0])],
        "segmenter",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, "H", "W"])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 2, "h", "w"])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


def base_card(name: str = "test-pack", **overrides) -> dict:
    card = {
        "name": name,
        "version": "1.0.0",
        "task": "tile-classification",
        "description": "test",
        "input": {
            "name": "image",
            "layout": "NCHW",
            "size_px": 16,
            "mpp": 0.5,
            "channel_order": "RGB",
            "scale": 1 / 255,
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
        },
        "outputs": {"probabilities": {"name": "probs", "activation": "softmax"}},
        "classes": [
            {"id": 0, "name": "red", "color": "#ff0000", "hotkey": "1", "level": "tile"},
            {"id": 1, "name": "green", "color": "#00ff00", "hotkey": "2", "level": "tile"},
            {"id": 2, "name": "blue", "color": "#0000ff", "hotkey": "3", "level": "tile"},
        ],
        "provenance": {"parent": None, "training_set": "synthetic", "metrics": {}, "created": "2026-11-22"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(card.get(key), dict):
            card[key] = {**card[key], **value}
        elif value is None:
            card.pop(key, None)
        else:
            card[key] = value
    return card


def write_pack(folder: Path, card: dict, graph_fn=classifier_graph, **graph_kwargs) -> Path:
    """Write ``folder/cytoreview.yaml`` and ``folder/model.onnx``; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cytoreview.yaml").write_text(yaml.safe_dump(card, allow_unicode=True, sort_keys=False), "utf-8")
    if graph_fn is not None:
        graph_fn(folder / "model.onnx", **graph_kwargs)
    return folder


def foreground_graph(
    path: Path,
    *,
    halo_px: int = 1,
    final: str | None = None,
    boundary: bool = False,
    markers: bool = False,
    n_classes: int = 1,
    fixed_batch_reshape: bool = False,
    metadata: dict | None = None,
) -> Path:
    """Valid (2*halo+1)^2 box filter, NCHW, dynamic spatial size: dark pixels are foreground.

    One channel: ``logit = 12 * (0.6 - mean(rgb))``. ``n_classes=2``: ``[-logit/2, logit/2]`` (background, cell).
    ``final``: None (raw logits), ``"Sigmoid"`` or ``"Softmax"`` (the graph ends in that op, over the channel axis).
    ``boundary``: a second output ``boundary`` that is high where the image is mid-grey,
    ``Sigmoid(40 * (0.08 - |mean - 0.55|))`` (touching dark discs drawn with a mid-grey seam between them).
    ``markers``: an output ``markers`` (cell-centre probability, raw logits) that is high where the image is near
    black, ``40 * (0.1 - mean)`` (dark discs with a black nucleus drawn in each).
    ``fixed_batch_reshape``: reshapes the output to (1, C, 30, 30) (a 32 px patch, halo 1), so a run with more than
    one patch fails inside onnxruntime.
    """
    k = 2 * halo_px + 1
    w = np.full((1, 3, k, k), 1.0 / (3 * k * k), dtype=np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "W"], ["mean"], kernel_shape=[k, k], pads=[0, 0, 0, 0]),
        helper.make_node("Sub", ["c06", "mean"], ["d"]),
        helper.make_node("Mul", ["d", "c12"], ["logit"]),
    ]
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(np.array(0.6, dtype=np.float32), "c06"),
        numpy_helper.from_array(np.array(12.0, dtype=np.float32), "c12"),
    ]
    head = "logit"
    if n_classes == 2:
        nodes += [
            helper.make_node("Mul", ["logit", "chalf"], ["pos"]),
            helper.make_node("Neg", ["pos"], ["neg"]),
            helper.make_node("Concat", ["neg", "pos"], ["two"], axis=1),
        ]
        inits.append(numpy_helper.from_array(np.array(0.5, dtype=np.float32), "chalf"))
        head = "two"
    if fixed_batch_reshape:
        nodes.append(helper.make_node("Reshape", [head, "shape1"], ["reshaped"]))
        inits.append(numpy_helper.from_array(np.array([1, n_classes, 30, 30], dtype=np.int64), "shape1"))
        head = "reshaped"
    if final == "Sigmoid":
        nodes.append(helper.make_node("Sigmoid", [head], ["probs"]))
    elif final == "Softmax":
        nodes.append(helper.make_node("Softmax", [head], ["probs"], axis=1))
    else:
        nodes.append(helper.make_node("Identity", [head], ["probs"]))
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", n_classes, "h", "w"])]
    if boundary:
        nodes += [
            helper.make_node("Sub", ["mean", "c055"], ["dm"]),
            helper.make_node("Abs", ["dm"], ["adm"]),
            helper.make_node("Sub", ["c008", "adm"], ["bd"]),
            helper.make_node("Mul", ["bd", "c40"], ["bl"]),
            helper.make_node("Sigmoid", ["bl"], ["boundary"]),
        ]
        inits += [
            numpy_helper.from_array(np.array(0.55, dtype=np.float32), "c055"),
            numpy_helper.from_array(np.array(0.08, dtype=np.float32), "c008"),
            numpy_helper.from_array(np.array(40.0, dtype=np.float32), "c40"),
        ]
        outputs.append(helper.make_tensor_value_info("boundary", TensorProto.FLOAT, ["N", 1, "h", "w"]))
    if markers:
        nodes += [
            helper.make_node("Sub", ["c01", "mean"], ["dk"]),
            helper.make_node("Mul", ["dk", "c40m"], ["markers"]),
        ]
        inits += [
            numpy_helper.from_array(np.array(0.1, dtype=np.float32), "c01"),
            numpy_helper.from_array(np.array(40.0, dtype=np.float32), "c40m"),
        ]
        outputs.append(helper.make_tensor_value_info("markers", TensorProto.FLOAT, ["N", 1, "h", "w"]))
    graph = helper.make_graph(
        nodes, "foreground", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        outputs, inits,
    )
    return _save(helper.make_model(graph, opset_imports=OPSET), path, metadata)


def segmentation_card(name: str = "fg", *, halo_px: int = 1, size_px: int = 32, activation: str = "sigmoid",
                      classes=None, **overrides) -> dict:
    """Card of a :func:`foreground_graph` pack at 0.5 µm/px (one class "cell" unless ``classes`` says otherwise)."""
    card = base_card(
        name,
        task="segmentation",
        input={"size_px": size_px, "mpp": 0.5},
        outputs={"probabilities": {"name": "probs", "activation": activation}, "halo_px": halo_px},
        classes=classes or [{"id": 1, "name": "cell", "color": "#d62728"}],
    )
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(card.get(key), dict):
            card[key] = {**card[key], **value}
        else:
            card[key] = value
    return card
