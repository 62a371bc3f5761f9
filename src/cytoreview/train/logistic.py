"""Multinomial logistic regression with class weights, written with numpy (no scikit-learn).

The head maps an embedding ``e`` (D values) to class probabilities ``softmax(e @ W + b)``. Features are standardised
before fitting (mean 0, standard deviation 1 per column, which keeps the problem well conditioned) and the
standardisation is folded back into ``W`` and ``b`` afterwards, so the fitted head applies to raw embeddings.

Loss: the class-weighted mean cross-entropy plus ``reg / 2 * ||W||^2`` (the bias is not penalised). It is minimised
full-batch with L-BFGS (``scipy.optimize.minimize``) when scipy is installed, else with plain gradient descent with a
backtracking step size. Both are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cytoreview.errors import ExportError


@dataclass(frozen=True)
class LinearHead:
    """A fitted softmax head on raw embeddings.

    Attributes
    ----------
    weights : numpy.ndarray
        ``(D, K)`` float32.
    bias : numpy.ndarray
        ``(K,)`` float32.
    n_iter : int
        Optimiser iterations used.
    loss : float
        Final training loss (standardised problem).
    solver : str
        ``"lbfgs"`` or ``"gradient-descent"``.
    """

    weights: np.ndarray
    bias: np.ndarray
    n_iter: int
    loss: float
    solver: str

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """``embeddings @ W + b`` as float32 ``(n, K)``."""
        return (np.asarray(embeddings, dtype=np.float32) @ self.weights + self.bias).astype(np.float32)

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(n, K)``."""
        return softmax(self.logits(embeddings).astype(np.float64)).astype(np.float32)

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Class index per row."""
        return np.argmax(self.logits(embeddings), axis=1)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax (numerically stable)."""
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def class_weights(labels: np.ndarray, n_classes: int, mode: str | Mapping[int, float] | None) -> np.ndarray:
    """Per-class weights ``(K,)``.

    Parameters
    ----------
    labels : numpy.ndarray
        Class index per item.
    n_classes : int
    mode : {"balanced", None} or mapping
        ``"balanced"``: ``n / (K * n_k)`` (every class weighs the same in total); None: all 1; a mapping
        ``{class index: weight}`` (missing classes weigh 1).
    """
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    if mode is None or mode == "none":
        return np.ones(n_classes)
    if isinstance(mode, str):
        if mode != "balanced":
            raise ExportError(f"class_weight must be 'balanced', None or a mapping, got {mode!r}")
        present = counts > 0
        out = np.zeros(n_classes)
        out[present] = counts.sum() / (present.sum() * counts[present])
        return out
    out = np.ones(n_classes)
    for k, w in dict(mode).items():
        if not 0 <= int(k) < n_classes:
            raise ExportError(f"class_weight names class index {k}, but there are {n_classes} classes")
        if not float(w) >= 0:
            raise ExportError(f"class_weight for class {k} must be >= 0, got {w!r}")
        out[int(k)] = float(w)
    return out


def _loss_grad(theta: np.ndarray, x: np.ndarray, onehot: np.ndarray, w: np.ndarray, reg: float,
               centre: np.ndarray | None = None):  # fmt: skip
    d, k = x.shape[1], onehot.shape[1]
    weights = theta[: d * k].reshape(d, k)
    bias = theta[d * k :]
    p = softmax(x @ weights + bias)
    total = w.sum()
    logp = np.log(np.clip((p * onehot).sum(axis=1), 1e-300, None))
    delta = weights if centre is None else weights - centre
    loss = -(w * logp).sum() / total + 0.5 * reg * float((delta * delta).sum())
    resid = (p - onehot) * (w / total)[:, None]
    grad_w = x.T @ resid + reg * delta
    grad_b = resid.sum(axis=0)
    return loss, np.concatenate([grad_w.ravel(), grad_b])


def fit_logistic(
    embeddings: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    reg: float = 1e-3,
    class_weight: str | Mapping[int, float] | None = "balanced",
    max_iter: int = 500,
    tol: float = 1e-7,
    prior: tuple[np.ndarray, np.ndarray] | None = None,
) -> LinearHead:
    """Fit a multinomial logistic-regression head.

    Parameters
    ----------
    embeddings : numpy.ndarray
        ``(n, D)`` features (raw embeddings).
    labels : numpy.ndarray
        ``(n,)`` class indices in ``[0, n_classes)``.
    n_classes : int
        Number of output classes K (a class with no items gets a large negative bias: never predicted).
    reg : float
        L2 strength on the standardised weights (>= 0).
    class_weight : {"balanced", None} or mapping
        See :func:`class_weights`.
    max_iter : int
        Optimiser iteration limit.
    tol : float
        Gradient tolerance.
    prior : (numpy.ndarray, numpy.ndarray), optional
        A head ``(W0 (D, K), b0 (K,))`` on raw embeddings to start from and shrink towards: the L2 penalty becomes
        ``reg / 2 * ||W - W0||^2`` (in standardised units). With few labels the fit then stays close to the base
        pack's own head instead of close to zero.

    Returns
    -------
    LinearHead

    Raises
    ------
    ExportError
        Empty input, mismatched shapes, non-finite embeddings, labels out of range or a negative ``reg``.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or len(x) == 0:
        raise ExportError(f"embeddings must be a non-empty (n, D) array, got shape {x.shape}")
    if y.shape != (len(x),):
        raise ExportError(f"labels must have one entry per embedding ({len(x)}), got shape {y.shape}")
    if not np.isfinite(x).all():
        raise ExportError("embeddings contain NaN or infinite values")
    if y.min() < 0 or y.max() >= n_classes:
        raise ExportError(f"labels must lie in [0, {n_classes}), found {y.min()}..{y.max()}")
    if not reg >= 0:
        raise ExportError(f"reg must be >= 0, got {reg!r}")
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std < 1e-12] = 1.0
    xs = (x - mean) / std
    onehot = np.eye(n_classes)[y]
    per_class = class_weights(y, n_classes, class_weight)
    w = per_class[y]
    if not w.sum() > 0:
        raise ExportError("every item has weight 0 under the given class_weight")
    d = x.shape[1]
    theta0 = np.zeros(d * n_classes + n_classes)
    centre = None
    if prior is not None:
        w0 = np.asarray(prior[0], dtype=np.float64)
        b0 = np.asarray(prior[1], dtype=np.float64).reshape(-1)
        if w0.shape != (d, n_classes) or b0.shape != (n_classes,):
            raise ExportError(f"prior head has shapes {w0.shape}, {b0.shape}; expected ({d}, {n_classes}), "
                              f"({n_classes},)")  # fmt: skip
        centre = w0 * std[:, None]  # the same head in standardised units
        theta0 = np.concatenate([centre.ravel(), b0 + mean @ w0])
    try:
        from scipy.optimize import minimize
    except ImportError:  # pragma: no cover - scipy comes with scikit-image
        minimize = None
    if minimize is not None:
        res = minimize(_loss_grad, theta0, args=(xs, onehot, w, float(reg), centre), jac=True, method="L-BFGS-B",
                       options={"maxiter": int(max_iter), "gtol": tol})  # fmt: skip
        theta, n_iter, loss, solver = res.x, int(res.nit), float(res.fun), "lbfgs"
    else:  # pragma: no cover
        theta, n_iter, loss = _gradient_descent(theta0, xs, onehot, w, float(reg), max_iter * 4, tol, centre)
        solver = "gradient-descent"
    ws = theta[: d * n_classes].reshape(d, n_classes)
    bs = theta[d * n_classes :].copy()
    absent = np.bincount(y, minlength=n_classes) == 0
    bs[absent] = -1e4  # an unseen class must never win
    weights = ws / std[:, None]
    bias = bs - mean @ weights
    return LinearHead(weights=weights.astype(np.float32), bias=bias.astype(np.float32), n_iter=n_iter, loss=loss,
                      solver=solver)  # fmt: skip


def _gradient_descent(theta, x, onehot, w, reg, max_iter, tol, centre=None):
    """Gradient descent with backtracking (Armijo) line search; the fallback when scipy is missing."""
    step = 1.0
    loss, grad = _loss_grad(theta, x, onehot, w, reg, centre)
    it = 0
    for it in range(1, max_iter + 1):
        gnorm2 = float(grad @ grad)
        if np.sqrt(gnorm2) < tol:
            break
        while True:
            cand = theta - step * grad
            cand_loss, cand_grad = _loss_grad(cand, x, onehot, w, reg, centre)
            if cand_loss <= loss - 0.5 * step * gnorm2 or step < 1e-12:
                break
            step *= 0.5
        theta, loss, grad = cand, cand_loss, cand_grad
        step = min(step * 2.0, 64.0)
    return theta, it, float(loss)
