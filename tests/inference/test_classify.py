"""Cell classification chained after a detector: crops centred on cells, --then on the CLI, cell items in a
project, queue and refit on cell embeddings -- with tiny real ONNX graphs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.inference.conftest import write_tiff
from tests.models.onnx_graphs import base_card, classifier_graph, foreground_graph, segmentation_card, write_pack

from cytoreview.errors import PackError
from cytoreview.inference.classify import classify_cells, predict_cells
from cytoreview.models import load_pack

COLOURS = {"red": (150, 10, 10), "green": (10, 150, 10), "blue": (10, 10, 150)}


def coloured_cells(seed=0, n=30, shape=(160, 200)):
    """Glass with dark discs (radius 4-5 px) in red, green or blue; returns the image and (y, x, colour) truth."""
    rng = np.random.default_rng(seed)
    h, w = shape
    arr = np.full((h, w, 3), 235, dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    truth: list = []
    while len(truth) < n:
        y, x = rng.uniform(8, h - 8), rng.uniform(8, w - 8)
        if any(np.hypot(y - a, x - b) < 16 for a, b, _ in truth):
            continue
        name = list(COLOURS)[len(truth) % 3]
        arr[(yy - y) ** 2 + (xx - x) ** 2 <= rng.uniform(16, 25)] = COLOURS[name]
        truth.append((y, x, name))
    return arr, truth


@pytest.fixture
def packs(tmp_path):
    det = load_pack(write_pack(tmp_path / "det", segmentation_card("det", cells={"min_area_um2": 3.0}),
                               foreground_graph))
    card = base_card("colours", task="cell-classification", input={"size_px": 12, "mpp": 0.5},
                     outputs={"probabilities": {"name": "probs", "activation": "softmax"},
                              "embedding": {"name": "embedding"}})
    for c in card["classes"]:
        c["level"] = "cell"
    # crops are mostly glass (235): weights on (mean - glass) make the disc colour decide
    weights = np.eye(3, dtype=np.float32) * 40 - 13
    cls = load_pack(write_pack(tmp_path / "cls", card, classifier_graph, weights=weights, embedding=True, size_px=12))
    return det, cls


def test_cells_classified_on_centred_crops(tmp_path, packs, image_opener):
    det, cls = packs
    arr, truth = coloured_cells()
    path = write_tiff(tmp_path / "cells.tif", arr)
    det_store, cell_store = predict_cells(path, det, cls, tmp_path / "out", threads=1)
    cells = cell_store.cells()
    assert cell_store.complete and cell_store.task == "cell-classification"
    assert len(cells["y_px"]) == len(truth)
    names = cell_store.class_names
    found = {}
    for y, x, k in zip(cells["y_px"], cells["x_px"], cells["class"]):
        found[(round(y), round(x))] = names[int(k)]
    hits = 0
    for y, x, name in truth:
        near = [v for (a, b), v in found.items() if abs(a - y) <= 2 and abs(b - x) <= 2]
        hits += near == [name]
    assert hits >= 0.9 * len(truth)
    assert cells["embedding"].shape == (len(truth), 3) and cells["probs"].shape == (len(truth), 3)
    assert np.all((cells["uncertainty"] >= 0) & (cells["uncertainty"] <= 1))
    np.testing.assert_allclose(cells["detection_prob"], det_store.cells()["prob_mean"])


def test_then_needs_a_detector_and_a_cell_classifier(tmp_path, packs):
    det, cls = packs
    with pytest.raises(PackError, match="cell-classification pack"):
        predict_cells(tmp_path / "x.tif", det, det, tmp_path / "o")
    with pytest.raises(PackError, match="after a segmentation pack"):
        predict_cells(tmp_path / "x.tif", cls, cls, tmp_path / "o")


def test_cli_predict_then(tmp_path, packs, image_opener, capsys):
    from cytoreview.cli import main

    det, cls = packs
    arr, truth = coloured_cells(1, n=9)
    path = write_tiff(tmp_path / "c.tif", arr)
    rc = main(["predict", str(path), "--model", str(det.path), "--then", str(cls.path), "--out",
               str(tmp_path / "o"), "--quiet"])
    out = capsys.readouterr().out.split()
    assert rc == 0 and len(out) == 2 and out[0].endswith("det@1.0.0.zarr") and out[1].endswith("colours@1.0.0.zarr")
    assert main(["predict", str(path), "--model", str(cls.path), "--then", str(cls.path), "--out",
                 str(tmp_path / "o")]) == 2


def test_cell_items_queue_and_refit_on_cell_embeddings(tmp_path, packs, image_opener):
    from cytoreview.review import Project
    from cytoreview.train import refit_detailed

    det, cls = packs
    arr, truth = coloured_cells(2, n=45)
    path = write_tiff(tmp_path / "r.tif", arr)
    det_store, cell_store = predict_cells(path, det, cls, tmp_path / "out", threads=1)
    project = Project.open(tmp_path / "proj", create=True)
    image_id = project.add_image(path, kind="wsi", mpp=0.5)
    project.import_predictions(image_id, det_store.path)
    project.import_predictions(image_id, cell_store.path)
    items = project.items(level="cell")
    assert len(items) == 45
    names = {c.id: c.name for c in project.schema.active_classes}
    assert {names[int(k)] for k in items["model_class"]} <= {"red", "green", "blue"}
    queue = project.queue("uncertainty", level="cell")
    unc = [project.item(i).uncertainty for i in queue]
    unc = [u for u in unc if u is not None]
    assert unc == sorted(unc, reverse=True) and len(queue) == 45
    # a reviewer swaps red and green: the refit must learn it from the cell embeddings
    by_name = {v: k for k, v in names.items()}
    swap = {"red": "green", "green": "red", "blue": "blue"}
    for iid, k in zip(items["item_id"], items["model_class"]):
        project.set_label(int(iid), by_name[swap[names[int(k)]]], reviewer="ann")
    result = refit_detailed(project, cls, tmp_path / "new", seed=0, embed_missing=False)
    assert result.pack.task == "cell-classification" and result.training.n_items == 45
    assert result.metrics["accuracy"] >= 0.9 and result.metrics["base_accuracy"] <= 0.5
    again = classify_cells(path, det_store, result.pack, tmp_path / "out2", threads=1)
    new_names = again.class_names
    got = [new_names[int(k)] for k in again.cells()["class"]]
    old = [cell_store.class_names[int(k)] for k in cell_store.cells()["class"]]
    assert np.mean([g == swap[o] for g, o in zip(got, old)]) >= 0.9
    project.close()


def _schema(project):
    return {c.name: c.hotkey for c in project.schema.active_classes}


@pytest.mark.parametrize("order", ["detector", "classifier-then-detector", "detector-then-classifier"])
def test_a_classified_detector_store_brings_the_classifier_cells_not_its_class(tmp_path, image_opener, order):
    """The demo bug: the detector's one class "cell" (hotkey 1) entered the schema ahead of the classifier's
    classes, and its tile summaries became tile items. Whatever store a caller imports, the cells come with the
    classifier's classes and hotkeys, and a segmentation store yields no tiles."""
    from cytoreview.review import Project, store_yield

    det = load_pack(write_pack(tmp_path / "det", segmentation_card(
        "det", cells={"min_area_um2": 3.0},
        classes=[{"id": 1, "name": "cell", "color": "#d62728", "hotkey": "1", "level": "cell"}]), foreground_graph))
    card = base_card("colours", task="cell-classification", input={"size_px": 12, "mpp": 0.5},
                     outputs={"probabilities": {"name": "probs", "activation": "softmax"}})
    for c in card["classes"]:
        c["level"] = "cell"
    cls = load_pack(write_pack(tmp_path / "cls", card, classifier_graph,
                               weights=np.eye(3, dtype=np.float32) * 40 - 13, size_px=12))
    arr, truth = coloured_cells(3, n=12)
    path = write_tiff(tmp_path / "d.tif", arr)
    det_store, cell_store = predict_cells(path, det, cls, tmp_path / "out", threads=1)
    assert det_store.tile_calls() is not None  # the detector's store does hold tile summaries
    yields = store_yield(det_store)
    assert (yields.tiles, yields.cells, yields.classes) == (False, False, False)
    assert [s.path for s in yields.classified_by] == [cell_store.path]
    project = Project.open(tmp_path / "proj", create=True)
    image_id = project.add_image(path, kind="wsi", mpp=0.5)
    stores = {"detector": [det_store], "classifier-then-detector": [cell_store, det_store],
              "detector-then-classifier": [det_store, cell_store]}[order]
    counts = [project.import_predictions(image_id, s.path) for s in stores]
    assert counts[0] == len(truth)
    assert _schema(project) == {"red": "1", "green": "2", "blue": "3"}
    assert len(project.items(level="tile")) == 0
    items = project.items(level="cell")
    assert len(items) == len(truth)
    names = {c.id: c.name for c in project.schema.active_classes}
    assert {names[int(k)] for k in items["model_class"]} <= {"red", "green", "blue"}
    assert {str(s.path) for s in project.prediction_stores()} == {str(det_store.path), str(cell_store.path)}
    project.close()


def test_a_detector_store_alone_yields_its_cells_and_no_tiles(tmp_path, packs, image_opener):
    from cytoreview.inference import predict
    from cytoreview.review import Project

    det, _ = packs
    arr, truth = coloured_cells(4, n=10)
    path = write_tiff(tmp_path / "a.tif", arr)
    store = predict(path, det, tmp_path / "out", threads=1)
    project = Project.open(tmp_path / "proj", create=True)
    image_id = project.add_image(path, kind="wsi", mpp=0.5)
    assert project.import_predictions(image_id, store.path) == len(truth)
    assert len(project.items(level="tile")) == 0 and len(project.items(level="cell")) == len(truth)
    assert set(_schema(project)) == {"cell"}
    project.close()


def test_an_unfinished_classifier_store_is_refused_with_its_detector(tmp_path, packs, image_opener):
    import zarr

    from cytoreview.errors import ProjectError
    from cytoreview.review import Project

    det, cls = packs
    arr, _ = coloured_cells(5, n=8)
    path = write_tiff(tmp_path / "u.tif", arr)
    det_store, cell_store = predict_cells(path, det, cls, tmp_path / "out", threads=1)
    zarr.open_group(str(cell_store.path), mode="r+").attrs["complete"] = False
    project = Project.open(tmp_path / "proj", create=True)
    image_id = project.add_image(path, kind="wsi", mpp=0.5)
    with pytest.raises(ProjectError, match="classified by .*unfinished"):
        project.import_predictions(image_id, det_store.path)
    assert project.prediction_stores() == [] and len(project.items()) == 0
    assert project.import_predictions(image_id, det_store.path, allow_partial=True) == 8
    assert set(_schema(project)) == {"red", "green", "blue"}
    project.close()
