"""Review queue orders and the per-reviewer cursor."""

from __future__ import annotations

import pytest

from .conftest import write_fieldset

from cytoreview.errors import ProjectError
from cytoreview.review import STRATEGIES


@pytest.fixture
def items(project, image_id):
    for name in ("a", "b", "c"):
        project.schema.add(name)
    #           model_class, uncertainty
    spec = [(0, 0.2), (0, 0.9), (1, 0.5), (2, 0.1), (0, None), (1, 0.7), (2, 0.95)]
    return project.add_items(image_id, [
        {"level": "cell", "geometry": {"type": "point", "y": k, "x": k}, "model": "m@1", "model_class": c,
         "model_prob": 0.5, "uncertainty": u} for k, (c, u) in enumerate(spec)])


def test_uncertainty_order_skips_reviewed(project, items):
    assert project.queue("uncertainty") == [items[i] for i in (6, 1, 5, 2, 0, 3, 4)]
    project.set_label(items[6], 2, "ann")
    assert project.queue()[0] == items[1]
    assert project.queue(limit=2) == [items[1], items[5]]


def test_rare_class_first(project, items):
    # class 2: 2 items, class 1: 2 items, class 0: 3 items; ties by count broken by uncertainty
    assert project.queue("rare") == [items[i] for i in (6, 5, 2, 3, 1, 0, 4)]


def test_random_is_seeded_and_stable(project, items, image_id):
    a = project.queue("random", seed=1)
    assert sorted(a) == sorted(items) and a == project.queue("random", seed=1)
    assert a != project.queue("random", seed=2)
    (extra,) = project.add_items(image_id, [{"level": "cell", "geometry": {"type": "point", "y": 99, "x": 99}}])
    b = project.queue("random", seed=1)
    assert [i for i in b if i != extra] == a  # adding an item does not reshuffle the others


def test_disagreement_first_for_second_reader(project, items):
    project.set_label(items[3], 0, "ann")  # disagrees with the model (2)
    project.set_label(items[0], 0, "ann")  # agrees with the model
    q = project.queue("disagreement", reviewer="bob")
    assert q[0] == items[3]
    assert items[0] in q  # bob has not read it yet
    assert project.queue("disagreement", reviewer="ann")[0] != items[3]  # ann already read it
    with pytest.raises(ProjectError, match="needs a reviewer"):
        project.queue("disagreement")
    with pytest.raises(ProjectError, match="not one of"):
        project.queue("loudest")


def test_filters(project, items, fieldset, tmp_path):
    other_folder = write_fieldset(tmp_path / "case_B", 1)
    other = project.add_image(other_folder, kind="fields", mpp=0.293)
    (o,) = project.add_items(other, [{"level": "tile", "geometry": {"type": "tile", "row": 0, "col": 0,
                                                                    "size_px": 8}, "uncertainty": 1.0}])
    assert project.queue()[0] == o
    assert o not in project.queue(image_id=project.images()[0].id)
    assert project.queue(level="tile") == [o]


def test_next_item_follows_and_persists_cursor(project, items):
    order = project.queue("uncertainty")
    assert project.next_item("ann", "uncertainty") == order[0]
    assert project.next_item("ann") == order[1]  # skipped order[0] without labelling
    project.set_label(order[1], 0, "ann")
    assert project.next_item("ann") == order[2]
    assert project.cursor("ann") == (order[2], "uncertainty")
    assert project.next_item("bob") == order[0]  # bob has his own cursor
    for i in order[3:]:
        project.set_label(i, 0, "ann")
    project.set_label(order[2], 0, "ann")
    assert project.next_item("ann") == order[0]  # wraps round to the skipped item
    project.set_label(order[0], 0, "ann")
    assert project.next_item("ann") is None


def test_fast_uncertainty_path_matches_generic_order(project, items, monkeypatch):
    import importlib

    queue_module = importlib.import_module("cytoreview.review.queue")  # the package re-exports a function "queue"
    project.set_label(items[5], 0, "ann")
    fast = [project.next_item("x", "uncertainty") for _ in range(8)]
    monkeypatch.setattr(queue_module, "STRATEGIES", (*queue_module.STRATEGIES, "uncertainty2"))
    # the generic path, run under another name, must give the same walk
    real = queue_module._ordered

    def ordered(project, strategy, *a):
        return real(project, "uncertainty" if strategy == "uncertainty2" else strategy, *a)

    monkeypatch.setattr(queue_module, "_ordered", ordered)
    generic = [project.next_item("y", "uncertainty2") for _ in range(8)]
    assert fast == generic
    assert fast[:6] == [items[i] for i in (6, 1, 2, 0, 3, 4)] and fast[6] == items[6]


def test_suspicion_puts_fields_with_most_of_the_rare_class_first(project, image_id):
    for name in ("background", "benign", "atypical"):
        project.schema.add(name)
    # field 0: 4 background tiles; field 1: 1 atypical of 4; field 2: 2 atypical of 4 (atypical = rarest: 3 tiles)
    calls = {0: [0, 0, 0, 0], 1: [2, 1, 1, 0], 2: [2, 2, 1, 1]}
    tiles = [{"level": "tile", "field": f, "geometry": {"type": "tile", "row": 0, "col": c, "size_px": 64},
              "model": "m@1", "model_class": k, "uncertainty": 0.1 * c} for f, ks in calls.items()
             for c, k in enumerate(ks)]
    project.add_items(image_id, tiles)
    fields = project.add_items(image_id, [{"level": "field", "field": f, "model": "m@1", "model_labels": [0],
                                           "uncertainty": u} for f, u in ((0, 0.9), (1, 0.2), (2, 0.1))])
    rows = project.field_suspicion(image_id)
    assert [(r.field, r.rare_share, r.item_id) for r in rows] == [(2, 0.5, fields[2]), (1, 0.25, fields[1]),
                                                                  (0, 0.0, fields[0])]
    assert rows[0].suspicion == pytest.approx(0.6)
    assert project.queue("suspicion", level="field") == [fields[2], fields[1], fields[0]]
    assert project.queue("uncertainty", level="field") == [fields[0], fields[1], fields[2]]
    tile_queue = project.queue("suspicion", level="tile")
    assert [project.item(i).field for i in tile_queue] == [2] * 4 + [1] * 4 + [0] * 4  # tiles follow their field
    project.set_label(fields[2], [2], "ann")
    assert project.next_item("ann", "suspicion", level="field") == fields[1]
    assert "suspicion" in STRATEGIES


def test_a_limited_uncertainty_queue_is_the_head_of_the_full_one(project, items, image_id):
    more = project.add_items(image_id, [  # ties (broken by id) and missing uncertainties (last)
        {"level": "cell", "geometry": {"type": "point", "y": 50 + k, "x": 7}, "model": "m@1", "model_class": 0,
         "model_prob": 0.5, "uncertainty": u} for k, u in enumerate([0.5, 0.9, None, 0.5, 0.0, -0.0])])
    project.set_label(items[1], 0, "ann")
    project.set_label(more[3], 1, "bob")
    for kwargs in ({}, {"own_only": True, "reviewer": "ann"}, {"own_only": True, "reviewer": "bob"},
                   {"level": "cell", "image_id": image_id}, {"level": "tile"}):
        full = project.queue("uncertainty", **kwargs)
        for limit in (0, 1, 3, 5, 100):
            assert project.queue("uncertainty", limit=limit, **kwargs) == full[:limit], (kwargs, limit)
    with pytest.raises(ProjectError, match="needs a reviewer"):
        project.queue("uncertainty", own_only=True, limit=3)
