"""The project database: one SQLite file (WAL, ``synchronous=FULL``), its table layout and its transactions.

Every other store module (:mod:`~cytoreview.review.images`, :mod:`~cytoreview.review.items`,
:mod:`~cytoreview.review.journal`, the classes table of :mod:`~cytoreview.review.schema`) receives the
:class:`Database` and runs its SQL through :meth:`Database.write` (one ``BEGIN IMMEDIATE`` ... ``COMMIT``) or
:meth:`Database.read`. Nothing outside those modules writes SQL.

Durability rules (the heart of the product -- a cytologist's labels are never lost):

* a change is ONE ``BEGIN IMMEDIATE`` transaction, committed (fsync of the WAL) before the call that made it returns;
* two processes on one project wait for each other (busy timeout) rather than fail;
* on open, a file that is not a cytoreview project, is newer than this code, or fails ``PRAGMA quick_check`` is
  refused with a :class:`~cytoreview.errors.ProjectError` and is left byte-for-byte untouched;
* a healthy project whose folder or database file cannot be written (a read-only share, a CD, permissions) opens
  read-only: reading, browsing and exporting work, and every change raises
  :class:`~cytoreview.errors.ProjectReadOnlyError` saying so (never "corrupt");
  :meth:`Database.check` runs the full (slower) ``PRAGMA integrity_check`` on demand.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from cytoreview.errors import ProjectError, ProjectReadOnlyError
from cytoreview.review import geometry as geom

#: Version of the table layout written by this code (``PRAGMA user_version``). 2: journal rows carry a hash chain;
#: 3: items are identified by an integer ``geometry_key`` (see :func:`cytoreview.review.geometry.identity_key`) in a
#: separate unique index instead of a UNIQUE constraint over the geometry text. An older project is migrated when it
#: is first opened where it can be written (one transaction); read-only it is read as it is.
SCHEMA_VERSION = 3
#: ``PRAGMA application_id`` of a cytoreview project ("CYRV").
APPLICATION_ID = 0x43595256
#: File name of the store inside a project folder.
DB_NAME = "project.sqlite"
#: How long a writer waits for another process's transaction before giving up, seconds.
BUSY_TIMEOUT_S = 30.0
_SQLITE_MAGIC = b"SQLite format 3\x00"
#: SQLite page cache of a project connection, KiB (SQLite's default is 2 MiB). A million-item project's indexes are
#: ~100 MB: with the default cache a bulk insert re-reads index pages from the OS for nearly every row (measured
#: 2x slower at 10^6 items). The cache grows only as pages are touched.
CACHE_KIB = 262_144
#: Indexes added after schema version 2 was first written (created when a project is opened where it can be
#: written; a read-only project works without them, only slower).
LATER_INDEXES = (
    "CREATE INDEX IF NOT EXISTS journal_batches ON journal(item_id) WHERE action = 'import' AND new IS NULL",
    "CREATE INDEX IF NOT EXISTS items_progress ON items(image_id, level, reviewed)",
)

#: The items table and its indexes (schema version 3); also what the 2 -> 3 migration builds. Two choices are about
#: speed (measured inserting 3*10^5 cells): the level CHECK is written with OR, not ``IN (...)`` -- SQLite evaluates
#: an IN list through an ephemeral table built for every row, which doubled the cost of an insert; and
#: ``items_identity`` starts with the key: every lookup gives all five columns, and sorting rows whose leading
#: columns are all equal (one image, one level) took twice as long to build the index.
ITEMS_DDL = """
CREATE TABLE items (
    id           INTEGER PRIMARY KEY,
    image_id     INTEGER NOT NULL REFERENCES images(id),
    level        TEXT NOT NULL CHECK (level = 'field' OR level = 'tile' OR level = 'cell' OR level = 'region'),
    field        INTEGER NOT NULL DEFAULT 0,
    z            INTEGER NOT NULL DEFAULT 0,
    geometry     TEXT NOT NULL,
    geometry_key INTEGER NOT NULL,
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
    updated_at   TEXT NOT NULL
);
CREATE UNIQUE INDEX items_identity ON items(geometry_key, image_id, level, field, z);
CREATE INDEX items_queue ON items(reviewed, uncertainty);
CREATE INDEX items_progress ON items(image_id, level, reviewed);
"""
#: The columns an items table of schema version 2 and 3 share (what the 2 -> 3 migration copies).
_V2_ITEM_COLUMNS = ("id, image_id, level, field, z, geometry, x_min, y_min, x_max, y_max, model, model_class, "
                    "model_labels, model_prob, uncertainty, label, reviewed, reviewer, source, updated_at")

#: The table layout (schema version 3).
DDL = """
CREATE TABLE classes (
    id          INTEGER PRIMARY KEY CHECK (id >= 0),
    name        TEXT NOT NULL,
    name_key    TEXT NOT NULL,
    color       TEXT NOT NULL,
    hotkey      TEXT,
    level       TEXT NOT NULL,
    active      INTEGER NOT NULL DEFAULT 1,
    merged_into INTEGER REFERENCES classes(id),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE UNIQUE INDEX classes_active_name ON classes(name_key) WHERE active = 1;
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
    prev        TEXT,
    hash        TEXT
);
CREATE INDEX journal_item ON journal(item_id);
CREATE INDEX journal_batches ON journal(item_id) WHERE action = 'import' AND new IS NULL;
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
""" + ITEMS_DDL


def now_iso() -> str:
    """Current UTC time, ISO 8601 with microseconds (what every timestamp in the project uses)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def dumps(value) -> str | None:
    """Compact JSON text of ``value`` (None stays None): how labels and geometry are stored."""
    return None if value is None else json.dumps(value, separators=(",", ":"))


def loads(text):
    """Inverse of :func:`dumps`."""
    return None if text is None else json.loads(text)


class Database:
    """The open ``project.sqlite`` of one project folder: one connection, serialised between threads.

    Use :meth:`Database.open`. Reads and writes go through :meth:`read` and :meth:`write`.
    """

    def __init__(self, path: Path, con: sqlite3.Connection, busy_timeout_s: float = BUSY_TIMEOUT_S,
                 read_only: bool = False, schema_version: int = SCHEMA_VERSION):
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.read_only = read_only
        #: The table layout of the open file: :data:`SCHEMA_VERSION`, or older for a project opened read-only
        #: before it was migrated (version 2 has no ``geometry_key``: items are found by their geometry text).
        self.schema_version = schema_version
        self._con = con
        self._lock = threading.RLock()
        self._write_depth = 0  # > 0 inside a write transaction (guarded by _lock)

    @classmethod
    def open(cls, folder: Path, *, create: bool = False, busy_timeout_s: float | None = None,
             chain_rows: Callable | None = None) -> Database:
        """Open (or with ``create`` make) ``folder/project.sqlite``; see :meth:`cytoreview.review.Project.open`.

        Raises
        ------
        ProjectError
            No project there (and ``create`` false); the file is not SQLite, belongs to another application, was
            written by a newer cytoreview, or fails its integrity check. The file is never modified in these cases.
        """
        timeout_s = BUSY_TIMEOUT_S if busy_timeout_s is None else float(busy_timeout_s)
        if not timeout_s > 0:
            raise ProjectError(f"busy timeout {busy_timeout_s!r} must be > 0 seconds")
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
            if not _writable(folder, db):
                return cls._open_read_only(folder, db, timeout_s)
            _check_existing(db, timeout_s)
        con = None
        try:
            con = sqlite3.connect(str(db), timeout=timeout_s, isolation_level=None, check_same_thread=False)
            con.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise ProjectError(f"{db}: cannot switch to WAL mode (got {mode!r}); is the folder on a network share?")
            con.execute("PRAGMA synchronous = FULL")
            con.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            con.execute("PRAGMA foreign_keys = ON")
            _initialise(con, db, chain_rows)
            (folder / "predictions").mkdir(exist_ok=True)
        except BaseException as exc:
            if con is not None:  # never leave a half-opened connection (and its file handles) behind
                con.close()
            if isinstance(exc, sqlite3.Error):
                raise ProjectError(f"cannot open project store {db}: {exc}") from exc
            if isinstance(exc, OSError):
                raise ProjectError(f"cannot create the predictions folder of project {folder}: {exc}") from exc
            raise
        return cls(db, con, timeout_s)

    @classmethod
    def _open_read_only(cls, folder: Path, db: Path, timeout_s: float) -> Database:
        """Open a project whose folder or file cannot be written: checked like any other, then read-only."""
        con = _connect_read_only(db, timeout_s)
        try:
            _check_project(db, con)
            version = con.execute("PRAGMA user_version").fetchone()[0]
        except BaseException:
            con.close()
            raise
        return cls(db, con, timeout_s, read_only=True, schema_version=version)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error); yields the connection.

        A write opened inside another one (the same thread, already in :meth:`write`) joins it: one transaction,
        committed or rolled back whole by the outermost write. This is how one user action made of several store
        changes (a reshape: the old region deleted, the new one added) is saved all or nothing.

        Raises
        ------
        ProjectReadOnlyError
            The project was opened read-only (nothing is written).
        ProjectError
            The lock was not obtained within the busy timeout, or SQLite failed (the change is NOT saved).
        """
        if self.read_only:
            raise ProjectReadOnlyError(f"project {self.path.parent} is read-only (its folder or {DB_NAME} cannot be "
                                       "written here): browsing and export work, changes cannot be saved; copy the "
                                       "folder somewhere writable to review")
        with self._lock:
            con = self.connection()
            if self._write_depth:  # inside the outer write's transaction: it commits or rolls back
                self._write_depth += 1
                try:
                    yield con
                finally:
                    self._write_depth -= 1
                return
            try:
                con.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise ProjectError(f"{self.path}: could not start a write within "
                                   f"{self.busy_timeout_s:g} s "
                                   f"(another process holds the lock?): {exc}") from exc
            self._write_depth = 1
            try:
                yield con
            except sqlite3.Error as exc:
                # disk full / I/O / busy errors may already have rolled the transaction back: a blind ROLLBACK
                # would raise "no transaction is active" and hide the real error.
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise ProjectError(f"{self.path}: change NOT saved: {exc}") from exc
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            finally:
                self._write_depth = 0
            try:
                con.execute("COMMIT")
            except sqlite3.Error as exc:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise ProjectError(f"{self.path}: commit failed, change NOT saved: {exc}") from exc

    def read(self, fn: Callable, *args):
        """Call ``fn(connection, *args)`` under the lock (outside any transaction: WAL gives a consistent read)."""
        with self._lock:
            return fn(self.connection(), *args)

    def connection(self) -> sqlite3.Connection:
        """The open ``sqlite3.Connection`` (for the store modules; raises once closed)."""
        if self._con is None:
            raise ProjectError(f"project store {self.path} is closed")
        return self._con

    def data_version(self) -> int:
        """``PRAGMA data_version``: changes when another connection commits."""
        return self.read(lambda con: con.execute("PRAGMA data_version").fetchone()[0])

    def check(self) -> None:
        """Run SQLite's full ``PRAGMA integrity_check``; raise :class:`ProjectError` listing the first problems."""
        with self._lock:
            con = self.connection()
            try:
                _raise_on_problems(self.path, con, "integrity_check")
            except sqlite3.DatabaseError as exc:
                raise ProjectError(f"{self.path} is corrupt ({exc}) -- restore it from a backup") from exc

    def close(self) -> None:
        """Close the connection (all changes are already committed)."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    # ------------------------------------------------------------------ settings
    def get_setting(self, key: str, default=None):
        """Return a JSON-valued project setting."""
        row = self.read(lambda con: con.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone())
        return default if row is None else json.loads(row[0])

    def set_setting(self, key: str, value) -> None:
        """Store a JSON-serialisable project setting."""
        with self.write() as con:
            con.execute("INSERT INTO settings(key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, json.dumps(value)))


# ---------------------------------------------------------------------- opening
def _check_existing(db: Path, timeout_s: float) -> None:
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
        con = sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None)
    except sqlite3.Error as exc:
        raise ProjectError(f"cannot open project store {db}: {exc}") from exc
    try:
        _check_project(db, con)
    finally:
        con.close()


def _writable(folder: Path, db: Path) -> bool:
    """Whether this process may write the project (its folder, for the WAL files, and the database and WAL files)."""
    files = [db, *(db.with_name(db.name + suffix) for suffix in ("-wal", "-shm"))]
    return os.access(folder, os.W_OK) and all(os.access(f, os.W_OK) for f in files if f.exists())


def _connect_read_only(db: Path, timeout_s: float) -> sqlite3.Connection:
    """A read-only connection to a project this process cannot write.

    ``mode=ro`` first (it reads a WAL left behind, when its ``-shm`` exists); a file without one is opened
    ``immutable`` (nobody can write it here either). A WAL holding changes that cannot be read without write access
    is refused, rather than showing the project without them.
    """
    base = f"file:{quote(str(db))}?mode=ro"
    try:
        con = sqlite3.connect(base, uri=True, timeout=timeout_s, isolation_level=None)
        con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return con
    except sqlite3.Error as exc:
        first = exc
    wal = db.with_name(db.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise ProjectError(f"{db}: read-only here, and its write-ahead log {wal.name} holds changes that cannot be "
                           f"read without write access ({first}); open it once where it can be written (nothing was "
                           "changed)")
    try:
        con = sqlite3.connect(base + "&immutable=1", uri=True, timeout=timeout_s, isolation_level=None)
        con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return con
    except sqlite3.Error as exc:
        raise ProjectError(f"cannot open read-only project store {db}: {exc}") from exc


def _check_project(db: Path, con: sqlite3.Connection) -> None:
    """Refuse a database that is not a cytoreview project, is newer than this code, or fails ``quick_check``."""
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
        # opening a big project stays fast; Database.check() runs the full check on demand.
        _raise_on_problems(db, con, "quick_check")
    except sqlite3.DatabaseError as exc:
        raise ProjectError(f"{db} is corrupt ({exc}); it was left untouched -- restore it from a backup") from exc


def _raise_on_problems(db: Path, con: sqlite3.Connection, pragma: str) -> None:
    problems = [r[0] for r in con.execute(f"PRAGMA {pragma}(20)")]
    if problems != ["ok"]:
        raise ProjectError(f"{db} failed its integrity check ({'; '.join(problems[:3])}); it was left untouched "
                           "-- restore it from a backup")


def _initialise(con: sqlite3.Connection, db: Path, chain_rows: Callable | None = None) -> None:
    """Create the tables in an empty database, or upgrade an older one step by step to :data:`SCHEMA_VERSION`, in
    one ``BEGIN IMMEDIATE`` transaction (two openers do not race; a kill leaves the old or the new version, never a
    mix). ``chain_rows(con) -> n`` seals the journal rows of a version-1 project (the journal module's
    :func:`~cytoreview.review.journal.chain_existing_rows`, handed down by the project so this module does not
    import it).

    Foreign keys are off while this runs (SQLite can only switch them outside a transaction): rebuilding the items
    table drops the table the journal refers to; :func:`_migrate_items_v3` checks every reference before commit.
    """
    con.execute("PRAGMA foreign_keys = OFF")
    con.execute("BEGIN IMMEDIATE")
    try:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            tables = con.execute("SELECT COUNT(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            if tables:
                raise ProjectError(f"{db} has tables but no project schema version; refusing to touch it")
            for stmt in _split_sql(DDL):
                con.execute(stmt)
            con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("INSERT INTO settings(key, value) VALUES ('created_at', ?)", (json.dumps(now_iso()),))
        elif version > SCHEMA_VERSION:
            raise ProjectError(f"{db} was written by a newer cytoreview (schema {version} > {SCHEMA_VERSION})")
        elif version < SCHEMA_VERSION:
            if version == 1:  # before the journal's hash chain: add the column and seal the rows as they are now
                if chain_rows is None:
                    raise ProjectError(f"{db} is a project of schema version 1; open it with Project.open to "
                                       "upgrade it")
                columns = {r[1] for r in con.execute("PRAGMA table_info(journal)")}
                if "hash" not in columns:
                    con.execute("ALTER TABLE journal ADD COLUMN hash TEXT")
                n_rows = chain_rows(con)
                _record(con, "journal_chained_at", {"at": now_iso(), "rows": n_rows})
            _record(con, "items_keyed_at", {"at": now_iso(), **_migrate_items_v3(con, db)})
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        for stmt in LATER_INDEXES:
            con.execute(stmt)
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    finally:
        con.execute("PRAGMA foreign_keys = ON")


def _record(con: sqlite3.Connection, key: str, value) -> None:
    con.execute("INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, json.dumps(value)))


def _migrate_items_v3(con: sqlite3.Connection, db: Path) -> dict:
    """Schema 2 -> 3, inside the caller's transaction (foreign keys off): rebuild the items table with its
    ``geometry_key`` column and the separate ``items_identity`` unique index, keeping every row, id and column value
    as it was (the journal, reviews and cursors refer to items by id, so their rows and the journal's hash chain are
    untouched). Two geometries of one image, level, field and plane whose keys collide keep apart: the later item
    (by id) takes the next free key. Returns ``{"items": n, "collisions": k}``.
    """
    con.create_function("cytoreview_geometry_key", 1, lambda text: geom.identity_key(text), deterministic=True)
    items_table, *index_ddl = _split_sql(ITEMS_DDL)
    con.execute("DROP TABLE IF EXISTS items_v3")
    con.execute(items_table.replace("CREATE TABLE items (", "CREATE TABLE items_v3 (", 1))
    n_items = con.execute(f"INSERT INTO items_v3({_V2_ITEM_COLUMNS}, geometry_key) SELECT {_V2_ITEM_COLUMNS}, "
                          "cytoreview_geometry_key(geometry) FROM items ORDER BY id").rowcount
    con.execute("DROP TABLE items")
    con.execute("ALTER TABLE items_v3 RENAME TO items")
    try:
        con.execute(index_ddl[0])  # items_identity: fails only where two keys collide
        groups = []
    except sqlite3.IntegrityError:
        groups = con.execute("SELECT image_id, level, field, z, geometry_key FROM items "
                             "GROUP BY image_id, level, field, z, geometry_key HAVING COUNT(*) > 1").fetchall()
    n_moved = 0
    for image_id, level, field, z, key in groups:
        same = "image_id=? AND level=? AND field=? AND z=? AND geometry_key=?"
        later = [r[0] for r in con.execute(f"SELECT id FROM items WHERE {same} ORDER BY id",
                                           (image_id, level, field, z, key)).fetchall()[1:]]
        for item_id in later:  # the first keeps the key; each later one probes for the next free one
            free = geom.next_key(key)
            while con.execute(f"SELECT 1 FROM items WHERE {same}", (image_id, level, field, z, free)).fetchone():
                free = geom.next_key(free)
            con.execute("UPDATE items SET geometry_key=? WHERE id=?", (free, item_id))
            n_moved += 1
    if groups:
        con.execute(index_ddl[0])
    for stmt in index_ddl[1:]:
        con.execute(stmt)
    broken = con.execute("PRAGMA foreign_key_check").fetchmany(5)
    if broken:
        raise ProjectError(f"{db}: upgrading to schema {SCHEMA_VERSION} would break references {broken}; nothing "
                           "was changed")
    return {"items": n_items, "collisions": n_moved}


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
