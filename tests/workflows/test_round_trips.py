"""Round trips that close: relinking a de-identified export, class colours, COCO files, re-exports, crops to train
on, and honest small data (splits that cannot be met, held-out sets too small to mean anything)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from cytoreview.errors import ExportError
from cytoreview.export import export_project
from cytoreview.export.splits import SplitWarning, assign_splits
from cytoreview.review import Project
from cytoreview.train.evaluate import small_holdout_warning
from cytoreview.workflows import init_project, predict_into_project
from tests.train.conftest import NAMES


@pytest.fixture
def labelled(tmp_path, slide, fields, pack):
    """A project with the field set and the slide predicted and every tile labelled with the truth."""
    folder = tmp_path / "proj"
    init_project(folder).close()
    for path in (fields[0], slide[0]):
        predict_into_project(path, pack, folder, threads=1)
    truth = {1: fields[1], 2: slide[1][None]}
    with Project.open(folder) as project:
        ids = {c.name: c.id for c in project.schema.active_classes}
        for image_id in (1, 2):
            items = project.items(image_id=image_id, level="tile")
            for iid, g, f in zip(items["item_id"], items["geometry"], items["field"]):
                project.set_label(int(iid), ids[NAMES[truth[image_id][f, g["row"], g["col"]]]], "alice")
    return folder


def test_geojson_import_relinks_by_fingerprint_and_keeps_colours(cli, labelled, tmp_path, slide, capsys):
    with Project.open(labelled) as project:  # give "red" a colour of its own, as a QuPath user would
        project.schema.recolour(project.schema.by_name("red").id, "#aa3311")
        colours = {c.name: c.color[:7] for c in project.schema.active_classes}
    export_project(labelled, tmp_path / "exp", "geojson")
    target = tmp_path / "audit"
    moved = tmp_path / "moved"
    moved.mkdir()
    slide[0].rename(moved / "another-name.tif")
    assert cli(["import", str(tmp_path / "exp" / "geojson" / "img2.geojson"), "--project", str(target),
                "--image-root", str(moved)]) == 0  # fmt: skip
    capsys.readouterr()
    with Project.open(target) as project:
        (image,) = project.images()
        assert image.path == moved / "another-name.tif" and image.kind == "wsi" and image.mpp == 0.5
        got = {c.name: c.color[:7] for c in project.schema.active_classes}
    assert got == {name: colours[name] for name in got} and got["red"] == "#aa3311"


def test_a_qupath_packed_int_colour_is_kept(tmp_path, slide):
    from cytoreview.export.to_project import import_into_project

    feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [20, 30]},
               "properties": {"objectType": "detection", "classification": {"name": "Tumor", "color": -3670016}}}
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    project, n = import_into_project(path, tmp_path / "p", image_path=slide[0])
    with project:
        assert n == 1 and project.schema.by_name("Tumor").color[:7] == "#c80000"  # ARGB 0xFFC80000


def test_image_root_errors_are_one_line_and_make_no_project(cli, labelled, tmp_path, capsys):
    export_project(labelled, tmp_path / "exp", "csv")
    for root, words in ((tmp_path / "nowhere", "is not a folder"), (tmp_path / "exp", "not found under")):
        assert cli(["import", str(tmp_path / "exp" / "labels.csv"), "--project", str(tmp_path / "p"),
                    "--image-root", str(root)]) == 2  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err
        assert not (tmp_path / "p").exists()


def test_coco_names_files_it_wrote_also_for_a_large_slide(labelled, tmp_path, monkeypatch):
    import tifffile
    from PIL import Image as PILImage

    from cytoreview.export import coco

    monkeypatch.setattr(coco, "PNG_MAX_SIDE_PX", 100)  # the 128 px slide counts as large, the 96 px fields do not
    monkeypatch.setattr(coco, "TIFF_TILE_PX", 48)
    export_project(labelled, tmp_path / "exp", "coco")
    data = json.loads((tmp_path / "exp" / "coco" / "instances.json").read_text())
    names = sorted(im["file_name"] for im in data["images"])
    assert names == ["images/fs-case_img1_f000.png", "images/fs-case_img1_f001.png", "images/fs-case_img1_f002.png",
                     "images/img2.tif"]
    folder = tmp_path / "exp" / "coco"
    with PILImage.open(folder / "images" / "fs-case_img1_f001.png") as im:
        field = np.asarray(im)
    original = np.asarray(PILImage.open(sorted((tmp_path / "case-fields").glob("*.png"))[1]).convert("RGB"))
    np.testing.assert_array_equal(field, original)
    big = tifffile.imread(folder / "images" / "img2.tif")
    np.testing.assert_array_equal(big, tifffile.imread(tmp_path / "slide.tif"))
    for im in data["images"]:
        assert (im["height"], im["width"]) == (64, 96) or (im["height"], im["width"]) == big.shape[:2]


def test_re_export_replaces_what_the_earlier_export_wrote(labelled, tmp_path):
    out = tmp_path / "exp"
    export_project(labelled, out, "all")
    (out / "notes.txt").write_text("mine")
    export_project(labelled, out, "csv")
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "labels.csv", "notes.txt"]
    assert json.loads((out / "export.json").read_text())["formats"] == ["csv"]


def test_train_on_a_metadata_csv_and_on_a_project_of_imported_crops(cli, labelled, tmp_path, pack, capsys):
    export_project(labelled, tmp_path / "exp", "imagefolder")
    root = tmp_path / "exp" / "imagefolder"
    assert cli(["train", str(root / "metadata.csv"), "--base", str(pack), "--out", str(tmp_path / "a"), "-q",
                "--json"]) == 0  # fmt: skip
    from_csv = json.loads(capsys.readouterr().out)
    assert cli(["import", str(root), "--project", str(tmp_path / "crops")]) == 0
    assert cli(["train", str(tmp_path / "crops"), "--base", str(pack), "--out", str(tmp_path / "b"), "-q",
                "--json"]) == 0  # fmt: skip
    from_project = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    n_crops = len(list(root.rglob("*.png")))
    assert from_csv["training_set"]["n_items"] == from_project["training_set"]["n_items"] == n_crops
    assert from_project["metrics"]["train_accuracy"] > 0.95  # the refit learns the crops' true colours


def test_a_split_that_cannot_be_met_warns(labelled, tmp_path):
    with Project.open(labelled) as project:
        table = project.label_table()
    one_case = table[table["image_id"] == 1]
    with pytest.warns(SplitWarning, match=r"0.7/0.15/0.15 cannot be met with 1 case\(s\): validation, test get no"):
        split = assign_splits(one_case, (0.7, 0.15, 0.15))
    assert set(split) == {"train"}
    many = table.copy()
    many["case_id"] = [f"c{i % 20}" for i in range(len(many))]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitWarning)  # 20 cases meet 70/15/15: no warning
        assert set(assign_splits(many, True)) == {"train", "validation", "test"}


def test_small_held_out_sets_are_called_what_they_are():
    big = {"n": 40, "support": {"a": 20, "b": 20}}
    assert small_holdout_warning(big) is None
    small = {"n": 12, "support": {"a": 8, "b": 4}}
    text = small_holdout_warning(small)
    assert "too small" in text and "a 8, b 4" in text
    assert small_holdout_warning({"n": 0}) is None


def test_train_prints_the_warning_instead_of_a_bare_accuracy(cli, labelled, tmp_path, pack, capsys):
    export_project(labelled, tmp_path / "exp", "imagefolder")
    assert cli(["train", str(tmp_path / "exp" / "imagefolder"), "--base", str(pack), "--out", str(tmp_path / "n"),
                "-q", "--holdout", "0.2"]) == 0  # fmt: skip
    out = capsys.readouterr()
    assert "WARNING: held-out set too small to mean anything" in out.out
    assert "NOT meaningful" in out.out and "warning: held-out set too small" in out.err
    readme = (tmp_path / "n" / "README.md").read_text()
    assert "**Warning: held-out set too small" in readme


def test_import_says_when_it_guesses_the_pixel_size(cli, tmp_path, capsys):
    from PIL import Image as PILImage

    for name, colour in (("red", (200, 40, 40)), ("blue", (50, 60, 200))):
        (tmp_path / "crops" / name).mkdir(parents=True)
        for k in range(3):
            PILImage.new("RGB", (16, 16), colour).save(tmp_path / "crops" / name / f"{k}.png")
    assert cli(["import", str(tmp_path / "crops"), "--project", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    assert err.count("assuming 0.293 µm/px") == 1 and "and 5 more" in err and "--mpp" in err
    assert cli(["import", str(tmp_path / "crops"), "--project", str(tmp_path / "q"), "--mpp", "0.5"]) == 0
    assert "assuming" not in capsys.readouterr().err


def test_a_crop_is_embedded_at_the_packs_field_of_view(pack):
    from cytoreview.inference.grid import resize_patch
    from cytoreview.models import load_pack
    from cytoreview.train.dataset import crop_patch

    base = load_pack(pack)  # 16 px at 0.5 µm/px: an 8 µm field of view
    rng = np.random.default_rng(0)
    exact = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)  # 32 px at 0.25 µm/px = 8 µm: the whole crop
    np.testing.assert_array_equal(crop_patch(exact, 0.25, base), resize_patch(exact, 16))
    small = rng.integers(0, 200, (8, 8, 3), dtype=np.uint8)  # 4 µm at 0.5: padded with glass around it
    patch = crop_patch(small, 0.5, base)
    np.testing.assert_array_equal(patch[4:12, 4:12], small)
    assert (patch[:4] == 255).all() and (patch[:, 12:] == 255).all()
    big = rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)  # 32 x 24 µm at 0.5: its centre 8 µm
    np.testing.assert_array_equal(crop_patch(big, 0.5, base), big[24:40, 16:32])
