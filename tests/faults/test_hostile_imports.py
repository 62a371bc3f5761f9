"""Hostile label sets: every row and geometry validated (one clear error naming file and row/feature, no project left
behind), off-image and invalid geometry clipped / repaired with a warning, one image per file however it is spelled,
empty labels not counted, links out of an ImageFolder not followed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.faults.conftest import child_env
from tests.inference.conftest import blob_slide, write_tiff

from cytoreview.errors import ExportError
from cytoreview.export.to_project import import_into_project


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cytoreview.cli", *map(str, args)], capture_output=True, text=True,
                          env=child_env(), timeout=120)


@pytest.fixture
def slide(tmp_path):
    """A 96 x 128 px slide."""
    return write_tiff(tmp_path / "slide.tif", blob_slide(96, 128, seed=2))


def _csv(path, rows, header="label,path,x_min,y_min,x_max,y_max"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _geojson(path, *geometries, name="tumour"):
    features = [{"type": "Feature", "geometry": g, "properties": {"classification": {"name": name}}}
                for g in geometries]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    return path


def _refused(labelset, project, *words, **options):
    with pytest.raises(ExportError) as info:
        import_into_project(labelset, project, **options)
    message = str(info.value)
    assert labelset.name in message, message
    for word in words:
        assert word in message, message
    assert not project.exists(), "a refused import left a project behind"
    return message


# ------------------------------------------------------------------ CSV rows
@pytest.mark.parametrize(
    "row, words",
    [("tumour,{slide},abc,1,5,5", ["row 2", "x_min", "'abc'"]),
     ("tumour,{slide},1,1,1e300,5", ["row 2", "x_max", "finite"]),
     ("tumour,{slide},inf,1,5,5", ["row 2", "x_min"]),
     ("tumour,{slide},9,9,1,1", ["row 2", "inverted"])],
    ids=["text", "1e300", "inf", "inverted"],
)
def test_bad_csv_row_is_one_clear_error_and_leaves_no_project(tmp_path, slide, row, words):
    good = f"normal,{slide},1,1,5,5"
    labelset = _csv(tmp_path / "labels.csv", [good, row.format(slide=slide)])
    _refused(labelset, tmp_path / "proj", *[w.replace("row 2", "row 3") for w in words])
    result = _cli("import", labelset, "--project", tmp_path / "proj")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "row 3" in result.stderr, result.stderr
    assert not (tmp_path / "proj").exists()


def test_csv_with_image_option_is_a_clear_error(tmp_path, slide):
    labelset = _csv(tmp_path / "labels.csv", [f"tumour,{slide},1,1,5,5"])
    result = _cli("import", labelset, "--project", tmp_path / "proj", "--image", slide)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "GeoJSON only" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "proj").exists()


def test_empty_label_is_not_counted_as_labelled(tmp_path, slide):
    labelset = _csv(tmp_path / "labels.csv", [f"tumour,{slide},1,1,5,5", f",{slide},10,10,20,20"])
    warnings = []
    project, n = import_into_project(labelset, tmp_path / "proj", warnings=warnings)
    with project:
        assert n == 1
        items = project.items()
        assert len(items) == 2 and items["label"].notna().sum() == 1
    assert any("no label" in w for w in warnings), warnings
    result = _cli("import", _csv(tmp_path / "only_empty.csv", [f",{slide},10,10,20,20"]), "--project", tmp_path / "p2")
    assert "imported 0 labelled items" in result.stdout, (result.stdout, result.stderr)


def test_one_image_under_two_spellings_is_one_image(tmp_path, slide):
    (tmp_path / "sub").mkdir()
    other = tmp_path / "sub" / ".." / "slide.tif"
    link = tmp_path / "link.tif"
    os.symlink(slide, link)
    labelset = _csv(tmp_path / "labels.csv", [f"tumour,{slide},1,1,5,5", f"normal,{other},10,10,20,20",
                                              f"normal,{link},30,30,40,40"])
    project, n = import_into_project(labelset, tmp_path / "proj")
    with project:
        assert n == 3 and len(project.images()) == 1


def test_a_copy_of_an_image_is_one_image_with_a_warning(tmp_path, slide):
    copy = tmp_path / "copy.tif"
    shutil.copy(slide, copy)
    labelset = _csv(tmp_path / "labels.csv", [f"tumour,{slide},1,1,5,5", f"normal,{copy},10,10,20,20"])
    warnings = []
    project, n = import_into_project(labelset, tmp_path / "proj", warnings=warnings)
    with project:
        assert n == 2 and len(project.images()) == 1
    assert any("same content" in w for w in warnings), warnings


# ------------------------------------------------------------------ GeoJSON geometry
@pytest.mark.parametrize(
    "geometry, words",
    [({"type": "Polygon", "coordinates": [[]]}, ["feature 1", "empty"]),
     ({"type": "Polygon", "coordinates": []}, ["feature 1", "no rings"]),
     ({"type": "Point", "coordinates": ["a", "b"]}, ["feature 1", "'a'", "not a number"]),
     ({"type": "Point", "coordinates": [1e300, 5]}, ["feature 1", "finite"]),
     ({"type": "Polygon", "coordinates": [[[0, 0], [1e300, 0], [1e300, 5], [0, 0]]]}, ["feature 1", "finite"]),
     ({"type": "Polygon", "coordinates": [[[0, 0], [5, 5], [0, 0]]]}, ["feature 1", "3 distinct"]),
     ({"type": "Point", "coordinates": 7}, ["feature 1", "[x, y]"])],
    ids=["empty-ring", "no-rings", "string-coords", "1e300-point", "1e300-polygon", "degenerate", "scalar"],
)
def test_bad_geojson_geometry_is_one_clear_error_and_leaves_no_project(tmp_path, slide, geometry, words):
    good = {"type": "Point", "coordinates": [5, 5]}
    labelset = _geojson(tmp_path / "objects.geojson", good, geometry)
    _refused(labelset, tmp_path / "proj", *words, image_path=slide)
    result = _cli("import", labelset, "--project", tmp_path / "proj", "--image", slide)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "feature 1" in result.stderr, result.stderr


def test_off_image_geometry_is_clipped_or_left_out_with_a_warning(tmp_path, slide):
    inside = {"type": "Polygon", "coordinates": [[[10, 10], [30, 10], [30, 30], [10, 30], [10, 10]]]}
    across = {"type": "Polygon", "coordinates": [[[100, 80], [200, 80], [200, 200], [100, 200], [100, 80]]]}
    off = {"type": "Polygon", "coordinates": [[[5000, 5000], [6000, 5000], [6000, 6000], [5000, 5000]]]}
    far = {"type": "Point", "coordinates": [-40, 20]}
    labelset = _geojson(tmp_path / "objects.geojson", inside, across, off, far)
    warnings = []
    project, n = import_into_project(labelset, tmp_path / "proj", image_path=slide, warnings=warnings)
    with project:
        items = project.items()
        assert n == 2 and len(items) == 2
        assert items["x_max"].max() <= 128 and items["y_max"].max() <= 96 and items["x_min"].min() >= 0
    assert any("2 item(s) lie entirely outside" in w for w in warnings), warnings
    assert any("1 region(s) reaching past the image edge were clipped" in w for w in warnings), warnings
    result = _cli("import", labelset, "--project", tmp_path / "proj2", "--image", slide)
    assert result.returncode == 0 and "entirely outside" in result.stderr, result.stderr


def test_self_intersecting_polygon_is_repaired_with_a_warning(tmp_path, slide):
    from shapely.geometry import Polygon

    bowtie = {"type": "Polygon", "coordinates": [[[10, 10], [50, 50], [50, 10], [10, 50], [10, 10]]]}
    labelset = _geojson(tmp_path / "objects.geojson", bowtie)
    warnings = []
    project, n = import_into_project(labelset, tmp_path / "proj", image_path=slide, warnings=warnings)
    with project:
        geometry = project.items().iloc[0]["geometry"]
    assert n == 1 and geometry["type"] == "polygon"
    assert Polygon([(x, y) for y, x in geometry["coords"]]).is_valid
    assert any("make_valid" in w and "feature 0" in w for w in warnings), warnings


# ------------------------------------------------------------------ ImageFolder links
def test_imagefolder_links_out_of_the_root_are_not_followed(tmp_path):
    root = tmp_path / "dataset"
    (root / "tumour").mkdir(parents=True)
    (root / "normal").mkdir()
    secret = tmp_path / "outside" / "private.png"
    secret.parent.mkdir()
    PILImage.fromarray(np.zeros((8, 8, 3), np.uint8)).save(secret)
    PILImage.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(root / "tumour" / "a.png")
    os.symlink(secret, root / "normal" / "leak.png")
    os.symlink(secret.parent, root / "normal" / "folder")  # a linked folder too
    os.symlink(root / "tumour" / "a.png", root / "normal" / "same.png")  # inside: the same image, read once
    warnings = []
    project, n = import_into_project(root, tmp_path / "proj", warnings=warnings)
    with project:
        paths = [str(image.path) for image in project.images()]
    assert n == 1 and len(paths) == 1 and "outside" not in paths[0], paths
    assert any("leading out of the folder" in w and "leak.png" in w for w in warnings), warnings
    assert any("same file" in w for w in warnings), warnings
