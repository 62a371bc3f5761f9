"""End to end with the real Project store and image readers."""

import json

import numpy as np
import pandas as pd
import pytest

import cytoreview.io as io  # our own packages: a broken import must fail the run, not skip it
import cytoreview.review as review


@pytest.fixture
def real_project(tmp_path):
    import tifffile
    from PIL import Image as PILImage

    fields = tmp_path / "case_A"
    fields.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        PILImage.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(fields / f"field_{i:03d}.jpg")
    slide = tmp_path / "slide_B.tif"
    base = rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    px_per_cm = 1e4 / 0.5
    with tifffile.TiffWriter(slide) as tif:
        tif.write(base, tile=(256, 256), subifds=1, resolution=(px_per_cm, px_per_cm), resolutionunit="CENTIMETER",
                  photometric="rgb")
        tif.write(base[::2, ::2], tile=(256, 256), subfiletype=1, photometric="rgb")

    p = review.Project.open(tmp_path / "proj", create=True)
    bg = p.schema.add("background", color="#e0e0e0", hotkey="1", level="tile")
    ly = p.schema.add("lymphocyte", color="#3040d0", hotkey="2", level="cell")
    tu = p.schema.add("tumour / atypical", color="#d03030", hotkey="3", level="region")
    a = p.add_image(fields, kind="fields", mpp=0.293, case_id="A")
    b = p.add_image(slide, kind="wsi", mpp=0.5, case_id="B")
    ia = p.add_items(a, [
        dict(level="field", field=0, geometry={"type": "field"}),
        dict(level="cell", field=1, geometry={"type": "point", "y": 100, "x": 150}, model_class=ly.id,
             model_prob=0.8, model="cells@1.0.0"),
        dict(level="tile", field=1, geometry={"type": "tile", "row": 0, "col": 0, "size_px": 64},
             model_class=bg.id, model_prob=0.95, model="tiles@1.0.0"),
    ])
    ib = p.add_items(b, [
        dict(level="tile", geometry={"type": "tile", "row": 1, "col": 1, "size_px": 256}, model_class=bg.id,
             model_prob=0.6, model="tiles@1.0.0"),
        dict(level="region", geometry={"type": "polygon", "coords": [[500, 500], [500, 800], [800, 650]]}),
        dict(level="cell", geometry={"type": "point", "y": 300, "x": 310}, model_class=ly.id, model_prob=0.9,
             model="cells@1.0.0"),
    ])
    p.set_label(ia[0], [ly.id, tu.id], "ana")
    p.accept(ia[1], "ana")
    p.set_label(ia[2], [review.UNSURE], "ana")
    p.set_label(ib[0], [tu.id], "ana")
    p.set_label(ib[1], [tu.id], "ana")
    p.accept(ib[2], "ana")
    yield p, tmp_path
    p.close()


def test_export_project_all_formats(real_project, tmp_path):
    from pycocotools.coco import COCO

    from cytoreview.export import export_project

    project, root = real_project
    out = export_project(project, tmp_path / "out", "all", split=(0.5, 0.5), crop_um=16)
    csv = pd.read_csv(out["csv"])
    assert len(csv) == 5  # 6 reviewed, 1 unsure left out
    assert "unsure" not in "|".join(csv["label"])
    assert csv.groupby("name")["split"].nunique().max() == 1
    assert str(root) not in out["csv"].read_text()
    coco = COCO(str(out["coco"]))
    assert {c["name"] for c in coco.dataset["categories"]} == {"lymphocyte", "tumour / atypical"}
    f0 = next(im for im in coco.dataset["images"] if im["plane"].endswith("_f000"))
    assert (f0["width"], f0["height"]) == (320, 240) and set(f0["labels"]) == {"lymphocyte", "tumour / atypical"}
    gj = json.loads(next(out["geojson"].glob("B_img*.geojson")).read_text())
    colors = {f["properties"]["classification"]["name"]: f["properties"]["classification"]["color"]
              for f in gj["features"]}
    assert colors["tumour / atypical"] == [208, 48, 48]  # the schema's colour
    folders = {p.name for p in out["imagefolder"].rglob("*") if p.is_dir()}
    assert "tumour _ atypical" in folders  # "/" made safe
    # the field crop equals the field's pixels as the reader decodes them
    image = io.open_image(root / "case_A")
    crop_path = next(out["imagefolder"].rglob("*_f000_i*.png"))
    from PIL import Image as PILImage

    assert np.array_equal(np.asarray(PILImage.open(crop_path)), image.read_region(0, 0, 240, 320, field=0))
    mask = next(out["mask"].glob("B_img*.tif"))
    import tifffile

    m = tifffile.imread(mask)
    legend = {e["name"]: e["value"] for e in json.loads((out["mask"] / "classes.json").read_text())["classes"]}
    assert m.shape == (1024, 1024) and m[300, 300] == legend["tumour / atypical"]


def test_cli_export_on_real_project(real_project, tmp_path, capsys):
    import argparse

    from cytoreview.export import cli

    _, root = real_project
    parser = argparse.ArgumentParser(prog="cytoreview")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", str(root / "proj"), "--format", "csv,coco", "--out", str(tmp_path / "o"),
                              "-q"])
    assert args.func(args) == 0
    assert len(pd.read_csv(tmp_path / "o" / "labels.csv")) == 5
