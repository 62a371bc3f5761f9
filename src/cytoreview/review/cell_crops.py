"""Square crops centred on cells, all at one physical scale, for galleries and reports.

A crop is ``crop_um`` wide whatever the image's pixel size (so cells of two scanners look the same size), read
lazily from the image level closest to the thumbnail's resolution and resized to ``thumb_px``. A crop that falls
off the image is padded, never dropped or shifted, and the padding is hatched so nobody mistakes it for glass:
:func:`read_cell_crop` says which crops were padded. A :class:`CropReader` with ``cache=True`` keeps every crop it cuts
in the project's persistent thumbnail cache (:mod:`cytoreview.review.thumbnails`) and can fill it in bulk, field by
field, in a background thread (:meth:`CropReader.fill_in_background`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cytoreview.errors import CytoreviewError, ProjectError
from cytoreview.review import thumbnails as _thumbnails
from cytoreview.review.images import file_stamp

_log = logging.getLogger(__name__)

#: Default crop side, µm (a large cell with some context at cytology magnifications).
CROP_UM = 24.0
#: Default thumbnail side, px.
THUMB_PX = 96
#: Thumbnail side of the cell gallery, px (the size its persistent cache is cut at).
GALLERY_THUMB_PX = 88
#: Colour of the hatching over padding (RGB).
PAD_HATCH_RGB = (200, 60, 60)
#: Open images kept per :class:`CropReader`.
OPEN_IMAGES = 4
#: Grey of the placeholder of a cell whose image cannot be read (RGB value).
MISSING_GREY = 128


@dataclass(frozen=True)
class CellCrop:
    """One cell's thumbnail.

    Attributes
    ----------
    rgb : numpy.ndarray
        ``(thumb_px, thumb_px, 3)`` uint8.
    padded : bool
        True when part of the crop lay outside the image (that part is hatched).
    missing : bool
        True when the cell's image could not be read (moved, deleted, unreadable): the crop is a hatched grey
        placeholder, marked like padding, and never kept in the thumbnail cache.
    """

    rgb: np.ndarray
    padded: bool
    missing: bool = False


def missing_crop(thumb_px: int) -> CellCrop:
    """The placeholder of a cell whose image cannot be read: grey, hatched all over, marked ``missing``."""
    rgb = np.full((thumb_px, thumb_px, 3), MISSING_GREY, np.uint8)
    hatch_padding(rgb, np.zeros((thumb_px, thumb_px), bool))
    return CellCrop(rgb=rgb, padded=True, missing=True)


def cell_centre(item: dict) -> tuple[float, float]:
    """Level-0 ``(y, x)`` of a cell item (geometry as a dict or its JSON text): its point, or its polygon's centre."""
    geometry = item["geometry"]
    if isinstance(geometry, str):
        geometry = json.loads(geometry)
    if geometry.get("type") == "point":
        return float(geometry["y"]), float(geometry["x"])
    if geometry.get("type") == "polygon":
        coords = np.asarray(geometry["coords"], dtype=float)
        return float(coords[:, 0].mean()), float(coords[:, 1].mean())
    ys = [v for v in (item.get("y_min"), item.get("y_max")) if v is not None]
    xs = [v for v in (item.get("x_min"), item.get("x_max")) if v is not None]
    if len(ys) == 2 and len(xs) == 2:
        return (ys[0] + ys[1]) / 2, (xs[0] + xs[1]) / 2
    raise ProjectError(f"item {item.get('item_id')}: a {geometry.get('type')} item has no cell centre")


def hatch_padding(rgb: np.ndarray, inside: np.ndarray, step_px: int = 6) -> np.ndarray:
    """Draw diagonal stripes of :data:`PAD_HATCH_RGB` over the pixels where ``inside`` is false (in place)."""
    yy, xx = np.mgrid[0:rgb.shape[0], 0:rgb.shape[1]]
    stripes = ((yy + xx) % step_px) < 2
    rgb[stripes & ~inside] = PAD_HATCH_RGB
    return rgb


def _resize(rgb: np.ndarray, side_px: int) -> np.ndarray:
    if rgb.shape[0] == side_px and rgb.shape[1] == side_px:
        return rgb
    from PIL import Image as PILImage

    return np.asarray(PILImage.fromarray(rgb).resize((side_px, side_px), PILImage.BILINEAR))


def check_crop_size(crop_um: float, thumb_px: int) -> None:
    """Raise :class:`~cytoreview.errors.ProjectError` unless the crop side is positive and the thumbnail >= 4 px."""
    if not crop_um > 0 or thumb_px < 4:
        raise ProjectError(f"crop side {crop_um!r} µm / thumbnail {thumb_px!r} px must be positive (>= 4 px)")


def read_cell_crop(image, field: int, y: float, x: float, *, z: int = 0, crop_um: float = CROP_UM,
                   thumb_px: int = THUMB_PX) -> CellCrop:
    """The ``crop_um`` square centred on level-0 ``(y, x)`` of ``field``, as a ``thumb_px`` thumbnail.

    Parameters
    ----------
    image : cytoreview.io.Image
    field, z : int
        Field (0 for a slide) and focus plane.
    y, x : float
        Centre in level-0 pixels.
    crop_um : float
        Side of the crop in µm.
    thumb_px : int
        Side of the returned thumbnail in px.
    """
    check_crop_size(crop_um, thumb_px)
    level = image.best_level_for_mpp(crop_um / thumb_px)
    scale = image.level_downsample(level)
    side = max(1, int(round(crop_um / image.level_mpp(level))))
    row = int(round(y / scale - side / 2))
    col = int(round(x / scale - side / 2))
    h, w = image.level_shape(level)
    z = min(int(z), image.n_z - 1)
    rgb = image.read_region(row, col, side, side, level=level, field=int(field) if image.kind == "fields" else 0, z=z)
    padded = row < 0 or col < 0 or row + side > h or col + side > w
    rgb = _resize(np.ascontiguousarray(rgb[..., :3]), thumb_px).copy()
    if padded:
        t = np.arange(thumb_px) * side / thumb_px
        inside = (((row + t) >= 0) & ((row + t) < h))[:, None] & (((col + t) >= 0) & ((col + t) < w))[None, :]
        hatch_padding(rgb, inside)
    return CellCrop(rgb=rgb, padded=padded)


class _PlaneImage:
    """One decoded field of a field set, read like the image (level 0 only): many crops, one decode."""

    kind = "fields"
    n_z = 1

    def __init__(self, image, field: int, z: int):
        self._plane = image.read_plane(0, field, z)
        self.mpp = image.mpp

    def best_level_for_mpp(self, target_mpp: float) -> int:
        return 0

    def level_downsample(self, level: int) -> float:
        return 1.0

    def level_mpp(self, level: int) -> float:
        return self.mpp

    def level_shape(self, level: int) -> tuple[int, int]:
        return self._plane.shape[:2]

    def read_region(self, row, col, height, width, level=0, field=0, z=0) -> np.ndarray:
        h, w = self._plane.shape[:2]
        out = np.full((height, width, self._plane.shape[2]), 255, np.uint8)
        r0, c0, r1, c1 = max(row, 0), max(col, 0), min(row + height, h), min(col + width, w)
        if r1 > r0 and c1 > c0:
            out[r0 - row:r1 - row, c0 - col:c1 - col] = self._plane[r0:r1, c0:c1]
        return out


class CropReader:
    """Crops of a project's cells, with a few images kept open (thread-safe).

    Parameters
    ----------
    project : Project
    crop_um, thumb_px : float, int
        See :func:`read_cell_crop`.
    cache : bool
        Read and keep crops in the project's persistent thumbnail cache (:mod:`cytoreview.review.thumbnails`;
        none where the project is read-only or its folder cannot be written: crops are then cut each time).
    """

    def __init__(self, project, crop_um: float = CROP_UM, thumb_px: int = THUMB_PX, cache: bool = False):
        check_crop_size(crop_um, thumb_px)
        self.project = project
        self.crop_um = float(crop_um)
        self.thumb_px = int(thumb_px)
        self._open: OrderedDict[int, object] = OrderedDict()
        self._lock = threading.Lock()
        self.cache: _thumbnails.ThumbnailCache | None = None
        if cache and not getattr(project, "read_only", False):
            try:
                self.cache = _thumbnails.ThumbnailCache(project.folder, self.crop_um, self.thumb_px)
            except OSError as exc:
                _log.warning("no thumbnail cache for %s: %s", project.folder, exc)
        self._records()
        self._lost: list[_thumbnails.ThumbnailCache] = []  # caches turned off after an error (closed by close())
        self._fill: threading.Thread | None = None
        self._stop = threading.Event()
        #: ``(done, total)`` cells of the running or last :meth:`fill`.
        self.fill_progress = (0, 0)
        #: ``{image_id: reason}`` of the images whose cells got placeholders because the image could not be read.
        self.unreadable: dict[int, str] = {}

    def _records(self) -> None:
        records = self.project.images()
        self._paths = {rec.id: Path(rec.path) for rec in records}
        stamps = {rec.id: file_stamp(Path(rec.path)) for rec in records}
        if self.cache is not None:
            try:
                stamps = self.cache.image_stamps(stamps)
            except sqlite3.Error as exc:
                _log.warning("thumbnail cache %s: %s", self.cache.folder, exc)
        self._hashes = {rec.id: _thumbnails.image_hash(rec.id, rec.checksum, stamps[rec.id] or "")
                        for rec in records}

    def _open_image(self, image_id: int):
        from cytoreview.io import open_image

        if image_id not in self._paths:
            self._records()
        if image_id not in self._paths:
            raise ProjectError(f"no image with id {image_id!r} in project {self.project.folder}")
        return open_image(self._paths[image_id])

    def image(self, image_id: int):
        """The opened image of ``image_id`` (kept in a small LRU)."""
        with self._lock:
            if image_id in self._open:
                self._open.move_to_end(image_id)
                return self._open[image_id]
        image = self._open_image(image_id)
        with self._lock:
            self._open[image_id] = image
            while len(self._open) > OPEN_IMAGES:
                self._open.popitem(last=False)[1].close()
        return image

    def crop(self, item: dict) -> CellCrop:
        """The thumbnail of one cell item (a row of :meth:`Project.items` as a dict)."""
        return self.crops([item])[0]

    def fingerprints(self, items: list[dict]) -> np.ndarray:
        """Each cell's thumbnail fingerprint (:func:`cytoreview.review.thumbnails.fingerprints`): a cell that moved,
        or whose image changed, has another."""
        if any(int(item["image_id"]) not in self._hashes for item in items):
            self._records()
        centres = np.array([cell_centre(item) for item in items], float).reshape(-1, 2)
        return _thumbnails.fingerprints([self._hashes.get(int(i["image_id"]), 0) for i in items],
                                        [int(i["field"]) for i in items], [int(i.get("z") or 0) for i in items],
                                        centres[:, 0], centres[:, 1])

    def crops(self, items: list[dict]) -> list[CellCrop]:
        """Thumbnails of many cells in their order: from the cache where it holds them, the others cut reading each
        field (and plane) of a field set once, and kept in the cache."""
        cache = self.cache
        if cache is None or not items:
            return self._cut(items, self.image)
        ids = [int(item["item_id"]) for item in items]
        prints = self.fingerprints(items)
        try:
            hits = cache.get(ids, prints)
        except (OSError, sqlite3.Error) as exc:
            self._lose_cache(exc)
            return self._cut(items, self.image)
        todo = [k for k, iid in enumerate(ids) if iid not in hits]
        made = dict(zip(todo, self._cut([items[k] for k in todo], self.image)))
        self._keep(cache, [ids[k] for k in todo], prints[todo], [made[k] for k in todo])
        return [made[k] if k in made else CellCrop(*hits[iid]) for k, iid in enumerate(ids)]

    def fill(self, items: list[dict], should_stop=None) -> int:
        """Cut and cache the thumbnails of ``items`` the cache lacks, image by image and field by field (each field
        decoded once, whatever the order of ``items``).

        Parameters
        ----------
        items : list of dict or pandas.DataFrame
            Cell items (``item_id``, ``image_id``, ``field``, ``z``, ``geometry``).
        should_stop : callable, optional
            Checked between fields; the fill stops when it returns True.

        Returns
        -------
        int
            Thumbnails written (0 without a cache).
        """
        cache = self.cache
        if hasattr(items, "to_dict"):  # a DataFrame of cells (made into dicts here, off the caller's thread)
            items = items.to_dict("records")
        if cache is None or not len(items):
            return 0
        prints = self.fingerprints(items)
        try:
            todo = cache.missing([int(item["item_id"]) for item in items], prints)
        except (OSError, sqlite3.Error) as exc:
            self._lose_cache(exc)
            return 0
        written = 0
        self.fill_progress = (0, len(todo))
        opened: dict[int, object] = {}  # its own images (one at a time): the gallery's LRU never closes one in use

        def image_of(image_id: int):
            if image_id not in opened:
                for old in opened.values():
                    old.close()
                opened.clear()
                opened[image_id] = self._open_image(image_id)
            return opened[image_id]

        try:
            for members in self._groups([items[k] for k in todo]).values():
                if should_stop is not None and should_stop():
                    break
                rows = todo[members]
                batch = [items[k] for k in rows]
                crops = self._cut(batch, image_of)
                if not self._keep(cache, [int(item["item_id"]) for item in batch], prints[rows], crops):
                    break
                written += sum(not c.missing for c in crops)
                self.fill_progress = (written, len(todo))
        finally:
            for old in opened.values():
                old.close()
        return written

    def fill_in_background(self, items) -> threading.Thread | None:
        """Run :meth:`fill` on ``items`` (dicts, or a DataFrame of cells) in a daemon thread, stopped by
        :meth:`close` (None without a cache)."""
        if self.cache is None:
            return None
        self._stop.clear()
        self._fill = threading.Thread(target=self.fill, args=(items, self._stop.is_set), daemon=True,
                                      name="cytoreview-thumbnails")
        self._fill.start()
        return self._fill

    def _keep(self, cache, ids: list[int], prints, crops: list[CellCrop]) -> bool:
        """Store crops in ``cache`` (placeholders of unreadable images are not kept: the image may come back); False
        (and no cache from now on) when it cannot be written."""
        kept = [k for k, c in enumerate(crops) if not c.missing]
        if len(kept) < len(crops):
            ids, prints, crops = [ids[k] for k in kept], prints[kept], [crops[k] for k in kept]
        if not ids:
            return True
        try:
            cache.put(ids, prints, [(c.rgb, c.padded) for c in crops])
        except (OSError, sqlite3.Error) as exc:
            self._lose_cache(exc)
            return False
        return True

    def _lose_cache(self, exc: Exception) -> None:
        _log.warning("thumbnail cache of %s off: %s", self.project.folder, exc)
        with self._lock:
            if self.cache is not None:
                self._lost.append(self.cache)  # closed by close(): another thread may still hold it
            self.cache = None

    @staticmethod
    def _groups(items: list[dict]) -> dict[tuple[int, int, int], list[int]]:
        """Positions of ``items`` per ``(image, field, plane)``, in image and field order."""
        groups: dict[tuple[int, int, int], list[int]] = {}
        for k, item in enumerate(items):
            groups.setdefault((int(item["image_id"]), int(item["field"]), int(item.get("z") or 0)), []).append(k)
        return dict(sorted(groups.items()))

    def _cut(self, items: list[dict], image_of) -> list[CellCrop]:
        """Cut the thumbnails of ``items`` from their images (``image_of(image_id)``), each field (and plane) of a
        field set read once."""
        out: list[CellCrop | None] = [None] * len(items)
        for (image_id, field, z), members in self._groups(items).items():
            try:
                image = image_of(image_id)
            except CytoreviewError as exc:  # a moved or broken image: placeholders, the other images' cells go on
                if image_id not in self.unreadable:
                    _log.warning("cells of image %s shown as placeholders: %s", image_id, exc)
                self.unreadable[image_id] = str(exc)
                for k in members:
                    out[k] = missing_crop(self.thumb_px)
                continue
            source = image
            if image.kind == "fields" and len(members) > 1:
                source = _PlaneImage(image, field, min(z, image.n_z - 1))
            for k in members:
                y, x = cell_centre(items[k])
                out[k] = read_cell_crop(source, field, y, x, z=z, crop_um=self.crop_um, thumb_px=self.thumb_px)
        return out

    def close(self) -> None:
        """Stop a background fill, close the cache and the open images."""
        self._stop.set()
        if self._fill is not None:
            self._fill.join()
            self._fill = None
        caches = [c for c in [self.cache, *self._lost] if c is not None]
        self.cache, self._lost = None, []
        for cache in caches:
            cache.close()
        with self._lock:
            for image in self._open.values():
                image.close()
            self._open.clear()
