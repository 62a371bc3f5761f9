"""Focus planes of a field set collapsed into one: a plane ``K``, the sharpest plane, or an all-in-focus plane.

A field set captured at several focus planes (``n_z > 1``) shows each cell sharp in some plane and blurred in the
others. :func:`focus_image` turns its ``(field, z, y, x, 3)`` stack into a ``(field, y, x, 3)`` image, lazily (one
dask chunk per field, computed when first indexed and kept in a small LRU):

* ``focus=K`` -- plane ``K`` as captured;
* ``focus="best"`` -- per field, the single plane with the highest sharpness (:func:`sharpness`);
* ``focus="edf"`` -- extended depth of field: the field is cut into blocks of :data:`EDF_BLOCK_PX`, each block takes
  the plane where it is sharpest (gradient energy), and the planes are blended over :data:`EDF_SEAM_PX` across the
  block seams so no block edge shows. A block whose sharpest plane is not clearly sharper than the field's best
  plane (featureless glass, where the choice is noise) keeps the best plane, so the blend stays calm.

The result is an ordinary :class:`~cytoreview.io.Image` (``kind="fields"``, ``n_z == 1``) that every consumer
(inference, crops, napari) reads like any other field set; ``metadata["focus"]`` says how it was made and
``metadata["focus_planes"]`` how many planes it came from.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace

import numpy as np

from cytoreview.errors import ImageReadError
from cytoreview.io.image import Image

#: Focus modes besides a plane number.
FOCUS_MODES = ("edf", "best")
#: Side of the blocks whose best plane EDF picks, level-0 px (about 14 µm at 0.293 µm/px: a cell).
EDF_BLOCK_PX = 48
#: Width of the blend across a block seam, px.
EDF_SEAM_PX = 12
#: A block leaves the field's best plane only when its own best plane is this much sharper there.
EDF_SWITCH_GAIN = 1.15
#: Collapsed fields kept decoded per image (one CytoScan field is ~7 MB).
RECENT_FIELDS = 3


def parse_focus(focus) -> str | int | None:
    """Normalise a focus choice: None, ``"edf"``, ``"best"`` or a plane number (``"2"`` from a command line is 2).

    Raises
    ------
    ImageReadError
        For anything else (a negative plane, an unknown word).
    """
    if focus is None:
        return None
    if isinstance(focus, (bool, np.bool_)):
        raise ImageReadError(f"focus {focus!r} is not 'edf', 'best' or a focus-plane number")
    if isinstance(focus, (int, np.integer)):
        value = int(focus)
    else:
        text = str(focus).strip().lower()
        if text in FOCUS_MODES:
            return text
        try:
            value = int(text)
        except ValueError:
            raise ImageReadError(f"focus {focus!r} is not 'edf', 'best' or a focus-plane number") from None
    if value < 0:
        raise ImageReadError(f"focus plane {value} is negative; planes are numbered from 0")
    return value


def _grey_half(plane: np.ndarray) -> np.ndarray:
    """Green channel at every second pixel, float32: cheap, and blur shows at a 2 px scale."""
    return plane[::2, ::2, 1].astype(np.float32)


def gradient_energy(plane: np.ndarray) -> np.ndarray:
    """Per-pixel squared gradient of an RGB plane on a half-resolution green grid, ``(ceil(h/2), ceil(w/2))``.

    The focus measure: blur lowers it, and it does not depend on the mean brightness.
    """
    grey = _grey_half(plane)
    energy = np.zeros_like(grey)
    dy = np.diff(grey, axis=0)
    dx = np.diff(grey, axis=1)
    energy[:-1] += dy * dy
    energy[:, :-1] += dx * dx
    return energy


def sharpness(plane: np.ndarray) -> float:
    """One sharpness figure for an RGB plane: its mean squared gradient (see :func:`gradient_energy`)."""
    return float(gradient_energy(np.asarray(plane)).mean())


def _block_sums(energy: np.ndarray, block: int) -> np.ndarray:
    """Sum ``energy`` over ``block`` x ``block`` cells (the last row/column of blocks may be partial)."""
    h, w = energy.shape
    nby, nbx = -(-h // block), -(-w // block)
    padded = np.zeros((nby * block, nbx * block), np.float32)
    padded[:h, :w] = energy
    return padded.reshape(nby, block, nbx, block).sum(axis=(1, 3))


def block_focus(planes: list[np.ndarray], block_px: int = EDF_BLOCK_PX,
                switch_gain: float = EDF_SWITCH_GAIN) -> tuple[np.ndarray, int]:
    """Choose a plane per block: ``(index (n_by, n_bx) int, best plane of the whole field)``.

    Parameters
    ----------
    planes : list of numpy.ndarray
        The ``(h, w, 3)`` focus planes of one field.
    block_px : int
        Block side in px (even).
    switch_gain : float
        A block takes its own sharpest plane only when that is ``switch_gain`` times sharper than the field's best
        plane there; otherwise it keeps the field's best plane.
    """
    half = max(1, block_px // 2)
    energy = np.stack([_block_sums(gradient_energy(p), half) for p in planes])  # (z, n_by, n_bx)
    best = int(np.argmax(energy.sum(axis=(1, 2))))
    index = np.argmax(energy, axis=0)
    own = np.take_along_axis(energy, index[None], axis=0)[0]
    keep = own <= switch_gain * energy[best]
    index[keep] = best
    index = _majority(index, len(planes))
    h, w = planes[0].shape[:2]
    # the energy grid is half resolution: blocks of `half` there are blocks of 2*half px of the plane
    n_by, n_bx = -(-h // (2 * half)), -(-w // (2 * half))
    return index[:n_by, :n_bx], best


def _majority(index: np.ndarray, n_z: int) -> np.ndarray:
    """3 x 3 majority vote on a block index map: a lone block (a noisy choice on glass) joins its neighbours, which
    keeps seams -- and the blending they cost -- where the focus really changes."""
    votes = np.stack([np.pad((index == z).astype(np.int16), 1, mode="edge") for z in range(n_z)])
    h, w = index.shape
    counts = sum(votes[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
    own = np.take_along_axis(counts, index[None], axis=0)[0]
    top = np.argmax(counts, axis=0)
    return np.where(np.take_along_axis(counts, top[None], axis=0)[0] > own, top, index)


def _ramp(coords: np.ndarray, c0: float, c1: float, seam_px: float) -> np.ndarray:
    """Weight of the far block centre ``c1`` at ``coords`` between centres ``c0`` and ``c1``: 0, a linear seam of
    ``seam_px`` around the midpoint, then 1."""
    mid = (c0 + c1) / 2
    return np.clip((coords - mid) / max(seam_px, 1e-6) + 0.5, 0.0, 1.0).astype(np.float32)


def blend_planes(planes: list[np.ndarray], index: np.ndarray, block_px: int = EDF_BLOCK_PX,
                 seam_px: int = EDF_SEAM_PX) -> np.ndarray:
    """Compose one ``(h, w, 3)`` uint8 plane: each block from its chosen plane, blended across seams.

    The image is walked in cells between neighbouring block centres; a cell whose four corner blocks chose one plane
    is copied from it, any other is the bilinear blend (steepened to ``seam_px`` around the seam) of the planes its
    corners chose.
    """
    h, w = planes[0].shape[:2]
    n_by, n_bx = index.shape
    cy = [min((i + 0.5) * block_px, (i * block_px + h) / 2) for i in range(n_by)]
    cx = [min((j + 0.5) * block_px, (j * block_px + w) / 2) for j in range(n_bx)]
    ys = [0] + [int(round(c)) for c in cy] + [h]
    xs = [0] + [int(round(c)) for c in cx] + [w]
    out = np.empty_like(planes[0])
    for a in range(n_by + 1):
        y0, y1 = ys[a], ys[a + 1]
        if y1 <= y0:
            continue
        i0, i1 = max(a - 1, 0), min(a, n_by - 1)
        wy = None
        for b in range(n_bx + 1):
            x0, x1 = xs[b], xs[b + 1]
            if x1 <= x0:
                continue
            j0, j1 = max(b - 1, 0), min(b, n_bx - 1)
            corners = (index[i0, j0], index[i0, j1], index[i1, j0], index[i1, j1])
            if corners[0] == corners[1] == corners[2] == corners[3]:
                out[y0:y1, x0:x1] = planes[corners[0]][y0:y1, x0:x1]
                continue
            if wy is None:
                wy = (_ramp(np.arange(y0, y1) + 0.5, cy[i0], cy[i1], seam_px) if i1 != i0
                      else np.zeros(y1 - y0, np.float32))[:, None]
            wx = (_ramp(np.arange(x0, x1) + 0.5, cx[j0], cx[j1], seam_px) if j1 != j0
                  else np.zeros(x1 - x0, np.float32))[None, :]
            weights = ((1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx)
            acc = np.zeros((y1 - y0, x1 - x0, planes[0].shape[2]), np.float32)
            for z in set(int(c) for c in corners):
                wz = sum(wt for c, wt in zip(corners, weights) if c == z)
                acc += wz[..., None] * planes[z][y0:y1, x0:x1]
            out[y0:y1, x0:x1] = np.clip(acc + 0.5, 0, 255).astype(planes[0].dtype)
    return out


def extended_focus(planes: list[np.ndarray], block_px: int = EDF_BLOCK_PX, seam_px: int = EDF_SEAM_PX) -> np.ndarray:
    """The all-in-focus ``(h, w, 3)`` plane of one field's focus planes (see the module docstring)."""
    if len(planes) == 1:
        return planes[0]
    index, _ = block_focus(planes, block_px)
    return blend_planes(planes, index, block_px, seam_px)


def best_plane_index(planes: list[np.ndarray]) -> int:
    """Index of the sharpest of a field's focus planes (highest :func:`sharpness`)."""
    return int(np.argmax([sharpness(p) for p in planes]))


class _RecentFields:
    """A small thread-safe LRU of collapsed fields, with one computation per field at a time."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._fields: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._busy: dict[int, threading.Lock] = {}

    def get_or_make(self, key: int, make) -> np.ndarray:
        with self._lock:
            if key in self._fields:
                self._fields.move_to_end(key)
                return self._fields[key]
            busy = self._busy.setdefault(key, threading.Lock())
        with busy:  # a second reader of the same field waits for the first instead of computing it again
            with self._lock:
                if key in self._fields:
                    return self._fields[key]
            value = make()
            value.setflags(write=False)
            with self._lock:
                self._fields[key] = value
                while len(self._fields) > self.capacity:
                    self._fields.popitem(last=False)
                self._busy.pop(key, None)
            return value


def focus_image(image: Image, focus) -> Image:
    """Collapse the focus planes of ``image`` as ``focus`` says (see the module docstring).

    Parameters
    ----------
    image : Image
        An opened image. A slide or a field set with one plane is returned as is for ``"edf"``/``"best"``/``0``.
    focus : None, "edf", "best" or int
        None returns ``image`` unchanged (the planes stay a z axis).

    Raises
    ------
    ImageReadError
        ``focus`` is not a mode or names a plane the image does not have.
    """
    focus = parse_focus(focus)
    if focus is None:
        return image
    n_z = image.n_z
    if isinstance(focus, int) and focus >= n_z:
        raise ImageReadError(f"{image.path.name}: focus plane {focus} out of range (it has {n_z} plane"
                             f"{'s' if n_z != 1 else ''}, numbered from 0)")
    if n_z == 1:
        return image
    import dask.array as da

    source = image
    levels = []
    for level in range(len(image.levels)):
        arr = image.levels[level]
        n_fields, _, height, width, n_c = (int(s) for s in arr.shape)
        if isinstance(focus, int):
            levels.append(arr[:, focus])
            continue
        recent = _RecentFields(RECENT_FIELDS)

        def collapse(field: int, level=level) -> np.ndarray:
            planes = [source.read_plane(level, field, z) for z in range(n_z)]
            if focus == "edf":
                return np.ascontiguousarray(extended_focus(planes))
            return np.ascontiguousarray(planes[best_plane_index(planes)])

        def load_block(block_id=None, recent=recent, collapse=collapse):
            field = int(block_id[0])
            return recent.get_or_make(field, lambda: collapse(field))[None]

        chunks = ((1,) * n_fields, (height,), (width,), (n_c,))
        levels.append(da.map_blocks(load_block, chunks=chunks, dtype=np.uint8,
                                    meta=np.empty((0, 0, 0, 0), np.uint8)))
    metadata = dict(image.metadata)
    metadata.update(n_z=1, focus=str(focus), focus_planes=n_z)
    return replace(image, levels=levels, metadata=metadata)
