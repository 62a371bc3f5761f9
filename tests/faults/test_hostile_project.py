"""Hostile reviewers and folders: reviewer names and dwell times refused, a read-only folder opened read-only (never
called corrupt), and a journal whose rows were edited, deleted or re-inserted behind the triggers' back detected."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.faults.conftest import child_env
from tests.review.conftest import fieldset  # noqa: F401 - fixture

from cytoreview.errors import ProjectError, ProjectReadOnlyError
from cytoreview.review import Project


@pytest.fixture
def proj(tmp_path, fieldset):
    folder = tmp_path / "proj"
    with Project.open(folder, create=True) as p:
        img = p.add_image(fieldset, kind="fields", mpp=0.293)
        p.schema.add("benign")
        p.schema.add("malignant")
        ids = p.add_items(img, [{"level": "cell", "geometry": {"type": "point", "y": i, "x": i}} for i in range(20)])
        for i in ids[:6]:
            p.set_label(i, 1, "ana", dwell_s=1.5)
        p.set_label(ids[0], 0, "ben")
        p.undo("ana")
    return folder, ids


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cytoreview.cli", *map(str, args)], capture_output=True, text=True,
                          env=child_env(), timeout=120)


# ------------------------------------------------------------------ reviewer names and dwell times
@pytest.mark.parametrize("name", ["x" * 100_000, "ana\x00", "ana\nbob", "\x1b[31mana", "ana\u202e", "ana\r"],
                         ids=["100k", "nul", "newline", "esc", "rlo", "cr"])
def test_hostile_reviewer_names_are_refused_everywhere(proj, name):
    folder, ids = proj
    with Project.open(folder) as p:
        before = len(p.history())
        for call in (lambda: p.set_label(ids[10], 0, name), lambda: p.set_label(ids[11], [1], name),
                     lambda: p.undo(name), lambda: p.redo(name)):
            with pytest.raises(ProjectError, match="reviewer"):
                call()
        assert len(p.history()) == before


def test_printable_unicode_reviewer_names_still_work(proj):
    folder, ids = proj
    with Project.open(folder) as p:
        p.set_label(ids[12], 0, "Dr. Müller-Łukasz 🦠")
        p.set_label(ids[13], 0, "x" * 100)
        assert "Dr. Müller-Łukasz 🦠" in set(p.history()["reviewer"])


@pytest.mark.parametrize("dwell", [float("inf"), float("nan"), -1.0, 1e12, "abc", True],
                         ids=["inf", "nan", "negative", "1e12", "text", "bool"])
def test_absurd_dwell_times_are_refused(proj, dwell):
    folder, ids = proj
    with Project.open(folder) as p:
        with pytest.raises(ProjectError, match="dwell_s"):
            p.set_label(ids[14], 0, "ana", dwell_s=dwell)
        p.set_label(ids[14], 0, "ana", dwell_s=2.25)
        assert p.history(item_id=ids[14])["dwell_s"].iloc[-1] == 2.25


# ------------------------------------------------------------------ read-only folders
_READ_ONLY_SCRIPT = r"""
import json, sys
from cytoreview.errors import ProjectReadOnlyError
from cytoreview.review import Project
from cytoreview.export import export_project
folder, out, item = sys.argv[1], sys.argv[2], int(sys.argv[3])
report = {}
with Project.open(folder) as p:
    report["read_only"] = p.read_only
    report["items"] = len(p.items())
    report["history"] = len(p.history())
    report["progress"] = int(p.progress().per_image["reviewed"].sum())
    export_project(p, out, formats=["csv"])
    for name, call in (("set_label", lambda: p.set_label(item, 0, "ana")), ("add_class", lambda: p.schema.add("x")),
                       ("undo", lambda: p.undo("ana"))):
        try:
            call()
            report[name] = "written"
        except ProjectReadOnlyError as exc:
            report[name] = str(exc)
    p.check()
    report["check"] = "ok"
print(json.dumps(report))
"""


def _run(args, cwd):
    return subprocess.run(args, capture_output=True, text=True, env=child_env(), timeout=120, cwd=cwd)


def _lock(paths, locked: bool) -> None:
    """Make ``paths`` unwritable (or writable again): permission bits for a normal user; for root, who writes
    through any permission, the immutable attribute too (``chattr +i``)."""
    if os.geteuid() == 0 and not locked:
        subprocess.run(["chattr", "-i", *map(str, paths)], capture_output=True, text=True)
    for path in paths:
        os.chmod(path, (0o555 if path.is_dir() else 0o444) if locked else (0o755 if path.is_dir() else 0o644))
    if os.geteuid() == 0 and locked:
        done = subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True, text=True)
        if done.returncode != 0:
            _lock(paths, False)
            pytest.skip(f"running as root and chattr +i is not available here: {done.stderr.strip()}")


@pytest.fixture
def read_only_project(proj):
    """The project copied into a folder this process cannot write (a share mounted read-only, as it were)."""
    folder, ids = proj
    base = Path(tempfile.mkdtemp(prefix="cytoreview-ro-"))
    out = base / "out"
    out.mkdir()
    shutil.copytree(folder, base / "proj")
    paths = [base / "proj", *(base / "proj").rglob("*")]
    _lock(paths, True)
    try:
        yield base / "proj", out, ids, paths
    finally:
        _lock(paths, False)
        shutil.rmtree(base)


def test_read_only_project_opens_read_only_and_refuses_writes_clearly(read_only_project):
    folder, out, ids, _ = read_only_project
    result = _run([sys.executable, "-c", _READ_ONLY_SCRIPT, folder, out, str(ids[15])], cwd=out)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["read_only"] is True and report["items"] == 20 and report["progress"] == 5
    assert report["check"] == "ok"
    for name in ("set_label", "add_class", "undo"):
        assert "read-only" in report[name] and "corrupt" not in report[name], report
    assert (out / "labels.csv").exists() or any(out.rglob("*.csv"))


def test_read_only_project_status_on_the_cli(read_only_project):
    folder, out, _, _ = read_only_project
    cmd = [sys.executable, "-m", "cytoreview.cli", "review-status", str(folder)]
    result = _run(cmd, cwd=out)
    assert result.returncode == 0 and "corrupt" not in result.stderr, result.stderr
    assert "reviewed" in result.stdout
    verified = _run([*cmd, "--verify"], cwd=out)
    assert verified.returncode == 0 and "hash chain intact" in verified.stdout, verified.stderr


# ------------------------------------------------------------------ journal tamper evidence
def _raw(folder):
    con = sqlite3.connect(folder / "project.sqlite", isolation_level=None)
    return con


def _tampered(folder, *statements):
    con = _raw(folder)
    for sql in statements:
        con.execute(sql)
    con.close()


def _detected(folder, *words):
    with Project.open(folder) as p:
        result = p.verify_journal()
        assert not result.ok
        for word in words:
            assert word in result.problem, result.problem
        with pytest.raises(ProjectError) as info:
            p.check()
        assert result.problem in str(info.value)
    for command in (("review-status", folder, "--verify"), ("project", "verify", folder)):
        cli = _cli(*command)
        assert cli.returncode == 2 and "Traceback" not in cli.stderr, cli.stderr
        assert len(cli.stderr.strip().splitlines()) == 1 and words[0] in cli.stderr, cli.stderr
    return result


def test_an_untouched_journal_verifies(proj):
    folder, _ = proj
    with Project.open(folder) as p:
        result = p.verify_journal()
        p.check()
    assert result.ok and result.n_rows == 8 and result.problem == ""
    for command in (("review-status", folder, "--verify"), ("project", "verify", folder)):
        cli = _cli(*command)
        assert cli.returncode == 0 and "8 rows, hash chain intact" in cli.stdout, cli.stderr


def test_dropping_the_trigger_is_detected(proj):
    folder, _ = proj
    _tampered(folder, "DROP TRIGGER journal_no_update")
    _detected(folder, "journal_no_update", "dropped")


def test_an_edited_row_is_detected_by_its_id_even_with_the_trigger_put_back(proj):
    folder, _ = proj
    with Project.open(folder) as p:
        trigger = p.db.read(lambda con: con.execute(
            "SELECT sql FROM sqlite_master WHERE name='journal_no_update'").fetchone()[0])
    _tampered(folder, "DROP TRIGGER journal_no_update", "UPDATE journal SET reviewer='mallory' WHERE id=3", trigger)
    result = _detected(folder, "journal row 3", "mallory", "does not match its hash")
    assert result.bad_row == 3


def test_a_deleted_row_is_detected(proj):
    folder, _ = proj
    _tampered(folder, "DROP TRIGGER journal_no_delete", "DELETE FROM journal WHERE id=4")
    # the trigger is missing too; put it back so the row check itself is what fails
    _tampered(folder, "CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal BEGIN SELECT RAISE(ABORT, "
                      "'the journal is append-only'); END")
    result = _detected(folder, "journal rows 4..4 are missing")
    assert result.bad_row == 4


def test_a_row_deleted_and_re_inserted_forged_is_detected(proj):
    folder, _ = proj
    con = _raw(folder)
    columns = [r[1] for r in con.execute("PRAGMA table_info(journal)")]
    row = dict(zip(columns, con.execute("SELECT * FROM journal WHERE id=5").fetchone()))
    row["reviewer"], row["new"] = "mallory", "[0]"
    con.execute("DROP TRIGGER journal_no_delete")
    con.execute("DELETE FROM journal WHERE id=5")
    con.execute(f"INSERT INTO journal({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    con.execute("CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal BEGIN SELECT RAISE(ABORT, "
                "'the journal is append-only'); END")
    con.close()
    with Project.open(folder) as p:
        assert "mallory" in set(p.history()["reviewer"])  # the forgery shows in history ...
    result = _detected(folder, "journal row 5", "does not match its hash")  # ... and is caught
    assert result.bad_row == 5


def test_rows_cut_off_the_end_are_detected(proj):
    folder, _ = proj
    _tampered(folder, "DROP TRIGGER journal_no_delete", "DELETE FROM journal WHERE id>=7",
              "CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal BEGIN SELECT RAISE(ABORT, "
              "'the journal is append-only'); END")
    _detected(folder, "journal rows 7..8 were deleted from its end")


def test_a_row_written_without_the_chain_is_detected(proj):
    folder, ids = proj
    _tampered(folder, "INSERT INTO journal(item_id, old, new, source, reviewer, timestamp, action) VALUES "
                      f"({ids[1]}, '[1]', '[0]', 'reviewer', 'mallory', '2026-01-01T00:00:00+00:00', 'set')")
    _detected(folder, "journal row 9", "has no hash")


def test_writes_after_verification_keep_the_chain(proj):
    folder, ids = proj
    with Project.open(folder) as p:
        p.set_label(ids[16], 0, "ana")
        p.undo("ana")
        p.redo("ana")
        p.schema.merge(p.schema.by_name("benign").id, p.schema.by_name("malignant").id, "ana")  # one journal row per relabelled item, in one transaction
        assert p.verify_journal().ok and p.verify_journal().n_rows > 11


# ------------------------------------------------------------------ schema 1 -> 2 migration
def _as_version_1(folder):
    """Turn a project into what cytoreview wrote before the chain: no hash column, user_version 1."""
    _tampered(folder, "ALTER TABLE journal DROP COLUMN hash", "PRAGMA user_version = 1")


def test_a_version_1_project_is_chained_when_opened(proj):
    folder, ids = proj
    with Project.open(folder) as p:
        history = p.history()
    _as_version_1(folder)
    with Project.open(folder) as p:
        assert p.db.read(lambda con: con.execute("PRAGMA user_version").fetchone()[0]) == 3
        assert p.verify_journal().ok
        assert p.history().equals(history)  # nothing changed but the seal
        assert p.get_setting("journal_chained_at")["rows"] == 8
        p.set_label(ids[17], 1, "ana")
        assert p.undo("ana") is not None and p.verify_journal().ok


def test_a_version_1_project_in_a_read_only_folder_opens_and_says_it_is_not_chained(read_only_project):
    folder, out, _, paths = read_only_project
    _lock(paths, False)
    _as_version_1(folder)
    _lock(paths, True)
    script = ("import sys\nfrom cytoreview.review import Project\np = Project.open(sys.argv[1])\n"
              "print(p.read_only, len(p.history()), p.verify_journal().problem)\n")
    result = _run([sys.executable, "-c", script, folder], cwd=out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("True 8 ") and "no hash chain" in result.stdout, result.stdout


def test_newer_projects_are_still_refused(proj):
    folder, _ = proj
    _tampered(folder, "PRAGMA user_version = 4")
    with pytest.raises(ProjectError, match="newer cytoreview"):
        Project.open(folder)
