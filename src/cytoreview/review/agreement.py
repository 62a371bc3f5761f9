"""Inter-reader agreement: Cohen's kappa, confusion matrices and the adjudication queue.

Readers are reviewer names, or ``"model"`` for the model's own labels. Agreement is computed over the items both
readers labelled. The overall kappa and the confusion matrix use the items where both gave exactly one class
(``UNSURE`` counts as a category); the per-class one-vs-rest kappa uses every shared item, asking "does the label set
contain class k?", so multi-label field items count there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cytoreview.errors import ProjectError


def confusion_matrix(a: Sequence, b: Sequence, labels: Sequence | None = None) -> tuple[np.ndarray, list]:
    """Count matrix ``m[i, j]`` = number of items reader A called ``labels[i]`` and reader B called ``labels[j]``.

    ``labels`` defaults to the sorted union of both answers.
    """
    if len(a) != len(b):
        raise ProjectError(f"the two readers' answers differ in length ({len(a)} vs {len(b)})")
    labels = sorted(set(a) | set(b)) if labels is None else list(labels)
    index = {lab: k for k, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for x, y in zip(a, b):
        if x not in index or y not in index:
            raise ProjectError(f"answer {x if x not in index else y!r} is not among labels {labels}")
        m[index[x], index[y]] += 1
    return m, labels


def kappa_from_confusion(m: np.ndarray) -> float:
    """Cohen's kappa of a square count matrix: ``(p_o - p_e) / (1 - p_e)``.

    Returns NaN when it is undefined: no items, or both readers always gave the same single answer (``p_e == 1``).
    """
    m = np.asarray(m, dtype=np.float64)
    n = m.sum()
    if n == 0:
        return float("nan")
    p_o = np.trace(m) / n
    p_e = float(np.dot(m.sum(axis=1), m.sum(axis=0))) / (n * n)
    if np.isclose(p_e, 1.0):
        return float("nan")
    return float((p_o - p_e) / (1.0 - p_e))


def cohen_kappa(a: Sequence, b: Sequence, labels: Sequence | None = None) -> float:
    """Cohen's kappa between two readers' answers on the same items (see :func:`kappa_from_confusion`)."""
    m, _ = confusion_matrix(a, b, labels)
    return kappa_from_confusion(m)


def per_class_kappa(a_sets: Sequence[Sequence[int]], b_sets: Sequence[Sequence[int]],
                    classes: Sequence[int] | None = None) -> dict[int, float]:
    """One-vs-rest kappa per class: for each class, kappa of "label set contains it" between the two readers."""
    if len(a_sets) != len(b_sets):
        raise ProjectError(f"the two readers' answers differ in length ({len(a_sets)} vs {len(b_sets)})")
    a_sets = [set(s) for s in a_sets]
    b_sets = [set(s) for s in b_sets]
    if classes is None:
        classes = sorted(set().union(*a_sets, *b_sets)) if a_sets else []
    return {int(k): cohen_kappa([k in s for s in a_sets], [k in s for s in b_sets], labels=[False, True])
            for k in classes}


@dataclass
class AgreementReport:
    """Agreement between two readers of one project.

    Attributes
    ----------
    reader_a, reader_b : str
    n_items : int
        Items both labelled.
    n_single : int
        Of those, items where both gave exactly one class (the overall kappa and the confusion matrix use these).
    kappa : float
        Cohen's kappa over the single-label items (NaN if undefined).
    percent_agreement : float
        Fraction of shared items with identical label sets (NaN with none).
    per_class : dict of {str: float}
        One-vs-rest kappa per class name.
    confusion : pandas.DataFrame
        Counts, rows = reader A's class names, columns = reader B's.
    item_ids : list of int
        The shared items.
    """

    reader_a: str
    reader_b: str
    n_items: int
    n_single: int
    kappa: float
    percent_agreement: float
    per_class: dict = field(default_factory=dict)
    confusion: pd.DataFrame = field(default_factory=pd.DataFrame)
    item_ids: list = field(default_factory=list)


def agreement(project, reader_a: str, reader_b: str) -> AgreementReport:
    """Agreement between two reviewers, or a reviewer and ``"model"``, over the items both labelled."""
    if reader_a == reader_b:
        raise ProjectError(f"agreement needs two different readers, got {reader_a!r} twice")
    la = project.reviewer_labels(reader_a)
    lb = project.reviewer_labels(reader_b)
    shared = sorted(set(la) & set(lb))
    schema = project.schema
    single = [i for i in shared if len(la[i]) == 1 and len(lb[i]) == 1]
    a1 = [la[i][0] for i in single]
    b1 = [lb[i][0] for i in single]
    m, labels = confusion_matrix(a1, b1)
    names = schema.names(labels)
    per = per_class_kappa([la[i] for i in shared], [lb[i] for i in shared])
    same = [sorted(la[i]) == sorted(lb[i]) for i in shared]
    return AgreementReport(
        reader_a=reader_a, reader_b=reader_b, n_items=len(shared), n_single=len(single),
        kappa=kappa_from_confusion(m), percent_agreement=float(np.mean(same)) if same else float("nan"),
        per_class={schema.get(k).name: v for k, v in per.items()},
        confusion=pd.DataFrame(m, index=pd.Index(names, name=reader_a), columns=pd.Index(names, name=reader_b)),
        item_ids=shared,
    )


def adjudication_queue(project, reader_a: str, reader_b: str) -> list[int]:
    """Items both readers labelled but differently, most uncertain (by the model) first."""
    la = project.reviewer_labels(reader_a)
    lb = project.reviewer_labels(reader_b)
    ids = [i for i in sorted(set(la) & set(lb)) if sorted(la[i]) != sorted(lb[i])]
    if not ids:
        return []
    df = project.items(ids=ids)[["item_id", "uncertainty"]]
    df["key"] = df["uncertainty"].astype("float64").fillna(-1.0)
    return df.sort_values(["key", "item_id"], ascending=[False, True])["item_id"].astype(int).tolist()
