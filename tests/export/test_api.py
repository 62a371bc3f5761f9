"""export_labels options and failure handling."""

import json
import os

import pytest

from cytoreview.errors import ExportError
from cytoreview.export import export_labels, parse_formats
from cytoreview.export.writing import INCOMPLETE_MARKER


def test_all_formats_and_summary(table, images, tmp_path):
    seen = []
    out = export_labels(table, tmp_path / "out", "all", images=images, split=True, progress=lambda *a: seen.append(a))
    assert set(out) == {"csv", "parquet", "geojson", "coco", "mask", "imagefolder", "summary"}
    assert all(p.exists() for p in out.values())
    assert not (tmp_path / "out" / INCOMPLETE_MARKER).exists()
    assert not [p for p in (tmp_path / "out").rglob(".*partial*")]
    summary = json.loads(out["summary"].read_text())
    assert summary["filter"]["n_unsure"] == 1 and summary["filter"]["n_out"] == 9  # reviewed only
    assert {s[0] for s in seen} == {"csv", "parquet", "geojson", "coco", "mask", "imagefolder"}


def test_re_export_into_the_same_folder_leaves_no_stale_files(table, images, tmp_path):
    out_dir = tmp_path / "out"
    export_labels(table, out_dir, ("geojson", "coco", "mask"), images=images, select="all", split=(0.5, 0.5),
                  mask_formats=("tiff",))
    only_b = table[table["case_id"] == "B"]  # second export: one case, no splits
    out = export_labels(only_b, out_dir, ("geojson", "coco", "mask"), images=images, select="all",
                        mask_formats=("tiff",))
    assert sorted(p.name for p in out["geojson"].iterdir()) == ["B_img2.geojson"]
    assert sorted(p.name for p in out["coco"].parent.iterdir()) == ["images", "instances.json"]
    assert sorted(p.name for p in (out["coco"].parent / "images").iterdir()) == ["B_img2.png"]  # the planes it names
    assert sorted(p.name for p in out["mask"].iterdir()) == ["B_img2.tif", "classes.json"]
    assert not [p for p in out_dir.rglob(".*partial*")]


def test_unknown_format_and_bad_table(table, tmp_path):
    with pytest.raises(ExportError, match="unknown export format"):
        parse_formats("csv,pdf")
    bad = table.copy()
    bad.loc[0, "geometry"] = "{not json"
    with pytest.raises(ExportError, match="item 1"):
        export_labels(bad, tmp_path / "o", "geojson", select="all")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_out_dir(table, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ExportError, match=str(ro)):
            export_labels(table, ro / "out", "csv")
    finally:
        ro.chmod(0o700)


def test_out_dir_under_a_file(table, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="a_file"):
        export_labels(table, blocker / "out", "csv")


def test_failed_write_leaves_no_finished_file(table, tmp_path, monkeypatch):
    import errno

    import cytoreview.export.csv as csv_module

    def disk_full(frame, path, *args, **kwargs):
        with open(path, "w", encoding="utf-8") as fh:  # a partial file, then the disk fills
            fh.write("label,category\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv_module, "write_frame_csv", disk_full)
    with pytest.raises(ExportError, match="disk is full") as info:
        export_labels(table, tmp_path / "out", "csv")
    assert "labels.csv" in str(info.value)
    assert not (tmp_path / "out" / "labels.csv").exists()
    assert (tmp_path / "out" / INCOMPLETE_MARKER).exists()
    assert not list((tmp_path / "out").glob(".labels.csv*"))


def test_image_that_cannot_be_opened(table, tmp_path):
    def broken(path):
        raise OSError("truncated file")

    with pytest.raises(ExportError, match="caseA_fields"):
        export_labels(table, tmp_path / "out", "coco", images=broken)


def test_export_project_uses_label_table_and_schema_colors(table, images, tmp_path):
    from types import SimpleNamespace

    from cytoreview.export import export_project

    project = SimpleNamespace(
        label_table=lambda: table,
        schema=SimpleNamespace(classes=[SimpleNamespace(name="tumour", color="#00ff00")]),
    )
    out = export_project(project, tmp_path / "out", "geojson", select="all")
    fc = json.loads((out["geojson"] / "B_img2.geojson").read_text())
    tumour = [f for f in fc["features"] if f["properties"]["classification"]["name"] == "tumour"]
    assert tumour and all(f["properties"]["classification"]["color"] == [0, 255, 0] for f in tumour)


def test_nullable_boxes_of_field_items_are_filled_from_the_image(table, images, tmp_path):
    from shapely.geometry import shape

    t = table.copy()
    for col in ("x_min", "y_min", "x_max", "y_max"):
        t[col] = t[col].round().astype("Int64")  # as Project.label_table() returns them
    t.loc[t["level"] == "field", ["x_min", "y_min", "x_max", "y_max"]] = None
    out = export_labels(t, tmp_path / "out", ("geojson", "imagefolder", "csv"), images=images, select="all")
    fc = json.loads((out["geojson"] / "A_img1_f000.geojson").read_text())
    field = next(f for f in fc["features"] if f["properties"]["cytoreview"]["item_id"] == 1)
    assert shape(field["geometry"]).bounds == (0, 0, 160, 120)
    assert (out["imagefolder"] / "oncocytic epithelium" / "A_img1_f000_i1.png").exists()
