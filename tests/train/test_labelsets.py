"""Refit from exported label sets (ImageFolder, CSV manifest, export folder) and their error cases."""

from __future__ import annotations

import pytest

from cytoreview.errors import ExportError
from cytoreview.export import export_project
from cytoreview.train import refit_detailed


@pytest.fixture
def export_dir(project, tmp_path):
    out = tmp_path / "export"
    export_project(project, out, ["csv", "imagefolder"], include_paths=True, split=(0.7, 0.3), seed=1,
                   crop_px=16)  # fmt: skip
    return out


def test_refit_from_imagefolder(export_dir, base_pack, tmp_path):
    result = refit_detailed(export_dir / "imagefolder", base_pack, tmp_path / "o")
    assert [c["name"] for c in result.pack.classes] == ["red", "green", "blue"]
    assert result.metrics["accuracy"] >= 0.9 and result.metrics["base_accuracy"] < 0.6
    assert result.training.source == str(export_dir / "imagefolder")
    assert all(not k.startswith("/") for k in result.training.keys)  # keys relative to the dataset


def test_refit_from_export_folder_and_csv(export_dir, base_pack, tmp_path):
    via_folder = refit_detailed(export_dir, base_pack, tmp_path / "o1")
    assert via_folder.training.source.endswith("imagefolder")
    via_csv = refit_detailed(export_dir / "labels.csv", base_pack, tmp_path / "o2")
    assert via_csv.training.n_items == via_folder.training.n_items
    assert via_csv.metrics["accuracy"] >= 0.9
    # the export's colours come along
    assert [c["color"] for c in via_csv.pack.classes] == ["#ff0000", "#00ff00", "#0000ff"]


def test_label_set_split_is_the_holdout(export_dir, base_pack, tmp_path):
    import pandas as pd

    frame = pd.read_csv(export_dir / "labels.csv")
    frame["split"] = ["test" if i % 4 == 0 else "train" for i in range(len(frame))]
    frame.to_csv(tmp_path / "split.csv", index=False)
    result = refit_detailed(tmp_path / "split.csv", base_pack, tmp_path / "o")
    assert result.metrics["holdout"] == "label-set split"
    assert result.metrics["n"] == (len(frame) + 3) // 4


def test_deidentified_manifest_is_refused(project, base_pack, tmp_path):
    out = tmp_path / "export"
    export_project(project, out, ["csv"])
    with pytest.raises(ExportError, match="de-identified"):
        refit_detailed(out / "labels.csv", base_pack, tmp_path / "o")


def test_corrupt_and_empty_label_sets(base_pack, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x00\x01,\"unterminated\n\xff\xfe")
    with pytest.raises(ExportError, match="bad.csv"):
        refit_detailed(bad, base_pack, tmp_path / "o1")
    no_label = tmp_path / "nolabel.csv"
    no_label.write_text("path,x_min\na.png,1\n")
    with pytest.raises(ExportError, match="no 'label' column"):
        refit_detailed(no_label, base_pack, tmp_path / "o2")
    with pytest.raises(ExportError, match="does not exist"):
        refit_detailed(tmp_path / "missing.csv", base_pack, tmp_path / "o3")
    empty = tmp_path / "emptyfolder"
    empty.mkdir()
    with pytest.raises(ExportError, match="no images"):
        refit_detailed(empty, base_pack, tmp_path / "o4")


def test_one_class_label_set(export_dir, base_pack, tmp_path):
    import shutil

    root = tmp_path / "one"
    shutil.copytree(export_dir / "imagefolder" / "train" / "red", root / "red")
    with pytest.raises(ExportError, match="at least two classes"):
        refit_detailed(root, base_pack, tmp_path / "o")


def test_classes_unknown_to_the_project(export_dir, base_pack, tmp_path, project):
    with pytest.raises(ExportError, match="not in the project's schema"):
        refit_detailed(export_dir / "imagefolder", base_pack, tmp_path / "o", classes=["red", "green"])
    # the project itself is accepted as the class list
    ok = refit_detailed(export_dir / "imagefolder", base_pack, tmp_path / "o2", classes=project)
    assert [c["name"] for c in ok.pack.classes] == ["red", "green", "blue"]


def test_cli_label_set_checked_against_a_project(export_dir, base_pack, tmp_path, project, capsys):
    from cytoreview.cli import main

    args = ["train", str(export_dir), "--base", str(base_pack), "--project", str(project.folder), "-q"]
    assert main([*args, "--out", str(tmp_path / "o1")]) == 0
    assert "wrote tiny-tiles@1.1.0" in capsys.readouterr().out
    project.schema.merge(project.schema.by_name("blue").id, project.schema.by_name("red").id, "alice")
    assert main([*args, "--out", str(tmp_path / "o2")]) == 2
    assert "'blue' are not in the project's schema" in capsys.readouterr().err
