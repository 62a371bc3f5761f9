"""Read-only summaries of a project: the label table (the export contract), progress and class counts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from cytoreview.review import items as store_items
from cytoreview.review import journal
from cytoreview.review.schema import UNSURE

#: Columns of :func:`label_table`, in order. Export relies on exactly these.
#: ``confidence`` is a float64 column: the model's probability, NaN (not None) where there is no model call --
#: consumers (export, train) must treat NaN and None alike (``pandas.isna``); export's ``validate_table`` does.
LABEL_TABLE_COLUMNS = [
    "item_id", "image_id", "image_path", "case_id", "level", "field", "z", "x_min", "y_min", "x_max", "y_max",
    "geometry", "labels", "label_ids", "model_label", "confidence", "source", "reviewer", "model", "mpp",
    "reviewed", "corrected", "unsure", "updated_at",
]
#: Gaps between two of a reviewer's actions longer than this count as a break, not as review time.
IDLE_GAP_S = 300.0


def label_table(project, only_reviewed: bool = False) -> pd.DataFrame:
    """One row per item, with the columns of :data:`LABEL_TABLE_COLUMNS`.

    ``labels``/``label_ids`` are the current label (``[]`` when the item has none); ``model_label`` is the model's
    class name (several joined with "|" for a multi-label field item) or None; ``confidence`` the model's probability
    of its class as float64, **NaN (not None) when there is none** -- the brief's "float or None" is met as a
    float column whose missing value is NaN, so test it with ``pandas.isna``, never ``is None``; ``corrected`` is true when a reviewer's label differs from the model's or the model had no call (an item a
    reviewer drew by hand);
    ``unsure`` when the label contains ``UNSURE``. Bounding boxes are level-0 px (``pandas.Int64``, missing for a
    field item of an image whose size is unknown).
    """
    schema = project.schema
    classes = {c.id: c.name for c in schema.classes}
    classes[UNSURE] = schema.get(UNSURE).name
    cols = store_items.label_column_lists(project.db, only_reviewed=only_reviewed)
    images = cols.pop("images")
    # labels repeat a lot ("[1]"): everything derived from a label is computed once per distinct value, and rows
    # with the same label share its lists (treat them as read-only)
    ids_of: dict = {None: []}
    names_of: dict = {None: []}
    for text in set(cols["label"]):
        if text is not None:
            ids_of[text] = json.loads(text)
            names_of[text] = [classes[k] for k in ids_of[text]]
    model_label_of: dict = {}
    corrected_of: dict = {}

    def model_ids(mlabels, mclass):
        return json.loads(mlabels) if mlabels is not None else ([mclass] if mclass is not None else None)

    for key in set(zip(cols["level"], cols["model_labels"], cols["model_class"])):
        level, mlabels, mclass = key
        ids = model_ids(mlabels, mclass)
        if not ids:  # no model call (an empty list would join to "")
            model_label_of[key] = None
        elif level == "field" and mlabels is not None:
            model_label_of[key] = "|".join(classes[k] for k in ids)
        else:
            model_label_of[key] = classes[mclass] if mclass is not None else None
    for key in set(zip(cols["label"], cols["model_labels"], cols["model_class"])):
        ids, model = ids_of[key[0]], model_ids(key[1], key[2])
        corrected_of[key] = model is None or sorted(ids) != sorted(model)
    image_ids = np.asarray(cols["image_id"], dtype=np.int64)
    reviewed = np.asarray(cols["reviewed"], dtype=bool)
    n = len(image_ids)

    def per_image(k):  # 0 path, 1 case_id, 2 mpp
        return [images[i][k] for i in image_ids.tolist()]

    def boxes(name):
        values = np.asarray(cols[name], dtype=np.float64)  # None -> NaN
        missing = np.isnan(values)
        return pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np.int64), missing)

    def objects(values):  # str-or-None and list columns: object dtype, None kept (pandas would infer NaN)
        out = np.empty(n, dtype=object)
        out[:] = values
        return pd.Series(out, dtype=object, copy=False)

    label = cols["label"]
    unsure_of = {text: UNSURE in ids for text, ids in ids_of.items()}
    data = {
        "item_id": np.asarray(cols["item_id"], dtype=np.int64),
        "image_id": image_ids,
        "image_path": per_image(0),
        "case_id": objects(per_image(1)),
        "level": cols["level"],
        "field": np.asarray(cols["field"], dtype=np.int64),
        "z": np.asarray(cols["z"], dtype=np.int64),
        **{name: boxes(name) for name in ("x_min", "y_min", "x_max", "y_max")},
        "geometry": cols["geometry"],
        "labels": objects([names_of[t] for t in label]),
        "label_ids": objects([ids_of[t] for t in label]),
        "model_label": objects([model_label_of[k] for k in zip(cols["level"], cols["model_labels"],
                                                                cols["model_class"])]),
        "confidence": np.asarray(cols["model_prob"], dtype=np.float64),  # None -> NaN
        "source": objects(cols["source"]),
        "reviewer": objects(cols["reviewer"]),
        "model": objects(cols["model"]),
        "mpp": np.asarray(per_image(2), dtype=np.float64),
        "reviewed": reviewed,
        "corrected": reviewed & np.fromiter((corrected_of[k] for k in zip(label, cols["model_labels"],
                                                                             cols["model_class"])), bool, n),
        "unsure": np.fromiter((unsure_of[t] for t in label), bool, n),
        "updated_at": cols["updated_at"],
    }
    del cols
    return pd.DataFrame(data, columns=LABEL_TABLE_COLUMNS)  # the plain text columns are inferred as before


def class_counts(project, only_reviewed: bool = False) -> pd.DataFrame:
    """Items per class: columns class_id, name, active, labelled (current labels), reviewed, predicted (model)."""
    schema = project.schema
    rows = store_items.label_columns(project.db)
    labelled, reviewed, predicted = {}, {}, {}
    for label, rev, mlabels, mclass in rows:
        if only_reviewed and not rev:
            continue
        for k in json.loads(label) if label is not None else ():
            labelled[k] = labelled.get(k, 0) + 1
            if rev:
                reviewed[k] = reviewed.get(k, 0) + 1
        for k in json.loads(mlabels) if mlabels is not None else ([mclass] if mclass is not None else []):
            predicted[k] = predicted.get(k, 0) + 1
    classes = schema.classes + [schema.get(UNSURE)]
    return pd.DataFrame([{"class_id": c.id, "name": c.name, "active": c.active, "labelled": labelled.get(c.id, 0),
                          "reviewed": reviewed.get(c.id, 0), "predicted": predicted.get(c.id, 0)} for c in classes])


@dataclass
class Progress:
    """Review progress.

    Attributes
    ----------
    per_image : pandas.DataFrame
        image_id, image_path, case_id, total, reviewed, remaining, fraction_reviewed.
    per_reviewer : pandas.DataFrame
        reviewer, image_id, reviewed (items this reviewer has a current label on) = unsure (the label holds
        "unsure") + accepted (otherwise: the label equals the model's) + corrected (otherwise), actions (set/accept journal rows), active_min
        (time between actions, breaks over 5 min left out), items_per_min.
    """

    per_image: pd.DataFrame
    per_reviewer: pd.DataFrame

    def to_dict(self) -> dict:
        """JSON-ready form (what ``cytoreview review-status --json`` prints)."""
        def records(df):
            return json.loads(df.to_json(orient="records"))

        return {"per_image": records(self.per_image), "per_reviewer": records(self.per_reviewer)}


def _active_minutes(stamps: list[str]) -> float:
    times = sorted(datetime.fromisoformat(s).timestamp() for s in stamps)
    gaps = np.diff(times)
    return float(np.sum(np.minimum(gaps, IDLE_GAP_S))) / 60.0 if len(gaps) else 0.0


#: What a reviewed item counts as: exactly one of these, so they add up to the reviewed items.
OUTCOMES = ("accepted", "corrected", "unsure")


def review_outcome(label, model_labels=None, model_class=None) -> str:
    """What a reviewer's ``label`` counts as: ``"unsure"`` when it holds UNSURE, else ``"accepted"`` when it is the
    model's label set (``model_labels``, else ``[model_class]``), else ``"corrected"`` (also when the model made no
    call). One rule for ``review-status``, :func:`progress` and the review dock's counts."""
    ids = sorted(label or ())
    if UNSURE in ids:
        return "unsure"
    model = model_labels if model_labels is not None else ([model_class] if model_class is not None else None)
    return "accepted" if model is not None and sorted(model) == ids else "corrected"


def progress(project) -> Progress:
    """Reviewed/total per image, and per reviewer and image: accepted vs corrected, and items per minute."""
    per_image_rows = store_items.image_counts(project.db)
    per_image = pd.DataFrame(per_image_rows, columns=["image_id", "image_path", "case_id", "total", "reviewed"])
    per_image["remaining"] = per_image["total"] - per_image["reviewed"]
    per_image["fraction_reviewed"] = np.where(per_image["total"] > 0,
                                              per_image["reviewed"] / per_image["total"].clip(lower=1), 0.0)
    reviews = journal.review_rows(project.db)
    actions = journal.action_times(project.db)
    stats: dict[tuple, dict] = {}
    for reviewer, image_id, label, mlabels, mclass in reviews:
        s = stats.setdefault((reviewer, image_id), {"reviewed": 0, "accepted": 0, "corrected": 0, "unsure": 0})
        s["reviewed"] += 1  # each reviewed item is exactly one of unsure, accepted, corrected: they add up
        s[review_outcome(label, mlabels, mclass)] += 1
    stamps: dict[tuple, list] = {}
    for reviewer, image_id, ts in actions:
        stamps.setdefault((reviewer, image_id), []).append(ts)
    rows = []
    for key in sorted(set(stats) | set(stamps)):
        s = stats.get(key, {"reviewed": 0, "accepted": 0, "corrected": 0, "unsure": 0})
        n_actions = len(stamps.get(key, []))
        minutes = _active_minutes(stamps.get(key, []))
        rows.append({"reviewer": key[0], "image_id": key[1], **s, "actions": n_actions, "active_min": minutes,
                     "items_per_min": (n_actions - 1) / minutes if minutes > 0 else float("nan")})
    columns = ["reviewer", "image_id", "reviewed", "accepted", "corrected", "unsure", "actions", "active_min",
               "items_per_min"]
    return Progress(per_image=per_image, per_reviewer=pd.DataFrame(rows, columns=columns))
