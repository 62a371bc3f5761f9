"""Detection quality: predicted cell outlines matched one-to-one to true instances at an IoU, recall per class."""

from __future__ import annotations

import numpy as np

from cytoreview.train.detection import match_instances, matched_pairs, recall_by_class


def test_matches_are_one_to_one_at_the_iou_and_give_recall_per_class():
    truth = np.zeros((40, 40), dtype=np.int32)
    truth[5:15, 5:15] = 1  # found
    truth[20:30, 5:15] = 2  # two true cells merged into one prediction: neither reaches IoU 0.5
    truth[20:30, 15:25] = 3
    truth[5:15, 25:35] = 4  # missed
    pred = np.zeros_like(truth)
    pred[6:15, 5:15] = 7
    pred[20:30, 3:27] = 8
    pairs = matched_pairs(pred, truth, 0.5)
    assert pairs == {1: 7}
    assert match_instances(pred, truth, 0.5) == (1, 2, 4)
    kinds = {1: "lymphocyte", 2: "atypical", 3: "atypical", 4: "lymphocyte"}
    found, total = {}, {}
    for tid in (1, 2, 3, 4):
        total[kinds[tid]] = total.get(kinds[tid], 0) + 1
    for tid in pairs:
        found[kinds[tid]] = found.get(kinds[tid], 0) + 1
    assert recall_by_class(found, total) == {"atypical": 0.0, "lymphocyte": 0.5}
