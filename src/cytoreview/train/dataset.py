"""The training set of a refit: one embedding (from the base pack) and one corrected class per item.

Two sources:

* a **project** (:class:`cytoreview.review.Project` or its folder): its tile items selected like an export
  (default: every item a reviewer labelled or accepted; UNSURE and unlabelled items left out). Each item's embedding
  is read from the base pack's prediction store of its image (the ``embedding`` array at ``(field, row, col)``);
  items the store does not cover are embedded from the image pixels with the base pack's session.
* an exported **label set**: an ImageFolder (each crop resized to the pack input and run through the base pack), a
  CSV / Parquet manifest (the items' pixels are read from the images it names), or an export folder holding either.

Classes are matched by name (ignoring case). The target classes are the project's active classes (or the label set's
class names, optionally checked against a given class list) that have at least one item.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cytoreview.class_names import name_key
from cytoreview.errors import CytoreviewError, ExportError, PackError

#: Patches embedded per session call when pixels have to be run through the base pack.
EMBED_BATCH = 32
#: A project without tile items trains on the whole-image labels of images up to this size (px): imported crops.
CROP_MAX_SIDE_PX = 1024
#: ``select`` value of :func:`from_project` that adds the model's confident calls to the reviewed items.
CONFIDENT_SELECT = "reviewed+confident"



@dataclass
class TrainingSet:
    """Embeddings and labels of the items a refit learns from.

    Attributes
    ----------
    embeddings : numpy.ndarray
        ``(n, D)`` float32.
    labels : numpy.ndarray
        ``(n,)`` int64 index into ``classes``.
    classes : list of dict
        Target classes in output order: ``{name, color, hotkey, level}`` (+ ``project_id`` for a project).
    keys : list of str
        A stable key per item (image checksum or path, field, z, geometry).
    groups : numpy.ndarray
        Case id (or image key) per item, for a grouped holdout.
    base_pred : numpy.ndarray
        The base pack's class per item as an index into ``classes`` (-1: a class the new head does not have, or
        unknown).
    source : str
        Project folder or label-set path.
    split : numpy.ndarray or None
        ``"holdout"`` / ``"train"`` per item when the label set fixes its own split, else None.
    notes : list of str
        What was left out and why (for the report).
    reviewed : numpy.ndarray or None
        True where a person gave the label (False for the model's own confident calls); only those are held out
        for the metrics. None: all are.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    classes: list[dict]
    keys: list[str]
    groups: np.ndarray
    base_pred: np.ndarray
    source: str
    split: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    reviewed: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return len(self.labels)

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.classes]

    def class_counts(self) -> dict[str, int]:
        """Items per class name."""
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {c["name"]: int(n) for c, n in zip(self.classes, counts)}

    def digest(self) -> str:
        """SHA-256 of the sorted ``(item key, class name)`` pairs: identifies the training set."""
        names = self.class_names
        pairs = sorted(f"{k}\t{names[int(y)]}" for k, y in zip(self.keys, self.labels))
        h = hashlib.sha256()
        for line in pairs:
            h.update(line.encode("utf-8") + b"\n")
        return h.hexdigest()


# ---------------------------------------------------------------------------------------------- class resolution
def _target_classes(candidates: list[dict], labels_by_key: list[str], base_classes: list[dict],
                    source: str) -> tuple[list[dict], np.ndarray, list[str]]:  # fmt: skip
    """Keep the candidate classes that have items; return (classes, label index per item, notes)."""
    order = [name_key(c["name"]) for c in candidates]
    counts = {k: 0 for k in order}
    for k in labels_by_key:
        counts[k] += 1
    kept = [c for c, k in zip(candidates, order) if counts[k] > 0]
    notes = [f"class {c['name']!r} has no items and is left out of the new head"
             for c, k in zip(candidates, order) if counts[k] == 0]  # fmt: skip
    if not kept:
        raise ExportError(f"{source}: no labelled items to train on")
    if len(kept) < 2:
        raise ExportError(
            f"{source}: all {len(labels_by_key)} labelled items are {kept[0]['name']!r}; a classifier needs items "
            "of at least two classes"
        )
    base_by_key = {name_key(c["name"]): c for c in base_classes}
    out = []
    for i, c in enumerate(kept):
        b = base_by_key.get(name_key(c["name"]), {})
        out.append({
            "name": c["name"],
            "color": c.get("color") or b.get("color"),
            "hotkey": c.get("hotkey") or b.get("hotkey"),
            "level": c.get("level") or b.get("level") or "tile",
            **({"project_id": c["project_id"]} if "project_id" in c else {}),
        })  # fmt: skip
    index = {name_key(c["name"]): i for i, c in enumerate(out)}
    labels = np.array([index[k] for k in labels_by_key], dtype=np.int64)
    return out, labels, notes


def _fill_hotkeys(classes: list[dict]) -> None:
    """Give classes without a (unique) hotkey a free digit; drop duplicates."""
    used: set[str] = set()
    for c in classes:
        if c.get("hotkey") in used or c.get("hotkey") in (None, "0"):
            c["hotkey"] = None
        else:
            used.add(c["hotkey"])
    free = [k for k in "123456789" if k not in used]
    for c in classes:
        if c["hotkey"] is None:
            if free:
                c["hotkey"] = free.pop(0)
            else:
                c.pop("hotkey")


# ---------------------------------------------------------------------------------------------- pixels -> embedding
class Embedder:
    """Runs the base pack on uint8 RGB patches and returns embeddings (and base class ids)."""

    def __init__(self, pack, threads: int | None = None):
        self.pack = pack
        self.session = pack.session(threads=threads)
        if not self.session.embedding_name:
            raise PackError(f"pack {pack.ref} has no embedding output (outputs.embedding in {pack.card_path}); "
                            "a refit needs one")  # fmt: skip
        self.size_px = pack.size_px

    def __call__(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        emb, cls = [], []
        for start in range(0, len(patches), EMBED_BATCH):
            out = self.session.run(np.ascontiguousarray(patches[start : start + EMBED_BATCH]))
            emb.append(out["embedding"])
            cls.append(np.argmax(out["probs"], axis=-1))
        if not emb:
            return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
        ids = [int(c["id"]) for c in self.pack.classes]
        return np.concatenate(emb).astype(np.float32), np.array(ids)[np.concatenate(cls)]


def square_patch(rgb: np.ndarray, side: int) -> np.ndarray:
    """``rgb`` centred on a white (glass) ``side`` x ``side`` square: padded where smaller, cut where larger."""
    out = np.full((side, side, 3), 255, dtype=np.uint8)
    h, w = rgb.shape[:2]
    sy, sx = max(0, (h - side) // 2), max(0, (w - side) // 2)
    part = rgb[sy : sy + side, sx : sx + side, :3]
    oy, ox = (side - part.shape[0]) // 2, (side - part.shape[1]) // 2
    out[oy : oy + part.shape[0], ox : ox + part.shape[1]] = part
    return out


def crop_patch(rgb: np.ndarray, crop_mpp: float, pack) -> np.ndarray:
    """The pack's input patch from an exported crop at ``crop_mpp`` µm/px: the pack's field of view around the
    crop's centre (white glass where the crop is smaller), resampled as prediction resamples."""
    from cytoreview.inference.grid import resize_patch

    side = max(1, round(pack.size_px * pack.mpp / float(crop_mpp)))
    return resize_patch(square_patch(rgb, side), pack.size_px)


def item_patch(image, grid, geometry: dict, field_index: int, z: int, bbox=None) -> np.ndarray:
    """The base pack's input patch for one item, uint8 ``(size_px, size_px, 3)``.

    A tile of the pack's own grid is read exactly as prediction reads it; other tiles, regions and fields are read
    as their bounding box and resized; a point (cell) is the pack's field of view centred on it.
    """
    from cytoreview.inference.grid import resize_patch

    size = grid.size_px
    kind = geometry.get("type")
    if kind == "tile":
        t = int(geometry["size_px"])
        if t == grid.tile_px_level0:
            return grid.read_tile(image, field_index, int(geometry["row"]), int(geometry["col"]), z)
        y0, x0, h, w = int(geometry["row"]) * t, int(geometry["col"]) * t, t, t
    elif kind == "point":  # the crop cell classification reads (one function, so refit embeddings match predict's)
        from cytoreview.inference.classify import crop_at

        side = max(1, round(size * grid.model_mpp / grid.image_mpp))
        return crop_at(image, float(geometry["y"]), float(geometry["x"]), side, size, field_index, z)
    elif kind == "polygon":
        coords = np.asarray(geometry["coords"], dtype=float)
        y0, x0 = np.floor(coords.min(axis=0)).astype(int)
        y1, x1 = np.ceil(coords.max(axis=0)).astype(int)
        h, w = max(1, y1 - y0), max(1, x1 - x0)
    else:  # whole field / slide
        y0 = x0 = 0
        h, w = grid.plane_shape
    region = image.read_region(int(y0), int(x0), int(h), int(w), 0, field_index, z)
    if region.shape[0] != region.shape[1]:  # square it (white padding) so the resize keeps the aspect ratio
        side = max(region.shape[:2])
        square = np.full((side, side, 3), 255, dtype=np.uint8)
        oy, ox = (side - region.shape[0]) // 2, (side - region.shape[1]) // 2
        square[oy : oy + region.shape[0], ox : ox + region.shape[1]] = region
        region = square
    return resize_patch(region, size)


def _open_image(path, mpp: float | None = None):
    from cytoreview.io import open_image

    try:
        return open_image(path, mpp=mpp if mpp is not None and math.isfinite(mpp) and mpp > 0 else None)
    except CytoreviewError as exc:
        raise ExportError(f"cannot open image {path} to embed its items: {exc}") from None


def _embed_items_from_images(rows: pd.DataFrame, embedder: Embedder, opener, progress, cancel) -> dict:
    """Embed items (rows with image_path, field, z, geometry dict) from their images; return {row index: (emb, cls)}."""
    from cytoreview.inference.grid import make_grid

    out = {}
    total = len(rows)
    done = 0
    for path, sub in rows.groupby("image_path", sort=True):
        image = opener(path)
        try:
            grid = make_grid(image, embedder.pack, allow_upsample=True)
            for start in range(0, len(sub), EMBED_BATCH):
                _check_cancel(cancel)
                chunk = sub.iloc[start : start + EMBED_BATCH]
                patches = np.stack([item_patch(image, grid, g, int(f), int(z))
                                    for g, f, z in zip(chunk["geom"], chunk["field"], chunk["z"])])  # fmt: skip
                emb, cls = embedder(patches)
                for idx, e, c in zip(chunk.index, emb, cls):
                    out[idx] = (e, int(c))
                done += len(chunk)
                if progress:
                    progress("embeddings", done, total)
        finally:
            close = getattr(image, "close", None)
            if close:
                close()
    return out


class Cancelled(CytoreviewError):
    """The refit was cancelled."""


def _check_cancel(cancel) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("refit cancelled")


# ---------------------------------------------------------------------------------------------- from a project
def _base_stores(project, base, image) -> list:
    """Prediction stores of ``image`` made by the base pack (imported ones first, then the predictions folder)."""
    from cytoreview.inference.store import PredictionStore, StoreError, list_stores
    paths = [Path(s.path) for s in project.prediction_stores()
             if s.image_id == image.id and s.pack == base.name and s.pack_version == base.version]  # fmt: skip
    stores = []
    for p in paths:
        try:
            stores.append(PredictionStore(p))
        except StoreError:
            continue
    for s in list_stores(project.predictions_dir, image.path):
        if s.path not in {x.path for x in stores} and s.pack_ref == base.ref:
            stores.append(s)
    good = []
    for s in stores:
        sha = s.attrs.get("pack_sha256")
        if sha and sha != base.sha256:
            continue  # same name@version, different model file: its embeddings are not the base's
        if s.embedding is not None or (s.task == "cell-classification" and "cells" in s.group):
            good.append(s)
    return good


def from_project(
    project,
    base,
    *,
    select: str = "reviewed",
    min_confidence: float = 0.9,
    embed_missing: bool = True,
    threads: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    cancel=None,
) -> TrainingSet:
    """Training set from a project's reviewed tile items (see the module docstring).

    Parameters
    ----------
    project : Project or str or Path
    base : ModelPack
        The pack being refit (its embedding defines the features).
    select : {"reviewed", "reviewed+confident", "corrected", "trusted", "all"}
        Which labelled items to use (:func:`cytoreview.export.filter_items`): default every item a reviewer
        labelled or accepted; ``"reviewed+confident"`` adds the unreviewed items whose model confidence is >=
        ``min_confidence`` with the model's label (keeps what the base pack already does well); ``"trusted"``
        keeps corrections plus accepted items with model confidence >= ``min_confidence``.
    min_confidence : float
        For ``select="trusted"`` and ``"reviewed+confident"``.
    embed_missing : bool
        Embed items without a stored embedding from the image pixels (else they are an error).
    """
    from cytoreview.review import Project

    if isinstance(project, (str, Path)):
        opened = Project.open(project)
        try:
            return from_project(opened, base, select=select, min_confidence=min_confidence,
                                embed_missing=embed_missing, threads=threads, progress=progress, cancel=cancel)  # fmt: skip
        finally:
            opened.close()
    from cytoreview.export import filter_items
    from cytoreview.review import UNSURE

    source = str(project.folder)
    table = project.label_table()
    level = "cell" if base.task == "cell-classification" else "tile"
    pre_notes = []
    tiles = table[table["level"] == level]
    if tiles.empty and level == "tile":  # a project of crops (an imported ImageFolder or CSV of crops)
        tiles = _crop_items(project, table)
        if not tiles.empty:
            pre_notes.append(f"no tile items: {len(tiles)} whole-image label(s) of crop-sized images (at most "
                             f"{CROP_MAX_SIDE_PX} px) used, each crop embedded from its pixels")  # fmt: skip
    table = tiles
    if table.empty:
        kind = "a cell-classification pack after a detector" if level == "cell" else "a tile-classification pack"
        raise ExportError(f"project {source} has no {level} items (run {kind} and import it)"
                          + ("" if level == "cell" else f" and no crop-sized images (at most {CROP_MAX_SIDE_PX} px) "
                             "with whole-image labels"))
    confident_too = select == CONFIDENT_SELECT
    chosen, report = filter_items(table, "reviewed" if confident_too else select, min_confidence=min_confidence,
                                  include_unsure=False)  # fmt: skip
    n_reviewed = len(chosen)
    if confident_too:  # add the model's own confident calls on items nobody reviewed
        conf = pd.to_numeric(table["confidence"], errors="coerce")
        pseudo = table[~table["reviewed"].astype(bool) & ~table["unsure"].astype(bool)
                       & (table["labels"].map(len) == 1) & (conf >= float(min_confidence))]  # fmt: skip
        if n_reviewed == 0:
            chosen = chosen.iloc[0:0]
        elif len(pseudo):
            chosen = pd.concat([chosen, pseudo], ignore_index=True)
    if chosen.empty:
        raise ExportError(
            f"project {source}: none of its {len(table)} {level} items is labelled by a reviewer "
            f"(selection {select!r}; {report.n_unsure} unsure, {report.n_unlabelled} unlabelled)"
        )
    notes = list(pre_notes)
    if report.n_unsure:
        notes.append(f"{report.n_unsure} item(s) marked unsure left out")
    if confident_too:
        notes.append(f"{n_reviewed} reviewed item(s) + {len(chosen) - n_reviewed} unreviewed item(s) whose model "
                     f"confidence is >= {min_confidence:g} (their model label taken as is)")
    schema = project.schema
    multi = chosen["label_ids"].map(len) != 1
    if multi.any():
        notes.append(f"{int(multi.sum())} item(s) with several labels left out")
        chosen = chosen[~multi]
    label_ids = [schema.resolve(int(ids[0])) for ids in chosen["label_ids"]]
    bad = [i for i in label_ids if i == UNSURE]
    if bad:  # filter_items removes these; guard against a changed filter
        raise ExportError(f"project {source}: {len(bad)} selected item(s) are unsure")
    active = [c for c in schema.active_classes]
    by_id = {c.id: c for c in active}
    unknown = sorted({i for i in label_ids if i not in by_id})
    if unknown:
        raise ExportError(f"project {source}: label id(s) {unknown} are not active classes of the project's schema")
    candidates = [{"name": c.name, "color": c.color[:7], "hotkey": c.hotkey, "level": c.level, "project_id": c.id}
                  for c in active]  # fmt: skip
    label_keys = [name_key(by_id[i].name) for i in label_ids]
    classes, labels, class_notes = _target_classes(candidates, label_keys, base.classes, source)
    notes += class_notes
    index_of_name = {name_key(c["name"]): i for i, c in enumerate(classes)}

    images = {im.id: im for im in project.images()}
    chosen = chosen.reset_index(drop=True)
    chosen["geom"] = [json.loads(g) if isinstance(g, str) else g for g in chosen["geometry"]]
    n = len(chosen)
    emb = [None] * n
    base_pred = np.full(n, -1, dtype=np.int64)
    for image_id, sub in chosen.groupby("image_id", sort=True):
        stores = _base_stores(project, base, images[int(image_id)])
        for store in stores:
            if level == "cell":
                _cell_embeddings(store, sub, emb, base_pred, index_of_name)
                continue
            t = store.tile_px_level0
            e_arr = store.embedding
            cls_arr = store.tile_class
            names = store.class_names
            nf, nr, nc = store.grid_shape
            for idx, g, f in zip(sub.index, sub["geom"], sub["field"]):
                if emb[idx] is not None or g.get("type") != "tile" or int(g["size_px"]) != t:
                    continue
                f, r, c = int(f), int(g["row"]), int(g["col"])
                if not (0 <= f < nf and 0 <= r < nr and 0 <= c < nc):
                    continue
                vec = np.asarray(e_arr[f, r, c], dtype=np.float32)
                if not np.isfinite(vec).all():
                    continue  # tile not predicted in this store
                emb[idx] = vec
                k = int(cls_arr[f, r, c])
                base_pred[idx] = index_of_name.get(name_key(names.get(k, "")), -1) if k >= 0 else -1
        if progress:
            progress("embeddings", sum(e is not None for e in emb), n)
    missing = [i for i in range(n) if emb[i] is None]
    if missing:
        if not embed_missing:
            rows = chosen.loc[missing]
            raise ExportError(
                f"project {source}: {len(missing)} of {n} items have no embedding from {base.ref} (first: item "
                f"{int(rows.iloc[0]['item_id'])} of {rows.iloc[0]['image_path']}); run {base.ref} on their images"
            )
        embedder = Embedder(base, threads=threads)
        rows = chosen.loc[missing]
        mpp_of = {str(p): float(m) for p, m in zip(rows["image_path"], pd.to_numeric(rows["mpp"], errors="coerce"))}
        got = _embed_items_from_images(rows, embedder, lambda p: _open_image(p, mpp_of.get(str(p))), progress,
                                       cancel)  # the project's pixel size of each image  # fmt: skip
        base_index = {int(c["id"]): index_of_name.get(name_key(c["name"]), -1) for c in base.classes}
        for idx, (e, c) in got.items():
            emb[idx] = e
            base_pred[idx] = base_index.get(c, -1)
        notes.append(f"{len(missing)} item(s) embedded from image pixels (no stored {base.ref} embedding)")
    dims = {len(e) for e in emb}
    if len(dims) != 1:
        raise ExportError(f"project {source}: embeddings of different widths {sorted(dims)} (stores of another pack?)")
    keys = []
    for image_id, fld, z, g in zip(chosen["image_id"], chosen["field"], chosen["z"], chosen["geom"]):
        im = images[int(image_id)]
        keys.append(f"{im.checksum or im.path}|{int(fld)}|{int(z)}|{json.dumps(g, sort_keys=True)}")
    groups = _groups(chosen)
    _fill_hotkeys(classes)
    reviewed = chosen["reviewed"].astype(bool).to_numpy()
    return TrainingSet(embeddings=np.stack(emb).astype(np.float32), labels=labels, classes=classes, keys=keys,
                       groups=groups, base_pred=base_pred, source=source, notes=notes,
                       reviewed=None if reviewed.all() else reviewed)  # fmt: skip


def _crop_items(project, table: pd.DataFrame) -> pd.DataFrame:
    """The whole-image (``field``) items of images no larger than :data:`CROP_MAX_SIDE_PX`: crops, one item each."""
    small = {im.id for im in project.images()
             if im.plane_shape is not None and max(im.plane_shape) <= CROP_MAX_SIDE_PX}  # fmt: skip
    return table[(table["level"] == "field") & table["image_id"].isin(small)]


def _cell_embeddings(store, sub: pd.DataFrame, emb: list, base_pred: np.ndarray, index_of_name: dict) -> None:
    """Fill ``emb`` / ``base_pred`` of cell items (point geometry) from a cell-classification store's cells."""
    from cytoreview.review.geometry import canonical

    cells = store.cells()
    if "embedding" not in cells:
        return
    names = store.class_names
    where = {}
    for i, (f, y, x) in enumerate(zip(cells["field"].tolist(), cells["y_px"].tolist(), cells["x_px"].tolist())):
        g = canonical({"type": "point", "y": y, "x": x})
        where[(int(f), g["y"], g["x"])] = i
    for idx, g, f in zip(sub.index, sub["geom"], sub["field"]):
        if emb[idx] is not None or g.get("type") != "point":
            continue
        i = where.get((int(f), g["y"], g["x"]))
        if i is None:
            continue
        vec = np.asarray(cells["embedding"][i], dtype=np.float32)
        if np.isfinite(vec).all():
            emb[idx] = vec
            base_pred[idx] = index_of_name.get(name_key(names.get(int(cells["class"][i]), "")), -1)


def _groups(table: pd.DataFrame) -> np.ndarray:
    """Case id per item where known, else the image."""
    cases = table["case_id"].astype(object).where(table["case_id"].notna(), None).tolist()
    return np.array([f"case:{c}" if c not in (None, "") else f"image:{p}"
                     for c, p in zip(cases, table["image_path"])], dtype=object)  # fmt: skip


# ---------------------------------------------------------------------------------------------- from a label set
def resolve_labelset(path: str | Path) -> Path:
    """An export folder -> its ``imagefolder/`` (else ``labels.csv`` / ``labels.parquet``); other paths as given."""
    path = Path(path)
    if not path.exists():
        raise ExportError(f"label set {path} does not exist")
    if path.is_dir() and (path / "export.json").is_file():
        for candidate in (path / "imagefolder", path / "labels.csv", path / "labels.parquet"):
            if candidate.exists():
                return candidate
        raise ExportError(f"export folder {path} has neither imagefolder/ nor labels.csv / labels.parquet")
    return path


def _export_colors(path: Path) -> dict[str, str]:
    """Class colours from an export's ``export.json`` next to (or above) the label set, if any."""
    for folder in (path if path.is_dir() else path.parent, path.parent, path.parent.parent):
        summary = folder / "export.json"
        if summary.is_file():
            try:
                data = json.loads(summary.read_text("utf-8"))
                return {name_key(c["name"]): "#{:02x}{:02x}{:02x}".format(*c["color"][:3])
                        for c in data.get("classes", [])}  # fmt: skip
            except (OSError, ValueError, KeyError, TypeError):
                return {}
    return {}


def from_labelset(
    path: str | Path,
    base,
    *,
    classes: Iterable[str] | None = None,
    threads: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    cancel=None,
) -> TrainingSet:
    """Training set from an exported label set (ImageFolder, CSV / Parquet manifest, or an export folder).

    Parameters
    ----------
    path : str or Path
    base : ModelPack
    classes : iterable of str, optional
        The allowed class names (e.g. a project's schema); a label outside it is an error. Default: the label set's
        own class names.
    """
    from cytoreview.export import import_labels, read_imagefolder

    src = resolve_labelset(path)
    source = str(src)
    try:
        imported = read_imagefolder(src) if src.is_dir() else import_labels(src)
    except ExportError:
        raise
    except (ValueError, KeyError, TypeError, OSError) as exc:  # a malformed file the importer did not anticipate
        raise ExportError(f"cannot read label set {src}: {exc}") from None
    table = imported.table
    labelled = table["labels"].map(len) > 0
    unsure = table["unsure"].astype(bool) | table["labels"].map(lambda v: any(name_key(x) == "unsure" for x in v))
    multi = table["labels"].map(len) > 1
    notes = []
    if (~labelled).any():
        notes.append(f"{int((~labelled).sum())} unlabelled item(s) left out")
    if (unsure & labelled).any():
        notes.append(f"{int((unsure & labelled).sum())} unsure item(s) left out")
    if (multi & ~unsure).any():
        notes.append(f"{int((multi & ~unsure).sum())} item(s) with several labels left out")
    table = table[labelled & ~unsure & ~multi].reset_index(drop=True)
    if table.empty:
        raise ExportError(f"label set {src} has no single-label items to train on")
    names = [v[0] for v in table["labels"]]
    colors = _export_colors(src)
    if classes is not None:
        allowed = [c if isinstance(c, dict) else {"name": str(c)} for c in classes]
        allowed_keys = {name_key(c["name"]) for c in allowed}
        unknown = sorted({n for n in names if name_key(n) not in allowed_keys})
        if unknown:
            raise ExportError(f"label set {src}: class(es) {', '.join(map(repr, unknown))} are not in the project's "
                              f"schema ({', '.join(c['name'] for c in allowed)})")  # fmt: skip
        candidates = allowed
    else:
        seen: dict[str, str] = {}
        for n in names:
            seen.setdefault(name_key(n), n)
        base_order = {name_key(c["name"]): i for i, c in enumerate(base.classes)}
        candidates = [{"name": seen[k]} for k in sorted(seen, key=lambda k: (base_order.get(k, 1e9), k))]
    for c in candidates:
        c.setdefault("color", colors.get(name_key(c["name"])))
    classes_out, labels, class_notes = _target_classes(candidates, [name_key(n) for n in names], base.classes, source)
    notes += class_notes
    index_of_name = {name_key(c["name"]): i for i, c in enumerate(classes_out)}
    base_index = {int(c["id"]): index_of_name.get(name_key(c["name"]), -1) for c in base.classes}

    embedder = Embedder(base, threads=threads)
    n = len(table)
    if src.is_dir():  # ImageFolder: every file is the crop
        from PIL import Image as PILImage

        from cytoreview.inference.grid import resize_patch

        emb_parts, cls_parts = [], []
        files = table["image_path"].tolist()
        crop_mpps = pd.to_numeric(table["mpp"], errors="coerce").tolist()
        n_unknown_mpp = 0
        for start in range(0, n, EMBED_BATCH):
            _check_cancel(cancel)
            patches = []
            for f, crop_mpp in zip(files[start : start + EMBED_BATCH], crop_mpps[start : start + EMBED_BATCH]):
                try:
                    with PILImage.open(f) as im:
                        rgb = np.asarray(im.convert("RGB"))
                except OSError as exc:
                    raise ExportError(f"cannot read image {f}: {exc}") from None
                if crop_mpp is not None and math.isfinite(crop_mpp) and crop_mpp > 0:
                    patches.append(crop_patch(rgb, crop_mpp, base))
                else:
                    n_unknown_mpp += 1
                    patches.append(resize_patch(square_patch(rgb, max(rgb.shape[:2])), embedder.size_px))
            e, c = embedder(np.stack(patches))
            emb_parts.append(e)
            cls_parts.append(c)
            if progress:
                progress("embeddings", min(start + EMBED_BATCH, n), n)
        if n_unknown_mpp:
            note = (f"{n_unknown_mpp} crop(s) with no pixel size (no crop_mpp in metadata.csv): each taken as the "
                    f"pack's field of view ({base.size_px} px at {base.mpp:g} µm/px)")  # fmt: skip
            notes.append(note)
            warnings.warn(note, stacklevel=2)
        embeddings = np.concatenate(emb_parts)
        base_pred = np.array([base_index.get(int(c), -1) for c in np.concatenate(cls_parts)], dtype=np.int64)
        keys = [str(Path(f).relative_to(src)) for f in files]
    else:  # manifest: read each item from the image it names
        table["geom"] = [json.loads(g) if isinstance(g, str) else g for g in table["geometry"]]
        missing = sorted({p for p in table["image_path"] if not Path(str(p)).exists()})
        if missing:
            raise ExportError(
                f"manifest {src} names image(s) that are not files here (first: {missing[0]!r}); de-identified "
                "manifests carry no pixels: export with include_paths, or train from the ImageFolder export"
            )
        mpp_of = {str(p): float(m) for p, m in zip(table["image_path"], pd.to_numeric(table["mpp"], errors="coerce"))}
        got = _embed_items_from_images(table, embedder, lambda p: _open_image(p, mpp_of.get(str(p))), progress,
                                       cancel)  # fmt: skip
        embeddings = np.stack([got[i][0] for i in range(n)])
        base_pred = np.array([base_index.get(got[i][1], -1) for i in range(n)], dtype=np.int64)
        keys = [f"{p}|{int(f)}|{int(z)}|{json.dumps(g, sort_keys=True)}"
                for p, f, z, g in zip(table["image_path"], table["field"], table["z"], table["geom"])]  # fmt: skip
    split = None
    if "split" in table.columns:
        s = table["split"].astype(object).where(table["split"].notna(), "").astype(str).str.lower()
        if s.isin(["validation", "test"]).any() and s.isin(["train"]).any():
            split = np.where(s.isin(["validation", "test"]), "holdout", "train").astype(object)
            notes.append("holdout = the label set's validation and test splits")
    groups = _groups(table)
    _fill_hotkeys(classes_out)
    if not np.isfinite(embeddings).all() or math.prod(embeddings.shape) == 0:
        raise ExportError(f"label set {src}: the base pack produced no usable embeddings")
    return TrainingSet(embeddings=embeddings.astype(np.float32), labels=labels, classes=classes_out, keys=keys,
                       groups=groups, base_pred=base_pred, source=source, split=split, notes=notes)  # fmt: skip
