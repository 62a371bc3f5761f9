"""Out-of-distribution scores: reference statistics in the card, a score per image, the thresholds' behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from cytoreview.inference.ood import (
    COLOUR_LIMIT,
    EMBEDDING_FACTOR,
    embedding_model,
    embedding_scores,
    reference_statistics,
    score_image,
)


def _source(rng, d=24):
    """A correlated Gaussian with thin directions: ``draw(n)`` samples it."""
    mixing = rng.normal(size=(d, d)) * np.linspace(1.0, 0.05, d)
    return lambda n: rng.normal(size=(n, d)) @ mixing.T + 3.0


def test_mahalanobis_from_the_card_form_matches_the_full_covariance():
    rng = np.random.default_rng(0)
    train = _source(rng, d=12)(800)
    model = embedding_model(train)  # 12 dims: all components kept but one
    x = rng.normal(size=(5, 12)) + 3.0
    cov = np.cov(train, rowvar=False)
    avg = np.trace(cov) / 12
    shrunk = 0.9 * cov + 0.1 * avg * np.eye(12)
    d = x - train.mean(axis=0)
    exact = np.sqrt(np.einsum("ij,jk,ik->i", d, np.linalg.inv(shrunk), d))
    np.testing.assert_allclose(embedding_scores(x, model), exact, rtol=2e-2)  # rounded to 4 digits in the card


def test_scores_in_and_out_of_distribution():
    rng = np.random.default_rng(1)
    draw = _source(rng)
    train = draw(800)
    colours = rng.normal([200, 150, 190], [10, 12, 8], size=(800, 3))
    ref = reference_statistics(colours, train, "synthetic")
    assert ref["n_tiles"] == 800 and len(ref["embedding"]["components"]) == 16
    same = score_image(ref, rng.normal([200, 150, 190], [10, 12, 8], size=(64, 3)), draw(200))
    assert not same.far and same.embedding_score < same.embedding_limit and same.colour_score < COLOUR_LIMIT
    assert same.embedding_limit == pytest.approx(EMBEDDING_FACTOR * ref["embedding"]["score_p99"])
    # off the training distribution: isotropic noise as wide as its widest directions, so far off the thin ones
    other = rng.normal(size=(200, 24)) * 3.0 + 3.0
    far = score_image(ref, rng.normal([200, 150, 190], [10, 12, 8], size=(64, 3)), other)
    assert far.far and far.embedding_score > far.embedding_limit and "far outside" in far.message("p@1")
    brown = score_image(ref, rng.normal([120, 90, 60], 5, size=(64, 3)), draw(200))
    assert brown.far and brown.colour_score > COLOUR_LIMIT  # another stain
    assert score_image({}, colours[:3], None).embedding_score is None


def test_bundled_cards_carry_valid_reference_statistics():
    from cytoreview.models import load_pack
    from tests.plugins.conftest import PACK_NAMES, PLUGINS

    for name in PACK_NAMES:
        ref = load_pack(PLUGINS / name).card["reference"]
        assert ref["n_tiles"] > 100 and len(ref["embedding"]["mean"]) == 64
        assert ref["embedding"]["score_p99"] > 0 and len(ref["colour"]["mean"]) == 3


def test_card_refuses_a_malformed_reference(tmp_path):
    from cytoreview.errors import PackError
    from cytoreview.models.card import validate_card
    from tests.models.onnx_graphs import base_card

    card = base_card("r")
    card["reference"] = {"colour": {"mean": [1, 2]}}
    with pytest.raises(PackError, match="reference"):
        validate_card(card)


def test_refit_reference_pools_base_and_new_items():
    from cytoreview.inference.ood import covariance_of, update_reference

    rng = np.random.default_rng(2)
    draw = _source(rng, d=20)
    base_tiles, new_tiles = draw(600), draw(300) + 0.5
    base = reference_statistics(rng.normal(128, 5, size=(600, 3)), base_tiles, "base")
    pooled = update_reference(base, new_tiles, "reviewed")
    assert pooled["n_tiles"] == 900 and pooled["colour"] == base["colour"] and "refit: reviewed" in pooled["source"]
    both = np.concatenate([base_tiles, new_tiles])
    np.testing.assert_allclose(pooled["embedding"]["mean"], both.mean(axis=0), rtol=1e-3, atol=1e-3)
    assert pooled["embedding"]["score_p99"] >= base["embedding"]["score_p99"]
    cov = covariance_of(pooled["embedding"])
    assert np.allclose(cov, cov.T) and np.linalg.eigvalsh(cov).min() > 0
    fresh = update_reference(None, new_tiles, "reviewed")  # a base pack without statistics
    assert fresh["n_tiles"] == 300 and "colour" not in fresh and fresh["embedding"]["score_p99"] > 0
