"""ImageFolder crops: one folder per class, with ``metadata.csv`` beside, as Hugging Face ``imagefolder`` reads it.

Layout (``<split>`` folders only when the export has splits; HF ``datasets`` takes ``train``/``validation``/
``test`` folder names as split names)::

    imagefolder/
      train/
        metadata.csv                 file_name (relative to this folder), label, labels, class_id, ...
        lymphocytes/<plane>_i<item>.png
        lymphocytes/<plane>_i<item>_a<n>.png     augmented copy (balancing)
      validation/ ...
      test/ ...

Without splits, the class folders and ``metadata.csv`` sit directly in ``imagefolder/``. Folder names come from
:func:`cytoreview.export.names.safe_names` (the ``label`` column keeps the true class name). Crops:

* cells (points): a square of ``crop_um`` micrometres (or ``crop_px`` level-0 pixels), rounded to whole pixels,
  centred on the point (to the nearest pixel), so a crop at level 0 is the image's own pixels, never resampled;
* tiles, regions (polygon bounding box) and fields (the whole field): their bounding box;
* resampled to ``crop_mpp`` µm/px when given (read from the matching pyramid level), and never larger than
  ``max_crop_px`` on the longer side; read with ``Image.read_region`` (white outside the image), never the whole slide.

Multi-label items go into the folder of their **first** label; ``labels`` in metadata.csv has all of them.
A ``README.md`` dataset card at the root declares the columns for HF ``datasets``: its YAML ``configs`` entry
gives ``features`` with ``label`` as a ``ClassLabel`` whose names are the export's classes in schema order (class id,
then name). ``load_dataset(ROOT)`` reads that card (the folder-based builder then reads metadata.csv with those
types and encodes each ``label`` name to its index); ``load_dataset("imagefolder", data_dir=ROOT)`` never opens a
card, so there ``label`` stays the class name as text (pass ``features=`` yourself, e.g. from
:func:`dataset_card_features`).
In metadata.csv a missing text value (no case id, no reviewer, no augmentation) is written as ``none``: HF
``datasets`` infers column types per file and refuses splits whose metadata files disagree (an all-empty column
reads as float).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cytoreview.errors import ExportError
from cytoreview.export.balance import augment_crop
from cytoreview.export.images import ImageSource, read_crop
from cytoreview.export.names import image_key, safe_names
from cytoreview.export.table import class_order, parse_geometry, plane_keys
from cytoreview.export.writing import atomic_dir, os_error
from cytoreview.review import geometry as review_geometry

IMAGE_FORMATS = ("png", "jpg")
#: Text columns of metadata.csv; a missing value is written as MISSING_TEXT so every split's file has the same types.
TEXT_COLUMNS = ("case_id", "split", "augment", "source", "reviewer", "model")
MISSING_TEXT = "none"


def crop_box(geom: dict, row, *, side_px: float) -> tuple[float, float, float, float]:
    """Level-0 box ``(x0, y0, x1, y1)`` to crop for one item (see the module docstring)."""
    if geom["type"] == "point":
        # snapped to whole level-0 pixels: a fractional box would be read one pixel larger and resampled
        side = max(1, int(round(side_px)))
        x0 = math.floor(float(geom["x"]) - side / 2.0 + 0.5)
        y0 = math.floor(float(geom["y"]) - side / 2.0 + 0.5)
        return float(x0), float(y0), float(x0 + side), float(y0 + side)
    if geom["type"] in ("tile", "polygon"):
        x0, y0, x1, y1 = (float(v) for v in review_geometry.bbox(geom, None))  # the project's own boxes
        if geom["type"] == "tile":  # an edge tile's stored box is clipped to the image (the grid's edge rule)
            stored = [row.get(k) for k in ("x_max", "y_max")] if hasattr(row, "get") else [None, None]
            stored = [float(v) if v is not None and not math.isnan(float(v)) else None for v in stored]
            x1 = min(x1, stored[0]) if stored[0] is not None else x1
            y1 = min(y1, stored[1]) if stored[1] is not None else y1
    else:
        x0, y0, x1, y1 = (float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
        if any(math.isnan(v) for v in (x0, y0, x1, y1)):
            raise ExportError(f"item {row['item_id']}: field item without a known size")
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def _hf_dtype(series: pd.Series) -> str:
    """The HF ``datasets`` value type a metadata.csv column is read as."""
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int64"
    if pd.api.types.is_float_dtype(series):
        return "float64"
    return "string"


def dataset_card_features(frames: Sequence[pd.DataFrame], class_names: Sequence[str]) -> list[dict]:
    """HF ``datasets`` features (the YAML list form of a dataset card) for the metadata.csv ``frames``.

    ``file_name`` becomes the ``image`` column, ``label`` a ``class_label`` with ``class_names`` in order; every other
    column gets the widest type it has in any split (text over float over int), so all splits read alike.
    """
    rank = {"bool": 0, "int64": 1, "float64": 2, "string": 3}
    columns: dict[str, str] = {}
    for frame in frames:
        for col in frame.columns:
            kind = _hf_dtype(frame[col])
            if col in columns and rank[columns[col]] > rank[kind]:
                continue
            columns[col] = kind
    out: list[dict] = []
    for col, kind in columns.items():
        if col == "file_name":
            out.append({"name": "image", "dtype": "image"})
        elif col == "label":
            names = {str(i): str(name) for i, name in enumerate(class_names)}
            out.append({"name": "label", "dtype": {"class_label": {"names": names}}})
        else:
            out.append({"name": col, "dtype": kind})
    return out


def write_dataset_card(path: Path, features: list[dict]) -> None:
    """Write the ``README.md`` dataset card whose YAML ``configs`` entry carries ``features``."""
    import yaml

    header = yaml.safe_dump({"configs": [{"config_name": "default", "features": features}]}, sort_keys=False,
                            allow_unicode=True)
    body = (
        "Crops exported by cytoreview: one folder per class, metadata.csv beside.\n\n"
        "`datasets.load_dataset(<this folder>)` reads `label` as a ClassLabel (the class names above, in schema "
        "order); the other columns are those of metadata.csv.\n"
    )
    path.write_text(f"---\n{header}---\n\n{body}", encoding="utf-8")


def _save(path: Path, rgb: np.ndarray, fmt: str) -> None:
    from PIL import Image as PILImage

    img = PILImage.fromarray(rgb, mode="RGB") if rgb.ndim == 3 else PILImage.fromarray(rgb)
    if fmt == "png":
        img.save(path, format="PNG", compress_level=1)
    else:
        img.save(path, format="JPEG", quality=95)


def write_imagefolder(
    table: pd.DataFrame,
    out_dir: Path,
    source: ImageSource,
    *,
    crop_um: float | None = 32.0,
    crop_px: int | None = None,
    crop_mpp: float | None = None,
    max_crop_px: int = 1024,
    image_format: str = "png",
    class_names: Sequence[str] | None = None,
    progress=None,
) -> Path:
    """Write the crops and ``metadata.csv`` files into ``out_dir`` (replaced atomically); return ``out_dir``.

    Parameters
    ----------
    table : pandas.DataFrame
        Validated, filtered label table; optional ``split`` and ``augment`` columns (from balancing).
    out_dir : Path
        The ImageFolder root (created; an existing one is replaced only when the new one is complete).
    source : ImageSource
        Opened images.
    crop_um, crop_px : float, int
        Side of cell crops in micrometres, or in level-0 pixels (``crop_px`` wins when both are given).
    crop_mpp : float, optional
        Pixel size of the saved crops; default level 0's.
    max_crop_px : int
        Longest side of a saved crop; larger boxes are resampled down.
    image_format : {"png", "jpg"}
    class_names : sequence of str, optional
        Class names in schema order, the ``ClassLabel`` names of the dataset card; default the table's classes
        sorted by class id (:func:`cytoreview.export.table.class_order`). Must hold every first label.
    progress : callable, optional
        ``progress(done, total)`` every 64 crops and at the end.
    """
    if image_format not in IMAGE_FORMATS:
        raise ExportError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    if crop_px is None and (crop_um is None or crop_um <= 0):
        raise ExportError("cell crops need crop_um > 0 or crop_px > 0")
    folders = safe_names(lbl for labels in table["labels"] for lbl in labels[:1])
    names = list(class_names) if class_names is not None else [name for _, name in class_order(table)]
    missing = sorted(set(folders) - set(names))
    if missing:
        raise ExportError(f"class_names lacks the classes {missing} of the label table")
    planes = plane_keys(table)
    has_split = "split" in table.columns and table["split"].astype(str).str.len().gt(0).any()
    augments = table["augment"].tolist() if "augment" in table.columns else [""] * len(table)
    copy_no: dict[int, int] = {}
    rows: dict[str, list[dict]] = {}
    total = len(table)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for n, (plane, augment, (_, row)) in enumerate(zip(planes, augments, table.iterrows())):
            geom = parse_geometry(row["geometry"], row["item_id"])
            image = source.get(row["image_id"], row["image_path"], row["mpp"])
            side = float(crop_px) if crop_px else float(crop_um) / float(image.mpp)
            box = crop_box(geom, row, side_px=side)
            crop, mpp_out = read_crop(
                image, box, field=int(row["field"]), z=int(row["z"]), out_mpp=crop_mpp, max_side_px=max_crop_px
            )
            item_id = int(row["item_id"])
            stem = f"{plane}_i{item_id}"
            if augment:
                k = copy_no[item_id] = copy_no.get(item_id, 0) + 1
                crop = augment_crop(crop, augment)
                stem = f"{stem}_a{k}"
            labels = list(row["labels"])
            folder = folders[labels[0]]
            split = str(row["split"]) if has_split else ""
            base = tmp / split if split else tmp
            rel = f"{folder}/{stem}.{image_format}"
            target = base / rel
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                _save(target, crop, image_format)
            except OSError as exc:
                raise os_error(out_dir / (split or ".") / rel, exc) from exc
            case = row["case_id"]
            rows.setdefault(split, []).append(
                {
                    "file_name": rel,
                    "label": labels[0],
                    "labels": "|".join(labels),
                    "class_id": int(row["label_ids"][0]),
                    "item_id": item_id,
                    "image_key": image_key(int(row["image_id"]), None if pd.isna(case) else case),
                    "plane": plane,
                    "case_id": None if pd.isna(case) else str(case),
                    "level": row["level"],
                    "field": int(row["field"]),
                    "split": split,
                    "x_min": box[0], "y_min": box[1], "x_max": box[2], "y_max": box[3],
                    "mpp": float(row["mpp"]),
                    "crop_mpp": mpp_out,
                    "scaling": float(row["mpp"]) / mpp_out,
                    "augment": augment,
                    "source": row["source"],
                    "reviewer": row["reviewer"],
                    "model": row["model"],
                    "confidence": row["confidence"],
                }
            )
            if progress is not None and ((n + 1) % 64 == 0 or n + 1 == total):
                progress(n + 1, total)
        frames = []
        for split, items in rows.items():
            path = (tmp / split if split else tmp) / "metadata.csv"
            frame = pd.DataFrame(items)
            for col in TEXT_COLUMNS:  # an empty text column would read back as float and HF would refuse the splits
                frame[col] = [v if isinstance(v, str) and v != "" else MISSING_TEXT for v in frame[col]]
            frame["confidence"] = pd.to_numeric(frame["confidence"], errors="coerce").astype("float64")
            frames.append(frame)
            try:
                frame.to_csv(path, index=False, encoding="utf-8")
            except OSError as exc:
                raise os_error(out_dir / (split or ".") / "metadata.csv", exc) from exc
        if frames:
            try:
                write_dataset_card(tmp / "README.md", dataset_card_features(frames, names))
            except OSError as exc:
                raise os_error(out_dir / "README.md", exc) from exc
    return out_dir
