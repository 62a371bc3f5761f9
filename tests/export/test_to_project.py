"""An exported label set comes back as a project whose journal says where each label came from."""

import numpy as np
import pytest
from PIL import Image as PILImage

from cytoreview.cli import main
from cytoreview.errors import ExportError
from cytoreview.export import export_project
from cytoreview.export.to_project import import_into_project
from cytoreview.review import Project


@pytest.fixture
def labelled_project(tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        PILImage.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(case / f"field_{i}.png")
    project = Project.open(tmp_path / "proj", create=True)
    for name in ("lymphocyte", "oncocyte / sheet"):
        project.schema.add(name, level="cell")
    image_id = project.add_image(case, kind="fields", mpp=0.293, case_id="C1")
    ids = project.add_items(image_id, [
        {"level": "cell", "field": 0, "geometry": {"type": "point", "y": 50.0, "x": 60.0}},
        {"level": "cell", "field": 1, "geometry": {"type": "point", "y": 120.0, "x": 200.0}},
        {"level": "tile", "field": 1, "geometry": {"type": "tile", "row": 0, "col": 1, "size_px": 128}},
    ])
    names = {c.name: c.id for c in project.schema.classes}
    project.set_label(ids[0], names["lymphocyte"], "ana")
    project.set_label(ids[1], names["oncocyte / sheet"], "ana")
    project.set_label(ids[2], names["lymphocyte"], "ana")
    return project


def test_manifest_round_trip_into_a_new_project(labelled_project, tmp_path):
    out = export_project(labelled_project, tmp_path / "export", ("csv",), include_paths=True)
    manifest = out["csv"]
    project, n_items = import_into_project(manifest, tmp_path / "audit")
    with project:
        table = project.label_table().sort_values(["field", "level"])
        assert n_items == 3 and len(table) == 3
        assert sorted(sum(table["labels"], [])) == ["lymphocyte", "lymphocyte", "oncocyte / sheet"]
        history = project.history()
        assert set(history["source"]) == {f"import:{manifest.name}"}
        assert set(history["reviewer"]) == {"import"}
        original = labelled_project.label_table()
        assert sorted(table["geometry"]) == sorted(original["geometry"])


def test_import_cli_and_missing_images_are_clear(labelled_project, tmp_path, capsys):
    out = export_project(labelled_project, tmp_path / "export", ("csv",))  # de-identified: no usable paths
    with pytest.raises(ExportError, match="is not on this machine"):
        import_into_project(out["csv"], tmp_path / "nope")
    good = export_project(labelled_project, tmp_path / "export2", ("csv",), include_paths=True)
    assert main(["import", str(good["csv"]), "--project", str(tmp_path / "cli")]) == 0
    assert "imported 3 labelled items" in capsys.readouterr().out
