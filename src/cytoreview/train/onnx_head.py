"""Append a new linear softmax head to a pack's ONNX graph, on its embedding output.

The result is one self-contained ONNX model that plain onnxruntime loads: the base graph up to the embedding (nodes
that only fed the old probabilities are dropped), then ``MatMul`` + ``Add`` + ``Softmax`` producing the
probabilities under the base's output name, with the embedding kept as a second output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cytoreview.errors import PackError

#: Prefix of every tensor / node name the new head adds (kept unique against the base graph).
HEAD_PREFIX = "cytoreview_refit_head"


def _subgraph_inputs(node) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope."""
    from onnx import AttributeProto

    names: set[str] = set()
    for attr in node.attribute:
        graphs = []
        if attr.type == AttributeProto.GRAPH:
            graphs = [attr.g]
        elif attr.type == AttributeProto.GRAPHS:
            graphs = list(attr.graphs)
        for g in graphs:
            for sub in g.node:
                names.update(i for i in sub.input if i)
                names |= _subgraph_inputs(sub)
    return names


def _needed_nodes(graph, outputs: set[str]) -> list:
    """Nodes needed to compute ``outputs``, in their original (topological) order."""
    producer = {}
    for idx, node in enumerate(graph.node):
        for out in node.output:
            producer[out] = idx
    keep: set[int] = set()
    stack = list(outputs)
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        idx = producer.get(name)
        if idx is None or idx in keep:
            continue
        keep.add(idx)
        node = graph.node[idx]
        stack.extend(i for i in node.input if i)
        stack.extend(_subgraph_inputs(node))
    return [graph.node[i] for i in sorted(keep)]


def append_head(
    base_onnx: str | Path,
    out_onnx: str | Path,
    *,
    embedding_name: str,
    probs_name: str,
    weights: np.ndarray,
    bias: np.ndarray,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``out_onnx``: the base model with a softmax head ``softmax(embedding @ weights + bias)``.

    Parameters
    ----------
    base_onnx : str or Path
        The base model.
    out_onnx : str or Path
        Where to write the new model.
    embedding_name : str
        The base's embedding output ``(N, D)``.
    probs_name : str
        Name of the new probabilities output ``(N, K)`` (the base's probabilities output is replaced).
    weights, bias : numpy.ndarray
        ``(D, K)`` and ``(K,)``.
    metadata : dict, optional
        ``metadata_props`` entries to set (replacing same-named ones of the base).

    Raises
    ------
    PackError
        When the base cannot be read, has no such embedding output, or the embedding width differs from ``weights``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    base_onnx = Path(base_onnx)
    try:
        model = onnx.load(str(base_onnx))
    except Exception as exc:  # noqa: BLE001 - onnx raises protobuf errors of several types
        raise PackError(f"{base_onnx}: cannot read the ONNX model: {exc}") from None
    graph = model.graph
    outputs = {o.name: o for o in graph.output}
    if embedding_name not in outputs:
        raise PackError(f"{base_onnx}: no output named {embedding_name!r} (outputs: {sorted(outputs)})")
    emb_out = outputs[embedding_name]
    dims = emb_out.type.tensor_type.shape.dim
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    bias = np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
    if weights.ndim != 2 or bias.shape != (weights.shape[1],):
        raise PackError(f"head weights {weights.shape} and bias {bias.shape} do not fit together")
    if len(dims) == 2 and dims[1].HasField("dim_value") and dims[1].dim_value != weights.shape[0]:
        raise PackError(
            f"{base_onnx}: embedding {embedding_name!r} has width {dims[1].dim_value}, the head expects {weights.shape[0]}"
        )

    kept = _needed_nodes(graph, {embedding_name})
    used = {embedding_name}
    for node in kept:
        used.update(i for i in node.input if i)
        used.update(node.output)
        used |= _subgraph_inputs(node)
    if probs_name in used:  # the embedding path uses the old probabilities name: rename it inside the graph
        new = f"{probs_name}__base"
        for node in kept:
            node.input[:] = [new if i == probs_name else i for i in node.input]
            node.output[:] = [new if o == probs_name else o for o in node.output]
        if embedding_name == probs_name:
            raise PackError(f"{base_onnx}: the embedding and probabilities outputs have the same name")
    taken = used | {i.name for i in graph.initializer} | {i.name for i in graph.input}
    prefix = HEAD_PREFIX
    while any(name.startswith(prefix) for name in taken):
        prefix += "_"
    w_name, b_name = f"{prefix}_W", f"{prefix}_b"
    emb_float = embedding_name
    new_nodes = []
    elem = emb_out.type.tensor_type.elem_type
    if elem != TensorProto.FLOAT:
        emb_float = f"{prefix}_embedding_f32"
        new_nodes.append(helper.make_node("Cast", [embedding_name], [emb_float], to=TensorProto.FLOAT,
                                          name=f"{prefix}_cast"))  # fmt: skip
    new_nodes += [
        helper.make_node("MatMul", [emb_float, w_name], [f"{prefix}_matmul"], name=f"{prefix}_matmul"),
        helper.make_node("Add", [f"{prefix}_matmul", b_name], [f"{prefix}_logits"], name=f"{prefix}_add"),
        helper.make_node("Softmax", [f"{prefix}_logits"], [probs_name], axis=1, name=f"{prefix}_softmax"),
    ]
    batch = dims[0] if len(dims) else None
    batch_dim = (batch.dim_value if batch is not None and batch.HasField("dim_value") else
                 (batch.dim_param if batch is not None and batch.dim_param else "N"))  # fmt: skip
    probs_info = helper.make_tensor_value_info(probs_name, TensorProto.FLOAT, [batch_dim, int(weights.shape[1])])

    initializers = [i for i in graph.initializer if i.name in used]
    initializers += [numpy_helper.from_array(weights, w_name), numpy_helper.from_array(bias, b_name)]
    value_info = [v for v in graph.value_info if v.name in used and v.name != probs_name]
    new_graph = helper.make_graph(
        list(kept) + new_nodes,
        graph.name or "model",
        list(graph.input),
        [probs_info, emb_out],
        initializers,
        value_info=value_info,
    )
    new_graph.sparse_initializer.extend(s for s in graph.sparse_initializer if s.values.name in used)
    new_model = helper.make_model(new_graph, opset_imports=list(model.opset_import))
    new_model.ir_version = model.ir_version
    new_model.producer_name = "cytoreview-refit"
    for fn in model.functions:
        new_model.functions.append(fn)
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update(metadata or {})
    for key, value in meta.items():
        entry = new_model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    try:
        onnx.checker.check_model(new_model)
    except Exception as exc:  # noqa: BLE001
        raise PackError(f"{base_onnx}: the refit model does not pass the ONNX checker: {exc}") from None
    out_onnx = Path(out_onnx)
    onnx.save(new_model, str(out_onnx))
    return out_onnx


def classes_metadata(classes: list[dict]) -> str:
    """The ``classes`` metadata_props value (JSON list) for a class list."""
    return json.dumps([{k: c[k] for k in ("id", "name", "color", "hotkey", "level") if k in c} for c in classes])


def extract_linear_head(onnx_path: str | Path, embedding_name: str, probs_name: str):
    """The base model's head when it is linear on the embedding: ``(W (D, K), b (K,))`` or None.

    Follows the probabilities output back through ``Identity`` / ``Softmax`` / multiplication by a constant to a
    ``Gemm`` or ``MatMul`` (+ ``Add``) whose input is the embedding and whose weights are initializers. Anything else
    (a deeper head, weights computed in the graph) gives None.
    """
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(onnx_path))
    except Exception:  # noqa: BLE001
        return None
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in graph.initializer}
    for node in graph.node:  # Constant nodes count as initializers
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            inits[node.output[0]] = numpy_helper.to_array(node.attribute[0].t).astype(np.float64)
    producer = {o: n for n in graph.node for o in n.output}

    def attr(node, name, default):
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    scale = 1.0
    name = probs_name
    for _ in range(16):
        node = producer.get(name)
        if node is None:
            return None
        op = node.op_type
        if op in ("Identity", "Softmax"):
            name = node.input[0]
            continue
        if op == "Mul":
            a, b = node.input[0], node.input[1]
            const, other = (inits.get(b), a) if b in inits else (inits.get(a), b)
            if const is None or const.size != 1:
                return None
            scale *= float(const.reshape(-1)[0])
            name = other
            continue
        if op == "Gemm":
            if node.input[0] != embedding_name or node.input[1] not in inits or attr(node, "transA", 0):
                return None
            w = inits[node.input[1]]
            w = w.T if attr(node, "transB", 0) else w
            w = w * float(attr(node, "alpha", 1.0))
            b = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[1])
            if b is None:
                return None
            b = np.broadcast_to(b * float(attr(node, "beta", 1.0)), (w.shape[1],))
            return (w * scale).astype(np.float32), (b * scale).astype(np.float32)
        if op == "Add":
            a, b = node.input[0], node.input[1]
            bias_name, other = (b, a) if b in inits else (a, b)
            mm = producer.get(other)
            if bias_name not in inits or mm is None or mm.op_type != "MatMul":
                return None
            if mm.input[0] != embedding_name or mm.input[1] not in inits:
                return None
            w = inits[mm.input[1]]
            bias = np.broadcast_to(inits[bias_name].reshape(-1), (w.shape[1],))
            return (w * scale).astype(np.float32), (bias * scale).astype(np.float32)
        if op == "MatMul":
            if node.input[0] != embedding_name or node.input[1] not in inits:
                return None
            w = inits[node.input[1]]
            return (w * scale).astype(np.float32), np.zeros(w.shape[1], np.float32)
        return None
    return None
