"""The project store: one SQLite file (WAL, ``synchronous=FULL``) holding images, classes, items and the journal.

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

import hashlib
import json
import numbers
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from cytoreview.errors import ProjectError
from cytoreview.review import geometry as geom
from cytoreview.review.schema import CLASSES_DDL, LEVELS, LabelSchema, load_classes

#: Version of the table layout written by this code (``PRAGMA user_version``).
SCHEMA_VERSION = 1
#: ``PRAGMA application_id`` of a cytoreview project ("CYRV").
APPLICATION_ID = 0x43595256
#: File name of the store inside a project folder.
DB_NAME = "project.sqlite"
#: How long a writer waits for another process's transaction before giving up, seconds.
BUSY_TIMEOUT_S = 30.0
_SQLITE_MAGIC = b"SQLite format 3\x00"

#: Journal actions a reviewer can undo (in their own journal).
UNDOABLE_ACTIONS = ("set", "accept")

_DDL = CLASSES_DDL + """
CREATE TABLE images (
    id         INTEGER PRIMARY KEY,
    path       TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL CHECK (kind IN ('wsi', 'fields')),
    mpp        REAL NOT NULL CHECK (mpp > 0),
    checksum   TEXT,
    case_id    TEXT,
    height_px  INTEGER,
    width_px   INTEGER,
    added_at   TEXT NOT NULL
);
CREATE TABLE items (
    id           INTEGER PRIMARY KEY,
    image_id     INTEGER NOT NULL REFERENCES images(id),
    level        TEXT NOT NULL CHECK (level IN ('field', 'tile', 'cell', 'region')),
    field        INTEGER NOT NULL DEFAULT 0,
    z            INTEGER NOT NULL DEFAULT 0,
    geometry     TEXT NOT NULL,
    x_min        INTEGER, y_min INTEGER, x_max INTEGER, y_max INTEGER,
    model        TEXT,
    model_class  INTEGER,
    model_labels TEXT,
    model_prob   REAL,
    uncertainty  REAL,
    label        TEXT,
    reviewed     INTEGER NOT NULL DEFAULT 0,
    reviewer     TEXT,
    source       TEXT,
    updated_at   TEXT NOT NULL,
    UNIQUE (image_id, level, field, z, geometry)
);
CREATE INDEX items_queue ON items(reviewed, uncertainty);
CREATE TABLE reviews (
    item_id    INTEGER NOT NULL REFERENCES items(id),
    reviewer   TEXT NOT NULL,
    label      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (item_id, reviewer)
) WITHOUT ROWID;
CREATE INDEX reviews_reviewer ON reviews(reviewer);
CREATE TABLE journal (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id     INTEGER NOT NULL REFERENCES items(id),
    old         TEXT,
    new         TEXT,
    source      TEXT NOT NULL,
    reviewer    TEXT,
    probability REAL,
    timestamp   TEXT NOT NULL,
    dwell_s     REAL,
    action      TEXT NOT NULL CHECK (action IN ('set', 'accept', 'undo', 'redo', 'merge', 'import')),
    ref         INTEGER REFERENCES journal(id),
    prev        TEXT
);
CREATE INDEX journal_item ON journal(item_id);
CREATE INDEX journal_reviewer ON journal(reviewer, id);
CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
    BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
    BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TABLE cursors (
    reviewer   TEXT PRIMARY KEY,
    item_id    INTEGER REFERENCES items(id),
    strategy   TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE predictions (
    id           INTEGER PRIMARY KEY,
    image_id     INTEGER NOT NULL REFERENCES images(id),
    path         TEXT NOT NULL,
    pack         TEXT NOT NULL,
    pack_version TEXT NOT NULL,
    n_items      INTEGER NOT NULL,
    imported_at  TEXT NOT NULL,
    UNIQUE (image_id, path)
);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT);
"""


def now_iso() -> str:
    """Current UTC time, ISO 8601 with microseconds (what every timestamp in the project uses)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _dumps(value) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _loads(text):
    return None if text is None else json.loads(text)


@dataclass(frozen=True)
class ImageRecord:
    """One image of a project."""

    id: int
    path: Path
    kind: str
    mpp: float
    checksum: str | None
    case_id: str | None
    plane_shape: tuple[int, int] | None
    added_at: str


def quick_checksum(path: Path) -> str:
    """A cheap content fingerprint: sha256 over size + first and last MiB of a slide file, or of each field file
    of a field-set folder (:func:`cytoreview.io.fields.list_field_files`: only the fields, so the project folder
    ``.cytoreview/`` inside it, ground truth or notes do not change it).

    Good enough to notice that a path now holds a different slide; not a cryptographic digest of the whole file.

    Raises
    ------
    OSError
        A file cannot be read (:meth:`Project.add_image` turns this into a ProjectError).
    """
    from cytoreview.io.fields import list_field_files

    h = hashlib.sha256()
    files = list_field_files(path) if path.is_dir() else [path]
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}\n".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > (2 << 20):
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read())
    return "q1:" + h.hexdigest()


class Project:
    """A review project: a folder holding ``project.sqlite`` (and ``predictions/``).

    Use :meth:`Project.open`; one instance is safe to share between threads (calls are serialised), and any number
    of processes may open the same folder.
    """

    def __init__(self, folder: Path, con: sqlite3.Connection):
        self.folder = folder
        self._con = con
        self._lock = threading.RLock()
        self._data_version = None
        self._stack_cache: dict[str, tuple[int, list[int], list[int]]] = {}  # reviewer -> (last id, undo, redo)
        self.schema = LabelSchema(backend=self)

    # ================================================================== opening
    @classmethod
    def open(cls, folder: str | os.PathLike, create: bool = False) -> Project:
        """Open the project in ``folder`` (creating it when ``create`` is true and there is none).

        Raises
        ------
        ProjectError
            No project there (and ``create`` false); the file is not SQLite, belongs to another application, was
            written by a newer cytoreview, or fails its integrity check. The file is never modified in these cases.
        """
        folder = Path(folder).expanduser().absolute()
        db = folder / DB_NAME
        if folder.exists() and not folder.is_dir():
            raise ProjectError(f"project path {folder} is a file, not a folder")
        if not db.exists() or db.stat().st_size == 0:
            if not create:
                raise ProjectError(f"no cytoreview project in {folder} ({DB_NAME} is missing); "
                                   "create one with Project.open(folder, create=True)")
            try:
                (folder / "predictions").mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ProjectError(f"cannot create project folder {folder}: {exc}") from exc
        else:
            _check_existing(db)
        con = None
        try:
            con = sqlite3.connect(str(db), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise ProjectError(f"{db}: cannot switch to WAL mode (got {mode!r}); is the folder on a network share?")
            con.execute("PRAGMA synchronous = FULL")
            con.execute("PRAGMA foreign_keys = ON")
            _initialise(con, db)
            (folder / "predictions").mkdir(exist_ok=True)
        except BaseException as exc:
            if con is not None:  # never leave a half-opened connection (and its file handles) behind
                con.close()
            if isinstance(exc, sqlite3.Error):
                raise ProjectError(f"cannot open project store {db}: {exc}") from exc
            if isinstance(exc, OSError):
                raise ProjectError(f"cannot create the predictions folder of project {folder}: {exc}") from exc
            raise
        return cls(folder, con)

    def check(self) -> None:
        """Run SQLite's full ``PRAGMA integrity_check`` (reads the whole file; opening only runs ``quick_check``).

        Raises
        ------
        ProjectError
            The store is corrupt (the message lists the first problems); nothing is modified.
        """
        with self._lock:
            con = self._connection()
            try:
                _raise_on_problems(self.db_path, con, "integrity_check")
            except sqlite3.DatabaseError as exc:
                raise ProjectError(f"{self.db_path} is corrupt ({exc}) -- restore it from a backup") from exc

    def close(self) -> None:
        """Close the connection (all changes are already committed)."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Project({str(self.folder)!r})"

    @property
    def db_path(self) -> Path:
        """Path of ``project.sqlite``."""
        return self.folder / DB_NAME

    @property
    def predictions_dir(self) -> Path:
        """Folder for prediction stores belonging to this project."""
        return self.folder / "predictions"

    # ================================================================== transactions
    @contextmanager
    def _write(self):
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error); yields the connection."""
        with self._lock:
            con = self._connection()
            try:
                con.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise ProjectError(f"{self.db_path}: could not start a write within {BUSY_TIMEOUT_S:.0f} s "
                                   f"(another process holds the lock?): {exc}") from exc
            try:
                yield con
            except sqlite3.Error as exc:
                # disk full / I/O / busy errors may already have rolled the transaction back: a blind ROLLBACK
                # would raise "no transaction is active" and hide the real error.
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise ProjectError(f"{self.db_path}: change NOT saved: {exc}") from exc
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            try:
                con.execute("COMMIT")
            except sqlite3.Error as exc:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise ProjectError(f"{self.db_path}: commit failed, change NOT saved: {exc}") from exc

    def _read(self, fn, *args):
        with self._lock:
            return fn(self._connection(), *args)

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            raise ProjectError(f"project {self.folder} is closed")
        return self._con

    def _schema_stale(self) -> bool:
        """True when another connection may have committed since the schema was last read."""
        version = self._read(lambda con: con.execute("PRAGMA data_version").fetchone()[0])
        stale = version != self._data_version
        self._data_version = version
        return stale

    # ================================================================== settings
    def get_setting(self, key: str, default=None):
        """Return a JSON-valued project setting."""
        row = self._read(lambda con: con.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone())
        return default if row is None else json.loads(row[0])

    def set_setting(self, key: str, value) -> None:
        """Store a JSON-serialisable project setting."""
        with self._write() as con:
            con.execute("INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, json.dumps(value)))

    # ================================================================== images
    def add_image(self, path: str | os.PathLike, *, kind: str, mpp: float, case_id: str | None = None,
                  plane_shape: tuple[int, int] | None = None, checksum: str | None = None) -> int:
        """Register an image (slide file or field-set folder) and return its id.

        Adding the same path again returns the existing id (and fills in ``case_id``/``plane_shape`` if they were
        unknown); a different ``kind`` or ``mpp`` for a known path is an error.

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
        p = Path(path).expanduser().absolute()
        if kind not in ("wsi", "fields"):
            raise ProjectError(f"image kind {kind!r} is not 'wsi' or 'fields'")
        try:
            mpp = float(mpp)
        except (TypeError, ValueError):
            raise ProjectError(f"mpp {mpp!r} for {p} is not a number") from None
        if not mpp > 0:
            raise ProjectError(f"mpp {mpp!r} for {p} must be > 0 um/px")
        if not p.exists():
            raise ProjectError(f"image {p} does not exist")
        known = self._read(lambda con: con.execute("SELECT 1 FROM images WHERE path=?", (str(p),)).fetchone())
        if plane_shape is None:
            plane_shape = _plane_shape_of(p)
        if checksum is None and known is None:  # fingerprint once, when the image is first added
            try:
                checksum = quick_checksum(p)
            except OSError as exc:
                raise ProjectError(f"cannot fingerprint image {p}: {exc}") from exc
        h, w = (None, None) if plane_shape is None else (int(plane_shape[0]), int(plane_shape[1]))
        with self._write() as con:
            row = con.execute("SELECT id, kind, mpp FROM images WHERE path=?", (str(p),)).fetchone()
            if row is not None:
                if row[1] != kind or abs(row[2] - mpp) > 1e-9 * mpp:
                    raise ProjectError(f"image {p} is already in the project as kind={row[1]!r}, mpp={row[2]}; "
                                       f"got kind={kind!r}, mpp={mpp}")
                con.execute("UPDATE images SET case_id=COALESCE(case_id, ?), height_px=COALESCE(height_px, ?), "
                            "width_px=COALESCE(width_px, ?) WHERE id=?", (case_id, h, w, row[0]))
                return int(row[0])
            cur = con.execute("INSERT INTO images(path, kind, mpp, checksum, case_id, height_px, width_px, added_at) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (str(p), kind, mpp, checksum, case_id, h, w, now_iso()))
            return int(cur.lastrowid)

    def images(self) -> list[ImageRecord]:
        """All images, by id."""
        rows = self._read(lambda con: con.execute(
            "SELECT id, path, kind, mpp, checksum, case_id, height_px, width_px, added_at FROM images ORDER BY id"
        ).fetchall())
        return [ImageRecord(id=r[0], path=Path(r[1]), kind=r[2], mpp=r[3], checksum=r[4], case_id=r[5],
                            plane_shape=None if r[6] is None else (r[6], r[7]), added_at=r[8]) for r in rows]

    def image(self, image_id: int) -> ImageRecord:
        """The image with id ``image_id``."""
        for rec in self.images():
            if rec.id == image_id:
                return rec
        raise ProjectError(f"no image with id {image_id!r} in project {self.folder}")

    # ================================================================== items
    def add_items(self, image_id: int, items: Iterable[Mapping]) -> list[int]:
        """Add (or update, matched on image/level/field/z/geometry) items and return their ids in order.

        Each mapping has ``level``, ``geometry`` and optionally ``field`` (0), ``z`` (0), ``model`` ("pack@ver"),
        ``model_class``, ``model_labels`` (list, for multi-label field items), ``model_prob``, ``uncertainty``.
        A model prediction becomes the item's label while no reviewer has labelled it (journalled as an
        ``"import"`` by ``"model:<pack>@<ver>"``); a reviewer's label is never overwritten.
        """
        with self._write() as con:
            return self._upsert_items(con, image_id, items)

    def _upsert_items(self, con, image_id: int, items: Iterable[Mapping]) -> list[int]:
        img = con.execute("SELECT height_px, width_px FROM images WHERE id=?", (image_id,)).fetchone()
        if img is None:
            raise ProjectError(f"no image with id {image_id!r} in project {self.folder}")
        plane = None if img[0] is None else (img[0], img[1])
        class_ids = {c.id: c for c in load_classes(con)}
        stamp = now_iso()
        ids, journal = [], []
        items = list(items)
        cols = "id, label, reviewed, model, model_labels, model_prob, uncertainty, source"
        preloaded = None
        if len(items) > 64:  # one scan of the image's items beats one lookup per item
            preloaded = {tuple(r[:4]): r[4:] for r in con.execute(
                f"SELECT level, field, z, geometry, {cols} FROM items WHERE image_id=?", (image_id,))}
        for n, item in enumerate(items):
            level = item.get("level")
            if level not in LEVELS:
                raise ProjectError(f"item {n}: level {level!r} is not one of {', '.join(LEVELS)}")
            g = geom.canonical(item.get("geometry", {"type": "field"} if level == "field" else None))
            if g["type"] not in geom.LEVEL_GEOMETRIES[level]:
                raise ProjectError(f"item {n}: a {level} item cannot have {g['type']} geometry")
            field, z = int(item.get("field", 0)), int(item.get("z", 0))
            model = item.get("model")
            mclass = item.get("model_class")
            mlabels = item.get("model_labels")
            if mclass is not None:
                mclass = int(mclass)
            if mlabels is None and mclass is not None:
                mlabels = [mclass]
            if mlabels is not None:
                mlabels = sorted({int(c) for c in mlabels})
                if mclass is None and mlabels:
                    mclass = mlabels[0]
            for cid in mlabels or ():
                if cid not in class_ids:
                    raise ProjectError(f"item {n}: model class id {cid} is not in the label schema")
            prob = None if item.get("model_prob") is None else float(item["model_prob"])
            unc = None if item.get("uncertainty") is None else float(item["uncertainty"])
            gj = geom.to_json(g)
            if preloaded is not None:
                row = preloaded.get((level, field, z, gj))
            else:
                row = con.execute(f"SELECT {cols} FROM items WHERE image_id=? AND level=? AND field=? AND z=? "
                                  "AND geometry=?", (image_id, level, field, z, gj)).fetchone()
            if row is None:
                label = mlabels if mlabels is not None else None
                source = None if label is None else (f"model:{model}" if model else "model:unknown")
                bb = geom.bbox(g, plane)
                cur = con.execute(
                    "INSERT INTO items(image_id, level, field, z, geometry, x_min, y_min, x_max, y_max, model, "
                    "model_class, model_labels, model_prob, uncertainty, label, reviewed, source, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                    (image_id, level, field, z, gj, *bb, model, mclass, _dumps(mlabels), prob, unc, _dumps(label),
                     source, stamp))
                iid = int(cur.lastrowid)
                if preloaded is not None:
                    preloaded[(level, field, z, gj)] = (iid, _dumps(label), 0, model, _dumps(mlabels), prob, unc, source)
                if label is not None:
                    journal.append((iid, None, _dumps(label), source, None, prob, stamp, None,
                                    "import", None, None))
            else:
                iid, old_label, reviewed = row[0], row[1], row[2]
                unchanged = (row[3] == model and _loads(row[4]) == mlabels and row[5] == prob and row[6] == unc)
                if unchanged:
                    ids.append(iid)
                    continue
                new_label, source = old_label, row[7]
                if not reviewed and mlabels is not None and _loads(old_label) != mlabels:
                    new_label, source = _dumps(mlabels), f"model:{model}" if model else "model:unknown"
                    journal.append((iid, old_label, new_label, source, None, prob, stamp, None, "import", None,
                                    _dumps({"reviewed": 0, "reviewer": None, "source": row[7], "own": None})))
                con.execute("UPDATE items SET model=?, model_class=?, model_labels=?, model_prob=?, uncertainty=?, "
                            "label=?, source=?, updated_at=? WHERE id=?",
                            (model, mclass, _dumps(mlabels), prob, unc, new_label, source, stamp, iid))
                if preloaded is not None:
                    preloaded[(level, field, z, gj)] = (iid, new_label, reviewed, model, _dumps(mlabels), prob, unc,
                                                        source)
            ids.append(iid)
        con.executemany(
            "INSERT INTO journal(item_id, old, new, source, reviewer, probability, timestamp, dwell_s, action, ref, "
            "prev) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", journal)
        return ids

    def n_items(self, image_id: int | None = None) -> int:
        """Number of items (of one image)."""
        sql, args = "SELECT COUNT(*) FROM items", ()
        if image_id is not None:
            sql, args = sql + " WHERE image_id=?", (image_id,)
        return self._read(lambda con: con.execute(sql, args).fetchone()[0])

    def item(self, item_id: int, blind_for: str | None = None) -> dict:
        """One item as a dict (see :meth:`items` for the keys and for ``blind_for``)."""
        df = self.items(ids=[item_id], blind_for=blind_for)
        if df.empty:
            raise ProjectError(f"no item with id {item_id!r} in project {self.folder}")
        return df.iloc[0].to_dict()

    def items(self, image_id: int | None = None, level: str | None = None, field: int | None = None,
              ids: Sequence[int] | None = None, blind_for: str | None = None) -> pd.DataFrame:
        """Items as a DataFrame, one row per item, ordered by id.

        Columns: item_id, image_id, level, field, z, geometry (dict), x_min, y_min, x_max, y_max, model,
        model_class, model_labels, model_prob, uncertainty, label (list of ids or None), reviewed, reviewer,
        source, updated_at.

        Parameters
        ----------
        blind_for : str, optional
            Blinded second read: hide the model's output (model, model_class, model_labels, model_prob,
            uncertainty are None) and every other reviewer's label; ``label``/``reviewed``/``reviewer``/``source``
            then describe only ``blind_for``'s own review.
        """
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
        sql = (f"SELECT i.id, i.image_id, i.level, i.field, i.z, i.geometry, i.x_min, i.y_min, i.x_max, i.y_max, "
               f"i.model, i.model_class, i.model_labels, i.model_prob, i.uncertainty, i.label, i.reviewed, "
               f"i.reviewer, i.source, i.updated_at{', r.label, r.updated_at' if blind_for is not None else ''} "
               f"FROM items i {own_join} {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY i.id")
        rows = self._read(lambda con: con.execute(sql, args).fetchall())
        cols = ["item_id", "image_id", "level", "field", "z", "geometry", "x_min", "y_min", "x_max", "y_max",
                "model", "model_class", "model_labels", "model_prob", "uncertainty", "label", "reviewed",
                "reviewer", "source", "updated_at"]
        out = []
        if wanted is not None:
            rows = [r for r in rows if r[0] in wanted]
        for r in rows:
            d = dict(zip(cols, r[:20]))
            d["geometry"] = json.loads(d["geometry"])
            d["model_labels"] = _loads(d["model_labels"])
            d["label"] = _loads(d["label"])
            d["reviewed"] = bool(d["reviewed"])
            if blind_for is not None:
                for k in ("model", "model_class", "model_labels", "model_prob", "uncertainty"):
                    d[k] = None
                own = _loads(r[20])
                d.update(label=own, reviewed=own is not None, reviewer=blind_for if own is not None else None,
                         source="reviewer" if own is not None else None,
                         updated_at=r[21] if own is not None else None)
            out.append(d)
        df = pd.DataFrame(out, columns=cols)
        for col in ("model", "model_class", "model_labels", "model_prob", "uncertainty", "label", "reviewer",
                    "source", "updated_at"):  # keep None (pandas would turn it into NaN)
            df[col] = pd.Series([d[col] for d in out], index=df.index, dtype=object)
        return df

    # ================================================================== labelling
    def set_label(self, item_id: int, class_ids: int | Iterable[int], reviewer: str, dwell_s: float | None = None,
                  *, source: str = "reviewer") -> int:
        """Set an item's label and return the journal id; committed to disk before it returns.

        Parameters
        ----------
        item_id : int
        class_ids : int or iterable of int
            One class id (Python or numpy integer, e.g. a value read from a napari Labels layer), or several for a (multi-label) field item; ``UNSURE`` marks "cannot tell". An empty
            list is allowed for a field item ("none of the classes").
        reviewer : str
            Who made the change (non-empty).
        dwell_s : float, optional
            Seconds the reviewer looked at the item before deciding.
        source : str
            ``"reviewer"`` (default) or ``"import:<file>"`` for labels read from an annotation file
            (journalled with action ``"import"`` and not on the reviewer's undo stack).
        """
        ids = _class_id_list(class_ids, item_id)
        if source == "reviewer":
            action = "set"
        elif isinstance(source, str) and source.startswith("import:") and len(source) > 7:
            action = "import"
        else:
            raise ProjectError(f"label source {source!r} is not 'reviewer' or 'import:<file>'")
        return self._change(item_id, ids, reviewer, dwell_s, action=action, source=source)

    def accept(self, item_id: int, reviewer: str, dwell_s: float | None = None) -> int:
        """Confirm the model's label for an item (journal action ``"accept"``); return the journal id."""
        return self._change(item_id, None, reviewer, dwell_s, action="accept", source="reviewer")

    def _change(self, item_id, ids, reviewer, dwell_s, *, action, source) -> int:
        _check_reviewer(reviewer)
        if dwell_s is not None:
            dwell_s = float(dwell_s)
            if not dwell_s >= 0:
                raise ProjectError(f"dwell_s {dwell_s!r} must be >= 0 seconds")
        schema = self.schema
        with self._write() as con:
            row = con.execute("SELECT level, label, reviewed, reviewer, source, model_class, model_labels, model_prob "
                              "FROM items WHERE id=?", (item_id,)).fetchone()
            if row is None:
                raise ProjectError(f"no item with id {item_id!r} in project {self.folder}")
            level, old, reviewed, old_reviewer, old_source, mclass, mlabels, mprob = row
            schema._classes = {c.id: c for c in load_classes(con)}
            if action == "accept":
                if mclass is None and mlabels is None:
                    raise ProjectError(f"item {item_id} has no model prediction to accept")
                ids = _loads(mlabels) if mlabels is not None else [mclass]
                ids = [schema.resolve(i) for i in ids]
            new = schema.check_assignable(ids)
            if level != "field" and len(new) != 1:
                raise ProjectError(f"item {item_id} is a {level} item: it takes exactly one class, got {new}")
            own = con.execute("SELECT label FROM reviews WHERE item_id=? AND reviewer=?", (item_id, reviewer)).fetchone()
            prev = {"reviewed": reviewed, "reviewer": old_reviewer, "source": old_source,
                    "own": None if own is None else json.loads(own[0])}
            stamp = now_iso()
            new_json = _dumps(new)
            con.execute("UPDATE items SET label=?, reviewed=1, reviewer=?, source=?, updated_at=? WHERE id=?",
                        (new_json, reviewer, source, stamp, item_id))
            con.execute("INSERT INTO reviews(item_id, reviewer, label, updated_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(item_id, reviewer) DO UPDATE SET label=excluded.label, updated_at=excluded.updated_at",
                        (item_id, reviewer, new_json, stamp))
            cur = con.execute(
                "INSERT INTO journal(item_id, old, new, source, reviewer, probability, timestamp, dwell_s, action, prev) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (item_id, old, new_json, source, reviewer, mprob, stamp, dwell_s, action, _dumps(prev)))
            return int(cur.lastrowid)

    # ------------------------------------------------------------------ undo / redo
    def _stacks(self, con, reviewer: str) -> tuple[list[int], list[int]]:
        """``reviewer``'s undo and redo stacks (journal ids of undoable actions), replayed from the journal.

        The journal is append-only and its ids only grow, so the stacks are cached per reviewer with the last
        journal id replayed, and each call replays only the newer rows (another process's included).
        """
        last, undo, redo = self._stack_cache.get(reviewer, (0, [], []))
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
        self._stack_cache[reviewer] = (last, list(undo), list(redo))
        return undo, redo

    def can_undo(self, reviewer: str) -> bool:
        """Whether ``reviewer`` has an action to undo."""
        return bool(self._read(self._stacks, reviewer)[0])

    def can_redo(self, reviewer: str) -> bool:
        """Whether ``reviewer`` has an undone action to redo."""
        return bool(self._read(self._stacks, reviewer)[1])

    def undo(self, reviewer: str, *, force: bool = False) -> int | None:
        """Undo ``reviewer``'s latest not-yet-undone change (their own journal only).

        Writes a new journal row (action ``"undo"``) restoring the old label; nothing is deleted. Returns the new
        journal id, or None when there is nothing to undo.

        Raises
        ------
        ProjectError
            If somebody else changed the item since (undoing would silently discard their label); pass
            ``force=True`` to undo anyway.
        """
        return self._undo_redo(reviewer, "undo", force)

    def redo(self, reviewer: str, *, force: bool = False) -> int | None:
        """Re-apply ``reviewer``'s most recently undone change (journal action ``"redo"``); None if none."""
        return self._undo_redo(reviewer, "redo", force)

    def _undo_redo(self, reviewer: str, action: str, force: bool) -> int | None:
        _check_reviewer(reviewer)
        with self._write() as con:
            undo, redo = self._stacks(con, reviewer)
            stack = undo if action == "undo" else redo
            if not stack:
                return None
            target = stack[-1]
            item_id, t_old, t_new, t_prev = con.execute(
                "SELECT item_id, old, new, prev FROM journal WHERE id=?", (target,)).fetchone()
            cur = con.execute("SELECT label, reviewed, reviewer, source, model_prob FROM items WHERE id=?",
                              (item_id,)).fetchone()
            label, reviewed, cur_reviewer, cur_source, mprob = cur
            expect = t_new if action == "undo" else t_old
            # Another reviewer may have set the very same label since (ann -> 2, bob -> 2): the label still matches,
            # but undoing would wipe bob's review. Any later journal row by someone else blocks it.
            other = con.execute("SELECT reviewer, action, timestamp FROM journal WHERE item_id=? AND id>? AND "
                                "reviewer IS NOT ? ORDER BY id DESC LIMIT 1", (item_id, target, reviewer)).fetchone()
            if (other is not None or _loads(label) != _loads(expect)) and not force:
                last = other or con.execute("SELECT reviewer, action, timestamp FROM journal WHERE item_id=? "
                                            "ORDER BY id DESC LIMIT 1", (item_id,)).fetchone()
                raise ProjectError(
                    f"cannot {action} on item {item_id}: it was changed since ({last[1]} by {last[0] or 'model'} at "
                    f"{last[2]}); {action} with force=True to overwrite that change")
            own = con.execute("SELECT label FROM reviews WHERE item_id=? AND reviewer=?", (item_id, reviewer)).fetchone()
            prev_now = {"reviewed": reviewed, "reviewer": cur_reviewer, "source": cur_source,
                        "own": None if own is None else json.loads(own[0])}
            stamp = now_iso()
            if action == "undo":
                p = json.loads(t_prev)
                new_label, new_state, new_own = t_old, p, p["own"]
            else:
                new_label, new_own = t_new, _loads(t_new)
                new_state = {"reviewed": 1, "reviewer": reviewer, "source": "reviewer"}
            con.execute("UPDATE items SET label=?, reviewed=?, reviewer=?, source=?, updated_at=? WHERE id=?",
                        (new_label, int(new_state["reviewed"]), new_state["reviewer"], new_state["source"], stamp,
                         item_id))
            if new_own is None:
                con.execute("DELETE FROM reviews WHERE item_id=? AND reviewer=?", (item_id, reviewer))
            else:
                con.execute("INSERT INTO reviews(item_id, reviewer, label, updated_at) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT(item_id, reviewer) DO UPDATE SET label=excluded.label, "
                            "updated_at=excluded.updated_at", (item_id, reviewer, _dumps(new_own), stamp))
            cur = con.execute(
                "INSERT INTO journal(item_id, old, new, source, reviewer, probability, timestamp, dwell_s, action, "
                "ref, prev) VALUES (?, ?, ?, 'reviewer', ?, ?, ?, NULL, ?, ?, ?)",
                (item_id, label, new_label, reviewer, mprob, stamp, action, target, _dumps(prev_now)))
            return int(cur.lastrowid)

    # ------------------------------------------------------------------ class merge (called by LabelSchema.merge)
    def _relabel_merged(self, con, mapping: dict[int, int], reviewer: str) -> int:
        _check_reviewer(reviewer)
        stamp = now_iso()
        n = 0

        def remap(ids):
            return sorted({mapping.get(i, i) for i in ids})

        rows = con.execute("SELECT id, label, reviewed, reviewer, source, model_class, model_labels, model_prob "
                           "FROM items WHERE label IS NOT NULL OR model_labels IS NOT NULL").fetchall()
        for iid, label, reviewed, rv, src, mclass, mlabels, mprob in rows:
            if mlabels is not None:
                ml = _loads(mlabels)
                if any(i in mapping for i in ml):
                    con.execute("UPDATE items SET model_labels=?, model_class=? WHERE id=?",
                                (_dumps(remap(ml)), mapping.get(mclass, mclass), iid))
            if label is None:
                continue
            old = _loads(label)
            if not any(i in mapping for i in old):
                continue
            new = _dumps(remap(old))
            con.execute("UPDATE items SET label=?, updated_at=? WHERE id=?", (new, stamp, iid))
            prev = {"reviewed": reviewed, "reviewer": rv, "source": src, "own": None}
            con.execute("INSERT INTO journal(item_id, old, new, source, reviewer, probability, timestamp, dwell_s, "
                        "action, prev) VALUES (?, ?, ?, 'reviewer', ?, ?, ?, NULL, 'merge', ?)",
                        (iid, label, new, reviewer, mprob, stamp, _dumps(prev)))
            n += 1
        for iid, rv, label in con.execute("SELECT item_id, reviewer, label FROM reviews").fetchall():
            old = json.loads(label)
            if any(i in mapping for i in old):
                con.execute("UPDATE reviews SET label=? WHERE item_id=? AND reviewer=?", (_dumps(remap(old)), iid, rv))
        return n

    # ================================================================== reading the journal
    def history(self, item_id: int | None = None, reviewer: str | None = None) -> pd.DataFrame:
        """Journal rows (oldest first) as a DataFrame.

        Columns: journal_id, item_id, action, old (list or None), new (list or None), source, reviewer,
        probability, timestamp, dwell_s, ref (journal id an undo/redo refers to).
        """
        where, args = [], []
        if item_id is not None:
            where.append("item_id=?")
            args.append(int(item_id))
        if reviewer is not None:
            where.append("reviewer=?")
            args.append(reviewer)
        sql = ("SELECT id, item_id, action, old, new, source, reviewer, probability, timestamp, dwell_s, ref "
               f"FROM journal {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY id")
        rows = self._read(lambda con: con.execute(sql, args).fetchall())
        cols = ["journal_id", "item_id", "action", "old", "new", "source", "reviewer", "probability", "timestamp",
                "dwell_s", "ref"]
        df = pd.DataFrame(rows, columns=cols)
        df["old"] = pd.Series([_loads(r[3]) for r in rows], index=df.index, dtype=object)
        df["new"] = pd.Series([_loads(r[4]) for r in rows], index=df.index, dtype=object)
        df["reviewer"] = pd.Series([r[6] for r in rows], index=df.index, dtype=object)
        df["ref"] = df["ref"].astype("Int64")
        return df

    def reviewers(self) -> list[str]:
        """Everyone who has labelled something, sorted."""
        return [r[0] for r in self._read(lambda con: con.execute(
            "SELECT DISTINCT reviewer FROM reviews ORDER BY reviewer").fetchall())]

    def reviewer_labels(self, reviewer: str) -> dict[int, list[int]]:
        """``{item_id: label}`` of ``reviewer``'s current labels; ``"model"`` gives the model's labels."""
        if reviewer == "model":
            rows = self._read(lambda con: con.execute(
                "SELECT id, model_labels FROM items WHERE model_labels IS NOT NULL").fetchall())
        else:
            rows = self._read(lambda con: con.execute(
                "SELECT item_id, label FROM reviews WHERE reviewer=?", (reviewer,)).fetchall())
        return {r[0]: json.loads(r[1]) for r in rows}

    # ================================================================== the rest of the API lives in other modules
    def import_predictions(self, image_id: int, store_path: str | os.PathLike, *, allow_partial: bool = False) -> int:
        """Import a prediction zarr store (an unfinished one only with ``allow_partial=True``); see
        :func:`cytoreview.review.predictions.import_predictions`."""
        from cytoreview.review.predictions import import_predictions

        return import_predictions(self, image_id, store_path, allow_partial=allow_partial)

    def queue(self, strategy: str = "uncertainty", **kwargs) -> list[int]:
        """Unreviewed item ids in review order; see :func:`cytoreview.review.queue.queue`."""
        from cytoreview.review.queue import queue

        return queue(self, strategy, **kwargs)

    def next_item(self, reviewer: str, strategy: str | None = None, **kwargs) -> int | None:
        """The next item for ``reviewer`` after their cursor; see :func:`cytoreview.review.queue.next_item`."""
        from cytoreview.review.queue import next_item

        return next_item(self, reviewer, strategy, **kwargs)

    def cursor(self, reviewer: str) -> tuple[int | None, str | None]:
        """``(item_id, strategy)`` of ``reviewer``'s cursor, ``(None, None)`` if they have none."""
        row = self._read(lambda con: con.execute("SELECT item_id, strategy FROM cursors WHERE reviewer=?",
                                                 (reviewer,)).fetchone())
        return (None, None) if row is None else (row[0], row[1])

    def set_cursor(self, reviewer: str, item_id: int | None, strategy: str) -> None:
        """Remember where ``reviewer`` is (committed at once, so a reopened project resumes there)."""
        _check_reviewer(reviewer)
        with self._write() as con:
            con.execute("INSERT INTO cursors(reviewer, item_id, strategy, updated_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(reviewer) DO UPDATE SET item_id=excluded.item_id, strategy=excluded.strategy, "
                        "updated_at=excluded.updated_at", (reviewer, item_id, strategy, now_iso()))

    def label_table(self, only_reviewed: bool = False) -> pd.DataFrame:
        """One row per item: THE export contract; see :func:`cytoreview.review.tables.label_table`."""
        from cytoreview.review.tables import label_table

        return label_table(self, only_reviewed=only_reviewed)

    def progress(self):
        """Review progress; see :func:`cytoreview.review.tables.progress`."""
        from cytoreview.review.tables import progress

        return progress(self)

    def class_counts(self, only_reviewed: bool = False) -> pd.DataFrame:
        """Items per class; see :func:`cytoreview.review.tables.class_counts`."""
        from cytoreview.review.tables import class_counts

        return class_counts(self, only_reviewed=only_reviewed)

    def agreement(self, reviewer_a: str, reviewer_b: str):
        """Agreement between two reviewers (or ``"model"``); see :func:`cytoreview.review.agreement.agreement`."""
        from cytoreview.review.agreement import agreement

        return agreement(self, reviewer_a, reviewer_b)

    def adjudication_queue(self, reviewer_a: str, reviewer_b: str) -> list[int]:
        """Items where two readers disagree; see :func:`cytoreview.review.agreement.adjudication_queue`."""
        from cytoreview.review.agreement import adjudication_queue

        return adjudication_queue(self, reviewer_a, reviewer_b)


# ---------------------------------------------------------------------- helpers
def _check_reviewer(reviewer) -> None:
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise ProjectError(f"reviewer {reviewer!r} must be a non-empty name")
    if reviewer == "model":
        raise ProjectError("reviewer name 'model' is reserved for the model's own labels")


def _is_class_id(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _class_id_list(class_ids, item_id) -> list[int]:
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


def _plane_shape_of(path: Path) -> tuple[int, int] | None:
    """``(height, width)`` of one plane via :func:`cytoreview.io.open_image`."""
    from cytoreview.io import open_image

    image = open_image(path)
    try:
        return tuple(int(v) for v in image.plane_shape)
    finally:
        close = getattr(image, "close", None)
        if close is not None:
            close()


def _check_existing(db: Path) -> None:
    """Refuse (without writing a byte) a file that is not a healthy cytoreview project of a known version."""
    try:
        with open(db, "rb") as fh:
            head = fh.read(100)
    except OSError as exc:
        raise ProjectError(f"cannot read project store {db}: {exc}") from exc
    if not head.startswith(_SQLITE_MAGIC):
        raise ProjectError(f"{db} is not a SQLite database (corrupt or foreign file); it was left untouched")
    uri = f"file:{quote(str(db))}?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise ProjectError(f"cannot open project store {db}: {exc}") from exc
    try:
        try:
            app_id = con.execute("PRAGMA application_id").fetchone()[0]
            version = con.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if app_id != APPLICATION_ID and (tables or version):
                raise ProjectError(f"{db} is a SQLite database of another application (application_id {app_id:#x}, "
                                   f"tables {sorted(tables)[:5]}); it was left untouched")
            if version > SCHEMA_VERSION:
                raise ProjectError(f"{db} was written by a newer cytoreview (project schema {version}, this version "
                                   f"reads up to {SCHEMA_VERSION}); upgrade cytoreview")
            # quick_check: page/btree structure without the O(rows x indexes) cross-check of integrity_check, so
            # opening a big project stays fast; Project.check() runs the full check on demand.
            _raise_on_problems(db, con, "quick_check")
        except sqlite3.DatabaseError as exc:
            raise ProjectError(f"{db} is corrupt ({exc}); it was left untouched -- restore it from a backup") from exc
    finally:
        con.close()


def _raise_on_problems(db: Path, con: sqlite3.Connection, pragma: str) -> None:
    problems = [r[0] for r in con.execute(f"PRAGMA {pragma}(20)")]
    if problems != ["ok"]:
        raise ProjectError(f"{db} failed its integrity check ({'; '.join(problems[:3])}); it was left untouched "
                           "-- restore it from a backup")


def _initialise(con: sqlite3.Connection, db: Path) -> None:
    """Create the tables in an empty database (inside BEGIN IMMEDIATE so two creators do not race)."""
    con.execute("BEGIN IMMEDIATE")
    try:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            tables = con.execute("SELECT COUNT(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            if tables:
                raise ProjectError(f"{db} has tables but no project schema version; refusing to touch it")
            for stmt in _split_sql(_DDL):
                con.execute(stmt)
            con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("INSERT INTO settings(key, value) VALUES ('created_at', ?)", (json.dumps(now_iso()),))
        elif version > SCHEMA_VERSION:
            raise ProjectError(f"{db} was written by a newer cytoreview (schema {version} > {SCHEMA_VERSION})")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _split_sql(script: str) -> list[str]:
    """Split a DDL script into statements (``CREATE TRIGGER`` bodies contain ``;`` and end with ``END;``)."""
    out, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        text = "\n".join(buf).strip()
        if text.endswith(";") and (not text.upper().startswith("CREATE TRIGGER") or text.upper().endswith("END;")):
            out.append(text)
            buf = []
    if "".join(buf).strip():
        out.append("\n".join(buf))
    return out
