"""A project database that is locked by another process, or corrupt: clear ProjectError, file never touched."""

from __future__ import annotations

import hashlib
import sqlite3
import time

import numpy as np
import pytest

from tests.faults.conftest import kill9, read_until, spawn
from tests.review.conftest import fieldset  # noqa: F401 - fixture

import cytoreview.review.store as store_module
from cytoreview.errors import ProjectError
from cytoreview.review import Project


@pytest.fixture
def proj(tmp_path, fieldset):
    folder = tmp_path / "proj"
    with Project.open(folder, create=True) as p:
        img = p.add_image(fieldset, kind="fields", mpp=0.293)
        p.schema.add("benign")
        p.schema.add("malignant")
        ids = p.add_items(img, [{"level": "cell", "geometry": {"type": "point", "y": i, "x": i}} for i in range(200)])
        for i in ids[:50]:
            p.set_label(i, 1, "ana")
    return folder, ids


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _open_with_timeout(folder, timeout_s, monkeypatch):
    """``Project.open`` with a short busy timeout: its own argument if it has one, else the module constant.

    (Project.open takes no timeout today; the store reads ``BUSY_TIMEOUT_S``, 30 s, when it connects.)
    """
    import inspect

    params = inspect.signature(Project.open).parameters
    for name in ("timeout_s", "busy_timeout_s", "timeout"):
        if name in params:
            return Project.open(folder, **{name: timeout_s})
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", timeout_s)
    return Project.open(folder)


def test_writer_waits_for_a_short_lock_then_succeeds(proj):
    folder, ids = proj
    p = Project.open(folder)
    locker = spawn("_locker.py", folder / "project.sqlite", 1.5)
    try:
        read_until(locker, lambda line: line == "locked")
        assert len(p.label_table(only_reviewed=True)) == 50  # readers are not blocked (WAL)
        start = time.monotonic()
        jid = p.set_label(ids[60], 0, "ben")
        waited = time.monotonic() - start
        assert waited > 0.5, waited  # it really waited for the other process ...
        assert locker.stdout.readline().strip() == "released"
        assert p.get_setting("locker") == "was here"  # ... whose change is kept
        assert p.history(ids[60])["journal_id"].tolist() == [jid]
        assert p.item(ids[60]).label == [0]
    finally:
        locker.wait(timeout=30)
        p.close()


def test_lock_held_past_the_timeout_is_a_clear_project_error(proj, monkeypatch):
    folder, ids = proj
    p = _open_with_timeout(folder, 0.3, monkeypatch)
    locker = spawn("_locker.py", folder / "project.sqlite", 20)
    try:
        read_until(locker, lambda line: line == "locked")
        start = time.monotonic()
        with pytest.raises(ProjectError) as info:
            p.set_label(ids[70], 1, "ben")
        assert time.monotonic() - start < 5
        message = str(info.value)
        assert "project.sqlite" in message and "lock" in message, message
        assert not isinstance(info.value, sqlite3.Error)
        with pytest.raises(ProjectError, match="project.sqlite"):
            _open_with_timeout(folder, 0.3, monkeypatch)  # opening (which initialises in a write transaction) also says so
    finally:
        kill9(locker)
    p.set_label(ids[70], 1, "ben")  # the lock is gone: the same call works, nothing was half-done
    assert p.get_setting("locker") is None  # the killed locker's uncommitted change never appeared
    p.close()


def _corrupt_pages(db, seed=0):
    """Overwrite every page but the first (the header) with random bytes."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    rng = np.random.default_rng(seed)
    data[page:] = rng.integers(0, 256, len(data) - page, np.uint8).tobytes()
    db.write_bytes(bytes(data))


CORRUPTIONS = {
    "garbage pages": _corrupt_pages,
    "garbage header": lambda db: db.write_bytes(b"\x00garbage" * 64 + db.read_bytes()[512:]),
    "truncated to one page": lambda db: db.write_bytes(db.read_bytes()[:4096]),
    "foreign sqlite": None,
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
@pytest.mark.parametrize("create", [False, True])
def test_corrupt_database_is_refused_and_left_untouched(proj, case, create):
    folder, _ = proj
    db = folder / "project.sqlite"
    if CORRUPTIONS[case] is None:
        db.unlink()
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE patients(name TEXT)")
        con.execute("INSERT INTO patients VALUES ('someone')")
        con.commit()
        con.close()
    else:
        CORRUPTIONS[case](db)
    before = _digest(db)
    others = sorted(p.name for p in folder.iterdir())
    with pytest.raises(ProjectError) as info:
        Project.open(folder, create=create)
    assert str(db) in str(info.value)
    assert "Traceback" not in str(info.value)
    assert _digest(db) == before  # byte for byte
    # no backup or fresh database appeared; SQLite's read-only probe may leave an empty -wal and its -shm index
    new = sorted(set(p.name for p in folder.iterdir()) - set(others))
    assert set(new) <= {"project.sqlite-wal", "project.sqlite-shm"}, new
    wal = folder / "project.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def test_zero_byte_database_is_not_a_project_without_create(proj):
    folder, _ = proj
    db = folder / "project.sqlite"
    db.write_bytes(b"")
    with pytest.raises(ProjectError, match="project.sqlite"):
        Project.open(folder)
    assert db.read_bytes() == b""
