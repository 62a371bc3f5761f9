"""Cohen's kappa (checked against hand-computed values), confusion matrix, project agreement, adjudication."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cytoreview.errors import ProjectError
from cytoreview.review import cohen_kappa, confusion_matrix, kappa_from_confusion, per_class_kappa


def _expand(m, labels):
    a, b = [], []
    for i, la in enumerate(labels):
        for j, lb in enumerate(labels):
            a += [la] * m[i][j]
            b += [lb] * m[i][j]
    return a, b


def test_kappa_two_by_two_by_hand():
    # yes/yes 20, yes/no 5, no/yes 10, no/no 15: p_o = 35/50 = 0.7; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.4
    a, b = _expand([[20, 5], [10, 15]], ["yes", "no"])
    assert cohen_kappa(a, b) == pytest.approx(0.4, abs=1e-12)


def test_kappa_three_classes_by_hand():
    m = [[10, 2, 0], [1, 8, 1], [0, 2, 6]]
    # n = 30, p_o = 24/30; rows 12,10,8, cols 11,12,7 -> p_e = 308/900; kappa = (720 - 308) / (900 - 308) = 412/592
    a, b = _expand(m, [0, 1, 2])
    assert cohen_kappa(a, b) == pytest.approx(412 / 592, abs=1e-12)
    cm, labels = confusion_matrix(a, b)
    assert labels == [0, 1, 2] and cm.tolist() == m
    assert kappa_from_confusion(np.array(m)) == pytest.approx(412 / 592, abs=1e-12)


def test_kappa_edges():
    assert cohen_kappa([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert cohen_kappa([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert math.isnan(cohen_kappa([], []))
    assert math.isnan(cohen_kappa([1, 1], [1, 1]))  # p_e == 1: undefined
    with pytest.raises(ProjectError, match="differ in length"):
        cohen_kappa([1], [1, 2])


def test_per_class_one_vs_rest():
    a = [[0], [0, 1], [1], [2]]
    b = [[0], [1], [1], [2]]
    k = per_class_kappa(a, b)
    assert k[2] == pytest.approx(1.0) and k[1] == pytest.approx(1.0)
    # class 0 present: a = T,T,F,F ; b = T,F,F,F -> p_o = 3/4, p_e = (2*1 + 2*3)/16 = 0.5 -> kappa = 0.5
    assert k[0] == pytest.approx(0.5)


@pytest.fixture
def two_readers(project, image_id):
    for name in ("benign", "malignant", "atypical"):
        project.schema.add(name)
    ids = project.add_items(image_id, [
        {"level": "cell", "geometry": {"type": "point", "y": k, "x": k}, "model": "m@1", "model_class": k % 3,
         "uncertainty": k / 10} for k in range(8)])
    ann = [0, 0, 1, 1, 2, 2, 0, 1]
    bob = [0, 1, 1, 1, 2, 0, 0, None]
    for i, a, b in zip(ids, ann, bob):
        project.set_label(i, a, "ann")
        if b is not None:
            project.set_label(i, b, "bob")
    return ids, ann, bob


def test_project_agreement_between_reviewers(project, two_readers):
    ids, ann, bob = two_readers
    r = project.agreement("ann", "bob")
    assert r.n_items == 7 and r.item_ids == ids[:7]
    assert r.kappa == pytest.approx(cohen_kappa(ann[:7], bob[:7]))
    assert r.confusion.loc["benign", "malignant"] == 1 and r.confusion.loc["atypical", "benign"] == 1
    assert r.confusion.to_numpy().sum() == 7
    assert set(r.per_class) == {"benign", "malignant", "atypical"}
    assert r.percent_agreement == pytest.approx(5 / 7)
    assert project.adjudication_queue("ann", "bob") == [ids[5], ids[1]]  # more uncertain first


def test_project_agreement_with_model(project, two_readers):
    _, ann, _ = two_readers
    r = project.agreement("model", "ann")
    assert r.n_items == 8
    assert r.kappa == pytest.approx(cohen_kappa([k % 3 for k in range(8)], ann))
    with pytest.raises(ProjectError, match="two different readers"):
        project.agreement("ann", "ann")
