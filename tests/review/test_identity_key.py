"""The items identity key (schema 3): a stable 64-bit digest of the canonical geometry, confirmed on the text, so
that re-imports find the same items and colliding keys never merge two items, on every write path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cytoreview.review import Project
from cytoreview.review import geometry as geom
from cytoreview.review import items as store_items


def _cells(cls, n, y0=0):
    return [{"level": "cell", "geometry": {"type": "point", "y": y0 + k, "x": 2 * k + 0.5}, "model": "m@1",
             "model_class": cls, "model_prob": 0.5 + k / (4 * n), "uncertainty": 0.5 - k / (4 * n)}
            for k in range(n)]


@pytest.fixture
def proj(tmp_path):
    (tmp_path / "slide.tif").write_bytes(b"")
    with Project.open(tmp_path / "p", create=True) as p:
        img = p.add_image(tmp_path / "slide.tif", kind="wsi", mpp=0.5, plane_shape=(5000, 5000))
        yield p, img, p.schema.add("lymphocyte").id


def test_the_key_is_a_stable_digest_not_pythons_salted_hash():
    text = '{"type":"point","x":1.5,"y":2}'
    script = f"from cytoreview.review.geometry import identity_key; print(identity_key({text!r}))"
    runs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": seed, "PYTHONPATH": ":".join(sys.path)}).stdout.strip()
            for seed in ("1", "2")}
    assert runs == {str(geom.identity_key(text))}
    assert geom.identity_key(text) == -3835172228707636176  # fixed forever: projects on disk hold these keys
    assert -(2**63) <= geom.identity_key(text) < 2**63 and geom.next_key(2**63 - 1) == -(2**63)


_COLLISIONS = {
    "all": lambda texts: [2**63 - 2] * len(texts),  # every geometry collides, and the probes wrap round
    "some": lambda texts: [len(t) for t in texts],  # geometries of one text length collide
}


@pytest.mark.parametrize("how", sorted(_COLLISIONS))
@pytest.mark.parametrize("path", ["one by one", "preloaded", "bulk", "bulk reindexed"])
def test_colliding_keys_keep_every_item_and_reimport_finds_each(proj, monkeypatch, path, how):
    p, img, cls = proj
    monkeypatch.setattr(geom, "identity_keys", _COLLISIONS[how])
    if path == "bulk reindexed":
        monkeypatch.setattr(store_items, "REINDEX_MIN_ITEMS", 50)
        monkeypatch.setattr(store_items, "CHUNK_ITEMS", 40)
    items = _cells(cls, 120)
    if path == "one by one":
        ids = [p.add_items(img, [item])[0] for item in items]
    elif path == "preloaded":
        first = p.add_items(img, items[:1])
        ids = first + p.add_items(img, items[1:])
    else:
        ids = p.add_items(img, items)
    assert len(set(ids)) == 120 and p.n_items() == 120
    stored = p.items()
    assert [g["y"] for g in stored["geometry"]] == list(range(120))
    keys = [r[0] for r in p.db.connection().execute("SELECT geometry_key FROM items ORDER BY id")]
    assert len(set(keys)) == 120
    for item, iid in zip(items[::11], ids[::11]):
        assert store_items.find_item(p.db, img, "cell", item["geometry"]) == iid
    assert store_items.find_item(p.db, img, "cell", {"type": "point", "y": 4999, "x": 1}) is None
    # adding them all again (bulk and one by one) finds the same items and changes none
    p.set_label(ids[5], cls, "ana")
    assert p.add_items(img, items) == ids and p.add_items(img, [items[7]]) == [ids[7]]
    changed = [dict(item, model_prob=0.01) for item in items[:70]]
    assert p.add_items(img, changed) == ids[:70] and p.n_items() == 120
    assert abs(p.item(ids[69]).model_prob - 0.01) < 1e-12 and p.item(ids[5]).reviewed
    assert p.verify_journal().ok
    assert p.db.connection().execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize("fast", [True, False], ids=["columns", "item by item"])
def test_a_bulk_import_repeating_an_item_across_chunks_finds_it_without_the_index(proj, monkeypatch, fast):
    p, img, cls = proj
    monkeypatch.setattr(store_items, "REINDEX_MIN_ITEMS", 100)
    monkeypatch.setattr(store_items, "CHUNK_ITEMS", 100)
    if not fast:
        monkeypatch.setattr(store_items._Batch, "cell_point_rows", lambda self, chunk: None)
    passes = []
    insert_chunks = store_items._insert_chunks
    monkeypatch.setattr(store_items, "_insert_chunks",
                        lambda ctx, items, indexed: passes.append(indexed) or insert_chunks(ctx, items, indexed))
    items = _cells(cls, 250)
    items.append(dict(items[3], model_prob=0.01))  # chunk 3 repeats an item of chunk 1
    items.insert(150, dict(items[120], model_prob=0.02))  # and chunk 2 one of its own
    ids = p.add_items(img, items)
    assert ids[-1] == ids[3] and ids[150] == ids[120] and len(set(ids)) == 250 and p.n_items() == 250
    assert abs(p.item(ids[3]).model_prob - 0.01) < 1e-12 and abs(p.item(ids[120]).model_prob - 0.02) < 1e-12
    assert sorted(set(p.history()["item_id"])) == sorted(set(ids)) and p.verify_journal().ok
    names = {r[0] for r in p.db.connection().execute("SELECT name FROM sqlite_master WHERE tbl_name='items' "
                                                     "AND type='index'")}
    assert {"items_identity", "items_queue", "items_progress"} <= names
    assert passes == [False]  # one pass with the indexes dropped: nothing had to be redone


def test_a_rebuilt_identity_index_that_finds_a_repeat_redoes_the_import_with_the_indexes(proj, monkeypatch):
    """The safety net: should the bulk path ever store one key twice, the import is redone with the indexes."""
    p, img, cls = proj
    monkeypatch.setattr(store_items, "REINDEX_MIN_ITEMS", 100)
    monkeypatch.setattr(store_items, "CHUNK_ITEMS", 100)
    monkeypatch.setattr(store_items._KeyRegistry, "hits", lambda self, keys: np.zeros(len(keys), dtype=bool))
    items = _cells(cls, 250)
    items.append(dict(items[3], model_prob=0.01))
    ids = p.add_items(img, items)
    assert ids[-1] == ids[3] and len(set(ids)) == 250 and p.n_items() == 250 and p.verify_journal().ok
    assert abs(p.item(ids[3]).model_prob - 0.01) < 1e-12


def test_a_repeated_item_inside_a_reindexed_chunk_updates_it_by_id(proj, monkeypatch):
    p, img, cls = proj
    monkeypatch.setattr(store_items, "REINDEX_MIN_ITEMS", 100)
    items = _cells(cls, 300)
    items.insert(200, dict(items[7], model_prob=0.01))
    ids = p.add_items(img, items)
    assert ids[200] == ids[7] and len(set(ids)) == 300 and abs(p.item(ids[7]).model_prob - 0.01) < 1e-12
    assert p.verify_journal().ok
