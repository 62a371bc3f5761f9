"""Tiled prediction of one image with one model pack, written to a resumable zarr prediction store.

Order of work: tissue mask on thumbnails -> patch grid -> the tiles with enough tissue, ordered band by band (a band
is a block of grid rows x columns read as one region, so each compressed chunk is decoded about once) and cut into
batches at fixed boundaries -> a few pipeline workers, sized to the cores (``cores // session threads``, one
1-thread session run by two workers on 2 cores). Work goes out in units (:func:`work_units`): the batches that start
in one band, so each worker decodes its own band on its own core right before it uses it, then reads each batch
straight into its own preallocated input, normalises it and runs the session (onnxruntime releases the GIL, so one
worker decodes while another runs the model); there is no read-ahead thread beside the workers (never more busy
threads than cores), and workers do not queue on each other's band decode (they did when consecutive batches went
to different workers: under load 1.07 s against 0.93 s per 1,024 tiles, benchmarks/bench_inference.py) -> the
results buffered in numpy blocks that match the store's chunks (whole rows of tiles, or whole fields) and written a
whole chunk at a time by one writer thread, each write followed by its rows' done flags (:class:`_Blocks`).
Finished rows of unfinished chunks are also written at most every :data:`FLUSH_INTERVAL_S` (and on cancel or error),
so a killed run keeps its work. Because batches are cut at fixed positions of a fixed list, a resumed run repeats
exactly the batches it needs and the store is bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cytoreview import __version__
from cytoreview.errors import CytoreviewError
from cytoreview.inference import segment as _seg
from cytoreview.inference.grid import PatchGrid, PatchReader, make_grid
from cytoreview.inference.store import (
    MAX_BLOCK_BYTES,
    PredictionStore,
    chunk_layout,
    init_store,
    store_path_for,
    write_cells,
)
from cytoreview.inference.tissue import tissue_mask
from cytoreview.models.pack import ModelPack, load_pack
from cytoreview.models.session import normalised_entropy

#: Default foreground fraction a slide tile needs to be run (field sets run every tile; see ``predict``).
WSI_TISSUE_THRESHOLD = 0.05

#: Bounds of the automatically chosen batch size.
MIN_BATCH, MAX_BATCH = 8, 64
#: Model input pixels per batch the automatic choice stays within (8 patches of 128 px: a batch's first activations
#: stay in the CPU's caches; 16 of 128 px ran 0.85-0.9x as fast on the benchmark CNN, see benchmarks/bench_inference.py;
#: the 96 px cell detector ran batch 16, 147 kpixel, ~12 % slower than 8 or 4, benchmarks/bench_cells.py).
TARGET_BATCH_PIXELS = 1 << 17

#: Least seconds between writes of finished rows of unfinished chunks (a whole chunk is written as soon as it is done;
#: the interval also grows to 20x the time the last write took, so writing stays a small part of the run).
FLUSH_INTERVAL_S = 0.5

#: Arrays written row by row.
_ROW_ARRAYS = ("tile_class", "tile_prob", "tile_uncertainty", "embedding", "mask", "mask_score", "boundary", "markers",
               "done")

#: A segmenter's per-pixel arrays (one 2-D plane per field).
_PIXEL_ARRAYS = ("mask", "mask_score", "boundary", "markers")

#: Attributes that must match for a store to be resumed instead of rewritten.
_RESUME_KEYS = (
    "pack",
    "pack_version",
    "pack_sha256",
    "image_path",
    "task",
    "level",
    "tile_px_level0",
    "n_fields",
    "n_rows",
    "n_cols",
    "size_px",
    "halo_px",
    "tissue_threshold",
    "focus",
)


def choose_batch_size(size_px: int, fixed_batch: int | None = None) -> int:
    """Batch size: the model's fixed batch, else the largest power of 2 in [8, 64] whose input stays within
    :data:`TARGET_BATCH_PIXELS` (128 kpixel)."""
    if fixed_batch:
        return int(fixed_batch)
    exponent = math.floor(math.log2(TARGET_BATCH_PIXELS / float(size_px * size_px)) + 1e-9)
    return int(min(MAX_BATCH, max(MIN_BATCH, 2**exponent)))


def tiles_to_run(fraction: np.ndarray, threshold: float, segmentation: bool) -> np.ndarray:
    """Tiles to predict from their foreground fractions ``(n_fields, n_rows, n_cols)``.

    A tile runs when its fraction reaches ``threshold``. For a segmenter, a tile with any foreground next to such a
    tile (8-neighbours) runs too, so that a cell lying across a tile border is not cut off where the neighbour has
    little tissue.
    """
    run = fraction >= threshold
    if not segmentation:
        return run
    padded = np.pad(run, ((0, 0), (1, 1), (1, 1)))
    near = np.zeros_like(run)
    n_rows, n_cols = run.shape[1:]
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            near |= padded[:, dy : dy + n_rows, dx : dx + n_cols]
    return run | (near & (fraction > 0))


def _open(image_or_path, focus=None):
    """Image object as is, or open a path with ``cytoreview.io.open_image`` (returns image, opened_here); ``focus``
    collapses focus planes (see :func:`cytoreview.io.focus.focus_image`)."""
    if isinstance(image_or_path, (str, Path)):
        from cytoreview.io import open_image  # imported lazily: the reader lives in another part

        return open_image(image_or_path, focus=focus), True
    if focus is not None:
        from cytoreview.io.focus import focus_image

        return focus_image(image_or_path, focus), False
    return image_or_path, False


_cell_class_ids = _seg.cell_class_ids


def derive_cells(
    mask: np.ndarray,
    score: np.ndarray,
    field: int,
    class_ids,
    mask_px_level0: float,
    row_offset: int = 0,
    keep_rows: tuple[int, int] | None = None,
) -> dict:
    """Connected components of each cell class in (a strip of) one field's stitched mask -> cell table.

    Centroids are in level-0 pixel indices (pixel ``i`` is centred on ``i``, as in numpy / napari), ``score`` is the
    mean probability of the cell's class over its pixels, ``area_px`` counts mask pixels. ``row_offset`` is the mask
    row of ``mask[0]``; with ``keep_rows=(y0, y1)`` only cells whose centroid row (in mask rows) is in ``[y0, y1)``
    are kept, so that overlapping strips count every cell once.
    """
    from skimage.measure import label, regionprops_table

    cols: dict[str, list] = {k: [] for k in ("field", "y_px", "x_px", "class", "score", "area_px")}
    for cls in class_ids:
        labels = label(mask == cls, connectivity=2)
        if labels.max() == 0:
            continue
        props = regionprops_table(
            labels, intensity_image=np.nan_to_num(score), properties=("centroid", "intensity_mean", "area")
        )
        props["centroid-0"] = props["centroid-0"] + row_offset
        if keep_rows is not None:
            keep = (props["centroid-0"] >= keep_rows[0]) & (props["centroid-0"] < keep_rows[1])
            props = {k: v[keep] for k, v in props.items()}
        n = len(props["area"])
        cols["field"].append(np.full(n, field, dtype=np.int32))
        # pixel-index convention (level-0 pixel i is centred on i): mask pixel j is centred on (j + 0.5) * k - 0.5
        cols["y_px"].append((props["centroid-0"] + 0.5) * mask_px_level0 - 0.5)
        cols["x_px"].append((props["centroid-1"] + 0.5) * mask_px_level0 - 0.5)
        cols["class"].append(np.full(n, cls, dtype=np.int16))
        cols["score"].append(props["intensity_mean"].astype(np.float32))
        cols["area_px"].append(props["area"].astype(np.int32))
    dtypes = {
        "field": np.int32,
        "y_px": np.float64,
        "x_px": np.float64,
        "class": np.int16,
        "score": np.float32,
        "area_px": np.int32,
    }
    return {k: (np.concatenate(v) if v else np.zeros(0, dtype=dtypes[k])).astype(dtypes[k]) for k, v in cols.items()}


def predict(
    image_or_path,
    pack: ModelPack | str | Path,
    out_dir: str | Path,
    *,
    batch_size: int | None = None,
    threads: int | None = None,
    providers=None,
    tissue_threshold: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
    resume: bool = True,
    allow_upsample: bool = False,
    readers: int | None = None,
    session=None,
    z: int = 0,
    focus=None,
) -> PredictionStore:
    """Predict every tissue tile of an image with a model pack and write the prediction store.

    Parameters
    ----------
    image_or_path : Image or str or Path
        An opened image, or a path opened with ``cytoreview.io.open_image``.
    pack : ModelPack or str or Path
        The pack, or anything :func:`cytoreview.models.load_pack` accepts.
    out_dir : str or Path
        Folder of the store ``<image-stem>__<pack>@<version>.zarr`` (created).
    batch_size : int, optional
        Patches per ``session.run``; default :func:`choose_batch_size` (capped at the number of tiles to run).
    threads : int, optional
        onnxruntime intra-op threads of the session made here (default 1: on a CPU, several one-thread workers use
        the cores better than one many-threaded session; see ``benchmarks/bench_inference.py``).
    providers : str or list, optional
        ``"cpu"`` (default), ``"cuda"`` or onnxruntime provider names.
    tissue_threshold : float, optional
        Tiles whose foreground fraction (on the thumbnail mask) is below this are not run (class -1). Default
        :data:`WSI_TISSUE_THRESHOLD` for a slide and 0 (every tile runs) for a CytoScan field set: a field is already
        a chosen view, its few tiles are cheap, and single pale cells on glass (an atypical cell among them) fall
        under a saturation mask, so gating fields would skip exactly the cells that matter.
    progress : callable, optional
        ``progress(done_tiles, total_tiles)`` after every batch (and once at the start).
    cancel : threading.Event-like, optional
        Checked before every batch; when set, finished rows are kept and the store is returned with
        ``complete == False``; calling again with ``resume=True`` finishes it.
    resume : bool
        Continue a matching unfinished store instead of starting over (a complete matching store is returned as is).
    allow_upsample : bool
        Allow a model that needs finer pixels than the image has.
    readers : int, optional
        Pipeline workers, each of which reads, decodes and normalises a batch and then runs it; default
        :func:`pipeline_workers` (cores // session threads, so that the workers never ask for more cores than exist).
    session : PackSession, optional
        An already open session of ``pack`` (reused across images).
    z : int
        Focus plane of a multi-plane field set.
    focus : {None, "edf", "best"} or int, optional
        Predict on a collapsed focus stack instead: ``"edf"`` the all-in-focus plane, ``"best"`` each field's
        sharpest plane, ``K`` plane K (see :mod:`cytoreview.io.focus`); recorded in the store's ``focus`` attribute.

    Returns
    -------
    PredictionStore

    Raises
    ------
    CytoreviewError
        PackError for a bad pack / resolution mismatch / NaN output, ImageReadError for an unreadable image.
    """
    image, opened_here = _open(image_or_path, focus)
    if tissue_threshold is None:
        tissue_threshold = WSI_TISSUE_THRESHOLD if image.kind == "wsi" else 0.0
    pack = load_pack(pack)
    try:
        store = _predict(
            image,
            pack,
            Path(out_dir),
            batch_size=batch_size,
            threads=threads,
            providers=providers,
            tissue_threshold=tissue_threshold,
            progress=progress,
            cancel=cancel,
            resume=resume,
            allow_upsample=allow_upsample,
            readers=readers,
            session=session,
            z=z,
        )
    except OSError as exc:  # the store's folder cannot be made or written (a file in the way, disk full, ...)
        reason = exc.strerror or str(exc)
        target = store_path_for(image.path, pack.name, pack.version, out_dir)
        raise CytoreviewError(f"{target}: cannot write the prediction store ({reason})") from exc
    finally:
        if opened_here:
            image.close()
    _record_image_warnings(store, image)
    return store


def image_problems(store_path) -> list[str]:
    """What went wrong reading a store's image, as lines for a run's summary (empty when nothing did).

    The first line counts the problems and names the unreadable fields whose tiles were marked unpredicted; the rest
    are the reader's warnings (kept in the store by :func:`predict`).
    """
    attrs = PredictionStore(store_path).attrs
    problems = [str(w) for w in attrs.get("image_warnings", [])]
    if not problems:
        return []
    unreadable = [str(name) for name in attrs.get("unreadable_fields", [])]
    head = f"{store_path}: {len(problems)} image problem(s) while reading"
    if unreadable:
        head += f"; tiles of {len(unreadable)} unreadable field(s) marked unpredicted: {', '.join(unreadable)}"
    if attrs.get("blank_tiles"):
        head += f"; {int(attrs['blank_tiles'])} tile(s) that read blank marked unpredicted"
    return [head, *problems]


def _record_image_warnings(store: PredictionStore, image) -> None:
    """Keep what went wrong while reading the image (unreadable fields or tiles, shown blank) in the store's attrs.

    A field whose pixels could not be decoded was predicted on a blank stand-in: its calls mean nothing, so its tiles
    are set back to "not predicted" (-1) and the reason is kept, for the reviewer and for ``cytoreview info``.
    """
    if not image.warnings:
        return
    import zarr

    group = zarr.open_group(str(store.path), mode="r+")
    group.attrs["image_warnings"] = list(image.warnings)
    if image.kind == "fields":
        names = list(image.field_names)
        blank = [i for i, name in enumerate(names) if any(w.startswith(f"{name}: cannot decode") for w in image.warnings)]
        for field in blank:
            group["tile_class"][field] = -1
            group["tile_prob"][field] = np.nan
            group["tile_uncertainty"][field] = np.nan
        if blank:
            group.attrs["unreadable_fields"] = [names[i] for i in blank]
    elif image.kind == "wsi" and "tile_class" in group:
        marked = _mark_blank_tiles(group, image)
        if marked:
            group.attrs["blank_tiles"] = marked


def _mark_blank_tiles(group, image) -> int:
    """Set the grid tiles that overlap slide tiles read blank (undecodable) back to "not predicted"; return how many.

    The failed tiles of the level the grid was read from count (of level 0 when that level is computed from it).
    """
    level_index = int(group.attrs.get("level", 0))
    level = image.levels[level_index]
    if getattr(level, "failed_tiles", None) is None:
        level_index, level = 0, image.levels[0]
    failed = getattr(level, "failed_tiles", None)
    if not failed:
        return 0
    tile_px = int(group.attrs["tile_px_level0"])
    downsample = image.level_downsample(level_index)
    chunk_h, chunk_w = int(level.chunks[0]), int(level.chunks[1])
    tile_class = group["tile_class"]
    n_rows, n_cols = int(tile_class.shape[-2]), int(tile_class.shape[-1])
    mask = np.zeros((n_rows, n_cols), bool)
    for chunk_index in failed:
        row, col = int(chunk_index[0]), int(chunk_index[1])
        y0, y1 = row * chunk_h * downsample, (row + 1) * chunk_h * downsample
        x0, x1 = col * chunk_w * downsample, (col + 1) * chunk_w * downsample
        mask[int(y0 // tile_px): int(-(-y1 // tile_px)), int(x0 // tile_px): int(-(-x1 // tile_px))] = True
    rows, cols = np.nonzero(mask)
    if not len(rows):
        return 0
    for name, value in (("tile_class", -1), ("tile_prob", np.nan), ("tile_uncertainty", np.nan)):
        if name in group:
            data = np.asarray(group[name][0])
            data[rows, cols] = value
            group[name][0] = data
    return int(len(rows))


def _store_attrs(image, pack, grid: PatchGrid, sess, tissue_threshold: float) -> dict:
    """Group attributes of the store (the contract's keys plus what resuming and readers need)."""
    attrs = {
        "pack": pack.name,
        "pack_version": pack.version,
        "pack_sha256": pack.sha256,
        "task": pack.task,
        "image_path": str(Path(image.path).resolve()),
        "image_mpp": float(image.mpp),
        "image_shape": list(grid.plane_shape),
        "model_mpp": grid.model_mpp,
        "level": grid.level,
        "tile_px_level0": grid.tile_px_level0,
        "n_fields": grid.n_fields,
        "n_rows": grid.n_rows,
        "n_cols": grid.n_cols,
        "size_px": grid.size_px,
        "halo_px": grid.halo_px,
        "tissue_threshold": float(tissue_threshold),
        "focus": image.metadata.get("focus"),
        "classes": pack.classes,
        "activation": pack.card["outputs"]["probabilities"]["activation"],
        "providers": sess.providers,
        "cytoreview_version": __version__,
    }
    if pack.task == "segmentation":
        attrs["mask_px_level0"] = grid.mask_px_level0
    return attrs


def _existing_store(path: Path, attrs: dict):
    """The zarr group of a store at ``path`` made by the same pack, image and grid, else None."""
    if not (path / "zarr.json").is_file():
        return None
    try:
        existing = PredictionStore(path, mode="r+")
    except CytoreviewError:
        return None
    old = existing.attrs
    return existing.group if all(old.get(k) == attrs[k] for k in _RESUME_KEYS) else None


class _Blocks:
    """Results buffered in blocks that match the store's chunks, written a block (or its finished rows) at a time.

    A block is ``fields_per_chunk x rows_per_chunk`` grid rows of every column. A row is finished when all its tiles
    to run are in; rows done by an earlier run are never rewritten (their tiles are dropped when a batch straddles
    them). The ``done`` flags are set only after the data of their rows is written.

    The writes during a run (``flush(..., background=True)``) go to one writer thread, in order, each followed by
    the ``done`` flags of the rows written so far, so the calling thread goes on handing batches to the workers
    instead of waiting on zarr (a field set's block of 7 fields took ~0.2 s to write, while the workers had
    ~0.05 s of batches queued); a flush without ``background`` first waits for the writer.
    """

    def __init__(self, arrays: dict, grid: PatchGrid, n_classes: int, seg_px, per_row: np.ndarray, done: np.ndarray,
                 on_field: Callable[[int, dict], None] | None = None):
        self.arrays, self.grid, self.n_classes, self.seg_px = arrays, grid, n_classes, seg_px
        chunks = arrays["tile_class"].chunks
        self.cf, self.cr = int(chunks[0]), int(chunks[1])
        self.emb_dim = arrays["embedding"].shape[-1] if "embedding" in arrays else None
        self.remaining = per_row.astype(np.int64).copy()
        self.remaining[done] = 0
        self.written = done.copy()  # rows whose results are in the store (or were by an earlier run)
        self.finished = done | (per_row == 0)  # rows with nothing left to run
        self.buffers: dict[tuple[int, int], dict] = {}
        self._rows_done = True  # a row finished since complete_blocks last looked
        # a block of whole fields holds each field's stitched output whole: on_field(field, its 2-D arrays) once its
        # last row is in, for the fields none of whose rows an earlier run wrote
        self.on_field = on_field if seg_px and on_field is not None and self.cr >= grid.n_rows else None
        self._whole = set(np.nonzero(~done.any(axis=1))[0].tolist()) if self.on_field else set()
        self._writer = None  # one thread for the background writes, made on first use
        self._writing: deque = deque()  # their futures, oldest first

    def _buffer(self, key: tuple[int, int]) -> dict:
        buf = self.buffers.get(key)
        if buf is None:
            g, cf, cr = self.grid, self.cf, self.cr
            nf = min(cf, g.n_fields - key[0] * cf)
            nr = min(cr, g.n_rows - key[1] * cr)
            nc = g.n_cols
            buf = {
                "tile_class": np.full((nf, nr, nc), -1, dtype=np.int16),
                "tile_prob": np.full((nf, nr, nc, self.n_classes), np.nan, dtype=np.float32),
                "tile_uncertainty": np.full((nf, nr, nc), np.nan, dtype=np.float32),
            }
            if self.emb_dim:
                buf["embedding"] = np.full((nf, nr, nc, self.emb_dim), np.nan, dtype=np.float32)
            if self.seg_px:
                o = self.seg_px
                buf["mask"] = np.full((nf, nr * o, nc * o), -1, dtype=np.int16)
                buf["mask_score"] = np.full((nf, nr * o, nc * o), np.nan, dtype=np.float32)
                for name in ("boundary", "markers"):
                    if name in self.arrays:
                        buf[name] = np.full((nf, nr * o, nc * o), np.nan, dtype=np.float32)
            self.buffers[key] = buf
        return buf

    def add(self, tiles: np.ndarray, out: dict) -> int:
        """Put one batch's results into their blocks; return how many tiles were new."""
        f, r, c = tiles[:, 0], tiles[:, 1], tiles[:, 2]
        keep = ~self.written[f, r]  # a batch may straddle rows finished by an earlier run
        if not keep.all():
            idx = np.nonzero(keep)[0]
            tiles, f, r, c = tiles[idx], f[idx], r[idx], c[idx]
            out = {k: (None if v is None else v[idx]) for k, v in out.items()}
        if not len(tiles):
            return 0
        bf, br = f // self.cf, r // self.cr
        first = (int(bf[0]), int(br[0]))
        if (bf == first[0]).all() and (br == first[1]).all():  # the usual batch: all in one block
            parts = [(first, slice(None))]
        else:
            parts = [(key, np.nonzero((bf == key[0]) & (br == key[1]))[0])
                     for key in sorted(set(zip(bf.tolist(), br.tolist())))]
        for key, sel in parts:
            buf = self._buffer(key)
            lf, lr, lc = f[sel] - key[0] * self.cf, r[sel] - key[1] * self.cr, c[sel]
            buf["tile_class"][lf, lr, lc] = out["cls"][sel]
            buf["tile_prob"][lf, lr, lc] = out["probs"][sel]
            buf["tile_uncertainty"][lf, lr, lc] = out["unc"][sel]
            if self.emb_dim and out["emb"] is not None:
                buf["embedding"][lf, lr, lc] = out["emb"][sel]
            if self.seg_px:
                o = self.seg_px
                rows = np.arange(len(tiles))[sel].tolist()
                for i, a, b, col in zip(rows, lf.tolist(), lr.tolist(), lc.tolist()):
                    buf["mask"][a, b * o : (b + 1) * o, col * o : (col + 1) * o] = out["pix_cls"][i]
                    buf["mask_score"][a, b * o : (b + 1) * o, col * o : (col + 1) * o] = out["pix_score"][i]
                    for name in ("boundary", "markers"):
                        if name in buf and out.get(f"pix_{name}") is not None:
                            buf[name][a, b * o : (b + 1) * o, col * o : (col + 1) * o] = out[f"pix_{name}"][i]
        np.subtract.at(self.remaining, (f, r), 1)
        touched = self.remaining[f, r] == 0
        if touched.any():
            self.finished[f[touched], r[touched]] = True
            self._rows_done = True
            if self.on_field is not None:
                for field in np.unique(f[touched]).tolist():
                    if field in self._whole and self.finished[field].all():
                        self._whole.discard(field)
                        key = (field // self.cf, 0)
                        lf = field - key[0] * self.cf
                        self.on_field(field, {name: a[lf] for name, a in self.buffers[key].items()
                                              if name in _PIXEL_ARRAYS})
        return len(tiles)

    def complete_blocks(self) -> bool:
        """True when a buffered block has all its rows finished (it can be written as whole chunks).

        Looks only after a batch finished a row (most batches finish none).
        """
        if not self._rows_done:
            return False
        self._rows_done = False
        return any(self._rows_of(key)[2].all() for key in self.buffers)

    def _rows_of(self, key):
        f0, r0 = key[0] * self.cf, key[1] * self.cr
        f1, r1 = min(f0 + self.cf, self.grid.n_fields), min(r0 + self.cr, self.grid.n_rows)
        return (f0, f1), (r0, r1), self.finished[f0:f1, r0:r1] | self.written[f0:f1, r0:r1]

    def flush(self, whole_blocks_only: bool, whole_chunks_only: bool = False, background: bool = False) -> bool:
        """Write finished rows (all of them, or only those of finished blocks); mark them done. True if any.

        ``whole_chunks_only`` (the writes now and then during a run): in a field set, only the rows of fields whose
        per-pixel chunks are all finished, so no chunk is written half full, then read, decoded and encoded again
        when its other rows come (a field is a small part of a run, so a killed run still keeps nearly all of it).
        ``background``: hand the writes to the writer thread and return (at most two batches of writes wait);
        otherwise wait for the writer, write here and stop the writer.
        """
        jobs = []
        for key in sorted(self.buffers):
            (f0, f1), (r0, r1), ready = self._rows_of(key)
            todo = ready & ~self.written[f0:f1, r0:r1]
            if whole_chunks_only:
                todo &= self._whole_chunk_fields(f0, f1)[:, None]
            if not todo.any() or (whole_blocks_only and not ready.all()):
                continue
            buf = self.buffers[key]
            if todo.all():
                jobs.append((buf, key, 0, f1 - f0, 0, r1 - r0))
            else:
                full = todo.all(axis=1)
                lf = 0
                while lf < f1 - f0:
                    if full[lf]:  # a run of whole fields: one write
                        end = lf + 1
                        while end < f1 - f0 and full[end]:
                            end += 1
                        jobs.append((buf, key, lf, end, 0, r1 - r0))
                        lf = end
                        continue
                    rows = np.nonzero(todo[lf])[0]
                    for run in np.split(rows, np.nonzero(np.diff(rows) > 1)[0] + 1) if len(rows) else []:
                        jobs.append((buf, key, lf, lf + 1, int(run[0]), int(run[-1]) + 1))
                    lf += 1
            self.written[f0:f1, r0:r1] |= todo
            if ready.all():
                del self.buffers[key]
        if not jobs:
            if not background:
                self.close()
            return False
        done = self.written.copy()  # the rows written once these jobs are: flagged after their data
        if background:
            while len(self._writing) >= 2:  # bounded: the buffers of at most two flushes wait
                self._writing.popleft().result()
            if self._writer is None:
                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cytoreview-write")
            self._writing.append(self._writer.submit(self._write_all, jobs, done))
        else:
            self.close()
            self._write_all(jobs, done)
        return True

    def _write_all(self, jobs: list, done: np.ndarray) -> None:
        for job in jobs:
            self._write(*job)
        self.arrays["done"][...] = done  # after the data: a killed run never marks a half-written row

    def close(self) -> None:
        """Wait for the background writes (raising what failed in them) and stop the writer thread."""
        try:
            while self._writing:
                self._writing.popleft().result()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None

    def _whole_chunk_fields(self, f0: int, f1: int) -> np.ndarray:
        """Fields ``f0..f1`` whose per-pixel chunks hold only finished rows (every field when the store has no
        per-pixel arrays, or is a single slide, whose rows are written as they finish)."""
        if not self.seg_px or self.grid.n_fields == 1:
            return np.ones(f1 - f0, dtype=bool)
        depth = int(self.arrays["mask"].chunks[0])
        fields = (self.finished | self.written).all(axis=1)
        n = len(fields)
        padded = np.concatenate([fields, np.ones(-n % depth, dtype=bool)])
        chunk_done = padded.reshape(-1, depth).all(axis=1)
        return chunk_done[np.arange(f0, f1) // depth]

    def _write(self, buf: dict, key, lf0: int, lf1: int, lr0: int, lr1: int) -> None:
        f0, r0 = key[0] * self.cf, key[1] * self.cr
        fs, rs = slice(f0 + lf0, f0 + lf1), slice(r0 + lr0, r0 + lr1)
        for name in ("tile_class", "tile_prob", "tile_uncertainty", "embedding"):
            if name in buf:
                self.arrays[name][fs, rs] = buf[name][lf0:lf1, lr0:lr1]
        if self.seg_px:
            o = self.seg_px
            ms = slice((r0 + lr0) * o, (r0 + lr1) * o)
            for name in _PIXEL_ARRAYS:
                if name in buf:
                    self.arrays[name][fs, ms] = buf[name][lf0:lf1, lr0 * o : lr1 * o]


class _FieldPasses:
    """Cells and pixel pyramid of each field whose stitched output the predictor still holds whole in its buffers,
    done in one background thread as soon as the field's last row is in, while the model runs on (on 2 cores the
    read-back passes after the run left a core idle for ~0.6 s of the effusion sample's 3 s); fields it never saw
    whole (a resumed run's earlier fields, a slide's row blocks) are read back from the store by :meth:`finish`.

    Both ways run the same blocks over the same pixels (:class:`~cytoreview.inference.instances.FieldCells`,
    :class:`~cytoreview.inference.pyramid.PixelPyramid`), so the cells and the pyramid do not depend on which way
    a field went, and a resumed run's store is the same as an uninterrupted one. The fields waiting for the thread
    hold at most :data:`~cytoreview.inference.store.MAX_BLOCK_BYTES` of buffers beyond the one being done.
    """

    def __init__(self, group, grid: PatchGrid, pack):
        from cytoreview.inference.instances import FieldCells
        from cytoreview.inference.pyramid import PixelPyramid

        self.cells = FieldCells(group, pack.card, pack.classes, out_px=grid.out_px)
        self._new_pyramid = lambda: PixelPyramid(group, pack.classes)  # made by the first field (off the start)
        self.pyramid = None
        self.names = tuple(dict.fromkeys(("mask", *self.cells.names)))  # what one field's passes read
        self.seen: set[int] = set()
        self.pending: deque = deque()  # (future, bytes held)
        self.pool = None

    def submit(self, field: int, arrays: dict) -> None:
        """Queue one field's passes on its whole stitched arrays (2-D views of the buffers; never written again)."""
        arrays = {name: arrays[name] for name in self.names}
        held = sum(a.nbytes for a in arrays.values())
        while self.pending and sum(b for _, b in self.pending) + held > MAX_BLOCK_BYTES:
            self.pending.popleft()[0].result()  # bounded memory: wait for the oldest (and raise what it raised)
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cytoreview-cells")
        self.seen.add(int(field))
        self.pending.append((self.pool.submit(self._field, int(field), arrays), held))

    def _field(self, field: int, arrays: dict) -> None:
        self.cells.from_arrays(field, arrays)
        if self.pyramid is None:
            self.pyramid = self._new_pyramid()
        self.pyramid.write_field(field, arrays["mask"], arrays["mask_score"])

    def finish(self) -> tuple[dict, list[str]]:
        """Wait for the queued fields, read the others back; ``(cells, warnings)`` of every field."""
        while self.pending:
            self.pending.popleft()[0].result()
        self.close()
        rest = [f for f in range(self.cells.n_fields) if f not in self.seen]
        self.cells.from_store(rest)
        if self.pyramid is None:
            self.pyramid = self._new_pyramid()
        self.pyramid.from_store(rest)
        return self.cells.result()

    def close(self) -> None:
        """Stop the thread (queued fields dropped, the running one finished)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def pipeline_workers(session_threads: int, cores: int | None = None) -> int:
    """Pipeline workers for a session of ``session_threads`` intra-op threads: ``cores // threads``, at least 1.

    Each worker reads, decodes and normalises its batch and then runs it, so the cores are shared between decoding and
    the model without more threads than cores (2 one-thread workers on 2 cores, 16 on a 16-core workstation).
    """
    cores = available_cores() if cores is None else max(1, int(cores))
    return max(1, cores // max(1, int(session_threads)))


def work_units(batches: list[np.ndarray], reader: PatchReader, n_workers: int) -> list[list[np.ndarray]]:
    """Batches grouped into the pipeline's units of work: the consecutive batches that start in one band.

    A worker runs a whole unit, so it decodes the band its unit reads (on its own core, right before the patches are
    used) while the other workers run theirs: no read-ahead thread beside the workers, never more busy threads than
    cores, and workers do not queue on each other's band (only a batch that runs into the next band waits for it,
    when another worker is decoding it). The last ``n_workers`` units are split into single batches, so that the
    workers finish together instead of one running a whole band alone at the end.
    """
    units: list[list[np.ndarray]] = []
    last = None
    for tiles in batches:
        key = reader.band_key(tiles[0])
        if key != last:
            units.append([])
            last = key
        units[-1].append(tiles)
    tail = max(0, len(units) - n_workers) if n_workers > 1 else len(units)
    return units[:tail] + [[tiles] for unit in units[tail:] for tiles in unit]


def _predict(
    image,
    pack,
    out_dir,
    *,
    batch_size,
    threads,
    providers,
    tissue_threshold,
    progress,
    cancel,
    resume,
    allow_upsample,
    readers,
    session,
    z,
) -> PredictionStore:
    grid = make_grid(image, pack, allow_upsample=allow_upsample)
    sess = session if session is not None else pack.session(providers=providers, threads=threads or 1)
    segmentation = pack.task == "segmentation"
    path = store_path_for(image.path, pack.name, pack.version, out_dir)
    attrs = _store_attrs(image, pack, grid, sess, tissue_threshold)
    n_workers = int(readers) if readers else pipeline_workers(getattr(sess, "threads", 1) or 1)

    group = _existing_store(path, attrs) if resume else None
    fraction = None
    if group is not None:
        if group.attrs.get("complete"):
            return PredictionStore(path)
        if batch_size is None and group.attrs.get("batch_size"):
            batch_size = int(group.attrs["batch_size"])  # the same batches as the interrupted run
        tissue = np.asarray(group["tissue"][:])
    else:
        fraction = tissue_mask(image).tile_fraction(grid.tile_px_level0, grid.n_rows, grid.n_cols)
        tissue = tiles_to_run(fraction, tissue_threshold, segmentation)

    reader = PatchReader(grid, image, np.argwhere(tissue), z=z, capacity=2 + 2 * n_workers)
    todo = reader.order(np.argwhere(tissue))  # band by band: deterministic, each compressed chunk decoded ~once
    total = len(todo)
    batch = batch_size or min(choose_batch_size(grid.size_px, sess.fixed_batch), max(total, 1))
    if group is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        emb_dim = sess.embedding_dim or _probe_embedding_dim(sess)
        per_tile = 12 + 4 * len(pack.classes) + 4 * (emb_dim or 0)
        if segmentation:
            per_tile += 14 * grid.out_px * grid.out_px  # mask, score, boundary and marker pixels
        chunks = chunk_layout(grid, reader.rows_per_band, per_tile)
        attrs["batch_size"] = int(batch)
        group = init_store(path, attrs, grid, len(pack.classes), emb_dim, segmentation,
                           boundary=bool(getattr(sess, "boundary_name", None)),
                           markers=bool(getattr(sess, "markers_name", None)), chunks=chunks)
        group["tissue_fraction"][:] = fraction
        group["tissue"][:] = tissue
        done = np.zeros((grid.n_fields, grid.n_rows), dtype=bool)
    else:
        if group.attrs.get("batch_size") != int(batch):
            group.attrs["batch_size"] = int(batch)
        done = np.asarray(group["done"][:])

    per_row = np.zeros((grid.n_fields, grid.n_rows), dtype=np.int64)
    np.add.at(per_row, (todo[:, 0], todo[:, 1]), 1)
    finished = int(per_row[done].sum())
    if progress:
        progress(finished, total)

    batches = [todo[i : i + batch] for i in range(0, total, batch)]
    needed = [b for b in batches if not done[b[:, 0], b[:, 1]].all()]
    arrays = {name: arr for name, arr in group.arrays() if name in _ROW_ARRAYS}  # one listing, each opened once
    seg_px = grid.out_px if segmentation else None
    passes = _FieldPasses(group, grid, pack) if segmentation else None
    blocks = _Blocks(arrays, grid, len(pack.classes), seg_px, per_row, done,
                     on_field=passes.submit if passes is not None else None)
    activation = attrs["activation"]
    semantics = _seg.PixelSemantics.for_pack(pack) if segmentation else None
    reflect = segmentation and pack.card["input"].get("pad", "reflect") == "reflect"
    local = threading.local()
    fixed = sess.fixed_batch

    def run_batch(tiles: np.ndarray) -> dict:
        """Worker: read the patches into this worker's input, normalise, run, summarise (all off the main thread)."""
        n = len(tiles)
        if getattr(local, "patches", None) is None:
            side = grid.size_px
            local.patches = np.empty((max(batch, fixed or 0), side, side, 3), dtype=np.uint8)
            shape = (side, side, 3) if sess.layout == "NHWC" else (3, side, side)
            local.x = np.zeros((max(batch, fixed or 0), *shape), dtype=np.float32)
        patches = reader.read(tiles, out=local.patches[:n])
        if reflect:
            patches = _seg.reflect_outside(patches, tiles, grid)  # in this worker's own buffer
        x = sess.preprocess(patches, out=local.x[:n])
        if fixed and n < fixed:
            local.x[n:fixed] = 0  # the padding of a fixed-batch model: the same zeros every run
            x = local.x[:fixed]
        result = sess.run_prepared(x)
        probs = result["probs"][:n]
        emb = None if result["embedding"] is None else result["embedding"][:n]
        pix_cls = pix_score = None
        boundary, markers = result.get("boundary"), result.get("markers")
        if boundary is not None:
            boundary = boundary[:n]
        if markers is not None:
            markers = markers[:n]
        if not segmentation:  # class and uncertainty once per unit, by the main thread (summarise)
            return {"probs": probs, "emb": emb}
        probs, cls, pix_cls, pix_score = semantics.tile_summary(probs, _seg.valid_extent(tiles, grid))
        unc = normalised_entropy(probs, "sigmoid" if semantics.binary else activation)
        return {"cls": cls, "probs": probs, "unc": unc, "emb": emb, "pix_cls": pix_cls, "pix_score": pix_score,
                "pix_boundary": boundary, "pix_markers": markers}

    def summarise(parts: list[tuple[np.ndarray, dict]]) -> tuple[np.ndarray, dict]:
        """A tile classifier's batches of one unit as one: their tiles, probabilities, embeddings, and each tile's
        class and uncertainty computed once for all of them (per tile the same numbers as batch by batch; ~25 small
        numpy calls per batch were a tenth of the pipeline's own CPU)."""
        tiles = np.concatenate([t for t, _ in parts]) if len(parts) > 1 else parts[0][0]
        probs = np.concatenate([o["probs"] for _, o in parts]) if len(parts) > 1 else parts[0][1]["probs"]
        embs = [o["emb"] for _, o in parts]
        emb = None if embs[0] is None else (np.concatenate(embs) if len(embs) > 1 else embs[0])
        cls = np.argmax(probs, axis=-1).astype(np.int16)
        return tiles, {"cls": cls, "probs": probs, "unc": normalised_entropy(probs, activation), "emb": emb,
                       "pix_cls": None, "pix_score": None, "pix_boundary": None, "pix_markers": None}

    def run_unit(unit: list[np.ndarray], futures: list[Future]) -> None:
        """Worker: the batches of one unit in order (the first decodes their band), each result handed to the main
        thread as soon as it is ready; stops at cancel or at the first failure."""
        for i, (tiles, future) in enumerate(zip(unit, futures)):
            if cancel is not None and cancel.is_set() or not future.set_running_or_notify_cancel():
                break
            try:
                future.set_result(run_batch(tiles))
            except BaseException as exc:  # handed to the main thread, which raises it
                future.set_exception(exc)
                i += 1
                break
        else:
            return
        for future in futures[i:]:  # not run: the main thread, waiting on one of them, sees it cancelled
            future.cancel()

    cancelled = False
    next_flush = time.monotonic() + FLUSH_INTERVAL_S
    try:
        with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="cytoreview-predict") as pool:
            pending: deque = deque()  # (tiles, future, last batch of its unit) in batch order
            queue = iter(work_units(needed, reader, n_workers))

            def submit_next() -> None:
                unit = next(queue, None)
                if unit is not None:
                    futures = [Future() for _ in unit]
                    pending.extend((tiles, fut, i == len(unit) - 1) for i, (tiles, fut) in enumerate(zip(unit, futures)))
                    pool.submit(run_unit, unit, futures)

            for _ in range(2 * n_workers):
                submit_next()
            unit_parts: list = []  # a tile classifier's batches of the unit under way, added to the blocks at its end

            def add_unit() -> None:
                if unit_parts:
                    blocks.add(*summarise(unit_parts))
                    unit_parts.clear()

            try:
                while pending:
                    if cancel is not None and cancel.is_set():
                        cancelled = True
                        break
                    tiles, future, last = pending.popleft()
                    try:
                        out = future.result()
                    except CancelledError:  # its worker saw the cancel first
                        cancelled = True
                        break
                    if last:
                        submit_next()
                    if segmentation:
                        finished += blocks.add(tiles, out)
                    else:  # counted now (the tiles not in rows an earlier run wrote), added with the unit
                        finished += int(np.count_nonzero(~blocks.written[tiles[:, 0], tiles[:, 1]]))
                        unit_parts.append((tiles, out))
                        if last:
                            add_unit()
                    if segmentation or last:
                        now = time.monotonic()
                        if now >= next_flush:  # finished rows of unfinished chunks too, now and then
                            blocks.flush(whole_blocks_only=False, whole_chunks_only=True, background=True)
                            next_flush = now + max(FLUSH_INTERVAL_S, 20 * (time.monotonic() - now))
                        elif blocks.complete_blocks():
                            blocks.flush(whole_blocks_only=True, background=True)
                    if progress:
                        progress(finished, total)
                add_unit()  # a unit cut short by a cancel
            except BaseException:
                for _, fut, _ in pending:
                    fut.cancel()
                add_unit()  # the batches of the unit under way that finished
                blocks.flush(whole_blocks_only=False)  # interrupted (Ctrl+C, a failed batch): keep finished rows
                raise
            for _, fut, _ in pending:
                fut.cancel()
            blocks.flush(whole_blocks_only=False)  # the last rows; finished rows are kept on cancel too
    finally:
        reader.close()
        if sys.exc_info()[1] is not None:
            blocks.close()  # the writer thread stops (its writes done) whatever went wrong
        if passes is not None and (cancelled or sys.exc_info()[1] is not None):
            passes.close()  # interrupted: the background field passes stop (the store stays incomplete)

    if not cancelled:
        row_done = blocks.written | (per_row == 0)  # rows without any tissue tile have nothing to wait for
        if not np.array_equal(row_done, blocks.written) or not blocks.written.any():
            arrays["done"][...] = row_done
        if segmentation:
            _write_cells(group, grid, pack, passes)
        group.attrs["complete"] = bool(row_done.all())
    return PredictionStore(path)


def _probe_embedding_dim(sess) -> int | None:
    """Embedding width of a model whose graph leaves it symbolic: run one white patch."""
    if not sess.embedding_name:
        return None
    patch = np.full((1, sess.size_px, sess.size_px, 3), 255, dtype=np.uint8)
    return int(sess.run(patch)["embedding"].shape[-1])


def _write_cells(group, grid: PatchGrid, pack, passes: _FieldPasses | None = None) -> None:
    """Cells from the stitched per-pixel output (:class:`cytoreview.inference.instances.FieldCells`, block by block,
    each cell once) into ``cells``, and the per-pixel pyramid for the viewer (bounded memory on a slide): the fields
    ``passes`` already did from memory are kept, the others are read back from the store."""
    if passes is None:
        passes = _FieldPasses(group, grid, pack)
    cells, notes = passes.finish()
    write_cells(group, cells)
    group.attrs["cell_warnings"] = notes
