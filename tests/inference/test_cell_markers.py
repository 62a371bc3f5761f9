"""Marker-seeded splitting (``outputs.markers``, ``cells.split: markers``): overlapping cells with no border in the
image become one cell per nucleus marker -- through real onnxruntime sessions of tiny graphs and ``predict``."""

from __future__ import annotations

import numpy as np
import pytest

from tests.inference.conftest import wsi
from tests.models.onnx_graphs import foreground_graph, segmentation_card, write_pack

from cytoreview.errors import PackError
from cytoreview.inference import predict
from cytoreview.inference.instances import extract_instances, split_at_markers
from cytoreview.models import load_pack
from cytoreview.models.card import validate_card

MPP = 0.5


def overlapping_pair(gap_px: float = 13.0):
    """Two dark discs (radius 10 px) overlapping over most of a radius, no seam between them, a black nucleus
    (radius 3 px) at each centre. Returns the RGB image and the two centres ``(y, x)``."""
    h, w = 64, 84
    arr = np.full((h, w, 3), 235, dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    centres = [(32.0, 34.0), (32.0, 34.0 + gap_px)]
    for cy, cx in centres:
        arr[(yy - cy) ** 2 + (xx - cx) ** 2 <= 100] = 40
    for cy, cx in centres:
        arr[(yy - cy) ** 2 + (xx - cx) ** 2 <= 9] = 4
    return arr, centres


def marker_pack(tmp_path, name, *, boundary=True, split="markers", **cells):
    outputs = {"probabilities": {"name": "probs", "activation": "sigmoid", "threshold": 0.3},
               "markers": {"name": "markers"}, "halo_px": 1}
    if boundary:
        outputs["boundary"] = {"name": "boundary", "activation": "none"}
    card = segmentation_card(name, size_px=24, outputs=outputs, cells={"split": split, **cells})
    return load_pack(write_pack(tmp_path / name, card, foreground_graph, boundary=boundary, markers=True))


@pytest.mark.parametrize("boundary", [True, False], ids=["bounded-by-boundary", "on-foreground"])
def test_two_overlapping_discs_with_two_markers_become_two_cells(tmp_path, boundary):
    arr, centres = overlapping_pair()
    image = wsi(arr, mpp=MPP, path=tmp_path / "pair.tif")
    pack = marker_pack(tmp_path, "mk", boundary=boundary)
    assert pack.card["cells"]["marker_threshold"] == 0.5  # the default, filled in by the card
    store = predict(image, pack, tmp_path / "o", threads=1)
    assert "markers" in store.group and np.nanmax(store.group["markers"][:]) > 0.9
    cells = store.cells()
    assert len(cells["y_px"]) == 2, cells["x_px"]
    assert sorted(cells["x_px"].tolist()) == pytest.approx([c[1] for c in centres], abs=2.5)
    # the split falls midway between the nuclei: the two halves are about the same size
    assert cells["area_px"].min() / cells["area_px"].max() > 0.8


def test_the_boundary_split_alone_keeps_the_overlapping_pair_as_one_cell(tmp_path):
    """What the marker output is for: the pair has no border in the image, so the boundary output sees none."""
    arr, _ = overlapping_pair()
    pack = marker_pack(tmp_path, "bnd-only", split="boundary")
    store = predict(wsi(arr, mpp=MPP, path=tmp_path / "pair.tif"), pack, tmp_path / "o", threads=1)
    assert len(store.cells()["y_px"]) == 1


def test_marker_threshold_decides_which_blobs_seed_a_cell(tmp_path):
    arr, _ = overlapping_pair()
    image = wsi(arr, mpp=MPP, path=tmp_path / "pair.tif")
    # the graph's marker probability peaks at sigmoid(40 * (0.1 - mean)) ~ 0.97 on the nuclei: a 0.99 cut-off
    # leaves no seed, and the unseeded foreground stays one object
    strict = marker_pack(tmp_path, "strict", marker_threshold=0.99)
    assert len(predict(image, strict, tmp_path / "o", threads=1).cells()["y_px"]) == 1


def test_split_at_markers_keeps_unseeded_foreground_as_its_own_cell():
    yy, xx = np.mgrid[:40, :60]
    fg = np.zeros((40, 60), dtype=np.float32)
    fg[(yy - 20) ** 2 + (xx - 15) ** 2 <= 64] = 0.9  # a cell with a marker
    fg[(yy - 20) ** 2 + (xx - 45) ** 2 <= 64] = 0.9  # a cell whose centre the model missed
    markers = np.zeros_like(fg)
    markers[18:23, 13:18] = 0.8
    labels = split_at_markers(fg >= 0.5, fg, markers, marker_threshold=0.5)
    assert labels.max() == 2 and labels[20, 15] != labels[20, 45] and (labels[fg >= 0.5] > 0).all()
    got = extract_instances(fg, split="markers", markers=markers, marker_threshold=0.5)
    assert len(got["y"]) == 2
    with pytest.raises(ValueError, match="marker output"):
        extract_instances(fg, split="markers")


def test_marker_seeds_are_the_markers_inside_the_foreground():
    """A marker blob on glass (below the foreground cut-off) seeds nothing and makes no cell."""
    fg = np.zeros((30, 30), dtype=np.float32)
    fg[5:20, 5:20] = 0.9
    markers = np.zeros_like(fg)
    markers[10:13, 10:13] = 0.9
    markers[24:28, 24:28] = 0.9  # on glass
    got = extract_instances(fg, split="markers", markers=markers, marker_threshold=0.5)
    assert len(got["y"]) == 1 and got["y"][0] == pytest.approx(12, abs=0.5)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"cells": {"split": "markers"}}, r"cells.split: 'markers' needs an outputs.markers entry"),
        ({"outputs": {"markers": {"name": "markers"}}, "cells": {"marker_threshold": 1.5}},
         r"cells.marker_threshold: 1.5 must lie strictly between 0 and 1"),
        ({"outputs": {"markers": {"name": "markers"}}, "cells": {"marker_threshold": 0}},
         r"cells.marker_threshold: 0 must lie strictly between 0 and 1"),
        ({"outputs": {"markers": {"name": "markers", "activation": "softmax"}}}, r"outputs.markers.activation"),
        ({"outputs": {"markers": {}}}, r"outputs.markers: missing required key 'name'"),
    ],
)
def test_bad_marker_cards_name_the_key(change, match):
    card = segmentation_card("bad")
    for key, value in change.items():
        card[key] = {**card.get(key, {}), **value}
    with pytest.raises(PackError, match=match):
        validate_card(card)


def test_a_marker_output_on_a_tile_classifier_is_refused():
    from tests.models.onnx_graphs import base_card

    card = base_card("tiles", outputs={"probabilities": {"name": "probs"}, "markers": {"name": "m"}})
    with pytest.raises(PackError, match=r"outputs.markers: only a segmentation pack"):
        validate_card(card)


def test_a_card_naming_a_marker_output_the_graph_lacks_is_refused(tmp_path):
    card = segmentation_card("nomk", outputs={"markers": {"name": "nuclei"}}, cells={"split": "markers"})
    pack = load_pack(write_pack(tmp_path / "nomk", card, foreground_graph, markers=True))
    with pytest.raises(PackError, match=r"outputs.markers.name: .*'nuclei'.*found outputs \['markers', 'probs'\]"):
        pack.session(threads=1)


def test_sigmoid_over_a_marker_output_that_already_ends_in_sigmoid_is_refused(tmp_path):
    # the graph's boundary output ends in Sigmoid: name it as the marker output, with the default sigmoid activation
    card = segmentation_card("twice", outputs={"markers": {"name": "boundary"}}, cells={"split": "markers"})
    pack = load_pack(write_pack(tmp_path / "twice", card, foreground_graph, boundary=True))
    with pytest.raises(PackError, match=r"outputs.markers.activation: 'sigmoid' would be applied twice"):
        pack.session(threads=1)
