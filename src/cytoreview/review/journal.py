"""The journal: the append-only record of every label change, and the only writer of the ``journal`` and
``reviews`` tables.

Every label change -- a reviewer's set / accept, an undo or redo, a class merge, a model's prediction or an
imported annotation becoming an item's label -- is one :class:`JournalEntry` written by :func:`append`, inside the
same ``BEGIN IMMEDIATE`` transaction that changes the item's label (so both are on disk, or neither, before the
call returns). Nothing is ever updated or deleted (triggers refuse it); undo and redo are new rows.

An entry's ``prev`` is the item's review state before the change (``{"reviewed", "reviewer", "source", "own"}``,
``own`` = the acting reviewer's own label then), which is what an undo restores.

Tamper evidence: each row carries ``hash``, the sha256 of its id, its columns as stored and the previous row's hash
(:func:`row_hash`; the first row chains to :data:`CHAIN_ROOT`). Ids are consecutive. :func:`verify` walks the chain
and reports the first row that was edited, deleted, re-inserted or written by a program that does not keep the
chain, and whether the append-only triggers were dropped or rows were cut off the end. Without a secret this cannot
stop someone who recomputes every hash after an edit; it makes every edit that does not visible. A project of
schema version 1 is chained when first opened where it can be written (:func:`chain_existing_rows`): its rows are
sealed as they are then.

Batch rows: when a bulk model call adds many new items at once (:func:`append_batch`, at least
:data:`BATCH_MIN_ITEMS` consecutive item ids with the same source), the model's calls becoming their labels are ONE
``"import"`` row instead of one per item: ``item_id`` is the first item, ``old`` and ``new`` are NULL, and ``prev``
holds the batch (``{"batch": {"first", "last", "labels", "label", "probability"}}``: the distinct label sets, each
item's index into them and each item's probability). The row's hash covers that text like any other column, so the
whole batch is chained and tamper-evident. :func:`history` shows a batch row as one ``"import"`` row per item, exactly
as if each had its own row (same journal id for all of them).

Groups: one reviewer action that changes many items at once (a gallery key press on a page of cells,
:func:`set_labels`) is one transaction of one row per item, and each of those rows' ``prev`` carries
``"group": [first, last]``, the journal ids of the group's first and last row (consecutive: one writer appends them
together). :func:`undo_redo` takes a whole group back (or re-applies it) as one step, in one transaction, and the
undo / redo rows it writes form a group of their own. The group is inside ``prev``, so it is hashed and chained like
every other column. :func:`one_change` makes any sequence of label changes one group: a region reshaped (the old
outline "not a region", the new one labelled), a cell moved, a brush stroke that merges and cuts regions.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import sqlite3
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cytoreview.errors import ProjectError
from cytoreview.review.connection import Database, dumps, loads, now_iso
from cytoreview.review.schema import LabelSchema, load_classes

#: Journal actions a reviewer can undo (in their own journal).
UNDOABLE_ACTIONS = ("set", "accept")
#: Longest reviewer name, characters.
MAX_REVIEWER_CHARS = 100
#: Longest time a reviewer can be said to have looked at one item, seconds (a day).
MAX_DWELL_S = 86_400.0
#: Every journal action.
ACTIONS = ("set", "accept", "undo", "redo", "merge", "import")
#: Columns of :func:`history`.
HISTORY_COLUMNS = ["journal_id", "item_id", "action", "old", "new", "source", "reviewer", "probability", "timestamp",
                   "dwell_s", "ref"]
_COLUMNS = ("item_id", "old", "new", "source", "reviewer", "probability", "timestamp", "dwell_s", "action", "ref",
            "prev")
#: What a row's hash covers, in order (then the previous row's hash).
_HASHED = ("id", *_COLUMNS)
#: The "previous hash" of the first journal row.
CHAIN_ROOT = "0" * 64
#: The append-only triggers :func:`verify` expects on the journal.
TRIGGERS = ("journal_no_update", "journal_no_delete")
#: Fewest new items of one source journalled as one batch row (fewer get a row each).
BATCH_MIN_ITEMS = 64
#: SQL condition that is true exactly for batch rows (the partial index ``journal_batches`` is on it).
BATCH_WHERE = "action = 'import' AND new IS NULL"


@dataclass(frozen=True)
class JournalEntry:
    """One journal row.

    Attributes
    ----------
    item_id : int
    action : {"set", "accept", "undo", "redo", "merge", "import"}
    old, new : list of int or None
        The item's label before and after.
    source : str
        ``"reviewer"``, ``"model:<pack>@<version>"`` or ``"import:<file>"``.
    reviewer : str or None
        Who acted (None for a model's prediction).
    probability : float or None
        The model's probability of its class for the item when the change was made.
    timestamp : str
        ISO 8601 UTC.
    dwell_s : float or None
        Seconds the reviewer looked at the item before deciding.
    ref : int or None
        The journal id an undo / redo refers to.
    prev : dict or None
        The item's review state before the change (what an undo restores).
    id : int or None
        The journal id (None until :func:`append` wrote it).
    """

    item_id: int
    action: str
    old: list | None
    new: list | None
    source: str
    reviewer: str | None
    probability: float | None
    timestamp: str
    dwell_s: float | None = None
    ref: int | None = None
    prev: dict | None = None
    id: int | None = None


@dataclass
class _PendingGroup:
    """The rows of an open :func:`one_change`: written together when it ends (their ids are known before)."""

    first_id: int | None = None
    entries: list = field(default_factory=list)


#: The open :func:`one_change` of each connection (one writer holds a connection's write lock at a time).
_PENDING: dict[sqlite3.Connection, _PendingGroup] = {}


@contextmanager
def one_change(db: Database) -> Iterator[None]:
    """Make every label change inside the block ONE transaction and ONE undo group (see the module docstring):
    all saved or none, and one :func:`undo_redo` takes them all back. Nested blocks join the outer one.

    The changes' journal rows are written when the block ends, with the ids the calls inside it returned (nothing
    else can write the journal meanwhile: the block holds the write lock). Model-import rows written inside it
    join the group too; undo skips them as always (they are not on any reviewer's stack).
    """
    with db.write() as con:
        if con in _PENDING:
            yield
            return
        pending = _PENDING[con] = _PendingGroup()
        try:
            yield
        finally:
            del _PENDING[con]
        if pending.entries:
            ids = append(con, pending.entries, group=True)
            if ids[0] != pending.first_id:  # cannot happen under the write lock: refuse rather than mislabel
                raise ProjectError(f"journal rows of one change got ids {ids[0]}.. instead of {pending.first_id}..")


def _next_id(con: sqlite3.Connection) -> tuple[int, str]:
    """The next journal id and the hash the next row chains to."""
    seq = con.execute("SELECT seq FROM sqlite_sequence WHERE name='journal'").fetchone()
    last = con.execute("SELECT id, hash FROM journal ORDER BY id DESC LIMIT 1").fetchone()
    next_id = max(int(seq[0]) if seq else 0, int(last[0]) if last else 0) + 1
    return next_id, ((last[1] or CHAIN_ROOT) if last else CHAIN_ROOT)


def append(con: sqlite3.Connection, entries: Sequence[JournalEntry], *, group: bool = False) -> list[int]:
    """Write ``entries`` (inside the caller's write transaction) and return their journal ids, in order.

    The one write path of the journal: every row goes through here. ``group=True`` (and more than one entry) marks
    the rows as one group (see the module docstring): each row's ``prev`` (a dict) gets ``"group": [first, last]``.
    Inside :func:`one_change` the rows join its group and are written when it ends.
    """
    if not entries:
        return []
    pending = _PENDING.get(con)
    if pending is not None:
        if pending.first_id is None:
            pending.first_id = _next_id(con)[0]
        start = pending.first_id + len(pending.entries)
        pending.entries.extend(entries)
        return [start + k for k in range(len(entries))]
    # one writer holds the BEGIN IMMEDIATE lock: the rows get the next ids, each chained to the one before
    next_id, prev_hash = _next_id(con)
    span = [next_id, next_id + len(entries) - 1] if group and len(entries) > 1 else None
    rows = []
    for k, e in enumerate(entries):
        if e.action not in ACTIONS:
            raise ProjectError(f"journal action {e.action!r} is not one of {', '.join(ACTIONS)}")
        prev = e.prev if span is None else {**(e.prev or {}), "group": span}
        row = (next_id + k, int(e.item_id), dumps(e.old), dumps(e.new), e.source, e.reviewer, _real(e.probability),
               e.timestamp, _real(e.dwell_s), e.action, None if e.ref is None else int(e.ref), dumps(prev))
        prev_hash = row_hash(row, prev_hash)
        rows.append((*row, prev_hash))
    names = (*_HASHED, "hash")
    con.executemany(f"INSERT INTO journal({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", rows)
    return [next_id + k for k in range(len(rows))]


def append_batch(con: sqlite3.Connection, first_item: int, labels: Sequence[str], probabilities: Sequence,
                 source: str, stamp: str) -> int:
    """Journal (inside the caller's write transaction) that the new items ``first_item`` .. ``first_item + n - 1``
    got the model's calls as their labels: one batch row; returns its journal id.

    ``labels`` are the items' label JSON texts (as stored), ``probabilities`` their model probabilities (None or NaN
    for none), ``source`` the one ``"model:<pack>@<version>"`` they all came from.
    """
    if not labels:
        raise ProjectError("a journal batch needs at least one item")
    if len(probabilities) != len(labels):
        raise ProjectError(f"journal batch: {len(labels)} labels but {len(probabilities)} probabilities")
    distinct = {text: k for k, text in enumerate(dict.fromkeys(labels))}  # in order of first appearance
    batch = {"first": int(first_item), "last": int(first_item) + len(labels) - 1,
             "labels": [json.loads(text) for text in distinct], "label": list(map(distinct.__getitem__, labels)),
             "probability": _reals(probabilities)}
    return append(con, [JournalEntry(item_id=int(first_item), action="import", old=None, new=None, source=source,
                                     reviewer=None, probability=None, timestamp=stamp, prev={"batch": batch})])[0]


def batch_of(entry_prev) -> dict | None:
    """The batch a journal row's ``prev`` describes (see :func:`append_batch`), None for an ordinary row."""
    if isinstance(entry_prev, dict) and isinstance(entry_prev.get("batch"), dict):
        return entry_prev["batch"]
    return None


def _reals(values: Sequence) -> list:
    """:func:`_real` of every value, a column at a time where they are plain floats."""
    if set(map(type, values)) <= {float}:
        column = np.array(values, dtype=np.float64)
        if not np.isnan(column).any():
            return list(values)
    return [_real(v) for v in values]


def _real(value) -> float | None:
    """A REAL column's value as SQLite will give it back (NaN is stored as NULL)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def row_hash(row: Sequence, prev_hash: str) -> str:
    """sha256 (hex) of one journal row -- its id and columns as stored, in :data:`_HASHED` order -- and the hash of
    the row before it."""
    payload = json.dumps([*row, prev_hash], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def chain_existing_rows(con: sqlite3.Connection) -> int:
    """Give every journal row its chained hash (inside the caller's transaction): the schema 1 -> 2 migration.

    The update trigger is lifted for this one transaction and put back as it was. Returns the number of rows.
    """
    trigger = con.execute("SELECT sql FROM sqlite_master WHERE type='trigger' AND name='journal_no_update'").fetchone()
    con.execute("DROP TRIGGER IF EXISTS journal_no_update")
    prev_hash, n = CHAIN_ROOT, 0
    rows = con.execute(f"SELECT {', '.join(_HASHED)} FROM journal ORDER BY id").fetchall()
    for row in rows:
        prev_hash = row_hash(row, prev_hash)
        con.execute("UPDATE journal SET hash=? WHERE id=?", (prev_hash, row[0]))
        n += 1
    con.execute(trigger[0] if trigger else "CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal "
                "BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END")
    return n


@dataclass(frozen=True)
class JournalCheck:
    """What :func:`verify` found.

    Attributes
    ----------
    ok : bool
        True when every row is where the chain says and no trigger is missing.
    n_rows : int
        Rows in the journal.
    bad_row : int or None
        Id of the first row that fails (or where rows are missing), None when ``ok`` or the problem is not a row.
    problem : str
        One line saying what is wrong ("" when ``ok``).
    """

    ok: bool
    n_rows: int
    bad_row: int | None = None
    problem: str = ""


def verify(con: sqlite3.Connection) -> JournalCheck:
    """Walk the journal's hash chain; report the first row that was edited, deleted, re-inserted or unchained."""
    columns = {r[1] for r in con.execute("PRAGMA table_info(journal)")}
    n_rows = con.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
    if "hash" not in columns:
        return JournalCheck(False, n_rows, None, "the journal has no hash chain (a project of schema version 1 "
                                                 "opened read-only); open it where it can be written to chain it")
    present = {name: sql for name, sql in con.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='trigger' AND tbl_name='journal'")}
    for name in TRIGGERS:
        if name not in present or "RAISE(ABORT" not in (present[name] or "").upper().replace(" ", ""):
            return JournalCheck(False, n_rows, None, f"the journal's append-only trigger {name} was dropped or "
                                                     "altered: rows may have been edited")
    prev_hash, expected_id = CHAIN_ROOT, 1
    cursor = con.execute(f"SELECT {', '.join(_HASHED)}, hash FROM journal ORDER BY id")
    while True:
        batch = cursor.fetchmany(10_000)
        if not batch:
            break
        for *row, stored in batch:
            jid = row[0]
            what = f"journal row {jid} (item {row[1]}, {row[9]} by {row[5] or 'model'} at {row[7]})"
            if jid != expected_id:
                return JournalCheck(False, n_rows, expected_id,
                                    f"journal rows {expected_id}..{jid - 1} are missing (deleted)" if jid > expected_id
                                    else f"{what} is out of order")
            if stored is None:
                return JournalCheck(False, n_rows, jid, f"{what} has no hash: written by a program that does not "
                                                        "keep the journal's chain")
            if row_hash(row, prev_hash) != stored:
                return JournalCheck(False, n_rows, jid, f"{what} does not match its hash: edited, or re-inserted "
                                                        "after a deletion")
            prev_hash, expected_id = stored, jid + 1
    seq = con.execute("SELECT seq FROM sqlite_sequence WHERE name='journal'").fetchone()
    if seq is not None and int(seq[0]) >= expected_id:
        return JournalCheck(False, n_rows, expected_id, f"journal rows {expected_id}..{int(seq[0])} were deleted "
                                                        "from its end")
    return JournalCheck(True, n_rows)


# ---------------------------------------------------------------------- checking what a reviewer asks for
def check_reviewer(reviewer) -> None:
    """Raise :class:`ProjectError` unless ``reviewer`` is a usable reviewer name.

    A name is text of 1 to :data:`MAX_REVIEWER_CHARS` characters, not blank, without control or format characters
    (NUL, newline, ESC, bidirectional overrides: they forge or garble history lines, CSVs and terminals); ``"model"``
    is reserved.
    """
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise ProjectError(f"reviewer {reviewer!r} must be a non-empty name")
    if len(reviewer) > MAX_REVIEWER_CHARS:
        raise ProjectError(f"reviewer name {reviewer[:20]!r}... is {len(reviewer)} characters; at most "
                           f"{MAX_REVIEWER_CHARS}")
    bad = next((ch for ch in reviewer if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        raise ProjectError(f"reviewer name {reviewer[:40]!r} contains the control character U+{ord(bad):04X}; "
                           "use printable characters only")
    if reviewer == "model":
        raise ProjectError("reviewer name 'model' is reserved for the model's own labels")


def check_dwell(dwell_s) -> float | None:
    """``dwell_s`` as a float of finite seconds, 0 to :data:`MAX_DWELL_S` (None stays None), else ProjectError."""
    if dwell_s is None:
        return None
    if isinstance(dwell_s, bool):
        raise ProjectError(f"dwell_s {dwell_s!r} is not a number of seconds")
    try:
        value = float(dwell_s)
    except (TypeError, ValueError):
        raise ProjectError(f"dwell_s {dwell_s!r} is not a number of seconds") from None
    if not (math.isfinite(value) and 0 <= value <= MAX_DWELL_S):
        raise ProjectError(f"dwell_s {dwell_s!r} must be finite seconds between 0 and {MAX_DWELL_S:g}")
    return value


def _is_class_id(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def class_id_list(class_ids, item_id) -> list[int]:
    """``class_ids`` (one id or an iterable of ids; Python or numpy integers) as a list of ``int``."""
    if _is_class_id(class_ids):
        return [int(class_ids)]
    if isinstance(class_ids, np.ndarray) and class_ids.ndim == 0 and _is_class_id(class_ids[()]):
        return [int(class_ids[()])]
    if isinstance(class_ids, (str, bytes, Mapping)) or not isinstance(class_ids, Iterable):
        raise ProjectError(f"label for item {item_id}: {class_ids!r} is not a class id or a list of class ids")
    ids = list(class_ids)
    bad = [c for c in ids if not _is_class_id(c)]
    if bad:
        raise ProjectError(f"label for item {item_id}: class id {bad[0]!r} is not an integer")
    return [int(c) for c in ids]


# ---------------------------------------------------------------------- the reviews table
def _own_label(con, item_id: int, reviewer: str) -> list | None:
    own = con.execute("SELECT label FROM reviews WHERE item_id=? AND reviewer=?", (item_id, reviewer)).fetchone()
    return None if own is None else json.loads(own[0])


def _write_review(con, item_id: int, reviewer: str, label: list | None, stamp: str) -> None:
    if label is None:
        con.execute("DELETE FROM reviews WHERE item_id=? AND reviewer=?", (item_id, reviewer))
    else:
        con.execute("INSERT INTO reviews(item_id, reviewer, label, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(item_id, reviewer) DO UPDATE SET label=excluded.label, "
                    "updated_at=excluded.updated_at", (item_id, reviewer, dumps(label), stamp))


# ---------------------------------------------------------------------- label changes
def set_label(db: Database, item_id: int, class_ids, reviewer: str, dwell_s: float | None = None, *,
              source: str = "reviewer") -> int:
    """Set an item's label; see :meth:`cytoreview.review.Project.set_label`."""
    ids = class_id_list(class_ids, item_id)
    if source == "reviewer":
        action = "set"
    elif isinstance(source, str) and source.startswith("import:") and len(source) > 7:
        action = "import"
    else:
        raise ProjectError(f"label source {source!r} is not 'reviewer' or 'import:<file>'")
    return _change(db, item_id, ids, reviewer, dwell_s, action=action, source=source)


def accept(db: Database, item_id: int, reviewer: str, dwell_s: float | None = None) -> int:
    """Confirm the model's label of an item; see :meth:`cytoreview.review.Project.accept`."""
    return _change(db, item_id, None, reviewer, dwell_s, action="accept", source="reviewer")


def _change(db: Database, item_id, ids, reviewer, dwell_s, *, action, source) -> int:
    check_reviewer(reviewer)
    dwell_s = check_dwell(dwell_s)
    with db.write() as con:
        schema = LabelSchema.from_stored(load_classes(con))  # the classes as they are inside this transaction
        return append(con, [_change_entry(con, db.path.parent, schema, item_id, ids, reviewer, dwell_s,
                                          action=action, source=source, stamp=now_iso())])[0]


def set_labels(db: Database, item_ids: Sequence[int], class_ids, reviewer: str, dwell_s: float | None = None, *,
               accept_calls: bool = False) -> list[int]:
    """Label many items in ONE transaction, one journal row each, the rows one undo group; see
    :meth:`cytoreview.review.Project.set_labels`. ``accept_calls=True`` accepts each item's model call instead
    (``class_ids`` is then ignored). Returns the journal ids, in the order of ``item_ids`` (repeats dropped)."""
    check_reviewer(reviewer)
    dwell_s = check_dwell(dwell_s)
    unique = list(dict.fromkeys(int(i) for i in item_ids))
    if not unique:
        return []
    ids = None if accept_calls else class_id_list(class_ids, unique[0])
    action = "accept" if accept_calls else "set"
    with db.write() as con:  # all rows or none: an error on any item leaves the project as it was
        schema = LabelSchema.from_stored(load_classes(con))
        stamp = now_iso()
        entries = [_change_entry(con, db.path.parent, schema, iid, ids, reviewer, dwell_s, action=action,
                                 source="reviewer", stamp=stamp) for iid in unique]
        return append(con, entries, group=True)


def _change_entry(con, where, schema: LabelSchema, item_id, ids, reviewer, dwell_s, *, action, source,
                  stamp: str) -> JournalEntry:
    """Change one item's label inside the caller's transaction; the journal entry to append for it."""
    row = con.execute("SELECT level, label, reviewed, reviewer, source, model_class, model_labels, model_prob "
                      "FROM items WHERE id=?", (item_id,)).fetchone()
    if row is None:
        raise ProjectError(f"no item with id {item_id!r} in project {where}")
    level, old, reviewed, old_reviewer, old_source, mclass, mlabels, mprob = row
    if action == "accept":
        if mclass is None and mlabels is None:
            raise ProjectError(f"item {item_id} has no model prediction to accept")
        ids = loads(mlabels) if mlabels is not None else [mclass]
        ids = [schema.resolve(i) for i in ids]
    new = schema.check_assignable(ids)
    if level != "field" and len(new) != 1:
        raise ProjectError(f"item {item_id} is a {level} item: it takes exactly one class, got {new}")
    prev = {"reviewed": reviewed, "reviewer": old_reviewer, "source": old_source,
            "own": _own_label(con, item_id, reviewer)}
    con.execute("UPDATE items SET label=?, reviewed=1, reviewer=?, source=?, updated_at=? WHERE id=?",
                (dumps(new), reviewer, source, stamp, item_id))
    _write_review(con, item_id, reviewer, new, stamp)
    return JournalEntry(item_id=item_id, action=action, old=loads(old), new=new, source=source, reviewer=reviewer,
                        probability=mprob, timestamp=stamp, dwell_s=dwell_s, prev=prev)


class UndoStacks:
    """Each reviewer's undo and redo stacks (journal ids of undoable actions), replayed from the journal.

    The journal is append-only and its ids only grow, so the stacks are cached per reviewer with the last journal
    id replayed, and each call replays only the newer rows (another process's included).
    """

    def __init__(self):
        self._cache: dict[str, tuple[int, list[int], list[int]]] = {}

    def stacks(self, con: sqlite3.Connection, reviewer: str) -> tuple[list[int], list[int]]:
        """``(undo, redo)`` of ``reviewer`` as of now (copies: changing them changes nothing)."""
        last, undo, redo = self._cache.get(reviewer, (0, [], []))
        undo, redo = list(undo), list(redo)
        rows = con.execute("SELECT id, action, ref FROM journal WHERE reviewer=? AND id>? AND action IN "
                           "('set', 'accept', 'undo', 'redo') ORDER BY id", (reviewer, last)).fetchall()
        for jid, action, ref in rows:
            if action in UNDOABLE_ACTIONS:
                undo.append(jid)
                redo.clear()
            elif action == "undo":
                if ref in undo:
                    undo.remove(ref)
                redo.append(ref)
            else:
                if ref in redo:
                    redo.remove(ref)
                undo.append(ref)
            last = jid
        self._cache[reviewer] = (last, list(undo), list(redo))
        return undo, redo


def undo_redo(db: Database, stacks: UndoStacks, reviewer: str, action: str, force: bool = False) -> int | None:
    """Undo (``action="undo"``) or redo ``reviewer``'s latest change; see :meth:`cytoreview.review.Project.undo`.

    When that change is one row of a group (:func:`set_labels`), every row of the group still on the stack is
    taken back (or re-applied) with it, in one transaction: all of them or, if one cannot be, none. Returns the
    journal id of the last row written.
    """
    check_reviewer(reviewer)
    with db.write() as con:
        undo, redo = stacks.stacks(con, reviewer)
        stack = undo if action == "undo" else redo
        if not stack:
            return None
        targets = _group_on_stack(con, stack)
        stamp = now_iso()
        entries = [_undo_entry(con, target, reviewer, action, force, stamp) for target in targets]
        return append(con, entries, group=True)[-1]


def _group_on_stack(con: sqlite3.Connection, stack: list[int]) -> list[int]:
    """The journal ids to take from the top of ``stack`` in one step, in the order to process them: the top row
    alone, or every row of its group on the stack (an undo stack's newest first, a redo stack's oldest first)."""
    top = stack[-1]
    span = group_of(loads(con.execute("SELECT prev FROM journal WHERE id=?", (top,)).fetchone()[0]))
    if span is None:
        return [top]
    first, last = span
    members = set(range(first, last + 1))
    targets = []
    for jid in reversed(stack):  # the group's rows lie together on top of the stack
        if jid not in members:
            break
        targets.append(jid)
    return targets


def group_of(entry_prev) -> tuple[int, int] | None:
    """The ``(first, last)`` journal ids of the group a row's ``prev`` names (see the module docstring), or None."""
    if isinstance(entry_prev, dict) and isinstance(entry_prev.get("group"), list) and len(entry_prev["group"]) == 2:
        return int(entry_prev["group"][0]), int(entry_prev["group"][1])
    return None


def _undo_entry(con, target: int, reviewer: str, action: str, force: bool, stamp: str) -> JournalEntry:
    """Undo or redo journal row ``target`` inside the caller's transaction; the journal entry to append for it."""
    item_id, t_old, t_new, t_prev = con.execute(
        "SELECT item_id, old, new, prev FROM journal WHERE id=?", (target,)).fetchone()
    label, reviewed, cur_reviewer, cur_source, mprob = con.execute(
        "SELECT label, reviewed, reviewer, source, model_prob FROM items WHERE id=?", (item_id,)).fetchone()
    expect = t_new if action == "undo" else t_old
    # Another reviewer may have set the very same label since (ann -> 2, bob -> 2): the label still matches,
    # but undoing would wipe bob's review. Any later journal row by someone else blocks it.
    other = con.execute("SELECT reviewer, action, timestamp FROM journal WHERE item_id=? AND id>? AND "
                        "reviewer IS NOT ? ORDER BY id DESC LIMIT 1", (item_id, target, reviewer)).fetchone()
    if (other is not None or loads(label) != loads(expect)) and not force:
        last = other or con.execute("SELECT reviewer, action, timestamp FROM journal WHERE item_id=? "
                                    "ORDER BY id DESC LIMIT 1", (item_id,)).fetchone()
        raise ProjectError(
            f"cannot {action} on item {item_id}: it was changed since ({last[1]} by {last[0] or 'model'} at "
            f"{last[2]}); {action} with force=True to overwrite that change")
    prev_now = {"reviewed": reviewed, "reviewer": cur_reviewer, "source": cur_source,
                "own": _own_label(con, item_id, reviewer)}
    if action == "undo":
        p = json.loads(t_prev)
        new_label, new_state, new_own = loads(t_old), p, p["own"]
    else:
        new_label, new_own = loads(t_new), loads(t_new)
        new_state = {"reviewed": 1, "reviewer": reviewer, "source": "reviewer"}
    con.execute("UPDATE items SET label=?, reviewed=?, reviewer=?, source=?, updated_at=? WHERE id=?",
                (dumps(new_label), int(new_state["reviewed"]), new_state["reviewer"], new_state["source"],
                 stamp, item_id))
    _write_review(con, item_id, reviewer, new_own, stamp)
    return JournalEntry(item_id=item_id, action=action, old=loads(label), new=new_label, source="reviewer",
                        reviewer=reviewer, probability=mprob, timestamp=stamp, ref=target, prev=prev_now)


def group_items(db: Database, journal_id: int) -> list[int]:
    """The item ids of the journal rows of ``journal_id``'s group, in journal order (just its item when the row is
    not in a group); see :meth:`cytoreview.review.Project.group_items`."""
    def read(con):
        row = con.execute("SELECT item_id, prev FROM journal WHERE id=?", (int(journal_id),)).fetchone()
        if row is None:
            raise ProjectError(f"no journal row with id {journal_id!r}")
        span = group_of(loads(row[1]))
        if span is None:
            return [int(row[0])]
        return [int(r[0]) for r in con.execute("SELECT item_id FROM journal WHERE id BETWEEN ? AND ? ORDER BY id",
                                               span)]
    return db.read(read)


def relabel_merged(con: sqlite3.Connection, mapping: dict[int, int], reviewer: str) -> int:
    """Relabel (inside the merge's transaction) every item and review carrying a merged-away class.

    One journal row (action ``"merge"``, by ``reviewer``) per item whose label changed; returns how many.
    """
    check_reviewer(reviewer)
    stamp = now_iso()

    def remap(ids):
        return sorted({mapping.get(i, i) for i in ids})

    entries = []
    rows = con.execute("SELECT id, label, reviewed, reviewer, source, model_class, model_labels, model_prob "
                       "FROM items WHERE label IS NOT NULL OR model_labels IS NOT NULL").fetchall()
    for iid, label, reviewed, rv, src, mclass, mlabels, mprob in rows:
        if mlabels is not None:
            ml = loads(mlabels)
            if any(i in mapping for i in ml):
                con.execute("UPDATE items SET model_labels=?, model_class=? WHERE id=?",
                            (dumps(remap(ml)), mapping.get(mclass, mclass), iid))
        if label is None:
            continue
        old = loads(label)
        if not any(i in mapping for i in old):
            continue
        new = remap(old)
        con.execute("UPDATE items SET label=?, updated_at=? WHERE id=?", (dumps(new), stamp, iid))
        entries.append(JournalEntry(item_id=iid, action="merge", old=old, new=new, source="reviewer",
                                    reviewer=reviewer, probability=mprob, timestamp=stamp,
                                    prev={"reviewed": reviewed, "reviewer": rv, "source": src, "own": None}))
    for iid, rv, label in con.execute("SELECT item_id, reviewer, label FROM reviews").fetchall():
        old = json.loads(label)
        if any(i in mapping for i in old):
            _write_review(con, iid, rv, remap(old), stamp)
    append(con, entries)
    return len(entries)


# ---------------------------------------------------------------------- reading
def history(db: Database, item_id: int | None = None, reviewer: str | None = None) -> pd.DataFrame:
    """Journal rows (oldest first) as a DataFrame; see :meth:`cytoreview.review.Project.history`.

    A batch row (:func:`append_batch`) appears as one ``"import"`` row per item it covers, with its journal id.
    """
    where, args = [f"NOT ({BATCH_WHERE})"], []
    if item_id is not None:
        where.append("item_id=?")
        args.append(int(item_id))
    if reviewer is not None:
        where.append("reviewer=?")
        args.append(reviewer)
    sql = ("SELECT id, item_id, action, old, new, source, reviewer, probability, timestamp, dwell_s, ref "
           f"FROM journal WHERE {' AND '.join(where)} ORDER BY id")

    def read(con):
        rows = con.execute(sql, args).fetchall()
        if reviewer is not None:  # batch rows are the model's: never a reviewer's
            return rows
        return _merge_batches(rows, _batch_rows(con, item_id))

    rows = db.read(read)
    df = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    df["old"] = pd.Series([loads(r[3]) if isinstance(r[3], str) else r[3] for r in rows], index=df.index,
                          dtype=object)
    df["new"] = pd.Series([loads(r[4]) if isinstance(r[4], str) else r[4] for r in rows], index=df.index,
                          dtype=object)
    df["reviewer"] = pd.Series([r[6] for r in rows], index=df.index, dtype=object)
    df["ref"] = df["ref"].astype("Int64")
    return df


def _batch_rows(con: sqlite3.Connection, item_id: int | None) -> list[tuple]:
    """History rows (one per item, ``new`` already a list) of the batch rows covering ``item_id`` (all when None).

    Batches cover disjoint id ranges (each item is inserted once), so an item's batch is the last one starting at or
    before it (the partial index ``journal_batches`` finds it).
    """
    sql = f"SELECT id, source, timestamp, prev FROM journal WHERE {BATCH_WHERE}"
    if item_id is None:
        found = con.execute(sql + " ORDER BY id").fetchall()
    else:
        found = con.execute(sql + " AND item_id <= ? ORDER BY item_id DESC LIMIT 1", (int(item_id),)).fetchall()
    out = []
    for jid, source, stamp, prev in found:
        batch = batch_of(loads(prev))
        if batch is None:
            continue
        first, last = int(batch["first"]), int(batch["last"])
        labels, index, probs = batch["labels"], batch["label"], batch["probability"]
        span = range(first, last + 1) if item_id is None else ([int(item_id)] if first <= item_id <= last else [])
        for iid in span:
            k = iid - first
            out.append((jid, iid, "import", None, list(labels[index[k]]), source, None, probs[k], stamp, None, None))
    return out


def _merge_batches(rows: list[tuple], batch_rows: list[tuple]) -> list[tuple]:
    """Ordinary and expanded batch rows in journal-id order (a batch's items in item order)."""
    if not batch_rows:
        return rows
    return sorted(rows + batch_rows, key=lambda r: (r[0], r[1]))


def entry(db: Database, journal_id: int) -> JournalEntry:
    """The journal row with id ``journal_id``."""
    row = db.read(lambda con: con.execute(f"SELECT {', '.join(_COLUMNS)}, id FROM journal WHERE id=?",
                                          (int(journal_id),)).fetchone())
    if row is None:
        raise ProjectError(f"no journal row with id {journal_id!r}")
    d = dict(zip((*_COLUMNS, "id"), row))
    for k in ("old", "new", "prev"):
        d[k] = loads(d[k])
    return JournalEntry(**d)


def reviewers(db: Database) -> list[str]:
    """Everyone who has a current label on something, sorted."""
    return [r[0] for r in db.read(lambda con: con.execute(
        "SELECT DISTINCT reviewer FROM reviews ORDER BY reviewer").fetchall())]


def reviewer_labels(db: Database, reviewer: str) -> dict[int, list[int]]:
    """``{item_id: label}`` of ``reviewer``'s current labels; ``"model"`` gives the model's labels."""
    if reviewer == "model":
        rows = db.read(lambda con: con.execute(
            "SELECT id, model_labels FROM items WHERE model_labels IS NOT NULL").fetchall())
    else:
        rows = db.read(lambda con: con.execute(
            "SELECT item_id, label FROM reviews WHERE reviewer=?", (reviewer,)).fetchall())
    return {r[0]: json.loads(r[1]) for r in rows}


def other_answers(db: Database, reviewer: str) -> list[tuple[int, list[int], list[int] | None]]:
    """``(item_id, label, model_labels)`` of every review by someone other than ``reviewer``."""
    rows = db.read(lambda con: con.execute(
        "SELECT r.item_id, r.label, i.model_labels FROM reviews r JOIN items i ON i.id = r.item_id "
        "WHERE r.reviewer != ?", (reviewer,)).fetchall())
    return [(iid, json.loads(label), loads(ml)) for iid, label, ml in rows]


def review_rows(db: Database) -> list[tuple[str, int, list[int], list[int] | None, int | None]]:
    """``(reviewer, image_id, label, model_labels, model_class)`` of every current review."""
    rows = db.read(lambda con: con.execute(
        "SELECT r.reviewer, i.image_id, r.label, i.model_labels, i.model_class FROM reviews r "
        "JOIN items i ON i.id = r.item_id").fetchall())
    return [(rv, image_id, json.loads(label), loads(ml), mc) for rv, image_id, label, ml, mc in rows]


def action_times(db: Database) -> list[tuple[str, int, str]]:
    """``(reviewer, image_id, timestamp)`` of every reviewer set / accept."""
    return db.read(lambda con: con.execute(
        "SELECT j.reviewer, i.image_id, j.timestamp FROM journal j JOIN items i ON i.id = j.item_id "
        "WHERE j.action IN ('set', 'accept') AND j.reviewer IS NOT NULL").fetchall())
