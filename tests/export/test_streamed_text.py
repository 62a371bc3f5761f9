"""GeoJSON features and COCO annotations written straight as text are the text ``json.dumps`` gives for their dicts
(cells take a formatted fast path; everything else is an encoded dict)."""

from __future__ import annotations

import json

import numpy as np

from cytoreview.export.coco import _Coco
from cytoreview.export.geojson import _Features
from cytoreview.export.images import ImageSource
from cytoreview.export.table import attach_geometries, class_colors, class_order, validate_table


def _awkward(table):
    table = table.copy()
    cells = table.index[table["level"] == "cell"]
    table.loc[cells[0], "reviewer"] = None
    table.loc[cells[1], "confidence"] = np.nan
    table.loc[cells[2], "source"] = 'Dr. Müller "x" },{'  # quotes, braces and non-ASCII inside a value
    table.at[cells[3], "labels"] = ["lymphocytes", "tumour"]
    table.at[cells[3], "label_ids"] = [3, 4]
    table["split"] = np.where(np.arange(len(table)) % 2, "train", None)
    table = table[table["labels"].map(len) > 0]
    return attach_geometries(validate_table(table))


def _dumps(value):
    return json.dumps(value, separators=(",", ":"))


def test_geojson_feature_text_is_the_json_of_its_feature(table):
    data = _awkward(table)
    palette = class_colors([name for _, name in class_order(data)], {})
    features = _Features(data, palette, "point", 10.0)
    texts = [features.text(i) for i in range(len(data))]
    assert texts == [_dumps(features.feature(i)) for i in range(len(data))]
    assert sum(json.loads(t)["geometry"]["type"] == "Point" for t in texts) == (data["level"] == "cell").sum()


def test_coco_annotation_text_is_the_json_of_its_annotation(table, images):
    data = _awkward(table)
    with ImageSource(images) as source:
        coco = _Coco(data, source, include_paths=True)
        for subset in (None, {coco.images[0]["id"]}):
            texts = list(coco.annotation_texts(subset, chunk=3))
            assert texts == [_dumps(a) for a in coco.annotations(subset, chunk=3)]
            assert texts
