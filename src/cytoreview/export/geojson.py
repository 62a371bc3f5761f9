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

from cytoreview.export.table import (
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
    JSON text (:meth:`text`; a cell point is formatted from pieces encoded once per distinct value, the same text
    ``json.dumps(feature(i), separators=(",", ":"))`` gives, several times faster)."""

    def __init__(self, table: pd.DataFrame, colors: dict, cell_shape: str, cell_diameter_um: float):
        self.planes = plane_keys(table).tolist()
        self.keys = image_keys(table)
        self.geoms = geoms = geometries(table)
        self.colors = colors
        self.cols = cols = {c: column(table, c) for c in (
            "item_id", "level", "labels", "source", "reviewer", "model", "confidence", "mpp", "x_min", "y_min",
            "x_max", "y_max")}
        self.splits = column(table, "split") if "split" in table.columns else [None] * len(table)
        self.discs = None
        if cell_shape == "disc":
            pts = [i for i, g in enumerate(geoms) if g["type"] == "point"]
            if pts:
                x = np.array([float(geoms[i]["x"]) for i in pts])
                y = np.array([float(geoms[i]["y"]) for i in pts])
                r = np.array([cell_diameter_um / float(cols["mpp"][i]) / 2.0 for i in pts])
                self.discs = dict(zip(pts, disc_rings(x, y, r)))
        self._json: dict = {}  # distinct value -> its JSON text
        self._dumps = json.JSONEncoder(separators=(",", ":")).encode

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

    def _enc(self, value) -> str:
        key = (type(value), value)
        text = self._json.get(key)
        if text is None:
            text = self._json[key] = self._dumps(value)
        return text

    def text(self, i: int) -> str:
        """Row ``i``'s feature as compact JSON text."""
        geom, cols = self.geoms[i], self.cols
        level = cols["level"][i]
        if geom["type"] != "point" or self.discs is not None or level != "cell":
            return self._dumps(self.feature(i))
        labels = cols["labels"][i]
        texts = self._json.get(("labels", tuple(labels)))
        if texts is None:  # the classification and the labels, per distinct label set
            texts = self._json[("labels", tuple(labels))] = (
                self._dumps({"name": labels[0], "color": list(self.colors[labels[0]])}), self._dumps(list(labels)))
        classification, labels_text = texts
        conf = cols["confidence"][i]
        conf_text = "null" if conf is None else float.__repr__(float(conf))
        item_id = int(cols["item_id"][i])
        tail = "}}}" if conf is None else f'}},"measurements":{{"confidence":{conf_text}}}}}}}'
        return (f'{{"type":"Feature","id":"{feature_id(item_id)}","geometry":{{"type":"Point","coordinates":['
                f'{float.__repr__(float(geom["x"]))},{float.__repr__(float(geom["y"]))}]}},"properties":{{'
                f'"objectType":"detection","classification":{classification},"isLocked":false,"cytoreview":{{'
                f'"item_id":{item_id},"image_key":{self._enc(self.keys[i])},"level":"cell","labels":{labels_text},'
                f'"source":{self._enc(cols["source"][i])},"reviewer":{self._enc(cols["reviewer"][i])},'
                f'"model":{self._enc(cols["model"][i])},"confidence":{conf_text},'
                f'"split":{self._enc(self.splits[i])}{tail}')


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
    """
    if cell_shape not in ("point", "disc"):
        from cytoreview.errors import ExportError

        raise ExportError(f"cell_shape must be 'point' or 'disc', got {cell_shape!r}")
    features = _Features(table, colors, cell_shape, cell_diameter_um)
    planes = np.asarray(features.planes, dtype=object)
    order = np.argsort(planes, kind="stable").tolist()  # plane by plane, rows in table order within a plane
    n_planes = len(set(features.planes))
    out_dir = Path(out_dir)
    names: list[str] = []
    with atomic_dir(out_dir) as tmp:  # a re-export replaces the folder: no stale planes from an earlier export
        fh, current = None, None
        try:  # streamed feature by feature: memory holds one feature, whatever the number of cells
            for i in order:
                plane = features.planes[i]
                if plane != current:
                    if fh is not None:
                        fh.write("]}")
                        fh.close()
                        if progress is not None:
                            progress(len(names), n_planes)
                    current = plane
                    names.append(f"{plane}.geojson")
                    fh = open(tmp / names[-1], "w", encoding="utf-8")  # noqa: SIM115 - closed below
                    fh.write('{"type":"FeatureCollection","features":[')
                else:
                    fh.write(",")
                fh.write(features.text(i))
            if fh is not None:
                fh.write("]}")
                fh.close()
        except OSError as exc:  # the folder is not swapped in: the earlier export (if any) stays as it was
            raise os_error(out_dir / names[-1] if names else out_dir, exc) from exc
        finally:
            if fh is not None and not fh.closed:
                try:
                    fh.close()
                except OSError:
                    pass
        if names and progress is not None:
            progress(len(names), n_planes)
    return [out_dir / name for name in names]
