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
  below the threshold of a one-channel segmenter), optional ``boundary`` and ``markers`` (cell-centre probability),
  and the multiscale overlay ``pixels/`` (:mod:`cytoreview.inference.pyramid`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cytoreview.errors import CytoreviewError
from cytoreview.inference.segment import pixel_compressors

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


#: Attributes every store must have (the readers need them all).
REQUIRED_ATTRS = ("pack", "pack_version", "tile_px_level0", "n_fields", "classes")


class TileCalls(NamedTuple):
    """The predicted tiles of a store (``tile_class >= 0``), as 1-D arrays of one entry per tile."""

    field: np.ndarray
    row: np.ndarray
    col: np.ndarray
    cls: np.ndarray
    uncertainty: np.ndarray
    probs: np.ndarray  # (n, n_classes), in the order of attribute ``classes``


class CellCalls(NamedTuple):
    """The detected cells of a store's ``cells`` group, as 1-D arrays."""

    field: np.ndarray
    y_px: np.ndarray
    x_px: np.ndarray
    cls: np.ndarray
    score: np.ndarray
    uncertainty: np.ndarray  # the group's own, else 1 - score


class PredictionStore:
    """The one reader of prediction stores (written by :func:`cytoreview.inference.predict`): inference, the review
    project's importer, training and the napari overlays all read stores through it.

    Opening checks what every reader relies on and raises :class:`StoreError` naming the store and the key: the
    folder exists and is a zarr group, the attributes of :data:`REQUIRED_ATTRS` are there, and there are tile arrays
    (``tile_class``) or a ``cells`` group. :meth:`tile_calls` and :meth:`cell_calls` check the arrays' shapes as they
    read them.

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
        if not self.path.exists():
            raise StoreError(f"{self.path}: not a prediction store: it does not exist")
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path}: not a prediction store (no zarr.json)")
        try:
            self.group = zarr.open_group(str(self.path), mode=mode)
        except Exception as exc:  # noqa: BLE001 - zarr raises several types for a broken store
            raise StoreError(f"{self.path} is not a zarr prediction store: {exc}") from None
        attrs = self.group.attrs
        missing = [k for k in REQUIRED_ATTRS if k not in attrs]
        if missing:
            raise StoreError(f"prediction store {self.path} lacks attribute(s) {', '.join(missing)}")
        self._has_tiles = "tile_class" in self.group
        if not self._has_tiles and "cells" not in self.group:
            raise StoreError(f"prediction store {self.path} has neither tile arrays (tile_class) nor a 'cells' group")
        classes = attrs["classes"]
        if not isinstance(classes, list) or not classes:
            raise StoreError(f"prediction store {self.path}: attribute 'classes' must be a non-empty list")

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
        return self._positive_int("tile_px_level0")

    @property
    def n_fields(self) -> int:
        return self._positive_int("n_fields")

    def _positive_int(self, key: str) -> int:
        value = self.group.attrs[key]
        try:
            v = int(value)
        except (TypeError, ValueError):
            raise StoreError(f"prediction store {self.path}: attribute {key!r} = {value!r} is not an integer") from None
        if v <= 0 or v != value:
            raise StoreError(f"prediction store {self.path}: attribute {key!r} = {value!r} must be a positive integer")
        return v

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """``(n_fields, n_rows, n_cols)``."""
        return tuple(int(s) for s in self.tile_class.shape)

    # ------------------------------------------------------------------ arrays
    def _array(self, name: str):
        return self.group[name] if name in self.group else None

    def _tiles_array(self, name: str):
        if not self._has_tiles:
            raise StoreError(f"prediction store {self.path} has no tile arrays (only cells)")
        return self.group[name]

    def _read(self, key: str, ndim: int):
        """A whole array as numpy (None when absent); a corrupt chunk or a wrong rank is a StoreError naming it."""
        try:
            arr = self.group[key]
        except KeyError:
            return None
        try:
            data = np.asarray(arr[...])
        except Exception as exc:  # noqa: BLE001 - a corrupt chunk raises whatever its codec raises
            raise StoreError(f"prediction store {self.path}: array {key!r} cannot be read ({exc})") from exc
        if data.ndim != ndim:
            raise StoreError(f"prediction store {self.path}: array {key!r} has {data.ndim} dimensions, expected {ndim}")
        return data

    def tile_calls(self) -> TileCalls | None:
        """Every predicted tile (``tile_class >= 0``) with its class, uncertainty and class probabilities.

        None for a store without tile arrays. The shapes of ``tile_prob`` / ``tile_uncertainty`` are checked against
        ``tile_class`` and the attributes (a missing ``tile_uncertainty`` reads as NaN).
        """
        tile_class = self._read("tile_class", 3)
        if tile_class is None:
            return None
        n_fields = self.n_fields
        if tile_class.shape[0] != n_fields:
            raise StoreError(f"prediction store {self.path}: 'tile_class' has {tile_class.shape[0]} fields, "
                             f"attribute n_fields says {n_fields}")
        n_classes = len(self.classes)
        tile_prob = self._read("tile_prob", 4)
        if tile_prob is None:
            raise StoreError(f"prediction store {self.path} has 'tile_class' but no 'tile_prob'")
        if tile_prob.shape != (*tile_class.shape, n_classes):
            raise StoreError(f"prediction store {self.path}: 'tile_prob' shape {tile_prob.shape} does not match "
                             f"'tile_class' {tile_class.shape} x {n_classes} classes")
        unc = self._read("tile_uncertainty", 3)
        if unc is None:
            unc = np.full(tile_class.shape, np.nan, dtype=np.float32)
        elif unc.shape != tile_class.shape:
            raise StoreError(f"prediction store {self.path}: 'tile_uncertainty' shape {unc.shape} != 'tile_class' "
                             f"{tile_class.shape}")
        f, r, c = np.nonzero(tile_class >= 0)
        return TileCalls(f, r, c, tile_class[f, r, c].astype(np.int64), unc[f, r, c], tile_prob[f, r, c, :])

    def cell_calls(self) -> CellCalls | None:
        """The ``cells`` group checked (equal lengths, fields in range); None when the store has none."""
        try:
            cells = self.group["cells"]
        except KeyError:
            return None
        arrays = {}
        for key in ("field", "y_px", "x_px", "class", "score"):
            try:
                arrays[key] = np.asarray(cells[key][...]).ravel()
            except KeyError:
                raise StoreError(f"prediction store {self.path}: 'cells' group lacks array {key!r}") from None
            except Exception as exc:  # noqa: BLE001 - a corrupt chunk raises whatever its codec raises
                raise StoreError(f"prediction store {self.path}: cells/{key} cannot be read ({exc})") from exc
        n = len(arrays["field"])
        for key, arr in arrays.items():
            if len(arr) != n:
                raise StoreError(f"prediction store {self.path}: cells/{key} has {len(arr)} entries, cells/field "
                                 f"has {n}")
        n_fields = self.n_fields
        if n and (arrays["field"].min() < 0 or arrays["field"].max() >= n_fields):
            raise StoreError(f"prediction store {self.path}: cells/field holds a field outside 0..{n_fields - 1}")
        try:
            unc = np.asarray(cells["uncertainty"][...]).ravel()
        except KeyError:
            unc = 1.0 - arrays["score"].astype(np.float64)
        return CellCalls(arrays["field"], arrays["y_px"], arrays["x_px"], arrays["class"], arrays["score"], unc)

    @property
    def tile_class(self):
        """zarr int16 ``(n_fields, n_rows, n_cols)``."""
        return self._tiles_array("tile_class")

    @property
    def tile_prob(self):
        """zarr float32 ``(n_fields, n_rows, n_cols, n_classes)``."""
        return self._tiles_array("tile_prob")

    @property
    def tile_uncertainty(self):
        """zarr float32 ``(n_fields, n_rows, n_cols)``."""
        return self._tiles_array("tile_uncertainty")

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

        calls = self.tile_calls()
        if calls is None:
            raise StoreError(f"prediction store {self.path} has no tile arrays (only cells)")
        ids = [int(c["id"]) for c in self.classes]
        index = np.searchsorted(np.asarray(ids), calls.cls) if ids == sorted(ids) else np.asarray(
            [ids.index(int(k)) for k in calls.cls], dtype=np.int64)
        t = self.tile_px_level0
        f, r, c = calls.field, calls.row, calls.col
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
                "class": calls.cls.astype(np.int16),
                "prob": calls.probs[np.arange(len(f)), index] if len(f) else np.zeros(0, np.float32),
                "uncertainty": calls.uncertainty,
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


#: Tiles per chunk of the tile arrays the store aims at (a whole chunk is written in one go when its rows are done).
TARGET_CHUNK_TILES = 16384
#: Bound on the bytes of one block of rows buffered before it is written (a segmenter's mask rows are wide).
MAX_BLOCK_BYTES = 64 * 1024**2
#: Smallest chunk (pixels) of a segmenter's per-pixel arrays when a field set's chunk could hold several fields.
MIN_MASK_CHUNK_PX = 512 * 1024


def chunk_layout(grid, rows_per_band: int = 1, bytes_per_tile: int = 64) -> tuple[int, int]:
    """``(fields_per_chunk, rows_per_chunk)`` of the tile arrays of a store for ``grid`` (a chunk spans all columns).

    A chunk holds about :data:`TARGET_CHUNK_TILES` tiles: whole fields of a field set with small fields, else a block
    of grid rows, a multiple of ``rows_per_band`` (the rows the reader decodes together, which finish together),
    so that the predictor writes whole chunks once. The rows of a block it buffers before writing are bounded by
    :data:`MAX_BLOCK_BYTES` (``bytes_per_tile`` counts everything buffered per tile, a segmenter's mask included).
    """
    nf, nr, nc = int(grid.n_fields), int(grid.n_rows), int(grid.n_cols)
    per_field = max(1, nr * nc)
    max_rows = max(1, MAX_BLOCK_BYTES // max(1, nc * bytes_per_tile))
    if per_field >= TARGET_CHUNK_TILES or nr > max_rows:
        rows = -(-TARGET_CHUNK_TILES // max(1, nc))
        band = max(1, int(rows_per_band))
        rows = -(-rows // band) * band
        return 1, int(max(1, min(nr, rows, max_rows)))
    fields = max(1, TARGET_CHUNK_TILES // per_field, 1)
    fields = min(fields, max(1, MAX_BLOCK_BYTES // max(1, per_field * bytes_per_tile)))
    return int(max(1, min(nf, fields))), nr


def init_store(
    path: Path,
    attrs: dict[str, Any],
    grid,
    n_classes: int,
    embedding_dim: int | None,
    segmentation: bool,
    boundary: bool = False,
    *,
    markers: bool = False,
    chunks: tuple[int, int] = (1, 1),
):
    """Create (overwrite) an empty store for ``grid``; return the zarr group. Written by ``predict`` only.

    ``boundary``: the segmenter has a boundary output (stored per pixel as ``boundary`` float32, chunked as the mask);
    ``markers``: it has a cell-centre marker output (stored the same way as ``markers``).

    ``chunks`` is ``(fields_per_chunk, rows_per_chunk)`` of the tile arrays (see :func:`chunk_layout`); a chunk
    always spans every column. ``done`` is one chunk per array (it is rewritten whole at each flush), and the
    segmentation mask follows the same row blocks, cut into column chunks of about 4 Mpixel.
    """
    import zarr

    # the attributes go in with the group: one metadata write, not one per key
    group = zarr.open_group(str(path), mode="w", zarr_format=3, attributes={**attrs, "complete": False})
    nf, nr, nc = grid.n_fields, grid.n_rows, grid.n_cols
    cf, cr = (max(1, min(int(chunks[0]), nf)), max(1, min(int(chunks[1]), nr)))
    row_chunk = (cf, cr, nc)
    group.create_array("tile_class", shape=(nf, nr, nc), dtype="int16", chunks=row_chunk, fill_value=-1)
    group.create_array(
        "tile_prob", shape=(nf, nr, nc, n_classes), dtype="float32", chunks=(*row_chunk, n_classes), fill_value=np.nan
    )
    group.create_array("tile_uncertainty", shape=(nf, nr, nc), dtype="float32", chunks=row_chunk, fill_value=np.nan)
    group.create_array("tissue", shape=(nf, nr, nc), dtype="bool", chunks=(cf, nr, nc), fill_value=False)
    group.create_array("tissue_fraction", shape=(nf, nr, nc), dtype="float32", chunks=(cf, nr, nc), fill_value=0.0)
    group.create_array("done", shape=(nf, nr), dtype="bool", chunks=(nf, nr), fill_value=False)
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
        # as few fields deep as makes a chunk of MIN_MASK_CHUNK_PX: the predictor's flushes of finished rows then
        # complete whole chunks, where a chunk of many fields was decoded, merged and re-encoded at every flush
        field_px = cr * o * nc * o
        mf = max(1, min(cf, -(-MIN_MASK_CHUNK_PX // max(1, field_px))))
        cols = max(1, min(nc, (4 << 20) // max(1, mf * cr * o * o)))
        mask_chunks = (mf, cr * o, cols * o)
        codecs = pixel_compressors()
        group.create_array("mask", shape=shape, dtype="int16", chunks=mask_chunks, fill_value=-1,
                           compressors=codecs)
        group.create_array("mask_score", shape=shape, dtype="float32", chunks=mask_chunks, fill_value=np.nan,
                           compressors=codecs)
        for name, wanted in (("boundary", boundary), ("markers", markers)):
            if wanted:
                group.create_array(name, shape=shape, dtype="float32", chunks=mask_chunks, fill_value=np.nan,
                                   compressors=codecs)
    return group


def write_cells(group, cells: dict[str, np.ndarray]) -> None:
    """(Re)write the ``cells`` group of 1-D arrays (other arrays already in the group are kept), each array in
    chunks of up to 65,536 cells, through zarr's public ``Group.create_array``, one call per array. Gathering the
    writes in one pass of zarr's event loop needed ``zarr.core.sync``, an internal module, and saved only ~1-10 ms
    per run (the 12 arrays of a predicted field set: 26-32 ms that way, 27-43 ms this way)."""
    sub = group.require_group("cells")
    for name, values in cells.items():
        values = np.asarray(values)
        chunks = (max(1, min(len(values), 65536)), *values.shape[1:])
        sub.create_array(name, data=values, chunks=chunks, overwrite=True)
