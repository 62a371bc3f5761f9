"""Importing a prediction zarr store (written here following the brief's contract)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from .conftest import PACK_CLASSES, write_store

from cytoreview.errors import ProjectError


def test_import_creates_tile_cell_and_field_items(project, image_id, tmp_path):
    store = tmp_path / "case_A__warthin-tiles@1.0.0.zarr"
    data = write_store(store)
    n = project.import_predictions(image_id, store)
    tc = data["tile_class"]
    n_tiles = int((tc >= 0).sum())
    assert n == n_tiles + 5 + 2
    items = project.items()
    assert (items["level"].value_counts().to_dict()) == {"tile": n_tiles, "cell": 5, "field": 2}
    assert [c.name for c in project.schema.classes] == [c["name"] for c in PACK_CLASSES]

    tiles = items[items["level"] == "tile"]
    t = tiles[(tiles["field"] == 1) & tiles["geometry"].map(lambda g: (g["row"], g["col"]) == (2, 3))].iloc[0]
    assert t["model_class"] == tc[1, 2, 3] and t["label"] == [int(tc[1, 2, 3])]
    assert t["model_prob"] == pytest.approx(data["tile_prob"][1, 2, 3, tc[1, 2, 3]], rel=1e-6)
    assert t["uncertainty"] == pytest.approx(data["tile_uncertainty"][1, 2, 3], rel=1e-6)
    assert (t["x_min"], t["y_min"], t["x_max"], t["y_max"]) == (1200, 800, 1600, 1200)
    assert t["model"] == "warthin-tiles@1.0.0" and t["source"] == "model:warthin-tiles@1.0.0"
    assert not t["reviewed"]
    assert not ((tiles["field"] == 0) & tiles["geometry"].map(lambda g: (g["row"], g["col"]) == (0, 0))).any()

    cells = items[items["level"] == "cell"].sort_values("item_id")
    assert cells["model_class"].tolist() == [3, 3, 2, 3, 1]
    assert cells["model_prob"].tolist() == pytest.approx([0.9, 0.55, 0.8, 0.99, 0.6], rel=1e-6)
    assert cells["uncertainty"].tolist() == pytest.approx([0.1, 0.45, 0.2, 0.01, 0.4], rel=1e-5)

    fields = items[items["level"] == "field"].sort_values("field")
    for f, row in zip((0, 1), fields.itertuples()):
        probs = data["tile_prob"][f][tc[f] >= 0]
        counts = np.bincount(tc[f][tc[f] >= 0], minlength=4)
        assert row.model_class == int(np.argmax(counts))
        assert row.model_labels == sorted(set(np.nonzero((probs > 0.5).any(axis=0))[0].tolist()) | {row.model_class})
        assert row.x_max == 1928 and row.y_max == 1208


def test_import_is_idempotent_and_keeps_reviewer_labels(project, image_id, tmp_path):
    store = tmp_path / "s.zarr"
    write_store(store)
    n = project.import_predictions(image_id, store)
    journal_rows = len(project.history())
    table = project.label_table()
    assert project.import_predictions(image_id, store) == n
    assert project.n_items() == n and len(project.history()) == journal_rows
    assert project.label_table().drop(columns="updated_at").equals(table.drop(columns="updated_at"))

    # a new model version changes unreviewed items' labels (journalled) but never a reviewer's label
    target = project.queue()[0]
    model_class = project.item(target).model_class
    mine = (model_class + 1) % 4
    project.set_label(target, mine, "ann")
    store2 = tmp_path / "s2.zarr"
    write_store(store2, seed=7, version="2.0.0")
    assert project.import_predictions(image_id, store2) >= n - 2
    assert project.item(target).label == [mine] and project.item(target).model == "warthin-tiles@2.0.0"
    h = project.history()
    assert (h["source"] == "model:warthin-tiles@2.0.0").sum() > 0
    assert [s.pack_version for s in project.prediction_stores()] \
        == ["1.0.0", "2.0.0"]


def test_pack_classes_map_by_name(project, image_id, tmp_path):
    project.schema.add("Lymphocytes", hotkey="9")  # id 0 here, id 3 in the pack
    assert len(project.schema.classes) == 1  # read (and cached) before the import adds classes
    store = tmp_path / "s.zarr"
    data = write_store(store, cells=False)
    project.import_predictions(image_id, store)
    by_name = {c.name: c.id for c in project.schema.classes}
    assert by_name["Lymphocytes"] == 0 and len(by_name) == 4
    tiles = project.items(level="tile")
    lym_tiles = int((data["tile_class"] == 3).sum())
    assert int((tiles["model_class"] == 0).sum()) == lym_tiles


def test_bad_stores_name_the_key(project, image_id, tmp_path):
    with pytest.raises(ProjectError, match="does not exist"):
        project.import_predictions(image_id, tmp_path / "missing.zarr")
    store = tmp_path / "s.zarr"
    write_store(store)
    g = zarr.open_group(str(store), mode="a")
    del g.attrs["tile_px_level0"]
    with pytest.raises(ProjectError, match="tile_px_level0"):
        project.import_predictions(image_id, store)
    store = tmp_path / "t.zarr"
    write_store(store, cells=False)
    g = zarr.open_group(str(store), mode="a")
    g.attrs["n_fields"] = 3
    with pytest.raises(ProjectError, match="n_fields"):
        project.import_predictions(image_id, store)
    store = tmp_path / "u.zarr"
    write_store(store, image_path="/elsewhere/other_case")
    with pytest.raises(ProjectError, match="was made for"):
        project.import_predictions(image_id, store)
    assert project.n_items() == 0


def test_unsure_field_still_has_its_top_class_as_model_label(project, image_id, tmp_path):
    store = tmp_path / "case_A__warthin-tiles@1.0.0.zarr"
    data = write_store(store, cells=False)
    tc = data["tile_class"]
    flat = np.full(data["tile_prob"].shape, 0.2, dtype=np.float32)  # no class reaches 0.5 anywhere
    f, r, c = np.nonzero(tc >= 0)
    flat[f, r, c, tc[f, r, c]] = 0.4
    flat[tc < 0] = np.nan
    zarr.open_group(str(store), mode="r+")["tile_prob"][...] = flat
    project.import_predictions(image_id, store)
    t = project.label_table()
    fields = t[t["level"] == "field"].sort_values("field")
    names = [c["name"] for c in PACK_CLASSES]
    for fld, row in zip((0, 1), fields.itertuples()):
        top = int(np.argmax(np.bincount(tc[fld][tc[fld] >= 0], minlength=4)))
        assert row.label_ids == [top] and row.model_label == names[top]


@pytest.mark.parametrize("complete", [False, None])
def test_unfinished_store_is_refused_unless_allow_partial(project, image_id, tmp_path, complete):
    store = tmp_path / "case_A__warthin-tiles@1.0.0.zarr"
    data = write_store(store, cells=False)
    g = zarr.open_group(str(store), mode="r+")
    if complete is None:
        del g.attrs["complete"]
    else:
        g.attrs["complete"] = complete
    with pytest.raises(ProjectError, match="unfinished.*allow_partial"):
        project.import_predictions(image_id, store)
    assert project.n_items() == 0
    n = project.import_predictions(image_id, store, allow_partial=True)
    assert n == int((data["tile_class"] >= 0).sum()) + 2
