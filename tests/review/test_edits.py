"""What overlay edits mean, without Qt: painting tiles, adding / deleting / moving cells, toggling field classes."""

from __future__ import annotations

import pytest

from cytoreview.errors import ProjectError
from cytoreview.review import NOT_A_CELL, UNSURE, edits

TILE_PX = 64


@pytest.fixture
def classes(project):
    return [project.schema.add(name, level=level).id
            for name, level in (("benign", "tile"), ("malignant", "tile"), ("lymphocyte", "cell"))]


@pytest.fixture
def tiles(project, image_id, classes):
    return project.add_items(image_id, [
        {"level": "tile", "field": 0, "geometry": {"type": "tile", "row": 0, "col": c, "size_px": TILE_PX},
         "model": "toy@1", "model_class": 0, "model_prob": 0.8, "uncertainty": 0.2} for c in range(3)])


@pytest.fixture
def cells(project, image_id, classes):
    return project.add_items(image_id, [
        {"level": "cell", "field": 1, "geometry": {"type": "point", "y": 10.0 * k, "x": 5.0}, "model": "toy@1",
         "model_class": classes[2], "model_prob": 0.9} for k in range(3)])


def test_painting_labels_tiles_and_makes_missing_ones(project, image_id, tiles, classes):
    paints = [edits.TilePaint(0, 0, 1, classes[1]),  # a known tile, found by its geometry
              edits.TilePaint(0, 0, 2, classes[1], item_id=tiles[2]),  # a known tile, id given
              edits.TilePaint(2, 4, 4, classes[0])]  # no item there yet
    result = edits.paint_tiles(project, image_id, TILE_PX, paints, "ann", dwell_s=1.0)
    assert result.reverted == []
    ids = [iid for _, iid in result.labelled]
    assert ids[:2] == [tiles[1], tiles[2]] and ids[2] not in tiles
    assert [project.item(i).label for i in ids] == [[classes[1]], [classes[1]], [classes[0]]]
    made = project.item(ids[2])
    assert (made.field, made.geometry, made.model, made.reviewer) == (
        2, {"type": "tile", "row": 4, "col": 4, "size_px": TILE_PX}, None, "ann")
    assert project.item(tiles[1]).model == "toy@1"  # painting never touches the model's call
    assert project.history(tiles[1])["action"].tolist() == ["import", "set"]


def test_erasing_a_tile_reverts_it(project, image_id, tiles, classes):
    edits.paint_tiles(project, image_id, TILE_PX, [edits.TilePaint(0, 0, 0, classes[1])], "ann")
    n = len(project.history())
    result = edits.paint_tiles(project, image_id, TILE_PX, [edits.TilePaint(0, 0, 0, None, item_id=tiles[0]),
                                                            edits.TilePaint(0, 0, 1, None)], "ann")
    assert result.labelled == [] and [(p.row, p.col) for p in result.reverted] == [(0, 0), (0, 1)]
    assert project.item(tiles[0]).label == [classes[1]] and project.item(tiles[1]).label == [0]
    assert len(project.history()) == n  # nothing journalled


def test_deleting_a_cell_keeps_it_as_not_a_cell(project, cells):
    assert project.schema.not_a_cell() is None
    assert edits.not_a_cell_id(project, create=False) is None
    nac = edits.delete_cells(project, cells[:2], "ann")
    cls = project.schema.get(nac)
    assert (cls.name, cls.level) == (NOT_A_CELL, "cell")
    assert [project.item(i).label for i in cells] == [[nac], [nac], [project.item(cells[2]).model_class]]
    assert edits.is_deleted_cell(project.item(cells[0]).label, nac)
    assert not edits.is_deleted_cell(project.item(cells[2]).label, nac)
    assert edits.delete_cells(project, [cells[2]], "ann") == nac  # defined once: the same class again
    assert [c.name for c in project.schema.classes].count(NOT_A_CELL) == 1
    assert project.n_items() == 3  # deleted cells stay in the project
    assert project.history(cells[0])["new"].tolist()[-1] == [nac]


def test_adding_a_cell(project, image_id, cells, classes):
    iid = edits.add_cell(project, image_id, 1, 33.25, 40.5, classes[2], "ann")
    item = project.item(iid)
    assert (item.level, item.field, item.geometry, item.label, item.reviewer) == (
        "cell", 1, {"type": "point", "y": 33.25, "x": 40.5}, [classes[2]], "ann")
    again = edits.add_cell(project, image_id, 1, 33.25, 40.5, classes[0], "ann")  # same point: relabelled
    assert again == iid and project.item(iid).label == [classes[0]]
    # adding where a detection already is keeps the detection's model call
    kept = edits.add_cell(project, image_id, 1, 10.0, 5.0, classes[0], "ann")
    assert kept == cells[1] and project.item(kept).model == "toy@1"


def test_moving_a_cell_is_a_delete_plus_an_add_of_the_same_class(project, image_id, cells, classes):
    project.set_label(cells[0], [classes[1]], "ann")
    new = edits.move_cell(project, cells[0], 1, 1.5, 2.5, "ann", default_class=classes[2])
    nac = edits.not_a_cell_id(project, create=False)
    assert project.item(cells[0]).label == [nac]
    moved = project.item(new)
    assert moved.label == [classes[1]] and moved.geometry == {"type": "point", "y": 1.5, "x": 2.5}
    assert moved.field == 1 and moved.reviewer == "ann"
    # a cell already "not a cell" that is moved gets the default class
    again = edits.move_cell(project, cells[0], 1, 7.0, 7.0, "ann", default_class=classes[2])
    assert project.item(again).label == [classes[2]]


def test_moving_needs_a_cell_with_a_class(project, image_id, tiles, classes):
    with pytest.raises(ProjectError, match="not a cell"):
        edits.move_cell(project, tiles[0], 0, 1.0, 1.0, "ann")
    (bare,) = project.add_items(image_id, [{"level": "cell", "geometry": {"type": "point", "y": 3, "x": 3}}])
    with pytest.raises(ProjectError, match="no class to keep"):
        edits.move_cell(project, bare, 0, 4.0, 4.0, "ann")
    assert project.item(bare).label is None  # nothing was changed


def test_toggling_field_classes(project, image_id, classes):
    (field,) = project.add_items(image_id, [{"level": "field", "field": 0, "model": "toy@1",
                                             "model_labels": [classes[0]]}])
    assert edits.toggle_field_class(project, field, classes[1], "ann") == [classes[0], classes[1]]
    assert edits.toggle_field_class(project, field, classes[0], "ann") == [classes[1]]
    assert edits.toggle_field_class(project, field, classes[1], "ann") == []  # "none of the classes"
    assert edits.toggle_field_class(project, field, UNSURE, "ann") == [UNSURE]
    assert edits.toggle_field_class(project, field, classes[0], "ann") == [classes[0]]  # replaces unsure
    assert project.item(field).label == [classes[0]] and project.item(field).reviewer == "ann"
    # blinded: bob toggles on his own (empty) label, not on ann's
    assert edits.toggle_field_class(project, field, classes[1], "bob", blinded=True) == [classes[1]]
    assert project.reviewer_labels("ann")[field] == [classes[0]]
    (tile,) = project.add_items(image_id, [{"level": "tile", "geometry": {"type": "tile", "row": 9, "col": 9,
                                                                          "size_px": TILE_PX}}])
    with pytest.raises(ProjectError, match="only a field"):
        edits.toggle_field_class(project, tile, classes[0], "ann")


def test_a_move_is_one_edit_undone_whole(project, image_id, cells, classes):
    new = edits.move_cell(project, cells[0], 1, 50.0, 50.0, "ann", default_class=classes[2])
    assert project.undo("ann") is not None  # the new cell's label and the old one's "not a cell", together
    assert project.item(new).label is None
    assert project.item(cells[0]).label == [classes[2]]
    assert project.undo("ann") is None  # nothing else was done
