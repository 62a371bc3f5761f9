"""A whole session from the shell, as a new user would run it, through ``cytoreview.cli.main``:

``project init`` -> ``predict --project`` on a field set and a slide -> ``review-status`` -> labels through the API
-> ``export --format all`` -> ``import`` the CSV into a new project with ``--image-root`` -> ``train`` on the exported
ImageFolder -> ``compare``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd

from cytoreview.export.relink import content_fingerprint
from cytoreview.inference import PredictionStore
from cytoreview.review import Project
from tests.train.conftest import NAMES


def test_a_shell_only_session(cli, tmp_path, slide, fields, pack, capsys):
    proj, export = tmp_path / "proj", tmp_path / "export"

    # -- a project, two cases predicted into it, the review status
    assert cli(["project", "init", str(proj)]) == 0
    assert "0 image(s)" in capsys.readouterr().out
    assert cli(["predict", str(fields[0]), str(slide[0]), "--model", str(pack), "--project", str(proj),
                "--quiet"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].endswith("image 1: 75 items") and "image 2:" in lines[1]
    assert cli(["review-status", str(proj)]) == 0
    status = capsys.readouterr().out
    assert "image 1: 0/75 reviewed" in status and "image 2: 0/" in status

    # -- a reviewer labels every tile with the truth (the base pack swaps red and green)
    truth = {1: fields[1], 2: slide[1][None]}
    with Project.open(proj) as project:
        ids = {c.name: c.id for c in project.schema.active_classes}
        colours = {c.name: c.color[:7] for c in project.schema.active_classes}
        n_tiles = 0
        for image_id in (1, 2):
            items = project.items(image_id=image_id, level="tile")
            for iid, g, f in zip(items["item_id"], items["geometry"], items["field"]):
                project.set_label(int(iid), ids[NAMES[truth[image_id][f, g["row"], g["col"]]]], "alice")
                n_tiles += 1
    assert cli(["review-status", str(proj)]) == 0
    assert "image 1: 72/75 reviewed" in capsys.readouterr().out  # the three field items are not labelled yet

    # -- export everything; 2 cases cannot fill 3 splits, and the shell is told
    assert cli(["export", str(proj), "--format", "all", "--out", str(export), "--split", "0.7,0.15,0.15",
                "--quiet"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "warning: split 0.7/0.15/0.15 cannot be met with 2 case(s)" in err
    summary = json.loads((export / "export.json").read_text())
    assert summary["warnings"] and {e["key"] for e in summary["images"]} == {"fs-case_img1", "img2"}
    coco = json.loads((export / "coco" / "instances.json").read_text())
    assert all((export / "coco" / im["file_name"]).is_file() for im in coco["images"])
    manifest = pd.read_csv(export / "labels.csv")
    assert len(manifest) == n_tiles and str(tmp_path) not in (export / "labels.csv").read_text()  # de-identified

    # -- the de-identified CSV into a new project on "another machine": the images moved, --image-root finds them
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(str(fields[0]), moved / "renamed-case")
    shutil.move(str(slide[0]), moved / "renamed.tif")
    audit = tmp_path / "audit"
    assert cli(["import", str(export / "labels.csv"), "--project", str(audit)]) == 2
    assert "--image-root" in capsys.readouterr().err
    assert not (audit / "project.sqlite").exists()
    assert cli(["import", str(export / "labels.csv"), "--project", str(audit), "--image-root", str(moved)]) == 0
    assert f"imported {n_tiles} labelled items" in capsys.readouterr().out
    fingerprint = {e["key"]: e["fingerprint"] for e in summary["images"]}
    with Project.open(audit) as project:
        got = {im.path.name: content_fingerprint(im.path) for im in project.images()}
        assert got == {"renamed-case": fingerprint["fs-case_img1"], "renamed.tif": fingerprint["img2"]}
        assert {c.name: c.color[:7] for c in project.schema.active_classes} == colours
        assert project.n_items() == n_tiles

    # -- refit on the exported ImageFolder (crops embedded with the pack's embedding output)
    new = tmp_path / "packs" / "tiny-tiles-refit"
    assert cli(["train", str(export / "imagefolder"), "--base", str(pack), "--out", str(new), "-q", "--json"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    support = result["metrics"].get("support") or {}
    too_small = bool(support) and min(support.values()) < 10
    assert ("warning" in result["metrics"]) == too_small
    assert ("held-out set too small" in out.err) == too_small

    # -- compare the packs on the (moved) images of the audit project
    flips_csv = tmp_path / "flips.csv"
    assert cli(["compare", str(audit), "--base", str(pack), "--new", str(new), "--out", str(flips_csv),
                "--quiet"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    table = pd.read_csv(flips_csv)
    assert f"{len(table)} of" in text and "tiny-tiles@1.0.0 and tiny-tiles@1.1.0" in text
    assert len(table) > 5 and set(table["old"]) | set(table["new"]) <= {"red", "green"}  # the refit fixed the swap
    stores = sorted((audit / "predictions").glob("*.zarr"))
    assert len(stores) == 4 and all(PredictionStore(s).complete for s in stores)
    for row in table.itertuples():  # every flip now agrees with the truth
        image_truth = fields[1] if row.image_path.endswith("renamed-case") else slide[1][None]
        assert row.new == NAMES[image_truth[row.field, row.row, row.col]]
    assert np.isin(table["image_id"], [1, 2]).all()
