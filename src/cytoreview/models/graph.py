"""What an ONNX graph's outputs come out of: the last op that computes each named output.

Used to check a card's activation against the graph (a card asking for ``softmax`` over an output that already comes
out of a ``Softmax`` node would squash the probabilities a second time). Ops that only move values around
(``Identity``, ``Transpose``, ``Reshape``, ``Squeeze`` ...) are looked through.

The nodes are read straight from the file's protobuf encoding (ModelProto.graph -> GraphProto.node -> NodeProto
input / output / op_type; everything else, weights included, is skipped by its length) instead of through the
``onnx`` package, whose import alone costs about 0.7 s of CPU (ml_dtypes) in every process that opens a session —
each ``cytoreview predict`` and each dask worker process. A file this reader cannot walk goes to ``onnx.load``,
which gives the error message.
"""

from __future__ import annotations

from pathlib import Path

from cytoreview.errors import PackError

#: Ops that do not change values, only their arrangement: the op before them decides what the output is.
PASS_THROUGH_OPS = frozenset({"Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Cast"})


def final_ops(onnx_path: str | Path, outputs: list[str]) -> dict[str, str | None]:
    """The op type that produces each of ``outputs`` (looking through :data:`PASS_THROUGH_OPS`).

    Parameters
    ----------
    onnx_path : str or Path
        The model file (external weight files are not read).
    outputs : list of str
        Graph output names.

    Returns
    -------
    dict of str to str or None
        Output name -> op type (e.g. ``"Sigmoid"``), None for an output that is a graph input or initializer.

    Raises
    ------
    PackError
        When the file is not an ONNX model.
    """
    try:
        nodes = graph_nodes(onnx_path)
    except (ValueError, IndexError, UnicodeDecodeError):
        nodes = _nodes_with_onnx(onnx_path)  # raises PackError with protobuf's own account of the file
    producer = {}
    for node in nodes:
        for name in node[1]:
            producer[name] = node
    result: dict[str, str | None] = {}
    for name in outputs:
        node = producer.get(name)
        seen = 0
        while node is not None and node[2] in PASS_THROUGH_OPS and node[0] and seen < 64:
            node = producer.get(node[0][0])
            seen += 1
        result[name] = None if node is None else node[2]
    return result


def graph_nodes(onnx_path: str | Path) -> list[tuple[list[str], list[str], str]]:
    """``(inputs, outputs, op_type)`` of each node of the model's main graph, in file order.

    Raises
    ------
    ValueError
        When the file is not a well-formed protobuf message (an ``OSError`` when it cannot be read).
    """
    import mmap

    with open(onnx_path, "rb") as handle:
        if not handle.seek(0, 2):
            raise ValueError("empty file")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:  # weights are skipped, never read
            graphs = [value for field, value in _fields(data, 0, len(data)) if field == 7]  # ModelProto.graph
            if not graphs:
                raise ValueError("no graph in the model")
            nodes = []
            for start, end in [value for field, value in _fields(data, *graphs[-1]) if field == 1]:  # .node
                inputs, outputs, op_type = [], [], ""
                for field, (a, b) in _fields(data, start, end, wanted=(1, 2, 4)):  # .input, .output, .op_type
                    text = data[a:b].decode("utf-8")
                    if field == 1:
                        inputs.append(text)
                    elif field == 2:
                        outputs.append(text)
                    else:
                        op_type = text
                nodes.append((inputs, outputs, op_type))
            return nodes


def _fields(data, start: int, end: int, wanted=None):
    """``(field number, (start, end))`` of the length-delimited fields of one protobuf message (others skipped)."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise ValueError("field runs past its message")
            if wanted is None or field in wanted:
                yield field, (pos, pos + length)
            pos += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    if pos != end:
        raise ValueError("message ends inside a field")


def _varint(data, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _nodes_with_onnx(onnx_path) -> list[tuple[list[str], list[str], str]]:
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types on a broken file
        raise PackError(f"{onnx_path}: not a readable ONNX model: {exc}".replace("\n", " ")) from None
    return [(list(n.input), list(n.output), n.op_type) for n in model.graph.node]
