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
from cytoreview.export.jsontext import CHUNK_ROWS, distinct_objects, float_texts, int_texts, value_texts
from cytoreview.export.table import (
    NumberColumn,
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
    generated one at a time or as texts a chunk at a time (a million cells never sit in memory as dicts)."""

    def __init__(self, table: pd.DataFrame, source: ImageSource, *, cell_diameter_um: float = 10.0,
                 include_paths: bool = False):
        classes = class_order(table)
        self.cols = cols = {c: column(table, c) for c in (
            "image_id", "image_path", "case_id", "level", "field", "z", "labels", "source", "reviewer")}
        cols.update({c: NumberColumn(table, c) for c in ("mpp", "x_min", "y_min", "x_max", "y_max", "confidence")})
        cols["item_id"] = table["item_id"].to_numpy()  # numbers as arrays: no Python object per row
        label_codes, label_first = distinct_objects(cols["labels"])
        self._label_codes, self._label_first = label_codes, label_first
        level_of: dict[str, str] = {}
        for i in label_first:  # in row order: each name's first row is the first row of one of the lists
            for name in cols["labels"][i]:
                level_of.setdefault(name, cols["level"][i])
        self.cat_id = cat_id = {name: k + 1 for k, (_, name) in enumerate(classes)}
        self.categories = [
            {"id": cat_id[name], "class_id": cid, "name": name, "supercategory": level_of.get(name, ""),
             "keypoints": ["center"], "skeleton": []}
            for cid, name in classes
        ]
        self.planes = plane_keys(table).tolist()
        self.geoms = geoms = geometries(table)
        self._types = np.array([g["type"] for g in geoms], dtype=object)
        self._levels = np.array(cols["level"], dtype=object)
        self._skip = (self._levels == "field") | (self._types == "field")  # field labels are image-level only
        splits = column(table, "split") if "split" in table.columns else [None] * len(table)
        self.cell_diameter_um = cell_diameter_um
        self.images: list[dict] = []
        self.image_index: dict[str, dict] = {}
        plane_codes, plane_names = pd.factorize(np.asarray(self.planes, dtype=object))
        _, first_rows = np.unique(plane_codes, return_index=True)
        for plane, i in zip(plane_names.tolist(), first_rows.tolist()):  # the images, in order of first row
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
        self._image_of_row = np.arange(1, len(plane_names) + 1, dtype=np.int64)[plane_codes]  # entry id per row
        for i in np.flatnonzero(self._skip).tolist():  # the field labels each image carries, in row order
            entry = self.images[self._image_of_row[i] - 1]
            for name in cols["labels"][i]:
                if name not in entry["labels"]:
                    entry["labels"].append(name)
                    entry["category_ids"].append(cat_id[name])

    def info(self) -> dict:
        return {"description": "cytoreview label export", "version": "1.0",
                "date_created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}

    def annotations(self, image_ids: set | None = None, chunk: int = CHUNK_ROWS):
        """Yield the annotations (of the images in ``image_ids`` only, when given), ids counted from 1 in the
        order of the whole export; cell discs are computed ``chunk`` cells at a time."""
        for parts in self._parts(image_ids, chunk):
            yield self._annotation(*parts)

    def annotation_texts(self, image_ids: set | None = None, chunk: int = CHUNK_ROWS):
        """The JSON text of each of :meth:`annotations` (compact, as ``json.dumps`` writes it)."""
        for texts in self.annotation_chunks(image_ids, chunk):
            yield from texts

    def annotation_chunks(self, image_ids: set | None = None, chunk: int = CHUNK_ROWS):
        """Yield the texts of :meth:`annotations` as one list per ``chunk`` rows of the table.

        A cell with one label (a point at level ``cell``) is formatted from columns of texts made for the whole
        chunk (:mod:`cytoreview.export.jsontext`: numbers a column at a time, strings once per distinct value);
        any other annotation is its encoded dict.
        """
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        cols, n_rows = self.cols, len(self.geoms)
        n_labels = np.fromiter(map(len, cols["labels"]), dtype=np.int64, count=n_rows)
        counts = np.where(self._skip, 0, n_labels)
        first_id = np.cumsum(counts) - counts + 1  # id of each row's first annotation, in the whole export's order
        wanted = (np.ones(n_rows, dtype=bool) if image_ids is None
                  else np.isin(self._image_of_row, np.fromiter(image_ids, dtype=np.int64)))
        fast_rows = (wanted & (counts == 1) & (self._types == "point") & (self._levels == "cell"))
        slow_rows = wanted & (counts > 0) & ~fast_rows
        cat_of_list = np.array([self.cat_id[cols["labels"][i][0]] if cols["labels"][i] else 0
                                for i in self._label_first], dtype=np.int64)
        confidence = cols["confidence"].values
        for start in range(0, n_rows, chunk):
            stop = min(n_rows, start + chunk)
            fast = np.flatnonzero(fast_rows[start:stop]) + start
            slow = np.flatnonzero(slow_rows[start:stop]) + start
            texts = self._cell_texts(fast, first_id, cat_of_list, confidence) if len(fast) else []
            if not len(slow):
                yield texts
                continue
            by_row = dict(zip(fast.tolist(), texts))
            out: list[str] = []
            for i in np.union1d(fast, slow).tolist():
                text = by_row.get(i)
                if text is not None:
                    out.append(text)
                    continue
                for parts in self._row_parts(i, int(first_id[i])):
                    out.append(dumps(self._annotation(*parts)))
            yield out

    def _cell_texts(self, rows: np.ndarray, first_id: np.ndarray, cat_of_list: np.ndarray,
                    confidence: np.ndarray) -> list[str]:
        """The annotation texts of the one-label cells at table positions ``rows``."""
        cols, geoms = self.cols, self.geoms
        x = np.array([float(geoms[i]["x"]) for i in rows.tolist()])
        y = np.array([float(geoms[i]["y"]) for i in rows.tolist()])
        mpp = cols["mpp"].values[rows]
        r = self.cell_diameter_um / mpp / 2.0
        flat = np.asarray(disc_rings(x, y, r, n=CELL_VERTICES, as_list=False)).reshape(len(rows), -1)
        radii, radius_code = np.unique(r, return_inverse=True)
        area_text = np.array([float.__repr__(disc_area(v, CELL_VERTICES)) for v in radii.tolist()], dtype=object)
        d_text = np.array(float_texts(2 * radii), dtype=object)
        seg = _ring_texts(flat)
        d = d_text[radius_code].tolist()
        source = value_texts([cols["source"][i] for i in rows.tolist()])
        reviewer = value_texts([cols["reviewer"][i] for i in rows.tolist()])
        item = int_texts(cols["item_id"][rows])
        return list(map(_CELL_TEMPLATE.__mod__, zip(
            int_texts(first_id[rows]), int_texts(self._image_of_row[rows]),
            int_texts(cat_of_list[self._label_codes[rows]]), seg, area_text[radius_code].tolist(),
            float_texts(x - r), float_texts(y - r), d, d, float_texts(x), float_texts(y), item,
            float_texts(confidence[rows], nan="null"), source, reviewer)))

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

    def _row_parts(self, i: int, n_ann: int):
        """Yield ``(annotation id, row, image entry, class name, segmentation, area, bbox, keypoints,
        num_keypoints)`` for each label of non-field row ``i``, ids counted from ``n_ann``."""
        cols, geom = self.cols, self.geoms[i]
        entry = self.image_index[self.planes[i]]
        if geom["type"] == "point":
            x0, y0 = float(geom["x"]), float(geom["y"])
            radius = self.cell_diameter_um / float(cols["mpp"][i]) / 2.0
            keypoints, n_kp = [x0, y0, 2], 1
            bbox = [x0 - radius, y0 - radius, 2 * radius, 2 * radius]
            area = disc_area(radius, CELL_VERTICES)
            ring = disc_rings(np.array([x0]), np.array([y0]), np.array([radius]), n=CELL_VERTICES, as_list=False)
            seg = np.asarray(ring).reshape(-1).tolist()
        else:
            row = {k: cols[k][i] for k in ("x_min", "y_min", "x_max", "y_max")}
            xy = outline_xy(geom, row)
            xs, ys = [p[0] for p in xy], [p[1] for p in xy]
            bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            seg = [float(v) for p in xy for v in p]
            area = polygon_area(xy)
            keypoints, n_kp = [0, 0, 0], 0
        for k, name in enumerate(cols["labels"][i]):
            yield n_ann + k, i, entry, name, seg, area, bbox, keypoints, n_kp

    def _parts(self, image_ids: set | None, chunk: int):
        """Yield :meth:`_row_parts` of every annotation (of the images in ``image_ids`` only, when given)."""
        n_ann = 0
        for i in range(len(self.geoms)):
            if self._skip[i]:
                continue
            labels = self.cols["labels"][i]
            if image_ids is None or int(self._image_of_row[i]) in image_ids:
                yield from self._row_parts(i, n_ann + 1)
            n_ann += len(labels)

    def write(self, path: Path, split: str | None = None) -> Path:
        """Write ``instances.json`` (or a split's subset) streamed a chunk of annotations at a time; return
        ``path``."""
        images = self.images if split is None else [im for im in self.images if im.get("split") == split]
        ids = None if split is None else {im["id"] for im in images}
        dumps = json.JSONEncoder(separators=(",", ":")).encode

        def writer(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write('{"info":' + dumps(self.info()) + ',"licenses":[],"images":' + dumps(images)
                         + ',"categories":' + dumps(self.categories) + ',"annotations":[')
                sep = ""
                for texts in self.annotation_chunks(ids):
                    if texts:
                        fh.write(sep + ",".join(texts))
                        sep = ","
                fh.write("]}")

        return write_with(path, writer)


_CELL_TEMPLATE = ('{"id":%s,"image_id":%s,"category_id":%s,"segmentation":[[%s]],"area":%s,"bbox":[%s,%s,%s,%s],'
                  '"iscrowd":0,"keypoints":[%s,%s,2],"num_keypoints":1,"item_id":%s,"level":"cell",'
                  '"confidence":%s,"source":%s,"reviewer":%s}')


def _ring_texts(flat: np.ndarray) -> list[str]:
    """The number texts of many rings (``flat``: ``(rings, 2 * vertices)``), each ring's joined with ",", one
    column at a time: a vertex column equal to one already written (an octagon's mirror vertices) reuses its texts."""
    columns: list[list[str]] = []
    for k in range(flat.shape[1]):
        same = next((j for j in range(k) if np.array_equal(flat[:, j], flat[:, k])), None)
        columns.append(columns[same] if same is not None else float_texts(flat[:, k]))
    return list(map(",".join, zip(*columns)))


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
