"""The column-at-a-time path of a bulk import of cell points gives exactly the rows, journal and errors of the
item-by-item path."""

from __future__ import annotations

import math

import pytest

from cytoreview.errors import ProjectError
from cytoreview.review import Project
from cytoreview.review import items as store_items


def _project(folder, slide):
    p = Project.open(folder, create=True)
    img = p.add_image(slide, kind="wsi", mpp=0.5, plane_shape=(50000, 50000))
    a, b = p.schema.add("lymphocyte").id, p.schema.add("neutrophil").id
    return p, img, a, b


def _cells(a, b, n):
    out = []
    for k in range(n):
        y = [k, k + 0.5, k / 7, 1e-4 * k, 2.0005 + k, k + 0.99999999, -0.0 if k == 0 else k * 1.0][k % 7]
        out.append({"level": "cell", "geometry": {"type": "point", "y": y, "x": 40000 - k / 3},
                    "model": ["m@1", "m@2"][k % 2], "model_class": [a, b, None][k % 3],
                    "model_prob": [0.25, None, 1][k % 3], "uncertainty": [0.75, None, 0][k % 3],
                    **({"field": 1, "z": 2} if k % 5 == 0 else {})})
    return out


def _state(p):
    items = p.items().drop(columns=["updated_at"])
    journal = p.history().drop(columns=["timestamp"])
    keys = p.db.connection().execute("SELECT id, geometry_key FROM items ORDER BY id").fetchall()
    return items.to_json(orient="records", double_precision=15), journal.to_json(orient="records",
                                                                                 double_precision=15), keys


@pytest.mark.parametrize("reindexed", [False, True])
def test_columns_and_items_give_the_same_project(tmp_path, monkeypatch, reindexed):
    slide = tmp_path / "slide.tif"
    slide.write_bytes(b"")
    monkeypatch.setattr(store_items, "CHUNK_ITEMS", 300)
    if reindexed:
        monkeypatch.setattr(store_items, "REINDEX_MIN_ITEMS", 500)
    calls = []
    fast = store_items._Batch.cell_point_rows

    def spy(self, chunk):
        out = fast(self, chunk)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(store_items._Batch, "cell_point_rows", spy)
    p, img, a, b = _project(tmp_path / "fast", slide)
    with p:
        ids_fast = p.add_items(img, _cells(a, b, 1000))
        fast_state = _state(p)
    assert calls == [True] * 4  # every chunk went column by column
    monkeypatch.setattr(store_items._Batch, "cell_point_rows", lambda self, chunk: None)
    p, img, a, b = _project(tmp_path / "slow", slide)
    with p:
        assert p.add_items(img, _cells(a, b, 1000)) == ids_fast
        assert _state(p) == fast_state
        assert p.verify_journal().ok


@pytest.mark.parametrize("bad, match", [
    ({"geometry": {"type": "point", "y": math.inf, "x": 1.0}}, "not finite"),
    ({"geometry": {"type": "point", "y": "a", "x": 1.0}}, "not a number"),
    ({"geometry": {"type": "point", "x": 1.0}}, "needs 'y' and 'x'"),
    ({"model_class": 99}, "99 is not in the label schema"),
    ({"level": "tile"}, "cannot have point geometry"),
    ({"level": "nucleus"}, "level 'nucleus'"),
    ({"field": "one"}, "field 'one' and z 0 must be integers"),
    ({"model_prob": "high"}, "model_prob 'high'"),
    ({"model_class": [1]}, "model_class"),
], ids=["inf", "text", "no-x", "class", "level", "unknown-level", "field", "prob", "class-list"])
def test_a_bad_cell_among_good_ones_is_named_and_nothing_is_written(tmp_path, bad, match):
    """Each chunk is checked a column at a time; one bad item sends it item by item, which names the item."""
    slide = tmp_path / "slide.tif"
    slide.write_bytes(b"")
    p, img, a, b = _project(tmp_path / "p", slide)
    with p:
        items = _cells(a, b, 300)
        items[123] = {**items[123], **bad}
        with pytest.raises(ProjectError, match=match) as info:
            p.add_items(img, items)
        assert str(info.value).startswith("item 123: ") and "\n" not in str(info.value)
        assert p.n_items() == 0 and p.history().empty
