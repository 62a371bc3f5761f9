"""Tiled prediction of one image with one model pack, written to a resumable zarr prediction store.

Order of work: tissue mask on thumbnails -> patch grid -> the tiles with enough tissue, ordered band by band (a band
is a block of grid rows x columns read as one region, so each compressed chunk is decoded about once) and cut into
batches at fixed boundaries -> patches read and normalised in reader threads one or two batches ahead while the
session runs the current batch -> finished grid rows are written by a writer thread (about every half second) and
only then marked done. Because batches are cut at fixed positions of a fixed list, a resumed run repeats exactly
the batches it needs and the store is bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cytoreview import __version__
from cytoreview.errors import CytoreviewError
from cytoreview.inference import segment as _seg
from cytoreview.inference.grid import PatchGrid, PatchReader, make_grid
from cytoreview.inference.store import PredictionStore, init_store, store_path_for, write_cells
from cytoreview.inference.tissue import tissue_mask
from cytoreview.models.pack import ModelPack, load_pack
from cytoreview.models.session import normalised_entropy

#: Default foreground fraction a slide tile needs to be run (field sets run every tile; see ``predict``).
WSI_TISSUE_THRESHOLD = 0.05

#: Bounds of the automatically chosen batch size.
MIN_BATCH, MAX_BATCH = 8, 64
#: Model input pixels per batch the automatic choice aims at.
TARGET_BATCH_PIXELS = 1 << 18

#: Seconds between writes of finished rows to the store (rows are written together; the last ones at the end).
FLUSH_INTERVAL_S = 0.5

#: Arrays written row by row.
_ROW_ARRAYS = ("tile_class", "tile_prob", "tile_uncertainty", "embedding", "mask", "mask_score", "boundary", "done")

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
    """Batch size: the model's fixed batch, else about 256 kpixel of input per batch, a power of 2 in [8, 64]."""
    if fixed_batch:
        return int(fixed_batch)
    exponent = round(math.log2(TARGET_BATCH_PIXELS / float(size_px * size_px)))
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


class _RowBuffer:
    """Results of one grid row, filled batch by batch, written when its last tile arrives."""

    def __init__(self, n_cols: int, n_classes: int, emb_dim: int | None, seg_px: int | None, remaining: int,
                 boundary: bool = False):
        self.cls = np.full(n_cols, -1, dtype=np.int16)
        self.prob = np.full((n_cols, n_classes), np.nan, dtype=np.float32)
        self.unc = np.full(n_cols, np.nan, dtype=np.float32)
        self.emb = np.full((n_cols, emb_dim), np.nan, dtype=np.float32) if emb_dim else None
        if seg_px:
            self.mask = np.full((seg_px, n_cols * seg_px), -1, dtype=np.int16)
            self.score = np.full((seg_px, n_cols * seg_px), np.nan, dtype=np.float32)
        self.boundary = np.full((seg_px, n_cols * seg_px), np.nan, dtype=np.float32) if boundary else None
        self.remaining = remaining


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
    readers: int = 2,
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
        onnxruntime intra-op threads (default 1-2).
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
    readers : int
        Threads that read and resample patches ahead of the session.
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


class _Rows:
    """Per-row results filled batch by batch; a row is ready once all its tiles are in."""

    def __init__(self, grid: PatchGrid, n_classes: int, emb_dim, seg_px, per_row: np.ndarray, done: np.ndarray):
        self.grid, self.n_classes, self.emb_dim, self.seg_px = grid, n_classes, emb_dim, seg_px
        self.per_row, self.done = per_row, done
        self.with_boundary = False
        self.buffers: dict[tuple[int, int], _RowBuffer] = {}
        self.ready: dict[tuple[int, int], _RowBuffer] = {}

    def add(self, tiles, cls, probs, unc, emb, pix_cls, pix_score, pix_boundary=None) -> int:
        """Store one batch's results; return how many tiles were new (rows done by an earlier run are skipped)."""
        seg_px, added = self.seg_px, 0
        for i, (f, r, c) in enumerate(tiles.tolist()):
            if self.done[f, r]:
                continue  # row finished by an earlier run; this batch only straddles it
            buf = self.buffers.get((f, r))
            if buf is None:
                buf = _RowBuffer(self.grid.n_cols, self.n_classes, self.emb_dim, seg_px, int(self.per_row[f, r]),
                                 self.with_boundary)
                self.buffers[(f, r)] = buf
            buf.cls[c], buf.prob[c], buf.unc[c] = cls[i], probs[i], unc[i]
            if buf.emb is not None and emb is not None:
                buf.emb[c] = emb[i]
            if seg_px:
                buf.mask[:, c * seg_px : (c + 1) * seg_px] = pix_cls[i]
                buf.score[:, c * seg_px : (c + 1) * seg_px] = pix_score[i]
                if buf.boundary is not None and pix_boundary is not None:
                    buf.boundary[:, c * seg_px : (c + 1) * seg_px] = pix_boundary[i]
            buf.remaining -= 1
            added += 1
            if buf.remaining == 0:
                self.ready[(f, r)] = self.buffers.pop((f, r))
        return added

    def take_ready(self) -> dict:
        ready, self.ready = self.ready, {}
        return ready


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
    sess = session if session is not None else pack.session(providers=providers, threads=threads)
    segmentation = pack.task == "segmentation"
    path = store_path_for(image.path, pack.name, pack.version, out_dir)
    attrs = _store_attrs(image, pack, grid, sess, tissue_threshold)

    group = _existing_store(path, attrs) if resume else None
    if group is not None:
        if group.attrs.get("complete"):
            return PredictionStore(path)
        if batch_size is None and group.attrs.get("batch_size"):
            batch_size = int(group.attrs["batch_size"])  # the same batches as the interrupted run
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        emb_dim = sess.embedding_dim or _probe_embedding_dim(sess)
        group = init_store(path, attrs, grid, len(pack.classes), emb_dim, segmentation,
                           boundary=bool(getattr(sess, "boundary_name", None)))
        fraction = tissue_mask(image).tile_fraction(grid.tile_px_level0, grid.n_rows, grid.n_cols)
        group["tissue_fraction"][:] = fraction
        group["tissue"][:] = tiles_to_run(fraction, tissue_threshold, segmentation)
    tissue = np.asarray(group["tissue"][:])
    done = np.asarray(group["done"][:])

    reader = PatchReader(grid, image, np.argwhere(tissue), z=z)
    todo = reader.order(np.argwhere(tissue))  # band by band: deterministic, each compressed chunk decoded ~once
    total = len(todo)
    batch = batch_size or min(choose_batch_size(grid.size_px, sess.fixed_batch), max(total, 1))
    group.attrs["batch_size"] = int(batch)
    per_row = np.zeros((grid.n_fields, grid.n_rows), dtype=np.int64)
    np.add.at(per_row, (todo[:, 0], todo[:, 1]), 1)
    finished = int(per_row[done].sum())
    row_done = done.copy()
    if progress:
        progress(finished, total)

    batches = [todo[i : i + batch] for i in range(0, total, batch)]
    needed = [b for b in batches if not done[b[:, 0], b[:, 1]].all()]
    arrays = {name: group[name] for name in _ROW_ARRAYS if name in group}  # open each array once
    emb_dim = arrays["embedding"].shape[-1] if "embedding" in arrays else None
    seg_px = grid.out_px if segmentation else None
    rows = _Rows(grid, len(pack.classes), emb_dim, seg_px, per_row, done)
    rows.with_boundary = "boundary" in arrays
    activation = attrs["activation"]
    semantics = _seg.PixelSemantics.for_pack(pack) if segmentation else None
    reflect = segmentation and pack.card["input"].get("pad", "reflect") == "reflect"
    last_flush = time.monotonic()

    def read_prepared(tiles: np.ndarray) -> np.ndarray:
        patches = reader.read(tiles)
        if reflect:
            patches = _seg.reflect_outside(patches, tiles, grid)
        return sess.preprocess(patches)  # decoding and normalising overlap the session's run

    def flush() -> None:
        writes.append(writer.submit(_flush_rows, arrays, rows.take_ready(), row_done, seg_px))

    cancelled = False
    writes: list = []
    try:
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="cytoreview-write") as writer,
            ThreadPoolExecutor(max_workers=max(1, readers), thread_name_prefix="cytoreview-read") as pool,
        ):
            pending: deque = deque()
            queue = iter(needed)

            def submit_next() -> None:
                tiles = next(queue, None)
                if tiles is not None:
                    pending.append((tiles, pool.submit(read_prepared, tiles)))

            for _ in range(max(2, readers)):
                submit_next()
            try:
                while pending:
                    if cancel is not None and cancel.is_set():
                        cancelled = True
                        for _, fut in pending:
                            fut.cancel()
                        break
                    tiles, future = pending.popleft()
                    patches = future.result()
                    submit_next()
                    result = sess.run_prepared(patches)
                    probs, pix_cls, pix_score = result["probs"], None, None
                    if segmentation:
                        probs, cls, pix_cls, pix_score = semantics.tile_summary(probs, _seg.valid_extent(tiles, grid))
                    else:
                        cls = np.argmax(probs, axis=-1).astype(np.int16)
                    unc = normalised_entropy(probs, "sigmoid" if segmentation and semantics.binary else activation)
                    finished += rows.add(tiles, cls, probs, unc, result["embedding"], pix_cls, pix_score,
                                         result.get("boundary"))
                    if rows.ready and time.monotonic() - last_flush >= FLUSH_INTERVAL_S:
                        flush()
                        last_flush = time.monotonic()
                    if progress:
                        progress(finished, total)
            except BaseException:
                if rows.ready:
                    flush()  # interrupted (Ctrl+C, a failed batch): keep the rows that were finished
                raise
            if rows.ready:
                flush()  # finished rows are kept on cancel too
    finally:
        reader.close()
    for write in writes:
        write.result()  # re-raise a failed write

    if not cancelled:
        row_done |= per_row == 0  # rows without any tissue tile have nothing to wait for
        arrays["done"][:] = row_done
        if segmentation:
            _write_cells(group, grid, pack)
        group.attrs["complete"] = bool(row_done.all())
    return PredictionStore(path)


def _flush_rows(arrays: dict, ready: dict, row_done: np.ndarray, seg_px: int | None) -> None:
    """Write finished rows (contiguous runs in one call per array), then mark them done (in the writer thread)."""
    by_field: dict[int, list[int]] = {}
    for f, r in ready:
        by_field.setdefault(f, []).append(r)
    for f, rows in by_field.items():
        rows.sort()
        runs, start = [], 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or rows[i] != rows[i - 1] + 1:
                runs.append(rows[start:i])
                start = i
        for run in runs:
            r0, r1 = run[0], run[-1] + 1
            bufs = [ready[(f, r)] for r in run]
            arrays["tile_class"][f, r0:r1] = np.stack([b.cls for b in bufs])
            arrays["tile_prob"][f, r0:r1] = np.stack([b.prob for b in bufs])
            arrays["tile_uncertainty"][f, r0:r1] = np.stack([b.unc for b in bufs])
            if "embedding" in arrays:
                arrays["embedding"][f, r0:r1] = np.stack([b.emb for b in bufs])
            if seg_px:
                arrays["mask"][f, r0 * seg_px : r1 * seg_px] = np.concatenate([b.mask for b in bufs])
                arrays["mask_score"][f, r0 * seg_px : r1 * seg_px] = np.concatenate([b.score for b in bufs])
                if "boundary" in arrays:
                    arrays["boundary"][f, r0 * seg_px : r1 * seg_px] = np.concatenate([b.boundary for b in bufs])
            arrays["done"][f, r0:r1] = True  # after the data: a killed run never marks a half-written row
            row_done[f, r0:r1] = True


def _probe_embedding_dim(sess) -> int | None:
    """Embedding width of a model whose graph leaves it symbolic: run one white patch."""
    if not sess.embedding_name:
        return None
    patch = np.full((1, sess.size_px, sess.size_px, 3), 255, dtype=np.uint8)
    return int(sess.run(patch)["embedding"].shape[-1])


def _write_cells(group, grid: PatchGrid, pack) -> None:
    """Cells from the stitched per-pixel output (:func:`cytoreview.inference.instances.cells_from_store`, block by
    block, each cell once) into ``cells``, and the per-pixel pyramid for the viewer (bounded memory on a slide)."""
    from cytoreview.inference.instances import cells_from_store
    from cytoreview.inference.pyramid import build_pixel_pyramid

    cells, notes = cells_from_store(group, pack.card, pack.classes, out_px=grid.out_px)
    write_cells(group, cells)
    group.attrs["cell_warnings"] = notes
    build_pixel_pyramid(group, pack.classes)
