"""The label table every exporter reads: column contract, validation and geometry helpers.

The table is what ``Project.label_table()`` returns (one row per item); see the brief's Project contract. Exporters
never talk to the project store, so they can be tested (and used) with any DataFrame that has these columns.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from cytoreview.errors import CytoreviewError, ExportError
from cytoreview.review import geometry as review_geometry
from cytoreview.review.tables import LABEL_TABLE_COLUMNS  # the contract lives with its producer

__all__ = ["LABEL_TABLE_COLUMNS", "LEVELS", "validate_table", "parse_geometry", "image_keys", "plane_keys"]

#: Item levels, in the order masks rasterise them (later ones paint over earlier ones).
LEVELS = ("field", "tile", "region", "cell")


def validate_table(table: pd.DataFrame) -> pd.DataFrame:
    """Check that ``table`` has the label-table columns and return a cleaned copy.

    Parameters
    ----------
    table : pandas.DataFrame
        A label table.

    Returns
    -------
    pandas.DataFrame
        A copy with a fresh index, ``labels``/``label_ids`` as lists, and integer ``field``/``z``.

    Raises
    ------
    ExportError
        If a column is missing or a value cannot be read; the message names the column (and item).
    """
    if not isinstance(table, pd.DataFrame):
        raise ExportError(f"the label table must be a pandas DataFrame, not {type(table).__name__}")
    missing = [c for c in LABEL_TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ExportError(f"the label table lacks column(s) {', '.join(missing)}")
    out = table.reset_index(drop=True).copy()
    ids = out["item_id"].tolist()
    for col, kind in (("labels", str), ("label_ids", int)):
        out[col] = _as_lists(out[col].tolist(), col, ids, kind)
    for col in ("field", "z"):
        out[col] = pd.to_numeric(out[col], errors="coerce").fillna(0).astype(np.int64)
    for col in ("x_min", "y_min", "x_max", "y_max", "mpp", "confidence"):  # nullable Int64 / None -> float NaN
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    for col in ("reviewed", "corrected", "unsure"):
        out[col] = out[col].fillna(False).astype(bool)
    bad = ~out["level"].isin(LEVELS)
    if bad.any():
        row = out[bad].iloc[0]
        raise ExportError(f"item {row['item_id']}: unknown level {row['level']!r} (expected one of {LEVELS})")
    return out


def _as_lists(values: list, column: str, item_ids: list, kind: type) -> list:
    """:func:`_as_list` of every entry, computed once per distinct object (a label table shares one list per
    distinct label set), in row order so that an error names the first bad item."""
    from cytoreview.export.jsontext import distinct_objects

    codes, first = distinct_objects(values)
    lists = np.empty(len(first), dtype=object)
    for k, i in enumerate(first):  # one at a time: numpy would read a list of equal-length lists as 2-D
        lists[k] = _as_list(values[i], column, item_ids[i], kind)
    return lists[codes].tolist()


def _as_list(value: Any, column: str, item_id: Any, kind: type) -> list:
    if type(value) is list and all(type(v) is kind for v in value):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ExportError(f"item {item_id}: column {column!r} is not a list: {text!r}") from exc
        else:
            value = text.split("|")
    try:
        return [kind(v) for v in value]
    except (TypeError, ValueError) as exc:
        raise ExportError(f"item {item_id}: column {column!r} has a bad value {value!r}") from exc


def parse_geometry(text: Any, item_id: Any = None) -> dict:
    """Parse the ``geometry`` JSON of one item and check its keys.

    Raises
    ------
    ExportError
        If the JSON is malformed or lacks a key its type needs; the message names the item.
    """
    if not isinstance(text, (dict, str)):
        raise ExportError(f"item {item_id}: geometry is not valid JSON: {text!r}")
    if isinstance(text, str):
        point = review_geometry.canonical_point_text(text)  # a cell as the project stores it
        if point is not None:
            return point
    try:
        return review_geometry.canonical(text)  # the same rules the project store applies
    except CytoreviewError as exc:
        raise ExportError(f"item {item_id}: {exc}") from exc


def fill_field_boxes(table: pd.DataFrame, source) -> pd.DataFrame:
    """Give field items whose box is unknown (NaN) the box of their whole plane, from the opened image.

    Raises
    ------
    ExportError
        If the image of such an item cannot be opened (the message names it).
    """
    box_cols = ["x_min", "y_min", "x_max", "y_max"]
    missing = (table["level"] == "field") & table[box_cols].isna().any(axis=1)
    if not missing.any():
        return table
    out = table.copy()
    for idx in out.index[missing]:
        image = source.get(out.at[idx, "image_id"], out.at[idx, "image_path"], out.at[idx, "mpp"])
        h, w = image.plane_shape
        out.loc[idx, box_cols] = [0.0, 0.0, float(w), float(h)]
    return out


def outline_xy(geom: dict, row: Any, plane_hw: tuple[int, int] | None = None) -> list[tuple[float, float]] | None:
    """Return the item's outline as ``[(x, y), ...]`` in level-0 pixels (open ring), or None for a point.

    Fields cover their whole plane (``plane_hw``, else the row's bbox); tiles are their square clipped to the image
    (the row's box, or ``plane_hw``); polygons their vertices (stored ``[y, x]``).
    """
    kind = geom["type"]
    if kind == "point":
        return None
    if kind == "polygon":
        return [(float(x), float(y)) for y, x in geom["coords"]]
    if kind == "tile":
        t = float(geom["size_px"])
        y0, x0 = float(geom["row"]) * t, float(geom["col"]) * t
        y1, x1 = y0 + t, x0 + t
        if plane_hw is not None:
            y1, x1 = min(y1, float(plane_hw[0])), min(x1, float(plane_hw[1]))
        if row is not None:  # the project's box, clipped to the image when the image size is known
            bx1, by1 = _finite(row.get("x_max")), _finite(row.get("y_max"))
            x1, y1 = min(x1, bx1) if bx1 is not None else x1, min(y1, by1) if by1 is not None else y1
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if plane_hw is not None:
        h, w = plane_hw
        return [(0.0, 0.0), (float(w), 0.0), (float(w), float(h)), (0.0, float(h))]
    x0, y0, x1, y1 = float(row["x_min"]), float(row["y_min"]), float(row["x_max"]), float(row["y_max"])
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _finite(value) -> float | None:
    """``value`` as a float, None when missing or NaN."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def polygon_area(xy: list[tuple[float, float]]) -> float:
    """Area of a simple polygon (shoelace formula), in squared pixels."""
    n = len(xy)
    twice = 0.0
    for i in range(n):
        x0, y0 = xy[i]
        x1, y1 = xy[(i + 1) % n]
        twice += x0 * y1 - x1 * y0
    return abs(twice) / 2.0


def geometries(table: pd.DataFrame) -> list[dict]:
    """Parsed ``geometry`` of every row (the ``_geom`` column when :func:`attach_geometries` added it).

    Points stored as the project writes them are parsed a column at a time (:func:`_point_geometries`); every
    other geometry, and any point text that path does not take, goes through :func:`parse_geometry`.
    """
    if "_geom" in table.columns:
        return table["_geom"].tolist()
    texts, ids = table["geometry"].tolist(), table["item_id"].tolist()
    out: list = []
    for start in range(0, len(texts), _POINT_CHUNK):
        out.extend(_point_geometries(texts[start : start + _POINT_CHUNK]))
    for i in [i for i, g in enumerate(out) if g is None]:
        out[i] = parse_geometry(texts[i], ids[i])
    return out


_POINT_CHUNK = 65536
# the canonical text of a point (review.geometry writes it; its canonical_point_text reads it one at a time)
_POINT_REGEX = r'^\{"type":"point","x":(?P<x>-?[0-9][0-9.e+-]*),"y":(?P<y>-?[0-9][0-9.e+-]*)\}$'


def _point_geometries(texts: list) -> list[dict | None]:
    """The canonical dict of each canonical point text of ``texts``, None for any other entry.

    The same dicts :func:`cytoreview.review.geometry.canonical_point_text` gives (an integral coordinate as an int,
    another as the float itself when rounding it to 3 decimals leaves it unchanged), found with one pyarrow regex
    over the column and read with Python's own float parsing (numpy's cast of the number texts); a coordinate
    that would need rounding, a huge one or a non-finite one is left to :func:`parse_geometry` (None).
    """
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return [None] * len(texts)
    try:
        found = pc.extract_regex(pa.array(texts, type=pa.string()), _POINT_REGEX)
        valid = found.is_valid().to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            coords = [pc.fill_null(pc.struct_field(found, k), "0").to_numpy(zero_copy_only=False).astype(np.float64)
                      for k in ("x", "y")]
    except (TypeError, ValueError, OverflowError, pa.ArrowException):
        return [None] * len(texts)  # not all text, or a number text float() refuses: one at a time
    values = []
    for v in coords:
        with np.errstate(invalid="ignore", over="ignore"):
            whole = v == np.trunc(v)  # False for NaN and the infinities
            integral = whole & (np.abs(v) < 2.0**53)  # written as an int (a huge one is left to parse_geometry)
            valid &= integral | (~whole & np.isfinite(v) & (np.round(v, 3) == v))
        obj = v.astype(object)
        obj[integral] = v[integral].astype(np.int64).astype(object)
        values.append(obj.tolist())
    return [{"type": "point", "y": y, "x": x} if ok else None for x, y, ok in zip(*values, valid.tolist())]


def attach_geometries(table: pd.DataFrame) -> pd.DataFrame:
    """Parse and check every geometry once; return the table with a ``_geom`` column of dicts."""
    out = table.copy(deep=False)  # the columns are shared, not copied: a million rows are hundreds of MB
    out["_geom"] = geometries(table)
    return out


def column(table: pd.DataFrame, name: str) -> list:
    """A column as a Python list with missing values as None (fast to iterate, unlike Arrow-backed strings)."""
    values = table[name]
    if pd.api.types.is_integer_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        return values.tolist()
    if pd.api.types.is_float_dtype(values.dtype):
        return [None if v != v else v for v in values.tolist()]
    if isinstance(values.dtype, pd.StringDtype):  # one str object per distinct value, not one per row
        codes, uniques = pd.factorize(values)
        lookup = np.empty(len(uniques) + 1, dtype=object)
        lookup[: len(uniques)] = uniques.to_numpy(dtype=object)
        return lookup[codes].tolist()  # code -1 (missing) is the None at the end
    out = values.to_numpy(dtype=object, copy=True)
    out[values.isna().to_numpy()] = None  # None, NaN, pd.NA, NaT: one vectorised pass
    return out.tolist()


class NumberColumn:
    """A float column of a label table held as one float64 array (``values``); ``column[i]`` is row ``i``'s value,
    None when missing, as in :func:`column`, without a Python float object per row."""

    __slots__ = ("values",)

    def __init__(self, table: pd.DataFrame, name: str):
        self.values = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=np.float64)

    def __getitem__(self, i: int) -> float | None:
        value = float(self.values[i])
        return None if value != value else value

    def __len__(self) -> int:
        return len(self.values)


def class_order(table: pd.DataFrame) -> list[tuple[int, str]]:
    """Return the ``(class id, class name)`` pairs used in ``table``, sorted by id then name.

    Raises
    ------
    ExportError
        If one class name has two ids or the ``labels`` and ``label_ids`` lists of an item differ in length.
    """
    from cytoreview.export.jsontext import distinct_objects

    pairs: dict[str, int] = {}
    seen: set = set()
    names_col, ids_col = table["labels"].tolist(), table["label_ids"].tolist()
    name_codes, _ = distinct_objects(names_col)
    id_codes, _ = distinct_objects(ids_col)
    _, first = np.unique(name_codes * (int(id_codes.max(initial=0)) + 1) + id_codes, return_index=True)
    rows = np.sort(first).tolist()  # the first row of each distinct (labels, label_ids) pair of objects, in order
    item_ids = table["item_id"].tolist()
    for item_id, names, ids in ((item_ids[i], names_col[i], ids_col[i]) for i in rows):
        if len(names) != len(ids):
            raise ExportError(f"item {item_id}: labels {names} and label_ids {ids} differ in length")
        for pair in zip(names, ids):
            if pair in seen:
                continue
            seen.add(pair)
            name, cid = pair
            if pairs.setdefault(name, cid) != cid:
                raise ExportError(f"class {name!r} has two ids ({pairs[name]} and {cid}) in the label table")
    return sorted(((cid, name) for name, cid in pairs.items()))


def default_color(name: str) -> tuple[int, int, int]:
    """A stable, well-saturated RGB colour for a class name without a schema colour."""
    import colorsys
    import hashlib

    h = int(hashlib.md5(name.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    r, g, b = colorsys.hsv_to_rgb(h, 0.65, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def parse_color(value: Any) -> tuple[int, int, int]:
    """Return ``(r, g, b)`` ints from ``"#rrggbb"``, ``[r, g, b]`` (0-255) or a packed int."""
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) == 6:
            try:
                return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
            except ValueError:
                pass
        raise ExportError(f"colour {value!r} is not '#rrggbb'")
    if isinstance(value, (int, np.integer)):
        v = int(value) & 0xFFFFFF
        return (v >> 16) & 255, (v >> 8) & 255, v & 255
    try:
        r, g, b = (int(c) for c in list(value)[:3])
    except (TypeError, ValueError) as exc:
        raise ExportError(f"colour {value!r} is not [r, g, b]") from exc
    return r, g, b


def class_colors(names: list[str], colors: dict[str, Any] | None) -> dict[str, tuple[int, int, int]]:
    """Colours for ``names``: from ``colors`` (schema) where given, else :func:`default_color`."""
    colors = colors or {}
    return {n: parse_color(colors[n]) if n in colors else default_color(n) for n in names}


def image_kinds(table: pd.DataFrame) -> dict[int, str]:
    """Guess each image's kind from its items: ``"fields"`` if any item is a field label or lies on field > 0.

    Exporters name planes from this (not from the opened image) so every format names a plane the same way.
    """
    is_fields = (table["level"] == "field") | (table["field"] > 0)
    flags = is_fields.groupby(table["image_id"]).any()
    return {int(k): ("fields" if v else "wsi") for k, v in flags.items()}


def image_keys(table: pd.DataFrame) -> list[str]:
    """De-identified image name of each row (:func:`cytoreview.export.names.image_key`, computed once per distinct
    (image, case) pair)."""
    from cytoreview.export.names import image_key

    if table.empty:
        return []
    ids = table["image_id"].to_numpy(dtype=np.int64)
    case_codes, cases = pd.factorize(pd.Series(column(table, "case_id"), dtype=object), use_na_sentinel=False)
    width = len(cases) + 1
    codes, pairs = pd.factorize(ids * width + case_codes)
    keys = np.empty(len(pairs), dtype=object)
    keys[:] = [image_key(int(pair // width), cases[pair % width]) for pair in pairs.tolist()]
    return keys[codes].tolist()


def plane_keys(table: pd.DataFrame) -> pd.Series:
    """De-identified plane name of each row (see :func:`cytoreview.export.names.plane_key`)."""
    kinds = image_kinds(table)
    out = [f"{ik}_f{int(field):03d}" if kinds[int(image_id)] == "fields" else ik
           for ik, image_id, field in zip(image_keys(table), table["image_id"].tolist(), table["field"].tolist())]
    return pd.Series(out, index=table.index, dtype=object)


def _unit_circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    angles = 2 * np.pi * np.arange(n) / n
    return np.cos(angles), np.sin(angles)


def disc_rings(x: np.ndarray, y: np.ndarray, radius: np.ndarray, n: int = 24, decimals: int = 2,
               as_list: bool = True):
    """Open rings ``[[x, y], ...]`` of ``n`` vertices for many discs at once, rounded to ``decimals`` (with
    ``as_list=False`` the ``(discs, n, 2)`` array)."""
    cos, sin = _unit_circle(n)
    xs = np.round(x[:, None] + radius[:, None] * cos[None, :], decimals)
    ys = np.round(y[:, None] + radius[:, None] * sin[None, :], decimals)
    rings = np.stack([xs, ys], axis=-1)
    return rings.tolist() if as_list else rings


def disc_area(radius: float, n: int = 24) -> float:
    """Area of the ``n``-gon :func:`disc_rings` draws."""
    return 0.5 * n * radius * radius * math.sin(2 * math.pi / n)
