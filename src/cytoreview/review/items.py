"""The items of a project -- the things a reviewer labels (a field, a tile, a cell, a region) -- and the reviewers'
queue cursors.

An item is identified by ``(image, level, field, z, geometry)``: adding the same item again (re-importing a
prediction store) updates its model columns, never creates a second one. The table finds it by
``(image, level, field, z, geometry_key)`` (unique index ``items_identity``; the key is a 64-bit digest of the
canonical geometry text, :func:`cytoreview.review.geometry.identity_key`) and every match is confirmed on the text:
two geometries whose keys collide are two items, the later one stored under the next free key. A model's call
becomes the item's label while no reviewer has labelled it, journalled as an ``"import"``
(:mod:`cytoreview.review.journal` writes the row).
"""

from __future__ import annotations

import gc
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import repeat
from operator import itemgetter, methodcaller

import numpy as np
import pandas as pd

from cytoreview.errors import ProjectError
from cytoreview.review import geometry as geom
from cytoreview.review import journal
from cytoreview.review.connection import Database, dumps, loads, now_iso
from cytoreview.review.images import plane_shape
from cytoreview.review.schema import LEVELS, load_classes

#: Columns of :func:`items_frame`, in order (the fields of :class:`Item`).
ITEM_COLUMNS = ["item_id", "image_id", "level", "field", "z", "geometry", "x_min", "y_min", "x_max", "y_max",
                "model", "model_class", "model_labels", "model_prob", "uncertainty", "label", "reviewed",
                "reviewer", "source", "updated_at"]
_SELECT = ("i.id, i.image_id, i.level, i.field, i.z, i.geometry, i.x_min, i.y_min, i.x_max, i.y_max, i.model, "
           "i.model_class, i.model_labels, i.model_prob, i.uncertainty, i.label, i.reviewed, i.reviewer, i.source, "
           "i.updated_at")
_MODEL_FIELDS = ("model", "model_class", "model_labels", "model_prob", "uncertainty")


@dataclass(frozen=True)
class Item:
    """One item of a project as it is now.

    Attributes
    ----------
    item_id, image_id : int
    level : {"field", "tile", "cell", "region"}
    field, z : int
        Field index (0 for a slide) and focus plane.
    geometry : dict
        Canonical geometry (see :mod:`cytoreview.review.geometry`), level-0 px.
    x_min, y_min, x_max, y_max : int or None
        Level-0 bounding box (None for a field of an image whose size is unknown).
    model : str or None
        ``"pack@version"`` that predicted it.
    model_class : int or None
        The model's class (project class id).
    model_labels : list of int or None
        The model's label set (one class, or several for a multi-label field item).
    model_prob, uncertainty : float or None
    label : list of int or None
        The current label (the model's call until a reviewer labels it).
    reviewed : bool
    reviewer, source, updated_at : str or None
        Who set the label, where it came from (``"reviewer"``, ``"model:..."``, ``"import:..."``), when.
    """

    item_id: int
    image_id: int
    level: str
    field: int
    z: int
    geometry: dict
    x_min: int | None
    y_min: int | None
    x_max: int | None
    y_max: int | None
    model: str | None
    model_class: int | None
    model_labels: list | None
    model_prob: float | None
    uncertainty: float | None
    label: list | None
    reviewed: bool
    reviewer: str | None
    source: str | None
    updated_at: str | None

    def to_dict(self) -> dict:
        """The item as a plain dict (keys of :data:`ITEM_COLUMNS`)."""
        return asdict(self)


# ---------------------------------------------------------------------- writing
def add_items(db: Database, image_id: int, items: Iterable[Mapping]) -> list[int]:
    """Add (or update) items in one transaction; see :meth:`cytoreview.review.Project.add_items`."""
    with db.write() as con:
        return upsert(con, image_id, items)


#: Fewer items than this are looked up one by one; more, and the image's items are read once.
PRELOAD_MIN_ITEMS = 64
#: New items of a fresh image are validated and inserted this many at a time (memory stays bounded).
CHUNK_ITEMS = 65_536
#: A bulk insert of at least this many items, into a table holding no more items than it adds, drops the items
#: table's indexes (the identity index too) and builds them again once the rows are in: SQLite builds an index from
#: sorted keys several times faster than it updates it row by row at random places. Should the rebuilt identity
#: index find two rows with one key (an item repeated in two chunks, or a key collision) the bulk insert is undone
#: and redone with the indexes in place, where each such item is looked up.
REINDEX_MIN_ITEMS = 100_000
_INSERT = ("INSERT INTO items(image_id, level, field, z, geometry, geometry_key, x_min, y_min, x_max, y_max, model, "
           "model_class, model_labels, model_prob, uncertainty, label, reviewed, source, updated_at) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)")
#: Position of ``geometry_key`` in the ``_INSERT`` parameters.
_KEY_AT = 5
_IDENTITY = "image_id=? AND level=? AND field=? AND z=? AND geometry_key=?"


def _locate(con: sqlite3.Connection, image_id: int, level: str, field: int, z: int, text: str, key: int,
            cols: str = "id", taken: set | None = None) -> tuple[tuple | None, int]:
    """``(row of cols, key)`` of the item with this identity and geometry ``text`` whose key probing starts at
    ``key`` (its :func:`~cytoreview.review.geometry.identity_key`), or ``(None, free key)`` where a new one goes:
    the first key that no item holds (nor ``taken``: keys handed out to rows not yet inserted)."""
    while True:
        row = con.execute(f"SELECT geometry, {cols} FROM items WHERE {_IDENTITY}",
                          (image_id, level, field, z, key)).fetchone()
        if row is None:
            if taken is None or (level, field, z, key) not in taken:
                return None, key
        elif row[0] == text:
            return row[1:], key
        key = geom.next_key(key)


def upsert(con: sqlite3.Connection, image_id: int, items: Iterable[Mapping]) -> list[int]:
    """Add or update ``items`` of image ``image_id`` inside the caller's write transaction; return their ids.

    Each mapping has ``level``, ``geometry`` and optionally ``field`` (0), ``z`` (0), ``model`` ("pack@ver"),
    ``model_class``, ``model_labels`` (list, for multi-label field items), ``model_prob``, ``uncertainty``.

    Items of an image that has none yet (a first import) take the bulk path: validated and inserted
    :data:`CHUNK_ITEMS` at a time with one ``executemany``, and their model calls journalled as batch rows
    (:func:`cytoreview.review.journal.append_batch`). An item met twice in one chunk ends the chunk there and
    updates the first one through the item-by-item path; a chunk that repeats an item of an earlier chunk is redone
    item by item (the result is the same either way, and the other chunks stay on the bulk path).
    """
    items = items if isinstance(items, list) else list(items)
    ctx = _Batch(con, image_id)
    if len(items) > PRELOAD_MIN_ITEMS and con.execute("SELECT 1 FROM items WHERE image_id=? LIMIT 1",
                                                      (image_id,)).fetchone() is None:
        return _insert_new(ctx, items)
    return _upsert_each(ctx, items, 0)


class _Batch:
    """What every item of one upsert call is checked against: the image's plane, the class ids, the time stamp,
    and each distinct label set's JSON text (label sets repeat: each is encoded once)."""

    def __init__(self, con: sqlite3.Connection, image_id: int):
        self.con = con
        self.image_id = image_id
        self.plane = plane_shape(con, image_id)
        self.class_ids = {c.id for c in load_classes(con)}
        self.stamp = now_iso()
        self._label_text: dict[tuple, str] = {}
        self._sources: dict = {}

    def source_of(self, model: str | None) -> str:
        """The journal source of a model's call (``"model:<pack>@<version>"``), one string per model."""
        source = self._sources.get(model)
        if source is None:
            source = self._sources[model] = f"model:{model}" if model else "model:unknown"
        return source

    def labels_json(self, labels: list | None) -> str | None:
        if labels is None:
            return None
        key = tuple(labels)
        text = self._label_text.get(key)
        if text is None:
            text = self._label_text[key] = dumps(labels)
        return text

    def parse(self, n: int, item: Mapping) -> tuple:
        """``(level, field, z, geometry JSON, bbox, model, model_class, model_labels, prob, uncertainty,
        geometry key)`` of item ``n``, checked; :class:`ProjectError` naming ``n`` when it is bad."""
        if not isinstance(item, Mapping):
            raise ProjectError(f"item {n}: {str(item)[:80]!r} is not a mapping of item fields")
        level = item.get("level")
        if level not in LEVELS:
            raise ProjectError(f"item {n}: level {level!r} is not one of {', '.join(LEVELS)}")
        raw = item.get("geometry", {"type": "field"} if level == "field" else None)
        try:
            if level == "cell" and type(raw) is dict and raw.get("type") == "point":  # the million-cell fast path
                gj, x0, y0 = geom.point_json(raw)
                box = (x0, y0, x0, y0)
            else:
                g = geom.canonical(raw)
                if g["type"] not in geom.LEVEL_GEOMETRIES[level]:
                    raise ProjectError(f"a {level} item cannot have {g['type']} geometry")
                gj, box = geom.to_json(g), geom.bbox(g, self.plane)
        except ProjectError as exc:
            raise ProjectError(f"item {n}: {exc}") from None
        mclass = item.get("model_class")
        mlabels = item.get("model_labels")
        try:
            if mclass is not None:
                mclass = int(mclass)
            if mlabels is None:
                if mclass is not None:  # one class: the common case, no set to sort
                    mlabels = [mclass]
            else:
                mlabels = sorted({int(c) for c in mlabels})
                if mclass is None and mlabels:
                    mclass = mlabels[0]
        except (TypeError, ValueError):
            raise ProjectError(f"item {n}: model_class {mclass!r} / model_labels {mlabels!r} must be class "
                               "ids (integers)") from None
        for cid in mlabels or ():
            if cid not in self.class_ids:
                raise ProjectError(f"item {n}: model class id {cid} is not in the label schema")
        try:
            field, z = int(item.get("field", 0)), int(item.get("z", 0))
        except (TypeError, ValueError):
            raise ProjectError(f"item {n}: field {item.get('field', 0)!r} and z {item.get('z', 0)!r} must be "
                               "integers") from None
        prob, unc = item.get("model_prob"), item.get("uncertainty")
        try:
            prob, unc = None if prob is None else float(prob), None if unc is None else float(unc)
        except (TypeError, ValueError):
            raise ProjectError(f"item {n}: model_prob {prob!r} and uncertainty {unc!r} must be numbers") from None
        return (level, field, z, gj, box, item.get("model"), mclass, mlabels, prob, unc, geom.identity_key(gj))

    def insert(self, rows: list[tuple]) -> int:
        """Insert new item rows (``_INSERT`` parameters) with one ``executemany``; return the first new id (the rows
        got consecutive ids from there: this transaction holds the write lock)."""
        con = self.con
        before = con.execute("SELECT COALESCE(MAX(id), 0) FROM items").fetchone()[0]
        con.executemany(_INSERT, rows)
        after = con.execute("SELECT COALESCE(MAX(id), 0) FROM items").fetchone()[0]
        if after - before != len(rows):
            raise ProjectError(f"inserted {len(rows)} items but their ids run from {before + 1} to {after}")
        return int(before) + 1

    def journal_new(self, first_id: int, labels: list, sources: list, probs: list) -> None:
        """Journal the model calls of new items ``first_id ..`` (``labels`` JSON text or None for no call): runs of
        :data:`~cytoreview.review.journal.BATCH_MIN_ITEMS` or more of one source as one batch row each, the rest
        one row per item."""
        entries: list[journal.JournalEntry] = []
        k, n = 0, len(labels)
        while k < n:
            if labels[k] is None:
                k += 1
                continue
            end = k + 1
            while end < n and labels[end] is not None and sources[end] == sources[k]:
                end += 1
            if end - k >= journal.BATCH_MIN_ITEMS:
                journal.append(self.con, entries)
                entries = []
                journal.append_batch(self.con, first_id + k, labels[k:end], probs[k:end], sources[k], self.stamp)
            else:
                entries.extend(journal.JournalEntry(
                    item_id=first_id + j, action="import", old=None, new=loads(labels[j]), source=sources[j],
                    reviewer=None, probability=probs[j], timestamp=self.stamp) for j in range(k, end))
            k = end
        journal.append(self.con, entries)

    def cell_point_rows(self, chunk: list) -> tuple[list, list, list, list, tuple | None] | None:
        """``(INSERT parameters, label JSON, sources, probabilities, cut)`` of a chunk of new cell items with point
        geometry, a column at a time: the same rows :meth:`parse` + :meth:`new_row` give item by item. None when any
        item is not a plain one (another level or geometry form, a value of an unusual type or out of range,
        ``model_labels``, an unknown class): the caller then parses each item, which names a bad one.

        ``cut`` is None, or ``(j, i)`` when item ``j`` of the chunk repeats the geometry key of item ``i`` (``i`` is
        None when the two geometries differ: a key collision): the rows then stop before item ``j``."""
        n = len(chunk)
        try:
            level, geometry, model, mclass, prob, unc = (list(map(get, chunk)) for get in _CELL_FIELDS)
            if set(level) != {"cell"} or set(map(type, geometry)) != {dict}:
                return None
            kind, xs, ys = (list(map(get, geometry)) for get in _POINT_FIELDS)
        except (KeyError, TypeError):  # a key missing, an item or geometry that is not a mapping
            return None
        if set(kind) != {"point"}:
            return None
        if set(map(len, chunk)) == {len(_CELL_FIELDS)}:  # just the fields read above: no field, z, model_labels
            fields = zs = [0] * n
        elif list(map(_GET_MODEL_LABELS, chunk)).count(None) != n:
            return None
        else:
            fields, zs = list(map(_GET_FIELD, chunk)), list(map(_GET_Z, chunk))
        if not (set(map(type, fields)) | set(map(type, zs)) <= {int} and set(map(type, mclass)) <= {int, type(None)}
                and set(mclass) - {None} <= self.class_ids
                and set(map(type, prob)) | set(map(type, unc)) <= {float, int, type(None)}):
            return None
        points = geom.point_texts(xs, ys)
        if points is None:
            return None
        texts, x0, y0 = points
        keys = geom.identity_keys(texts)
        cut = None
        if len(set(fields)) == len(set(zs)) == 1:
            ordered = np.sort(np.array(keys, dtype=np.int64))
            repeated = bool((ordered[1:] == ordered[:-1]).any())
        else:
            repeated = len(set(zip(fields, zs, keys))) != n
        if repeated:
            cut = _first_repeat(list(zip(fields, zs, keys)), texts)
        prob, unc = (list(v) if set(map(type, v)) == {float} else [None if p is None else float(p) for p in v]
                     for v in (prob, unc))
        label_of = {c: None if c is None else self.labels_json([c]) for c in set(mclass)}
        try:
            source_of = {m: self.source_of(m) for m in set(model)}
        except TypeError:  # a model that is not a string
            return None
        if len(label_of) == 1 and len(source_of) == 1:  # one class, one model: the common case
            (only_label,), (only_source,) = label_of.values(), source_of.values()
            labels = [only_label] * n
            sources = [None if only_label is None else only_source] * n
        else:
            labels = [label_of[c] for c in mclass]
            sources = [None if c is None else source_of[m] for m, c in zip(model, mclass)]
        rows = list(zip(repeat(self.image_id), level, fields, zs, texts, keys, x0, y0, x0, y0, model, mclass, labels,
                        prob, unc, labels, sources, repeat(self.stamp)))
        if cut is not None:
            return rows[:cut[0]], labels[:cut[0]], sources[:cut[0]], prob[:cut[0]], cut
        return rows, labels, sources, prob, None

    def new_row(self, parsed: tuple, key: int | None = None) -> tuple[tuple, str | None, str | None]:
        """``(INSERT parameters, label JSON, source)`` of a new item (the model's call is its label), stored under
        geometry key ``key`` (default: its own, ``parsed[10]``)."""
        level, field, z, gj, box, model, mclass, mlabels, prob, unc, own_key = parsed
        label = self.labels_json(mlabels)
        source = None if label is None else self.source_of(model)
        return ((self.image_id, level, field, z, gj, own_key if key is None else key, *box, model, mclass, label,
                 prob, unc, label, source, self.stamp), label, source)


def _first_repeat(identities: list, texts: list) -> tuple[int, int | None]:
    """``(j, i)``: the first ``identities[j]`` equal to an earlier ``identities[i]``; ``i`` None when their
    ``texts`` differ."""
    first: dict = {}
    for j, identity in enumerate(identities):
        i = first.setdefault(identity, j)
        if i != j:
            return j, (i if texts[i] == texts[j] else None)
    raise ValueError("no repeat")  # pragma: no cover - called only when there is one


_GET_MODEL_LABELS = methodcaller("get", "model_labels")
_GET_FIELD = methodcaller("get", "field", 0)
_GET_Z = methodcaller("get", "z", 0)
_ROW_KEY = itemgetter(_KEY_AT)
_CELL_FIELDS = tuple(map(itemgetter, ("level", "geometry", "model", "model_class", "model_prob", "uncertainty")))
_POINT_FIELDS = tuple(map(itemgetter, ("type", "x", "y")))


@contextmanager
def _indexes_rebuilt(con: sqlite3.Connection) -> Iterator[None]:
    """Inside the caller's transaction: drop the items table's indexes, and build them again when the block ends
    normally (:class:`sqlite3.IntegrityError` then when two rows share an identity key). On an error nothing is
    rebuilt: the caller rolls back, and the indexes come back with it."""
    indexes = con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'items' "
                          "AND sql IS NOT NULL ORDER BY name").fetchall()
    for name, _ in indexes:
        con.execute(f'DROP INDEX "{name}"')
    yield
    for _, sql in indexes:  # items_identity first: it fails fast when it must
        con.execute(sql)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused for a block that makes millions of small objects (rows) while
    millions more (the caller's item mappings) are alive: each full collection would walk them all again
    (measured: half the Python time of a 10^6-cell import). Reference counting still frees everything; the
    collector runs again afterwards as it was."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _insert_new(ctx: _Batch, items: list) -> list[int]:
    """The bulk path of :func:`upsert` for an image without items: chunk by chunk, one ``executemany`` each; with
    the indexes dropped and rebuilt when there are many (see :data:`REINDEX_MIN_ITEMS`)."""
    with _gc_paused():
        return _insert_new_chunks(ctx, items)


def _insert_new_chunks(ctx: _Batch, items: list) -> list[int]:
    con = ctx.con
    if len(items) < REINDEX_MIN_ITEMS or con.execute("SELECT COUNT(*) FROM items").fetchone()[0] > len(items):
        return _insert_chunks(ctx, items, indexed=True)
    con.execute("SAVEPOINT bulk_new")
    try:
        with _indexes_rebuilt(con):
            ids = _insert_chunks(ctx, items, indexed=False)
    except sqlite3.IntegrityError:  # a repeated item or a key collision across chunks: redo it with the indexes
        con.execute("ROLLBACK TO bulk_new")
        con.execute("RELEASE bulk_new")
        return _insert_chunks(ctx, items, indexed=True)
    except BaseException:
        con.execute("ROLLBACK TO bulk_new")
        con.execute("RELEASE bulk_new")
        raise
    con.execute("RELEASE bulk_new")
    return ids


def _insert_chunks(ctx: _Batch, items: list, indexed: bool) -> list[int]:
    """Insert ``items`` chunk by chunk; ``indexed`` false when the identity index is dropped (then no row is looked
    up: an item repeated inside a chunk updates the row inserted for it, by id; one repeated across chunks, or a key
    collision, is found when the index is rebuilt)."""
    ids: list[int] = []  # ids[k] is the id of items[k]
    con = ctx.con
    registry = None if indexed else _KeyRegistry()
    pos = 0
    while pos < len(items):
        rows, labels, sources, probs = [], [], [], []
        seen: dict = {}
        n, end, again = pos, min(pos + CHUNK_ITEMS, len(items)), None
        fast = ctx.cell_point_rows(items[pos:end])
        if fast is not None:
            rows, labels, sources, probs, cut = fast
            if cut is not None:  # stop before a repeated key: the same item (updated below) or a collision
                end = pos + cut[0]  # (its item starts the next chunk)
                if cut[1] is not None:
                    again, first_seen = end, pos + cut[1]
            n = end
        while n < end:
            parsed = ctx.parse(n, items[n])
            key = parsed[:4]
            if key in seen:  # the same item twice in this chunk: the later one updates it (below)
                again, first_seen = n, seen[key]
                break
            seen[key] = n
            row, label, source = ctx.new_row(parsed)
            rows.append(row)
            labels.append(label)
            sources.append(source)
            probs.append(parsed[8])
            n += 1
        if rows and not indexed:
            ids.extend(_insert_unindexed(ctx, items, pos, rows, labels, sources, probs, registry,
                                         distinct_keys=fast is not None))
        elif rows:
            con.execute("SAVEPOINT bulk_items")
            try:
                first = ctx.insert(rows)
            except sqlite3.IntegrityError:  # items of an earlier chunk again (or a key collision): insert the
                con.execute("ROLLBACK TO bulk_items")  # others, update those
                con.execute("RELEASE bulk_items")
                ids.extend(_insert_around_existing(ctx, items, pos, rows, labels, sources, probs))
            else:
                con.execute("RELEASE bulk_items")
                ctx.journal_new(first, labels, sources, probs)
                ids.extend(range(first, first + len(rows)))
        if again is not None:
            known = None if indexed else ids[first_seen]
            ids.extend(_upsert_each(ctx, [items[again]], again, item_id=known))
            n = again + 1
        pos = n
    return ids


class _KeyRegistry:
    """The geometry keys a bulk insert without the identity index has stored so far, sorted, with their item ids:
    what the index would have told (16 bytes an item; the import's items all belong to one image)."""

    def __init__(self):
        self.keys = np.empty(0, dtype=np.int64)
        self.ids = np.empty(0, dtype=np.int64)

    def hits(self, keys: np.ndarray) -> np.ndarray:
        """Which of ``keys`` are stored."""
        at = np.minimum(np.searchsorted(self.keys, keys), max(len(self.keys) - 1, 0))
        return self.keys[at] == keys if len(self.keys) else np.zeros(len(keys), dtype=bool)

    def ids_of(self, key: int) -> list[int]:
        """Ids of the stored items with geometry key ``key``."""
        lo, hi = np.searchsorted(self.keys, key, side="left"), np.searchsorted(self.keys, key, side="right")
        return self.ids[lo:hi].tolist()

    def add(self, keys: np.ndarray, first_id: int) -> None:
        """Store ``keys`` of the items ``first_id, first_id + 1, ...``."""
        order = np.argsort(keys, kind="stable")
        at = np.searchsorted(self.keys, keys[order])
        self.keys = np.insert(self.keys, at, keys[order])
        self.ids = np.insert(self.ids, at, first_id + order)


def _insert_unindexed(ctx: _Batch, items: list, pos: int, rows: list, labels: list, sources: list, probs: list,
                      registry: _KeyRegistry, distinct_keys: bool = False) -> list[int]:
    """Insert the chunk ``items[pos : pos + len(rows)]`` (their ``_INSERT`` parameters ``rows``, no two of them the
    same item) while the identity index is dropped; return their ids. An item already stored by an earlier chunk
    (its key in ``registry`` and its identity equal) is updated instead; one whose key is taken by a different
    geometry gets the next free key. ``distinct_keys``: no two rows share a key (no need to look)."""
    keys = np.fromiter(map(_ROW_KEY, rows), dtype=np.int64, count=len(rows))
    hit = registry.hits(keys)
    repeats: dict[int, int] = {}  # position in rows -> id of the earlier item
    unchanged = True
    if hit.any() or (not distinct_keys and len(np.unique(keys)) != len(keys)):
        unchanged = False
        con, taken = ctx.con, set(keys.tolist())
        chunk_seen: set = set()
        for j, row in enumerate(rows):
            key = row[_KEY_AT]
            if hit[j]:
                for iid in registry.ids_of(key):
                    stored = con.execute("SELECT level, field, z, geometry FROM items WHERE id=?", (iid,)).fetchone()
                    if tuple(stored) == row[1:_KEY_AT]:
                        repeats[j] = iid
                if j in repeats:
                    continue
            if hit[j] or key in chunk_seen:  # a different geometry holds this key: probe on
                free = geom.next_key(key)
                while free in taken or registry.hits(np.array([free], dtype=np.int64))[0]:
                    free = geom.next_key(free)
                taken.add(free)
                rows[j] = (*row[:_KEY_AT], free, *row[_KEY_AT + 1:])
                key = free
            chunk_seen.add(key)
    new = [j for j in range(len(rows)) if j not in repeats] if repeats else range(len(rows))
    out: list = [None] * len(rows)
    if len(new):
        sub = (lambda v: [v[j] for j in new]) if repeats else (lambda v: v)
        new_rows = sub(rows)
        first = ctx.insert(new_rows)
        ctx.journal_new(first, sub(labels), sub(sources), sub(probs))
        registry.add(keys if unchanged else np.fromiter(map(_ROW_KEY, new_rows), dtype=np.int64,
                                                        count=len(new_rows)), first)
        for k, j in enumerate(new):
            out[j] = first + k
    for j, iid in repeats.items():
        out[j] = _upsert_each(ctx, [items[pos + j]], pos + j, item_id=iid)[0]
    return out


def _insert_around_existing(ctx: _Batch, items: list, pos: int, rows: list, labels: list, sources: list,
                            probs: list) -> list[int]:
    """Ids of the chunk ``items[pos : pos + len(rows)]`` (their ``_INSERT`` parameters ``rows``) some of whose
    items are already in the table (or whose geometry keys collide): the others inserted together under free keys
    (journalled as usual), those updated one by one."""
    con = ctx.con
    taken: set = set()
    keys = [row[1:_KEY_AT] for row in rows]  # (level, field, z, geometry text)
    new, out = [], [None] * len(keys)
    for j, key in enumerate(keys):
        found, free = _locate(con, ctx.image_id, *key, rows[j][_KEY_AT], taken=taken)
        if found is None:
            taken.add((*key[:3], free))
            rows[j] = (*rows[j][:_KEY_AT], free, *rows[j][_KEY_AT + 1:])
            new.append(j)
    if new:
        first = ctx.insert([rows[j] for j in new])
        ctx.journal_new(first, [labels[j] for j in new], [sources[j] for j in new], [probs[j] for j in new])
        for k, j in enumerate(new):
            out[j] = first + k
    for j in range(len(keys)):
        if out[j] is None:
            out[j] = _upsert_each(ctx, [items[pos + j]], pos + j)[0]
    return out


def _upsert_each(ctx: _Batch, items: list, offset: int, item_id: int | None = None) -> list[int]:
    """The general path of :func:`upsert`: each item looked up (in one preloaded scan of the image's items when
    there are many), updated when it exists, new ones inserted together; ``offset`` numbers the items in errors.
    ``item_id``: the one item of ``items`` is known to be that row (no lookup)."""
    con, image_id = ctx.con, ctx.image_id
    ids: list[int] = []
    entries: list[journal.JournalEntry] = []
    cols = "id, label, reviewed, model, model_labels, model_prob, uncertainty, source"
    preloaded = used = None
    if len(items) > PRELOAD_MIN_ITEMS:  # one scan of the image's items beats one lookup per item
        preloaded, used = {}, set()
        for r in con.execute(f"SELECT level, field, z, geometry, geometry_key, {cols} FROM items WHERE image_id=?",
                             (image_id,)):
            preloaded[r[:4]] = r[5:]
            used.add((*r[:3], r[4]))
    # new rows of a large batch are inserted together (executemany)
    pending: list[tuple] = []  # INSERT parameters
    pending_meta: list[tuple] = []  # (position in ids, key, label JSON, source, model, prob, unc)

    def flush_pending() -> None:
        if not pending:
            return
        first = ctx.insert(pending)
        for k, (pos, key, label, source, model, prob, unc) in enumerate(pending_meta):
            ids[pos] = first + k
            preloaded[key] = (first + k, label, 0, model, label, prob, unc, source)
        ctx.journal_new(first, [m[2] for m in pending_meta], [m[3] for m in pending_meta],
                        [m[5] for m in pending_meta])
        pending.clear()
        pending_meta.clear()

    _PENDING = object()
    for n, item in enumerate(items, offset):
        parsed = ctx.parse(n, item)
        level, field, z, gj, box, model, mclass, mlabels, prob, unc, gkey = parsed
        key = (level, field, z, gj)
        if item_id is not None:
            row = con.execute(f"SELECT {cols} FROM items WHERE id=?", (item_id,)).fetchone()
        elif preloaded is not None:
            row = preloaded.get(key)
            if row is _PENDING:  # the same item twice in one batch: insert the first, then update it
                flush_pending()
                row = preloaded.get(key)
        else:
            row, gkey = _locate(con, image_id, level, field, z, gj, gkey, cols)
        if row is None:
            if preloaded is not None:
                while (level, field, z, gkey) in used:  # taken by a different geometry: probe on
                    gkey = geom.next_key(gkey)
                used.add((level, field, z, gkey))
            new, label, source = ctx.new_row(parsed, gkey)
            if preloaded is not None:
                pending.append(new)
                pending_meta.append((len(ids), key, label, source, model, prob, unc))
                preloaded[key] = _PENDING
                ids.append(None)
                continue
            iid = int(con.execute(_INSERT, new).lastrowid)
            if label is not None:
                entries.append(journal.JournalEntry(item_id=iid, action="import", old=None, new=mlabels,
                                                    source=source, reviewer=None, probability=prob,
                                                    timestamp=ctx.stamp))
        else:
            iid, old_label, reviewed = row[0], row[1], row[2]
            if row[3] == model and loads(row[4]) == mlabels and row[5] == prob and row[6] == unc:
                ids.append(iid)
                continue
            new_label, source = old_label, row[7]
            if not reviewed and mlabels is not None and loads(old_label) != mlabels:
                new_label, source = ctx.labels_json(mlabels), ctx.source_of(model)
                entries.append(journal.JournalEntry(
                    item_id=iid, action="import", old=loads(old_label), new=mlabels, source=source, reviewer=None,
                    probability=prob, timestamp=ctx.stamp,
                    prev={"reviewed": 0, "reviewer": None, "source": row[7], "own": None}))
            con.execute("UPDATE items SET model=?, model_class=?, model_labels=?, model_prob=?, uncertainty=?, "
                        "label=?, source=?, updated_at=? WHERE id=?",
                        (model, mclass, ctx.labels_json(mlabels), prob, unc, new_label, source, ctx.stamp, iid))
            if preloaded is not None:
                preloaded[key] = (iid, new_label, reviewed, model, ctx.labels_json(mlabels), prob, unc, source)
        ids.append(iid)
    flush_pending()
    journal.append(con, entries)
    return ids


# ---------------------------------------------------------------------- reading
def count(db: Database, image_id: int | None = None) -> int:
    """Number of items (of one image)."""
    sql, args = "SELECT COUNT(*) FROM items", ()
    if image_id is not None:
        sql, args = sql + " WHERE image_id=?", (image_id,)
    return db.read(lambda con: con.execute(sql, args).fetchone()[0])


def find_item(db: Database, image_id: int, level: str, geometry: Mapping, field: int = 0, z: int = 0) -> int | None:
    """Id of the item with this identity (image, level, field, z, geometry), None when the project has none."""
    gj = geom.to_json(geom.canonical(geometry))
    if db.schema_version < 3:  # an older project opened read-only: no geometry key yet
        row = db.read(lambda con: con.execute("SELECT id FROM items WHERE image_id=? AND level=? AND field=? AND "
                                              "z=? AND geometry=?", (image_id, level, int(field), int(z),
                                                                     gj)).fetchone())
    else:
        row, _ = db.read(_locate, image_id, level, int(field), int(z), gj, geom.identity_key(gj))
    return None if row is None else int(row[0])


def get_item(db: Database, item_id: int, blind_for: str | None = None) -> Item:
    """One item (see :func:`read_items` for ``blind_for``); :class:`ProjectError` if there is none."""
    try:
        key = int(item_id)
    except (TypeError, ValueError):
        raise ProjectError(f"no item with id {item_id!r} in project {db.path.parent}") from None
    found = read_items(db, ids=[key], blind_for=blind_for)
    if not found:
        raise ProjectError(f"no item with id {item_id!r} in project {db.path.parent}")
    return found[0]


def read_items(db: Database, image_id: int | None = None, level: str | None = None, field: int | None = None,
               ids: Sequence[int] | None = None, blind_for: str | None = None) -> list[Item]:
    """Items ordered by id, optionally of one image / level / field or with the given ids.

    ``blind_for`` (blinded second read) hides the model's output and every other reviewer's label: ``label``,
    ``reviewed``, ``reviewer``, ``source`` and ``updated_at`` then describe only ``blind_for``'s own review.
    """
    return [Item(**d) for d in _read(db, image_id, level, field, ids, blind_for)]


def items_frame(db: Database, image_id: int | None = None, level: str | None = None, field: int | None = None,
                ids: Sequence[int] | None = None, blind_for: str | None = None) -> pd.DataFrame:
    """The items of :func:`read_items` as a DataFrame with the columns of :data:`ITEM_COLUMNS` (one row per item;
    None kept as None, not NaN). Built straight from the rows: 100k cells need no 100k objects."""
    out = _read(db, image_id, level, field, ids, blind_for)
    df = pd.DataFrame(out, columns=ITEM_COLUMNS)
    for col in ("model", "model_class", "model_labels", "model_prob", "uncertainty", "label", "reviewer",
                "source", "updated_at"):  # keep None (pandas would turn it into NaN)
        df[col] = pd.Series([d[col] for d in out], index=df.index, dtype=object)
    return df


def _read(db, image_id, level, field, ids, blind_for) -> list[dict]:
    where, args = [], []
    for col, val in (("image_id", image_id), ("level", level), ("field", field)):
        if val is not None:
            where.append(f"i.{col} = ?")
            args.append(val)
    wanted = None
    if ids is not None:
        ids = [int(i) for i in ids]
        if len(ids) <= 500:
            where.append(f"i.id IN ({','.join('?' * len(ids))})")
            args.extend(ids)
        else:  # too many for SQL parameters: filter after reading
            wanted = set(ids)
    own_join = ""
    if blind_for is not None:
        own_join = "LEFT JOIN reviews r ON r.item_id = i.id AND r.reviewer = ?"
        args.insert(0, blind_for)
    sql = (f"SELECT {_SELECT}{', r.label, r.updated_at' if blind_for is not None else ''} "
           f"FROM items i {own_join} {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY i.id")
    rows = db.read(lambda con: con.execute(sql, args).fetchall())
    if wanted is not None:
        rows = [r for r in rows if r[0] in wanted]
    out = []
    for r in rows:
        d = dict(zip(ITEM_COLUMNS, r[:20]))
        d["geometry"] = json.loads(d["geometry"])
        d["model_labels"] = loads(d["model_labels"])
        d["label"] = loads(d["label"])
        d["reviewed"] = bool(d["reviewed"])
        if blind_for is not None:
            for k in _MODEL_FIELDS:
                d[k] = None
            own = loads(r[20])
            d.update(label=own, reviewed=own is not None, reviewer=blind_for if own is not None else None,
                     source="reviewer" if own is not None else None, updated_at=r[21] if own is not None else None)
        out.append(d)
    return out


def label_rows(db: Database, only_reviewed: bool = False) -> list[tuple]:
    """Rows behind :func:`cytoreview.review.tables.label_table`, ordered by item id: ``(item_id, image_id,
    image_path, case_id, level, field, z, x_min, y_min, x_max, y_max, geometry (JSON text), label (JSON text),
    model_class, model_labels (JSON text), model_prob, source, reviewer, model, mpp, reviewed, updated_at)``.

    Label JSON is returned as text: the caller parses each distinct text once (labels repeat a lot).
    """
    sql = ("SELECT i.id, i.image_id, im.path, im.case_id, i.level, i.field, i.z, i.x_min, i.y_min, i.x_max, i.y_max, "
           "i.geometry, i.label, i.model_class, i.model_labels, i.model_prob, i.source, i.reviewer, i.model, im.mpp, "
           "i.reviewed, i.updated_at FROM items i JOIN images im ON im.id = i.image_id "
           f"{'WHERE i.reviewed = 1' if only_reviewed else ''} ORDER BY i.id")
    return db.read(lambda con: con.execute(sql).fetchall())


#: Columns of :func:`label_column_lists`, in order.
LABEL_COLUMNS = ("item_id", "image_id", "level", "field", "z", "x_min", "y_min", "x_max", "y_max", "geometry", "label",
                 "model_class", "model_labels", "model_prob", "source", "reviewer", "model", "reviewed", "updated_at")


def label_column_lists(db: Database, only_reviewed: bool = False, chunk_rows: int = 65_536) -> dict[str, list]:
    """The columns behind :func:`cytoreview.review.tables.label_table` (:data:`LABEL_COLUMNS`, items ordered by id)
    as one list per column, read ``chunk_rows`` rows at a time (no list of a million row tuples).

    Label JSON stays text (the caller parses each distinct text once); the repeating text columns (level, source,
    reviewer, model, updated_at) hold one string object per distinct value. The key ``"images"`` holds
    ``{image_id: (path, case_id, mpp)}`` of every image, as stored.
    """
    sql = (f"SELECT id, {', '.join(LABEL_COLUMNS[1:])} FROM items {'WHERE reviewed = 1' if only_reviewed else ''} "
           "ORDER BY id")
    shared_cols = {LABEL_COLUMNS.index(c) for c in ("level", "source", "reviewer", "model", "updated_at")}

    def read(con):
        out: list[list] = [[] for _ in LABEL_COLUMNS]
        shared: dict = {}
        cursor = con.execute(sql)
        while rows := cursor.fetchmany(chunk_rows):
            for k, (acc, values) in enumerate(zip(out, zip(*rows))):
                acc.extend([shared.setdefault(v, v) for v in values] if k in shared_cols else values)
        images = {r[0]: r[1:] for r in con.execute("SELECT id, path, case_id, mpp FROM images")}
        return {**dict(zip(LABEL_COLUMNS, out)), "images": images}

    return db.read(read)


def label_columns(db: Database) -> list[tuple]:
    """``(label, reviewed, model_labels, model_class)`` of every item (label JSON as text)."""
    return db.read(lambda con: con.execute("SELECT label, reviewed, model_labels, model_class FROM items").fetchall())


def image_counts(db: Database) -> list[tuple[int, str, str | None, int, int]]:
    """``(image_id, image_path, case_id, n_items, n_reviewed)`` per image, by image id (counted on the covering
    index ``items_progress``, without reading the items)."""
    def read(con):
        counts = {r[0]: r[1:] for r in con.execute(
            "SELECT image_id, COUNT(*), SUM(reviewed) FROM items GROUP BY image_id")}
        return [(iid, path, case_id, *counts.get(iid, (0, 0)))
                for iid, path, case_id in con.execute("SELECT id, path, case_id FROM images ORDER BY id")]

    return db.read(read)


# ---------------------------------------------------------------------- what the queue reads
def _filters(image_id, level, field) -> tuple[str, list]:
    where, args = [], []
    for col, val in (("image_id", image_id), ("level", level), ("field", field)):
        if val is not None:
            where.append(f"i.{col} = ?")
            args.append(val)
    return (" AND ".join(where) if where else "1"), args


def queue_rows(db: Database, *, reviewer: str | None, own: bool, image_id: int | None = None,
               level: str | None = None, field: int | None = None) -> list[tuple]:
    """``(item_id, model_class, uncertainty, done, image_id, field)`` of the filtered items by id; ``done`` is
    "reviewed by anybody", or with ``own`` "reviewed by ``reviewer``"."""
    filters, args = _filters(image_id, level, field)
    done_sql = ("EXISTS (SELECT 1 FROM reviews r WHERE r.item_id = i.id AND r.reviewer = ?)" if own
                else "i.reviewed")
    sql = (f"SELECT i.id, i.model_class, i.uncertainty, {done_sql}, i.image_id, i.field FROM items i "
           f"WHERE {filters} ORDER BY i.id")
    rows = db.read(lambda con: con.execute(sql, ([reviewer] if own else []) + args).fetchall())
    return [(r[0], r[1], r[2], bool(r[3]), r[4], r[5]) for r in rows]


def tile_predictions(db: Database, image_id: int | None = None) -> list[tuple[int, int, int | None, float | None]]:
    """``(image_id, field, model_class, uncertainty)`` of every tile item (of one image)."""
    sql = "SELECT image_id, field, model_class, uncertainty FROM items WHERE level = 'tile'"
    args: list = []
    if image_id is not None:
        sql, args = sql + " AND image_id = ?", [image_id]
    return db.read(lambda con: con.execute(sql, args).fetchall())


def next_by_uncertainty(db: Database, *, reviewer: str, cursor_item: int | None, own: bool,
                        image_id: int | None = None, level: str | None = None,
                        field: int | None = None) -> int | None:
    """The first pending item after ``cursor_item`` in "most uncertain first, then id" order (wrapping round),
    by two indexed keyset queries instead of a full sort; None when nothing is pending."""
    filters, args = _filters(image_id, level, field)
    if own:
        pending, pargs = "NOT EXISTS (SELECT 1 FROM reviews r WHERE r.item_id = i.id AND r.reviewer = ?)", [reviewer]
    else:
        pending, pargs = "i.reviewed = 0", []
    after, aargs = None, []
    if cursor_item is not None:
        row = db.read(lambda con: con.execute(
            f"SELECT i.uncertainty FROM items i WHERE i.id = ? AND {filters}", [cursor_item, *args]).fetchone())
        if row is not None:
            if row[0] is None:  # missing uncertainty sorts last
                after, aargs = "(i.uncertainty IS NULL AND i.id > ?)", [cursor_item]
            else:
                after = "(i.uncertainty IS NULL OR i.uncertainty < ? OR (i.uncertainty = ? AND i.id > ?))"
                aargs = [row[0], row[0], cursor_item]
    base = f"SELECT i.id FROM items i WHERE {filters} AND {pending}"
    order = " ORDER BY i.uncertainty DESC, i.id LIMIT 1"  # DESC puts NULL last in SQLite
    found = None
    if after is not None:
        found = db.read(lambda con: con.execute(f"{base} AND {after}{order}", [*args, *pargs, *aargs]).fetchone())
    if found is None:  # nothing after the cursor: wrap round to the top
        found = db.read(lambda con: con.execute(base + order, [*args, *pargs]).fetchone())
    return None if found is None else int(found[0])


def top_by_uncertainty(db: Database, limit: int, *, reviewer: str | None, own: bool, image_id: int | None = None,
                       level: str | None = None, field: int | None = None) -> list[int]:
    """The first ``limit`` pending items in "most uncertain first (missing last), then id" order, sorted by SQLite
    (``LIMIT``) instead of reading every item; pending as in :func:`queue_rows`."""
    filters, args = _filters(image_id, level, field)
    if own:
        pending, pargs = "NOT EXISTS (SELECT 1 FROM reviews r WHERE r.item_id = i.id AND r.reviewer = ?)", [reviewer]
    else:
        pending, pargs = "i.reviewed = 0", []
    sql = (f"SELECT i.id FROM items i WHERE {filters} AND {pending} "
           "ORDER BY i.uncertainty DESC, i.id LIMIT ?")  # DESC puts NULL last in SQLite
    return [r[0] for r in db.read(lambda con: con.execute(sql, [*args, *pargs, int(limit)]).fetchall())]


# ---------------------------------------------------------------------- cursors
def get_cursor(db: Database, reviewer: str) -> tuple[int | None, str | None]:
    """``(item_id, strategy)`` of ``reviewer``'s cursor, ``(None, None)`` if they have none."""
    row = db.read(lambda con: con.execute("SELECT item_id, strategy FROM cursors WHERE reviewer=?",
                                          (reviewer,)).fetchone())
    return (None, None) if row is None else (row[0], row[1])


def set_cursor(db: Database, reviewer: str, item_id: int | None, strategy: str) -> None:
    """Remember where ``reviewer`` is (committed at once, so a reopened project resumes there)."""
    journal.check_reviewer(reviewer)
    with db.write() as con:
        con.execute("INSERT INTO cursors(reviewer, item_id, strategy, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(reviewer) DO UPDATE SET item_id=excluded.item_id, strategy=excluded.strategy, "
                    "updated_at=excluded.updated_at", (reviewer, item_id, strategy, now_iso()))
