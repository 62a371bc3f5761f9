"""Ground truth read-back and the labelmap -> tile label rule."""

import numpy as np
import pytest

from cytoreview.errors import CytoreviewError
from cytoreview.samples.truth import read_ground_truth, tile_fractions, tile_labels

WARTHIN_CLASSES = [{"id": 0, "name": "clean background"}, {"id": 1, "name": "dirty background"},
                   {"id": 2, "name": "oncocytic epithelium"}, {"id": 3, "name": "lymphocytes"}]


def test_read_ground_truth(committed_effusion):
    gt = read_ground_truth(committed_effusion)
    assert [c["name"] for c in gt.classes] == ["background", "mesothelial", "macrophage", "lymphocyte", "atypical"]
    assert len(gt.field_names) == 8 and len(gt.field_labels) == 8
    n = gt.cells["field"].size
    assert n > 100 and all(v.size == n for v in gt.cells.values())
    assert gt.labelmap(0).shape == (1208, 1928)
    with pytest.raises(CytoreviewError, match="labelmap_009"):
        gt.labelmap(9)


def test_missing_ground_truth_names_the_file(tmp_path):
    with pytest.raises(CytoreviewError, match="classes.json"):
        read_ground_truth(tmp_path)


def test_tile_fractions_exact():
    lm = np.zeros((6, 10), dtype=np.uint8)
    lm[0:2, 0:4] = 2  # half of tile (0, 0)
    lm[4:6, 8:10] = 3  # all of the clipped edge tile (1, 2)
    f = tile_fractions(lm, 4, 4)
    assert f.shape == (2, 3, 4)
    assert f[0, 0, 2] == pytest.approx(0.5) and f[0, 0, 0] == pytest.approx(0.5)
    assert f[1, 2, 3] == pytest.approx(1.0)
    assert np.allclose(f.sum(axis=2), 1.0)


def test_tile_label_rule():
    f = np.zeros((4, 4), dtype=np.float32)
    f[0] = [0.9, 0.0, 0.0, 0.1]  # 10% lymphocyte pixels: lymphocytes (min 5%)
    f[1] = [0.4, 0.4, 0.2, 0.0]  # 20% oncocytic beats dirty background
    f[2] = [0.6, 0.4, 0.0, 0.0]  # only dirty background counts
    f[3] = [0.98, 0.0, 0.0, 0.02]  # too few lymphocyte pixels: clean background
    assert tile_labels(f, WARTHIN_CLASSES).tolist() == [3, 2, 1, 0]
    assert tile_labels(f, WARTHIN_CLASSES, min_fraction={"lymphocytes": 0.5}).tolist() == [0, 2, 1, 0]


def test_committed_cases_give_every_tile_class(committed_warthin, committed_effusion):
    for folder in (committed_warthin, committed_effusion):
        gt = read_ground_truth(folder)
        labels = np.concatenate([tile_labels(tile_fractions(gt.labelmap(i), 512, len(gt.classes)), gt.classes).ravel()
                                 for i in range(8)])
        counts = np.bincount(labels, minlength=len(gt.classes))
        assert (counts > 0).all(), (folder.name, counts)


def test_instance_map_splits_a_sheet_between_its_nuclei():
    """A honeycomb sheet is one region of one class with a nucleus per cell: each pixel goes to its nearest nucleus
    (the generator's Voronoi cells), so every cell gets about the same share -- not one centre flooding the sheet."""
    from cytoreview.samples.truth import instance_map

    labelmap = np.zeros((200, 200), dtype=np.uint8)
    labelmap[20:180, 20:180] = 2
    centres = [(y, x, 2) for y in range(40, 180, 40) for x in range(40, 180, 40)]
    inst = instance_map(labelmap, centres, [2])
    ids, areas = np.unique(inst[inst > 0], return_counts=True)
    assert len(ids) == len(centres) and (inst > 0).sum() == (labelmap == 2).sum()
    assert areas.max() <= 2.5 * areas.min()  # corner cells of the square are larger, none takes the sheet
    for i, (y, x, _) in enumerate(centres):
        assert inst[y, x] == i + 1
    # a neighbour's pixel never goes to a farther centre: the midpoint between two centres borders both
    assert inst[40, 58] == 1 and inst[40, 62] == 2
