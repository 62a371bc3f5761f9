"""Item geometry: the canonical JSON form stored in the project and its level-0 bounding box.

Geometry forms (all coordinates level-0 pixels of one field or of the slide):

* ``{"type": "field"}`` -- the whole field (or slide)
* ``{"type": "tile", "row": r, "col": c, "size_px": T}`` -- rows ``[r*T, (r+1)*T)``, cols ``[c*T, (c+1)*T)``,
  clipped to the plane (an edge tile covers only the part inside the image)
* ``{"type": "point", "y": y, "x": x}``
* ``{"type": "polygon", "coords": [[y, x], ...]}`` -- at least 3 vertices

The canonical JSON (sorted keys, no spaces, integral floats written as ints) is what recognises the same item again
on re-import. The project indexes it by :func:`identity_key`, a 64-bit digest of that text
(``UNIQUE(image_id, level, field, z, geometry_key)``): a short integer key is far cheaper for SQLite to keep in order
than a cell outline's text. Two different geometries whose digests collide are never merged: the stored text is
compared on every match, and the later one takes the next free key (:func:`next_key`, linear probing; items are
never deleted, so a probe sequence never has holes).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from cytoreview.errors import ProjectError


def _num(value, what: str):
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ProjectError(f"geometry {what} {value!r} is not a number") from None
    if not math.isfinite(f):
        raise ProjectError(f"geometry {what} {value!r} is not finite")
    return int(f) if f.is_integer() else round(f, 3)


def _int(value, what: str, minimum: int = 0) -> int:
    v = _num(value, what)
    if not isinstance(v, int) or v < minimum:
        raise ProjectError(f"geometry {what} {value!r} must be an integer >= {minimum}")
    return v


def canonical(geometry: Mapping | str) -> dict:
    """Validate ``geometry`` (dict or JSON text) and return it in canonical form."""
    if isinstance(geometry, str):
        try:
            geometry = json.loads(geometry)
        except json.JSONDecodeError as exc:
            raise ProjectError(f"geometry {geometry[:80]!r} is not valid JSON: {exc}") from None
    if not isinstance(geometry, Mapping) or "type" not in geometry:
        raise ProjectError(f"geometry {geometry!r} must be a mapping with a 'type'")
    kind = geometry["type"]
    if kind == "field":
        return {"type": "field"}
    if kind == "tile":
        missing = [k for k in ("row", "col", "size_px") if k not in geometry]
        if missing:
            raise ProjectError(f"tile geometry {dict(geometry)!r} lacks {', '.join(missing)}")
        return {"type": "tile", "row": _int(geometry["row"], "row"), "col": _int(geometry["col"], "col"),
                "size_px": _int(geometry["size_px"], "size_px", 1)}
    if kind == "point":
        if "y" not in geometry or "x" not in geometry:
            raise ProjectError(f"point geometry {dict(geometry)!r} needs 'y' and 'x'")
        return {"type": "point", "y": _num(geometry["y"], "y"), "x": _num(geometry["x"], "x")}
    if kind == "polygon":
        coords = geometry.get("coords")
        if not isinstance(coords, (list, tuple)) or len(coords) < 3:
            raise ProjectError("polygon geometry needs 'coords' with at least 3 [y, x] vertices")
        out = []
        for i, vertex in enumerate(coords):
            if not isinstance(vertex, (list, tuple)) or len(vertex) != 2:
                raise ProjectError(f"polygon vertex {i} {vertex!r} is not [y, x]")
            out.append([_num(vertex[0], f"vertex {i} y"), _num(vertex[1], f"vertex {i} x")])
        return {"type": "polygon", "coords": out}
    raise ProjectError(f"geometry type {kind!r} is not one of field, tile, point, polygon")


def point_json(geometry: Mapping) -> tuple[str, int, int]:
    """``(canonical JSON, floor x, floor y)`` of a point geometry mapping: the fast path of :func:`canonical` +
    :func:`to_json` + :func:`bbox` for the one form a million cells take (same text, same errors)."""
    try:
        fy, fx = float(geometry["y"]), float(geometry["x"])
    except (KeyError, TypeError, ValueError):
        fy = fx = math.nan
    if not (math.isfinite(fy) and math.isfinite(fx)):
        canonical(geometry)  # raises the error that names the bad key or value
        raise ProjectError(f"point geometry {dict(geometry)!r} is not finite")  # pragma: no cover - canonical raised
    y = int(fy) if fy.is_integer() else round(fy, 3)
    x = int(fx) if fx.is_integer() else round(fx, 3)
    return f'{{"type":"point","x":{x!r},"y":{y!r}}}', math.floor(x), math.floor(y)


#: Coordinates below this (px) take the vectorised path of :func:`point_texts`: there a float's ulp is under
#: 0.001, so a value that numpy's rounding to 3 decimals leaves unchanged is one Python's ``round(v, 3)`` leaves
#: unchanged too.
_FAST_MAX_PX = 2.0**40


def _canonical_numbers(values: np.ndarray) -> list:
    """``_num`` of every (finite, in-range) value: integral ones as int, others rounded to 3 decimals."""
    whole = values == np.floor(values)
    if whole.all():
        return values.astype(np.int64).tolist()
    out = values.tolist()
    for i in np.flatnonzero(whole).tolist():
        out[i] = int(out[i])
    for i in np.flatnonzero(~whole & (np.round(values, 3) != values)).tolist():
        out[i] = round(out[i], 3)
    return out


def point_texts(xs: Sequence, ys: Sequence) -> tuple[list[str], list[int], list[int]] | None:
    """``(canonical JSON texts, floor x, floor y)`` of many points given as Python ``int``/``float`` coordinates:
    :func:`point_json` a column at a time (the same texts). None when any value is of another type, not finite or
    beyond :data:`_FAST_MAX_PX` (the caller then checks each point with :func:`point_json`, which names the bad
    one)."""
    if not set(map(type, xs)) | set(map(type, ys)) <= {float, int}:
        return None
    x, y = np.array(xs, dtype=np.float64), np.array(ys, dtype=np.float64)
    if not len(x) or not (np.abs(x).max() < _FAST_MAX_PX and np.abs(y).max() < _FAST_MAX_PX):  # NaN fails too
        return None
    cx, cy = _canonical_numbers(x), _canonical_numbers(y)
    texts = [f'{{"type":"point","x":{a!r},"y":{b!r}}}' for a, b in zip(cx, cy)]
    return (texts, np.floor(np.array(cx, dtype=np.float64)).astype(np.int64).tolist(),
            np.floor(np.array(cy, dtype=np.float64)).astype(np.int64).tolist())


_POINT_TEXT = re.compile(r'\{"type":"point","x":(-?[0-9][0-9.e+-]*),"y":(-?[0-9][0-9.e+-]*)\}')


def canonical_point_text(text: str) -> dict | None:
    """The canonical dict of a point stored as canonical JSON text (what the project writes), None for any other
    text (:func:`canonical` then parses it): the fast path of ``canonical(text)`` for a million cells."""
    match = _POINT_TEXT.fullmatch(text)
    if match is None:
        return None
    try:
        fx, fy = float(match[1]), float(match[2])
    except ValueError:
        return None
    if not (math.isfinite(fx) and math.isfinite(fy)):
        return None
    return {"type": "point", "y": int(fy) if fy.is_integer() else round(fy, 3),
            "x": int(fx) if fx.is_integer() else round(fx, 3)}


def identity_keys(texts: Sequence[str]) -> list[int]:
    """The geometry keys of canonical geometry JSON ``texts``: each text's BLAKE2b-64 digest (UTF-8) read as a
    little-endian signed 64-bit integer.

    Stable across processes, machines and Python versions (never Python's salted ``hash``): a project written
    anywhere finds its items again anywhere.
    """
    digests = []
    for text in texts:  # copying a ready hasher is cheaper than making one (0.32 vs 0.46 us a text)
        hasher = _BLAKE2B_64.copy()
        hasher.update(text.encode())
        digests.append(hasher.digest())
    return np.frombuffer(b"".join(digests), dtype="<i8").tolist()


_BLAKE2B_64 = hashlib.blake2b(digest_size=8)


def identity_key(text: str) -> int:
    """The geometry key of one canonical geometry JSON ``text`` (see :func:`identity_keys`)."""
    return identity_keys([text])[0]


_KEY_MAX = 2**63 - 1


def next_key(key: int) -> int:
    """The key probed after ``key`` when it is taken by a different geometry (wraps round within 64 bits)."""
    return -(2**63) if key == _KEY_MAX else key + 1


def to_json(geometry: Mapping) -> str:
    """Canonical JSON text of an already canonical geometry."""
    return json.dumps(geometry, sort_keys=True, separators=(",", ":"))


def bbox(geometry: Mapping, plane_shape: tuple[int, int] | None) -> tuple[int | None, int | None, int | None, int | None]:
    """Return ``(x_min, y_min, x_max, y_max)`` in level-0 px.

    A tile's and a field's box is half-open (``x_max`` is one past the last column); a tile's box is clipped to
    ``plane_shape`` when it is given (an edge tile of the grid covers only the part inside the image); a point has
    ``x_min == x_max``; a polygon's box is its vertices' floor/ceil. A field's box needs ``plane_shape``
    (``(height, width)``), else it is all None.
    """
    kind = geometry["type"]
    if kind == "field":
        if plane_shape is None:
            return (None, None, None, None)
        return (0, 0, int(plane_shape[1]), int(plane_shape[0]))
    if kind == "tile":
        t = geometry["size_px"]
        x1, y1 = (geometry["col"] + 1) * t, (geometry["row"] + 1) * t
        if plane_shape is not None:  # edge tiles are clipped to the image (the patch grid's edge rule)
            y1, x1 = min(y1, int(plane_shape[0])), min(x1, int(plane_shape[1]))
        return (geometry["col"] * t, geometry["row"] * t, x1, y1)
    if kind == "point":
        y, x = geometry["y"], geometry["x"]
        return (math.floor(x), math.floor(y), math.floor(x), math.floor(y))
    ys = [v[0] for v in geometry["coords"]]
    xs = [v[1] for v in geometry["coords"]]
    return (math.floor(min(xs)), math.floor(min(ys)), math.ceil(max(xs)), math.ceil(max(ys)))


#: Geometry types allowed at each item level.
LEVEL_GEOMETRIES = {
    "field": ("field",),
    "tile": ("tile",),
    "cell": ("point", "polygon"),
    "region": ("polygon", "tile"),
}
