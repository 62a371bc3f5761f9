"""Class distribution, and balancing by oversampling (with augmentation) or undersampling.

Balancing works on the rows of a label table and only on the training split (validation and test keep the true
distribution). A class is counted by an item's first label. Oversampled copies carry an ``augment`` spec (a short
string such as ``"fh|r1|j12345"``: horizontal flip, one 90-degree turn, colour jitter with seed 12345) that
:func:`augment_crop` applies to the crop pixels; exporters that write pixels (ImageFolder) use it, exporters of
geometry (COCO, GeoJSON, masks) ignore copies. Original rows have ``augment == ""``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from cytoreview.errors import ExportError

BALANCE_MODES = ("oversample", "undersample")


def class_distribution(table: pd.DataFrame, by: str | None = "split") -> pd.DataFrame:
    """Count items per class (first label), optionally per split.

    Parameters
    ----------
    table : pandas.DataFrame
        A label table (``labels`` column of lists).
    by : str or None
        A column to break the counts down by (``"split"``), ignored when absent.

    Returns
    -------
    pandas.DataFrame
        Columns ``class``, ``count``, ``fraction`` (and ``by``), sorted.
    """
    first = table["labels"].map(lambda v: v[0] if len(v) else "")
    frame = pd.DataFrame({"class": first})
    keys = ["class"]
    if by and by in table.columns:
        frame[by] = table[by].to_numpy()
        keys = [by, "class"]
    counts = frame.groupby(keys, sort=True).size().rename("count").reset_index()
    if len(keys) == 2:
        counts["fraction"] = counts["count"] / counts.groupby(by)["count"].transform("sum")
    else:
        counts["fraction"] = counts["count"] / max(int(counts["count"].sum()), 1)
    return counts


def balance_table(
    table: pd.DataFrame,
    mode: str = "oversample",
    *,
    target: int | None = None,
    split: str | None = "train",
    seed: int = 0,
) -> pd.DataFrame:
    """Return ``table`` with the classes of ``split`` brought to ``target`` items each.

    Parameters
    ----------
    table : pandas.DataFrame
        A label table, with a ``split`` column when ``split`` is given.
    mode : {"oversample", "undersample"}
        Oversample: add augmented copies of items of classes below ``target`` (classes above are kept whole).
        Undersample: keep a seeded random ``target`` items of classes above it.
    target : int, optional
        Items per class; default the largest class count (oversample) or the smallest (undersample).
    split : str or None
        Only rows of this split are balanced; None balances every row.
    seed : int
        Seed for which items are copied or dropped and for the augmentation parameters.

    Returns
    -------
    pandas.DataFrame
        The balanced table with an ``augment`` column (``""`` for original rows), sorted like the input with copies
        after the originals.
    """
    if mode not in BALANCE_MODES:
        raise ExportError(f"unknown balance mode {mode!r}; expected oversample or undersample")
    out = table.copy()
    if "augment" not in out.columns:
        out["augment"] = ""
    if split is not None and "split" in out.columns:
        mask = (out["split"] == split).to_numpy()
    else:
        mask = np.ones(len(out), dtype=bool)
    part = out[mask]
    if len(part) == 0:
        return out.reset_index(drop=True)
    first = part["labels"].map(lambda v: v[0] if len(v) else "")
    counts = Counter(first)
    if target is None:
        target = max(counts.values()) if mode == "oversample" else min(counts.values())
    target = int(target)
    if target < 1:
        raise ExportError(f"balance target must be >= 1, got {target}")
    rng = np.random.default_rng(seed)
    if mode == "undersample":
        drop: list = []
        for cls in sorted(counts):
            idx = part.index[(first == cls).to_numpy()]
            if len(idx) > target:
                drop.extend(rng.choice(idx, size=len(idx) - target, replace=False).tolist())
        return out.drop(index=drop).reset_index(drop=True)
    copies = []
    for cls in sorted(counts):
        idx = part.index[(first == cls).to_numpy()]
        need = target - len(idx)
        if need <= 0:
            continue
        picks = np.concatenate([rng.permutation(idx) for _ in range(int(np.ceil(need / len(idx))))])[:need]
        rows = out.loc[picks].copy()
        rows["augment"] = [_random_spec(rng) for _ in range(len(rows))]
        copies.append(rows)
    if copies:
        out = pd.concat([out, *copies], ignore_index=True)
    return out.reset_index(drop=True)


def _random_spec(rng: np.random.Generator) -> str:
    """A random, non-identity augmentation spec."""
    while True:
        flip_h, flip_v = bool(rng.integers(2)), bool(rng.integers(2))
        turns = int(rng.integers(4))
        if flip_h or flip_v or turns:
            break
    parts = []
    if flip_h:
        parts.append("fh")
    if flip_v:
        parts.append("fv")
    if turns:
        parts.append(f"r{turns}")
    parts.append(f"j{int(rng.integers(1, 2**31 - 1))}")
    return "|".join(parts)


def augment_crop(crop: np.ndarray, spec: str, *, jitter: float = 0.05) -> np.ndarray:
    """Apply an augmentation spec (see the module docstring) to an RGB uint8 crop.

    Parameters
    ----------
    crop : numpy.ndarray
        ``(h, w, 3)`` uint8.
    spec : str
        ``""`` (identity) or ``"|"``-joined parts: ``fh``, ``fv``, ``r<1-3>``, ``j<seed>``.
    jitter : float
        Largest relative change of brightness, contrast and per-channel gain for the colour jitter (mild: 5%).

    Returns
    -------
    numpy.ndarray
        The augmented crop, uint8 (a 90-degree turn swaps height and width).
    """
    out = np.asarray(crop)
    if not spec:
        return out.copy()
    for part in spec.split("|"):
        if part == "fh":
            out = out[:, ::-1]
        elif part == "fv":
            out = out[::-1]
        elif part.startswith("r") and part[1:].isdigit():
            out = np.rot90(out, int(part[1:]) % 4, axes=(0, 1))
        elif part.startswith("j") and part[1:].isdigit():
            r = np.random.default_rng(int(part[1:]))
            brightness = 1.0 + r.uniform(-jitter, jitter)
            contrast = 1.0 + r.uniform(-jitter, jitter)
            gain = 1.0 + r.uniform(-jitter, jitter, size=out.shape[-1])
            f = out.astype(np.float32)
            mean = f.mean(axis=(0, 1), keepdims=True)
            f = ((f - mean) * contrast + mean) * brightness * gain
            out = np.clip(np.rint(f), 0, 255).astype(np.uint8)
        else:
            raise ExportError(f"unknown augmentation {part!r} in {spec!r}")
    return np.ascontiguousarray(out)
