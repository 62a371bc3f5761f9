"""Named preprocessing steps a pack card lists in ``input.preprocess``, applied to uint8 RGB patches.

``clahe``: contrast-limited adaptive histogram equalisation of the luminance (CIE L*) channel, colours kept, as many
published blood-cell models expect (scikit-image's ``equalize_adapthist``, clip limit 0.01, 8 x 8 tiles).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cytoreview.errors import PackError

#: CLAHE clip limit (scikit-image's normalised units) and the number of context tiles per side.
CLAHE_CLIP_LIMIT = 0.01
CLAHE_TILES = 8


def clahe(patches: np.ndarray) -> np.ndarray:
    """CLAHE on the L* channel of each uint8 RGB patch ``(n, h, w, 3)``; returns uint8 of the same shape."""
    from skimage.color import lab2rgb, rgb2lab
    from skimage.exposure import equalize_adapthist

    out = np.empty_like(patches)
    for i, patch in enumerate(patches):
        lab = rgb2lab(patch)
        kernel = max(1, min(patch.shape[0], patch.shape[1]) // CLAHE_TILES)
        lab[..., 0] = 100.0 * equalize_adapthist(lab[..., 0] / 100.0, kernel_size=kernel, clip_limit=CLAHE_CLIP_LIMIT)
        out[i] = np.clip(np.rint(lab2rgb(lab) * 255.0), 0, 255).astype(np.uint8)
    return out


STEPS = {"clahe": clahe}


def apply_steps(patches: np.ndarray, steps: Sequence[str]) -> np.ndarray:
    """Apply the named steps in order to uint8 ``(n, h, w, 3)`` patches.

    Raises
    ------
    PackError
        For a step name this version does not know.
    """
    for name in steps:
        fn = STEPS.get(name)
        if fn is None:
            raise PackError(f"input.preprocess: unknown step {name!r} (known: {', '.join(sorted(STEPS))})")
        patches = fn(np.ascontiguousarray(patches))
    return patches
