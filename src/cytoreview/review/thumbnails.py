"""A project's persistent thumbnail cache: every cell's crop at one physical scale, cut once, read back by cell id.

A gallery page of 100 cells in "most doubtful first" order touches about as many fields as it has cells; decoding
them each time a page is shown costs seconds. The cache cuts each cell's thumbnail once -- in bulk, field by field,
so each field is decoded once (:meth:`cytoreview.review.cell_crops.CropReader.fill`) -- and a cold page then reads
100 small crops from disk.

Layout, inside the project folder (``thumbnails/<crop_um>um-<thumb_px>px/``, one folder per crop side and size):

* ``chunk-NNNNN.npy``: :data:`SLOTS_PER_CHUNK` thumbnails each, a plain ``.npy`` array of shape
  ``(SLOTS_PER_CHUNK, thumb_px, thumb_px, 3)`` uint8 (``numpy.load(path, mmap_mode="r")`` opens it); created sparse
  and filled as slots are written, read and written with ``os.pread`` / ``os.pwrite`` so that memory stays bounded
  whatever the number of cells (no mapping grows with the pages a reviewer has seen);
* ``index.sqlite``: ``item_id -> (slot, fingerprint, padded)``, committed only after the slot's pixels are written,
  so a killed build leaves thumbnails missing (cut again later), never an index pointing at unwritten pixels.

A thumbnail is valid while its cell's *fingerprint* -- image, image checksum, field, focus plane and centre -- is the
one it was cut for: a cell that moved (or an image whose content changed) is a miss and is cut again into its own
slot. A different crop side or size is another folder; only the :data:`KEEP_SIZES` most recently used are kept.
A project folder that cannot be written has no cache (crops are then cut each time, as before).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import threading
from pathlib import Path

import numpy as np

#: Folder of the caches inside a project folder.
CACHE_FOLDER = "thumbnails"
#: Thumbnails per chunk file.
SLOTS_PER_CHUNK = 4096
#: Crop sizes whose caches are kept (the most recently used).
KEEP_SIZES = 2
#: Chunk files kept open per cache.
OPEN_CHUNKS = 64
_MASK64 = (1 << 64) - 1


def cache_key(crop_um: float, thumb_px: int) -> str:
    """Folder name of the cache of one crop side (µm) and thumbnail side (px)."""
    return f"{float(crop_um):g}um-{int(thumb_px)}px"


def image_hash(image_id: int, checksum: str | None, stamp: str = "") -> int:
    """A 64-bit number for one image's content that cell fingerprints start from: its id, the checksum stored when
    it was added and its files' current ``stamp`` (:func:`cytoreview.review.images.file_stamp`), so a slide replaced
    at the same path gets its cells cut again instead of showing the old slide's crops."""
    digest = hashlib.blake2b(f"{int(image_id)}|{checksum or ''}|{stamp}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def fingerprints(image_hashes, fields, zs, ys, xs) -> np.ndarray:
    """Fingerprints (int64) of cells: their image's :func:`image_hash`, field, plane and centre (to 1/100 px).

    Vectorised (a splitmix64 round per component), so 10⁵ cells take milliseconds.
    """
    h = np.asarray(image_hashes, dtype=np.uint64).copy()
    parts = (np.asarray(fields, np.int64), np.asarray(zs, np.int64),
             np.round(np.asarray(ys, float) * 100).astype(np.int64), np.round(np.asarray(xs, float) * 100)
             .astype(np.int64))
    with np.errstate(over="ignore"):
        for part in parts:
            h = _mix(h ^ part.astype(np.uint64))
    return h.view(np.int64)


def _mix(h: np.ndarray) -> np.ndarray:
    h = h + np.uint64(0x9E3779B97F4A7C15)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


class ThumbnailCache:
    """The cache of one project folder for one crop side and thumbnail size (thread-safe; several processes may
    share it).

    Parameters
    ----------
    project_folder : path
    crop_um : float
    thumb_px : int

    Raises
    ------
    OSError
        The folder cannot be made or written (callers then go without a cache).
    """

    def __init__(self, project_folder, crop_um: float, thumb_px: int):
        self.thumb_px = int(thumb_px)
        self.slot_bytes = self.thumb_px * self.thumb_px * 3
        root = Path(project_folder) / CACHE_FOLDER
        self.folder = root / cache_key(crop_um, thumb_px)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "used").touch()
        _prune(root, keep=self.folder)
        try:
            self._db = sqlite3.connect(self.folder / "index.sqlite", timeout=30, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # a cache: a lost commit is a thumbnail cut again
            self._db.execute("CREATE TABLE IF NOT EXISTS thumbs (item_id INTEGER PRIMARY KEY, slot INTEGER NOT NULL,"
                             " fingerprint INTEGER NOT NULL, padded INTEGER NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS stamps (image_id INTEGER PRIMARY KEY, stamp TEXT NOT NULL)")
        except sqlite3.Error as exc:
            raise OSError(f"thumbnail cache {self.folder}: {exc}") from exc
        self._fds: dict[int, int] = {}
        self._offsets: dict[int, int] = {}
        self._lock = threading.RLock()

    def image_stamps(self, stamps: dict[int, str | None]) -> dict[int, str]:
        """The file stamps to fingerprint each image's cells with (see :func:`image_hash`).

        ``stamps`` maps image ids to their files' current :func:`~cytoreview.review.images.file_stamp`, or None
        where the image cannot be reached now. A current stamp is recorded and used; an unreachable image keeps the
        stamp recorded when it was last seen, so its cells' thumbnails still show from the cache while the slide
        is away (an unmounted share), and a slide replaced at the same path is cut again.
        """
        with self._lock:
            known = dict(self._db.execute("SELECT image_id, stamp FROM stamps").fetchall())
            seen = {int(i): st for i, st in stamps.items() if st is not None}
            changed = [(i, st) for i, st in seen.items() if known.get(i) != st]
            if changed:
                self._db.executemany("INSERT OR REPLACE INTO stamps(image_id, stamp) VALUES (?, ?)", changed)
        return {int(i): (st if st is not None else known.get(int(i), "")) for i, st in stamps.items()}

    # ------------------------------------------------------------------ read
    def get(self, item_ids, prints) -> dict[int, tuple[np.ndarray, bool]]:
        """Thumbnails of the cells whose stored fingerprint is ``prints`` (hits only): ``item_id -> (rgb, padded)``."""
        ids = [int(i) for i in item_ids]
        want = dict(zip(ids, (int(p) for p in prints)))
        out: dict[int, tuple[np.ndarray, bool]] = {}
        with self._lock:
            for item_id, slot, fingerprint, padded in self._rows(ids):
                if want.get(item_id) == fingerprint:
                    out[item_id] = (self._read_slot(slot), bool(padded))
        return out

    def missing(self, item_ids, prints) -> np.ndarray:
        """Positions in ``item_ids`` whose thumbnail is not cached for that fingerprint."""
        ids = np.asarray(item_ids, np.int64)
        with self._lock:
            stored = self._db.execute("SELECT item_id, fingerprint FROM thumbs").fetchall()
        if not stored:
            return np.arange(len(ids))
        known = np.array(stored, np.int64)
        order = np.argsort(known[:, 0])
        keys, values = known[order, 0], known[order, 1]
        pos = np.clip(np.searchsorted(keys, ids), 0, len(keys) - 1)
        hit = (keys[pos] == ids) & (values[pos] == np.asarray(prints, np.int64))
        return np.flatnonzero(~hit)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM thumbs").fetchone()[0])

    # ------------------------------------------------------------------ write
    def put(self, item_ids, prints, crops) -> None:
        """Store thumbnails (``crops``: ``(rgb, padded)`` pairs, rgb ``(thumb_px, thumb_px, 3)`` uint8).

        A cell already cached keeps its slot (overwritten); new cells get new slots. The index is committed after
        the pixels are written, and the row of a slot about to be overwritten is deleted (committed) before: a
        process killed in between leaves a miss, never an old fingerprint that finds the new pixels.
        """
        ids = [int(i) for i in item_ids]
        if not ids:
            return
        with self._lock:
            slots = {item_id: slot for item_id, slot, _fp, _pad in self._rows(ids)}
            new = [i for i in dict.fromkeys(ids) if i not in slots]
            reused = list(slots)
            if new or reused:
                self._db.execute("BEGIN IMMEDIATE")  # slots are handed out under the database's write lock
                try:
                    for s in range(0, len(reused), 500):  # under SQLite's parameter limit
                        part = reused[s:s + 500]
                        self._db.execute(f"DELETE FROM thumbs WHERE item_id IN ({','.join('?' * len(part))})",
                                         part)
                    row = self._db.execute("SELECT value FROM meta WHERE key = 'next_slot'").fetchone()
                    first = int(row[0]) if row else 0
                    if new:
                        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('next_slot', ?)",
                                         (first + len(new),))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                slots.update((item_id, first + k) for k, item_id in enumerate(new))
            rows = []
            for item_id, fingerprint, (rgb, padded) in zip(ids, prints, crops):
                rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
                if rgb.shape != (self.thumb_px, self.thumb_px, 3):
                    raise ValueError(f"thumbnail of cell {item_id} is {rgb.shape}, expected "
                                     f"{(self.thumb_px, self.thumb_px, 3)}")
                self._write_slot(slots[item_id], rgb)
                rows.append((item_id, slots[item_id], int(fingerprint), int(bool(padded))))
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO thumbs VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the index and the chunk files."""
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            self._db.close()

    # ------------------------------------------------------------------ chunks
    def _rows(self, ids: list[int]):
        out = []
        for s in range(0, len(ids), 500):  # under SQLite's parameter limit
            part = ids[s:s + 500]
            out += self._db.execute("SELECT item_id, slot, fingerprint, padded FROM thumbs WHERE item_id IN "
                                    f"({','.join('?' * len(part))})", part).fetchall()
        return out

    def _chunk(self, chunk: int) -> tuple[int, int]:
        """``(fd, data offset)`` of a chunk file, made (sparse) on first use."""
        if chunk in self._fds:
            return self._fds[chunk], self._offsets[chunk]
        path = self.folder / f"chunk-{chunk:05d}.npy"
        if not path.exists():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
            shape = (SLOTS_PER_CHUNK, self.thumb_px, self.thumb_px, 3)
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)  # sparse: nothing written
            del mm
            try:
                os.link(tmp, path)  # never replaces a chunk another process made meanwhile
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _fortran, dtype = read_header(fh)
            offset = fh.tell()
        if shape != (SLOTS_PER_CHUNK, self.thumb_px, self.thumb_px, 3) or dtype != np.uint8:
            raise OSError(f"thumbnail chunk {path} holds {shape} {dtype}: not this cache's layout")
        fd = os.open(path, os.O_RDWR)
        if len(self._fds) >= OPEN_CHUNKS:
            oldest = next(iter(self._fds))
            os.close(self._fds.pop(oldest))
            self._offsets.pop(oldest)
        self._fds[chunk], self._offsets[chunk] = fd, offset
        return fd, offset

    def _read_slot(self, slot: int) -> np.ndarray:
        fd, offset = self._chunk(slot // SLOTS_PER_CHUNK)
        data = os.pread(fd, self.slot_bytes, offset + (slot % SLOTS_PER_CHUNK) * self.slot_bytes)
        return np.frombuffer(data, np.uint8).reshape(self.thumb_px, self.thumb_px, 3).copy()

    def _write_slot(self, slot: int, rgb: np.ndarray) -> None:
        fd, offset = self._chunk(slot // SLOTS_PER_CHUNK)
        os.pwrite(fd, rgb.tobytes(), offset + (slot % SLOTS_PER_CHUNK) * self.slot_bytes)


def _prune(root: Path, keep: Path) -> None:
    """Remove the caches of other crop sizes beyond the :data:`KEEP_SIZES` most recently used."""
    others = []
    for folder in root.iterdir():
        if folder.is_dir() and folder != keep:
            used = folder / "used"
            others.append((used.stat().st_mtime if used.exists() else 0.0, folder))
    for _mtime, folder in sorted(others, reverse=True)[KEEP_SIZES - 1:]:
        shutil.rmtree(folder, ignore_errors=True)

