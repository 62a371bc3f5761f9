"""Predict into a project, compare packs, the project-folder rule, and their commands (with their bad input)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from cytoreview.errors import CytoreviewError
from cytoreview.inference import PredictionStore
from cytoreview.models import load_pack
from cytoreview.review import Project
from cytoreview.train import flips, refit
from cytoreview.workflows import (
    WorkflowError,
    add_images,
    compare_packs,
    init_project,
    next_pack_folder,
    predict_into_project,
    project_folder_for,
)

from .conftest import MPP, tree, write_tile_fields
from tests.train.conftest import NAMES, tile_slide


def result_tiles(stores) -> int:
    a, b = (np.asarray(PredictionStore(s).tile_class[:]) for s in stores)
    return int(((a >= 0) & (b >= 0)).sum())


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------------------ folder rule
def test_project_folder_rule(tmp_path, slide, fields, monkeypatch):
    assert project_folder_for(fields[0]) == fields[0] / ".cytoreview"
    assert project_folder_for(slide[0]) == tmp_path / "slide.tif.cytoreview"
    monkeypatch.setenv("CYTOREVIEW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only share (root can write anywhere)
    assert project_folder_for(slide[0]) == tmp_path / "cache" / "projects" / "slide.tif.cytoreview"
    (tmp_path / "slide.tif.cytoreview").mkdir()  # ... unless the project is already where it belongs
    assert project_folder_for(slide[0]) == tmp_path / "slide.tif.cytoreview"


def test_next_pack_folder_skips_taken_versions(tmp_path, pack):
    base = load_pack(pack)
    assert next_pack_folder(tmp_path / "proj", base) == tmp_path / "proj" / "packs" / "tiny-tiles-1.1.0"
    (tmp_path / "proj" / "packs" / "tiny-tiles-1.1.0").mkdir(parents=True)
    assert next_pack_folder(tmp_path / "proj", base).name == "tiny-tiles-1.2.0"
    assert next_pack_folder(tmp_path / "proj", base, "other").name == "other-1.0.0"


# ------------------------------------------------------------------------------------------------ function API
def test_predict_into_project_registers_and_imports_once(tmp_path, slide, fields, pack):
    init_project(tmp_path / "proj").close()
    run = predict_into_project(slide[0], pack, tmp_path / "proj", threads=1)
    n_tiles = int((np.asarray(PredictionStore(run.store_path).tile_class[:]) >= 0).sum())  # glass-like tiles skipped
    assert 30 < n_tiles <= 64
    assert run.complete and run.image_id == 1 and run.n_items == n_tiles and not run.notes
    assert run.store_path.parent == tmp_path / "proj" / "predictions"
    again = predict_into_project(slide[0], pack, tmp_path / "proj", threads=1)  # the complete store is reused
    assert (again.image_id, again.n_items, again.store_path) == (1, n_tiles, run.store_path)
    fs = predict_into_project(fields[0], pack, tmp_path / "proj", threads=1)
    with Project.open(tmp_path / "proj") as project:
        images = project.images()
        assert [(im.kind, im.mpp, im.case_id) for im in images] == [("wsi", MPP, None), ("fields", MPP, "fs-case")]
        assert images[1].plane_shape == (64, 96)
        assert project.n_items(images[1].id) == fs.n_items == 3 * 4 * 6 + 3  # tiles + one item per field
        tiles = project.items(image_id=1, level="tile")
        names = {c.id: c.name for c in project.schema.active_classes}
        store = PredictionStore(run.store_path)
        calls = {(g["row"], g["col"]): names[m] for g, m in zip(tiles["geometry"], tiles["model_class"])}
        tile_class = np.asarray(store.tile_class[0])
        assert calls == {(r, c): store.class_names[int(tile_class[r, c])] for r, c in zip(*np.nonzero(tile_class >= 0))}


def test_a_cancelled_run_keeps_its_rows_and_leaves_the_project_alone(tmp_path, slide, pack):
    import threading

    cancel = threading.Event()
    cancel.set()
    run = predict_into_project(slide[0], pack, tmp_path / "proj", create=True, threads=1, cancel=cancel)
    assert not run.complete and run.image_id is None and run.store_path.exists()
    assert not (tmp_path / "proj" / "project.sqlite").exists()  # made only once a store is complete
    done = predict_into_project(slide[0], pack, tmp_path / "proj", create=True, threads=1)
    assert done.complete and done.n_items > 30 and done.store_path == run.store_path


def test_add_images_checks_every_path_before_registering_one(tmp_path, slide, pack):
    init_project(tmp_path / "proj").close()
    with pytest.raises(CytoreviewError, match="gone.tif"):
        add_images(tmp_path / "proj", [slide[0], tmp_path / "gone.tif"])
    with pytest.raises(WorkflowError, match="given twice"):
        add_images(tmp_path / "proj", [slide[0], tmp_path / "." / "slide.tif"])
    with Project.open(tmp_path / "proj") as project:
        assert project.images() == []
    (added,) = add_images(tmp_path / "proj", [slide[0]], case_id="c1")
    assert (added.image_id, added.kind, added.mpp, added.mpp_source) == (1, "wsi", MPP, "tiff-resolution")
    with pytest.raises(WorkflowError, match="not wsi at 0.25"):
        add_images(tmp_path / "proj", [slide[0]], mpp=0.25)


# ------------------------------------------------------------------------------------------------ the commands
def test_project_init_add_predict_and_status_from_the_shell(cli, tmp_path, slide, fields, pack, capsys):
    proj = tmp_path / "proj"
    assert cli(["project", "init", str(proj)]) == 0
    assert "0 image(s)" in capsys.readouterr().out
    assert cli(["project", "init", str(proj)]) == 0  # an existing project is left as it is
    assert cli(["project", "add", str(proj), str(slide[0]), "--case-id", "slide-case"]) == 0
    out = capsys.readouterr()
    assert "image 1:" in out.out and "wsi, 0.5 µm/px" in out.out and not out.err
    assert cli(["predict", str(slide[0]), str(fields[0]), "--model", str(pack), "--project", str(proj), "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    n_slide = int((np.asarray(PredictionStore(out[0].split("\t")[0]).tile_class[:]) >= 0).sum())
    assert out[0].endswith(f"image 1: {n_slide} items") and out[1].endswith("image 2: 75 items")
    assert cli(["review-status", str(proj)]) == 0
    status = capsys.readouterr().out
    assert f"0/{n_slide} reviewed" in status and "0/75 reviewed" in status
    with Project.open(proj) as project:
        assert [im.case_id for im in project.images()] == ["slide-case", "fs-case"]
        reference = predict_into_project(slide[0], pack, tmp_path / "api", create=True, threads=1)
        ours = project.items(image_id=1, level="tile")
    with Project.open(tmp_path / "api") as api:
        theirs = api.items(image_id=reference.image_id, level="tile")
    cols = ["level", "model_class", "model_prob", "uncertainty"]
    pd.testing.assert_frame_equal(ours[cols].reset_index(drop=True), theirs[cols].reset_index(drop=True))


def test_guessed_pixel_sizes_are_said_on_stderr_and_mpp_sets_them(cli, tmp_path, pack, capsys):
    import tifffile

    arr, _ = tile_slide(4, 4)
    bare = tmp_path / "bare.tif"
    tifffile.imwrite(bare, arr, tile=(16, 16), photometric="rgb")  # no resolution tags
    nomp, _ = write_tile_fields(tmp_path / "nomp", n_fields=1, mpp=None)
    proj = tmp_path / "proj"
    cli(["project", "init", str(proj)])
    capsys.readouterr()
    assert cli(["project", "add", str(proj), str(bare)]) == 0
    err = capsys.readouterr().err
    assert "bare.tif: no pixel size" in err and "--mpp" in err and err.count("\n") == 1
    assert cli(["predict", str(nomp), "--model", str(pack), "--out", str(tmp_path / "stores"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "nomp: no pixel size in the image; assuming 0.293" in err
    assert cli(["predict", str(nomp), "--model", str(pack), "--project", str(proj), "--mpp", "0.5", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "no pixel size" not in out.err and "image 2:" in out.out
    with Project.open(proj) as project:
        assert project.image(2).mpp == 0.5
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses it (exit 2, the usage and the reason)
        cli(["predict", str(nomp), "--model", str(pack), "--project", str(proj), "--mpp", "-1"])
    assert exit_info.value.code == 2 and "must be a positive number" in capsys.readouterr().err


def test_compare_lists_the_flips_of_a_refit(cli, tmp_path, slide, fields, pack, capsys):
    proj = tmp_path / "proj"
    cli(["project", "init", str(proj)])
    cli(["predict", str(slide[0]), str(fields[0]), "--model", str(pack), "--project", str(proj), "--quiet"])
    with Project.open(proj) as project:  # a reviewer labels the slide's tiles with the truth
        ids = {c.name: c.id for c in project.schema.active_classes}
        items = project.items(image_id=1, level="tile")
        for iid, g in zip(items["item_id"], items["geometry"]):
            project.set_label(int(iid), ids[NAMES[slide[1][g["row"], g["col"]]]], "alice")
        new = refit(project, pack, proj / "packs" / "tiny-tiles-1.1.0")
    capsys.readouterr()
    out_csv = tmp_path / "flips.csv"
    assert cli(["compare", str(proj), "--base", "tiny-tiles@1.0.0", "--new", "tiny-tiles@1.1.0", "--out",
                str(out_csv), "--model-path", str(pack.parent), "--quiet"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    table = pd.read_csv(out_csv)
    stores = sorted((proj / "predictions").glob("slide__*.zarr"))
    expected = flips(*stores)
    assert len(expected) > 5  # the base pack swaps red and green
    mine = table[table["image_id"] == 1].reset_index(drop=True)
    assert list(mine["row"]) == list(expected["row"]) and list(mine["new"]) == list(expected["new"])
    assert set(table["image_id"]) <= {1, 2} and (table["image_id"] == 2).any()
    assert f"{len(table)} of {result_tiles(stores) + 72} tiles changed class between tiny-tiles@1.0.0 and {new.ref}" in text
    result = compare_packs(proj, pack, new.path, image_ids=[2])
    assert len(result.flips) == (table["image_id"] == 2).sum() and result.n_tiles == 72


# ------------------------------------------------------------------------------------------------ bad input
def test_commands_need_an_existing_project(cli, tmp_path, slide, pack, capsys):
    proj = tmp_path / "nowhere"
    for argv in (["project", "add", str(proj), str(slide[0])],
                 ["predict", str(slide[0]), "--model", str(pack), "--project", str(proj)],
                 ["compare", str(proj), "--base", str(pack), "--new", str(pack)]):  # fmt: skip
        assert cli(argv) == 2
        err = one_line_error(capsys)
        assert "no cytoreview project" in err and "cytoreview project init" in err
        assert not proj.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packs", "slide.tif"]


def test_an_image_under_another_path_spelling_is_refused(cli, tmp_path, slide, pack, capsys):
    proj = tmp_path / "proj"
    cli(["project", "init", str(proj)])
    cli(["project", "add", str(proj), str(slide[0])])
    capsys.readouterr()
    (tmp_path / "link.tif").symlink_to(slide[0])
    (tmp_path / "sub").mkdir()
    before = tree(proj)
    for spelling in (tmp_path / "link.tif", tmp_path / "sub" / ".." / "slide.tif"):
        for argv in (["project", "add", str(proj), str(spelling)],
                     ["predict", str(spelling), "--model", str(pack), "--project", str(proj), "--quiet"]):  # fmt: skip
            assert cli(argv) == 2
            err = one_line_error(capsys)
            assert f"already in project {proj} as {slide[0]}" in err
    assert tree(proj) == before  # no store, no second image
    with Project.open(proj) as project:
        assert len(project.images()) == 1


def test_an_unknown_pack_is_refused_before_anything_is_made(cli, tmp_path, slide, capsys):
    proj = tmp_path / "proj"
    cli(["project", "init", str(proj)])
    capsys.readouterr()
    before = tree(proj)
    assert cli(["predict", str(slide[0]), "--model", "no-such-pack", "--project", str(proj)]) == 2
    assert "no-such-pack" in one_line_error(capsys)
    assert cli(["compare", str(proj), "--base", "no-such-pack", "--new", "other"]) == 2
    assert "no-such-pack" in one_line_error(capsys)
    assert tree(proj) == before


def test_unwritable_places_are_refused_and_nothing_is_left(cli, tmp_path, slide, pack, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    assert cli(["project", "init", str(blocker / "proj")]) == 2
    assert "blocker" in one_line_error(capsys)
    assert cli(["project", "init", "/proc/cytoreview-test/proj"]) == 2  # a read-only file system, even for root
    one_line_error(capsys)
    assert cli(["predict", str(slide[0]), "--model", str(pack), "--out", str(blocker / "stores"), "--quiet"]) == 2
    assert "cannot write" in one_line_error(capsys)
    proj = tmp_path / "proj"
    cli(["project", "init", str(proj)])
    cli(["project", "add", str(proj), str(slide[0])])
    capsys.readouterr()
    assert cli(["compare", str(proj), "--base", str(pack), "--new", str(pack), "--out",
                str(blocker / "flips.csv")]) == 2  # fmt: skip
    assert "not writable" in one_line_error(capsys)
    assert not list((proj / "predictions").iterdir())  # refused before any prediction ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "packs", "proj", "slide.tif"]


def test_compare_can_import_the_new_packs_calls_and_refuses_what_it_cannot_compare(cli, tmp_path, slide, pack,
                                                                                     capsys):  # fmt: skip
    from tests.models.onnx_graphs import base_card, segmenter_graph, write_pack

    proj = tmp_path / "proj"
    cli(["project", "init", str(proj)])
    cli(["predict", str(slide[0]), "--model", str(pack), "--project", str(proj), "--quiet"])
    with Project.open(proj) as project:
        ids = {c.name: c.id for c in project.schema.active_classes}
        items = project.items(image_id=1, level="tile")
        for iid, g in zip(items["item_id"], items["geometry"]):
            project.set_label(int(iid), ids[NAMES[slide[1][g["row"], g["col"]]]], "alice")
        new = refit(project, pack, proj / "packs" / "tiny-tiles-1.1.0")
    capsys.readouterr()
    assert cli(["compare", str(proj), "--base", str(pack), "--new", str(new.path), "--import", "--quiet"]) == 0
    assert "imported tiny-tiles@1.1.0 predictions into the project" in capsys.readouterr().err
    with Project.open(proj) as project:
        tiles = project.items(image_id=1, level="tile")
        assert set(tiles["model"]) == {"tiny-tiles@1.1.0"}  # the model calls are the new pack's now
        assert tiles["reviewed"].all()  # ... and no reviewer's label was touched
    assert cli(["compare", str(proj), "--base", str(pack), "--new", str(new.path), "--image", "7"]) == 2
    assert "has no image 7" in one_line_error(capsys)
    seg = write_pack(tmp_path / "packs" / "seg", base_card("seg", task="segmentation", input={"size_px": 16, "mpp": 0.5},
                     outputs={"probabilities": {"name": "probs"}, "halo_px": 1},
                     classes=[{"id": 0, "name": "background", "color": "#f0f0f0", "level": "cell"},
                              {"id": 1, "name": "nucleus", "color": "#7030a0", "level": "cell"}]), segmenter_graph)  # fmt: skip
    assert cli(["compare", str(proj), "--base", str(pack), "--new", str(seg)]) == 2
    assert "two tile-classification packs" in one_line_error(capsys)


def test_predict_into_a_project_on_dask_workers(cli, tmp_path, slide, fields, pack, capsys):
    proj = tmp_path / "proj"
    cli(["project", "init", str(proj)])
    capsys.readouterr()
    assert cli(["predict", str(slide[0]), str(fields[0]), "--model", str(pack), "--project", str(proj), "--workers",
                "1", "--quiet"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith("image 2: 75 items") and "image 1:" in lines[0]
    with Project.open(proj) as project:
        assert [im.kind for im in project.images()] == ["wsi", "fields"]
        assert all(PredictionStore(s).complete for s in (proj / "predictions").glob("*.zarr"))


def test_info_says_on_stderr_when_it_guesses_the_pixel_size(cli, tmp_path, capsys):
    nomp, _ = write_tile_fields(tmp_path / "nomp", n_fields=1, mpp=None)
    assert cli(["info", str(nomp)]) == 0
    out = capsys.readouterr()
    assert "assuming 0.293 µm/px" in out.err and "mpp:" in out.out
    assert cli(["info", str(nomp), "--mpp", "0.5"]) == 0
    assert "assuming" not in capsys.readouterr().err
