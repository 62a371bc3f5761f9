"""Held-out evaluation of a refit: the holdout split and the metrics written into the new pack's card.

Holdout rule: when the label set fixes its own split (validation/test items) that is used; else, when the items come
from more than one case (or image), whole groups are held out so that no case is on both sides; else a stratified
random fraction of every class. Metrics compare the new head's calls with the reviewers' labels on the held-out
items: accuracy, recall per class and Cohen's kappa, plus the base pack's accuracy on the same items.
"""

from __future__ import annotations

import numpy as np


def holdout_split(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int = 0,
                  fixed: np.ndarray | None = None) -> tuple[np.ndarray, str]:  # fmt: skip
    """Boolean mask of held-out items and how it was made.

    Parameters
    ----------
    labels : numpy.ndarray
        Class index per item.
    groups : numpy.ndarray
        Case (or image) key per item.
    fraction : float
        Target share of held-out items in [0, 0.9]; 0 holds out nothing.
    seed : int
    fixed : numpy.ndarray, optional
        ``"holdout"`` / ``"train"`` per item from the label set.

    Returns
    -------
    (numpy.ndarray, str)
        The mask and ``"label-set split"``, ``"grouped by case"``, ``"stratified random"`` or ``"none"``.
    """
    n = len(labels)
    if fixed is not None:
        mask = np.asarray(fixed) == "holdout"
        if 0 < mask.sum() < n and len(np.unique(labels[~mask])) >= 2:
            return mask, "label-set split"
    if fraction <= 0 or n < 4:
        return np.zeros(n, dtype=bool), "none"
    rng = np.random.default_rng(seed)
    uniq = np.unique(groups)
    if 1 < len(uniq) < n:
        order = rng.permutation(len(uniq))
        sizes = {g: int(s) for g, s in zip(*np.unique(groups, return_counts=True))}
        target = fraction * n
        chosen, total = [], 0
        for i in order:
            g = uniq[i]
            if total >= target:
                break
            if total + sizes[g] > 1.5 * target and chosen:
                continue
            chosen.append(g)
            total += sizes[g]
        mask = np.isin(groups, chosen)
        if 0 < mask.sum() < n and len(np.unique(labels[~mask])) >= 2:
            return mask, "grouped by case" if any(str(g).startswith("case:") for g in uniq) else "grouped by image"
    mask = np.zeros(n, dtype=bool)
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        if len(idx) < 2:
            continue  # a single item stays in training
        m = max(1, round(fraction * len(idx)))
        m = min(m, len(idx) - 1)
        mask[rng.choice(idx, size=m, replace=False)] = True
    return mask, "stratified random" if mask.any() else "none"


def kappa(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> float | None:
    """Cohen's kappa between two label vectors (None when chance agreement is total)."""
    if len(truth) == 0:
        return None
    m = np.zeros((n_classes, n_classes), dtype=np.float64)
    np.add.at(m, (truth, pred), 1)
    total = m.sum()
    po = np.trace(m) / total
    pe = float((m.sum(axis=0) * m.sum(axis=1)).sum()) / total**2
    if pe >= 1.0:
        return None
    return float((po - pe) / (1.0 - pe))


#: Fewer held-out items than this in a class and the held-out figures mean nothing (an accuracy of 1.000 on 4 items).
MIN_HOLDOUT_PER_CLASS = 10


class SmallHoldoutWarning(UserWarning):
    """The held-out set is too small for its metrics to mean anything."""


def small_holdout_warning(result: dict, min_per_class: int = MIN_HOLDOUT_PER_CLASS) -> str | None:
    """The warning for held-out metrics (:func:`metrics`) with fewer than ``min_per_class`` items in a class, or None.

    Classes the head learns but that have no held-out item count too (their recall is unknown).
    """
    support = result.get("support") or {}
    if not result.get("n") or not support:
        return None
    small = {name: n for name, n in support.items() if n < min_per_class}
    if not small:
        return None
    counts = ", ".join(f"{name} {n}" for name, n in small.items())
    return (f"held-out set too small to mean anything: {result['n']} items, fewer than {min_per_class} in "
            f"{len(small)} class(es) ({counts}); its accuracy is not a measure of the new pack -- label more "
            "cases or hold out a fixed validation split")  # fmt: skip


def metrics(truth: np.ndarray, pred: np.ndarray, class_names: list[str], base_pred: np.ndarray | None = None) -> dict:
    """Held-out metrics as a JSON-ready dict.

    Returns
    -------
    dict
        ``n``, ``accuracy``, ``balanced_accuracy``, ``kappa``, ``recall`` ({class: recall or None}), ``support``
        ({class: items}), and ``base_accuracy`` / ``base_kappa`` when ``base_pred`` is given (a base class the new
        head lacks counts as wrong).
    """
    truth = np.asarray(truth, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    k = len(class_names)
    out: dict = {"n": len(truth)}
    if len(truth) == 0:
        return out
    recall, support = {}, {}
    for i, name in enumerate(class_names):
        sel = truth == i
        support[name] = int(sel.sum())
        recall[name] = float((pred[sel] == i).mean()) if sel.any() else None
    present = [r for r in recall.values() if r is not None]
    out.update(
        accuracy=float((pred == truth).mean()),
        balanced_accuracy=float(np.mean(present)) if present else None,
        kappa=kappa(truth, pred, k),
        recall=recall,
        support=support,
    )
    if base_pred is not None:
        b = np.asarray(base_pred, dtype=np.int64)
        out["base_accuracy"] = float((b == truth).mean())
        valid = b >= 0
        out["base_kappa"] = kappa(truth[valid], b[valid], k) if valid.any() else None
    return out
