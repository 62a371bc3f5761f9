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


def test_streamed_texts_of_a_real_project_are_json_dumps_of_the_dicts(tmp_path):
    """A real project with odd class names, a reviewer and case id with quotes, a cell without a model call (no
    probability), a corrected cell, a tile, a region and a two-label field: every GeoJSON and COCO file is compact ``json.dumps`` text
    of the same content the dict path (features_for / build_coco) gives, and the CSV is pandas' ``to_csv`` of the
    manifest, byte for byte."""
    import tifffile

    from cytoreview.export import export_project
    from cytoreview.export.coco import build_coco
    from cytoreview.export.csv import manifest
    from cytoreview.export.filters import filter_items
    from cytoreview.export.geojson import features_for
    from cytoreview.export.images import ImageSource
    from cytoreview.export.table import attach_geometries, class_colors, class_order, validate_table

    slide = tmp_path / "slide_B.tif"
    base = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    tifffile.imwrite(slide, base, tile=(256, 256), photometric="rgb", resolution=(2e4, 2e4),
                     resolutionunit="CENTIMETER")
    p = review.Project.open(tmp_path / "proj", create=True)
    try:
        odd = p.schema.add('lympho "T", CD8+ é', color="#3040d0", hotkey="1", level="cell")
        tu = p.schema.add("tumour / atypical", color="#d03030", hotkey="2", level="region")
        b = p.add_image(slide, kind="wsi", mpp=0.5, case_id='B "x", 2')
        ids = p.add_items(b, [
            dict(level="cell", geometry={"type": "point", "y": 300.125, "x": 310.5}, model_class=odd.id,
                 model_prob=0.912345678, model="cells@1.0.0"),
            dict(level="cell", geometry={"type": "point", "y": 3, "x": 2}),  # no model call: no probability
            dict(level="cell", geometry={"type": "point", "y": 10.001, "x": 1000.999}, model_class=tu.id,
                 model_prob=0.5, model="cells@1.0.0"),
            dict(level="tile", geometry={"type": "tile", "row": 1, "col": 1, "size_px": 256}, model_class=tu.id,
                 model_prob=0.6, model="tiles@1.0.0"),
            dict(level="region", geometry={"type": "polygon", "coords": [[500, 500], [500, 800], [800, 650]]}),
            dict(level="field", geometry={"type": "field"}),
        ])
        p.accept(ids[0], "ana")
        p.set_label(ids[1], [odd.id], 'Dr. "M", ü')
        p.set_label(ids[2], [odd.id], "ana")
        p.accept(ids[3], "ana")
        p.set_label(ids[4], [tu.id], "ana")
        p.set_label(ids[5], [tu.id, odd.id], "ana")
        out = export_project(p, tmp_path / "out", ("csv", "geojson", "coco"))
        table = p.label_table()
    finally:
        p.close()

    def dumps(value):
        return json.dumps(value, separators=(",", ":"))

    data, _ = filter_items(validate_table(table), "reviewed")
    assert len(data) == 6 and data["confidence"].isna().any()
    data = attach_geometries(data)
    palette = class_colors([n for _, n in class_order(data)], {odd.name: "#3040d0", tu.name: "#d03030"})
    expected: dict = {}
    for plane, feature in features_for(data, palette):
        expected.setdefault(plane, []).append(feature)
    files = sorted(out["geojson"].glob("*.geojson"))
    assert [f.stem for f in files] == sorted(expected)
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert text == dumps({"type": "FeatureCollection", "features": expected[path.stem]})
    with ImageSource(None) as source:
        reference = build_coco(data, source)
    text = out["coco"].read_text(encoding="utf-8")
    written = json.loads(text)
    assert text == dumps(written)  # compact json.dumps text, numbers in repr form
    for key in ("categories", "annotations"):
        assert written[key] == reference[key]
    assert [{k: v for k, v in im.items() if k != "file_name"} for im in written["images"]] == [
        {k: v for k, v in im.items() if k != "file_name"} for im in reference["images"]]
    assert {a["num_keypoints"] for a in written["annotations"]} == {0, 1}
    manifest(data).to_csv(tmp_path / "pandas.csv", index=False, encoding="utf-8")
    assert out["csv"].read_bytes() == (tmp_path / "pandas.csv").read_bytes()
