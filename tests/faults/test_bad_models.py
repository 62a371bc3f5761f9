"""Bad model packs: one PackError naming the file and the key, never an onnxruntime or YAML traceback."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from tests.inference.conftest import blob_slide, wsi
from tests.models.onnx_graphs import OPSET, _save, base_card, classifier_graph, write_pack

from cytoreview.errors import PackError
from cytoreview.inference import predict
from cytoreview.models import load_pack


def _graph(path, in_shape, n_in_channels, reduce_axes, n_classes=3):
    """ReduceMean over ``reduce_axes`` then a (n_in_channels, n_classes) MatMul: a valid graph of any input rank."""
    nodes = [helper.make_node("ReduceMean", ["image", "axes"], ["m"], keepdims=0),
             helper.make_node("MatMul", ["m", "W"], ["probs"])]
    inits = [numpy_helper.from_array(np.array(reduce_axes, dtype=np.int64), "axes"),
             numpy_helper.from_array(np.ones((n_in_channels, n_classes), np.float32), "W")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", n_classes])], inits)
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


def tabular(path):
    """Not an image model: a rank-2 (N, 3) input."""
    graph = helper.make_graph([helper.make_node("MatMul", ["image", "W"], ["probs"])], "tabular",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(np.eye(3, dtype=np.float32), "W")])
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


GRAPHS = {
    "rank-2 input (not an image model)": (tabular, "(N, 3)"),
    "rank-5 input": (lambda p: _graph(p, ["N", 3, 1, 16, 16], 3, [2, 3, 4]), "(N, 3, 1, 16, 16)"),
    "4 input channels": (lambda p: _graph(p, ["N", 4, 16, 16], 4, [2, 3]), "(N, 4, 16, 16)"),
    "4 classes vs 3 in the card": (lambda p: _graph(p, ["N", 3, 16, 16], 3, [2, 3], n_classes=4), "(N, 4)"),
    "patch 32 vs 16 in the card": (lambda p: _graph(p, ["N", 3, 32, 32], 3, [2, 3]), "(N, 3, 32, 32)"),
}


@pytest.mark.parametrize("case", list(GRAPHS))
def test_graph_that_does_not_fit_the_card(tmp_path, case):
    graph_fn, found = GRAPHS[case]
    folder = write_pack(tmp_path / "pack", base_card("bad-graph"), graph_fn=graph_fn)
    with pytest.raises(PackError) as info:
        load_pack(folder).session(threads=1)
    message = str(info.value)
    assert "model.onnx" in message and found in message, message
    assert "Traceback" not in message


def test_predict_refuses_a_misfit_graph_before_writing_a_store(tmp_path):
    folder = write_pack(tmp_path / "pack", base_card("bad-graph"), graph_fn=GRAPHS["4 input channels"][0])
    with pytest.raises(PackError, match="model.onnx"):
        predict(wsi(blob_slide(), path=tmp_path / "slide.tif"), load_pack(folder), tmp_path / "out", threads=1)
    assert not list((tmp_path / "out").glob("*.zarr")) if (tmp_path / "out").exists() else True


def test_nan_outputs_refused_and_store_not_complete(tmp_path):
    import zarr

    folder = write_pack(tmp_path / "pack", base_card("nan-pack"), nan=True)
    out = tmp_path / "out"
    with pytest.raises(PackError) as info:
        predict(wsi(blob_slide(), path=tmp_path / "slide.tif"), load_pack(folder), out, threads=1)
    assert "nan-pack" in str(info.value) and "NaN" in str(info.value)
    for store in out.glob("*.zarr"):
        assert zarr.open_group(str(store), mode="r").attrs.get("complete") is False


@pytest.mark.parametrize("suffix", [".pt", ".pkl"])
def test_pickle_offered_as_a_model(tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    path.write_bytes(pickle.dumps({"state_dict": [1, 2, 3]}))
    with pytest.raises(PackError, match=f"weights\\{suffix}.*ONNX"):
        load_pack(path)
    folder = write_pack(tmp_path / "pack", base_card("pickled"), graph_fn=None)
    (folder / f"model{suffix}").write_bytes(path.read_bytes())
    with pytest.raises(PackError, match=f"model\\{suffix}"):
        load_pack(folder)


def test_pickle_renamed_to_model_onnx(tmp_path):
    folder = write_pack(tmp_path / "pack", base_card("renamed"), graph_fn=None)
    (folder / "model.onnx").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(PackError) as info:
        load_pack(folder).session(threads=1)
    assert "model.onnx" in str(info.value)


def _edit(card, path, value):
    *parents, last = path
    node = card
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return card


CARDS = {
    "missing input.mpp": (("input", "mpp"), KeyError, "input"),
    "missing task": (("task",), KeyError, "task"),
    "size_px is a string": (("input", "size_px"), "big", "input.size_px"),
    "mean has 2 values": (("input", "mean"), [0.0, 0.0], "input.mean"),
    "unknown task": (("task",), "detection", "task"),
    "unknown layout": (("input", "layout"), "CHW", "input.layout"),
    "unknown activation": (("outputs", "probabilities", "activation"), "relu", "activation"),
    "duplicate hotkey": (("classes", 1, "hotkey"), "1", "classes[1].hotkey"),
    "colour too short": (("classes", 1, "color"), "#12345", "classes[1].color"),
    "colour as a word": (("classes", 1, "color"), "reddish", "classes[1].color"),
    "colour as a list": (("classes", 1, "color"), [300, 0, 0], "classes[1].color"),
    "duplicate class id": (("classes", 1, "id"), 0, "classes[1].id"),
    "unknown class level": (("classes", 0, "level"), "organ", "classes[0].level"),
    "bad pack name": (("name",), "Bad Name", "name"),
}


@pytest.mark.parametrize("case", list(CARDS))
def test_bad_card_names_the_key_and_the_file(tmp_path, case):
    path, value, key = CARDS[case]
    folder = write_pack(tmp_path / "pack", _edit(base_card("card-test"), path, value))
    with pytest.raises(PackError) as info:
        load_pack(folder)
    message = str(info.value)
    assert "cytoreview.yaml" in message and key in message, message


def test_card_without_classes_and_no_onnx_metadata(tmp_path):
    card = base_card("no-classes")
    del card["classes"]
    folder = write_pack(tmp_path / "pack", card)
    with pytest.raises(PackError) as info:
        load_pack(folder)
    assert "classes" in str(info.value)


@pytest.mark.parametrize("text", ["name: [unclosed", "- just\n- a list\n", "", "\x00\x01binary"])
def test_card_that_is_not_a_yaml_mapping(tmp_path, text):
    folder = tmp_path / "pack"
    classifier_graph(folder / "model.onnx")
    (folder / "cytoreview.yaml").write_text(text)
    with pytest.raises(PackError, match="cytoreview.yaml"):
        load_pack(folder)


def test_class_count_from_onnx_metadata_that_disagrees_with_the_graph(tmp_path):
    card = base_card("meta-classes")
    del card["classes"]
    folder = tmp_path / "pack"
    folder.mkdir()
    (folder / "cytoreview.yaml").write_text(yaml.safe_dump(card))
    classifier_graph(folder / "model.onnx", metadata={"classes": '["a", "b"]'})  # 2 names, 3 outputs
    with pytest.raises(PackError) as info:
        load_pack(folder).session(threads=1)
    assert "model.onnx" in str(info.value) and "(N, 3)" in str(info.value)


def _unknown_op(path):
    import onnx

    graph = helper.make_graph([helper.make_node("FancyOp", ["image"], ["probs"], domain="com.example")], "u",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=OPSET + [helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))  # not checkable: the op does not exist anywhere


def _uint8_input(path):
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f", "axes"], ["m"], keepdims=0),
             helper.make_node("MatMul", ["m", "W"], ["probs"])]
    graph = helper.make_graph(nodes, "u8", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
                               numpy_helper.from_array(np.eye(3, dtype=np.float32), "W")])
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


def _truncated(path):
    classifier_graph(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("graph_fn, words", [
    (_unknown_op, ["FancyOp"]),
    (_uint8_input, ["float32", "uint8"]),
    (lambda p: classifier_graph(p, input_name="pixels"), ["'image'", "pixels"]),
    (_truncated, ["onnxruntime"]),
], ids=["unknown-op", "uint8-input", "wrong-input-name", "truncated-file"])
def test_onnx_that_cannot_run_as_the_card_says(tmp_path, graph_fn, words):
    folder = write_pack(tmp_path / "pack", base_card("cannot-run"), graph_fn=graph_fn)
    with pytest.raises(PackError) as info:
        predict(wsi(blob_slide(), path=tmp_path / "slide.tif"), load_pack(folder), tmp_path / "out", threads=1)
    message = str(info.value)
    assert "model.onnx" in message and all(w in message for w in words), message


def _second_input(path):
    """A graph whose weights are a second, required graph input (a common export mistake)."""
    nodes = [helper.make_node("ReduceMean", ["image", "axes"], ["m"], keepdims=0),
             helper.make_node("MatMul", ["m", "W"], ["probs"])]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16]),
                                             helper.make_tensor_value_info("W", TensorProto.FLOAT, [3, 3])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")])
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


def test_model_with_a_second_required_input(tmp_path):
    folder = write_pack(tmp_path / "pack", base_card("two-inputs"), graph_fn=_second_input)
    with pytest.raises(PackError, match="model.onnx.*'W'|'W'.*model.onnx"):
        predict(wsi(blob_slide(), path=tmp_path / "slide.tif"), load_pack(folder), tmp_path / "out", threads=1)
