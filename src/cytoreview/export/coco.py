"""COCO object-detection JSON that pycocotools opens (``COCO(path)``, ``getAnnIds``, ``annToMask``).

* ``images``: one entry per plane that has items (a slide, or one field), with ``width``/``height`` in level-0
  pixels and ``file_name`` = the de-identified plane key (the real file only with ``include_paths=True``). Extra
  keys: ``plane``, ``case_id``, ``field``, ``z``, ``mpp``, ``split``, and the image-level (field) labels as
  ``labels`` (names) and ``category_ids``.
* ``categories``: one per class, ``id`` = class id + 1 (0 is background for most trainers), ``class_id``,
  ``name``, ``supercategory`` (the item level), ``keypoints: ["center"]``.
* ``annotations``: cells as a disc polygon of ``cell_diameter_um`` with its ``bbox`` and one keypoint (the centre,
  visibility 2); tiles and regions as their polygon (``segmentation``) with ``area`` and ``bbox``. An item with
  several labels gives one annotation per label (same geometry, same ``item_id``). Field labels are image-level only.

Coordinates are level-0 pixels of the plane. ``instances.json`` holds every split; with splits, also
``instances_<split>.json`` per split.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path

import pandas as pd

from cytoreview.export.images import ImageSource
from cytoreview.export.table import class_order, disc_ring, outline_xy, parse_geometry, plane_keys, polygon_area
from cytoreview.export.writing import write_text


def build_coco(
    table: pd.DataFrame,
    source: ImageSource,
    *,
    cell_diameter_um: float = 10.0,
    include_paths: bool = False,
) -> dict:
    """Return the COCO dict for a validated, filtered label table (see the module docstring)."""
    classes = class_order(table)
    categories = []
    level_of: dict[str, str] = {}
    for lvl, labels in zip(table["level"], table["labels"]):
        for name in labels:
            level_of.setdefault(name, lvl)
    cat_id = {name: cid + 1 for cid, name in classes}
    for cid, name in classes:
        categories.append(
            {"id": cid + 1, "class_id": cid, "name": name, "supercategory": level_of.get(name, ""),
             "keypoints": ["center"], "skeleton": []}
        )  # fmt: skip
    planes = plane_keys(table)
    images: list[dict] = []
    image_index: dict[str, dict] = {}
    annotations: list[dict] = []
    has_split = "split" in table.columns
    cols = ["item_id", "image_id", "image_path", "case_id", "level", "field", "z", "geometry", "labels", "mpp",
            "x_min", "y_min", "x_max", "y_max", "confidence", "source", "reviewer", "model"]  # fmt: skip
    splits = table["split"].tolist() if has_split else [None] * len(table)
    for plane, split, row in zip(planes, splits, table[cols].itertuples(index=False)):
        r = row._asdict()
        entry = image_index.get(plane)
        if entry is None:
            image = source.get(r["image_id"], r["image_path"])
            height, width = image.plane_shape
            if include_paths:
                names = getattr(image, "field_names", None) or []
                if image.kind == "fields" and int(r["field"]) < len(names):
                    file_name = str(Path(str(r["image_path"])) / names[int(r["field"])])
                else:
                    file_name = str(r["image_path"])
            else:
                file_name = plane
            entry = {
                "id": len(images) + 1, "file_name": file_name, "width": int(width), "height": int(height),
                "plane": plane, "case_id": None if pd.isna(r["case_id"]) else str(r["case_id"]),
                "field": int(r["field"]), "z": int(r["z"]), "mpp": float(r["mpp"]),
                "split": split if isinstance(split, str) else None, "labels": [], "category_ids": [],
            }  # fmt: skip
            images.append(entry)
            image_index[plane] = entry
        geom = parse_geometry(r["geometry"], r["item_id"])
        if r["level"] == "field" or geom["type"] == "field":
            for name in r["labels"]:
                if name not in entry["labels"]:
                    entry["labels"].append(name)
                    entry["category_ids"].append(cat_id[name])
            continue
        keypoints, n_kp = [0, 0, 0], 0
        if geom["type"] == "point":
            x, y = float(geom["x"]), float(geom["y"])
            radius = cell_diameter_um / float(r["mpp"]) / 2.0
            ring = disc_ring(x, y, radius)[:-1]
            xy = [(p[0], p[1]) for p in ring]
            keypoints, n_kp = [x, y, 2], 1
        else:
            xy = outline_xy(geom, r)
        xs, ys = [p[0] for p in xy], [p[1] for p in xy]
        bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        seg = [float(v) for p in xy for v in p]
        area = polygon_area(xy)
        conf = r["confidence"]
        conf = None if conf is None or (isinstance(conf, float) and math.isnan(conf)) else float(conf)
        for name in r["labels"]:
            annotations.append(
                {
                    "id": len(annotations) + 1, "image_id": entry["id"], "category_id": cat_id[name],
                    "segmentation": [seg], "area": area, "bbox": bbox, "iscrowd": 0,
                    "keypoints": keypoints, "num_keypoints": n_kp,
                    "item_id": int(r["item_id"]), "level": r["level"], "confidence": conf,
                    "source": r["source"], "reviewer": r["reviewer"] if isinstance(r["reviewer"], str) else None,
                }  # fmt: skip
            )
    return {
        "info": {
            "description": "cytoreview label export",
            "version": "1.0",
            "date_created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def subset(coco: dict, split: str) -> dict:
    """The part of a COCO dict whose images are in ``split``."""
    keep = {im["id"] for im in coco["images"] if im.get("split") == split}
    return {
        **coco,
        "images": [im for im in coco["images"] if im["id"] in keep],
        "annotations": [a for a in coco["annotations"] if a["image_id"] in keep],
    }


def write_coco(table: pd.DataFrame, out_dir: Path, source: ImageSource, **kwargs) -> list[Path]:
    """Write ``instances.json`` (and ``instances_<split>.json``) into ``out_dir``; return the paths written."""
    coco = build_coco(table, source, **kwargs)
    out_dir = Path(out_dir)
    written = [write_text(out_dir / "instances.json", json.dumps(coco, separators=(",", ":")))]
    if "split" in table.columns:
        for split in sorted(set(im["split"] for im in coco["images"] if im["split"])):
            path = out_dir / f"instances_{split}.json"
            written.append(write_text(path, json.dumps(subset(coco, split), separators=(",", ":"))))
    return written
