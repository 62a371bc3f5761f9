"""A project names the images it cannot trust: moved away, or another slide now at the recorded path (its cells and
labels belong to the slide that was there), in the API and in ``review-status``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from cytoreview import cli
from cytoreview.review import Project


@pytest.fixture
def project(tmp_path):
    rng = np.random.default_rng(0)
    fields = tmp_path / "fields"
    fields.mkdir()
    for f in range(2):
        PILImage.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(fields / f"f{f}.png")
    slide = tmp_path / "slide.tif"
    tifffile.imwrite(slide, rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), photometric="rgb")
    p = Project.open(tmp_path / "project", create=True)
    ids = {"fields": p.add_image(fields, kind="fields", mpp=0.293, plane_shape=(60, 80)),
           "slide": p.add_image(slide, kind="wsi", mpp=0.5, plane_shape=(64, 64))}
    yield p, ids, fields, slide
    p.close()


def test_untouched_images_have_no_problems_and_touching_a_file_is_not_a_change(project):
    p, _ids, fields, slide = project
    assert p.image_problems() == {}
    slide.touch()
    (fields / "f0.png").touch()
    assert p.image_problems() == {}  # the content fingerprint, not the file time, decides


def test_a_replaced_slide_and_a_rewritten_field_are_named_a_moved_one_is_missing(project, tmp_path):
    p, ids, fields, slide = project
    tifffile.imwrite(slide, np.zeros((64, 64, 3), np.uint8), photometric="rgb")  # another slide, same path
    problems = p.image_problems()
    assert set(problems) == {ids["slide"]} and "other content" in problems[ids["slide"]]
    rgb = 255 - np.asarray(PILImage.open(fields / "f1.png"))
    PILImage.fromarray(rgb).save(fields / "f1.png")
    assert set(p.image_problems()) == {ids["slide"], ids["fields"]}
    shutil.move(fields, tmp_path / "away")
    problems = p.image_problems()
    assert "is not there" in problems[ids["fields"]]
    assert p.image_problems([ids["fields"]], content=False) == {ids["fields"]: problems[ids["fields"]]}
    assert p.image_problems([ids["slide"]], content=False) == {}  # presence only: the slide is there


def test_review_status_names_them(project, capsys):
    p, ids, _fields, slide = project
    tifffile.imwrite(slide, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    p.add_items(ids["slide"], [{"level": "tile", "geometry": {"type": "tile", "row": 0, "col": 0, "size_px": 32}}])
    assert cli.main(["review-status", str(p.folder)]) == 0
    out = capsys.readouterr().out
    assert "! " in out and "slide.tif holds other content than when it was added" in out
    assert cli.main(["review-status", str(p.folder), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["image_problems"]) == [str(ids["slide"])]
