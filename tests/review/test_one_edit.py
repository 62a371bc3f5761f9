"""One user action made of several store changes is ONE edit (:meth:`Project.one_edit`): one transaction (saved
whole, or not at all -- even on kill -9 between its parts) and one undo group (one Ctrl+Z from any dock)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from cytoreview.errors import ProjectError
from cytoreview.review import Project, brush, edits

SQUARE = [[0, 0], [0, 300], [300, 300], [300, 0]]
WIDE = [[0, 0], [0, 600], [300, 600], [300, 0]]


@pytest.fixture
def classes(project):
    return (project.schema.add("tumour area", color="#c03030", level="region").id,
            project.schema.add("lymphocyte", color="#3030c0", level="cell").id)


def test_changes_in_one_edit_are_one_undo_and_one_redo(project, image_id, classes):
    tumour, _ = classes
    a = edits.add_region(project, image_id, 0, SQUARE, tumour, "ann")
    b = edits.add_region(project, image_id, 1, SQUARE, tumour, "ann")
    nar = edits.not_a_region_id(project, create=True)
    n = len(project.history())
    with project.one_edit():
        project.set_label(a, [nar], "ann")
        with project.one_edit():  # a nested block joins the outer one
            project.set_label(b, [nar], "ann")
    assert len(project.history()) == n + 2
    last = int(project.history()["journal_id"].max())
    assert project.group_items(last) == [a, b]
    project.undo("ann")
    assert project.item(a).label == [tumour] and project.item(b).label == [tumour]
    project.redo("ann")
    assert project.item(a).label == [nar] and project.item(b).label == [nar]
    assert project.verify_journal().n_rows == len(project.history())


def test_an_error_inside_one_edit_saves_none_of_it(project, image_id, classes):
    tumour, lymphocyte = classes
    a = edits.add_region(project, image_id, 0, SQUARE, tumour, "ann")
    nar = edits.not_a_region_id(project, create=True)
    n = len(project.history())
    with pytest.raises(ProjectError):
        with project.one_edit():
            project.set_label(a, [nar], "ann")
            project.set_label(a, [lymphocyte, tumour], "ann")  # a region takes one class: refused
    assert project.item(a).label == [tumour] and len(project.history()) == n
    with pytest.raises(ZeroDivisionError):
        with project.one_edit():
            project.set_label(a, [nar], "ann")
            1 / 0
    assert project.item(a).label == [tumour] and len(project.history()) == n
    assert project.verify_journal().n_rows == n
    edits.delete_regions(project, [a], "ann")  # and the project goes on writing normally
    assert project.item(a).label == [nar]


def test_a_moved_cell_is_one_undo(project, image_id, classes):
    _, lymphocyte = classes
    cell = edits.add_cell(project, image_id, 0, 100.0, 100.0, lymphocyte, "ann")
    new = edits.move_cell(project, cell, 0, 140.0, 120.0, "ann")
    nac = edits.not_a_cell_id(project, create=False)
    assert project.item(cell).label == [nac] and project.item(new).label == [lymphocyte]
    project.undo("ann")
    assert project.item(cell).label == [lymphocyte] and project.item(new).label is None


def test_a_brush_surface_over_two_fields_is_one_undo(project, image_id, classes):
    import numpy as np

    tumour, _ = classes
    planes = np.zeros((2, 40, 40), np.uint8)
    planes[0, 5:20, 5:20] = tumour + 1
    planes[1, 10:30, 10:30] = tumour + 1
    made = brush.apply_strokes(project, image_id, planes, "ann", erase_value=255, default_class=tumour,
                               px_level0=8.0)
    assert len(made) == 2 and all(project.item(r.item_id).label == [tumour] for r in made)
    project.undo("ann")
    assert all(project.item(r.item_id).label is None for r in made)
    with pytest.raises(ProjectError, match="fields, rows, cols"):
        brush.apply_strokes(project, image_id, planes[0], "ann", erase_value=255, default_class=tumour)


_KILLED_RESHAPE = textwrap.dedent("""
    import os, signal, sys
    from cytoreview.review import Project, edits

    project = Project.open(sys.argv[1])
    real_add = edits.add_region

    def add_then_die(*args, **kwargs):  # the old outline is already "not a region" in this edit
        iid = real_add(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    edits.add_region = add_then_die
    edits.reshape_region(project, int(sys.argv[2]), [[0, 0], [0, 600], [300, 600], [300, 0]], "ann")
""")


def test_kill_9_in_the_middle_of_a_reshape_loses_nothing(project, image_id, classes, tmp_path):
    """Before one edits, the old outline's "not a region" was committed before the new outline existed: a crash
    between them lost the region. Now both are one transaction."""
    tumour, _ = classes
    iid = edits.add_region(project, image_id, 0, SQUARE, tumour, "ann")
    edits.not_a_region_id(project, create=True)
    n = len(project.history())
    folder = project.folder
    project.close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", _KILLED_RESHAPE, str(folder), str(iid)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    with Project.open(folder) as again:
        assert again.item(iid).label == [tumour]  # the region is still there, whole
        assert len(again.history()) == n
        assert again.verify_journal().n_rows == n
        new = edits.reshape_region(again, iid, WIDE, "ann")  # and the reshape can simply be done again
        assert again.item(new).label == [tumour]


def test_a_class_made_inside_a_failed_edit_is_gone_with_it(project, image_id, classes):
    """The first delete or reshape makes the "not a region" class inside the edit; when the edit fails, the class is
    rolled back with it and the schema must not keep showing it."""
    tumour, _ = classes
    a = edits.add_region(project, image_id, 0, SQUARE, tumour, "ann")
    assert project.schema.not_a_region() is None
    with pytest.raises(ZeroDivisionError):
        with project.one_edit():
            edits.reshape_region(project, a, WIDE, "ann")
            assert project.schema.not_a_region() is not None  # made inside this edit
            1 / 0
    assert project.schema.not_a_region() is None and project.item(a).label == [tumour]
    new = edits.reshape_region(project, a, WIDE, "ann")  # made again, for good, by the next edit
    assert project.item(a).label == [project.schema.not_a_region().id] and project.item(new).label == [tumour]
