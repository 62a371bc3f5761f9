"""Schema 2 -> 3 (the items identity key): a real version-2 project, written by the version-2 code
(tests/review/data/make_v2_project.py), opened by this code keeps every label, the journal and its hash chain,
history, undo, the reviewers' labels and the exports; read-only it is read as it is; a kill during the upgrade
leaves version 2 or version 3, never a broken project."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.review.conftest import write_fieldset

from cytoreview.errors import ProjectError, ProjectReadOnlyError
from cytoreview.review import Project
from cytoreview.review import connection as store_connection
from cytoreview.review import geometry as geom
from cytoreview.review import items as store_items

DATA = Path(__file__).with_name("data")
EXPECTED = json.loads((DATA / "v2_expected.json").read_text())
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def v2(tmp_path) -> Path:
    folder = tmp_path / "v2"
    shutil.copytree(DATA / "v2_project", folder)
    return folder


def _raw(folder: Path, sql: str, args=()):
    con = sqlite3.connect(folder / "project.sqlite")
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "project.sqlite").read_bytes()).hexdigest()


def _records(frame) -> list:
    return json.loads(frame.to_json(orient="records"))


def _same_as_version_2(p: Project) -> None:
    assert _records(p.items()) == EXPECTED["items"]
    assert _records(p.history()) == EXPECTED["history"]
    check = p.verify_journal()
    assert check.ok and check.n_rows == EXPECTED["n_journal"], check.problem
    assert {r: {str(k): v for k, v in p.reviewer_labels(r).items()} for r in p.reviewers()} == \
        EXPECTED["reviewer_labels"]
    assert list(p.cursor("ana")) == EXPECTED["cursor"]


def test_the_fixture_is_a_version_2_project():
    assert _raw(DATA / "v2_project", "PRAGMA user_version") == [(2,)] and EXPECTED["user_version"] == 2
    assert "geometry_key" not in {r[1] for r in _raw(DATA / "v2_project", "PRAGMA table_info(items)")}


def test_a_version_2_project_is_keyed_when_opened_and_keeps_everything(v2):
    with Project.open(v2) as p:
        assert p.db.schema_version == 3
        assert p.db.read(lambda con: con.execute("PRAGMA user_version").fetchone()[0]) == 3
        _same_as_version_2(p)
        keyed = p.get_setting("items_keyed_at")
        assert keyed["items"] == len(EXPECTED["items"]) and keyed["collisions"] == 0
        # every item is found again by its identity, and adding it again changes nothing
        for item in EXPECTED["items"]:
            assert store_items.find_item(p.db, item["image_id"], item["level"], item["geometry"],
                                         field=item["field"], z=item["z"]) == item["item_id"]
        stored = [i for i in p.items().to_dict("records") if i["model"] is not None]
        again = [{k: item[k] for k in ("level", "field", "z", "geometry", "model", "model_class", "model_labels",
                                       "model_prob", "uncertainty")} for item in stored]
        assert p.add_items(1, again) == [i["item_id"] for i in stored]
        assert [p.add_items(1, [one])[0] for one in again[::9]] == [i["item_id"] for i in stored[::9]]
        _same_as_version_2(p)
        # the journal is still append-only and its chain still grows
        con = p.db.connection()
        for sql in ("UPDATE journal SET new = '[0]' WHERE id = 1", "DELETE FROM journal WHERE id = 1"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                con.execute(sql)
        undone = p.undo("ana")
        assert undone is not None and p.redo("ana") is not None
        p.set_label(EXPECTED["items"][20]["item_id"], 0, "ben")
        assert p.verify_journal().ok and len(p.history()) == EXPECTED["n_journal"] + 3
        new = p.add_items(1, [{"level": "cell", "geometry": {"type": "point", "y": 999, "x": 999}}])
        assert new == [max(i["item_id"] for i in EXPECTED["items"]) + 1]
        assert p.db.read(lambda c: c.execute("PRAGMA foreign_key_check").fetchall()) == []
        assert p.db.read(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0]) == "ok"
        indexes = {r[0]: r[1] for r in con.execute(
            "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='items'")}
        assert "geometry_key" in indexes["items_identity"] and None not in indexes.values()  # no text UNIQUE left
    with Project.open(v2) as p:  # a second open changes nothing
        assert p.verify_journal().ok and p.get_setting("items_keyed_at") == keyed


def test_colliding_geometry_keys_in_a_version_2_project_become_two_items(v2, monkeypatch):
    monkeypatch.setattr(geom, "identity_keys", lambda texts: [7 if '"point"' in t else 8 for t in texts])  # all collide
    with Project.open(v2) as p:
        _same_as_version_2(p)
        groups = {(i["level"], i["field"], i["z"], i["geometry"]["type"] == "point") for i in EXPECTED["items"]}
        assert p.get_setting("items_keyed_at")["collisions"] == len(EXPECTED["items"]) - len(groups) > 60
        for item in EXPECTED["items"]:
            assert store_items.find_item(p.db, item["image_id"], item["level"], item["geometry"],
                                         field=item["field"], z=item["z"]) == item["item_id"]
        n = p.n_items()
        iid = p.add_items(1, [{"level": "cell", "geometry": {"type": "point", "y": 1234, "x": 5}}])[0]
        assert p.n_items() == n + 1 and store_items.find_item(
            p.db, 1, "cell", {"type": "point", "y": 1234, "x": 5}) == iid
        _records(p.items())  # readable


def test_a_failed_upgrade_leaves_the_version_2_file_untouched(v2, monkeypatch):
    before = _digest(v2)

    def broken(text):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(geom, "identity_keys", broken)
    with pytest.raises((ProjectError, sqlite3.Error)):
        Project.open(v2)
    monkeypatch.undo()
    assert _raw(v2, "PRAGMA user_version") == [(2,)]
    with Project.open(v2) as p:
        _same_as_version_2(p)
    assert _digest(v2) != before  # upgraded now


def test_a_version_2_project_that_cannot_be_written_is_read_as_it_is(v2, monkeypatch, tmp_path):
    write_fieldset(tmp_path / "case_A", 2)  # the fixture's image, at its stored (relative) path
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(store_connection, "_writable", lambda folder, db: False)
    before = _digest(v2)
    with Project.open(v2) as p:
        assert p.read_only and p.db.schema_version == 2
        _same_as_version_2(p)
        for item in EXPECTED["items"][::7]:
            assert store_items.find_item(p.db, item["image_id"], item["level"], item["geometry"],
                                         field=item["field"], z=item["z"]) == item["item_id"]
        with pytest.raises(ProjectReadOnlyError):
            p.set_label(EXPECTED["items"][0]["item_id"], 0, "ana")
        read_only_export = _export(p, tmp_path / "ro")
    assert _digest(v2) == before
    monkeypatch.setattr(store_connection, "_writable", lambda folder, db: True)
    with Project.open(v2) as p:
        assert not p.read_only and p.db.schema_version == 3
        assert _export(p, tmp_path / "rw") == read_only_export


def _export(p: Project, out: Path) -> dict:
    from cytoreview.export.api import export_project

    export_project(p, out, ("csv", "geojson", "coco"))
    files = {str(f.relative_to(out)): f.read_bytes() for f in sorted(out.rglob("*"))
             if f.is_file() and f.name != "export.json"}
    for name, data in files.items():  # COCO's info names the time of the export
        if name.startswith("coco/") and name.endswith(".json"):
            files[name] = {k: v for k, v in json.loads(data).items() if k != "info"}
    return files


def test_a_newer_project_is_refused_untouched(v2):
    _raw(v2, "PRAGMA user_version = 4")
    before = _digest(v2)
    with pytest.raises(ProjectError, match="newer cytoreview"):
        Project.open(v2)
    assert _digest(v2) == before


_OPENER = "import sys\nfrom cytoreview.review import Project\nprint('opening', flush=True)\n" \
          "Project.open(sys.argv[1]).close()\nprint('opened', flush=True)\n"


def _grown(folder: Path, n_cells: int) -> None:
    """Give the version-2 fixture ``n_cells`` more cells (as the version-2 table holds them), so that upgrading it
    takes long enough to be killed in the middle."""
    con = sqlite3.connect(folder / "project.sqlite")
    con.execute("WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < ?) "
                "INSERT INTO items(image_id, level, field, z, geometry, x_min, y_min, x_max, y_max, updated_at) "
                "SELECT 1, 'cell', 1, 0, '{\"type\":\"point\",\"x\":' || (n % 1000) || ',\"y\":' || (5000 + n / 1000)"
                " || '}', n % 1000, 5000 + n / 1000, n % 1000, 5000 + n / 1000, '2026-01-01' FROM k", (n_cells,))
    con.commit()
    con.close()


@pytest.mark.slow
def test_kill_9_during_the_upgrade_leaves_version_2_or_version_3(v2):
    _grown(v2, 300_000)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    killed_midway = 0
    for delay_s in (0.2, 0.6, 1.0, 1.5, 2.5):
        proc = subprocess.Popen([sys.executable, "-c", _OPENER, str(v2)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stdout.readline().strip() == "opening", proc.stderr.read()
        time.sleep(delay_s)
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        version = _raw(v2, "PRAGMA user_version")[0][0]
        assert version in (2, 3)
        assert _raw(v2, "PRAGMA quick_check") == [("ok",)]
        assert _raw(v2, "SELECT COUNT(*) FROM items")[0][0] == len(EXPECTED["items"]) + 300_000
        if "opened" not in out:
            killed_midway += 1
        if version == 3:
            break
    assert killed_midway >= 1, "every open finished before the kill: nothing was tested"
    with Project.open(v2) as p:
        assert p.db.schema_version == 3 and p.verify_journal().ok
        assert _records(p.items(ids=[i["item_id"] for i in EXPECTED["items"]])) == EXPECTED["items"]
        assert _records(p.history()) == EXPECTED["history"]
