"""The review store's seams: items and journal rows as dataclasses, SQL only in the store modules, one journal
writer, no import circles, one class-name key."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from cytoreview.class_names import name_key
from cytoreview.errors import ProjectError
from cytoreview.review import Item, JournalEntry, journal

REVIEW = Path(__file__).resolve().parents[2] / "src" / "cytoreview" / "review"
SRC = REVIEW.parent
#: The modules that own the project database's tables.
STORE_MODULES = {"connection.py", "images.py", "items.py", "journal.py", "schema.py"}
#: Modules with a database of their own (not the project's), e.g. the thumbnail cache's index.
OWN_DATABASES = {"thumbnails.py"}
_SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b[^\n]*\b(FROM|INTO|SET|WHERE)\b")


def _string_constants(path: Path) -> list[str]:
    return [n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)]


def test_item_is_a_dataclass_with_the_frame_columns(project, image_id):
    project.schema.add("benign")
    (iid,) = project.add_items(image_id, [{"level": "tile", "geometry": {"type": "tile", "row": 1, "col": 2,
                                                                          "size_px": 64}, "model": "toy@1",
                                           "model_class": 0, "model_prob": 0.75, "uncertainty": 0.3}])
    item = project.item(iid)
    assert isinstance(item, Item)
    assert (item.label, item.reviewed, item.source, item.x_min, item.y_max) == ([0], False, "model:toy@1", 128, 128)
    row = project.items(ids=[iid]).iloc[0].to_dict()
    assert row == item.to_dict()
    with pytest.raises(ProjectError, match="no item with id 999"):
        project.item(999)


def test_journal_rows_read_back_as_entries(project, image_id):
    project.schema.add("benign")
    project.schema.add("malignant")
    (iid,) = project.add_items(image_id, [{"level": "cell", "geometry": {"type": "point", "y": 3, "x": 4},
                                           "model": "toy@1", "model_class": 0}])
    jid = project.set_label(iid, 1, "ann", dwell_s=1.5)
    undo = project.undo("ann")
    e = journal.entry(project.db, jid)
    assert isinstance(e, JournalEntry)
    assert (e.id, e.item_id, e.action, e.old, e.new, e.reviewer, e.dwell_s) == (jid, iid, "set", [0], [1], "ann", 1.5)
    assert e.prev == {"reviewed": 0, "reviewer": None, "source": "model:toy@1", "own": None}
    u = journal.entry(project.db, undo)
    assert (u.action, u.ref, u.old, u.new) == ("undo", jid, [1], [0])
    assert project.history(iid)["journal_id"].tolist() == [jid - 1, jid, undo]  # import, set, undo


def test_sql_lives_only_in_the_store_modules():
    offenders = {}
    for path in SRC.rglob("*.py"):
        if path.parent == REVIEW and path.name in STORE_MODULES | OWN_DATABASES:
            continue
        if path.parent.name == "inference" or "samples" in path.parts:
            continue  # not the project database
        hits = [s for s in _string_constants(path) if _SQL.search(s)]
        if hits:
            offenders[str(path.relative_to(SRC))] = hits[0][:60]
    assert offenders == {}


def test_the_journal_has_one_writer():
    writers = [p.name for p in SRC.rglob("*.py")
               if any(re.search(r"INSERT\s+INTO\s+(journal|reviews)\b", s) or re.search(
                   r"(UPDATE|DELETE\s+FROM)\s+(journal|reviews)\b", s) for s in _string_constants(p))]
    assert writers == ["journal.py"]
    src = (REVIEW / "journal.py").read_text()
    start = src.index("\ndef append(")
    end = src.index("\ndef ", start + 1)
    assert src.count("INSERT INTO journal") == 1 and start < src.index("INSERT INTO journal") < end  # append() only


def test_review_modules_import_no_circle():
    graph = {}
    for path in REVIEW.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cytoreview.review"):
                mod = node.module.removeprefix("cytoreview.review").lstrip(".")
                deps.update([mod] if mod else [a.name for a in node.names])
        graph[path.stem] = {d for d in deps if (REVIEW / f"{d}.py").exists()} - {path.stem}
    graph.pop("__init__")

    def visit(node, stack):
        assert node not in stack, f"import circle: {' -> '.join([*stack, node])}"
        for dep in graph.get(node, ()):
            visit(dep, [*stack, node])

    for name in graph:
        visit(name, [])


def test_one_class_name_key_everywhere(project):
    assert name_key("  Oncocytic\tEpithelium ") == name_key("oncocytic epithelium") == "oncocytic epithelium"
    assert name_key("Stra\u00dfe") == name_key("STRASSE")
    cls = project.schema.add("Oncocytic epithelium")
    assert project.schema.by_name("ONCOCYTIC  epithelium").id == cls.id
    assert project.schema.adopt([{"id": 5, "name": "oncocytic   EPITHELIUM"}]) == {5: cls.id}
    with pytest.raises(ProjectError, match="clashes"):
        project.schema.add("oncocytic epithelium ")
