"""CytoScan field sets: a folder (or list) of same-size RGB field images opened as one lazy stack.

The stack is ``(field, y, x, 3)``, or ``(field, z, y, x, 3)`` when fields were captured at several focus planes (a
``_z<k>`` suffix in the file names, or multi-page TIFF fields). Only file headers are read when opening; each field is
decoded when it is first indexed (one dask chunk per field and plane; the dask graph itself is built on first pixel
access, see :class:`LazyStack`). Files of another size than the majority, or whose header is unreadable, are left out
with a warning naming them; a field whose pixels fail to decode later shows white and is reported in
``Image.warnings``.

Hostile or unusual fields are handled by rule, each reported in ``Image.warnings`` (see :func:`decode_field`):

* a header claiming more than :data:`MAX_FIELD_BYTES` decoded is left out before anything is decoded (memory bomb);
* pages of a multi-page TIFF whose size differs from its first page are left out by number, the others kept;
* 16-bit (and other integer) fields are scaled by their dtype's range, never by their own maximum; float fields are
  taken as 0-1 when their values fit, else as 0-255, and NaN pixels show white; RGBA (and LA, transparent palette)
  fields are composited on white, as the slide readers do; a field of one flat value is reported;
* a JPEG without its end-of-image marker is reported as truncated at open (``cytoreview info`` shows it); its pixels
  then show blank and its tiles are marked unpredicted by ``predict``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cytoreview.errors import ImageReadError
from cytoreview.io.image import CYTOSCAN_MPP, Image, materialise
from cytoreview.io.mpp import _plausible, resolution_mpp

log = logging.getLogger(__name__)

#: File suffixes taken as fields.
FIELD_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
#: Sidecar files whose ``mpp`` (µm/px) overrides the CytoScan default.
SIDECAR_NAMES = ("cytoscan.json", "metadata.json")

_Z_PATTERN = re.compile(r"^(?P<base>.+?)[_-]z(?P<z>\d+)$", re.IGNORECASE)


#: Largest decoded size (bytes, as 8-bit RGB or the file's own dtype, whichever is larger) one field may claim; a
#: header claiming more is left out before decoding. 64 Mpx of RGB (8192 x 8192) is 30 CytoScan fields.
MAX_FIELD_BYTES = 8192 * 8192 * 3

#: Decoded planes kept per field set, so patch-sized reads of one field (inference, crops) decode it once.
RECENT_PLANES = 4


class _RecentPlanes:
    """A tiny thread-safe LRU of decoded planes (bounded: RECENT_PLANES x one field, ~7 MB each at CytoScan size)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._planes: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> np.ndarray | None:
        with self._lock:
            plane = self._planes.get(key)
            if plane is not None:
                self._planes.move_to_end(key)
            return plane

    def put(self, key: tuple[int, int], plane: np.ndarray) -> None:
        plane.setflags(write=False)  # shared between readers: nobody may scribble on it
        with self._lock:
            self._planes[key] = plane
            while len(self._planes) > self.capacity:
                self._planes.popitem(last=False)


@dataclass(frozen=True)
class _FieldFile:
    path: Path
    height: int
    width: int
    pages: int  # focus planes inside the file (multi-page TIFF), else 1
    page_indices: tuple[int, ...] = (0,)  # which pages of the file those planes are
    notes: tuple[str, ...] = ()  # what the header says will be converted or lost (shown in Image.warnings)


class LazyStack:
    """A field set's dask stack, built on the first access that needs more than its shape and dtype.

    Opening a field set reads headers only; ``import dask.array`` alone costs about a second (it pulls in
    scipy.sparse and scipy.fftpack), so describing a field set (``cytoreview info``) must not build the graph.
    ``shape``, ``dtype``, ``ndim`` and ``len`` come from the headers; indexing, ``np.asarray`` and every other
    attribute (``chunks``, ``compute``, dask's collection protocol ...) are those of the dask array, built once.

    Parameters
    ----------
    shape : tuple of int
        Shape of the stack, from the field headers.
    build : callable
        Returns the ``dask.array.Array`` of that shape (uint8).
    """

    def __init__(self, shape: tuple[int, ...], build):
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(np.uint8)
        self.ndim = len(self.shape)
        self._build = build
        self._array = None
        self._lock = threading.Lock()

    @property
    def array(self):
        """The dask array (built on first use, then kept)."""
        if self._array is None:
            with self._lock:
                if self._array is None:
                    self._array = self._build()
        return self._array

    def __getitem__(self, index):
        return self.array[index]

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(materialise(self.array), dtype=dtype)

    def __getattr__(self, name: str):
        # only reached for names not set in __init__; private and Python-protocol names are not forwarded, dask's
        # own protocol (__dask_graph__ ...) is; an object not made by __init__ forwards nothing (no recursion)
        if (name.startswith("_") and not name.startswith("__dask_")) or "_build" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.array, name)

    def __reduce__(self):
        return LazyStack, (self.shape, self._build)  # copies (and pickles, where ``build`` pickles) rebuild lazily

    def __repr__(self) -> str:
        state = "built" if self._array is not None else "not built yet"
        return f"LazyStack(shape={self.shape}, dtype=uint8, dask graph {state})"


def natural_key(name: str) -> list:
    """Sort key that orders ``field_2`` before ``field_10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_field_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, naturally sorted (hidden files and sub-folders ignored)."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FIELD_SUFFIXES]
    files = [p for p in files if not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def _check_claimed_size(path: Path, height: int, width: int, samples: int, itemsize: int) -> None:
    claimed = int(height) * int(width) * max(int(samples), 3) * max(int(itemsize), 1)
    if claimed > MAX_FIELD_BYTES:
        raise ImageReadError(
            f"{path.name}: header claims {width}x{height} px ({claimed / 1024**3:.1f} GiB decoded), over the "
            f"{MAX_FIELD_BYTES // 1024**2} MiB bound for one field; refused before decoding"
        )


def _dtype_note(path: Path, dtype: np.dtype, alpha: bool) -> list[str]:
    notes = []
    if dtype.kind == "f":
        notes.append(f"{path.name}: {dtype.name} pixels converted to 8 bits (0-1 or 0-255 by range); NaN shows white")
    elif dtype != np.uint8 and dtype.kind in "iub":
        notes.append(f"{path.name}: {dtype.name} pixels scaled to 8 bits by the {dtype.name} range")
    if alpha:
        notes.append(f"{path.name}: transparency composited on white")
    return notes


def _jpeg_is_truncated(path: Path) -> bool:
    """True when a JPEG file has no end-of-image marker (FFD9) in its last 256 bytes.

    Entropy-coded JPEG data never holds FF D9 (an FF there is followed by 00 or a restart marker), so the marker near
    the end means the file is whole; a few bytes of padding or trailer after it are allowed.
    """
    with open(path, "rb") as handle:
        handle.seek(max(path.stat().st_size - 256, 0))
        tail = handle.read()
    return b"\xff\xd9" not in tail


def _read_header(path: Path) -> _FieldFile:
    """Read size, page count, dtype and transparency without decoding pixels; refuse a claimed size over the bound."""
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path.name}: empty file")
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            first = tif.pages.first
            height, width = (int(n) for n in first.shape[:2])
            _check_claimed_size(path, height, width, first.samplesperpixel, np.dtype(first.dtype).itemsize)
            kept, notes = [], []
            for k, page in enumerate(tif.pages):
                if tuple(page.shape) == tuple(first.shape) and page.dtype == first.dtype:
                    kept.append(k)
                else:
                    shape = "x".join(str(n) for n in page.shape[1::-1])
                    notes.append(f"{path.name}: page {k} is {shape} {page.dtype}, unlike page 0 "
                                 f"({width}x{height} {first.dtype}); left out")
            alpha = bool(first.extrasamples) or first.samplesperpixel in (2, 4)
            notes += _dtype_note(path, np.dtype(first.dtype), alpha)
            return _FieldFile(path, height, width, len(kept), tuple(kept), tuple(notes))
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        width, height = im.size
        mode, info = im.mode, dict(im.info)
    dtype = {"F": np.dtype(np.float32), "I": np.dtype(np.uint16)}.get(mode, np.dtype(np.uint8))
    if mode.startswith("I;16"):
        dtype = np.dtype(np.uint16)
    _check_claimed_size(path, height, width, 4 if "A" in mode else 3, dtype.itemsize)
    notes = _dtype_note(path, dtype, "A" in mode or "transparency" in info)
    if path.suffix.lower() in (".jpg", ".jpeg") and _jpeg_is_truncated(path):
        notes.append(f"{path.name}: JPEG is truncated (no end-of-image marker); it cannot be decoded and shows blank")
    return _FieldFile(path, int(height), int(width), 1, (0,), tuple(notes))


def decode_field(path: Path, page: int = 0, notes: list | None = None) -> np.ndarray:
    """Decode one field (one page of a multi-page TIFF) to ``(y, x, 3)`` uint8, converting by rule.

    Parameters
    ----------
    path : Path
        The field file.
    page : int
        Page of a multi-page TIFF (the file's own page number).
    notes : list of str, optional
        Where what only the pixels show is appended: NaN pixels (shown white) and a field of one flat value.

    Notes
    -----
    The rules: integer dtypes are scaled by their dtype's range (a 16-bit 7 stays near black); floats are taken as
    0-1 when their finite values fit in it, else as 0-255 (clipped); NaN is white; an alpha channel is composited on
    white (transparent = nothing captured); one channel is repeated to grey.
    """
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        data = tifffile.imread(path, key=page)
    else:
        from PIL import Image as PILImage

        with PILImage.open(path) as im:
            if im.mode in ("RGB", "L", "RGBA", "LA", "F") or im.mode.startswith("I"):
                data = np.asarray(im)
            elif "transparency" in im.info or im.mode in ("PA", "RGBa", "La"):
                data = np.asarray(im.convert("RGBA"))
            else:
                data = np.asarray(im.convert("RGB"))
            if im.mode == "I":  # PIL reads 16-bit PNGs as 32-bit "I": their range is 16-bit
                data = np.clip(data, 0, 65535).astype(np.uint16)
    return _to_rgb8(data, path, notes)


def _to_rgb8(data: np.ndarray, path: Path, notes: list | None) -> np.ndarray:
    from cytoreview.io.safe import _on_white  # noqa: PLC0415 - the one on-white compositing rule of the readers

    if data.ndim == 2:
        data = data[..., None]
    if data.dtype == np.uint8:
        out = data
    elif data.dtype.kind == "f":
        values = data.astype(np.float32)
        finite = np.isfinite(values)
        nan = ~finite
        top = float(values[finite].max()) if finite.any() else 0.0
        low = float(values[finite].min()) if finite.any() else 0.0
        scale = 255.0 if (top <= 1.0 and low >= 0.0) else 1.0
        values = np.where(finite, np.clip(values * scale, 0, 255), 255.0)
        out = np.round(values).astype(np.uint8)
        if nan.any() and notes is not None:
            notes.append(f"{path.name}: {int(nan.any(axis=-1).sum())} NaN/inf pixels shown white")
    elif data.dtype == np.bool_:
        out = data.astype(np.uint8) * 255
    elif data.dtype.kind in "iu":
        top = float(np.iinfo(data.dtype).max)
        out = np.round(np.clip(data.astype(np.float64), 0, top) * (255.0 / top)).astype(np.uint8)
    else:
        raise ImageReadError(f"{path.name}: unsupported pixel type {data.dtype}")
    channels = out.shape[-1]
    if channels == 2:  # grey + alpha
        out = np.concatenate([np.repeat(out[..., :1], 3, axis=2), out[..., 1:2]], axis=2)
    elif channels == 1:
        out = np.repeat(out, 3, axis=2)
    if out.shape[-1] >= 4:
        out = _on_white(np.ascontiguousarray(out[..., :4]))
    out = np.ascontiguousarray(out[..., :3])
    if notes is not None and out.size and (out == out.reshape(-1)[0]).all():
        notes.append(f"{path.name}: the whole field is one flat value ({int(out.reshape(-1)[0])}): blank or failed capture?")
    return out


def _sidecar_mpp(folder: Path) -> tuple[float | None, dict]:
    for name in SIDECAR_NAMES:
        sidecar = folder / name
        if sidecar.is_file():
            try:
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ImageReadError(f"{sidecar}: not valid JSON ({exc})") from exc
            if not isinstance(meta, dict):
                raise ImageReadError(f"{sidecar}: expected a JSON object")
            value = meta.get("mpp")
            if value is None:
                return None, meta
            mpp = _plausible(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            if mpp is None:
                raise ImageReadError(f"{sidecar}: mpp {value!r} is not a plausible pixel size in µm/px")
            return mpp, meta
    return None, {}


def _tiff_field_mpp(path: Path) -> float | None:
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return resolution_mpp(tif.pages.first)


def _group_focus_planes(files: list[_FieldFile]) -> tuple[list[list[tuple[Path, int]]], str | None]:
    """Group files into fields of focus planes: ``[[(path, page), ...] per field]`` and an optional warning."""
    if files and all(f.pages > 1 for f in files) and len({f.pages for f in files}) == 1:
        return [[(f.path, k) for k in f.page_indices] for f in files], None
    matches = [_Z_PATTERN.match(f.path.stem) for f in files]
    if files and all(matches):
        groups: dict[str, list[tuple[int, Path]]] = {}
        for f, m in zip(files, matches):
            groups.setdefault(m.group("base"), []).append((int(m.group("z")), f.path))
        sizes = {len(v) for v in groups.values()}
        if len(sizes) == 1 and sizes.pop() > 1:
            ordered = sorted(groups, key=natural_key)
            return [[(p, 0) for _, p in sorted(groups[base])] for base in ordered], None
        return [[(f.path, 0)] for f in files], "focus-plane suffixes found but fields have unequal plane counts; planes shown as fields"
    return [[(f.path, 0)] for f in files], None


def open_fields(paths: Path | list[Path], mpp: float | None = None) -> Image:
    """Open a CytoScan field set lazily.

    Parameters
    ----------
    paths : Path or list of Path
        A folder of field images, or the field files themselves.
    mpp : float, optional
        Override the pixel size (µm/px); otherwise a sidecar ``cytoscan.json``/``metadata.json``, the TIFF resolution
        tags, or the CytoScan default 0.293 µm/px (450×) is used.

    Raises
    ------
    ImageReadError
        When no readable field image is found.
    """
    if isinstance(paths, Path) and paths.is_dir():
        folder = paths
        files = list_field_files(folder)
        if not files:
            raise ImageReadError(f"{folder}: no field images ({', '.join(sorted(FIELD_SUFFIXES))}) in this folder")
    else:
        files = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
        folder = files[0].parent if files else Path(".")
        if not files:
            raise ImageReadError("no field images given")
    warnings: list[str] = []
    headers: list[_FieldFile] = []
    for path in files:
        try:
            headers.append(_read_header(path))
        except Exception as exc:  # noqa: BLE001 - PIL/tifffile raise many types for a bad file
            reason = exc if isinstance(exc, ImageReadError) else f"{path.name}: unreadable ({exc})"
            warnings.append(f"{reason}; left out")
    if not headers:
        raise ImageReadError(f"{folder}: none of the {len(files)} field images is readable: " + "; ".join(warnings))
    size_counts = Counter((h.height, h.width) for h in headers)
    (height, width), _ = size_counts.most_common(1)[0]
    for h in headers:
        if (h.height, h.width) != (height, width):
            warnings.append(f"{h.path.name}: size {h.width}x{h.height} differs from the set's {width}x{height}; left out")
    headers = [h for h in headers if (h.height, h.width) == (height, width)]
    for h in headers:
        warnings.extend(h.notes)
    fields, note = _group_focus_planes(headers)
    if note:
        warnings.append(note)
    n_fields, n_z = len(fields), len(fields[0])

    sidecar_mpp, sidecar = _sidecar_mpp(folder)
    if mpp is not None:
        found_mpp, source = float(mpp), "given"
    elif sidecar_mpp is not None:
        found_mpp, source = sidecar_mpp, "sidecar"
    elif (tiff_mpp := _tiff_field_mpp(headers[0].path)) is not None:
        found_mpp, source = tiff_mpp, "tiff-resolution"
    else:
        found_mpp, source = CYTOSCAN_MPP, "default (CytoScan 450x)"

    decode_warnings = warnings  # decode failures found later are appended here, visible on Image.warnings
    recent = _RecentPlanes(RECENT_PLANES)

    def load_block(block_id=None):
        field_index, z_index = block_id[0], (block_id[1] if n_z > 1 else 0)
        data = recent.get((field_index, z_index))
        if data is None:
            data = decode_plane(field_index, z_index)
            recent.put((field_index, z_index), data)
        return data.reshape((1,) * (2 if n_z > 1 else 1) + data.shape)

    def decode_plane(field_index: int, z_index: int) -> np.ndarray:
        path, page = fields[field_index][z_index]
        try:
            notes: list[str] = []
            data = decode_field(path, page, notes=notes)
            for note in notes:
                if note not in decode_warnings:
                    decode_warnings.append(note)
                    log.warning(note)
            if data.shape[:2] != (height, width):
                raise ValueError(f"decoded size {data.shape[1]}x{data.shape[0]} differs from its header")
        except Exception as exc:  # noqa: BLE001 - show the rest of the set
            message = f"{path.name}: cannot decode ({exc}); shown blank"
            if message not in decode_warnings:
                decode_warnings.append(message)
                log.warning(message)
            data = np.full((height, width, 3), 255, np.uint8)
        return data

    if n_z > 1:
        chunks = ((1,) * n_fields, (1,) * n_z, (height,), (width,), (3,))
    else:
        chunks = ((1,) * n_fields, (height,), (width,), (3,))

    def build_stack():
        import dask.array as da

        return da.map_blocks(load_block, chunks=chunks, dtype=np.uint8, meta=np.empty((0,) * len(chunks), np.uint8))

    stack = LazyStack(tuple(sum(c) for c in chunks), build_stack)
    field_names = [planes[0][0].name if n_z == 1 else planes[0][0].stem for planes in fields]
    metadata = {k: v for k, v in sidecar.items() if k != "mpp"}
    metadata["n_z"] = n_z
    return Image(
        path=folder if (isinstance(paths, Path) and paths.is_dir()) else files[0],
        kind="fields",
        levels=[stack],
        mpp=found_mpp,
        reader="fields",
        field_names=field_names,
        mpp_source=source,
        warnings=warnings,
        metadata=metadata,
    )
