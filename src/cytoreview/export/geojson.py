"""QuPath GeoJSON: one FeatureCollection per plane (a slide, or one field of a field set).

The form current QuPath (0.4-0.6) imports with File > Import objects:

* ``geometry`` in level-0 pixel coordinates, ``[x, y]`` order, rings closed.
* ``properties.objectType``: ``"detection"`` for cells, ``"annotation"`` for tiles, regions and field labels.
* ``properties.classification``: ``{"name": <first label>, "color": [r, g, b]}`` (ints 0-255).
* Cells are Points (the clicked or predicted centre) by default, or discs of ``cell_diameter_um`` with
  ``cell_shape="disc"``; tiles are squares; field labels cover their whole field; regions are their polygons
  (self-intersecting polygons are repaired with shapely when it is installed, so every geometry is valid).
* Multi-label items: the classification is the first label; ``properties.cytoreview.labels`` has all of them.
* Each feature has a stable ``id`` (UUID-formatted: a fixed prefix and the item id in hex) and a ``cytoreview`` property with the item id,
  level, labels, source, reviewer, model, confidence and split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cytoreview.export.jsontext import CHUNK_ROWS, distinct_objects, float_texts, value_texts
from cytoreview.export.table import (
    NumberColumn,
    column,
    disc_rings,
    geometries,
    image_keys,
    outline_xy,
    plane_keys,
)
from cytoreview.export.writing import atomic_dir, os_error

_ID_PREFIX = "6b1f0a52-52d4-4c55-9d39-"  # the first four groups of a UUID; the item id fills the last



def _polygon_geometry(xy: list[tuple[float, float]]) -> dict:
    ring = [[float(x), float(y)] for x, y in xy]
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    geometry = {"type": "Polygon", "coordinates": [ring]}
    try:
        from shapely.geometry import mapping, shape
        from shapely.validation import make_valid
    except ImportError:  # shapely is optional at run time; squares and discs are valid by construction
        return geometry
    shp = shape(geometry)
    if shp.is_valid:
        return geometry
    fixed = make_valid(shp)
    polys = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type in ("Polygon", "MultiPolygon")]
    if not polys:
        return geometry
    from shapely.ops import unary_union

    return json.loads(json.dumps(mapping(unary_union(polys))))


def feature_id(item_id: int) -> str:
    """A stable UUID-formatted id for an item (namespace prefix + the item id in hex)."""
    return f"{_ID_PREFIX}{int(item_id) & 0xFFFFFFFFFFFF:012x}"


class _Features:
    """The GeoJSON feature of each row of a validated label table: as a dict (:meth:`feature`), or straight as its
    JSON text (:meth:`texts` for many rows, :meth:`text` for one; cells written as points are formatted a column
    at a time, the same text ``json.dumps(feature(i), separators=(",", ":"))`` gives, several times faster)."""

    def __init__(self, table: pd.DataFrame, colors: dict, cell_shape: str, cell_diameter_um: float):
        self.planes = plane_keys(table).tolist()
        self.keys = image_keys(table)
        self.geoms = geoms = geometries(table)
        self.colors = colors
        self.cols = cols = {c: column(table, c) for c in ("level", "labels", "source", "reviewer", "model")}
        cols.update({c: NumberColumn(table, c) for c in ("confidence", "mpp", "x_min", "y_min", "x_max", "y_max")})
        cols["item_id"] = table["item_id"].to_numpy()  # numbers as arrays: no Python object per row
        self.splits = column(table, "split") if "split" in table.columns else [None] * len(table)
        self.discs = None
        if cell_shape == "disc":
            pts = [i for i, g in enumerate(geoms) if g["type"] == "point"]
            if pts:
                x = np.array([float(geoms[i]["x"]) for i in pts])
                y = np.array([float(geoms[i]["y"]) for i in pts])
                r = np.array([cell_diameter_um / float(cols["mpp"][i]) / 2.0 for i in pts])
                self.discs = dict(zip(pts, disc_rings(x, y, r)))
        self._dumps = dumps = json.JSONEncoder(separators=(",", ":")).encode
        self._fast = (np.array(cols["level"], dtype=object) == "cell") & np.array(
            [g["type"] == "point" for g in geoms], dtype=bool) & np.fromiter(
            map(bool, cols["labels"]), dtype=bool, count=len(geoms))  # cells written as points: the text fast path
        self._confidence = cols["confidence"].values
        self._label_codes, first = distinct_objects(cols["labels"])
        lists = [cols["labels"][i] for i in first]  # the classification and the labels, once per label list
        self._class_texts = np.array([dumps({"name": v[0], "color": list(colors[v[0]])}) if v else ""
                                      for v in lists], dtype=object)
        self._labels_texts = np.array([dumps(list(v)) for v in lists], dtype=object)

    def feature(self, i: int) -> dict:
        """Row ``i``'s feature as a dict."""
        cols, geom = self.cols, self.geoms[i]
        labels = list(cols["labels"][i])
        level = cols["level"][i]
        if geom["type"] == "point":
            if self.discs is not None:
                ring = self.discs[i]
                geometry = {"type": "Polygon", "coordinates": [ring + [ring[0]]]}
            else:
                geometry = {"type": "Point", "coordinates": [float(geom["x"]), float(geom["y"])]}
        else:
            row = {k: cols[k][i] for k in ("x_min", "y_min", "x_max", "y_max")}
            geometry = _polygon_geometry(outline_xy(geom, row))
        conf = cols["confidence"][i]
        conf = None if conf is None else float(conf)
        props = {
            "objectType": "detection" if level == "cell" else "annotation",
            "classification": {"name": labels[0], "color": list(self.colors[labels[0]])},
            "isLocked": False,
            "cytoreview": {
                "item_id": int(cols["item_id"][i]),
                "image_key": self.keys[i],
                "level": level,
                "labels": labels,
                "source": cols["source"][i],
                "reviewer": cols["reviewer"][i],
                "model": cols["model"][i],
                "confidence": conf,
                "split": self.splits[i],
            },
        }
        if conf is not None:
            props["measurements"] = {"confidence": conf}
        return {"type": "Feature", "id": feature_id(cols["item_id"][i]), "geometry": geometry, "properties": props}

    def text(self, i: int) -> str:
        """Row ``i``'s feature as compact JSON text."""
        return self.texts(np.array([i], dtype=np.int64))[0]

    def texts(self, rows: np.ndarray) -> list[str]:
        """The features of table positions ``rows`` as compact JSON texts, in that order.

        Cells written as points are formatted from columns of texts made for all of ``rows`` at once
        (:mod:`cytoreview.export.jsontext`); every other feature is its encoded dict.
        """
        rows = np.asarray(rows, dtype=np.int64)
        fast = self._fast[rows] if self.discs is None else np.zeros(len(rows), dtype=bool)
        out = [None] * len(rows)
        pos = np.flatnonzero(fast)
        if len(pos):
            for j, text in zip(pos.tolist(), self._point_texts(rows[pos])):
                out[j] = text
        for j in np.flatnonzero(~fast).tolist():
            out[j] = self._dumps(self.feature(int(rows[j])))
        return out

    def _point_texts(self, rows: np.ndarray) -> list[str]:
        """The feature texts of cells written as points at table positions ``rows``."""
        cols, geoms, at = self.cols, self.geoms, rows.tolist()
        codes = self._label_codes[rows]
        class_texts, labels_texts = self._class_texts[codes].tolist(), self._labels_texts[codes].tolist()
        confidence = self._confidence[rows]
        conf = float_texts(confidence, nan="null")
        tails = [_TAIL_NONE if c != c else _TAIL.format(t) for c, t in zip(confidence.tolist(), conf)]
        item_ids = list(map(int, cols["item_id"][rows].tolist()))
        return list(map(_POINT_TEMPLATE.__mod__, zip(
            map(_HEX.format, [v & 0xFFFFFFFFFFFF for v in item_ids]),
            float_texts([float(geoms[i]["x"]) for i in at]), float_texts([float(geoms[i]["y"]) for i in at]),
            class_texts, map(int.__repr__, item_ids), value_texts([self.keys[i] for i in at]), labels_texts,
            value_texts([cols["source"][i] for i in at]), value_texts([cols["reviewer"][i] for i in at]),
            value_texts([cols["model"][i] for i in at]), conf, value_texts([self.splits[i] for i in at]), tails)))


_HEX = _ID_PREFIX + "{:012x}"
_TAIL_NONE = "}}}"
_TAIL = '}},"measurements":{{"confidence":{}}}}}}}'
# a cell written as a point; the labels text is given twice: the classification (first label) and the list
_POINT_TEMPLATE = ('{"type":"Feature","id":"%s","geometry":{"type":"Point","coordinates":[%s,%s]},"properties":{'
                   '"objectType":"detection","classification":%s,"isLocked":false,"cytoreview":{'
                   '"item_id":%s,"image_key":%s,"level":"cell","labels":%s,"source":%s,"reviewer":%s,'
                   '"model":%s,"confidence":%s,"split":%s%s')


def features_for(table: pd.DataFrame, colors: dict, *, cell_shape: str = "point", cell_diameter_um: float = 10.0,
                 order=None):
    """Yield ``(plane key, feature dict)`` for every row of a validated label table (in ``order``, row positions,
    when given), one at a time."""
    features = _Features(table, colors, cell_shape, cell_diameter_um)
    for i in range(len(features.geoms)) if order is None else order:
        yield features.planes[i], features.feature(i)


def write_geojson(
    table: pd.DataFrame,
    out_dir: Path,
    colors: dict,
    *,
    cell_shape: str = "point",
    cell_diameter_um: float = 10.0,
    progress=None,
    chunk: int = CHUNK_ROWS,
) -> list[Path]:
    """Write ``<out_dir>/<plane>.geojson`` for every plane that has items; return the paths written.

    Parameters
    ----------
    table : pandas.DataFrame
        Validated, filtered label table.
    out_dir : Path
        Folder for the files; built beside and swapped in when complete, replacing an earlier export's folder.
    colors : dict
        ``{class name: (r, g, b)}`` for every class in the table.
    cell_shape : {"point", "disc"}
        How cells are written.
    cell_diameter_um : float
        Disc diameter for ``cell_shape="disc"``.
    progress : callable, optional
        ``progress(done, total)`` after each plane.
    chunk : int
        Features formatted and written at a time.
    """
    if cell_shape not in ("point", "disc"):
        from cytoreview.errors import ExportError

        raise ExportError(f"cell_shape must be 'point' or 'disc', got {cell_shape!r}")
    features = _Features(table, colors, cell_shape, cell_diameter_um)
    plane_codes, plane_names = pd.factorize(np.asarray(features.planes, dtype=object))
    rank = np.empty(len(plane_names), dtype=np.int64)
    rank[np.argsort(np.asarray(plane_names, dtype=object), kind="stable")] = np.arange(len(plane_names))
    keys = rank[plane_codes]
    order = np.argsort(keys, kind="stable")  # plane by plane (sorted by name), rows in table order within a plane
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    groups = np.split(order, bounds) if len(order) else []
    n_planes = len(groups)
    out_dir = Path(out_dir)
    names: list[str] = []
    with atomic_dir(out_dir) as tmp:  # a re-export replaces the folder: no stale planes from an earlier export
        try:  # streamed a chunk of features at a time: memory holds one chunk, whatever the number of cells
            for rows in groups:
                names.append(f"{features.planes[int(rows[0])]}.geojson")
                with open(tmp / names[-1], "w", encoding="utf-8") as fh:
                    fh.write('{"type":"FeatureCollection","features":[')
                    for start in range(0, len(rows), chunk):
                        if start:
                            fh.write(",")
                        fh.write(",".join(features.texts(rows[start : start + chunk])))
                    fh.write("]}")
                if progress is not None:
                    progress(len(names), n_planes)
        except OSError as exc:  # the folder is not swapped in: the earlier export (if any) stays as it was
            raise os_error(out_dir / names[-1] if names else out_dir, exc) from exc
    return [out_dir / name for name in names]
