"""The per-pixel overlay of a segmentation store as a multiscale pyramid, built block by block (bounded memory).

Group ``pixels`` inside the prediction store::

    pixels/labels/<k>      uint8 (n_fields, H_k, W_k): 0 = background / not predicted, i + 1 = cell class
                           ``attrs["label_class_ids"][i]`` (what a napari Labels layer shows)
    pixels/foreground/<k>  float32: foreground probability, NaN where not predicted

Level 0 has the stitched mask's size (the model's µm/px, ``mask_px_level0`` level-0 pixels per pixel); level ``k``
is ``2**k`` times coarser (labels by nearest sampling, probability by the mean of each 2 x 2 block that was
predicted). Levels stop once both sides fit in :data:`MIN_SIDE_PX`. Chunks are :data:`CHUNK_PX` square (napari reads
them directly; no dask graph over small chunks).
"""

from __future__ import annotations

import numpy as np

from cytoreview.inference.segment import cell_class_ids, field_groups, pixel_compressors

CHUNK_PX = 1024
MIN_SIDE_PX = 1024
#: Rows x columns of the source level processed at once while building (a multiple of 2 * CHUNK_PX).
BLOCK_PX = 2048
GROUP = "pixels"


def _levels(height: int, width: int) -> list[tuple[int, int]]:
    shapes = [(height, width)]
    while max(shapes[-1]) > MIN_SIDE_PX:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def build_pixel_pyramid(group, classes: list[dict]) -> None:
    """(Re)write ``pixels/`` of a segmentation store from its ``mask`` and ``mask_score`` arrays."""
    pyramid = PixelPyramid(group, classes)
    pyramid.from_store(range(pyramid.n_fields))


class PixelPyramid:
    """``pixels/`` of a segmentation store, (re)created empty and filled field by field: :meth:`write_field` from a
    field's stitched mask and foreground still in memory (the predictor's buffers), :meth:`from_store` from the
    stored arrays. Both write the same blocks, so a field's levels are the same either way. Chunks are one field
    deep, so fields can be written in any order (and from another thread than the one writing the mask)."""

    def __init__(self, group, classes: list[dict]):
        self.group = group
        mask = group["mask"]
        self.n_fields, self.height, self.width = mask.shape
        ids = cell_class_ids(classes)
        # label of every int16 mask value, indexed by its bits read as uint16 (one look-up a pixel, no casts): the
        # cell classes are 1, 2, ... in id order, everything else (-2 below threshold, -1 not predicted) 0
        self.lut = np.zeros(1 << 16, dtype=np.uint8)
        for i, cid in enumerate(ids):
            self.lut[np.uint16(np.int16(cid))] = i + 1
        if GROUP in group:
            del group[GROUP]
        root = group.create_group(GROUP)
        shapes = _levels(self.height, self.width)
        root.attrs.update({"label_class_ids": ids, "downsamples": [2**k for k in range(len(shapes))],
                           "mask_px_level0": group.attrs.get("mask_px_level0")})
        labels_g, fg_g = root.create_group("labels"), root.create_group("foreground")
        self.arrays, codecs = [], pixel_compressors()
        for k, (h, w) in enumerate(shapes):
            chunks = (1, min(CHUNK_PX, h), min(CHUNK_PX, w))
            la = labels_g.create_array(str(k), shape=(self.n_fields, h, w), dtype="uint8", chunks=chunks,
                                       fill_value=0, compressors=codecs)
            fa = fg_g.create_array(str(k), shape=(self.n_fields, h, w), dtype="float32", chunks=chunks,
                                   fill_value=np.nan, compressors=codecs)
            self.arrays.append((la, fa))

    def write_field(self, field: int, mask: np.ndarray, score: np.ndarray) -> None:
        """Every level of one field from its whole stitched class mask and foreground (2-D, in memory)."""
        for y0 in range(0, self.height, BLOCK_PX):
            for x0 in range(0, self.width, BLOCK_PX):
                self._block(field, y0, x0, mask[y0 : y0 + BLOCK_PX, x0 : x0 + BLOCK_PX],
                            score[y0 : y0 + BLOCK_PX, x0 : x0 + BLOCK_PX])

    def from_store(self, fields) -> None:
        """Every level of ``fields`` from the stored ``mask`` / ``mask_score`` (the fields of one stored chunk read
        together, each chunk decoded once; memory bounded to a block of fields)."""
        wanted = set(int(f) for f in fields)
        mask, score = self.group["mask"], self.group["mask_score"]
        block_area = min(self.height, BLOCK_PX) * min(self.width, BLOCK_PX)
        for group in field_groups(self.n_fields, mask.chunks[0], block_area):
            inside = [f for f in range(group.start, group.stop) if f in wanted]
            if not inside:
                continue
            sel = slice(inside[0], inside[-1] + 1)
            for y0 in range(0, self.height, BLOCK_PX):
                for x0 in range(0, self.width, BLOCK_PX):
                    m_all = np.asarray(mask[sel, y0 : y0 + BLOCK_PX, x0 : x0 + BLOCK_PX])
                    s_all = np.asarray(score[sel, y0 : y0 + BLOCK_PX, x0 : x0 + BLOCK_PX])
                    for i, f in enumerate(range(sel.start, sel.stop)):
                        if f in wanted:
                            self._block(f, y0, x0, m_all[i], s_all[i])

    def _block(self, f: int, y0: int, x0: int, m: np.ndarray, s: np.ndarray) -> None:
        if (m == -1).all():
            return  # nothing predicted here: the fill values already say so
        lab = self.lut[np.asarray(m, dtype=np.int16).view(np.uint16)]
        s = np.asarray(s, dtype=np.float32)
        for k, (la, fa) in enumerate(self.arrays):
            if k:
                lab, s = lab[::2, ::2], _mean2(s)
            yk, xk = y0 >> k, x0 >> k
            la[f, yk : yk + lab.shape[0], xk : xk + lab.shape[1]] = lab
            fa[f, yk : yk + s.shape[0], xk : xk + s.shape[1]] = s


def _mean2(a: np.ndarray) -> np.ndarray:
    """Mean of each 2 x 2 block, ignoring NaN (NaN where the whole block is); odd edges keep their last row/col."""
    h, w = a.shape
    hp, wp = h + (h & 1), w + (w & 1)
    if (hp, wp) != (h, w):
        a = np.pad(a, ((0, hp - h), (0, wp - w)), mode="edge")
    blocks = a.reshape(hp // 2, 2, wp // 2, 2)
    valid = np.isfinite(blocks)
    total = np.where(valid, blocks, 0).sum(axis=(1, 3))
    count = valid.sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def pixel_levels(group) -> tuple[list, list, dict] | None:
    """``(label_levels, foreground_levels, attrs)`` zarr arrays of a store's pyramid, largest first; None if absent."""
    if GROUP not in group:
        return None
    root = group[GROUP]
    n = len(root.attrs.get("downsamples", []))
    labels = [root["labels"][str(k)] for k in range(n)]
    fg = [root["foreground"][str(k)] for k in range(n)]
    return labels, fg, dict(root.attrs)
