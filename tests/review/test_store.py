"""Project store: open/reopen, labelling, journal, undo/redo, refusing bad databases."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from cytoreview.errors import ProjectError
from cytoreview.review import SCHEMA_VERSION, UNSURE, Project, journal


def _tiles(project, image_id, n=4):
    return project.add_items(image_id, [
        {"level": "tile", "field": 0, "geometry": {"type": "tile", "row": 0, "col": c, "size_px": 256},
         "model": "toy@1", "model_class": c % 2, "model_prob": 0.6 + 0.1 * c, "uncertainty": 0.1 * c}
        for c in range(n)])


@pytest.fixture
def labelled(project, image_id):
    project.schema.add("benign", hotkey="1")
    project.schema.add("malignant", hotkey="2")
    return _tiles(project, image_id)


def test_open_missing_without_create_is_an_error(tmp_path):
    with pytest.raises(ProjectError, match="no cytoreview project"):
        Project.open(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_create_sets_wal_full_and_version(project):
    con = project.db.connection()
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert con.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert project.predictions_dir.is_dir()


def test_reopen_restores_labels_schema_and_cursor(tmp_path, fieldset):
    folder = tmp_path / "proj"
    with Project.open(folder, create=True) as p:
        img = p.add_image(fieldset, kind="fields", mpp=0.293, case_id="A", plane_shape=(1208, 1928))
        p.schema.add("benign")
        p.schema.add("malignant")
        ids = _tiles(p, img)
        p.set_label(ids[0], 1, "ann", dwell_s=2.5)
        p.set_label(ids[2], [UNSURE], "ann")
        first = p.next_item("ann", "uncertainty")
    with Project.open(folder) as p:
        assert [c.name for c in p.schema.classes] == ["benign", "malignant"]
        items = p.items().set_index("item_id")
        assert items.loc[ids[0], "label"] == [1] and items.loc[ids[0], "reviewer"] == "ann"
        assert items.loc[ids[2], "label"] == [UNSURE]
        assert items.loc[ids[1], "reviewed"] == False
        assert p.cursor("ann") == (first, "uncertainty")
        assert p.images()[0].case_id == "A" and p.images()[0].plane_shape == (1208, 1928)
        assert p.history(ids[0])["dwell_s"].tolist()[-1] == 2.5


def test_set_accept_undo_redo_write_journal_rows(project, labelled):
    a, b = labelled[0], labelled[1]
    j1 = project.set_label(a, 1, "ann")
    j2 = project.accept(b, "ann")
    assert project.item(b).label == [1]  # model_class of tile 1 is 1
    ju = project.undo("ann")  # undoes the accept
    assert project.item(b).label == [1] and project.item(b).reviewed == False
    ju2 = project.undo("ann")  # undoes the set
    assert project.item(a).label == [0] and project.item(a).source == "model:toy@1"
    assert project.undo("ann") is None
    jr = project.redo("ann")
    assert project.item(a).label == [1] and project.item(a).reviewer == "ann"
    h = project.history()
    mine = h[h["reviewer"] == "ann"]
    assert mine["action"].tolist() == ["set", "accept", "undo", "undo", "redo"]
    assert mine["journal_id"].tolist() == [j1, j2, ju, ju2, jr]
    assert mine["ref"].tolist()[2:] == [j2, j1, j1]
    assert mine.iloc[3]["old"] == [1] and mine.iloc[3]["new"] == [0]
    # a new action clears the redo stack
    project.set_label(labelled[3], 0, "ann")
    assert not project.can_redo("ann") and project.redo("ann") is None


def test_undo_is_per_reviewer(project, labelled):
    project.set_label(labelled[0], 1, "ann")
    project.set_label(labelled[1], 0, "bob")
    project.undo("bob")
    assert project.item(labelled[0]).label == [1]
    assert project.item(labelled[1]).label == [1]  # back to the model's call


def test_undo_refuses_to_discard_someone_elses_later_change(project, labelled):
    project.set_label(labelled[0], 1, "ann")
    project.set_label(labelled[0], 0, "bob")
    with pytest.raises(ProjectError, match="changed since"):
        project.undo("ann")
    assert project.item(labelled[0]).label == [0]
    project.undo("ann", force=True)
    assert project.item(labelled[0]).label == [0]  # ann's old value was the model's [0]
    assert len(project.history(labelled[0])) == 4  # import, set, set, undo


def test_undo_refuses_to_wipe_another_reviewers_identical_label(project, labelled):
    project.set_label(labelled[0], 1, "ann")
    project.set_label(labelled[0], 1, "bob")  # same label: bob's review must survive ann's undo
    with pytest.raises(ProjectError, match="changed since.*bob"):
        project.undo("ann")
    item = project.item(labelled[0])
    assert (item.label, item.reviewed, item.reviewer) == ([1], True, "bob")
    assert project.reviewer_labels("bob") == {labelled[0]: [1]}
    project.undo("ann", force=True)
    assert project.item(labelled[0]).label == [0]


def test_sqlite_error_inside_a_write_is_a_project_error_naming_the_real_cause(project, labelled):
    # RAISE(ROLLBACK) ends the transaction inside the statement, as SQLite does itself on disk full / I/O errors
    project.db.connection().execute("CREATE TEMP TRIGGER fail_update BEFORE UPDATE ON items "
                         "BEGIN SELECT RAISE(ROLLBACK, 'simulated disk full'); END")
    with pytest.raises(ProjectError, match="change NOT saved.*simulated disk full"):
        project.set_label(labelled[0], 1, "ann")
    project.db.connection().execute("DROP TRIGGER fail_update")
    assert project.item(labelled[0]).label == [0]
    assert project.history(labelled[0])["action"].tolist() == ["import"]
    project.set_label(labelled[0], 1, "ann")  # the connection is usable again
    assert project.item(labelled[0]).label == [1]


def test_set_label_takes_numpy_integers_and_refuses_other_types(project, labelled, image_id):
    import numpy as np

    project.set_label(labelled[0], np.int32(1), "ann")  # what a napari Labels layer hands the GUI
    project.set_label(labelled[1], np.array([1], dtype=np.uint8), "ann")
    project.set_label(labelled[2], np.int64(1), "ann")
    assert [project.item(i).label for i in labelled[:3]] == [[1], [1], [1]]
    n_rows = len(project.history())
    for bad in (1.7, "1", True, None, [1.0], {1: 1}):
        with pytest.raises(ProjectError, match="not"):
            project.set_label(labelled[3], bad, "ann")
    assert len(project.history()) == n_rows


def test_undo_stacks_follow_another_process_and_match_a_full_replay(project, labelled, tmp_path):
    other = Project.open(project.folder)  # a second connection, as another process would have
    try:
        project.set_label(labelled[0], 1, "ann")
        assert project.can_undo("ann") and not project.can_redo("ann")  # caches ann's stacks
        other.set_label(labelled[1], 1, "ann")
        other.undo("ann")  # undoes labelled[1] from the other connection
        assert project.can_redo("ann")
        project.redo("ann")
        assert project.item(labelled[1]).label == [1]
        project.undo("ann")
        project.undo("ann")
        assert project.item(labelled[0]).label == [0] and not project.can_undo("ann")
        fresh = Project.open(project.folder)
        try:
            assert project.db.read(project._undo_stacks.stacks, "ann") == fresh.db.read(
                journal.UndoStacks().stacks, "ann")  # the cached stacks match a full replay
        finally:
            fresh.close()
    finally:
        other.close()


def test_journal_is_append_only(project, labelled):
    project.set_label(labelled[0], 1, "ann")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        project.db.connection().execute("DELETE FROM journal")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        project.db.connection().execute("UPDATE journal SET new = '[0]'")


def test_bad_labels_are_refused(project, labelled, image_id):
    with pytest.raises(ProjectError, match="no class with id 7"):
        project.set_label(labelled[0], 7, "ann")
    with pytest.raises(ProjectError, match="exactly one class"):
        project.set_label(labelled[0], [0, 1], "ann")
    with pytest.raises(ProjectError, match="reviewer"):
        project.set_label(labelled[0], 0, "  ")
    with pytest.raises(ProjectError, match="no item"):
        project.set_label(999999, 0, "ann")
    with pytest.raises(ProjectError, match="dwell_s"):
        project.set_label(labelled[0], 0, "ann", dwell_s=-1)
    (field,) = project.add_items(image_id, [{"level": "field", "field": 0, "geometry": {"type": "field"}}])
    with pytest.raises(ProjectError, match="no model prediction"):
        project.accept(field, "ann")
    project.set_label(field, [1, 0, 1], "ann")  # multi-label at field level, de-duplicated and sorted
    assert project.item(field).label == [0, 1]
    assert (project.item(field).x_max, project.item(field).y_max) == (1928, 1208)
    assert project.history(labelled[0])["action"].tolist() == ["import"]  # nothing was written by the refusals


def test_add_image_is_idempotent_and_checked(project, fieldset, tmp_path):
    a = project.add_image(fieldset, kind="fields", mpp=0.293, plane_shape=(10, 20))
    assert project.add_image(fieldset, kind="fields", mpp=0.293) == a
    with pytest.raises(ProjectError, match="already in the project"):
        project.add_image(fieldset, kind="wsi", mpp=0.5)
    with pytest.raises(ProjectError, match="does not exist"):
        project.add_image(tmp_path / "missing.tif", kind="wsi", mpp=0.5)
    with pytest.raises(ProjectError, match="mpp"):
        project.add_image(fieldset, kind="fields", mpp=0)
    assert project.images()[0].checksum.startswith("q1:")


def test_add_items_upserts_on_geometry(project, labelled, image_id):
    again = _tiles(project, image_id)
    assert again == labelled and project.n_items() == 4
    with pytest.raises(ProjectError, match="cannot have point geometry"):
        project.add_items(image_id, [{"level": "tile", "geometry": {"type": "point", "y": 1, "x": 2}}])


def test_blinded_second_reader_sees_no_model_and_no_other_labels(project, labelled):
    project.set_label(labelled[0], 1, "ann")
    project.set_label(labelled[1], 0, "bob")
    blind = project.items(blind_for="bob").set_index("item_id")
    for col in ("model", "model_class", "model_labels", "model_prob", "uncertainty"):
        assert blind[col].isna().all(), col
    assert blind.loc[labelled[0], "label"] is None and blind.loc[labelled[0], "reviewer"] is None
    assert blind.loc[labelled[1], "label"] == [0] and blind.loc[labelled[1], "reviewer"] == "bob"
    assert project.item(labelled[0]).label == [1]  # unblinded view unchanged


# ---------------------------------------------------------------------- databases we must refuse untouched
def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _closed_project(tmp_path, fieldset):
    folder = tmp_path / "proj"
    with Project.open(folder, create=True) as p:
        img = p.add_image(fieldset, kind="fields", mpp=0.293)
        p.schema.add("benign")
        p.add_items(img, [{"level": "cell", "geometry": {"type": "point", "y": i, "x": i}, "model": "m@1",
                           "model_class": 0, "model_prob": 0.5} for i in range(3000)])
    assert not (folder / "project.sqlite-wal").exists()  # checkpointed on close
    return folder, folder / "project.sqlite"


def test_garbage_file_is_refused_and_left_untouched(tmp_path):
    folder = tmp_path / "proj"
    folder.mkdir()
    db = folder / "project.sqlite"
    db.write_bytes(b"this is not a database\n" * 100)
    before = _digest(db)
    for create in (False, True):
        with pytest.raises(ProjectError, match="not a SQLite database"):
            Project.open(folder, create=create)
    assert _digest(db) == before


def test_corrupt_pages_are_refused_and_left_untouched(tmp_path, fieldset):
    folder, db = _closed_project(tmp_path, fieldset)
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 6 * page
    data[3 * page + 8: 3 * page + 3000] = bytes(range(256)) * 11 + bytes(range(256))[:2992 - 256 * 11]
    db.write_bytes(bytes(data))
    before = _digest(db)
    with pytest.raises(ProjectError, match="corrupt|integrity"):
        Project.open(folder, create=True)
    assert _digest(db) == before


def test_open_runs_quick_check_and_check_runs_the_full_one(tmp_path, fieldset, monkeypatch):
    folder, db = _closed_project(tmp_path, fieldset)
    statements = []
    real_connect = sqlite3.connect

    def tracing_connect(*args, **kwargs):
        con = real_connect(*args, **kwargs)
        con.set_trace_callback(statements.append)
        return con

    monkeypatch.setattr(sqlite3, "connect", tracing_connect)
    with Project.open(folder) as p:
        assert any("quick_check" in s for s in statements)
        assert not any("integrity_check" in s for s in statements)
        p.check()
        assert any("integrity_check" in s for s in statements)


def test_foreign_and_newer_databases_are_refused(tmp_path, fieldset):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    con = sqlite3.connect(foreign / "project.sqlite")
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.commit()
    con.close()
    before = _digest(foreign / "project.sqlite")
    with pytest.raises(ProjectError, match="another application"):
        Project.open(foreign, create=True)
    assert _digest(foreign / "project.sqlite") == before

    folder, db = _closed_project(tmp_path, fieldset)
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.commit()
    con.close()
    before = _digest(db)
    with pytest.raises(ProjectError, match="newer cytoreview"):
        Project.open(folder)
    assert _digest(db) == before


def test_failed_open_closes_its_connection_and_wraps_os_errors(tmp_path, monkeypatch):
    folder = tmp_path / "proj"
    Project.open(folder, create=True).close()
    (folder / "predictions").rmdir()
    (folder / "predictions").write_text("a file where the predictions folder should be")
    opened = []
    real_connect = sqlite3.connect

    def recording_connect(*args, **kwargs):
        con = real_connect(*args, **kwargs)
        opened.append(con)
        return con

    monkeypatch.setattr(sqlite3, "connect", recording_connect)
    with pytest.raises(ProjectError, match="predictions"):
        Project.open(folder)
    assert opened
    for con in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            con.execute("SELECT 1")


def test_closed_project_raises(tmp_path):
    p = Project.open(tmp_path / "p", create=True)
    p.close()
    with pytest.raises(ProjectError, match="closed"):
        p.images()


def test_checksum_covers_only_the_fields_and_is_computed_once(fieldset, monkeypatch):
    from cytoreview.review import images as store

    from .conftest import write_fieldset

    (fieldset / "notes.txt").write_text("not a field")
    with Project.open(fieldset / ".cytoreview", create=True) as p:  # the project lives inside the field folder
        image_id = p.add_image(fieldset, kind="fields", mpp=0.293, plane_shape=(1208, 1928))
        (item,) = p.add_items(image_id, [{"level": "field", "field": 0}])
        p.set_label(item, [], "ann")
        (fieldset / "notes.txt").write_text("edited notes")
        assert store.quick_checksum(fieldset) == p.images()[0].checksum  # labels and notes do not change it

        def unreadable(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(store, "open", unreadable, raising=False)
        assert p.add_image(fieldset, kind="fields", mpp=0.293) == image_id  # known image: not read again
        with pytest.raises(ProjectError, match="cannot fingerprint.*Permission denied"):
            p.add_image(write_fieldset(fieldset.parent / "case_B", 1), kind="fields", mpp=0.293,
                        plane_shape=(1208, 1928))
    monkeypatch.undo()
    changed = store.quick_checksum(fieldset)
    (fieldset / "field_001.jpg").write_bytes(b"other content")
    assert store.quick_checksum(fieldset) != changed


def test_items_by_many_ids(project, image_id):
    ids = project.add_items(image_id, [{"level": "cell", "geometry": {"type": "point", "y": k, "x": 0}}
                                       for k in range(700)])
    assert project.items(ids=ids[::-1][:600])["item_id"].tolist() == sorted(ids[100:])
    assert project.items(ids=ids[:3])["item_id"].tolist() == ids[:3]


def test_one_project_shared_by_threads(project, labelled):
    import threading

    errors = []

    def work(name):
        try:
            for k in range(40):
                project.set_label(labelled[k % 4], k % 2, name)
                project.items(ids=[labelled[0]])
        except Exception as exc:  # noqa: BLE001 - any failure in a thread is reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    h = project.history()
    assert (h["action"] == "set").sum() == 160


def test_a_moved_image_is_followed_not_added_twice(project, labelled, image_id, fieldset, tmp_path):
    """A case folder moved (or a sample reinstalled elsewhere) and added again keeps its id, items and labels; a copy
    whose original is still there is a second image."""
    import shutil
    from pathlib import Path

    tile = {"type": "tile", "row": 0, "col": 0, "size_px": 64}
    iid = project.add_items(image_id, [{"level": "tile", "geometry": tile}])[0]
    project.set_label(iid, 1, "ann")
    copy = tmp_path / "copy_of_A"
    shutil.copytree(fieldset, copy)
    assert project.add_image(copy, kind="fields", mpp=0.293) != image_id  # the original is still there: a copy
    moved = tmp_path / "elsewhere" / "case_A"
    moved.parent.mkdir()
    shutil.move(fieldset, moved)
    assert project.add_image(moved, kind="fields", mpp=0.293) == image_id
    assert Path(project.image(image_id).path) == moved.absolute()
    assert project.item(iid).label == [1] and len(project.images()) == 2
    again = tmp_path / "third" / "case_A"
    again.parent.mkdir()
    shutil.move(moved, again)  # moved once more, but said to be at another pixel size: not the same image
    assert project.add_image(again, kind="fields", mpp=0.5) not in (image_id,)
    assert Path(project.image(image_id).path) == moved.absolute() and len(project.images()) == 3
