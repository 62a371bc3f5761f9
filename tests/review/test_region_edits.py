"""Deleting and reshaping regions, without Qt: journalled, undoable, and left out of measurements and every export
(GeoJSON, COCO, masks) once deleted; a reshaped region is measured and exported with its new outline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cytoreview.errors import ProjectError
from cytoreview.export.api import export_project
from cytoreview.review import edits
from cytoreview.review.measure import measure
from cytoreview.review.schema import NOT_A_REGION

SQUARE = [[0, 0], [0, 300], [300, 300], [300, 0]]  # y, x level-0 px
WIDE = [[0, 0], [0, 600], [300, 600], [300, 0]]
OTHER = [[500, 500], [500, 700], [700, 700], [700, 500]]


@pytest.fixture
def tumour(project):
    return project.schema.add("tumour area", color="#c03030", level="region").id


def test_deleting_a_region_keeps_it_as_not_a_region_and_undo_restores_it(project, image_id, tumour):
    iid = edits.add_region(project, image_id, 0, SQUARE, tumour, "ann")
    n = len(project.history())
    nar = edits.delete_regions(project, [iid], "ann")
    assert project.schema.get(nar).name == NOT_A_REGION and project.item(iid).label == [nar]
    assert len(project.history()) == n + 1  # journalled, the item stays
    assert not edits.is_live_region(project.item(iid).label, nar)
    assert edits.delete_regions(project, [iid], "ann") == nar and len(project.history()) == n + 1  # no-op
    project.undo("ann")
    assert project.item(iid).label == [tumour] and edits.is_live_region([tumour], nar)
    cell = project.add_items(image_id, [{"level": "cell", "field": 0, "geometry": {"type": "point", "y": 1, "x": 1}}])
    with pytest.raises(ProjectError, match="not a region"):
        edits.delete_regions(project, cell, "ann")


def test_reshaping_is_a_delete_plus_a_region_of_the_same_class(project, image_id, tumour):
    iid = edits.add_region(project, image_id, 1, SQUARE, tumour, "ann")
    assert edits.reshape_region(project, iid, SQUARE, "ann") == iid  # the same outline: nothing happens
    n = len(project.history())
    new = edits.reshape_region(project, iid, WIDE, "ann")
    assert new != iid and len(project.history()) == n + 2
    item = project.item(new)
    assert item.label == [tumour] and item.field == 1 and item.geometry["coords"] == [[float(y), float(x)]
                                                                                   for y, x in WIDE]
    assert project.item(iid).label == [edits.not_a_region_id(project, create=False)]
    with pytest.raises(ProjectError, match="at least 3 vertices"):
        edits.reshape_region(project, new, [[0, 0], [1, 1]], "ann")
    project.undo("ann")  # one edit: the new outline's label goes and the old one comes back, in one undo
    assert project.item(new).label is None and project.item(iid).label == [tumour]
    assert not edits.is_live_region(project.item(new).label, None)


def test_measure_and_exports_skip_deleted_regions_and_use_reshaped_outlines(project, image_id, tumour, tmp_path):
    kept = edits.add_region(project, image_id, 0, SQUARE, tumour, "ann")
    gone = edits.add_region(project, image_id, 0, OTHER, tumour, "ann")
    undone = edits.add_region(project, image_id, 1, OTHER, tumour, "ann")
    project.undo("ann")  # the last drawing is taken back: no label, no region
    reshaped = edits.reshape_region(project, kept, WIDE, "ann")
    edits.delete_regions(project, [gone], "ann")

    table = measure(project)
    regions = table[table["region_id"].notna()]
    assert regions["region_id"].astype(int).tolist() == [reshaped]
    assert regions.iloc[0]["area_mm2"] == pytest.approx(300 * 600 * 0.293**2 / 1e6)
    assert {kept, gone, undone}.isdisjoint(regions["region_id"].astype(int))

    out = tmp_path / "export"
    written = export_project(project, out, formats="csv,geojson,coco,mask", select="reviewed")
    summary = json.loads(written["summary"].read_text())
    assert summary["filter"]["n_deleted_regions"] == 2 and summary["filter"]["n_out"] == 1
    import pandas as pd

    csv = pd.read_csv(written["csv"])
    assert csv["label"].tolist() == ["tumour area"] and NOT_A_REGION not in set(csv["label"])
    features = [f for p in sorted((out / "geojson").glob("*.geojson")) for f in json.loads(p.read_text())["features"]]
    assert len(features) == 1 and features[0]["properties"]["classification"]["name"] == "tumour area"
    ring = np.asarray(features[0]["geometry"]["coordinates"][0])
    assert ring[:, 0].max() == pytest.approx(600) and ring[:, 1].max() == pytest.approx(300)  # x, y: the new outline
    from pycocotools.coco import COCO

    coco = COCO(str(out / "coco" / "instances.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == 1 and anns[0]["area"] == pytest.approx(300 * 600)
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["tumour area"]
    import tifffile

    classes = json.loads((out / "masks" / "classes.json").read_text())
    masks = {p.name: tifffile.imread(p) for p in sorted((out / "masks").glob("*.tif"))}
    assert NOT_A_REGION not in json.dumps(classes)
    painted = sum(int((m > 0).sum()) for m in masks.values())
    assert 300 * 600 <= painted <= 301 * 601  # only the reshaped outline (its boundary pixels included) ...
    assert all((np.asarray(m)[..., 510:690, 510:690] == 0).all() for m in masks.values())  # ... not the others
