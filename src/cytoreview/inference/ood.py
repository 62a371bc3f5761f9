"""Is this image like the pack's training images? Reference statistics in the card, a score per image, a warning.

A model pack's card may carry ``reference`` statistics of its training tiles:

* ``colour``: mean and standard deviation over training tiles of each tile's mean R, G, B (0..255, as the model's
  patch reader gives them);
* ``embedding``: the mean of the pack's embedding output over the training tiles and their covariance, shrunk
  towards its average variance (Ledoit-Wolf style, weight :data:`SHRINKAGE`) and kept as its top
  :data:`N_COMPONENTS` eigenvectors (``components``, ``variances``) plus the mean of the other eigenvalues
  (``residual_variance``): a probabilistic-PCA form of the full covariance that fits in a readable card; and
  ``score_p99``, the 99th percentile of the training tiles' own embedding score;
* ``n_tiles`` and ``source`` (what they were computed on).

For an image, :func:`assess` scores the tiles the pack predicted: the **embedding score** of a tile is its
Mahalanobis distance from the training tiles under that covariance, and the image's is the median over its tiles;
the **colour score** is the RMS over channels of the z-score of the image's median tile colour (mean and standard
deviation over training tiles of each tile's mean R, G, B, 0..255, in ``colour``). The image is *far outside* the
training data when its embedding score exceeds :data:`EMBEDDING_FACTOR` times ``score_p99`` or its colour score
exceeds :data:`COLOUR_LIMIT`.

Thresholds measured (``benchmarks/ood_scores.py`` prints the table) on the three sample cases and held-out generated
cases (in distribution) against the real CC0 Aperio H&E slide CMU-1-Small-Region and scikit-image's real IHC image
(``skimage.data.immunohistochemistry``): see :data:`EMBEDDING_FACTOR` and :data:`COLOUR_LIMIT`.

Checked afterwards (not used to choose them) on a real peripheral blood smear (the ``cbc`` wheel's test image,
``tests/inference/test_ood_blood_smear.py``): opened as a field set at the default 0.293 µm/px, all three packs warn
(warthin-tiles by colour, 1.25 of its limit, embedding 0.96; effusion-atypia 1.74 / 2.07; node-tumor embedding 1.66).
At the smear's real scale (~0.075 µm/px) effusion-atypia still warns (embedding 1.33), but **warthin-tiles does not**
(2-6 tiles, embedding 0.77 and colour 0.14 of the limits, at 0.075 and 0.15 µm/px), and its own sample case scores
0.63: too close to separate by moving the threshold. A blood smear at its true scale stays a known miss for
warthin-tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Most tiles whose colour is read for the score (a deterministic, evenly spread sample of the predicted ones).
COLOUR_SAMPLE_TILES = 64
#: An image whose median tile embedding score exceeds this fraction of the training tiles' 99th percentile is far
#: outside. Measured with benchmarks/ood_scores.py (one run): the packs' own sample cases score 0.33-0.67 of the
#: resulting limit, the real CMU-1-Small-Region H&E slide and the real IHC image 1.31-4.21 of it (9 of 9 judged
#: right; the closest pair, node-tumor's seed-7 slide 0.67 vs the real H&E 1.31, is about 1.5x either side).
EMBEDDING_FACTOR = 0.8
#: Largest colour score (RMS z of the median tile colour) of an image that is not far outside. Colour alone does not
#: separate synthetic from real H&E (node-tumor: 0.6 vs 0.3 of this limit); it catches other stains and scanners.
COLOUR_LIMIT = 3.0
#: Shrinkage of the embedding covariance towards its mean variance (keeps the distance stable in thin directions).
SHRINKAGE = 0.1
#: Eigenvectors of the covariance kept in the card.
N_COMPONENTS = 16


@dataclass
class OodReport:
    """How far an image is from a pack's training tiles.

    Attributes
    ----------
    embedding_score, colour_score : float or None
        See the module docstring (None when the card or the store lacks what the score needs).
    embedding_limit, colour_limit : float or None
        The thresholds they are compared with.
    far : bool
        True when either score is over its limit.
    n_tiles : int
        Predicted tiles scored.
    """

    embedding_score: float | None
    colour_score: float | None
    embedding_limit: float | None
    colour_limit: float | None
    far: bool
    n_tiles: int

    def message(self, pack_ref: str) -> str:
        """One line for the CLI, the dock and the store: what is unlike the training data, by how much."""
        parts = []
        if self.embedding_score is not None:
            parts.append(f"embedding score {self.embedding_score:.2f} (limit {self.embedding_limit:.2f})")
        if self.colour_score is not None:
            parts.append(f"colour score {self.colour_score:.1f} (limit {self.colour_limit:.1f})")
        detail = ", ".join(parts) or "no reference statistics"
        if self.far:
            return (f"this image is far outside what {pack_ref} was trained on ({detail}): its calls may be wrong "
                    "even where it is confident; review them or refit the pack on reviewed tiles of such images")
        return f"image within {pack_ref}'s training data ({detail})"

    def to_dict(self) -> dict:
        """JSON-ready (the store's ``ood`` attribute)."""
        return {"embedding_score": self.embedding_score, "colour_score": self.colour_score,
                "embedding_limit": self.embedding_limit, "colour_limit": self.colour_limit, "far": self.far,
                "n_tiles": self.n_tiles}


def tile_colours(patches: np.ndarray) -> np.ndarray:
    """Mean R, G, B of each uint8 patch ``(n, h, w, 3)`` -> float64 ``(n, 3)``."""
    patches = np.asarray(patches)
    return patches[..., :3].reshape(len(patches), -1, 3).mean(axis=1, dtype=np.float64)


def embedding_model(embeddings: np.ndarray) -> dict:
    """Mean and shrunk covariance of training embeddings ``(n, D)`` in the card's form (see the module)."""
    e = np.asarray(embeddings, dtype=np.float64)
    mean = e.mean(axis=0)
    cov = np.cov(e, rowvar=False) if len(e) > 1 else np.zeros((e.shape[1], e.shape[1]))
    cov = np.atleast_2d(cov)
    average = max(float(np.trace(cov)) / len(cov), 1e-12)
    shrunk = (1.0 - SHRINKAGE) * cov + SHRINKAGE * average * np.eye(len(cov))
    values, vectors = np.linalg.eigh(shrunk)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    k = min(N_COMPONENTS, len(values) - 1) if len(values) > 1 else 1
    residual = float(values[k:].mean()) if len(values) > k else float(values[-1])
    return {"mean": _round(mean), "components": [_round(vectors[:, i]) for i in range(k)],
            "variances": _round(values[:k]), "residual_variance": _round([max(residual, 1e-12)])[0]}


def embedding_scores(embeddings: np.ndarray, model: dict) -> np.ndarray:
    """Per tile: Mahalanobis distance from the training embeddings (``model`` from :func:`embedding_model`)."""
    d = np.asarray(embeddings, dtype=np.float64) - np.asarray(model["mean"], dtype=np.float64)
    components = np.asarray(model["components"], dtype=np.float64)  # (k, D), orthonormal rows
    variances = np.maximum(np.asarray(model["variances"], dtype=np.float64), 1e-12)
    projected = d @ components.T
    inside = np.sum(projected**2 / variances, axis=-1)
    rest = np.maximum(np.sum(d**2, axis=-1) - np.sum(projected**2, axis=-1), 0.0)
    return np.sqrt(inside + rest / max(float(model["residual_variance"]), 1e-12))


def reference_statistics(colours: np.ndarray, embeddings: np.ndarray | None, source: str) -> dict:
    """The card's ``reference`` block from the training tiles' mean colours ``(n, 3)`` (:func:`tile_colours` of
    their model patches) and embeddings ``(n, D)``.

    Numbers are rounded (4 significant digits) to keep the card readable.
    """
    colours = np.asarray(colours, dtype=np.float64).reshape(-1, 3)
    out: dict = {"n_tiles": int(len(colours)), "source": str(source),
                 "colour": {"mean": _round(colours.mean(axis=0)), "std": _round(colours.std(axis=0))}}
    if embeddings is not None and len(embeddings):
        model = embedding_model(embeddings)
        scores = embedding_scores(embeddings, model)  # with the rounded numbers the card keeps
        out["embedding"] = {**model, "score_p99": _round([np.percentile(scores, 99)])[0]}
    return out


def covariance_of(model: dict) -> np.ndarray:
    """The (shrunk) covariance a card's embedding model stands for: ``V diag(variances) V' + residual (I - V V')``."""
    v = np.asarray(model["components"], dtype=np.float64)
    d = len(model["mean"])
    return v.T @ np.diag(np.asarray(model["variances"], dtype=np.float64)) @ v + float(model["residual_variance"]) * (
        np.eye(d) - v.T @ v)


def update_reference(reference: dict | None, embeddings: np.ndarray, source: str) -> dict:
    """A refit pack's ``reference``: the base pack's embedding statistics pooled with those of the refit's training
    items (same backbone, so the same embedding space), weighted by tile counts; the base's colour statistics are
    kept (a refit reads no new patches). ``score_p99`` is the larger of the base's and the new items' own."""
    e = np.asarray(embeddings, dtype=np.float64)
    base = (reference or {}).get("embedding")
    if not base or len(base["mean"]) != e.shape[1]:
        out = {"n_tiles": int(len(e)), "source": str(source)}
        if reference and reference.get("colour"):
            out["colour"] = reference["colour"]
        if len(e) > 1:
            model = embedding_model(e)
            out["embedding"] = {**model, "score_p99": _round([np.percentile(embedding_scores(e, model), 99)])[0]}
        return out
    n0, n1 = max(int(reference.get("n_tiles", 0)), 1), len(e)
    mu0, mu1 = np.asarray(base["mean"], dtype=np.float64), e.mean(axis=0)
    mean = (n0 * mu0 + n1 * mu1) / (n0 + n1)
    second = n0 * (covariance_of(base) + np.outer(mu0, mu0)) + n1 * (
        np.cov(e, rowvar=False, bias=True) + np.outer(mu1, mu1) if n1 > 1 else np.outer(mu1, mu1))
    cov = second / (n0 + n1) - np.outer(mean, mean)
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    order = np.argsort(values)[::-1]
    values, vectors = np.maximum(values[order], 1e-12), vectors[:, order]
    k = min(N_COMPONENTS, len(values) - 1)
    model = {"mean": _round(mean), "components": [_round(vectors[:, i]) for i in range(k)],
             "variances": _round(values[:k]), "residual_variance": _round([values[k:].mean()])[0]}
    p99 = max(float(base["score_p99"]), float(np.percentile(embedding_scores(e, model), 99)))
    out = {"n_tiles": n0 + n1, "source": f"{reference.get('source', 'base pack')}; refit: {source}",
           "embedding": {**model, "score_p99": _round([p99])[0]}}
    if reference.get("colour"):
        out = {**out, "colour": reference["colour"]}
    return {k: out[k] for k in ("n_tiles", "source", "colour", "embedding") if k in out}


def _round(values) -> list[float]:
    return [float(f"{float(v):.4g}") for v in np.asarray(values, dtype=np.float64).ravel()]


def sample_tiles(tiles: np.ndarray, n: int = COLOUR_SAMPLE_TILES) -> np.ndarray:
    """At most ``n`` rows of ``tiles``, evenly spread (deterministic)."""
    tiles = np.asarray(tiles)
    if len(tiles) <= n:
        return tiles
    return tiles[np.linspace(0, len(tiles) - 1, n).round().astype(np.int64)]


def score_image(reference: dict, colours: np.ndarray, embeddings: np.ndarray | None) -> OodReport:
    """Score an image's tiles (their mean colours ``(n, 3)``, embeddings ``(m, D)``) against a card's reference."""
    emb_score = emb_limit = col_score = col_limit = None
    emb_ref = reference.get("embedding")
    if emb_ref and embeddings is not None and len(embeddings) and np.shape(embeddings)[-1] == len(emb_ref["mean"]):
        emb_score = float(np.median(embedding_scores(embeddings, emb_ref)))
        emb_limit = EMBEDDING_FACTOR * float(emb_ref["score_p99"])
    col_ref = reference.get("colour")
    if col_ref and len(colours):
        std = np.maximum(np.asarray(col_ref["std"], dtype=np.float64), 1.0)
        z = (np.median(np.asarray(colours, dtype=np.float64), axis=0) - np.asarray(col_ref["mean"])) / std
        col_score, col_limit = float(np.sqrt(np.mean(z**2))), COLOUR_LIMIT
    far = bool((emb_score is not None and emb_score > emb_limit) or (col_score is not None and col_score > col_limit))
    n = int(len(embeddings)) if embeddings is not None else int(len(colours))
    return OodReport(emb_score, col_score, emb_limit, col_limit, far, n)


def assess(image, pack, store) -> OodReport | None:
    """Score the tiles ``store`` predicted on ``image`` against ``pack``'s card ``reference`` (None without one).

    Embeddings come from the store; colours from a sample of :data:`COLOUR_SAMPLE_TILES` predicted tiles read
    through the pack's own patch grid (as the model saw them).
    """
    from cytoreview.inference.grid import make_grid

    reference = pack.card.get("reference")
    if not reference:
        return None
    cls = np.asarray(store.tile_class[...])
    tiles = np.argwhere(cls >= 0)
    if len(tiles) == 0:
        return None
    embeddings = None
    if store.embedding is not None:
        emb = np.asarray(store.embedding[...])
        embeddings = emb[tiles[:, 0], tiles[:, 1], tiles[:, 2]]
        embeddings = embeddings[np.isfinite(embeddings).all(axis=1)]
    grid = make_grid(image, pack, allow_upsample=True)
    sample = sample_tiles(tiles)
    patches = np.stack([grid.read_tile(image, int(f), int(r), int(c)) for f, r, c in sample])
    return score_image(reference, tile_colours(patches), embeddings)


def record(store, report: OodReport, pack_ref: str) -> None:
    """Write the report into the store's attributes (``ood``: scores, limits, far, message)."""
    import zarr

    group = zarr.open_group(str(store.path), mode="r+")
    group.attrs["ood"] = {**report.to_dict(), "message": report.message(pack_ref)}
