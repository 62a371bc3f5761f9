"""label_table (the export contract), progress, class counts and the review-status command."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cytoreview.review import LABEL_TABLE_COLUMNS, UNSURE

EXPECTED_COLUMNS = [
    "item_id", "image_id", "image_path", "case_id", "level", "field", "z", "x_min", "y_min", "x_max", "y_max",
    "geometry", "labels", "label_ids", "model_label", "confidence", "source", "reviewer", "model", "mpp",
    "reviewed", "corrected", "unsure", "updated_at",
]


@pytest.fixture
def filled(project, image_id):
    for name in ("benign", "malignant"):
        project.schema.add(name)
    ids = project.add_items(image_id, [
        {"level": "tile", "field": 1, "geometry": {"type": "tile", "row": 2, "col": 3, "size_px": 100},
         "model": "toy@1.0", "model_class": 1, "model_prob": 0.8, "uncertainty": 0.3},
        {"level": "cell", "geometry": {"type": "point", "y": 10.5, "x": 20}, "model": "toy@1.0", "model_class": 0,
         "model_prob": 0.6},
        {"level": "region", "z": 2, "geometry": {"type": "polygon", "coords": [[1, 2], [5.5, 2], [5.5, 9.2]]}},
        {"level": "field", "field": 0, "geometry": {"type": "field"}, "model": "toy@1.0", "model_labels": [0, 1],
         "model_prob": 0.9},
    ])
    project.accept(ids[0], "ann", dwell_s=1.0)
    project.set_label(ids[1], 1, "ann", dwell_s=2.0)
    project.set_label(ids[3], [0, 1, UNSURE], "bob")
    return ids


def test_label_table_columns_and_values(project, filled, fieldset):
    t = project.label_table()
    assert list(t.columns) == EXPECTED_COLUMNS == LABEL_TABLE_COLUMNS
    t = t.set_index("item_id", drop=False)
    tile, cell, region, field = (t.loc[i] for i in filled)
    assert tile["image_path"] == str(fieldset) and tile["case_id"] == "A" and tile["mpp"] == 0.293
    assert (tile["level"], tile["field"], tile["z"]) == ("tile", 1, 0)
    assert (tile["x_min"], tile["y_min"], tile["x_max"], tile["y_max"]) == (300, 200, 400, 300)
    assert json.loads(tile["geometry"]) == {"type": "tile", "row": 2, "col": 3, "size_px": 100}
    assert tile["labels"] == ["malignant"] and tile["label_ids"] == [1] and tile["model_label"] == "malignant"
    assert tile["confidence"] == pytest.approx(0.8) and tile["source"] == "reviewer" and tile["reviewer"] == "ann"
    assert tile["model"] == "toy@1.0" and tile["reviewed"] and not tile["corrected"] and not tile["unsure"]

    assert cell["labels"] == ["malignant"] and cell["model_label"] == "benign" and cell["corrected"]
    assert (cell["x_min"], cell["x_max"], cell["y_min"], cell["y_max"]) == (20, 20, 10, 10)

    assert region["labels"] == [] and region["label_ids"] == [] and region["model_label"] is None
    assert pd.isna(region["confidence"]) and region["source"] is None and region["reviewer"] is None
    assert region["model"] is None and not region["reviewed"] and not region["corrected"]
    assert (region["x_min"], region["y_min"], region["x_max"], region["y_max"]) == (2, 1, 10, 6)
    assert region["z"] == 2

    assert field["labels"] == ["unsure", "benign", "malignant"] and field["label_ids"] == [UNSURE, 0, 1]
    assert field["model_label"] == "benign|malignant" and field["unsure"] and field["corrected"]
    assert (field["x_max"], field["y_max"]) == (1928, 1208)
    assert pd.Timestamp(field["updated_at"]).tzinfo is not None

    reviewed = project.label_table(only_reviewed=True)
    assert reviewed["item_id"].tolist() == [filled[0], filled[1], filled[3]]


def test_hand_drawn_items_count_as_corrected_in_table_and_exports(project, filled, image_id):
    from cytoreview.export.filters import filter_items

    region = filled[2]  # drawn by a reviewer: no model call
    project.set_label(region, 1, "ann")
    t = project.label_table().set_index("item_id", drop=False)
    assert t.loc[region, "model_label"] is None and t.loc[region, "reviewed"] and t.loc[region, "corrected"]
    for select in ("corrected", "trusted"):
        out, _ = filter_items(project.label_table(), select, min_confidence=0.5, include_unsure=True)
        assert region in set(out["item_id"]), select
    # a table from elsewhere that left 'corrected' false still counts the reviewed hand-drawn item
    t2 = project.label_table()
    t2["corrected"] = False
    out, _ = filter_items(t2, "corrected")
    assert set(out["item_id"]) == {region}


def test_progress_and_counts(project, filled):
    prog = project.progress()
    img = prog.per_image.iloc[0]
    assert (img["total"], img["reviewed"], img["remaining"]) == (4, 3, 1)
    ann = prog.per_reviewer.set_index("reviewer").loc["ann"]
    assert (ann["reviewed"], ann["accepted"], ann["corrected"], ann["actions"]) == (2, 1, 1, 2)
    assert ann["items_per_min"] > 0
    bob = prog.per_reviewer.set_index("reviewer").loc["bob"]
    assert (bob["reviewed"], bob["accepted"], bob["corrected"], bob["unsure"]) == (1, 0, 0, 1)  # unsure only once
    per = prog.per_reviewer
    assert (per["accepted"] + per["corrected"] + per["unsure"] == per["reviewed"]).all()  # they add up
    counts = project.class_counts().set_index("name")
    assert counts.loc["malignant", "labelled"] == 3 and counts.loc["benign", "labelled"] == 1
    assert counts.loc["unsure", "labelled"] == 1 and counts.loc["benign", "predicted"] == 2


def test_review_outcome_is_exactly_one_of_three():
    from cytoreview.review.tables import OUTCOMES, review_outcome

    assert review_outcome([2], [2]) == "accepted" and review_outcome([1], None, 1) == "accepted"
    assert review_outcome([1], [2]) == "corrected" and review_outcome([1]) == "corrected"  # no model call
    assert review_outcome([UNSURE], [2]) == "unsure" and review_outcome([UNSURE, 1], [1]) == "unsure"
    assert set(OUTCOMES) == {"accepted", "corrected", "unsure"}


def test_review_status_command(project, filled, capsys):
    from cytoreview import cli

    assert cli.main(["review-status", str(project.folder)]) == 0
    out = capsys.readouterr().out
    assert "3/4 reviewed" in out and "ann: 2 items = 1 accepted + 1 corrected + 0 unsure" in out
    assert "bob: 1 items = 0 accepted + 0 corrected + 1 unsure" in out
    assert cli.main(["review-status", str(project.folder), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["per_image"][0]["reviewed"] == 3 and {r["reviewer"] for r in data["per_reviewer"]} == {"ann", "bob"}
    assert cli.main(["review-status", str(project.folder / "nope")]) == 2
    assert "no cytoreview project" in capsys.readouterr().err
