"""Square crops centred on cells, all at one physical scale, for galleries and reports.

A crop is ``crop_um`` wide whatever the image's pixel size (so cells of two scanners look the same size), read
lazily from the image level closest to the thumbnail's resolution and resized to ``thumb_px``. A crop that falls
off the image is padded, never dropped or shifted, and the padding is hatched so nobody mistakes it for glass:
:func:`read_cell_crop` says which crops were padded.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cytoreview.errors import ProjectError

#: Default crop side, µm (a large cell with some context at cytology magnifications).
CROP_UM = 24.0
#: Default thumbnail side, px.
THUMB_PX = 96
#: Colour of the hatching over padding (RGB).
PAD_HATCH_RGB = (200, 60, 60)
#: Open images kept per :class:`CropReader`.
OPEN_IMAGES = 4


@dataclass(frozen=True)
class CellCrop:
    """One cell's thumbnail.

    Attributes
    ----------
    rgb : numpy.ndarray
        ``(thumb_px, thumb_px, 3)`` uint8.
    padded : bool
        True when part of the crop lay outside the image (that part is hatched).
    """

    rgb: np.ndarray
    padded: bool


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
    if not crop_um > 0 or thumb_px < 4:
        raise ProjectError(f"crop side {crop_um!r} µm / thumbnail {thumb_px!r} px must be positive (>= 4 px)")
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
    """

    def __init__(self, project, crop_um: float = CROP_UM, thumb_px: int = THUMB_PX):
        self.project = project
        self.crop_um = float(crop_um)
        self.thumb_px = int(thumb_px)
        self._paths = {rec.id: Path(rec.path) for rec in project.images()}
        self._open: OrderedDict[int, object] = OrderedDict()
        self._lock = threading.Lock()

    def image(self, image_id: int):
        """The opened image of ``image_id`` (kept in a small LRU)."""
        from cytoreview.io import open_image

        with self._lock:
            if image_id in self._open:
                self._open.move_to_end(image_id)
                return self._open[image_id]
        if image_id not in self._paths:
            self._paths = {rec.id: Path(rec.path) for rec in self.project.images()}
        if image_id not in self._paths:
            raise ProjectError(f"no image with id {image_id!r} in project {self.project.folder}")
        image = open_image(self._paths[image_id])
        with self._lock:
            self._open[image_id] = image
            while len(self._open) > OPEN_IMAGES:
                self._open.popitem(last=False)[1].close()
        return image

    def crop(self, item: dict) -> CellCrop:
        """The thumbnail of one cell item (a row of :meth:`Project.items` as a dict)."""
        y, x = cell_centre(item)
        return read_cell_crop(self.image(int(item["image_id"])), int(item["field"]), y, x, z=int(item.get("z") or 0),
                              crop_um=self.crop_um, thumb_px=self.thumb_px)

    def crops(self, items: list[dict]) -> list[CellCrop]:
        """Thumbnails of many cells in their order, reading each field (and plane) of a field set once."""
        out: list[CellCrop | None] = [None] * len(items)
        groups: dict[tuple[int, int, int], list[int]] = {}
        for k, item in enumerate(items):
            groups.setdefault((int(item["image_id"]), int(item["field"]), int(item.get("z") or 0)), []).append(k)
        for (image_id, field, z), members in groups.items():
            image = self.image(image_id)
            source = image
            if image.kind == "fields" and len(members) > 1:
                source = _PlaneImage(image, field, min(z, image.n_z - 1))
            for k in members:
                y, x = cell_centre(items[k])
                out[k] = read_cell_crop(source, field, y, x, z=z, crop_um=self.crop_um, thumb_px=self.thumb_px)
        return out

    def close(self) -> None:
        """Close the open images."""
        with self._lock:
            for image in self._open.values():
                image.close()
            self._open.clear()
