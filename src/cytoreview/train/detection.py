"""Detection quality of a segmentation pack: cell outlines rasterised and matched to true instances at an IoU.

``detection_f1`` is the figure the cell packs' READMEs give (held-out detection F1 at IoU 0.5): a predicted cell
matches a true cell when their pixel IoU reaches ``iou``; each true cell is matched at most once.
"""

from __future__ import annotations

import numpy as np


def rasterise_cells(cells: dict, field: int, shape: tuple[int, int]) -> np.ndarray:
    """Instance map int32 ``shape`` of one field's cells from their outline polygons (level-0 pixels); 0 = none."""
    from skimage.draw import polygon

    out = np.zeros(shape, dtype=np.int32)
    off = cells["outline_offset"]
    for i in np.nonzero(np.asarray(cells["field"]) == field)[0]:
        poly = cells["outline_yx"][off[i] : off[i + 1]]
        if len(poly) < 3:
            continue
        rr, cc = polygon(poly[:, 0], poly[:, 1], shape)
        out[rr, cc] = i + 1
    return out


def matched_pairs(pred: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> dict[int, int]:
    """``{true id: predicted id}``: one-to-one matches of predicted and true instances with IoU >= ``iou``, the best
    IoU first.

    With ``iou >= 0.5`` a match is unique by construction (two instances cannot both overlap one by more than half).
    """
    p, t = pred.ravel().astype(np.int64), truth.ravel().astype(np.int64)
    both = (p > 0) & (t > 0)
    pairs, inter = np.unique(np.stack([p[both], t[both]]), axis=1, return_counts=True)
    area_p = dict(zip(*np.unique(p[p > 0], return_counts=True)))
    area_t = dict(zip(*np.unique(t[t > 0], return_counts=True)))
    used_p, matches = set(), {}
    scores = []
    for (a, b), n in zip(pairs.T.tolist(), inter.tolist()):
        scores.append((n / (area_p[a] + area_t[b] - n), a, b))
    for s, a, b in sorted(scores, reverse=True):
        if s < iou:
            break
        if a in used_p or b in matches:
            continue
        used_p.add(a)
        matches[b] = a
    return matches


def match_instances(pred: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> tuple[int, int, int]:
    """``(matched, n_pred, n_true)`` of :func:`matched_pairs`."""
    n_pred = len(np.unique(pred[pred > 0]))
    n_true = len(np.unique(truth[truth > 0]))
    return len(matched_pairs(pred, truth, iou)), n_pred, n_true


def recall_by_class(matched_true: dict[str, int], n_true: dict[str, int]) -> dict[str, float]:
    """Per-class detection recall (rounded to 4 places) from matched and true cell counts by class name."""
    return {name: round(matched_true.get(name, 0) / n, 4) for name, n in sorted(n_true.items()) if n}


def detection_f1(matched: int, n_pred: int, n_true: int) -> dict:
    """Precision, recall and F1 from match counts (rounded to 4 places)."""
    precision = matched / n_pred if n_pred else 0.0
    recall = matched / n_true if n_true else 0.0
    f1 = 2 * matched / (n_pred + n_true) if (n_pred + n_true) else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "matched": int(matched), "predicted": int(n_pred), "true": int(n_true)}
