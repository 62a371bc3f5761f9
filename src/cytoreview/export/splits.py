"""Train / validation / test splits grouped by case, stratified by each case's majority class where possible.

A case (``case_id``; an image with no case id is its own group) never spans two splits, so a model is never
validated on cells from a slide it was trained on. Groups are assigned greedily, largest first within each
majority-class stratum, to the split whose share of that stratum lags most behind its target fraction; ties go to
the split lagging most overall, then to a seeded random order. With fewer cases than splits some splits stay empty
(stratification is then impossible; the report says so).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from cytoreview.errors import ExportError

#: Split names written to the ``split`` column (HF ``datasets`` recognises these folder names).
SPLIT_NAMES = ("train", "validation", "test")
DEFAULT_FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}


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
        Target fraction of items per split (see :func:`normalise_fractions`).
    seed : int
        Seed for breaking ties; the same table and seed give the same splits.

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
    first_label = table["labels"].map(lambda v: v[0] if len(v) else "")
    groups: dict[str, dict] = {}
    for key, label in zip(keys, first_label):
        g = groups.setdefault(key, {"n": 0, "classes": Counter()})
        g["n"] += 1
        g["classes"][label] += 1
    rng = np.random.default_rng(seed)
    names = sorted(groups)
    order = rng.permutation(len(names))
    tiebreak = {names[i]: int(r) for r, i in enumerate(order)}
    majority = {k: sorted(g["classes"].items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for k, g in groups.items()}
    stratum_total = Counter()
    for k, g in groups.items():
        stratum_total[majority[k]] += g["n"]
    total = sum(g["n"] for g in groups.values())
    # rare strata first, so their few cases are spread before the common ones fill the splits
    ordered = sorted(groups, key=lambda k: (stratum_total[majority[k]], majority[k], -groups[k]["n"], tiebreak[k]))
    got_stratum: dict[tuple[str, str], int] = Counter()
    got_total: dict[str, int] = Counter()
    n_groups: dict[str, int] = Counter()
    assignment: dict[str, str] = {}
    for k in ordered:
        s_name, n = majority[k], groups[k]["n"]

        def lag(split: str) -> tuple:
            want_s = frac[split] * stratum_total[s_name]
            want_t = frac[split] * total
            return (
                (want_s - got_stratum[(s_name, split)]) / max(stratum_total[s_name], 1),
                (want_t - got_total[split]) / total,
                frac[split],
            )

        best = max(active, key=lag)
        assignment[k] = best
        got_stratum[(s_name, best)] += n
        got_total[best] += n
        n_groups[best] += 1
    # every split with a positive fraction gets a group if there are enough groups
    for split in active:
        if n_groups[split] == 0:
            donor = max(active, key=lambda s: (n_groups[s], got_total[s]))
            if n_groups[donor] < 2:
                continue
            candidates = [k for k in ordered if assignment[k] == donor]
            smallest = min(candidates, key=lambda k: (groups[k]["n"], tiebreak[k]))
            assignment[smallest] = split
            n_groups[donor] -= 1
            n_groups[split] += 1
            got_total[donor] -= groups[smallest]["n"]
            got_total[split] += groups[smallest]["n"]
    return pd.Series([assignment[k] for k in keys], index=table.index, name="split", dtype=object)


def split_report(table: pd.DataFrame) -> dict:
    """Items and cases per split and class counts per split, for the export summary."""
    keys = group_keys(table)
    out = {}
    for split, part in table.groupby("split", sort=True):
        counts = Counter(lbl for labels in part["labels"] for lbl in labels[:1])
        out[str(split)] = {
            "items": int(len(part)),
            "cases": int(keys[part.index].nunique()),
            "classes": dict(sorted(counts.items())),
        }
    return out
