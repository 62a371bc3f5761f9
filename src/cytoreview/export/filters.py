"""Which items of a label table go into a training set.

Selections (``select``):

* ``"all"``: every item that has a label (model calls included).
* ``"reviewed"``: items a reviewer looked at (accepted or corrected).
* ``"corrected"``: items whose label a reviewer changed, and items a reviewer added by hand (no model call).
* ``"trusted"``: corrected items plus items a reviewer accepted whose model confidence is at least
  ``min_confidence`` -- the usual refit set.

Items marked unsure are left out unless ``include_unsure=True``; items without any label are always left out (there
is nothing to learn from them), and so are deleted regions (region items labelled
:data:`~cytoreview.review.schema.NOT_A_REGION`: a withdrawn outline is no annotation; its reshaped successor is a
region item of its own).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from cytoreview.class_names import name_key
from cytoreview.errors import ExportError
from cytoreview.review.schema import NOT_A_REGION

SELECTIONS = ("all", "reviewed", "corrected", "trusted")


@dataclass(frozen=True)
class FilterReport:
    """How many items each rule removed (for the export summary)."""

    n_in: int
    n_unlabelled: int
    n_unsure: int
    n_not_selected: int
    n_out: int
    n_deleted_regions: int = 0


def filter_items(
    table: pd.DataFrame,
    select: str = "reviewed",
    *,
    min_confidence: float = 0.9,
    include_unsure: bool = False,
) -> tuple[pd.DataFrame, FilterReport]:
    """Return the rows of ``table`` that go into the export, and a count of what was removed.

    Parameters
    ----------
    table : pandas.DataFrame
        A validated label table.
    select : {"all", "reviewed", "corrected", "trusted"}
        Which items to keep (see the module docstring).
    min_confidence : float
        For ``"trusted"``: the least model confidence (0-1) an accepted item needs.
    include_unsure : bool
        Keep items a reviewer marked unsure.

    Returns
    -------
    (pandas.DataFrame, FilterReport)
    """
    if select not in SELECTIONS:
        raise ExportError(f"unknown selection {select!r}; expected one of {', '.join(SELECTIONS)}")
    if not 0.0 <= float(min_confidence) <= 1.0:
        raise ExportError(f"min_confidence must be in [0, 1], got {min_confidence}")
    n_in = len(table)
    labelled = table["labels"].map(len) > 0
    deleted_key = name_key(NOT_A_REGION)
    regions = table["level"] == "region"
    deleted = pd.Series(False, index=table.index)
    deleted[regions] = table.loc[regions, "labels"].map(
        lambda names: len(names) == 1 and name_key(names[0]) == deleted_key).astype(bool)
    keep = labelled & ~deleted
    unsure = table["unsure"].astype(bool) & labelled
    if not include_unsure:
        keep &= ~table["unsure"].astype(bool)
    reviewed = table["reviewed"].astype(bool)
    # an item a reviewer added by hand (no model call) is a correction even in a table whose producer forgot to say so
    corrected = table["corrected"].astype(bool) | (reviewed & table["model_label"].isna())
    if select == "reviewed":
        chosen = reviewed | corrected
    elif select == "corrected":
        chosen = corrected
    elif select == "trusted":
        conf = pd.to_numeric(table["confidence"], errors="coerce")
        chosen = corrected | (reviewed & ~corrected & (conf >= float(min_confidence)))
    else:
        chosen = pd.Series(True, index=table.index)
    n_unsure = 0 if include_unsure else int((unsure & ~deleted).sum())
    not_selected = keep & ~chosen
    keep &= chosen
    report = FilterReport(
        n_in=n_in,
        n_unlabelled=int((~labelled).sum()),
        n_unsure=n_unsure,
        n_not_selected=int(not_selected.sum()),
        n_out=int(keep.sum()),
        n_deleted_regions=int(deleted.sum()),
    )
    return table[keep].reset_index(drop=True), report
