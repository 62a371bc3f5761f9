"""What an ONNX graph's outputs come out of: the last op that computes each named output.

Used to check a card's activation against the graph (a card asking for ``softmax`` over an output that already comes
out of a ``Softmax`` node would squash the probabilities a second time). Ops that only move values around
(``Identity``, ``Transpose``, ``Reshape``, ``Squeeze`` ...) are looked through.
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
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types on a broken file
        raise PackError(f"{onnx_path}: not a readable ONNX model: {exc}".replace("\n", " ")) from None
    producer = {}
    for node in model.graph.node:
        for name in node.output:
            producer[name] = node
    result: dict[str, str | None] = {}
    for name in outputs:
        node = producer.get(name)
        seen = 0
        while node is not None and node.op_type in PASS_THROUGH_OPS and node.input and seen < 64:
            node = producer.get(node.input[0])
            seen += 1
        result[name] = None if node is None else node.op_type
    return result
