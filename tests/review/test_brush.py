"""Brush regions without Qt: a painted mask becomes a region item, painting over a region of the same class extends
it (one item reshaped, those it swallows deleted), other classes are left alone; all journalled and undoable."""

from __future__ import annotations

import numpy as np
import pytest

from cytoreview.errors import ProjectError
from cytoreview.review import brush, edits
from cytoreview.review.measure import measure, polygon_area_px


@pytest.fixture
def classes(project):
    return [project.schema.add(name, color=color, level="region").id
            for name, color in (("tumour area", "#c03030"), ("necrosis", "#303030"))]


def live(project, image_id):
    items = project.items(image_id=image_id, level="region")
    nar = edits.not_a_region_id(project, create=False)
    return items[items["label"].map(lambda lab: edits.is_live_region(lab, nar))]


def test_outline_of_a_block_lies_on_its_outer_edges():
    mask = np.zeros((10, 10), bool)
    mask[2:6, 3:8] = True
    mask[3, 4] = False  # a hole is filled over by the outer outline
    outline = brush.outline_yx(mask)
    assert polygon_area_px(outline.tolist()) == pytest.approx(4 * 5, abs=0.5)  # corners cut by 1/8 px each
    np.testing.assert_allclose(outline.min(0), [2, 3]) and np.testing.assert_allclose(outline.max(0), [6, 8])
    assert brush.outline_yx(np.zeros((3, 3), bool)) is None


def test_a_stroke_becomes_a_region_and_painting_over_it_extends_it(project, image_id, classes):
    tumour, necrosis = classes
    grid = np.zeros((60, 80), bool)
    grid[10:20, 10:30] = True  # 10 x 20 brush pixels of 4 level-0 px
    n = len(project.history())
    (result,) = brush.paint_region(project, image_id, 1, grid, tumour, "ann", px_level0=4.0, offset_px=(5, 0))
    first = result.item_id
    assert result.replaced == []
    item = project.item(first)
    assert item.level == "region" and item.label == [tumour] and item.field == 1 and len(project.history()) == n + 1
    coords = np.asarray(item.geometry["coords"])
    assert polygon_area_px(coords.tolist()) == pytest.approx(10 * 20 * 16, abs=0.5 * 16)
    np.testing.assert_allclose(coords.min(0), [(10 + 5) * 4, 10 * 4])  # the offset and the brush pixel size count

    other = edits.add_region(project, image_id, 1, [[400, 400], [400, 440], [440, 440], [440, 400]], tumour, "ann")
    foreign = edits.add_region(project, image_id, 1, [[60, 40], [60, 80], [100, 80], [100, 40]], necrosis, "ann")
    # a stroke overlapping the first region and reaching the second: one region of the union, the second deleted
    stroke = np.zeros((120, 120), bool)
    stroke[18:95, 25:28] = True   # from inside the first region down ...
    stroke[92:96, 25:105] = True  # ... and across to the second one (rows 100..110 at offset 5)
    results = brush.paint_region(project, image_id, 1, stroke, tumour, "ann", px_level0=4.0, offset_px=(5, 0))
    made = [r.item_id for r in results]
    assert len(made) == 1 and made[0] not in (first, other) and results[0].replaced == [other, first]
    nar = edits.not_a_region_id(project, create=False)
    assert project.item(first).label == [nar] and project.item(other).label == [nar]
    assert project.item(foreign).label == [necrosis]  # another class is never merged
    merged = project.item(made[0])
    area = polygon_area_px(merged.geometry["coords"])
    assert area >= 10 * 20 * 16 + 40 * 40 - 16 and merged.label == [tumour]
    assert sorted(live(project, image_id)["item_id"]) == sorted([made[0], foreign])
    table = measure(project)
    assert set(table["region_id"].dropna().astype(int)) == {made[0], foreign}

    project.undo("ann")  # one stroke, one undo: the merged outline goes, the swallowed regions come back
    assert project.item(made[0]).label is None
    assert project.item(first).label == [tumour] and project.item(other).label == [tumour]


def test_bad_masks_are_refused(project, image_id, classes):
    with pytest.raises(ProjectError, match="two-dimensional"):
        brush.paint_region(project, image_id, 0, np.ones((2, 2, 2), bool), classes[0], "ann")
    with pytest.raises(ProjectError, match="positive"):
        brush.paint_region(project, image_id, 0, np.ones((2, 2), bool), classes[0], "ann", px_level0=0)
    assert brush.paint_region(project, image_id, 0, np.zeros((4, 4), bool), classes[0], "ann") == []


def test_erasing_cuts_deletes_and_splits_regions(project, image_id, classes):
    tumour, necrosis = classes
    square = [[0, 0], [0, 40], [40, 40], [40, 0]]  # 10 x 10 brush pixels of 4 level-0 px
    a = edits.add_region(project, image_id, 0, square, tumour, "ann")
    b = edits.add_region(project, image_id, 0, [[100, 100], [100, 120], [120, 120], [120, 100]], necrosis, "ann")
    stroke = np.zeros((40, 40), bool)
    stroke[:, 4:6] = True  # a vertical band through the first square: it falls apart into two pieces
    stroke[24:31, 24:31] = True  # and the whole second square (rows/cols 25..29)
    results = brush.erase_regions(project, image_id, 0, stroke, "ann", px_level0=4.0)
    nar = edits.not_a_region_id(project, create=False)
    assert project.item(a).label == [nar] and project.item(b).label == [nar]
    assert [r.deleted for r in results] == [False, False, True] and results[0].replaced == [a]
    pieces = [project.item(r.item_id) for r in results[:2]]
    assert all(p.label == [tumour] for p in pieces)
    areas = sorted(polygon_area_px(p.geometry["coords"]) for p in pieces)
    assert areas[0] == pytest.approx(4 * 10 * 16, abs=16) and areas[1] == pytest.approx(4 * 10 * 16, abs=16)
    assert [i for r in results for i in r.journalled] == [a, results[0].item_id, results[1].item_id, b]
    assert brush.erase_regions(project, image_id, 0, np.zeros((3, 3), bool), "ann") == []
