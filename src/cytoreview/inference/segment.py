"""What a segmenter's per-pixel output means: foreground probability, pixel classes, tile summaries, border padding.

A **one-channel** output is a binary foreground probability: the card's single class is the foreground, cut at
``outputs.probabilities.threshold`` (default 0.5); pixels below it are stored as :data:`BELOW_THRESHOLD` in the class
mask. A **multi-channel** output is a class distribution per pixel (softmax, or independent sigmoids): the foreground
probability is the summed probability of the cell classes (:func:`cell_class_ids`), a pixel is foreground where that
reaches the threshold, and a foreground pixel's class is the most probable cell class (a background pixel's class is
the most probable of the other classes).
"""

from __future__ import annotations

import math

import numpy as np

#: Class-mask value of a pixel predicted below the foreground threshold by a one-channel (binary) segmenter.
BELOW_THRESHOLD = -2
#: Class-mask value of a pixel not predicted (outside the tiles that ran).
NOT_PREDICTED = -1


def cell_class_ids(classes: list[dict]) -> list[int]:
    """Classes that become cells: those at level "cell"; when every class is (and there are several), all but the
    lowest id (background). A single class is always the foreground."""
    ids = sorted(int(c["id"]) for c in classes)
    if len(ids) == 1:
        return ids
    cell = [int(c["id"]) for c in classes if c.get("level") == "cell"]
    if len(cell) == len(ids):
        cell = ids[1:]
    return sorted(cell)


class PixelSemantics:
    """Turns a segmenter's class-last probabilities into foreground probability and pixel classes.

    Parameters
    ----------
    classes : list of dict
        The pack's classes (sorted by id, as the output channels are).
    threshold : float
        Foreground threshold.
    """

    def __init__(self, classes: list[dict], threshold: float = 0.5):
        self.ids = np.array([int(c["id"]) for c in classes], dtype=np.int16)
        self.threshold = float(threshold)
        cells = set(cell_class_ids(classes))
        self.cell_index = np.array([i for i, c in enumerate(self.ids) if int(c) in cells], dtype=np.intp)
        self.other_index = np.array([i for i, c in enumerate(self.ids) if int(c) not in cells], dtype=np.intp)
        self.binary = len(self.ids) == 1

    @classmethod
    def for_pack(cls, pack) -> PixelSemantics:
        thr = pack.card["outputs"]["probabilities"].get("threshold", 0.5)
        return cls(pack.classes, thr)

    def pixels(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(n, h, w, C)`` probabilities -> class ids int16 ``(n, h, w)`` and foreground float32 ``(n, h, w)``."""
        if self.binary:
            fg = np.ascontiguousarray(probs[..., 0], dtype=np.float32)
            cls = np.where(fg >= self.threshold, self.ids[0], np.int16(BELOW_THRESHOLD)).astype(np.int16)
            return cls, fg
        fg = probs[..., self.cell_index].sum(axis=-1, dtype=np.float32)
        fg = np.clip(fg, 0.0, 1.0, out=fg)
        best_cell = self.ids[self.cell_index][np.argmax(probs[..., self.cell_index], axis=-1)]
        if len(self.other_index):
            best_other = self.ids[self.other_index][np.argmax(probs[..., self.other_index], axis=-1)]
        else:
            best_other = np.full(fg.shape, BELOW_THRESHOLD, dtype=np.int16)
        cls = np.where(fg >= self.threshold, best_cell, best_other).astype(np.int16)
        return cls, fg

    def tile_summary(self, probs: np.ndarray, valid_hw: list[tuple[int, int]]):
        """Per-tile mean probabilities over the in-image part, tile class ids, pixel classes and foreground.

        Returns
        -------
        tile_probs : float32 ``(n, C)``
        tile_cls : int16 ``(n,)``
            Class id of the highest mean probability (a binary pack's tiles all carry its one class; their
            probability is the tile's mean foreground probability).
        pix_cls : int16 ``(n, h, w)``
        pix_fg : float32 ``(n, h, w)``
        """
        pix_cls, pix_fg = self.pixels(probs)
        tile_probs = np.empty((len(probs), probs.shape[-1]), dtype=np.float32)
        for i, (vh, vw) in enumerate(valid_hw):
            tile_probs[i] = probs[i, :vh, :vw].mean(axis=(0, 1))
        tile_cls = self.ids[np.argmax(tile_probs, axis=-1)].astype(np.int16)
        return tile_probs, tile_cls, pix_cls, pix_fg


#: Compressor of the stored per-pixel arrays (mask, probabilities, pyramid), written once per prediction at every
#: pixel: Blosc's LZ4 over byte-shuffled values. On the effusion sample's arrays it encodes in half the CPU time of
#: zstd level 1 (0.047 s against 0.094 s for its 73 MB) and decodes in half too, for 8 % more bytes (12.6 MB
#: against 11.7 MB); zarr's default (zstd 3) took ~1.4x zstd 1's time.
PIXEL_BLOSC = {"cname": "lz4", "clevel": 5, "shuffle": "shuffle"}


def pixel_compressors() -> tuple:
    """zarr v3 compressors of a stored per-pixel array (see :data:`PIXEL_BLOSC`)."""
    from zarr.codecs import BloscCodec

    return (BloscCodec(**PIXEL_BLOSC),)


#: Pixels (fields x block) read at once from a stored per-pixel array by the passes after prediction.
READ_BUDGET_PX = 8 << 20


def field_groups(n_fields: int, chunk_fields: int, block_area_px: int, budget_px: int = READ_BUDGET_PX) -> list[slice]:
    """Slices of fields to read together from a per-pixel array chunked ``chunk_fields`` fields deep.

    A pass that reads one field at a time decodes every chunk once per field it holds; reading the fields of a
    chunk together decodes it once. The groups follow the chunk boundaries and hold at most ``budget_px`` pixels
    of ``block_area_px`` each (at least one field), so memory stays bounded.
    """
    per_read = max(1, min(int(chunk_fields), int(budget_px) // max(1, int(block_area_px))))
    out = []
    for c0 in range(0, n_fields, max(1, int(chunk_fields))):
        c1 = min(n_fields, c0 + max(1, int(chunk_fields)))
        out += [slice(f0, min(c1, f0 + per_read)) for f0 in range(c0, c1, per_read)]
    return out


def valid_extent(tiles: np.ndarray, grid) -> list[tuple[int, int]]:
    """Output pixels of each tile that lie inside the image: ``(rows, cols)`` per tile."""
    o, k = grid.out_px, grid.mask_px_level0
    height, width = grid.plane_shape
    out = []
    for _, r, c in np.asarray(tiles).tolist():
        vh = int(min(o, max(1, math.ceil((height - r * grid.tile_px_level0) / k))))
        vw = int(min(o, max(1, math.ceil((width - c * grid.tile_px_level0) / k))))
        out.append((vh, vw))
    return out


def reflect_outside(patches: np.ndarray, tiles: np.ndarray, grid) -> np.ndarray:
    """Replace the part of each patch that lies outside the image by a mirror image of the inside (``input.pad:
    reflect``), so the image border does not look like a glass/cell edge to the model, in place (the predictor's
    workers pass their own patch buffer); returns ``patches``. Patches wholly inside are untouched.

    The mirror is numpy's ``symmetric`` padding (the edge pixel repeated; repeated reflections where the outside is
    wider than the inside), done as one gather of mirrored row and column indices per patch.
    """
    height, width = grid.plane_shape
    scale = grid.model_mpp / grid.image_mpp  # level-0 px per model px
    h_m, w_m = height / scale, width / scale  # image extent in model px
    s = grid.size_px
    for i, (_, r, c) in enumerate(np.asarray(tiles).tolist()):
        y0, x0 = grid.model_origin(r), grid.model_origin(c)
        top, left = max(0, -y0), max(0, -x0)
        bottom = max(0, int(math.ceil(y0 + s - h_m)))
        right = max(0, int(math.ceil(x0 + s - w_m)))
        if not (top or left or bottom or right) or top + bottom >= s or left + right >= s:
            continue  # wholly inside, or nothing inside to mirror
        rows = _symmetric_index(top, s - top - bottom, bottom)
        cols = _symmetric_index(left, s - left - right, right)
        inner = patches[i, top : s - bottom, left : s - right]
        patches[i] = inner[rows[:, None], cols[None, :]]  # the gather copies before the patch is overwritten
    return patches


def _symmetric_index(before: int, inside: int, after: int) -> np.ndarray:
    """Indices into ``inside`` samples that pad them by ``before`` / ``after`` as ``np.pad(mode="symmetric")`` does."""
    period = 2 * inside
    m = np.mod(np.arange(-before, inside + after), period)
    return np.where(m >= inside, period - 1 - m, m)
