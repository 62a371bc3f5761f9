"""Train / validation / test splits grouped by case, stable when cases are added.

A case (``case_id``; an image with no case id is its own group) never spans two splits, so a model is never
validated on cells from a slide it was trained on. Each case's split comes from a seeded hash of its case key alone
(a number ``u`` in [0, 1) compared with the cumulative fractions), so exporting again after more cases were
reviewed never moves a case that was already exported: a model evaluated on last week's test cases was not
trained on them this week. Stratification by class is therefore only in expectation (each case is an independent
draw with the target fractions), not forced per class -- forcing it would move cases whenever labels or cases
change. One exception keeps tiny exports usable: a split with a positive fraction that got no case by hash takes
the case whose ``u`` lies nearest to that split's interval, from a split that has two or more (the report says how
many cases each split holds). A split that still gets no case (fewer cases than splits) is warned about
(:class:`SplitWarning`): one case cannot be 70/15/15.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter

import pandas as pd

from cytoreview.errors import ExportError

#: Split names written to the ``split`` column (HF ``datasets`` recognises these folder names).
SPLIT_NAMES = ("train", "validation", "test")
DEFAULT_FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}


class SplitWarning(UserWarning):
    """The splits asked for cannot be met: a split with a positive fraction got no case (too few cases)."""


def normalise_fractions(fractions) -> dict[str, float]:
    """Turn ``True``, ``(train, val, test)`` or ``{"train": .., "validation"|"val": .., "test": ..}`` into a dict.

    Raises
    ------
    ExportError
        If a fraction is negative, a name unknown, or the fractions do not sum to 1 (within 1e-6).
    """
    if fractions is True:
        return dict(DEFAULT_FRACTIONS)
    if isinstance(fractions, dict):
        out = {}
        for name, value in fractions.items():
            key = "validation" if name in ("val", "valid") else name
            if key not in SPLIT_NAMES:
                raise ExportError(f"unknown split {name!r}; expected train, validation (val) or test")
            out[key] = float(value)
    else:
        values = list(fractions)
        if len(values) not in (2, 3):
            raise ExportError(f"split fractions must be (train, val) or (train, val, test), got {fractions!r}")
        out = dict(zip(SPLIT_NAMES, (float(v) for v in values)))
    out = {k: out.get(k, 0.0) for k in SPLIT_NAMES}
    if any(v < 0 for v in out.values()) or abs(sum(out.values()) - 1.0) > 1e-6:
        raise ExportError(f"split fractions must be >= 0 and sum to 1, got {out}")
    return out


def group_keys(table: pd.DataFrame) -> pd.Series:
    """The grouping key of each row: its case id, or ``image:<id>`` when it has none."""
    case = table["case_id"]
    missing = case.isna() | (case.astype(str) == "")
    return case.astype(str).where(~missing, "image:" + table["image_id"].astype(str))


def assign_splits(table: pd.DataFrame, fractions=True, *, seed: int = 0) -> pd.Series:
    """Return a ``split`` Series (train / validation / test) for ``table``, grouped by case.

    Parameters
    ----------
    table : pandas.DataFrame
        A validated label table (needs ``case_id``, ``image_id``, ``labels``).
    fractions : True, sequence or dict
        Probability of each split for a case (see :func:`normalise_fractions`): the expected fraction of cases.
    seed : int
        Seed of the per-case hash; the same case and seed always give the same split, whatever else is in
        ``table``.

    Returns
    -------
    pandas.Series
        Split name per row, indexed like ``table``.
    """
    frac = normalise_fractions(fractions)
    active = [s for s in SPLIT_NAMES if frac[s] > 0]
    if len(table) == 0:
        return pd.Series([], dtype=object, index=table.index, name="split")
    keys = group_keys(table)
    names = sorted(set(keys))
    u = {k: case_draw(k, seed) for k in names}
    # cumulative intervals [lo, hi) of each active split
    bounds, lo = {}, 0.0
    for split in active:
        bounds[split] = (lo, lo + frac[split])
        lo += frac[split]
    last = active[-1]
    assignment = {k: next((sp for sp in active if u[k] < bounds[sp][1]), last) for k in names}
    n_groups = Counter(assignment.values())
    for split in active:  # tiny exports: give an empty split the case whose draw lies nearest to its interval
        if n_groups[split] or len(names) < len(active):
            continue
        lo_s, hi_s = bounds[split]
        movable = [k for k in names if n_groups[assignment[k]] >= 2]
        if not movable:
            continue
        k = min(movable, key=lambda k: (max(lo_s - u[k], u[k] - hi_s, 0.0), k))
        n_groups[assignment[k]] -= 1
        assignment[k] = split
        n_groups[split] += 1
    empty = [split for split in active if not n_groups[split]]
    if empty:
        asked = "/".join(f"{frac[s]:g}" for s in SPLIT_NAMES)
        warnings.warn(f"split {asked} cannot be met with {len(names)} case(s): {', '.join(empty)} "
                      f"{'gets' if len(empty) == 1 else 'get'} no case (a case is never in two splits); "
                      "add cases or use fewer splits", SplitWarning, stacklevel=2)  # fmt: skip
    return pd.Series([assignment[k] for k in keys], index=table.index, name="split", dtype=object)


def case_draw(key: str, seed: int = 0) -> float:
    """The case's fixed number in [0, 1): a seeded hash of its key (same key and seed -> same split)."""
    digest = hashlib.blake2b(f"{int(seed)}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_report(table: pd.DataFrame) -> dict:
    """Items and cases per split and class counts per split, for the export summary."""
    keys = group_keys(table)
    out = {}
    for split, part in table.groupby("split", sort=True):
        counts = Counter(lbl for labels in part["labels"] for lbl in labels[:1])
        out[str(split)] = {
            "items": len(part),
            "cases": int(keys[part.index].nunique()),
            "classes": dict(sorted(counts.items())),
        }
    return out
