"""The measurement table: per field and per region, area in mm², cells and tiles per class, density, reviewed."""

from __future__ import annotations


import pytest

from cytoreview.review.measure import measure, polygon_area_px

MPP = 0.293


def test_fields_and_regions(project, image_id, tmp_path, capsys):
    classes = {c.name: c.id for c in project.schema.classes} if project.schema.classes else {}
    if not classes:
        for name in ("benign", "atypical"):
            project.schema.add(name, level="cell")
        classes = {c.name: c.id for c in project.schema.classes}
    benign, atypical = classes["benign"], classes["atypical"]
    cells = [(0, 100, 100, benign), (0, 110, 130, atypical), (0, 900, 1500, benign), (1, 50, 50, benign)]
    ids = project.add_items(image_id, [{"level": "cell", "field": f, "geometry": {"type": "point", "y": y, "x": x},
                                        "model_class": c} for f, y, x, c in cells])
    tiles = project.add_items(image_id, [{"level": "tile", "field": 0, "model_class": benign,
                                          "geometry": {"type": "tile", "row": 0, "col": c, "size_px": 256}}
                                         for c in range(8)])
    square = [[0, 0], [0, 300], [300, 300], [300, 0]]  # y, x: a 300 px square at the field's corner
    region = project.add_items(image_id, [{"level": "region", "field": 0,
                                           "geometry": {"type": "polygon", "coords": square}}])[0]
    project.set_label(region, atypical, "ann")
    project.set_label(ids[1], atypical, "ann")
    project.set_label(tiles[0], benign, "ann")

    table = measure(project).set_index(["field", "region_id"], drop=False)
    assert len(table) == 3  # two fields, one region
    f0 = table[(table["field"] == 0) & table["region_id"].isna()].iloc[0]
    assert f0["area_mm2"] == pytest.approx(1208 * 1928 * MPP**2 / 1e6)
    assert (f0["n_cells"], f0["cells:benign"], f0["cells:atypical"], f0["n_tiles"]) == (3, 2, 1, 8)
    assert f0["cells_per_mm2"] == pytest.approx(3 / f0["area_mm2"])
    assert f0["reviewed_fraction"] == pytest.approx(2 / 11)
    reg = table[table["region_id"] == region].iloc[0]
    assert reg["region_class"] == "atypical" and reg["area_mm2"] == pytest.approx(300 * 300 * MPP**2 / 1e6)
    assert (reg["n_cells"], reg["cells:benign"], reg["cells:atypical"]) == (2, 1, 1)
    assert reg["n_tiles"] == 1  # tile (0, 0) has its centre (128, 128) inside; tile (0, 1) at x 384 does not
    assert reg["cells_per_mm2:atypical"] == pytest.approx(1 / reg["area_mm2"])
    assert reg["reviewed_fraction"] == pytest.approx(2 / 3)
    f1 = table[(table["field"] == 1) & table["region_id"].isna()].iloc[0]
    assert (f1["n_cells"], f1["cells:atypical"], f1["n_tiles"], f1["reviewed_fraction"]) == (1, 0, 0, 0.0)

    from cytoreview import cli

    out = tmp_path / "table.csv"
    assert cli.main(["measure", str(project.folder), "--out", str(out)]) == 0
    import pandas as pd

    back = pd.read_csv(out)
    assert len(back) == 3 and "cells_per_mm2:benign" in back.columns
    assert "3 rows (1 regions)" in capsys.readouterr().out
    assert cli.main(["measure", str(project.folder), "--out", str(tmp_path)]) == 2  # a folder: one-line error


def test_polygon_area():
    assert polygon_area_px([[0, 0], [0, 10], [5, 10], [5, 0]]) == 50.0
