"""Where exporters get pixels: a cache of opened images and lazy crop reading.

Exporters that need pixels or plane sizes (ImageFolder, COCO, masks) take ``images=``: a mapping from image id or
image path to an :class:`~cytoreview.io.image.Image`, a callable ``open(path) -> Image`` (such as
``cytoreview.io.open_image``), or None to use ``cytoreview.io.open_image``. Crops are read with
``Image.read_region`` from the pyramid level that matches the wanted pixel size, never by loading a whole slide.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cytoreview.errors import CytoreviewError, ExportError


class ImageSource:
    """Resolve the label table's images to opened :class:`Image` objects, opening each at most once.

    Parameters
    ----------
    images : mapping, callable or None
        See the module docstring. Mapping keys may be image ids (int) or paths (str or Path).
    """

    def __init__(self, images: Mapping[Any, Any] | Callable[[Path], Any] | None = None):
        self._mapping = None
        self._open = None
        if images is None:
            self._open = _default_open
        elif callable(images) and not isinstance(images, Mapping):
            self._open = images
        elif isinstance(images, Mapping):
            self._mapping = dict(images)
        else:
            raise ExportError(f"images must be a mapping, a callable or None, not {type(images).__name__}")
        self._cache: dict[int, Any] = {}
        self._opened: list = []

    def get(self, image_id: int, image_path: Any, mpp: float | None = None) -> Any:
        """Return the Image of ``image_id`` (opening ``image_path`` if needed).

        ``mpp`` is the project's pixel size of the image (the label table's ``mpp``); the default opener opens the
        file with it (``open_image(path, mpp=mpp)``), so crops and masks follow the pixel size the labels were made
        at, not whatever the file's metadata says. A custom ``open(path)`` callable is called with the path only.
        """
        image_id = int(image_id)
        if image_id in self._cache:
            return self._cache[image_id]
        image = None
        if self._mapping is not None:
            for key in (image_id, str(image_path), Path(str(image_path))):
                if key in self._mapping:
                    image = self._mapping[key]
                    break
            if image is None:
                raise ExportError(f"no image given for image id {image_id} ({image_path})")
        else:
            try:
                if self._open is _default_open:
                    image = _default_open(Path(str(image_path)), mpp=_valid_mpp(mpp))
                else:
                    image = self._open(Path(str(image_path)))
            except CytoreviewError as exc:
                raise ExportError(f"cannot open image {image_path}: {exc}") from exc
            except OSError as exc:
                raise ExportError(f"cannot open image {image_path}: {exc}") from exc
            self._opened.append(image)
        self._cache[image_id] = image
        return image

    def close(self) -> None:
        """Close the images this source opened itself (not those passed in)."""
        for image in self._opened:
            close = getattr(image, "close", None)
            if close is not None:
                close()
        self._opened.clear()
        self._cache.clear()

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _default_open(path: Path, mpp: float | None = None):
    from cytoreview.io import open_image

    return open_image(path, mpp=mpp)


def _valid_mpp(mpp: Any) -> float | None:
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        return None
    return value if value > 0 and math.isfinite(value) else None


def read_crop(
    image: Any,
    box_xyxy: tuple[float, float, float, float],
    *,
    field: int = 0,
    z: int = 0,
    out_mpp: float | None = None,
    max_side_px: int | None = None,
) -> tuple[np.ndarray, float]:
    """Read the level-0 box ``(x0, y0, x1, y1)`` of one plane, resampled to ``out_mpp`` µm/px.

    Parameters
    ----------
    image : Image
        The opened image.
    box_xyxy : tuple of float
        Box in level-0 pixels (x1, y1 exclusive).
    field, z : int
        Plane of a field set.
    out_mpp : float, optional
        Pixel size of the returned crop; None keeps level 0's.
    max_side_px : int, optional
        If the crop would be larger than this on its longer side, it is resampled down to fit.

    Returns
    -------
    (numpy.ndarray, float)
        The ``(h, w, 3)`` uint8 crop and its pixel size in µm.
    """
    x0, y0, x1, y1 = box_xyxy
    w0, h0 = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    mpp0 = float(image.mpp)
    want_mpp = float(out_mpp) if out_mpp else mpp0
    if max_side_px:
        want_mpp = max(want_mpp, mpp0 * max(w0, h0) / max_side_px)
    out_w = max(1, int(round(w0 * mpp0 / want_mpp)))
    out_h = max(1, int(round(h0 * mpp0 / want_mpp)))
    level = image.best_level_for_mpp(want_mpp) if want_mpp > mpp0 else 0
    ds = image.level_downsample(level)
    c0, r0 = int(math.floor(x0 / ds)), int(math.floor(y0 / ds))
    c1, r1 = int(math.ceil(x1 / ds)), int(math.ceil(y1 / ds))
    region = image.read_region(r0, c0, max(r1 - r0, 1), max(c1 - c0, 1), level=level, field=field, z=z)
    region = np.asarray(region)[..., :3]
    if region.shape[0] != out_h or region.shape[1] != out_w:
        region = resize_rgb(region, out_h, out_w)
    return np.ascontiguousarray(region, dtype=np.uint8), mpp0 * w0 / out_w


def resize_rgb(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an RGB uint8 array with area averaging when shrinking (skimage), bilinear when enlarging."""
    from skimage.transform import resize

    shrink = height < rgb.shape[0] or width < rgb.shape[1]
    out = resize(rgb, (height, width), order=1, anti_aliasing=shrink, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
