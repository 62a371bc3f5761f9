"""The label-table helpers that work a column at a time (geometry parsing, list columns, class order) give what the
row-by-row rules give: the same dicts and types, the same errors naming the same first bad item."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cytoreview.errors import ExportError
from cytoreview.export.table import class_order, geometries, parse_geometry, validate_table


def test_point_geometries_are_what_parse_geometry_gives():
    rng = np.random.default_rng(0)
    xs = rng.uniform(-4e4, 4e4, 3000).tolist()
    texts = [json.dumps({"type": "point", "x": round(x, 3), "y": round(x / 3, 1)}, separators=(",", ":"))
             for x in xs]
    texts += [
        '{"type":"point","x":1,"y":2}', '{"type":"point","x":-0,"y":1e5}', '{"type":"point","x":-0.0,"y":7.0}',
        '{"type":"point","x":12.34567,"y":2}',  # needs rounding: left to parse_geometry
        '{"type":"point","x":9007199254740994.0,"y":1e300}', '{"type":"point","x":5e-324,"y":0.0005}',
        '{"type":"point","y":1,"x":2}', '{"type": "point", "x": 3, "y": 4}',  # other key order, spaces
        '{"type":"tile","row":1,"col":2,"size_px":256}', '{"type":"polygon","coords":[[0,0],[0,5],[5,5.5]]}',
        '{"type":"field"}',
    ]
    for column in (texts, pd.Series(texts, dtype="string"), pd.Series(texts, dtype=object)):
        table = pd.DataFrame({"geometry": column, "item_id": range(len(texts))})
        got = geometries(table)
        want = [parse_geometry(t, i) for i, t in enumerate(texts)]
        assert got == want
        assert [json.dumps(g) for g in got] == [json.dumps(g) for g in want]  # ints stay ints, floats floats
    mixed = pd.DataFrame({"geometry": [texts[0], {"type": "point", "x": 1.5, "y": 2}], "item_id": [1, 2]})
    assert geometries(mixed)[1] == {"type": "point", "y": 2, "x": 1.5}


@pytest.mark.parametrize("bad, message", [
    ('{"type":"point","x":1.2.3,"y":2}', "item 7: .*not valid JSON"),
    ('{"type":"point","x":1e999,"y":2}', "item 7: .*not finite"),
])
def test_bad_point_text_names_its_item(bad, message):
    table = pd.DataFrame({"geometry": ['{"type":"point","x":1,"y":2}', bad], "item_id": [3, 7]})
    with pytest.raises(ExportError, match=message):
        geometries(table)


def _table(labels, label_ids):
    n = len(labels)
    return pd.DataFrame({
        "item_id": np.arange(1, n + 1), "image_id": 1, "image_path": "/x.tif", "case_id": "A", "level": "cell",
        "field": 0, "z": 0, "x_min": 1.0, "y_min": 1.0, "x_max": 1.0, "y_max": 1.0,
        "geometry": '{"type":"point","x":1,"y":1}', "labels": labels, "label_ids": label_ids,
        "model_label": None, "confidence": 0.5, "source": "reviewer", "reviewer": "ana", "model": "m@1",
        "mpp": 0.5, "reviewed": True, "corrected": False, "unsure": False, "updated_at": "2026-12-02",
    })


def test_shared_label_lists_are_read_once_and_errors_name_the_first_bad_item():
    a, b = ["a"], ["b", "c"]
    table = _table([a, b, a, "b|c", None, b], [[0], [1, 2], [0], "[1, 2]", [], [1, 2]])
    data = validate_table(table)
    assert data["labels"].tolist() == [["a"], ["b", "c"], ["a"], ["b", "c"], [], ["b", "c"]]
    assert data["label_ids"].tolist() == [[0], [1, 2], [0], [1, 2], [], [1, 2]]
    assert class_order(data) == [(0, "a"), (1, "b"), (2, "c")]
    bad = [1, "x"]
    with pytest.raises(ExportError, match="item 3: column 'label_ids' has a bad value"):
        validate_table(_table([a, a, a, a], [[0], [0], bad, bad]))
    with pytest.raises(ExportError, match="item 2: labels"):
        class_order(validate_table(_table([a, b, b], [[0], [1], [1]])))
    with pytest.raises(ExportError, match="class 'a' has two ids"):
        class_order(validate_table(_table([a, a, ["a"]], [[0], [0], [5]])))
