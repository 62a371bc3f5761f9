"""The numpy logistic-regression head, the holdout split and the metrics."""

from __future__ import annotations

import numpy as np
import pytest

from cytoreview.errors import ExportError
from cytoreview.train.evaluate import holdout_split, kappa, metrics
from cytoreview.train.logistic import (
    _gradient_descent,
    _loss_grad,
    class_weights,
    fit_logistic,
)


def blobs(n_per_class=(60, 60, 60), dim=16, sep=3.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(n_per_class), dim)) * sep
    x = np.concatenate([c + rng.normal(size=(n, dim)) for c, n in zip(centres, n_per_class)])
    y = np.concatenate([np.full(n, k) for k, n in enumerate(n_per_class)])
    # raw embeddings are far from standardised: large offset and scale per column
    return (x * rng.uniform(0.1, 50, dim) + rng.uniform(-100, 100, dim)).astype(np.float32), y


def test_learns_a_separable_problem():
    x, y = blobs()
    head = fit_logistic(x, y, 3)
    assert head.solver == "lbfgs"
    assert (head.predict(x) == y).mean() >= 0.98
    rng = np.random.default_rng(1)
    assert head.weights.shape == (16, 3) and head.bias.shape == (3,)
    p = head.predict_proba(x[:5])
    assert np.allclose(p.sum(1), 1, atol=1e-5)
    # random labels cannot be learned to the same degree on held-out data
    yr = rng.permutation(y)
    h2 = fit_logistic(x[:120], yr[:120], 3, reg=1.0)
    assert (h2.predict(x[120:]) == yr[120:]).mean() < 0.7


def test_balanced_weights_help_the_rare_class():
    x, y = blobs((300, 300, 12), dim=2, sep=0.8, seed=3)
    plain = fit_logistic(x, y, 3, class_weight=None, reg=1e-2)
    balanced = fit_logistic(x, y, 3, class_weight="balanced", reg=1e-2)
    rare = y == 2
    assert (balanced.predict(x[rare]) == 2).mean() > (plain.predict(x[rare]) == 2).mean()
    w = class_weights(np.array([0, 0, 0, 1]), 3, "balanced")
    assert w == pytest.approx([4 / 6, 2.0, 0.0])
    assert class_weights(np.array([0, 1]), 2, {1: 3.0}) == pytest.approx([1.0, 3.0])


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4))
    onehot = np.eye(3)[rng.integers(0, 3, 20)]
    w = rng.uniform(0.5, 2, 20)
    theta = rng.normal(size=4 * 3 + 3)
    _, g = _loss_grad(theta, x, onehot, w, 0.1)
    eps = 1e-6
    num = np.array([(_loss_grad(theta + eps * e, x, onehot, w, 0.1)[0] - _loss_grad(theta - eps * e, x, onehot, w,
                    0.1)[0]) / (2 * eps) for e in np.eye(len(theta))])  # fmt: skip
    assert np.allclose(g, num, atol=1e-6)
    # the scipy-free fallback reaches the same optimum
    _, _, loss_gd = _gradient_descent(np.zeros_like(theta), x, onehot, w, 0.1, 5000, 1e-8)
    from scipy.optimize import minimize

    res = minimize(_loss_grad, np.zeros_like(theta), args=(x, onehot, w, 0.1), jac=True, method="L-BFGS-B")
    assert loss_gd == pytest.approx(res.fun, rel=1e-5)


def test_bad_inputs():
    with pytest.raises(ExportError, match="non-empty"):
        fit_logistic(np.zeros((0, 3)), np.zeros(0, int), 2)
    with pytest.raises(ExportError, match="NaN"):
        fit_logistic(np.array([[np.nan, 1.0], [1.0, 2.0]]), np.array([0, 1]), 2)
    with pytest.raises(ExportError, match="labels must lie"):
        fit_logistic(np.ones((2, 2)), np.array([0, 5]), 2)
    with pytest.raises(ExportError, match="class_weight"):
        fit_logistic(np.ones((2, 2)), np.array([0, 1]), 2, class_weight="heavy")


def test_holdout_split_rules():
    labels = np.array([0] * 10 + [1] * 10)
    one_group = np.array(["image:a"] * 20, dtype=object)
    mask, how = holdout_split(labels, one_group, 0.2, seed=0)
    assert how == "stratified random" and mask[:10].sum() == 2 and mask[10:].sum() == 2
    groups = np.array(["case:A"] * 5 + ["case:B"] * 5 + ["case:C"] * 5 + ["case:D"] * 5, dtype=object)
    labels2 = np.array([0, 1] * 10)
    mask, how = holdout_split(labels2, groups, 0.25, seed=0)
    assert how == "grouped by case"
    held = set(groups[mask])
    assert len(held) == 1 and not (set(groups[~mask]) & held)
    fixed = np.array(["train"] * 15 + ["holdout"] * 5, dtype=object)
    mask, how = holdout_split(labels2, groups, 0.2, fixed=fixed)
    assert how == "label-set split" and mask.sum() == 5
    assert holdout_split(labels2, groups, 0.0)[1] == "none"


def test_metrics_by_hand():
    truth = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    m = metrics(truth, pred, ["a", "b", "c"], base_pred=np.array([0, 0, 0, 0, -1, 2]))
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["recall"] == {"a": 0.5, "b": 1.0, "c": 0.5}
    # po = 4/6; row sums (truth) 2,2,2; column sums (pred) 2,3,1 -> pe = (4+6+2)/36 = 1/3
    assert m["kappa"] == pytest.approx((4 / 6 - 1 / 3) / (1 - 1 / 3))
    assert m["base_accuracy"] == pytest.approx(3 / 6)
    assert kappa(np.array([1, 1]), np.array([1, 1]), 2) is None
