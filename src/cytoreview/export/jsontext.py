"""JSON text of many values at once: the exact text ``json.dumps`` writes for each, a column at a time.

Exporters that stream a million records (GeoJSON features, COCO annotations) format their numbers and repeating
strings here instead of one ``json.dumps`` call per value:

* :func:`float_texts`: a float column. A value with at most four decimals (a project stores coordinates rounded to
  0.001 px; export rings are rounded to 0.01 px) is written from its integer and ten-thousandths parts, looked up
  in tables, instead of running the shortest-round-trip algorithm of ``repr``; every other value goes through
  ``float.__repr__``. Both give the same text (see :func:`float_texts`).
* :func:`int_texts`: an integer column.
* :func:`value_texts`: a column of strings (or None), each distinct value encoded once.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

#: Rows the streamed exporters format at a time: their text and number columns for that many rows are a few MB,
#: whatever the size of the project.
CHUNK_ROWS = 16384
#: Decimals of the table-driven float path.
DECIMALS = 4
_SCALE = 10**DECIMALS
#: Magnitude below which the table-driven path is exact (a double's spacing there is far under 10^-DECIMALS).
_FAST_LIMIT = float(2**31)
#: Integer parts up to this are looked up in a table of texts (larger ones are formatted with ``int.__repr__``).
_TABLE_MAX = 1 << 18

# ".0", ".0001", ..., ".5", ..., ".9999": the text after the integer part of k / 10^DECIMALS, trailing zeros dropped
_FRACTIONS = np.array(["." + (f"{k:0{DECIMALS}d}".rstrip("0") or "0") for k in range(_SCALE)], dtype=object)
_int_table = np.array([], dtype=object)

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _int_part_texts(ip: np.ndarray) -> np.ndarray:
    """``str`` of each non-negative integer in ``ip`` (an object array), through a table grown on demand."""
    global _int_table
    top = int(ip.max()) if len(ip) else 0
    if top >= _TABLE_MAX:
        out = np.empty(len(ip), dtype=object)
        out[:] = list(map(int.__repr__, ip.tolist()))
        return out
    if top >= len(_int_table):
        size = min(_TABLE_MAX, max(top + 1, 2 * len(_int_table), 1024))
        table = np.empty(size, dtype=object)
        table[:] = list(map(int.__repr__, range(size)))
        _int_table = table
    return _int_table[ip]


def float_texts(values, nan: str = "NaN", inf: str = "Infinity") -> list[str]:
    """The JSON text ``json.dumps`` writes for each float of ``values`` (``nan`` for NaN, ``inf`` and ``"-" + inf``
    for the infinities: ``nan="", inf="inf"`` gives what pandas ``to_csv`` writes).

    A finite value ``v`` with ``|v| < 2**31`` that ``numpy.round(v, 4)`` leaves unchanged is the double nearest to
    ``k / 10**4`` (``k = rint(|v| * 10**4)``); the decimal text of ``k / 10**4`` without trailing zeros is then the
    shortest text that reads back as ``v`` (any shorter decimal lies at least 10**-4 away, far more than the
    spacing of doubles below 2**31) and it is in the positional form ``repr`` uses between 1e-4 and 1e16: it is
    ``repr(v)``, and it is built from table look-ups. Every other finite value is written by ``float.__repr__``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if not len(v):
        return []
    a = np.abs(v)
    with np.errstate(invalid="ignore", over="ignore"):
        fast = (a < _FAST_LIMIT) & (np.round(v, DECIMALS) == v)
    if fast.all():
        k = np.rint(a * _SCALE).astype(np.int64)
        ip, fp = np.divmod(k, _SCALE)
        out = _int_part_texts(ip) + _FRACTIONS[fp]  # object arrays: one str concatenation each, in C
        neg = np.flatnonzero(np.signbit(v))  # -0.0 too: repr writes "-0.0"
        if len(neg):
            out[neg] = "-" + out[neg]
        return out.tolist()
    out = np.empty(len(v), dtype=object)
    idx = np.flatnonzero(fast)
    if len(idx):
        out[idx] = float_texts(v[idx])
    rest = np.flatnonzero(~fast)
    out[rest] = [_slow_float(x, nan, inf) for x in v[rest].tolist()]
    return out.tolist()


def _slow_float(x: float, nan: str, inf: str) -> str:
    if math.isfinite(x):
        return float.__repr__(x)
    if x != x:
        return nan
    return inf if x > 0 else "-" + inf


def int_texts(values) -> list[str]:
    """The text of each integer of ``values`` (Python ints or an integer array)."""
    if isinstance(values, np.ndarray):
        values = values.tolist()
    return list(map(int.__repr__, map(int, values)))


def value_texts(values: list) -> list[str]:
    """``json.dumps`` of each value of a list, computed once per distinct value.

    Strings and None are grouped by pandas (a hash table in C); a list holding anything else is grouped by
    ``(type, value)`` in a dict, so that ``1``, ``1.0`` and ``True`` keep their own texts.
    """
    if not values:
        return []
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in ("string", "empty"):
        codes, uniques = pd.factorize(np.asarray(values, dtype=object))
        lookup = np.empty(len(uniques) + 1, dtype=object)
        lookup[: len(uniques)] = [_dumps(u) for u in uniques.tolist()]
        lookup[len(uniques)] = "null"  # code -1: None (the only missing value a str column holds)
        return lookup[codes].tolist()
    cache: dict = {}
    out = []
    for value in values:
        key = (type(value), value)
        text = cache.get(key)
        if text is None:
            text = cache[key] = _dumps(value)
        out.append(text)
    return out


def distinct_objects(values: list) -> tuple[np.ndarray, list[int]]:
    """Group the entries of ``values`` by object identity: ``(code of each entry, first position of each code)``.

    For columns of lists shared between rows (a label table holds one list per distinct label set): work done once
    per code is then done once per list object, whatever the number of rows.
    """
    ids = np.fromiter(map(id, values), dtype=np.uint64, count=len(values))
    codes, _ = pd.factorize(ids)
    _, first = np.unique(codes, return_index=True)
    return codes, first.tolist()
