"""Fixtures for the model-pack tests: pack folders with tiny ONNX graphs."""

from __future__ import annotations


import pytest

from tests.models.onnx_graphs import base_card, classifier_graph, write_pack


@pytest.fixture
def make_pack(tmp_path):
    """``make_pack(name, graph_fn=..., card=..., **graph_kwargs) -> folder``."""

    def factory(name="test-pack", graph_fn=classifier_graph, card=None, **graph_kwargs):
        return write_pack(tmp_path / "packs" / name, card or base_card(name), graph_fn, **graph_kwargs)

    return factory
