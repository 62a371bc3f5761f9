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
