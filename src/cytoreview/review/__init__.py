"""The review project: label schema, SQLite project store with an append-only journal, review queue, agreement.

>>> from cytoreview.review import Project, UNSURE
>>> p = Project.open("my-project", create=True)          # doctest: +SKIP
"""

from cytoreview.review.agreement import (
    AgreementReport,
    adjudication_queue,
    agreement,
    cohen_kappa,
    confusion_matrix,
    kappa_from_confusion,
    per_class_kappa,
)
from cytoreview.review.predictions import import_predictions, prediction_stores
from cytoreview.review.queue import STRATEGIES, next_item, queue
from cytoreview.review.schema import LEVELS, UNSURE, UNSURE_CLASS, LabelClass, LabelSchema
from cytoreview.review.store import SCHEMA_VERSION, ImageRecord, Project
from cytoreview.review.tables import LABEL_TABLE_COLUMNS, Progress, class_counts, label_table, progress

__all__ = [
    "Project", "ImageRecord", "SCHEMA_VERSION",
    "UNSURE", "UNSURE_CLASS", "LEVELS", "LabelClass", "LabelSchema",
    "import_predictions", "prediction_stores",
    "STRATEGIES", "queue", "next_item",
    "cohen_kappa", "confusion_matrix", "kappa_from_confusion", "per_class_kappa", "agreement",
    "adjudication_queue", "AgreementReport",
    "LABEL_TABLE_COLUMNS", "label_table", "progress", "class_counts", "Progress",
]
