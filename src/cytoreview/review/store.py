"""The project: one folder holding ``project.sqlite`` (and ``predictions/``), and :class:`Project`, the one way to
use it.

:class:`Project` is a facade: each method is one call into the module that owns the rule --
:mod:`~cytoreview.review.connection` (the database and its transactions), :mod:`~cytoreview.review.images`,
:mod:`~cytoreview.review.items`, :mod:`~cytoreview.review.journal` (every label change, undo and redo),
:mod:`~cytoreview.review.schema` (the classes), :mod:`~cytoreview.review.queue`, :mod:`~cytoreview.review.tables`,
:mod:`~cytoreview.review.agreement` and :mod:`~cytoreview.review.predictions`.

Durability rules (the heart of the product -- a cytologist's labels are never lost):

* every label change (:meth:`Project.set_label`, :meth:`~Project.accept`, :meth:`~Project.undo`,
  :meth:`~Project.redo`) is ONE ``BEGIN IMMEDIATE`` transaction that reads the old value, updates the item,
  appends a journal row and commits (fsync of the WAL) before the call returns;
* the journal is append-only: undo and redo write new rows, nothing is ever deleted;
* two processes on one project wait for each other (busy timeout) rather than fail; the later commit wins in
  ``items`` and both changes stay in the journal;
* on open, a file that is not a cytoreview project, is newer than this code, or fails ``PRAGMA quick_check`` is
  refused with a :class:`~cytoreview.errors.ProjectError` and is left byte-for-byte untouched;
  :meth:`Project.check` runs the full (slower) ``PRAGMA integrity_check`` on demand.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from cytoreview.errors import ProjectError

from cytoreview.review import agreement as _agreement
from cytoreview.review import images as _images
from cytoreview.review import items as _items
from cytoreview.review import journal as _journal
from cytoreview.review import predictions as _predictions
from cytoreview.review import queue as _queue
from cytoreview.review import tables as _tables
from cytoreview.review.connection import DB_NAME, SCHEMA_VERSION, Database
from cytoreview.review.images import ImageRecord, PredictionStoreRecord
from cytoreview.review.items import Item
from cytoreview.review.schema import LabelSchema

__all__ = ["DB_NAME", "SCHEMA_VERSION", "ImageRecord", "Item", "PredictionStoreRecord", "Project"]


class Project:
    """A review project: a folder holding ``project.sqlite`` (and ``predictions/``).

    Use :meth:`Project.open`; one instance is safe to share between threads (calls are serialised), and any number
    of processes may open the same folder.

    Attributes
    ----------
    folder : pathlib.Path
    db : Database
        The open database (for the review modules; everything a user needs is a method here).
    schema : LabelSchema
        The project's classes (bound: every change is written at once).
    """

    def __init__(self, folder: Path, db: Database):
        self.folder = folder
        self.db = db
        self._undo_stacks = _journal.UndoStacks()
        self.schema = LabelSchema(backend=db, relabel=_journal.relabel_merged)

    # ================================================================== opening
    @classmethod
    def open(cls, folder: str | os.PathLike, create: bool = False, *, busy_timeout_s: float | None = None) -> Project:
        """Open the project in ``folder`` (creating it when ``create`` is true and there is none).

        Parameters
        ----------
        busy_timeout_s : float, optional
            How long a write waits for another process's transaction (default
            :data:`cytoreview.review.connection.BUSY_TIMEOUT_S`, 30 s).

        Notes
        -----
        A project this process cannot write (a read-only folder or share) opens read-only (:attr:`read_only`):
        reading and export work, every change raises :class:`~cytoreview.errors.ProjectReadOnlyError`. A project of
        schema version 1 (before the journal's hash chain) is upgraded when opened where it can be written: its
        journal rows are sealed as they are then (see :meth:`verify_journal`).

        Raises
        ------
        ProjectError
            No project there (and ``create`` false); the file is not SQLite, belongs to another application, was
            written by a newer cytoreview, or fails its integrity check. The file is never modified in these cases.
        """
        folder = Path(folder).expanduser().absolute()
        return cls(folder, Database.open(folder, create=create, busy_timeout_s=busy_timeout_s,
                                         chain_rows=_journal.chain_existing_rows))

    def check(self) -> None:
        """Run SQLite's full ``PRAGMA integrity_check`` (reads the whole file; opening only runs ``quick_check``).

        Then walks the journal's hash chain (:meth:`verify_journal`).

        Raises
        ------
        ProjectError
            The store is corrupt (the message lists the first problems), or the journal was tampered with (the
            message names the first bad row); nothing is modified.
        """
        self.db.check()
        result = self.verify_journal()
        if not result.ok:
            raise ProjectError(f"{self.db_path}: the journal fails its check: {result.problem}")

    def verify_journal(self) -> _journal.JournalCheck:
        """Walk the journal's hash chain (see :mod:`cytoreview.review.journal`) and say what, if anything, is wrong.

        Returns
        -------
        JournalCheck
            ``ok``, the number of rows, the first bad row's id and a one-line ``problem``: a row edited, deleted or
            re-inserted, an append-only trigger dropped, rows cut off the end, or rows without a hash.
        """
        return self.db.read(_journal.verify)

    def close(self) -> None:
        """Close the connection (all changes are already committed)."""
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Project({str(self.folder)!r})"

    @property
    def read_only(self) -> bool:
        """True when the project was opened read-only (its folder or database cannot be written here)."""
        return self.db.read_only

    @property
    def db_path(self) -> Path:
        """Path of ``project.sqlite``."""
        return self.folder / DB_NAME

    @property
    def predictions_dir(self) -> Path:
        """Folder for prediction stores belonging to this project."""
        return self.folder / "predictions"

    # ================================================================== settings
    def get_setting(self, key: str, default=None):
        """Return a JSON-valued project setting."""
        return self.db.get_setting(key, default)

    def set_setting(self, key: str, value) -> None:
        """Store a JSON-serialisable project setting."""
        self.db.set_setting(key, value)

    # ================================================================== images
    def add_image(self, path: str | os.PathLike, *, kind: str, mpp: float, case_id: str | None = None,
                  plane_shape: tuple[int, int] | None = None, checksum: str | None = None) -> int:
        """Register an image (slide file or field-set folder) and return its id.

        Adding the same path again returns the existing id (and fills in ``case_id``/``plane_shape`` if they were
        unknown); a different ``kind`` or ``mpp`` for a known path is an error. A registered image that was moved
        (its old path gone, the same content fingerprint, kind and pixel size at ``path``) is followed to its new
        path and keeps its id, items and labels, instead of coming back as a second image.

        Parameters
        ----------
        path : path-like
            Slide file or field-set folder; must exist (its quick checksum is stored).
        kind : {"wsi", "fields"}
        mpp : float
            Micrometres per pixel at level 0.
        case_id : str, optional
            Case identifier (exports group splits by it).
        plane_shape : (int, int), optional
            ``(height, width)`` in level-0 px of one field / the slide; used for field items' bounding boxes.
            When omitted it is read with :func:`cytoreview.io.open_image` if that is available.
        """
        return _images.add_image(self.db, path, kind=kind, mpp=mpp, case_id=case_id, plane_shape=plane_shape,
                                 checksum=checksum)

    def images(self) -> list[ImageRecord]:
        """All images, by id."""
        return _images.list_images(self.db)

    def image(self, image_id: int) -> ImageRecord:
        """The image with id ``image_id``."""
        return _images.get_image(self.db, image_id)

    def image_problems(self, image_ids=None, *, content: bool = True) -> dict[int, str]:
        """``{image_id: reason}`` of the images that are missing or now hold other content than when they were
        added; see :func:`cytoreview.review.images.image_problems`."""
        return _images.image_problems(self.db, image_ids, content=content)

    # ================================================================== items
    def add_items(self, image_id: int, items: Iterable[Mapping]) -> list[int]:
        """Add (or update, matched on image/level/field/z/geometry) items and return their ids in order.

        Each mapping has ``level``, ``geometry`` and optionally ``field`` (0), ``z`` (0), ``model`` ("pack@ver"),
        ``model_class``, ``model_labels`` (list, for multi-label field items), ``model_prob``, ``uncertainty``.
        A model prediction becomes the item's label while no reviewer has labelled it (journalled as an
        ``"import"`` by ``"model:<pack>@<ver>"``); a reviewer's label is never overwritten.
        """
        return _items.add_items(self.db, image_id, items)

    def n_items(self, image_id: int | None = None) -> int:
        """Number of items (of one image)."""
        return _items.count(self.db, image_id)

    def item(self, item_id: int, blind_for: str | None = None) -> Item:
        """One item as an :class:`~cytoreview.review.items.Item` (see :meth:`items` for ``blind_for``)."""
        return _items.get_item(self.db, item_id, blind_for=blind_for)

    def items(self, image_id: int | None = None, level: str | None = None, field: int | None = None,
              ids: Sequence[int] | None = None, blind_for: str | None = None) -> pd.DataFrame:
        """Items as a DataFrame, one row per item, ordered by id.

        Columns (:data:`cytoreview.review.items.ITEM_COLUMNS`, the fields of
        :class:`~cytoreview.review.items.Item`): item_id, image_id, level, field, z, geometry (dict), x_min, y_min,
        x_max, y_max, model, model_class, model_labels, model_prob, uncertainty, label (list of ids or None),
        reviewed, reviewer, source, updated_at.

        Parameters
        ----------
        blind_for : str, optional
            Blinded second read: hide the model's output (model, model_class, model_labels, model_prob,
            uncertainty are None) and every other reviewer's label; ``label``/``reviewed``/``reviewer``/``source``
            then describe only ``blind_for``'s own review.
        """
        return _items.items_frame(self.db, image_id=image_id, level=level, field=field, ids=ids,
                                  blind_for=blind_for)

    # ================================================================== labelling
    def set_label(self, item_id: int, class_ids: int | Iterable[int], reviewer: str, dwell_s: float | None = None,
                  *, source: str = "reviewer") -> int:
        """Set an item's label and return the journal id; committed to disk before it returns.

        Parameters
        ----------
        item_id : int
        class_ids : int or iterable of int
            One class id (Python or numpy integer, e.g. a value read from a napari Labels layer), or several for a
            (multi-label) field item; ``UNSURE`` marks "cannot tell". An empty list is allowed for a field item
            ("none of the classes").
        reviewer : str
            Who made the change (non-empty).
        dwell_s : float, optional
            Seconds the reviewer looked at the item before deciding.
        source : str
            ``"reviewer"`` (default) or ``"import:<file>"`` for labels read from an annotation file
            (journalled with action ``"import"`` and not on the reviewer's undo stack).
        """
        return _journal.set_label(self.db, item_id, class_ids, reviewer, dwell_s, source=source)

    def accept(self, item_id: int, reviewer: str, dwell_s: float | None = None) -> int:
        """Confirm the model's label for an item (journal action ``"accept"``); return the journal id."""
        return _journal.accept(self.db, item_id, reviewer, dwell_s)

    def set_labels(self, item_ids: Iterable[int], class_ids: int | Iterable[int], reviewer: str,
                   dwell_s: float | None = None) -> list[int]:
        """Give every item of ``item_ids`` the label ``class_ids`` in ONE transaction (one commit, all or none).

        Each item gets its own journal row (action ``"set"``, as :meth:`set_label` writes it), and the rows are one
        group: one :meth:`undo` (from any dock) takes them all back, one :meth:`redo` re-applies them. Returns the
        journal ids in the order of ``item_ids`` (an id given twice is changed once).

        Raises
        ------
        ProjectError
            An item does not exist or cannot take the label: nothing is changed.
        """
        return _journal.set_labels(self.db, item_ids, class_ids, reviewer, dwell_s)

    def accept_many(self, item_ids: Iterable[int], reviewer: str, dwell_s: float | None = None) -> list[int]:
        """Confirm the model's label of every item of ``item_ids`` in one transaction, as one undo group (see
        :meth:`set_labels`); return the journal ids. An item without a model call changes nothing at all."""
        return _journal.set_labels(self.db, item_ids, None, reviewer, dwell_s, accept_calls=True)

    @contextmanager
    def one_edit(self) -> Iterator[None]:
        """Context manager: every change made inside the block is ONE transaction (all saved, or none if anything in
        it raises) and ONE undo group (one :meth:`undo` from any dock takes it all back, one :meth:`redo` re-applies
        it). Use it for a user action that is several store changes, e.g.::

            with project.one_edit():
                project.set_label(old_region, [not_a_region], "ann")
                project.set_label(new_region, [tumour], "ann")

        Blocks nest (an inner one joins the outer). A class added inside a block that fails is gone with the rest
        of it (the schema is read again). :mod:`cytoreview.review.edits` and :mod:`cytoreview.review.brush` make
        each of their edits one.
        """
        try:
            with _journal.one_change(self.db):
                yield
        except BaseException:
            self.schema.refresh()  # the rolled-back transaction may have held a class the schema had cached
            raise

    def group_items(self, journal_id: int) -> list[int]:
        """The item ids changed by the group of journal row ``journal_id`` (one :meth:`set_labels` call, or the
        undo / redo of one), in journal order; just the row's item when it is not in a group."""
        return _journal.group_items(self.db, journal_id)

    def can_undo(self, reviewer: str) -> bool:
        """Whether ``reviewer`` has an action to undo."""
        return bool(self.db.read(self._undo_stacks.stacks, reviewer)[0])

    def can_redo(self, reviewer: str) -> bool:
        """Whether ``reviewer`` has an undone action to redo."""
        return bool(self.db.read(self._undo_stacks.stacks, reviewer)[1])

    def undo(self, reviewer: str, *, force: bool = False) -> int | None:
        """Undo ``reviewer``'s latest not-yet-undone change (their own journal only).

        Writes a new journal row (action ``"undo"``) restoring the old label; nothing is deleted. A change made by
        :meth:`set_labels` / :meth:`accept_many` is undone whole (one row per item, one transaction). Returns the
        (last) new journal id, or None when there is nothing to undo.

        Raises
        ------
        ProjectError
            If somebody else changed the item since (undoing would silently discard their label); pass
            ``force=True`` to undo anyway.
        """
        return _journal.undo_redo(self.db, self._undo_stacks, reviewer, "undo", force)

    def redo(self, reviewer: str, *, force: bool = False) -> int | None:
        """Re-apply ``reviewer``'s most recently undone change (journal action ``"redo"``); None if none."""
        return _journal.undo_redo(self.db, self._undo_stacks, reviewer, "redo", force)

    # ================================================================== reading the journal
    def history(self, item_id: int | None = None, reviewer: str | None = None) -> pd.DataFrame:
        """Journal rows (oldest first) as a DataFrame.

        Columns: journal_id, item_id, action, old (list or None), new (list or None), source, reviewer,
        probability, timestamp, dwell_s, ref (journal id an undo/redo refers to).
        """
        return _journal.history(self.db, item_id=item_id, reviewer=reviewer)

    def reviewers(self) -> list[str]:
        """Everyone who has labelled something, sorted."""
        return _journal.reviewers(self.db)

    def reviewer_labels(self, reviewer: str) -> dict[int, list[int]]:
        """``{item_id: label}`` of ``reviewer``'s current labels; ``"model"`` gives the model's labels."""
        return _journal.reviewer_labels(self.db, reviewer)

    # ================================================================== predictions
    def import_predictions(self, image_id: int, store_path: str | os.PathLike, *, allow_partial: bool = False) -> int:
        """Import a prediction zarr store (an unfinished one only with ``allow_partial=True``); see
        :func:`cytoreview.review.predictions.import_predictions`."""
        return _predictions.import_predictions(self, image_id, store_path, allow_partial=allow_partial)

    def prediction_stores(self) -> list[PredictionStoreRecord]:
        """The prediction stores imported into this project (image_id, path, pack, pack_version, n_items,
        imported_at), in import order."""
        return _images.prediction_stores(self.db)

    # ================================================================== the queue
    def queue(self, strategy: str = "uncertainty", **kwargs) -> list[int]:
        """Unreviewed item ids in review order; see :func:`cytoreview.review.queue.queue`."""
        return _queue.queue(self, strategy, **kwargs)

    def next_item(self, reviewer: str, strategy: str | None = None, **kwargs) -> int | None:
        """The next item for ``reviewer`` after their cursor; see :func:`cytoreview.review.queue.next_item`."""
        return _queue.next_item(self, reviewer, strategy, **kwargs)

    def field_suspicion(self, image_id: int) -> list[_queue.FieldSuspicion]:
        """The fields of a field set, most suspicious first (what the ``"suspicion"`` queue orders by); see
        :func:`cytoreview.review.queue.field_suspicion`."""
        return _queue.field_suspicion(self, image_id)

    def cursor(self, reviewer: str) -> tuple[int | None, str | None]:
        """``(item_id, strategy)`` of ``reviewer``'s cursor, ``(None, None)`` if they have none."""
        return _items.get_cursor(self.db, reviewer)

    def set_cursor(self, reviewer: str, item_id: int | None, strategy: str) -> None:
        """Remember where ``reviewer`` is (committed at once, so a reopened project resumes there)."""
        _items.set_cursor(self.db, reviewer, item_id, strategy)

    # ================================================================== summaries
    def label_table(self, only_reviewed: bool = False) -> pd.DataFrame:
        """One row per item: THE export contract; see :func:`cytoreview.review.tables.label_table`."""
        return _tables.label_table(self, only_reviewed=only_reviewed)

    def progress(self):
        """Review progress; see :func:`cytoreview.review.tables.progress`."""
        return _tables.progress(self)

    def class_counts(self, only_reviewed: bool = False) -> pd.DataFrame:
        """Items per class; see :func:`cytoreview.review.tables.class_counts`."""
        return _tables.class_counts(self, only_reviewed=only_reviewed)

    def agreement(self, reviewer_a: str, reviewer_b: str):
        """Agreement between two reviewers (or ``"model"``); see :func:`cytoreview.review.agreement.agreement`."""
        return _agreement.agreement(self, reviewer_a, reviewer_b)

    def adjudication_queue(self, reviewer_a: str, reviewer_b: str) -> list[int]:
        """Items where two readers disagree; see :func:`cytoreview.review.agreement.adjudication_queue`."""
        return _agreement.adjudication_queue(self, reviewer_a, reviewer_b)
