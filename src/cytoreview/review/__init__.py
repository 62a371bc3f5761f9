"""The review project: label schema, SQLite project store with an append-only journal, review queue, agreement.

Use a :class:`Project` (its methods are the one way to call each operation); the modules behind it are
``connection`` (database, transactions), ``images``, ``items`` (:class:`Item`), ``journal``
(:class:`JournalEntry`, the only writer of label changes), ``schema`` (classes, :func:`name_key`), ``edits``
(what a layer edit means), ``queue``, ``tables``, ``agreement`` and ``predictions``.

>>> from cytoreview.review import Project, UNSURE
>>> p = Project.open("my-project", create=True)          # doctest: +SKIP
"""

from cytoreview.review.agreement import (
    AgreementReport,
    cohen_kappa,
    confusion_matrix,
    kappa_from_confusion,
    per_class_kappa,
)
from cytoreview.review.images import ImageRecord, PredictionStoreRecord
from cytoreview.review.items import ITEM_COLUMNS, Item
from cytoreview.review.journal import JournalEntry
from cytoreview.review.queue import STRATEGIES
from cytoreview.review.schema import (
    LEVELS,
    NOT_A_CELL,
    UNSURE,
    UNSURE_CLASS,
    LabelClass,
    LabelSchema,
    name_key,
)
from cytoreview.review.store import SCHEMA_VERSION, Project
from cytoreview.review.tables import LABEL_TABLE_COLUMNS, Progress

__all__ = [
    "ITEM_COLUMNS",
    "LABEL_TABLE_COLUMNS",
    "LEVELS",
    "NOT_A_CELL",
    "SCHEMA_VERSION",
    "STRATEGIES",
    "UNSURE",
    "UNSURE_CLASS",
    "AgreementReport",
    "ImageRecord",
    "Item",
    "JournalEntry",
    "LabelClass",
    "LabelSchema",
    "PredictionStoreRecord",
    "Progress",
    "Project",
    "cohen_kappa",
    "confusion_matrix",
    "kappa_from_confusion",
    "name_key",
    "per_class_kappa",
]
