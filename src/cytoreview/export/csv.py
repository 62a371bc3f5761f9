"""CSV and Parquet manifests: one row per item, CytoImageNet-style metadata columns plus review provenance.

Columns, in order:

* CytoImageNet metadata: ``label`` (class names joined with ``|``), ``category`` (``<level>_class``: what kind of
  label it is), ``database`` (``"cytoreview"`` unless given), ``name`` (the case id, or the image key),
  ``path`` and ``filename`` (the de-identified image key and plane key; with ``include_paths=True`` the image's
  real path and its file or folder name), ``idx`` (item id), ``crop`` (True for items smaller than their plane: tiles, cells,
  regions), ``scaling`` (1.0: coordinates are level-0 pixels), ``x_min``, ``x_max``, ``y_min``, ``y_max``.
* Review provenance: ``mpp``, ``level``, ``source``, ``reviewer``, ``model``, ``confidence``, ``split``.
* What an importer needs to rebuild the label table: ``image_key``, ``plane``, ``image_id``, ``case_id``, ``field``,
  ``z``, ``geometry``, ``label_ids``, ``model_label``, ``reviewed``, ``corrected``, ``unsure``, ``updated_at``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cytoreview.errors import ExportError
from cytoreview.export.csvtext import write_frame_csv
from cytoreview.export.table import image_keys, plane_keys
from cytoreview.export.writing import write_with

MANIFEST_COLUMNS = (
    "label", "category", "database", "name", "path", "filename", "idx", "crop", "scaling",
    "x_min", "x_max", "y_min", "y_max",
    "mpp", "level", "source", "reviewer", "model", "confidence", "split",
    "image_key", "plane", "image_id", "case_id", "field", "z", "geometry", "label_ids", "model_label",
    "reviewed", "corrected", "unsure", "updated_at",
)


def manifest(table: pd.DataFrame, *, include_paths: bool = False, database: str = "cytoreview") -> pd.DataFrame:
    """Build the manifest DataFrame (see the module docstring) from a validated label table.

    Parameters
    ----------
    table : pandas.DataFrame
        Label table, optionally with a ``split`` column.
    include_paths : bool
        Put the real image folder and file name in ``path``/``filename`` (off by default: de-identified).
    database : str
        Value of the ``database`` column.
    """
    table = table.reset_index(drop=True)  # columns below are passed as arrays: positions must match
    keys = image_keys(table)
    planes = plane_keys(table)
    if include_paths:
        paths = [str(p) for p in table["image_path"]]
        name_of: dict[str, str] = {}
        files = [name_of[p] if p in name_of else name_of.setdefault(p, Path(p).name) for p in paths]
    else:
        paths, files = keys, list(planes)
    case = table["case_id"].astype(object).where(table["case_id"].notna(), None)
    out = pd.DataFrame(
        {
            "label": _joined(table["labels"], str),
            "category": table["level"].astype(str) + "_class",
            "database": database,
            "name": [c if c is not None and str(c) != "" else k for c, k in zip(case, keys)],
            "path": paths,
            "filename": files,
            "idx": table["item_id"].to_numpy(),
            "crop": (table["level"] != "field").to_numpy(),
            "scaling": 1.0,
            "x_min": table["x_min"].to_numpy(),
            "x_max": table["x_max"].to_numpy(),
            "y_min": table["y_min"].to_numpy(),
            "y_max": table["y_max"].to_numpy(),
            "mpp": table["mpp"].array,
            "level": table["level"].array,
            "source": table["source"].array,
            "reviewer": table["reviewer"].array,
            "model": table["model"].array,
            "confidence": pd.to_numeric(table["confidence"], errors="coerce").to_numpy(),
            "split": table["split"].to_numpy() if "split" in table.columns else "",
            "image_key": keys,
            "plane": planes.to_numpy(),
            "image_id": table["image_id"].to_numpy(),
            "case_id": case.to_numpy(),
            "field": table["field"].to_numpy(),
            "z": table["z"].to_numpy(),
            "geometry": (table["geometry"].array if isinstance(table["geometry"].dtype, pd.StringDtype)
                         else table["geometry"].map(lambda g: g if isinstance(g, str) else _json(g)).to_numpy()),
            "label_ids": _joined(table["label_ids"], lambda i: str(int(i))),
            "model_label": table["model_label"].array,
            "reviewed": table["reviewed"].to_numpy(),
            "corrected": table["corrected"].to_numpy(),
            "unsure": table["unsure"].to_numpy(),
            "updated_at": table["updated_at"].array,
        },
        columns=list(MANIFEST_COLUMNS),
    )
    return out


def _joined(lists: pd.Series, text) -> list[str]:
    """Each list of a column joined with "|" (``text`` of each element), once per distinct list."""
    done: dict[tuple, str] = {}
    out = []
    for value in lists.tolist():
        key = tuple(value)
        joined = done.get(key)
        if joined is None:
            joined = done[key] = "|".join(text(v) for v in value)
        out.append(joined)
    return out


def _json(value) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write a manifest to CSV (UTF-8, no index) atomically: the bytes ``frame.to_csv(index=False)`` writes, built a
    column at a time (:func:`cytoreview.export.csvtext.write_frame_csv`)."""
    return write_with(Path(path), lambda tmp: write_frame_csv(frame, tmp))


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write a manifest to Parquet (pyarrow, zstd) atomically."""
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:  # pragma: no cover - pyarrow is a dependency
        raise ExportError("Parquet export needs pyarrow (pip install pyarrow)") from exc
    frame = frame.copy()
    for col in ("reviewer", "model", "model_label", "case_id", "updated_at", "split", "source"):
        frame[col] = frame[col].astype("string")
    return write_with(Path(path), lambda tmp: frame.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd"))
