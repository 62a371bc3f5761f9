"""Import label sets into a label table: the other direction of the exporters.

Readers return :class:`ImportedLabels`: a label table with the contract columns (``source = "import:<file name>"``)
and an ``images`` DataFrame (``image_id``, ``image_path``, ``kind``, ``mpp``, ``case_id``) that the project can add
with ``Project.add_image`` before adding the items.

* :func:`read_manifest`: a CSV or Parquet manifest in the columns :mod:`cytoreview.export.csv` writes (all of our
  columns round-trip); a plain CytoImageNet-style manifest (``label``, ``path``/``filename``, optional
  ``x_min``..``y_max``) works too: a zero-size box is a cell, a box a region, no box an image-level label.
* :func:`read_imagefolder`: a class-per-folder image dataset (optionally with ``train``/``validation``/``test``
  folders and HF-style ``metadata.csv`` files, as :mod:`cytoreview.export.imagefolder` writes). Each image file is
  one image with one image-level (``"field"``) item; labels come from ``metadata.csv`` when it lists the file, else
  from the folder name.
* :func:`read_geojson`: a QuPath GeoJSON FeatureCollection (one plane). Points and detections become cells (a
  detection polygon becomes its centroid), annotations become regions (or tiles/fields when our ``cytoreview``
  property says so). Labels come from ``properties.cytoreview.labels``, else ``classification.names``, else
  ``classification.name``.

Imported items are not marked reviewed unless the manifest says so.

Every row and feature is validated before anything is returned: a coordinate that is not a finite number of at most
:data:`MAX_COORD_PX` in magnitude, an empty or too-short polygon ring, or a geometry of the wrong shape is one
:class:`~cytoreview.errors.ExportError` naming the file and the row (CSV lines count the header as line 1) or feature.
A self-intersecting polygon is repaired with shapely's ``make_valid`` (its largest polygon kept) and reported in
``ImportedLabels.warnings``; geometry partly off the image is clipped, and entirely off it is left out, by
:func:`fit_to_plane` once the image's size is known. Rows naming one file by two spellings (``a/../b.tif``,
``./b.tif``, a link) are one image. An ImageFolder's files that are links leading out of its root are not read.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cytoreview.errors import ExportError
from cytoreview.export.table import LABEL_TABLE_COLUMNS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
SPLIT_FOLDERS = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
                 "valid": "validation", "dev": "validation", "test": "test", "testing": "test"}


_TEXT_NONE = ("case_id", "split", "augment", "source", "reviewer", "model")  # written as "none" when missing


#: Largest coordinate magnitude (level-0 px) accepted; no scanned slide comes near 10^8 px a side.
MAX_COORD_PX = 1e8


@dataclass
class ImportedLabels:
    """What an importer read: the label table, the images it refers to, and what it changed or left out (warnings)."""

    table: pd.DataFrame
    images: pd.DataFrame
    warnings: list = field(default_factory=list)
    colors: dict = field(default_factory=dict)  # {class name: "#rrggbb"}, where the label set gives one


def hex_color(value) -> str | None:
    """``#rrggbb`` from a QuPath colour: ``[r, g, b]`` (0-255) or a packed (A)RGB integer; None when malformed."""
    try:
        if isinstance(value, (list, tuple)) and len(value) >= 3:
            r, g, b = (int(v) for v in value[:3])
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            packed = int(value) & 0xFFFFFF
            r, g, b = packed >> 16, (packed >> 8) & 0xFF, packed & 0xFF
        else:
            return None
    except (TypeError, ValueError):
        return None
    if not all(0 <= v <= 255 for v in (r, g, b)):
        return None
    return f"#{r:02x}{g:02x}{b:02x}"


def _coord(value, where: str, what: str) -> float:
    """A finite coordinate of sane magnitude, or an ExportError naming ``where`` and ``what``."""
    if isinstance(value, bool):
        raise ExportError(f"{where}: {what} {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ExportError(f"{where}: {what} {value!r} is not a number") from None
    if not math.isfinite(number) or abs(number) > MAX_COORD_PX:
        raise ExportError(f"{where}: {what} {value!r} is not a finite coordinate within +/-{MAX_COORD_PX:g} px")
    return number


def _int_value(value, where: str, what: str, minimum: int = 0) -> int:
    number = _coord(value, where, what)
    if number != int(number) or number < minimum:
        raise ExportError(f"{where}: {what} {value!r} is not an integer >= {minimum}")
    return int(number)


def canonical_image_path(image_path: str) -> str:
    """The one spelling of an image path: resolved (``..``, ``.``, links) when it exists here, else as written."""
    candidate = Path(image_path).expanduser()
    try:
        return str(candidate.resolve()) if candidate.exists() else str(image_path)
    except OSError:
        return str(image_path)


def _ring_xy(ring, where: str) -> np.ndarray:
    """A polygon ring as ``(n, 2)`` finite x, y, at least three distinct corners."""
    if not isinstance(ring, (list, tuple)) or not ring:
        raise ExportError(f"{where}: a polygon ring is empty")
    points = []
    for k, position in enumerate(ring):
        if not isinstance(position, (list, tuple)) or len(position) < 2:
            raise ExportError(f"{where}: ring position {k} {position!r} is not [x, y]")
        points.append((_coord(position[0], where, f"x of position {k}"), _coord(position[1], where, f"y of position {k}")))
    xy = np.asarray(points, dtype=float)
    if len(xy) > 1 and np.allclose(xy[0], xy[-1]):
        xy = xy[:-1]
    if len(np.unique(xy, axis=0)) < 3:
        raise ExportError(f"{where}: a polygon ring needs at least 3 distinct corners, found {len(xy)}")
    return xy


def _repaired(xy: np.ndarray, where: str, warnings: list) -> np.ndarray:
    """``xy`` if it is a valid polygon; else the largest polygon of shapely's ``make_valid`` repair (reported)."""
    from shapely.geometry import Polygon
    from shapely.validation import explain_validity, make_valid

    polygon = Polygon(xy)
    if polygon.is_valid:
        return xy
    reason = explain_validity(polygon)
    fixed = make_valid(polygon)
    parts = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type == "Polygon" and g.area > 0]
    if not parts:
        raise ExportError(f"{where}: invalid polygon ({reason}) that cannot be repaired (it has no area)")
    best = max(parts, key=lambda g: g.area)
    warnings.append(f"{where}: invalid polygon ({reason}) repaired with make_valid"
                    + (f"; kept the largest of {len(parts)} parts" if len(parts) > 1 else ""))
    return np.asarray(best.exterior.coords, dtype=float)[:-1]


def fit_to_plane(geometry: dict, height: int, width: int) -> tuple[dict | None, bool]:
    """Clip an item's geometry to a ``height x width`` plane.

    Returns
    -------
    (dict or None, bool)
        The geometry (clipped polygons; points and tiles unchanged) and whether it was changed; None when it lies
        entirely off the plane.
    """
    kind = geometry.get("type")
    if kind == "point":
        inside = 0 <= geometry["x"] <= width and 0 <= geometry["y"] <= height
        return (geometry if inside else None), False
    if kind == "tile":
        size = geometry["size_px"]
        inside = geometry["row"] * size < height and geometry["col"] * size < width
        return (geometry if inside else None), False
    if kind != "polygon":
        return geometry, False
    from shapely.geometry import Polygon, box

    yx = np.asarray(geometry["coords"], dtype=float)
    polygon = Polygon(yx[:, ::-1])
    plane = box(0, 0, width, height)
    if plane.contains(polygon):
        return geometry, False
    clipped = polygon.intersection(plane)
    parts = [g for g in getattr(clipped, "geoms", [clipped]) if g.geom_type == "Polygon" and g.area > 0]
    if not parts:
        return None, False
    xy = np.asarray(max(parts, key=lambda g: g.area).exterior.coords, dtype=float)[:-1]
    return {"type": "polygon", "coords": [[float(y), float(x)] for x, y in xy]}, True


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _finish(rows: list[dict], source_name: str, images: dict[str, dict], warnings: list | None = None) -> ImportedLabels:
    """Assign class ids where missing and build the two DataFrames."""
    names = sorted({lbl for r in rows for lbl in r["labels"]})
    known: dict[str, int] = {}
    for r in rows:
        for name, cid in zip(r["labels"], r.get("label_ids") or []):
            known.setdefault(name, int(cid))
    next_id = max(known.values(), default=-1) + 1
    for name in names:
        if name not in known:
            known[name] = next_id
            next_id += 1
    now = _now()
    for i, r in enumerate(rows):
        if not r.get("label_ids") or len(r["label_ids"]) != len(r["labels"]):
            r["label_ids"] = [known[n] for n in r["labels"]]
        r.setdefault("item_id", i + 1)
        r["source"] = f"import:{source_name}"
        for col, default in (("model_label", None), ("confidence", None), ("reviewer", None), ("model", None),
                             ("reviewed", False), ("corrected", False), ("unsure", False), ("updated_at", now),
                             ("z", 0), ("case_id", None)):  # fmt: skip
            if r.get(col) is None or (isinstance(r.get(col), float) and math.isnan(r[col])):
                r[col] = default
    table = pd.DataFrame(rows, columns=[*LABEL_TABLE_COLUMNS, *(["split"] if any("split" in r for r in rows) else [])])
    for col in ("reviewed", "corrected", "unsure"):
        table[col] = table[col].astype(bool)
    image_frame = pd.DataFrame(list(images.values()), columns=["image_id", "image_path", "kind", "mpp", "case_id"])
    return ImportedLabels(table=table, images=image_frame.sort_values("image_id").reset_index(drop=True),
                          warnings=list(warnings or []))


def _clean(value):
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _float(value) -> float:
    value = _clean(value)
    return float("nan") if value is None else float(value)


def _split_labels(value) -> list[str]:
    value = _clean(value)
    if value is None:
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    text = str(value)
    return [v for v in text.split("|") if v != ""]


def read_manifest(path: str | Path, *, mpp: float | None = None) -> ImportedLabels:
    """Read a CSV or Parquet manifest (see the module docstring) into a label table.

    Parameters
    ----------
    path : str or Path
        ``.csv`` or ``.parquet`` file.
    mpp : float, optional
        Pixel size for rows that have no ``mpp`` column value.

    Raises
    ------
    ExportError
        Unreadable file, or no ``label`` column; the message names the file.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype={"case_id": "string", "reviewer": "string", "model": "string",
                                             "model_label": "string", "split": "string", "path": "string",
                                             "filename": "string", "image_key": "string", "name": "string",
                                             "label_ids": "string", "label": "string"})
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read manifest {path}: {exc}") from exc
    if "label" not in frame.columns:
        raise ExportError(f"manifest {path} has no 'label' column")
    images: dict[str, dict] = {}
    rows: list[dict] = []
    warnings: list[str] = []
    records = frame.to_dict(orient="records")
    for n, rec in enumerate(records):
        rec = {k: _clean(v) for k, v in rec.items()}
        p, fname, key = rec.get("path"), rec.get("filename"), rec.get("image_key")
        crop_file = p is None and fname is None and rec.get("file_name") is not None
        if crop_file:  # an HF-style metadata.csv of crops: each file (relative to the csv) is one whole item
            fname = rec["file_name"]
            rec.update(geometry=None, level="field", field=0, z=0, x_min=None, y_min=None, x_max=None, y_max=None)
            if rec.get("crop_mpp") is not None:  # the crop's own pixel size (it may have been resampled)
                rec["mpp"] = rec["crop_mpp"]
        if key is not None and p == key:
            image_path = str(key)  # de-identified manifest: the image key stands for the image
        elif p is not None and fname is not None and Path(str(p)).name != str(fname):
            image_path = str(Path(str(p)) / str(fname))
        else:
            image_path = str(p if p is not None else fname if fname is not None else key)
        where = f"manifest {path}, row {n + 2}"
        if image_path == "None":
            raise ExportError(f"{where}: no path, filename or image column to name the image")
        beside = path.parent / image_path
        if not Path(image_path).is_absolute() and not Path(image_path).exists() and beside.exists():
            image_path = str(beside)  # a relative path names a file next to the manifest
        image_path = canonical_image_path(image_path)
        case_id = rec.get("case_id")
        if case_id is None and "case_id" not in frame.columns and rec.get("name") is not None:
            case_id = str(rec["name"])
        row_mpp = rec.get("mpp", mpp)
        if row_mpp is not None:
            row_mpp = _coord(row_mpp, where, "mpp")
            if not row_mpp > 0:
                raise ExportError(f"{where}: mpp {row_mpp!r} must be > 0 um/px")
        row_mpp = float(row_mpp) if row_mpp is not None else float("nan")
        if image_path not in images:
            image_id = (_int_value(rec["image_id"], where, "image_id", 1) if rec.get("image_id") is not None
                        else len(images) + 1)
            level = rec.get("level")
            images[image_path] = {"image_id": image_id, "image_path": image_path, "kind": "wsi", "mpp": row_mpp,
                                  "case_id": None if case_id is None else str(case_id)}
        img = images[image_path]
        field = _int_value(rec.get("field") or 0, where, "field")
        level = rec.get("level")
        if level is not None and level not in ("field", "tile", "cell", "region"):
            raise ExportError(f"{where}: level {level!r} is not one of field, tile, cell, region")
        if level == "field" or field > 0:
            img["kind"] = "fields"
        box = [rec.get(k) for k in ("x_min", "y_min", "x_max", "y_max")]
        box = [None if v is None else _coord(v, where, k) for v, k in zip(box, ("x_min", "y_min", "x_max", "y_max"))]
        geometry = rec.get("geometry")
        if geometry is not None:
            geometry = _checked_geometry(geometry, where, warnings)
        if geometry is None:
            if any(v is None for v in box):
                geometry, level = json.dumps({"type": "field"}), level or "field"
                box = [0, 0, 0, 0]
            elif box[0] == box[2] and box[1] == box[3]:
                geometry, level = json.dumps({"type": "point", "y": box[1], "x": box[0]}), level or "cell"
            else:
                x0, y0, x1, y1 = box
                if x1 < x0 or y1 < y0:
                    raise ExportError(f"{where}: box x_min..x_max {x0:g}..{x1:g}, y_min..y_max {y0:g}..{y1:g} is "
                                      "inverted")
                if x1 == x0 or y1 == y0:
                    raise ExportError(f"{where}: box {x0:g},{y0:g}..{x1:g},{y1:g} is a line, neither a point nor a region")
                coords = [[y0, x0], [y0, x1], [y1, x1], [y1, x0]]
                geometry, level = json.dumps({"type": "polygon", "coords": coords}), level or "region"
        labels = [name.strip() for name in _split_labels(rec.get("label")) if name.strip()]
        ids = [_int_value(v, where, "label_ids") for v in _split_labels(rec.get("label_ids"))]
        row = {
            "item_id": _int_value(rec["idx"], where, "idx") if rec.get("idx") is not None else n + 1,
            "image_id": img["image_id"], "image_path": image_path, "case_id": img["case_id"],
            "level": level, "field": field, "z": _int_value(rec.get("z") or 0, where, "z"),
            "x_min": _float(box[0]), "y_min": _float(box[1]), "x_max": _float(box[2]), "y_max": _float(box[3]),
            "geometry": geometry, "labels": labels, "label_ids": ids, "model_label": rec.get("model_label"),
            "confidence": rec.get("confidence"), "reviewer": rec.get("reviewer"), "model": rec.get("model"),
            "mpp": row_mpp, "reviewed": bool(rec.get("reviewed") or False),
            "corrected": bool(rec.get("corrected") or False), "unsure": bool(rec.get("unsure") or False),
            "updated_at": rec.get("updated_at"),
        }
        if "split" in frame.columns:
            row["split"] = rec.get("split")
        rows.append(row)
    return _finish(rows, path.name, images, warnings)


def _checked_geometry(geometry, where: str, warnings: list) -> str:
    """A manifest's ``geometry`` cell validated (and an invalid polygon repaired) as our canonical JSON."""
    from cytoreview.errors import ProjectError
    from cytoreview.review.geometry import canonical, to_json

    try:
        parsed = json.loads(geometry) if isinstance(geometry, str) else geometry
        geom = canonical(parsed)
    except (ProjectError, TypeError, ValueError) as exc:
        raise ExportError(f"{where}: geometry {str(geometry)[:80]!r} is invalid ({exc})") from None
    if geom["type"] == "point":
        geom = {"type": "point", "y": _coord(geom["y"], where, "y"), "x": _coord(geom["x"], where, "x")}
    elif geom["type"] == "polygon":
        ring = [[x, y] for y, x in geom["coords"]]
        xy = _repaired(_ring_xy(ring, where), where, warnings)
        geom = {"type": "polygon", "coords": [[float(y), float(x)] for x, y in xy]}
    return to_json(geom)


def read_imagefolder(root: str | Path, *, mpp: float | None = None) -> ImportedLabels:
    """Read a class-per-folder image dataset (see the module docstring) into a label table.

    Parameters
    ----------
    root : str or Path
        The dataset folder (``<class>/*.png`` or ``<split>/<class>/*.png``).
    mpp : float, optional
        Pixel size of the images when no ``metadata.csv`` gives ``crop_mpp``.
    """
    from PIL import Image as PILImage

    root = Path(root)
    if not root.is_dir():
        raise ExportError(f"image folder {root} does not exist or is not a folder")
    meta: dict[Path, dict] = {}
    for meta_path in sorted(root.rglob("metadata.csv")):
        try:
            frame = pd.read_csv(meta_path, dtype={"case_id": "string", "labels": "string", "label": "string"})
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot read {meta_path}: {exc}") from exc
        if "file_name" not in frame.columns:
            raise ExportError(f"{meta_path} has no file_name column")
        for rec in frame.to_dict(orient="records"):
            rec = {k: _clean(v) for k, v in rec.items()}
            rec = {k: (None if k in _TEXT_NONE and v == "none" else v) for k, v in rec.items()}
            meta[(meta_path.parent / str(rec["file_name"])).resolve()] = rec
    real_root = root.resolve()
    warnings: list[str] = []
    files, outside = [], []
    for p in sorted(root.rglob("*")):
        if not (p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            continue
        target = p.resolve()
        if target != real_root and real_root not in target.parents:
            outside.append(p)
        else:
            files.append(p)
    if outside:
        shown = ", ".join(str(p.relative_to(root)) for p in outside[:5]) + (" ..." if len(outside) > 5 else "")
        warnings.append(f"image folder {root}: {len(outside)} file(s) are links leading out of the folder and were "
                        f"not read: {shown}")
    if not files:
        raise ExportError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}"
                          + (" (only links leading out of it)" if outside else ""))
    rows, images = [], {}
    seen_targets: dict[Path, Path] = {}
    for n, file in enumerate(files):
        rel = file.relative_to(root).parts
        split = SPLIT_FOLDERS.get(rel[0].lower()) if len(rel) >= 3 else None
        if len(rel) < 2:
            raise ExportError(f"{file} is not inside a class folder")
        target = file.resolve()
        if target in seen_targets:  # a link inside the folder to another of its files: the same image twice
            warnings.append(f"image folder {root}: {file.relative_to(root)} is the same file as "
                            f"{seen_targets[target].relative_to(root)}; read once")
            continue
        seen_targets[target] = file
        rec = meta.get(target, {})
        labels = _split_labels(rec.get("labels")) or _split_labels(rec.get("label")) or [rel[-2]]
        try:
            with PILImage.open(file) as im:  # reads the header only
                width, height = im.size
        except OSError as exc:
            raise ExportError(f"cannot read image {file}: {exc}") from exc
        row_mpp = rec.get("crop_mpp", mpp)
        row_mpp = float(row_mpp) if row_mpp is not None else float("nan")
        case_id = rec.get("case_id")
        image_id = len(images) + 1
        images[str(file)] = {"image_id": image_id, "image_path": str(file), "kind": "wsi", "mpp": row_mpp,
                             "case_id": case_id}
        row = {
            "item_id": n + 1, "image_id": image_id, "image_path": str(file), "case_id": case_id, "level": "field",
            "field": 0, "z": 0, "x_min": 0.0, "y_min": 0.0, "x_max": float(width), "y_max": float(height),
            "geometry": json.dumps({"type": "field"}), "labels": labels,
            "label_ids": [int(rec["class_id"])] if rec.get("class_id") is not None and len(labels) == 1 else [],
            "mpp": row_mpp, "confidence": rec.get("confidence"), "reviewer": rec.get("reviewer"),
            "model": rec.get("model"),
        }
        if split is not None:
            row["split"] = split
        rows.append(row)
    return _finish(rows, root.name, images, warnings)


def read_geojson(
    path: str | Path,
    *,
    image_path: str | Path | None = None,
    image_id: int = 1,
    mpp: float | None = None,
    case_id: str | None = None,
    field: int | None = None,
) -> ImportedLabels:
    """Read a QuPath GeoJSON FeatureCollection (one plane) into a label table.

    Parameters
    ----------
    path : str or Path
        The ``.geojson`` / ``.json`` file.
    image_path : str or Path, optional
        The image the objects belong to; default the file's stem (a de-identified plane key).
    image_id : int
        Image id for the rows.
    mpp : float, optional
        Pixel size of the image (NaN when unknown).
    case_id : str, optional
        Case id for the rows.
    field : int, optional
        Field index; default parsed from a ``_f<number>`` suffix of the file stem, else 0.

    Raises
    ------
    ExportError
        Unreadable or malformed file, or a feature without a class; the message names the file and feature.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read GeoJSON {path}: {exc}") from exc
    if isinstance(data, list):
        features = data
    elif isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features", [])
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    else:
        raise ExportError(f"{path} is not a GeoJSON FeatureCollection")
    if field is None:
        m = re.search(r"_f(\d+)$", path.stem.replace(".geojson", ""))
        field = int(m.group(1)) if m else 0
    if image_path is None:  # our exports name the de-identified image in every feature; else the plane's file name
        named = {str(((f.get("properties") or {}).get("cytoreview") or {}).get("image_key") or "")
                 for f in features if isinstance(f, dict) and isinstance(f.get("properties") or {}, dict)
                 and isinstance((f.get("properties") or {}).get("cytoreview") or {}, dict)}  # fmt: skip
        image_path = named.pop() if len(named) == 1 and "" not in named else path.stem
    image_path = str(image_path)
    row_mpp = float(mpp) if mpp is not None else float("nan")
    images = {image_path: {"image_id": image_id, "image_path": image_path, "kind": "fields" if field else "wsi",
                           "mpp": row_mpp, "case_id": case_id}}
    rows, warnings = [], []
    colors: dict[str, str] = {}
    if not isinstance(features, list):
        raise ExportError(f"{path}: 'features' is not a list")
    for n, feat in enumerate(features):
        where = f"{path}: feature {n}"
        try:
            geometry = feat["geometry"]
            props = feat.get("properties") or {}
            gtype = geometry["type"]
            coords = geometry["coordinates"]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ExportError(f"{where} has no geometry") from exc
        if not isinstance(props, dict):
            raise ExportError(f"{where}: properties is not an object")
        ours = props.get("cytoreview") or {}
        cls = props.get("classification") or {}
        if not isinstance(ours, dict) or not isinstance(cls, dict):
            raise ExportError(f"{where}: properties.cytoreview / classification is not an object")
        raw_labels = ours.get("labels") or cls.get("names") or ([cls["name"]] if cls.get("name") else [])
        if not isinstance(raw_labels, (list, tuple)):
            raise ExportError(f"{where}: labels {raw_labels!r} is not a list of names")
        labels = [str(v) for v in raw_labels if str(v).strip()]
        if not labels:
            raise ExportError(f"{where} has no classification")
        color = hex_color(cls.get("color")) if cls.get("name") else None
        if color is not None:
            colors.setdefault(str(cls["name"]), color)
        level = ours.get("level")
        if level is not None and level not in ("field", "tile", "cell", "region"):
            raise ExportError(f"{where}: level {level!r} is not one of field, tile, cell, region")
        object_type = props.get("objectType", "annotation")
        if gtype == "Point":
            if not isinstance(coords, (list, tuple)) or len(coords) < 2:
                raise ExportError(f"{where}: Point coordinates {coords!r} are not [x, y]")
            x, y = _coord(coords[0], where, "x"), _coord(coords[1], where, "y")
            geom, level = {"type": "point", "y": y, "x": x}, level or "cell"
            box = (x, y, x, y)
        elif gtype in ("Polygon", "MultiPolygon"):
            if not isinstance(coords, (list, tuple)) or not coords:
                raise ExportError(f"{where}: {gtype} has no rings")
            polygons = [coords] if gtype == "Polygon" else list(coords)
            rings = []
            for poly in polygons:
                if not isinstance(poly, (list, tuple)) or not poly:
                    raise ExportError(f"{where}: {gtype} has an empty polygon")
                rings.append(_ring_xy(poly[0], where))
            xy = _repaired(max(rings, key=len), where, warnings)
            x0, y0 = xy.min(axis=0)
            x1, y1 = xy.max(axis=0)
            box = (float(x0), float(y0), float(x1), float(y1))
            if level is None:
                level = "cell" if object_type in ("detection", "cell", "tile") else "region"
            if level == "cell":
                cx, cy = float(xy[:, 0].mean()), float(xy[:, 1].mean())
                geom, box = {"type": "point", "y": cy, "x": cx}, (cx, cy, cx, cy)
            elif level == "tile":
                size = x1 - x0
                if not size >= 1:
                    raise ExportError(f"{where}: a tile polygon {size:g} px wide")
                geom = {"type": "tile", "row": int(round(y0 / size)), "col": int(round(x0 / size)),
                        "size_px": int(round(size))}
                if geom["row"] < 0 or geom["col"] < 0:
                    raise ExportError(f"{where}: tile at negative row/col ({geom['row']}, {geom['col']})")
            elif level == "field":
                geom = {"type": "field"}
            else:
                geom = {"type": "polygon", "coords": [[float(y), float(x)] for x, y in xy]}
        else:
            raise ExportError(f"{where} has unsupported geometry {gtype!r}")
        conf = ours.get("confidence")
        if conf is None:
            conf = (props.get("measurements") or {}).get("confidence") if isinstance(props.get("measurements"), dict) else None
        rows.append(
            {
                "item_id": int(ours["item_id"]) if ours.get("item_id") is not None else n + 1,
                "image_id": image_id, "image_path": image_path, "case_id": case_id, "level": level,
                "field": field, "z": 0, "x_min": box[0], "y_min": box[1], "x_max": box[2], "y_max": box[3],
                "geometry": json.dumps(geom), "labels": labels, "label_ids": [], "mpp": row_mpp,
                "confidence": conf, "reviewer": ours.get("reviewer"), "model": ours.get("model"),
            }
        )
    imported = _finish(rows, path.name, images, warnings)
    imported.colors = colors
    return imported


def import_labels(path: str | Path, **kwargs) -> ImportedLabels:
    """Read any supported label set: a folder (ImageFolder), ``.csv``/``.parquet`` (manifest) or ``.geojson``."""
    import inspect

    path = Path(path)
    if not path.exists():
        raise ExportError(f"label set {path} does not exist")
    suffix = path.suffix.lower()
    if path.is_dir():
        reader, what = read_imagefolder, "an image folder"
    elif suffix in (".csv", ".parquet", ".pq"):
        reader, what = read_manifest, "a CSV/Parquet manifest"
    elif suffix in (".geojson", ".json"):
        reader, what = read_geojson, "a GeoJSON file"
    else:
        reader = None
    if reader is not None:
        accepted = set(inspect.signature(reader).parameters) - {"path", "root"}
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            hint = {"image_path": " (--image is for GeoJSON only: a manifest names its images in its path column)"}
            raise ExportError(f"{path}: {', '.join(unknown)} does not apply to {what}"
                              + "".join(hint.get(k, "") for k in unknown))
        return reader(path, **kwargs)
    raise ExportError(f"cannot tell the label format of {path} (expected a folder, .csv, .parquet or .geojson)")
