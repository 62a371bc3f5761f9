"""The prediction store: one zarr v3 group per image x pack version.

Path: ``<out_dir>/<image-stem>__<pack-name>@<version>.zarr``.

Group attrs: ``pack``, ``pack_version``, ``task``, ``image_path``, ``model_mpp``, ``level``, ``tile_px_level0``,
``n_fields``, ``classes``, ``complete`` (plus ``image_mpp``, ``n_rows``, ``n_cols``, ``size_px``, ``halo_px``,
``tissue_threshold``, ``batch_size``, ``pack_sha256``, ``providers``, ``cytoreview_version``).

Arrays (leading field axis; a WSI has one field):

* ``tile_class`` int16 ``(n_fields, n_rows, n_cols)``, -1 where not predicted
* ``tile_prob`` float32 ``(..., n_classes)``, NaN where not predicted
* ``tile_uncertainty`` float32, normalised entropy in [0, 1], NaN where not predicted
* ``tissue`` bool, ``tissue_fraction`` float32
* ``done`` bool ``(n_fields, n_rows)``: rows written (resume bookkeeping)
* ``embedding`` float32 ``(..., D)`` when the pack has an embedding output
* segmentation: ``mask`` int16 ``(n_fields, H_m, W_m)`` at the model's pixel size (attr ``mask_px_level0``; -1 where
  not predicted), ``mask_score`` float32 (probability of the pixel's class) and a ``cells`` group of 1-D arrays
  ``field``, ``y_px``, ``x_px`` (level-0 px), ``class``, ``score``, ``area_px`` (mask pixels), ``area_um2``,
  ``prob_mean``/``prob_max`` (foreground probability over the cell), ``uncertainty``, outlines ``outline_yx`` /
  ``outline_offset``; ``mask_score`` is the foreground probability per pixel, ``mask`` the pixel's class (-2:
  below the threshold of a one-channel segmenter), optional ``boundary``, and the multiscale overlay ``pixels/``
  (:mod:`cytoreview.inference.pyramid`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cytoreview.errors import CytoreviewError

_MULTI_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr")


class StoreError(CytoreviewError):
    """A prediction store is missing or not one cytoreview wrote."""


def image_stem(image_path: str | Path) -> str:
    """The image part of a store name: a folder's name, or a file name without its (multi-part) suffix."""
    path = Path(image_path)
    name = path.name
    for suffix in _MULTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    if path.is_dir():
        return name
    return path.stem or name


def store_path_for(image_path: str | Path, pack_name: str, pack_version: str, out_dir: str | Path) -> Path:
    """``<out_dir>/<image-stem>__<pack-name>@<version>.zarr``."""
    return Path(out_dir) / f"{image_stem(image_path)}__{pack_name}@{pack_version}.zarr"


class PredictionStore:
    """Read access to a prediction store written by :func:`cytoreview.inference.predict`.

    Parameters
    ----------
    path : str or Path
        The ``.zarr`` folder.
    mode : str
        zarr open mode (``"r"`` by default; the writer uses ``"r+"``).

    Attributes
    ----------
    path : Path
    group : zarr.Group
    """

    def __init__(self, path: str | Path, mode: str = "r"):
        import zarr

        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path}: not a prediction store (no zarr.json)")
        try:
            self.group = zarr.open_group(str(self.path), mode=mode)
        except Exception as exc:  # noqa: BLE001 - zarr raises several types for a broken store
            raise StoreError(f"{self.path}: cannot open the prediction store: {exc}") from None
        if "pack" not in self.group.attrs or ("tile_class" not in self.group and "cells" not in self.group):
            raise StoreError(f"{self.path}: not a cytoreview prediction store (no 'pack' attribute, tile_class or cells)")

    def __repr__(self) -> str:
        return f"PredictionStore({str(self.path)!r}, pack={self.pack_ref!r}, complete={self.complete})"

    # ------------------------------------------------------------------ attributes
    @property
    def attrs(self) -> dict[str, Any]:
        """All group attributes as a plain dict."""
        return dict(self.group.attrs)

    @property
    def pack_ref(self) -> str:
        """``pack@version``."""
        return f"{self.group.attrs['pack']}@{self.group.attrs['pack_version']}"

    @property
    def classes(self) -> list[dict[str, Any]]:
        """``[{id, name, color, hotkey, level}, ...]`` of the pack that wrote the store."""
        return list(self.group.attrs["classes"])

    @property
    def class_names(self) -> dict[int, str]:
        """Class id -> name."""
        return {int(c["id"]): c["name"] for c in self.classes}

    @property
    def complete(self) -> bool:
        """True once every row was predicted (and, for a segmenter, cells derived)."""
        return bool(self.group.attrs.get("complete", False))

    @property
    def task(self) -> str:
        return str(self.group.attrs["task"])

    @property
    def tile_px_level0(self) -> int:
        """Tile side in level-0 pixels."""
        return int(self.group.attrs["tile_px_level0"])

    @property
    def n_fields(self) -> int:
        return int(self.group.attrs["n_fields"])

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """``(n_fields, n_rows, n_cols)``."""
        return tuple(int(s) for s in self.group["tile_class"].shape)

    # ------------------------------------------------------------------ arrays
    def _array(self, name: str):
        return self.group[name] if name in self.group else None

    @property
    def tile_class(self):
        """zarr int16 ``(n_fields, n_rows, n_cols)``."""
        return self.group["tile_class"]

    @property
    def tile_prob(self):
        """zarr float32 ``(n_fields, n_rows, n_cols, n_classes)``."""
        return self.group["tile_prob"]

    @property
    def tile_uncertainty(self):
        """zarr float32 ``(n_fields, n_rows, n_cols)``."""
        return self.group["tile_uncertainty"]

    @property
    def tissue(self):
        """zarr bool ``(n_fields, n_rows, n_cols)``."""
        return self.group["tissue"]

    @property
    def done(self):
        """zarr bool ``(n_fields, n_rows)``."""
        return self.group["done"]

    @property
    def embedding(self):
        """zarr float32 ``(n_fields, n_rows, n_cols, D)`` or None."""
        return self._array("embedding")

    @property
    def mask(self):
        """zarr int16 ``(n_fields, H_m, W_m)`` (segmentation) or None."""
        return self._array("mask")

    @property
    def mask_px_level0(self) -> float | None:
        """Level-0 pixels per mask pixel (segmentation) or None."""
        value = self.group.attrs.get("mask_px_level0")
        return None if value is None else float(value)

    def cells(self) -> dict[str, np.ndarray]:
        """The cells of a segmentation store as 1-D numpy arrays (empty dict for a tile classifier).

        Always ``field``, ``y_px``, ``x_px``, ``class``, ``score``, ``area_px``; also ``area_um2``, ``prob_mean``,
        ``prob_max``, ``uncertainty`` and the outline polygons ``outline_yx`` (M, 2) / ``outline_offset`` (n + 1)
        in level-0 pixels where the store has them (see :mod:`cytoreview.inference.instances`).
        """
        if "cells" not in self.group:
            return {}
        cells = self.group["cells"]
        names = ("field", "y_px", "x_px", "class", "score", "area_px", "area_um2", "prob_mean", "prob_max",
                 "uncertainty", "outline_yx", "outline_offset", "embedding", "probs", "detection_prob")
        return {name: np.asarray(cells[name][:]) for name in names if name in cells}

    @property
    def plane_shape(self) -> tuple[int, int] | None:
        """``(height, width)`` of one level-0 plane of the image (None for a store written before it was kept)."""
        shape = self.group.attrs.get("image_shape")
        return None if not shape else (int(shape[0]), int(shape[1]))

    def tile_bounds(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)`` of tile ``(row, col)`` in level-0 pixels: rows ``[r*T, (r+1)*T)``, clipped to the
        image (the grid's edge rule, :meth:`cytoreview.inference.grid.PatchGrid.tile_bounds`)."""
        t = self.tile_px_level0
        height, width = self.plane_shape or ((row + 1) * t, (col + 1) * t)
        return row * t, col * t, min((row + 1) * t, height), min((col + 1) * t, width)

    def tile_table(self):
        """One row per predicted tile: field, row, col, y0, x0, y1, x1 (clipped to the image), class, prob,
        uncertainty (pandas)."""
        import pandas as pd

        cls = np.asarray(self.tile_class[:])
        f, r, c = np.nonzero(cls >= 0)
        prob = np.asarray(self.tile_prob[:])
        t = self.tile_px_level0
        height, width = self.plane_shape or (np.inf, np.inf)
        return pd.DataFrame(
            {
                "field": f,
                "row": r,
                "col": c,
                "y0": r * t,
                "x0": c * t,
                "y1": np.minimum((r + 1) * t, height),
                "x1": np.minimum((c + 1) * t, width),
                "class": cls[f, r, c],
                "prob": prob[f, r, c, cls[f, r, c]],
                "uncertainty": np.asarray(self.tile_uncertainty[:])[f, r, c],
            }
        )


def list_stores(out_dir: str | Path, image_path: str | Path) -> list[PredictionStore]:
    """Prediction stores in ``out_dir`` made from ``image_path`` (any pack), sorted by path.

    Stores whose recorded ``image_path`` is another image with the same stem are left out.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    wanted = str(Path(image_path).resolve())
    stores = []
    for path in sorted(out_dir.glob(f"{image_stem(image_path)}__*.zarr")):
        try:
            store = PredictionStore(path)
        except StoreError:
            continue
        if str(store.group.attrs.get("image_path")) == wanted:
            stores.append(store)
    return stores


def init_store(path: Path, attrs: dict[str, Any], grid, n_classes: int, embedding_dim: int | None, segmentation: bool,
               boundary: bool = False):
    """Create (overwrite) an empty store for ``grid``; return the zarr group. Written by ``predict`` only.

    ``boundary``: the segmenter has a boundary output (stored per pixel as ``boundary`` float32).
    """
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    nf, nr, nc = grid.n_fields, grid.n_rows, grid.n_cols
    row_chunk = (1, 1, nc)
    group.create_array("tile_class", shape=(nf, nr, nc), dtype="int16", chunks=row_chunk, fill_value=-1)
    group.create_array(
        "tile_prob", shape=(nf, nr, nc, n_classes), dtype="float32", chunks=(*row_chunk, n_classes), fill_value=np.nan
    )
    group.create_array("tile_uncertainty", shape=(nf, nr, nc), dtype="float32", chunks=row_chunk, fill_value=np.nan)
    group.create_array("tissue", shape=(nf, nr, nc), dtype="bool", chunks=(1, nr, nc), fill_value=False)
    group.create_array("tissue_fraction", shape=(nf, nr, nc), dtype="float32", chunks=(1, nr, nc), fill_value=0.0)
    group.create_array("done", shape=(nf, nr), dtype="bool", chunks=(1, 1), fill_value=False)
    if embedding_dim:
        group.create_array(
            "embedding",
            shape=(nf, nr, nc, embedding_dim),
            dtype="float32",
            chunks=(*row_chunk, embedding_dim),
            fill_value=np.nan,
        )
    if segmentation:
        o = grid.out_px
        shape = (nf, nr * o, nc * o)
        group.create_array("mask", shape=shape, dtype="int16", chunks=(1, o, nc * o), fill_value=-1)
        group.create_array("mask_score", shape=shape, dtype="float32", chunks=(1, o, nc * o), fill_value=np.nan)
        if boundary:
            group.create_array("boundary", shape=shape, dtype="float32", chunks=(1, o, nc * o), fill_value=np.nan)
    group.attrs.update({**attrs, "complete": False})
    return group


def write_cells(group, cells: dict[str, np.ndarray]) -> None:
    """(Re)write the ``cells`` group of 1-D arrays."""
    sub = group.require_group("cells")
    for name, values in cells.items():
        values = np.asarray(values)
        if name in sub:
            del sub[name]
        chunks = (max(1, min(len(values), 65536)), *values.shape[1:])
        sub.create_array(name, shape=values.shape, dtype=values.dtype, chunks=chunks)
        if len(values):
            sub[name][:] = values
