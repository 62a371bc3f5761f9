"""COCO object-detection JSON that pycocotools opens (``COCO(path)``, ``getAnnIds``, ``annToMask``).

* ``images``: one entry per plane that has items (a slide, or one field), with ``width``/``height`` in level-0
  pixels and ``file_name`` = the plane's pixels the export wrote, ``images/<plane key>.png`` (``.tif`` for a large
  slide), relative to the folder of ``instances.json`` (the real file only with ``include_paths=True``). Extra
  keys: ``plane``, ``case_id``, ``field``, ``z``, ``mpp``, ``split``, and the image-level (field) labels as
  ``labels`` (names) and ``category_ids``.
* ``categories``: one per class, ``id`` = 1 + position of the class sorted by class id (ids start at 1: 0 is
  background for most trainers), ``class_id`` (the project's id),
  ``name``, ``supercategory`` (the item level), ``keypoints: ["center"]``.
* ``annotations``: cells as an octagon of ``cell_diameter_um`` (coordinates rounded to 0.01 px) with its ``bbox`` and one keypoint (the centre,
  visibility 2); tiles and regions as their polygon (``segmentation``) with ``area`` and ``bbox``. An item with
  several labels gives one annotation per label (same geometry, same ``item_id``). Field labels are image-level only.

Coordinates are level-0 pixels of the plane. ``instances.json`` holds every split; with splits, also
``instances_<split>.json`` per split.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cytoreview.export.images import ImageSource
from cytoreview.export.table import (
    class_order,
    column,
    disc_area,
    disc_rings,
    geometries,
    outline_xy,
    plane_keys,
    polygon_area,
)
from cytoreview.export.writing import atomic_dir, write_with

#: Vertices of the polygon that stands for a cell (a point) in ``segmentation``.
CELL_VERTICES = 8
#: Planes up to this many pixels on their longer side are written as PNG; larger ones as a tiled TIFF.
PNG_MAX_SIDE_PX = 8192
#: Tile side of the TIFF written for a large plane (also the height of the bands read from the slide).
TIFF_TILE_PX = 512


class _Coco:
    """The parts of a COCO export: ``images`` and ``categories`` (small, built at once) and the annotations,
    generated one at a time (a million cells never sit in memory as dicts)."""

    def __init__(self, table: pd.DataFrame, source: ImageSource, *, cell_diameter_um: float = 10.0,
                 include_paths: bool = False):
        classes = class_order(table)
        level_of: dict[str, str] = {}
        for lvl, labels in zip(table["level"], table["labels"]):
            for name in labels:
                level_of.setdefault(name, lvl)
        self.cat_id = cat_id = {name: k + 1 for k, (_, name) in enumerate(classes)}
        self.categories = [
            {"id": cat_id[name], "class_id": cid, "name": name, "supercategory": level_of.get(name, ""),
             "keypoints": ["center"], "skeleton": []}
            for cid, name in classes
        ]
        self.planes = plane_keys(table).tolist()
        self.geoms = geometries(table)
        self.cols = cols = {c: column(table, c) for c in (
            "item_id", "image_id", "image_path", "case_id", "level", "field", "z", "labels", "mpp", "x_min", "y_min",
            "x_max", "y_max", "confidence", "source", "reviewer")}
        splits = column(table, "split") if "split" in table.columns else [None] * len(table)
        self.cell_diameter_um = cell_diameter_um
        self.images: list[dict] = []
        self.image_index: dict[str, dict] = {}
        for i, geom in enumerate(self.geoms):  # first pass: the images, and the field labels they carry
            plane = self.planes[i]
            entry = self.image_index.get(plane)
            if entry is None:
                image = source.get(cols["image_id"][i], cols["image_path"][i], cols["mpp"][i])
                height, width = image.plane_shape
                field = int(cols["field"][i])
                if include_paths:
                    names = getattr(image, "field_names", None) or []
                    if image.kind == "fields" and field < len(names):
                        file_name = str(Path(str(cols["image_path"][i])) / names[field])
                    else:
                        file_name = str(cols["image_path"][i])
                else:
                    file_name = plane
                case = cols["case_id"][i]
                entry = {
                    "id": len(self.images) + 1, "file_name": file_name, "width": int(width), "height": int(height),
                    "plane": plane, "case_id": None if case is None else str(case), "field": field,
                    "z": int(cols["z"][i]), "mpp": float(cols["mpp"][i]), "split": splits[i],
                    "labels": [], "category_ids": [],
                }
                self.images.append(entry)
                self.image_index[plane] = entry
            if cols["level"][i] == "field" or geom["type"] == "field":
                for name in cols["labels"][i]:
                    if name not in entry["labels"]:
                        entry["labels"].append(name)
                        entry["category_ids"].append(cat_id[name])

    def info(self) -> dict:
        return {"description": "cytoreview label export", "version": "1.0",
                "date_created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}

    def annotations(self, image_ids: set | None = None, chunk: int = 65536):
        """Yield the annotations (of the images in ``image_ids`` only, when given), ids counted from 1 in the
        order of the whole export; cell discs are computed ``chunk`` cells at a time."""
        for parts in self._parts(image_ids, chunk):
            yield self._annotation(*parts)

    def annotation_texts(self, image_ids: set | None = None, chunk: int = 65536):
        """The JSON text of each of :meth:`annotations` (compact, as ``json.dumps`` writes it): a cell's is
        formatted from number texts made a chunk at a time and pieces encoded once per distinct value; the others
        are encoded dicts."""
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        cache: dict = {}

        def enc(value):
            key = (type(value), value)
            text = cache.get(key)
            if text is None:
                text = cache[key] = dumps(value)
            return text

        cols, cat_id = self.cols, self.cat_id
        for parts in self._parts(image_ids, chunk, texts=True):
            n_ann, i, entry, name, seg, area, bbox, keypoints, n_kp, texts = parts
            if texts is None or cols["level"][i] != "cell":
                yield dumps(self._annotation(*parts[:-1]))
                continue
            seg_text, bbox_text, kp_text = texts
            area_text = cache.get(("area", area))
            if area_text is None:
                area_text = cache[("area", area)] = float.__repr__(area)
            conf = cols["confidence"][i]
            yield (f'{{"id":{n_ann},"image_id":{entry["id"]},"category_id":{cat_id[name]},"segmentation":[['
                   f'{seg_text}]],"area":{area_text},"bbox":[{bbox_text}],"iscrowd":0,"keypoints":[{kp_text}],'
                   f'"num_keypoints":1,"item_id":{int(cols["item_id"][i])},"level":"cell",'
                   f'"confidence":{"null" if conf is None else float.__repr__(float(conf))},'
                   f'"source":{enc(cols["source"][i])},"reviewer":{enc(cols["reviewer"][i])}}}')

    def _annotation(self, n_ann, i, entry, name, seg, area, bbox, keypoints, n_kp) -> dict:
        cols = self.cols
        conf = cols["confidence"][i]
        return {
            "id": n_ann, "image_id": entry["id"], "category_id": self.cat_id[name],
            "segmentation": [seg], "area": area, "bbox": bbox, "iscrowd": 0,
            "keypoints": keypoints, "num_keypoints": n_kp,
            "item_id": int(cols["item_id"][i]), "level": cols["level"][i],
            "confidence": None if conf is None else float(conf),
            "source": cols["source"][i], "reviewer": cols["reviewer"][i],
        }

    def _parts(self, image_ids: set | None, chunk: int, texts: bool = False):
        """Yield ``(annotation id, row, image entry, class name, segmentation, area, bbox, keypoints,
        num_keypoints)`` per annotation (one per label of each non-field row); with ``texts`` also, for a cell,
        the JSON texts of its segmentation, bbox and keypoints numbers (else None)."""
        cols, geoms = self.cols, self.geoms
        n_ann = 0
        for start in range(0, len(geoms), chunk):
            stop = min(len(geoms), start + chunk)
            pts = [i for i in range(start, stop) if geoms[i]["type"] == "point"]
            discs, radii, number_texts = {}, {}, {}
            if pts:
                x = np.array([float(geoms[i]["x"]) for i in pts])
                y = np.array([float(geoms[i]["y"]) for i in pts])
                r = np.array([self.cell_diameter_um / float(cols["mpp"][i]) / 2.0 for i in pts])
                flat = np.asarray(disc_rings(x, y, r, n=CELL_VERTICES, as_list=False)).reshape(len(pts), -1)
                discs = dict(zip(pts, flat.tolist()))
                radii = dict(zip(pts, r.tolist()))
                if texts:
                    number_texts = dict(zip(pts, _cell_number_texts(x, y, r, flat)))
            for i in range(start, stop):
                geom = geoms[i]
                if cols["level"][i] == "field" or geom["type"] == "field":
                    continue
                entry = self.image_index[self.planes[i]]
                labels = cols["labels"][i]
                if image_ids is not None and entry["id"] not in image_ids:
                    n_ann += len(labels)
                    continue
                if geom["type"] == "point":
                    x0, y0, radius = float(geom["x"]), float(geom["y"]), radii[i]
                    keypoints, n_kp = [x0, y0, 2], 1
                    bbox = [x0 - radius, y0 - radius, 2 * radius, 2 * radius]
                    area = disc_area(radius, CELL_VERTICES)
                    seg = discs[i]
                else:
                    row = {k: cols[k][i] for k in ("x_min", "y_min", "x_max", "y_max")}
                    xy = outline_xy(geom, row)
                    xs, ys = [p[0] for p in xy], [p[1] for p in xy]
                    bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
                    seg = [float(v) for p in xy for v in p]
                    area = polygon_area(xy)
                    keypoints, n_kp = [0, 0, 0], 0
                for name in labels:
                    n_ann += 1
                    if texts:
                        yield n_ann, i, entry, name, seg, area, bbox, keypoints, n_kp, number_texts.get(i)
                    else:
                        yield n_ann, i, entry, name, seg, area, bbox, keypoints, n_kp


    def write(self, path: Path, split: str | None = None) -> Path:
        """Write ``instances.json`` (or a split's subset) streamed annotation by annotation; return ``path``."""
        images = self.images if split is None else [im for im in self.images if im.get("split") == split]
        ids = None if split is None else {im["id"] for im in images}
        dumps = json.JSONEncoder(separators=(",", ":")).encode

        def writer(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write('{"info":' + dumps(self.info()) + ',"licenses":[],"images":' + dumps(images)
                         + ',"categories":' + dumps(self.categories) + ',"annotations":[')
                for k, text in enumerate(self.annotation_texts(ids)):
                    if k:
                        fh.write(",")
                    fh.write(text)
                fh.write("]}")

        return write_with(path, writer)


def _reprs(values: np.ndarray) -> list[str]:
    """``repr`` of each float (what ``json.dumps`` writes for it)."""
    return list(map(float.__repr__, values.tolist()))


def _cell_number_texts(x: np.ndarray, y: np.ndarray, r: np.ndarray, flat: np.ndarray) -> list[tuple[str, str, str]]:
    """``(segmentation, bbox, keypoints)`` number texts of many cells (centres ``x``, ``y``, radii ``r``, rings
    ``flat`` as ``(cells, 2 * CELL_VERTICES)``), one column at a time: a ring vertex column equal to one already
    written (an octagon's mirror vertices) reuses its texts."""
    columns: list[list[str]] = []
    for k in range(flat.shape[1]):
        same = next((j for j in range(k) if np.array_equal(flat[:, j], flat[:, k])), None)
        columns.append(columns[same] if same is not None else _reprs(flat[:, k]))
    x_text, y_text, d_text = _reprs(x), _reprs(y), _reprs(2 * r)
    seg = map(",".join, zip(*columns))
    bbox = map(",".join, zip(_reprs(x - r), _reprs(y - r), d_text, d_text))
    keypoints = map("{},{},2".format, x_text, y_text)
    return list(zip(seg, bbox, keypoints))


def build_coco(
    table: pd.DataFrame,
    source: ImageSource,
    *,
    cell_diameter_um: float = 10.0,
    include_paths: bool = False,
) -> dict:
    """Return the COCO dict for a validated, filtered label table (see the module docstring).

    :func:`write_coco` writes the same content without holding the annotations in memory.
    """
    coco = _Coco(table, source, cell_diameter_um=cell_diameter_um, include_paths=include_paths)
    return {
        "info": coco.info(),
        "licenses": [],
        "images": coco.images,
        "annotations": list(coco.annotations()),
        "categories": coco.categories,
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
    """Write ``instances.json`` (and ``instances_<split>.json``) into ``out_dir``; return the paths written.

    Unless ``include_paths`` (then ``file_name`` is the original file), every COCO image is written too, as
    ``images/<plane>.png`` (a field, or a slide up to :data:`PNG_MAX_SIDE_PX`) or ``images/<plane>.tif`` (a larger
    slide: a tiled TIFF written tile by tile), and ``file_name`` is that path relative to ``out_dir``.
    ``out_dir`` is built beside and swapped in when complete, so a re-export without splits leaves no stale
    ``instances_<split>.json`` from an earlier one. Annotations are streamed to the file one at a time.
    """
    coco = _Coco(table, source, **kwargs)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        if not kwargs.get("include_paths"):
            _write_plane_images({"images": coco.images}, table, source, tmp)
        names = [coco.write(tmp / "instances.json").name]
        if "split" in table.columns:
            for split in sorted(set(im["split"] for im in coco.images if im["split"])):
                names.append(coco.write(tmp / f"instances_{split}.json", split).name)
    return [out_dir / name for name in names]


def _write_plane_images(coco: dict, table: pd.DataFrame, source: ImageSource, folder: Path) -> None:
    """Write the pixels of every COCO image into ``folder/images`` and point its ``file_name`` there."""

    planes = plane_keys(table).tolist()
    where = {}
    for plane, image_id, image_path, mpp in zip(planes, column(table, "image_id"), column(table, "image_path"),
                                                column(table, "mpp")):  # fmt: skip
        where.setdefault(plane, (image_id, image_path, mpp))
    for entry in coco["images"]:
        image_id, image_path, mpp = where[entry["plane"]]
        image = source.get(image_id, image_path, mpp)
        height, width = int(entry["height"]), int(entry["width"])
        field, z = int(entry["field"]), int(entry["z"])
        if max(height, width) <= PNG_MAX_SIDE_PX:
            name = f"images/{entry['plane']}.png"
            rgb = np.asarray(image.read_region(0, 0, height, width, field=field, z=z))[..., :3]

            def write_png(tmp, rgb=rgb):
                from PIL import Image as PILImage

                PILImage.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(tmp, format="PNG")

            write_with(folder / name, write_png)
        else:
            name = f"images/{entry['plane']}.tif"
            write_with(folder / name, lambda tmp: _write_tiled_tiff(tmp, image, height, width, field, z,
                                                                  float(entry["mpp"])))  # fmt: skip
        entry["file_name"] = name


def _write_tiled_tiff(path: Path, image, height: int, width: int, field: int, z: int, mpp: float) -> None:
    """Level 0 of a plane as a tiled, deflate-compressed RGB TIFF, read band by band (memory: one band)."""
    import tifffile

    t = TIFF_TILE_PX

    def tiles():
        for r0 in range(0, height, t):
            band = np.asarray(image.read_region(r0, 0, t, width, field=field, z=z))[..., :3]
            for c0 in range(0, width, t):
                tile = np.full((t, t, 3), 255, np.uint8)
                part = band[:, c0 : c0 + t]
                tile[: part.shape[0], : part.shape[1]] = part
                yield tile

    per_cm = 1e4 / mpp
    tifffile.imwrite(path, tiles(), shape=(height, width, 3), dtype=np.uint8, tile=(t, t), photometric="rgb",
                     compression="zlib", resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")  # fmt: skip
