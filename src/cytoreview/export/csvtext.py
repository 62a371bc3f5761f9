"""CSV text of a DataFrame, the bytes ``DataFrame.to_csv(path, index=False)`` writes, built a column at a time.

pandas hands every cell to the ``csv`` module one row at a time (about a microsecond a cell); a million-row manifest
of 33 columns is then most of an export's time. Here each column becomes a list of field texts in one pass
(numbers with :mod:`cytoreview.export.jsontext`, strings once per distinct value) and rows are joined with ``","``.
The text of a field is what pandas gives it: floats as ``repr`` (``""`` for NaN, ``inf``), ints and bools as
``str``, missing values as ``""``, everything else as the ``csv`` module writes it (``QUOTE_MINIMAL``: quoted when
it holds a comma or a quote, quotes doubled). A frame with a column of any other dtype (float32, datetimes,
categoricals, nullable integers), or of one column, is written by pandas itself.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from cytoreview.export.jsontext import CHUNK_ROWS, float_texts, int_texts


class _FieldText:
    """The CSV text of one field value, as the ``csv`` module (``QUOTE_MINIMAL``, ``lineterminator="\\n"``) writes
    it inside a row of several fields."""

    def __init__(self):
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\n")

    def __call__(self, value) -> str:
        if type(value) is str and "\n" not in value and "\r" not in value:
            if "," in value or '"' in value:
                return '"' + value.replace('"', '""') + '"'
            return value
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerow([value, ""])
        return self._buffer.getvalue()[:-2]  # the field without the empty field's "," and the line end


def _supported(dtype) -> bool:
    if isinstance(dtype, pd.StringDtype):
        return True
    # float64 only: numpy writes a float32 with its own shortest digits ("0.1"), not the float64 repr
    return isinstance(dtype, np.dtype) and (dtype.kind in "biuO" or dtype == np.float64)


def column_texts(values, field_text: _FieldText | None = None) -> list[str]:
    """The CSV field text of each value of one column (a Series or array of a supported dtype)."""
    field_text = field_text or _FieldText()
    dtype = values.dtype
    if isinstance(dtype, np.dtype) and dtype.kind == "b":
        return np.array(["False", "True"], dtype=object)[np.asarray(values, dtype=bool).astype(np.int64)].tolist()
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return int_texts(np.asarray(values))
    if isinstance(dtype, np.dtype) and dtype == np.float64:
        return float_texts(np.asarray(values), nan="", inf="inf")
    objects = np.asarray(pd.Series(values).to_numpy(dtype=object, na_value=None), dtype=object)
    missing = pd.isna(objects)
    if pd.api.types.infer_dtype(objects, skipna=True) in ("string", "empty"):
        codes, uniques = pd.factorize(objects)
        lookup = np.empty(len(uniques) + 1, dtype=object)
        lookup[: len(uniques)] = [field_text(u) for u in uniques.tolist()]
        lookup[len(uniques)] = ""  # code -1: missing
        return lookup[codes].tolist()
    cache: dict = {}
    out = []
    for value, miss in zip(objects.tolist(), missing.tolist()):
        if miss:
            out.append("")
            continue
        key = (type(value), value)
        try:
            text = cache.get(key)
        except TypeError:  # unhashable (a list): its own text
            out.append(field_text(value))
            continue
        if text is None:
            text = cache[key] = field_text(value)
        out.append(text)
    return out


def write_frame_csv(frame: pd.DataFrame, path: Path, chunk_rows: int = CHUNK_ROWS) -> None:
    """Write ``frame`` to ``path`` as ``frame.to_csv(path, index=False, encoding="utf-8")`` would, byte for byte."""
    if frame.shape[1] < 2 or not all(_supported(dtype) for dtype in frame.dtypes) or not frame.columns.is_unique:
        frame.to_csv(path, index=False, encoding="utf-8")
        return
    field_text = _FieldText()
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(map(field_text, frame.columns)) + "\n")
        columns = [frame[name] for name in frame.columns]
        for start in range(0, len(frame), chunk_rows):
            texts = [column_texts(col.iloc[start : start + chunk_rows], field_text) for col in columns]
            fh.write("\n".join(map(",".join, zip(*texts))) + "\n")
