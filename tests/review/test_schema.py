"""Label schema: names (unicode, emoji, slashes), uniqueness, hotkeys, UNSURE, rename/recolour/merge."""

from __future__ import annotations

import pytest

from cytoreview.errors import ProjectError
from cytoreview.review import UNSURE, UNSURE_CLASS, LabelSchema, Project


def test_unicode_emoji_and_slash_names_round_trip(tmp_path):
    folder = tmp_path / "p"
    names = ["Lymphozyten (reif)", "cellule épithéliale", "核异型细胞", "🔬 atypical", "N/C ratio high / suspicious"]
    with Project.open(folder, create=True) as p:
        for n in names:
            p.schema.add(f"  {n}\t")
    with Project.open(folder) as p:
        assert [c.name for c in p.schema.classes] == names
        assert p.schema.by_name("LYMPHOZYTEN (REIF)").id == 0


@pytest.mark.parametrize("bad, match", [
    ("", "empty"), ("   ", "empty"), ("a\nb", "control character"), (3, "must be text"), ("Unsure", "reserved"),
    ("x" * 201, "longer than"),
])
def test_bad_names_are_refused(project, bad, match):
    with pytest.raises(ProjectError, match=match):
        project.schema.add(bad)
    assert project.schema.classes == []


def test_names_unique_ignoring_case(project):
    project.schema.add("Lymphocyte")
    with pytest.raises(ProjectError, match="clashes with existing class 'Lymphocyte'"):
        project.schema.add("  lymphocyte ")
    project.schema.add("Macrophage")
    with pytest.raises(ProjectError, match="clashes"):
        project.schema.rename(1, "LYMPHOCYTE")
    assert project.schema.get(1).name == "Macrophage"


def test_hotkeys_unique_and_zero_reserved(project):
    project.schema.add("a", hotkey="1")
    with pytest.raises(ProjectError, match="already used"):
        project.schema.add("b", hotkey="1")
    with pytest.raises(ProjectError, match="reserved for 'unsure'"):
        project.schema.add("b", hotkey="0")
    assert project.schema.by_hotkey("0") is UNSURE_CLASS and project.schema.by_hotkey("1").name == "a"
    assert UNSURE_CLASS.id == UNSURE == -1


def test_rename_and_recolour_persist_and_keep_labels(project, image_id):
    c = project.schema.add("benign", color="#00ff00")
    (item,) = project.add_items(image_id, [{"level": "tile", "geometry": {"type": "tile", "row": 0, "col": 0,
                                                                          "size_px": 10}}])
    project.set_label(item, c.id, "ann")
    project.schema.rename(c.id, "benign epithelium")
    project.schema.recolour(c.id, "#FF0000")
    with pytest.raises(ProjectError, match="colour"):
        project.schema.recolour(c.id, "red")
    other = Project.open(project.folder)  # a second process sees the change
    try:
        assert other.schema.get(c.id).name == "benign epithelium" and other.schema.get(c.id).color == "#ff0000"
        assert other.label_table()["labels"].tolist() == [["benign epithelium"]]
    finally:
        other.close()


def test_merge_relabels_through_the_journal(project, image_id):
    lym = project.schema.add("lymphocyte")
    small = project.schema.add("small round cell")
    keep = project.schema.add("macrophage")
    ids = project.add_items(image_id, [
        {"level": "cell", "geometry": {"type": "point", "y": k, "x": k}, "model": "m@1", "model_class": c}
        for k, c in enumerate([small.id, small.id, lym.id, keep.id])])
    project.set_label(ids[1], small.id, "ann")
    n = project.schema.merge(small.id, lym.id, reviewer="lead")
    assert n == 2
    assert [project.item(i).label for i in ids] == [[lym.id], [lym.id], [lym.id], [keep.id]]
    merged = project.schema.get(small.id)
    assert not merged.active and merged.merged_into == lym.id
    assert [c.name for c in project.schema.active_classes] == ["lymphocyte", "macrophage"]
    h = project.history()
    rows = h[h["action"] == "merge"]
    assert rows["item_id"].tolist() == ids[:2] and set(rows["reviewer"]) == {"lead"}
    assert rows["old"].tolist() == [[small.id], [small.id]]
    assert project.reviewer_labels("ann")[ids[1]] == [lym.id]
    with pytest.raises(ProjectError, match="merged into 'lymphocyte'"):
        project.set_label(ids[0], small.id, "ann")
    with pytest.raises(ProjectError, match="already merged"):
        project.schema.merge(small.id, keep.id, reviewer="lead")
    # the merged class's name is free again, under a new id
    again = project.schema.add("Small round cell")
    assert again.id not in (lym.id, small.id, keep.id)


def test_free_standing_schema_from_pack_classes():
    schema = LabelSchema.from_pack_classes([
        {"id": 0, "name": "background", "color": "#ffffff", "hotkey": "1", "level": "tile"},
        {"id": 4, "name": "atypical", "color": "#ff0000", "hotkey": "5", "level": "cell"},
    ])
    assert [c.id for c in schema.classes] == [0, 4]
    assert schema.add("mesothelial").id == 5
    with pytest.raises(ProjectError, match="clashes"):
        LabelSchema([{"id": 0, "name": "A"}, {"id": 1, "name": "a"}])
    with pytest.raises(ProjectError, match="id 0 is already used"):
        LabelSchema([{"id": 0, "name": "A"}, {"id": 0, "name": "B"}])
    with pytest.raises(ProjectError, match="level"):
        schema.add("x", level="slide")


def test_adopt_pack_classes(project):
    project.schema.add("Lymphocyte", hotkey="1")
    mapping = project.schema.adopt([
        {"id": 0, "name": "background", "color": "#ffffff", "hotkey": "1", "level": "tile"},
        {"id": 1, "name": "LYMPHOCYTE", "color": "#0000ff", "hotkey": "2", "level": "cell"},
        {"id": 2, "name": "atypical", "color": "#ff0000", "hotkey": "0", "level": "cell"},
    ])
    by_name = {c.name: c for c in project.schema.classes}
    assert mapping == {0: by_name["background"].id, 1: 0, 2: by_name["atypical"].id}
    assert by_name["background"].hotkey is None  # "1" was taken
    assert by_name["atypical"].hotkey is None  # "0" is unsure's
    assert project.schema.adopt([{"id": 5, "name": "atypical"}]) == {5: by_name["atypical"].id}
    with pytest.raises(ProjectError, match="needs 'id' and 'name'"):
        project.schema.adopt([{"name": "x"}])
