"""Does a pack run? Its card checked against its ONNX file, then one patch through onnxruntime.

``cytoreview models`` calls :func:`pack_problem` for every pack it lists, so a pack whose shapes cannot run (a halo
that does not match the output, a patch size its graph refuses, an activation applied twice ...) is listed as
broken with the reason instead of failing in the middle of a run.
"""

from __future__ import annotations

import numpy as np

from cytoreview.errors import CytoreviewError


def pack_problem(pack) -> str | None:
    """None when the pack opens and runs on one white patch; else the one-line reason it cannot."""
    try:
        session = pack.session(threads=1)
        patch = np.full((1, pack.size_px, pack.size_px, 3), 255, dtype=np.uint8)
        session.run(patch)
    except CytoreviewError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types; the listing must go on
        return f"{pack.onnx_path}: {type(exc).__name__}: {exc}".replace("\n", " ")
    return None
