"""Bulk add_items: new rows of a large batch are inserted together; ids, duplicates and the journal stay right."""

from __future__ import annotations

from cytoreview.review import Project


def test_a_large_batch_returns_the_ids_of_its_items_in_order_and_journals_model_calls(tmp_path):
    with Project.open(tmp_path / "p", create=True) as p:
        (tmp_path / "slide.tif").write_bytes(b"")
        img = p.add_image(tmp_path / "slide.tif", kind="wsi", mpp=0.5, plane_shape=(1000, 1000))
        cls = p.schema.add("lymphocyte")
        items = [{"level": "cell", "geometry": {"type": "point", "y": float(i), "x": float(2 * i)},
                  "model": "m@1", "model_class": cls.id, "model_prob": 0.5 + i / 1000} for i in range(300)]
        items.insert(150, dict(items[10], model_prob=0.99))  # the same cell twice in one batch: one item, updated
        ids = p.add_items(img, items)
        assert len(ids) == 301 and len(set(ids)) == 300 and ids[150] == ids[10]
        for iid, item in zip(ids, items):
            got = p.item(iid)
            assert (got.geometry["x"], got.geometry["y"]) == (item["geometry"]["x"], item["geometry"]["y"])
        assert abs(p.item(ids[10]).model_prob - 0.99) < 1e-9
        history = p.history()
        assert len(history) == 300 and set(history["item_id"]) == set(ids)
        again = p.add_items(img, items[:5])  # re-adding finds the same items
        assert again == ids[:5] and len(p.history()) == 300


def _cells(cls_id, n, *, model="m@1", start=0):
    return [{"level": "cell", "geometry": {"type": "point", "y": float(i) + 0.25, "x": float(2 * i)},
             "model": model, "model_class": cls_id, "model_prob": 0.5 + i / (4 * n),
             "uncertainty": 0.5 - i / (4 * n)} for i in range(start, start + n)]


def test_a_bulk_import_is_one_chained_batch_row_that_history_shows_per_item(tmp_path, monkeypatch):
    from cytoreview.review import items as store_items
    from cytoreview.review import journal

    monkeypatch.setattr(store_items, "CHUNK_ITEMS", 128)  # three chunks: 128 + 128 + 44
    with Project.open(tmp_path / "p", create=True) as p:
        (tmp_path / "slide.tif").write_bytes(b"")
        img = p.add_image(tmp_path / "slide.tif", kind="wsi", mpp=0.5, plane_shape=(1000, 1000))
        a, b = p.schema.add("lymphocyte").id, p.schema.add("macrophage").id
        items = _cells(a, 300)
        for k in range(0, 300, 7):
            items[k]["model_class"] = b
        items[299].pop("model_class")  # no model call: an item, but no journal row
        ids = p.add_items(img, items)
        assert ids == list(range(1, 301))
        rows = p.db.connection().execute("SELECT id, item_id, action, new FROM journal ORDER BY id").fetchall()
        # one batch row per chunk; the last chunk's 43 model calls are fewer than BATCH_MIN_ITEMS: a row each
        assert [(r[1], r[2], r[3]) for r in rows[:2]] == [(1, "import", None), (129, "import", None)]
        assert [r[1] for r in rows[2:]] == list(range(257, 300)) and all(r[3] is not None for r in rows[2:])
        batch = journal.batch_of(journal.entry(p.db, rows[0][0]).prev)
        assert (batch["first"], batch["last"]) == (1, 128)
        h = p.history()
        assert h["item_id"].tolist() == ids[:299] and set(h["action"]) == {"import"}
        assert h["new"].tolist() == [[b] if k % 7 == 0 else [a] for k in range(299)]
        assert h["source"].eq("model:m@1").all() and h["reviewer"].isna().all()
        assert abs(h["probability"].iloc[200] - items[200]["model_prob"]) < 1e-12
        assert p.item(ids[5]).label == [a] and p.item(ids[299]).label is None
        one = p.history(ids[200])
        assert one["journal_id"].tolist() == [rows[1][0]] and one["new"].tolist() == [[a]]
        assert p.history(ids[299]).empty
        p.set_label(ids[200], b, "ana")
        assert p.history(ids[200])["action"].tolist() == ["import", "set"]
        assert p.verify_journal().ok
        assert p.add_items(img, items) == ids and len(p.history()) == 300  # re-import: nothing new


def test_a_batch_row_edited_behind_the_triggers_back_is_named_by_verify(tmp_path):
    with Project.open(tmp_path / "p", create=True) as p:
        (tmp_path / "slide.tif").write_bytes(b"")
        img = p.add_image(tmp_path / "slide.tif", kind="wsi", mpp=0.5, plane_shape=(1000, 1000))
        p.add_items(img, _cells(p.schema.add("lymphocyte").id, 200))
        con = p.db.connection()
        prev = con.execute("SELECT prev FROM journal WHERE id=1").fetchone()[0]
        trigger = con.execute("SELECT sql FROM sqlite_master WHERE name='journal_no_update'").fetchone()
        con.execute("DROP TRIGGER journal_no_update")
        con.execute("UPDATE journal SET prev=? WHERE id=1", (prev.replace('"label":[0,', '"label":[1,'),))
        con.execute(trigger[0])  # put back: only the row's hash can tell
        check = p.verify_journal()
        assert not check.ok and check.bad_row == 1


def test_an_item_met_again_in_a_later_chunk_falls_back_and_updates_it(tmp_path, monkeypatch):
    from cytoreview.review import items as store_items

    monkeypatch.setattr(store_items, "CHUNK_ITEMS", 100)
    with Project.open(tmp_path / "p", create=True) as p:
        (tmp_path / "slide.tif").write_bytes(b"")
        img = p.add_image(tmp_path / "slide.tif", kind="wsi", mpp=0.5, plane_shape=(1000, 1000))
        cls = p.schema.add("lymphocyte").id
        items = _cells(cls, 250)
        items.append(dict(items[3], model_prob=0.01))  # chunk 3 repeats an item of chunk 1
        ids = p.add_items(img, items)
        assert ids[-1] == ids[3] and len(set(ids)) == 250 and p.n_items() == 250
        assert abs(p.item(ids[3]).model_prob - 0.01) < 1e-12
        assert sorted(p.history()["item_id"]) == sorted(set(ids)) and p.verify_journal().ok


def test_a_bad_item_deep_in_a_bulk_call_is_named_and_nothing_is_written(tmp_path):
    import pytest

    from cytoreview.errors import ProjectError

    with Project.open(tmp_path / "p", create=True) as p:
        (tmp_path / "slide.tif").write_bytes(b"")
        img = p.add_image(tmp_path / "slide.tif", kind="wsi", mpp=0.5, plane_shape=(1000, 1000))
        items = _cells(p.schema.add("lymphocyte").id, 200)
        items[170]["geometry"] = {"type": "point", "y": float("nan"), "x": 1.0}
        with pytest.raises(ProjectError, match="not finite"):
            p.add_items(img, items)
        assert p.n_items() == 0 and p.history().empty


def _index_sql(p):
    return sorted(p.db.connection().execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='items'").fetchall())


def test_a_bulk_insert_that_rebuilds_the_indexes_leaves_them_as_they_were_and_in_use(tmp_path, monkeypatch):
    import pytest

    from cytoreview.errors import ProjectError
    from cytoreview.review import items as store_items

    monkeypatch.setattr(store_items, "REINDEX_MIN_ITEMS", 100)
    with Project.open(tmp_path / "p", create=True) as p:
        (tmp_path / "slide.tif").write_bytes(b"")
        img = p.add_image(tmp_path / "slide.tif", kind="wsi", mpp=0.5, plane_shape=(1000, 1000))
        cls = p.schema.add("lymphocyte").id
        before = _index_sql(p)
        bad = _cells(cls, 300)
        bad[299]["model_class"] = 99  # not in the schema: refused after the indexes were dropped
        with pytest.raises(ProjectError, match="99"):
            p.add_items(img, bad)
        assert _index_sql(p) == before and p.n_items() == 0
        ids = p.add_items(img, _cells(cls, 300))
        assert _index_sql(p) == before and p.n_items() == 300
        assert p.db.connection().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert p.queue("uncertainty", limit=3) == ids[:3] and p.next_item("ana") == ids[0]


def test_a_repeated_item_inside_a_chunk_keeps_the_rest_of_the_call_on_the_bulk_path(tmp_path):
    with Project.open(tmp_path / "p", create=True) as p:
        (tmp_path / "slide.tif").write_bytes(b"")
        img = p.add_image(tmp_path / "slide.tif", kind="wsi", mpp=0.5, plane_shape=(1000, 1000))
        cls = p.schema.add("lymphocyte").id
        items = _cells(cls, 400)
        items.insert(100, dict(items[7], model_prob=0.01))  # the same cell again, 93 items later
        ids = p.add_items(img, items)
        assert ids[100] == ids[7] and len(set(ids)) == 400 and abs(p.item(ids[7]).model_prob - 0.01) < 1e-12
        rows = p.db.connection().execute("SELECT item_id, new FROM journal ORDER BY id").fetchall()
        assert [r for r in rows if r[1] is None] == [(1, None), (101, None)]  # two batch rows, nothing per item
        assert len(rows) == 2 and sorted(p.history()["item_id"]) == list(range(1, 401)) and p.verify_journal().ok
