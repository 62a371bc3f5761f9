"""Differential counts on a project's cell items, and ``cytoreview differential``."""

import numpy as np
import pandas as pd
import pytest

import cytoreview.cli
from cytoreview.errors import ProjectError
from cytoreview.review import UNSURE, Project
from cytoreview.review.differential import NOT_CLASSED, UNIDENTIFIED, cell_table, differential

from .cell_project import make_cell_project


@pytest.fixture
def cells_project(tmp_path):
    project = make_cell_project(tmp_path)
    yield project
    project.close()


def _expected(project, case_id):
    """Counts per class name, recomputed from the items themselves (not through the function under test)."""
    images = {im.id: im.case_id for im in project.images()}
    items = project.items(level="cell")
    items = items[items["image_id"].map(images) == case_id]
    names = {c.id: c.name for c in project.schema.classes}
    names[UNSURE] = "unsure"
    return pd.Series([names[label[0]] for label in items["label"]]).value_counts().to_dict()


def test_counts_and_percentages_per_case(cells_project):
    table = differential(cells_project)
    assert set(table["group"]) == {"case-1", "case-2"}
    for case in ("case-1", "case-2"):
        part = table[table["group"] == case]
        assert dict(zip(part["class"], part["count"])) == _expected(cells_project, case)
        assert part["percent"].sum() == pytest.approx(100.0)
        assert (part["denominator"] == part["count"].sum()).all()


def test_unsure_and_not_classed_leave_the_denominator(cells_project):
    items = cells_project.items(level="cell")
    first = items[items["image_id"] == 1]["item_id"].tolist()
    not_classed = cells_project.schema.add(NOT_CLASSED, level="cell").id
    cells_project.set_label(first[0], [UNSURE], "dr-a")
    cells_project.set_label(first[1], [not_classed], "dr-a")
    part = differential(cells_project, case_id="case-1")
    total = len(first)
    assert part["denominator"].iloc[0] == total - 2
    excluded = part[~part["in_denominator"]].set_index("class")
    assert excluded.loc["unsure", "count"] == 1 and excluded.loc[NOT_CLASSED, "count"] == 1
    assert excluded["percent"].isna().all() and excluded["per_denominator"].isna().all()
    assert part["percent"].sum() == pytest.approx(100.0)


def test_per_100_white_cells_with_a_class_outside_the_count(cells_project):
    white = ["neutrophil", "lymphocyte", "macrophage"]
    part = differential(cells_project, case_id="case-2", counted=white, per=100)
    counts = dict(zip(part["class"], part["count"]))
    denominator = sum(counts.get(name, 0) for name in white)
    assert (part["denominator"] == denominator).all()
    meso = part[part["class"] == "mesothelial"].iloc[0]
    assert not meso["in_denominator"] and np.isnan(meso["percent"])
    assert meso["per_denominator"] == pytest.approx(100 * counts["mesothelial"] / denominator)
    assert part[part["in_denominator"]]["percent"].sum() == pytest.approx(100.0)


def test_unidentified_below_threshold_until_reviewed(cells_project):
    table = cell_table(cells_project, unidentified_below=0.5)
    low = table[table["confidence"] < 0.5]
    assert (low["class"] == UNIDENTIFIED).all() and len(low) > 0
    item = int(low["item_id"].iloc[0])
    cells_project.accept(item, "dr-a")
    again = cell_table(cells_project, unidentified_below=0.5).set_index("item_id")
    assert again.loc[item, "class"] != UNIDENTIFIED
    part = differential(cells_project, by="project", unidentified_below=0.5)
    assert not part[part["class"] == UNIDENTIFIED]["in_denominator"].any()


def test_per_image_and_bad_arguments(cells_project):
    by_image = differential(cells_project, by="image")
    assert by_image["group"].nunique() == 2 and all("case-" in g for g in by_image["group"])
    with pytest.raises(ProjectError, match="not in the project's classes"):
        differential(cells_project, counted=["eosinophil"])
    with pytest.raises(ProjectError, match="positive"):
        differential(cells_project, per=0)
    with pytest.raises(ProjectError, match="has no cells"):
        differential(cells_project, case_id="case-9")


def test_project_without_cells(tmp_path):
    with Project.open(tmp_path / "empty", create=True) as project:
        assert differential(project).empty


def test_cli(cells_project, capsys):
    folder = str(cells_project.folder)
    assert cytoreview.cli.main(["differential", folder, "--case", "case-1", "--count",
                                "neutrophil,lymphocyte,macrophage"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("case-1: ") and "per 100" in out and "(not counted)" in out
    assert cytoreview.cli.main(["differential", folder, "--csv"]) == 0
    from io import StringIO

    csv = pd.read_csv(StringIO(capsys.readouterr().out))
    assert list(csv.columns)[:3] == ["group", "class", "count"] and set(csv["group"]) == {"case-1", "case-2"}
    assert cytoreview.cli.main(["differential", folder, "--count", "eosinophil"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eosinophil" in err[0]
