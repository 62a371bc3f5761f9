"""Filters, splits and balancing."""

import numpy as np
import pandas as pd
import pytest
from .conftest import many_cases_table

from cytoreview.errors import ExportError
from cytoreview.export.balance import augment_crop, balance_table, class_distribution
from cytoreview.export.filters import filter_items
from cytoreview.export.splits import assign_splits, group_keys, normalise_fractions
from cytoreview.export.table import validate_table


def test_filters(table):
    t = validate_table(table)
    out, rep = filter_items(t, "all")
    assert 12 not in set(out["item_id"])  # unlabelled
    assert 6 not in set(out["item_id"])  # unsure
    assert rep.n_unlabelled == 1 and rep.n_unsure == 1
    out, _ = filter_items(t, "all", include_unsure=True)
    assert 6 in set(out["item_id"])
    out, _ = filter_items(t, "reviewed")
    assert 8 not in set(out["item_id"])
    out, _ = filter_items(t, "corrected")
    assert set(out["item_id"]) == {1, 3, 7}
    out, _ = filter_items(t, "trusted", min_confidence=0.9)
    # corrected ones (even with low confidence: item 3) + accepted with confidence >= 0.9; item 11 (0.5) is out
    assert 3 in set(out["item_id"]) and 11 not in set(out["item_id"]) and 10 in set(out["item_id"])
    with pytest.raises(ExportError, match="unknown selection"):
        filter_items(t, "everything")


def test_validate_table_names_missing_column(table):
    with pytest.raises(ExportError, match="geometry"):
        validate_table(table.drop(columns=["geometry"]))


def test_splits_group_by_case_and_cover_fractions():
    t = validate_table(many_cases_table(n_cases=20))
    split = assign_splits(t, (0.6, 0.2, 0.2), seed=1)
    per_case = pd.DataFrame({"case": group_keys(t), "split": split}).groupby("case")["split"].nunique()
    assert (per_case == 1).all()
    assert set(split) == {"train", "validation", "test"}
    # each case is one seeded draw: the fractions of cases hold in expectation (checked on many cases)
    big = validate_table(many_cases_table(n_cases=400, per_case=1))
    counts = assign_splits(big, (0.6, 0.2, 0.2), seed=1).value_counts(normalize=True)
    assert abs(counts["train"] - 0.6) < 0.08 and abs(counts["test"] - 0.2) < 0.08
    # majority classes spread over splits: each common class has a case in train and in a held-out split
    first = t["labels"].map(lambda v: v[0])
    for cls in ("a", "b", "c"):
        assert {"train"} < set(split[first == cls])
    # deterministic with a seed
    assert assign_splits(t, (0.6, 0.2, 0.2), seed=1).equals(split)


def test_adding_cases_does_not_move_existing_cases():
    t = validate_table(many_cases_table(n_cases=12))
    before = pd.Series(assign_splits(t, (0.6, 0.2, 0.2), seed=3).to_numpy(), index=group_keys(t).to_numpy())
    more = many_cases_table(n_cases=30)
    more["labels"] = more["labels"].map(lambda v: ["rare"])  # the new cases also shift the class mix
    grown = validate_table(pd.concat([t, more[more["case_id"] >= "case12"]], ignore_index=True))
    after = pd.Series(assign_splits(grown, (0.6, 0.2, 0.2), seed=3).to_numpy(), index=group_keys(grown).to_numpy())
    old = before.groupby(level=0).first()
    assert after.groupby(level=0).first()[old.index].equals(old)
    assert set(after) == {"train", "validation", "test"}


def test_tiny_export_still_fills_every_split():
    t = validate_table(many_cases_table(n_cases=3, per_case=2))
    assert set(assign_splits(t, (0.6, 0.2, 0.2), seed=0)) == {"train", "validation", "test"}


def test_splits_without_case_id_group_by_image():
    t = many_cases_table(n_cases=6)
    t["case_id"] = None
    t = validate_table(t)
    split = assign_splits(t, True, seed=0)
    assert (pd.DataFrame({"i": t["image_id"], "s": split}).groupby("i")["s"].nunique() == 1).all()


def test_bad_fractions():
    with pytest.raises(ExportError):
        normalise_fractions((0.5, 0.2, 0.2))
    with pytest.raises(ExportError):
        normalise_fractions({"train": 0.5, "holdout": 0.5})
    assert normalise_fractions({"train": 0.8, "val": 0.2})["validation"] == 0.2


def test_oversample_hits_target_and_leaves_heldout_alone():
    t = validate_table(many_cases_table(n_cases=10))
    t["split"] = assign_splits(t, (0.7, 0.3), seed=0).to_numpy()
    before_val = class_distribution(t[t["split"] == "validation"], by=None)
    out = balance_table(t, "oversample", target=80, split="train", seed=3)
    train = out[out["split"] == "train"]
    counts = class_distribution(train, by=None).set_index("class")["count"]
    orig = class_distribution(t[t["split"] == "train"], by=None).set_index("class")["count"]
    for cls, n in orig.items():
        assert counts[cls] == max(80, n)
    assert (out.loc[out["augment"] != "", "split"] == "train").all()
    after_val = class_distribution(out[out["split"] == "validation"], by=None)
    assert before_val.equals(after_val)


def test_undersample_hits_target():
    t = validate_table(many_cases_table(n_cases=6))
    out = balance_table(t, "undersample", target=5, split=None, seed=0)
    counts = class_distribution(out, by=None)["count"]
    assert (counts == 5).all()


def test_augment_crop_is_seeded_and_mild():
    rng = np.random.default_rng(0)
    crop = rng.integers(40, 200, (16, 24, 3), dtype=np.uint8)
    assert augment_crop(crop, "r1").shape == (24, 16, 3)
    assert np.array_equal(augment_crop(crop, "fh"), crop[:, ::-1])
    a = augment_crop(crop, "j42")
    assert np.array_equal(a, augment_crop(crop, "j42"))
    assert not np.array_equal(a, augment_crop(crop, "j43"))
    assert np.abs(a.astype(int) - crop.astype(int)).mean() < 20
    with pytest.raises(ExportError):
        augment_crop(crop, "zoom")


def test_missing_confidence_as_none_or_nan_is_treated_alike(table):
    """label_table gives NaN for "no model call"; other producers give None: filters and formats see the same."""
    from cytoreview.export.table import column

    with_nan, with_none = table.copy(), table.copy()
    with_nan["confidence"] = np.nan
    with_none["confidence"] = pd.Series([None] * len(table), dtype=object)
    a, b = validate_table(with_nan), validate_table(with_none)
    assert a["confidence"].dtype == b["confidence"].dtype == np.float64
    assert column(a, "confidence") == column(b, "confidence") == [None] * len(table)
    for select in ("trusted", "reviewed"):
        assert filter_items(a, select)[0]["item_id"].tolist() == filter_items(b, select)[0]["item_id"].tolist()


def test_export_reads_the_review_contract_and_geometry_rules():
    from cytoreview.export.table import LABEL_TABLE_COLUMNS, parse_geometry
    from cytoreview.review import tables

    assert LABEL_TABLE_COLUMNS is tables.LABEL_TABLE_COLUMNS
    assert parse_geometry('{"type": "tile", "row": 1, "col": 2, "size_px": 64}', 5)["size_px"] == 64
    for bad in ('{"type": "point", "y": NaN, "x": 1}', '{"type": "polygon", "coords": [[0, 0], [1], [2, 2]]}',
                '{"type": "tile", "row": 1, "col": 2}', "not json", None):
        with pytest.raises(ExportError, match="item 5"):
            parse_geometry(bad, 5)
