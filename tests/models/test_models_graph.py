"""The graph reader behind the activation check: the same nodes as ``onnx.load``, without importing onnx."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.models.onnx_graphs import classifier_graph, foreground_graph, segmenter_graph

from cytoreview.errors import PackError
from cytoreview.models.graph import final_ops, graph_nodes


@pytest.mark.parametrize(
    "build",
    [
        lambda p: classifier_graph(p),
        lambda p: classifier_graph(p, embedding=True),
        lambda p: segmenter_graph(p),
        lambda p: foreground_graph(p, final="Sigmoid"),
        lambda p: foreground_graph(p, final="Softmax"),
        lambda p: foreground_graph(p),
    ],
)
def test_graph_nodes_are_the_nodes_onnx_reads(tmp_path, build):
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "model.onnx"
    build(path)
    expected = [(list(n.input), list(n.output), n.op_type) for n in onnx.load(str(path)).graph.node]
    assert graph_nodes(path) == expected and expected


def test_final_ops_looks_through_pass_through_ops(tmp_path):
    path = tmp_path / "fg.onnx"
    foreground_graph(path, final="Sigmoid")
    assert final_ops(path, ["probs"]) == {"probs": "Sigmoid"}
    foreground_graph(path)
    assert final_ops(path, ["probs", "nope"])["nope"] is None and final_ops(path, ["probs"])["probs"] != "Identity"


@pytest.mark.parametrize("content", [b"not a model at all", b"\x3a\xff\xff\xff\x0f", b"\x08"])
def test_a_file_that_is_no_model_is_a_pack_error(tmp_path, content):
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(PackError, match="not a readable ONNX model"):
        final_ops(path, ["probs"])


def test_the_check_does_not_import_onnx(tmp_path):
    path = tmp_path / "model.onnx"
    classifier_graph(path)
    code = (f"import sys; from cytoreview.models.graph import final_ops; final_ops({str(path)!r}, ['probs']); "
            "print('onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
