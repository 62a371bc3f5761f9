"""Every format read back by its real client."""

import json

import numpy as np
import pandas as pd
import pytest

from cytoreview.export import export_labels
from cytoreview.export.importers import read_manifest


def test_csv_and_parquet_round_trip(table, tmp_path):
    out = export_labels(table, tmp_path / "out", ("csv", "parquet"), select="all", split=True, seed=0)
    csv = pd.read_csv(out["csv"])
    pq = pd.read_parquet(out["parquet"])
    for col in ("label", "category", "database", "name", "path", "filename", "idx", "crop", "scaling", "x_min",
                "x_max", "y_min", "y_max", "mpp", "level", "source", "reviewer", "model", "confidence", "split"):
        assert col in csv.columns and col in pq.columns, col
    assert len(csv) == len(pq) == 10  # 12 items - unlabelled - unsure
    row = csv.set_index("idx").loc[1]
    assert row["label"] == "oncocytic epithelium|lymphocytes"
    assert row["category"] == "field_class" and not row["crop"]
    assert csv.set_index("idx").loc[10, "x_min"] == pytest.approx(100.25)
    # de-identified: no original paths anywhere
    text = out["csv"].read_text(encoding="utf-8")
    assert str(tmp_path) not in text and "caseB_slide" not in text
    assert set(csv["path"]) == {"A_img1", "B_img2"}
    assert set(pq["split"]) <= {"train", "validation", "test"}
    assert pq["split"].notna().all()
    # with paths
    out2 = export_labels(table, tmp_path / "out2", "csv", select="all", include_paths=True)
    assert "caseB_slide.tif" in out2["csv"].read_text(encoding="utf-8")


def test_manifest_importer_round_trip(table, tmp_path):
    out = export_labels(table, tmp_path / "out", ("csv", "parquet"), select="all", include_paths=True)
    for key in ("csv", "parquet"):
        imported = read_manifest(out[key])
        t = imported.table.set_index("item_id").sort_index()
        ref = table.set_index("item_id").drop(index=[6, 12]).sort_index()
        assert list(t.index) == list(ref.index)
        assert t["labels"].tolist() == ref["labels"].tolist()
        assert t["label_ids"].tolist() == ref["label_ids"].tolist()
        assert t["level"].tolist() == ref["level"].tolist()
        assert t["field"].tolist() == ref["field"].tolist()
        assert [json.loads(g) for g in t["geometry"]] == [json.loads(g) for g in ref["geometry"]]
        assert t["image_path"].tolist() == ref["image_path"].tolist()
        assert (t["source"] == f"import:{out[key].name}").all()
        assert t["reviewed"].tolist() == ref["reviewed"].tolist()
        imgs = imported.images.set_index("image_id")
        assert imgs.loc[1, "kind"] == "fields" and imgs.loc[2, "kind"] == "wsi"
        assert imgs.loc[2, "mpp"] == pytest.approx(0.5)


def test_coco_opens_in_pycocotools(table, images, tmp_path):
    from pycocotools.coco import COCO

    out = export_labels(table, tmp_path / "out", "coco", images=images, select="all", cell_diameter_um=8.0)
    coco = COCO(str(out["coco"]))
    cats = {c["name"]: c for c in coco.loadCats(coco.getCatIds())}
    assert cats["tumour"]["id"] == 5 and cats["tumour"]["class_id"] == 4
    wsi = next(im for im in coco.dataset["images"] if im["plane"] == "B_img2")
    assert (wsi["width"], wsi["height"]) == (512, 512)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[wsi["id"]]))
    by_item = {a["item_id"]: a for a in anns}
    # a cell: disc bbox of 8 um = 16 px at 0.5 um/px, centred on the point, with one keypoint
    cell = by_item[10]
    assert cell["bbox"][2] == pytest.approx(16.0, abs=0.1)
    assert cell["bbox"][0] + cell["bbox"][2] / 2 == pytest.approx(100.25, abs=0.1)
    assert cell["keypoints"][:2] == [100.25, 200.5] and cell["num_keypoints"] == 1
    # a polygon region: mask area close to the shoelace area
    region = by_item[9]
    mask = coco.annToMask(region)
    assert mask.shape == (512, 512)
    assert abs(int(mask.sum()) - region["area"]) / region["area"] < 0.05
    tile = by_item[7]
    assert coco.annToMask(tile)[:128, :128].all() and tile["area"] == pytest.approx(128 * 128)
    # field labels are image-level
    f0 = next(im for im in coco.dataset["images"] if im["plane"] == "A_img1_f000")
    assert f0["labels"] == ["oncocytic epithelium", "lymphocytes"]
    assert (f0["width"], f0["height"]) == (160, 120)
    assert not [a for a in coco.dataset["annotations"] if a["item_id"] in (1, 2)]


def test_coco_writes_per_split_files(table, images, tmp_path):
    from pycocotools.coco import COCO

    out = export_labels(table, tmp_path / "out", "coco", images=images, select="all", split=(0.5, 0.5))
    files = sorted(p.name for p in out["coco"].parent.iterdir())
    assert "instances.json" in files and "instances_train.json" in files
    train = COCO(str(out["coco"].parent / "instances_train.json"))
    assert all(im["split"] == "train" for im in train.dataset["images"])


def test_geojson_is_valid_qupath(table, tmp_path):
    from shapely.geometry import shape

    table = table.copy()
    bowtie = [[0, 0], [0, 100], [100, 0], [100, 100]]  # self-intersecting: must be repaired
    table.loc[table["item_id"] == 9, "geometry"] = json.dumps({"type": "polygon", "coords": bowtie})
    out = export_labels(table, tmp_path / "out", "geojson", select="all", colors={"tumour": "#ff0000"})
    files = sorted(p.name for p in out["geojson"].iterdir())
    assert files == ["A_img1_f000.geojson", "A_img1_f001.geojson", "A_img1_f002.geojson", "B_img2.geojson"]
    fc = json.loads((out["geojson"] / "B_img2.geojson").read_text())
    assert fc["type"] == "FeatureCollection"
    types = {}
    for feat in fc["features"]:
        geom = shape(feat["geometry"])
        assert geom.is_valid
        props = feat["properties"]
        color = props["classification"]["color"]
        assert len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color)
        types[props["cytoreview"]["item_id"]] = (props["objectType"], feat["geometry"]["type"], props)
    assert types[10][:2] == ("detection", "Point")
    assert types[7][:2] == ("annotation", "Polygon")
    assert types[7][2]["classification"] == {"name": "tumour", "color": [255, 0, 0]}
    cell = next(f for f in fc["features"] if f["properties"]["cytoreview"]["item_id"] == 10)
    assert cell["geometry"]["coordinates"] == [100.25, 200.5]  # x, y in level-0 pixels
    tile = shape(next(f for f in fc["features"] if f["properties"]["cytoreview"]["item_id"] == 7)["geometry"])
    assert tile.bounds == (0, 0, 128, 128)
    f0 = json.loads((out["geojson"] / "A_img1_f000.geojson").read_text())
    field = next(f for f in f0["features"] if f["properties"]["cytoreview"]["item_id"] == 1)
    assert shape(field["geometry"]).bounds == (0, 0, 160, 120)
    assert field["properties"]["cytoreview"]["labels"] == ["oncocytic epithelium", "lymphocytes"]


def test_geojson_importer_round_trip(table, tmp_path):
    from cytoreview.export.importers import import_labels

    out = export_labels(table, tmp_path / "out", "geojson", select="all", cell_shape="disc")
    got = import_labels(out["geojson"] / "B_img2.geojson", mpp=0.5).table.set_index("item_id").sort_index()
    ref = table[(table["image_id"] == 2) & (table["labels"].map(len) > 0)].set_index("item_id").sort_index()
    assert list(got.index) == list(ref.index)
    assert got["labels"].tolist() == ref["labels"].tolist()
    assert got["level"].tolist() == ref["level"].tolist()
    tile = json.loads(got.loc[7, "geometry"])
    assert tile == {"type": "tile", "row": 0, "col": 0, "size_px": 128}
    cell = json.loads(got.loc[10, "geometry"])  # disc -> centroid
    assert cell["x"] == pytest.approx(100.25, abs=0.01) and cell["y"] == pytest.approx(200.5, abs=0.01)
    fields = import_labels(out["geojson"] / "A_img1_f002.geojson").table
    assert (fields["field"] == 2).all()


def test_masks_tiff_and_ome_zarr(table, images, tmp_path):
    import tifffile
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    out = export_labels(table, tmp_path / "out", "mask", images=images, select="all", cell_diameter_um=10.0)
    legend = json.loads((out["mask"] / "classes.json").read_text())["classes"]
    value = {e["name"]: e["value"] for e in legend}
    assert value == {"clean background": 1, "oncocytic epithelium": 2, "lymphocytes": 3, "tumour": 4}
    with tifffile.TiffFile(out["mask"] / "B_img2.tif") as tif:
        page = tif.pages[0]
        assert page.is_tiled and page.compression != 1
        mask = page.asarray()
    assert mask.shape == (512, 512)
    assert (mask[:128, :128] == value["tumour"]).mean() > 0.9  # tile (a cell disc may sit on it)
    assert mask[130:250, 260:380].mean() == value["clean background"]  # model-labelled tile (select="all")
    assert mask[400, 400] == value["tumour"]  # inside the polygon
    assert mask[200, 100] == value["lymphocytes"]  # cell disc centre
    assert (mask[190:211, 90:111] == value["lymphocytes"]).sum() == pytest.approx(np.pi * 10**2, rel=0.2)
    assert mask[500, 20] == 0
    # field: multi-label field paints its first label, cells on top
    f0 = tifffile.imread(out["mask"] / "A_img1_f000.tif")
    assert f0.shape == (120, 160) and f0[0, 0] == value["oncocytic epithelium"] and f0[40, 50] == value["lymphocytes"]

    reader = Reader(parse_url(str(out["mask"] / "B_img2.ome.zarr")))
    nodes = list(reader())
    image_node = nodes[0]
    rgb = np.asarray(image_node.data[0])
    assert rgb.shape == (3, 512, 512)
    assert np.array_equal(np.moveaxis(rgb, 0, -1), images[2].levels[0])
    label_nodes = [n for n in nodes if n.load(Label)]
    assert label_nodes, "ome_zarr found no label image"
    lab = np.asarray(label_nodes[0].data[0])
    assert np.array_equal(lab, mask)
    props = label_nodes[0].metadata.get("properties") or {}
    assert {v: p["class"] for v, p in props.items()} == {v: n for n, v in value.items()}


def test_mask_downsample_and_single_class(table, images, tmp_path):
    import tifffile

    out = export_labels(table, tmp_path / "out", "mask", images=images, select="all", mask_classes=["tumour"],
                        mask_downsample=4, mask_formats=("tiff",))  # fmt: skip
    mask = tifffile.imread(out["mask"] / "B_img2.tif")
    assert mask.shape == (128, 128)
    assert set(np.unique(mask)) == {0, 1}  # CAMELYON-style: tumour = 1
    assert mask[:32, :32].all() and mask[40, 80] == 0
    assert not list(out["mask"].glob("*.ome.zarr"))
