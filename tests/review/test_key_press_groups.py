"""A gallery key press on many cells: one transaction, one journal row per cell, one undo / redo step in any dock."""

import pytest

from cytoreview.errors import ProjectError
from cytoreview.review import Project, gallery

from .cell_project import make_cell_project


@pytest.fixture
def project(tmp_path):
    p = make_cell_project(tmp_path)
    yield p
    p.close()


def _count_commits(project):
    """Start counting the COMMIT statements of the project's connection; returns the list they are added to."""
    commits = []
    project.db.connection().set_trace_callback(lambda sql: commits.append(sql) if sql.strip().upper() == "COMMIT"
                                               else None)
    return commits


def test_a_key_press_on_a_page_is_one_commit_with_a_journal_row_per_cell(project):
    ids = [int(i) for i in gallery.gallery_cells(project)["item_id"][:40]]
    lymphocyte = project.schema.by_name("lymphocyte").id
    before = len(project.history())
    commits = _count_commits(project)
    assert gallery.reclassify(project, ids, lymphocyte, "dr") == 40
    assert len(commits) == 1
    journal = project.history()
    rows = journal.iloc[before:]
    assert list(rows["item_id"]) == ids and set(rows["action"]) == {"set"}
    assert all(project.item(i).label == [lymphocyte] for i in ids)
    # each cell keeps its own history row; the chain is intact
    assert list(project.history(item_id=ids[7])["new"])[-1] == [lymphocyte]
    assert project.verify_journal().ok
    commits.clear()
    todo = [int(i) for i in gallery.gallery_cells(project)["item_id"] if not project.item(int(i)).reviewed][:30]
    assert sorted(gallery.accept_calls(project, todo, "dr")) == sorted(todo) and len(commits) == 1


def test_a_bad_cell_in_a_key_press_changes_nothing(project):
    ids = [int(i) for i in gallery.gallery_cells(project)["item_id"][:10]]
    before = project.items(ids=ids)[["item_id", "label", "reviewed"]]
    n = len(project.history())
    with pytest.raises(ProjectError, match="no item with id 999999"):
        project.set_labels(ids[:5] + [999_999] + ids[5:], [project.schema.by_name("lymphocyte").id], "dr")
    assert len(project.history()) == n
    assert project.items(ids=ids)[["item_id", "label", "reviewed"]].equals(before)
    assert not project.can_undo("dr")


def test_one_undo_in_another_dock_takes_the_whole_key_press_back_and_redo_re_applies_it(project, tmp_path):
    ids = [int(i) for i in gallery.gallery_cells(project)["item_id"][:12]]
    atypical = project.schema.by_name("atypical").id
    project.set_label(ids[0], [project.schema.by_name("neutrophil").id], "dr")  # an earlier, single change
    first_label = project.item(ids[0]).label
    originals = {i: project.item(i).label for i in ids[1:]}
    gallery.reclassify(project, ids[1:], atypical, "dr")
    # another dock (here: another Project on the same folder, as another process) presses Ctrl+Z once
    other = Project.open(project.db.path.parent)
    try:
        commits = _count_commits(other)
        jid = other.undo("dr")
        assert len(commits) == 1
        assert other.group_items(jid) == list(reversed(ids[1:]))
    finally:
        other.close()
    assert {i: project.item(i).label for i in ids[1:]} == originals
    assert project.item(ids[0]).label == first_label  # the earlier change is not part of the key press
    # the gallery's redo brings the whole key press back, its next undo takes it back again
    assert sorted(gallery.redo_key_press(project, "dr")) == sorted(ids[1:])
    assert all(project.item(i).label == [atypical] for i in ids[1:])
    assert sorted(gallery.undo_key_press(project, "dr")) == sorted(ids[1:])
    # and the undo after that is the earlier single change
    assert gallery.undo_key_press(project, "dr") == [ids[0]]
    assert project.verify_journal().ok


def test_undoing_a_key_press_that_someone_else_changed_since_undoes_none_of_it(project):
    ids = [int(i) for i in gallery.gallery_cells(project)["item_id"][:6]]
    atypical = project.schema.by_name("atypical").id
    gallery.reclassify(project, ids, atypical, "dr")
    project.set_label(ids[3], [project.schema.by_name("neutrophil").id], "ann")
    n = len(project.history())
    with pytest.raises(ProjectError, match=f"cannot undo on item {ids[3]}"):
        project.undo("dr")
    assert len(project.history()) == n
    assert all(project.item(i).label == [atypical] for i in ids if i != ids[3])
    project.undo("dr", force=True)
    assert all(project.item(i).label != [atypical] or project.item(i).model_class == atypical for i in ids)
