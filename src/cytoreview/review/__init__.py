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
    "LABEL_TABLE_COLUMNS",
    "LEVELS",
    "SCHEMA_VERSION",
    "STRATEGIES",
    "UNSURE",
    "UNSURE_CLASS",
    "AgreementReport",
    "ImageRecord",
    "LabelClass",
    "LabelSchema",
    "Progress",
    "Project",
    "adjudication_queue",
    "agreement",
    "class_counts",
    "cohen_kappa",
    "confusion_matrix",
    "import_predictions",
    "kappa_from_confusion",
    "label_table",
    "next_item",
    "per_class_kappa",
    "prediction_stores",
    "progress",
    "queue",
]
