"""Measurements a cytologist reports: per field (or slide) and per region, area, cells and tiles per class, density.

One row per field of every image (the whole slide is field 0) and one per live region item (level ``"region"``,
polygon geometry; deleted regions -- "not a region" -- and drawings undone are left out,
:func:`cytoreview.review.edits.is_live_region`): ``area_mm2`` (a field's plane; a region's polygon, shoelace formula), the cells inside (points of level
``"cell"``; in a region, those whose centre lies inside the polygon) counted per current class (``cells:<class>``),
``cells_per_mm2`` and ``cells_per_mm2:<class>``, the tiles inside (a tile is inside a region when its centre is)
per class (``tiles:<class>``), and ``reviewed_fraction``: reviewed cells and tiles inside / all cells and tiles
inside (NaN when there are none). Unlabelled items count as ``(none)``. Coordinates are level-0 pixels; areas use the
image's µm/px.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cytoreview.review import edits

#: Class name used for an item without a label.
NO_LABEL = "(none)"
#: Leading columns of the table (per-class columns follow, sorted).
COLUMNS = ["image_id", "image_path", "case_id", "field", "region_id", "region_class", "area_mm2", "n_cells",
           "cells_per_mm2", "n_tiles", "reviewed_fraction"]


def polygon_area_px(coords) -> float:
    """Area of a ``[[y, x], ...]`` polygon in squared pixels (shoelace)."""
    yx = np.asarray(coords, dtype=np.float64)
    y, x = yx[:, 0], yx[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _inside(coords, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Which points ``(ys, xs)`` lie inside the ``[[y, x], ...]`` polygon."""
    if len(ys) == 0:
        return np.zeros(0, dtype=bool)
    from skimage.measure import points_in_poly

    return points_in_poly(np.c_[ys, xs], np.asarray(coords, dtype=np.float64))


def _names(schema, labels) -> list[str]:
    out = []
    for lab in labels:
        if not lab:
            out.append(NO_LABEL)
            continue
        try:
            out.append(schema.get(int(lab[0])).name)
        except Exception:  # noqa: BLE001 - a class gone from the schema keeps its id as name
            out.append(str(lab[0]))
    return out


def _row(base: dict, area_px: float, mpp: float, cells: pd.DataFrame, tiles: pd.DataFrame) -> dict:
    area_mm2 = area_px * mpp * mpp / 1e6
    row = {**base, "area_mm2": area_mm2, "n_cells": int(len(cells)), "n_tiles": int(len(tiles))}
    row["cells_per_mm2"] = len(cells) / area_mm2 if area_mm2 > 0 else math.nan
    for name, n in cells["class"].value_counts().items():
        row[f"cells:{name}"] = int(n)
        row[f"cells_per_mm2:{name}"] = n / area_mm2 if area_mm2 > 0 else math.nan
    for name, n in tiles["class"].value_counts().items():
        row[f"tiles:{name}"] = int(n)
    n = len(cells) + len(tiles)
    reviewed = int(cells["reviewed"].sum()) + int(tiles["reviewed"].sum())
    row["reviewed_fraction"] = reviewed / n if n else math.nan
    return row


def measure(project, image_ids=None) -> pd.DataFrame:
    """The measurement table of ``project`` (see the module docstring), optionally only of ``image_ids``.

    Returns
    -------
    pandas.DataFrame
        :data:`COLUMNS` then ``cells:<class>``, ``cells_per_mm2:<class>``, ``tiles:<class>`` (0 where none).
    """
    schema = project.schema
    rows = []
    wanted = None if image_ids is None else {int(i) for i in image_ids}
    for image in project.images():
        if wanted is not None and image.id not in wanted:
            continue
        items = project.items(image_id=image.id)
        mpp = float(image.mpp)
        items = items.assign(**{"class": _names(schema, items["label"].tolist()),
                                "reviewed": items["reviewed"].astype(bool)})
        cells = items[(items["level"] == "cell") & items["geometry"].map(lambda g: g.get("type") == "point")]
        cells = cells.assign(y=cells["geometry"].map(lambda g: float(g["y"])),
                             x=cells["geometry"].map(lambda g: float(g["x"])))
        tiles = items[items["level"] == "tile"]
        tiles = tiles.assign(y=(tiles["y_min"].astype(float) + tiles["y_max"].astype(float)) / 2,
                             x=(tiles["x_min"].astype(float) + tiles["x_max"].astype(float)) / 2)
        nar = schema.not_a_region(create=False)
        nar_id = None if nar is None else nar.id
        regions = items[(items["level"] == "region") & items["geometry"].map(lambda g: g.get("type") == "polygon")
                        & items["label"].map(lambda lab: edits.is_live_region(lab, nar_id))]  # deleted ones left out
        base = {"image_id": image.id, "image_path": str(image.path), "case_id": image.case_id}
        n_fields = max([int(f) + 1 for f in items["field"].tolist()] + [1])
        for field in range(n_fields):
            f_cells, f_tiles = cells[cells["field"] == field], tiles[tiles["field"] == field]
            area = float(image.plane_shape[0] * image.plane_shape[1]) if image.plane_shape else math.nan
            rows.append(_row({**base, "field": field, "region_id": None, "region_class": None}, area, mpp, f_cells,
                             f_tiles))
        for item_id, field, geometry, name in zip(regions["item_id"].tolist(), regions["field"].tolist(),
                                                  regions["geometry"].tolist(), regions["class"].tolist()):
            coords = geometry["coords"]
            f_cells, f_tiles = cells[cells["field"] == field], tiles[tiles["field"] == field]
            c_in = f_cells[_inside(coords, f_cells["y"].to_numpy(), f_cells["x"].to_numpy())]
            t_in = f_tiles[_inside(coords, f_tiles["y"].to_numpy(), f_tiles["x"].to_numpy())]
            rows.append(_row({**base, "field": int(field), "region_id": int(item_id), "region_class": name},
                             polygon_area_px(coords), mpp, c_in, t_in))
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=COLUMNS)
    extra = sorted(c for c in table.columns if c not in COLUMNS)
    for c in extra:
        if c.startswith(("cells:", "tiles:")):
            table[c] = table[c].fillna(0).astype(int)
        else:
            table[c] = table[c].fillna(0.0)
    table["region_id"] = table["region_id"].astype("Int64")
    return table[COLUMNS + extra]
