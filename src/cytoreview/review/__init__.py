"""The review project: label schema, SQLite project store with an append-only journal, review queue, agreement.

Use a :class:`Project` (its methods are the one way to call each operation); the modules behind it are
``connection`` (database, transactions), ``images``, ``items`` (:class:`Item`), ``journal``
(:class:`JournalEntry`, the only writer of label changes), ``schema`` (classes, :func:`name_key`), ``edits``
(what a layer edit means), ``queue``, ``tables``, ``agreement`` and ``predictions``.

>>> from cytoreview.review import Project, UNSURE
>>> p = Project.open("my-project", create=True)          # doctest: +SKIP
"""

from cytoreview._lazy import lazy_exports

#: Public name -> the module defining it; imported on first use, so one command imports only what it uses.
_EXPORTS = {
    "ITEM_COLUMNS": "cytoreview.review.items",
    "LABEL_TABLE_COLUMNS": "cytoreview.review.tables",
    "LEVELS": "cytoreview.review.schema",
    "NOT_A_CELL": "cytoreview.review.schema",
    "SCHEMA_VERSION": "cytoreview.review.store",
    "STRATEGIES": "cytoreview.review.queue",
    "UNSURE": "cytoreview.review.schema",
    "UNSURE_CLASS": "cytoreview.review.schema",
    "AgreementReport": "cytoreview.review.agreement",
    "ImageRecord": "cytoreview.review.images",
    "Item": "cytoreview.review.items",
    "JournalEntry": "cytoreview.review.journal",
    "LabelClass": "cytoreview.review.schema",
    "LabelSchema": "cytoreview.review.schema",
    "PredictionStoreRecord": "cytoreview.review.images",
    "Progress": "cytoreview.review.tables",
    "Project": "cytoreview.review.store",
    "StoreYield": "cytoreview.review.predictions",
    "cohen_kappa": "cytoreview.review.agreement",
    "confusion_matrix": "cytoreview.review.agreement",
    "kappa_from_confusion": "cytoreview.review.agreement",
    "name_key": "cytoreview.review.schema",
    "per_class_kappa": "cytoreview.review.agreement",
    "store_yield": "cytoreview.review.predictions",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
