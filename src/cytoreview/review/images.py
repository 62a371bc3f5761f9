"""The images of a project (slide files, field-set folders) and the prediction stores imported for them."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cytoreview.errors import ProjectError
from cytoreview.review.connection import Database, now_iso

_log = logging.getLogger(__name__)

_IMAGE_COLUMNS = "id, path, kind, mpp, checksum, case_id, height_px, width_px, added_at"


@dataclass(frozen=True)
class ImageRecord:
    """One image of a project."""

    id: int
    path: Path
    kind: str
    mpp: float
    checksum: str | None
    case_id: str | None
    plane_shape: tuple[int, int] | None
    added_at: str


@dataclass(frozen=True)
class PredictionStoreRecord:
    """A prediction store imported into a project (one per image x store path)."""

    image_id: int
    path: str
    pack: str
    pack_version: str
    n_items: int
    imported_at: str

    def to_dict(self) -> dict:
        """The record as a plain dict (the keys of the attributes)."""
        return {"image_id": self.image_id, "path": self.path, "pack": self.pack, "pack_version": self.pack_version,
                "n_items": self.n_items, "imported_at": self.imported_at}


def quick_checksum(path: Path) -> str:
    """A cheap content fingerprint: sha256 over size + first and last MiB of a slide file, or of each field file
    of a field-set folder (:func:`cytoreview.io.fields.list_field_files`: only the fields, so the project folder
    ``.cytoreview/`` inside it, ground truth or notes do not change it).

    Good enough to notice that a path now holds a different slide; not a cryptographic digest of the whole file.

    Raises
    ------
    OSError
        A file cannot be read (:func:`add_image` turns this into a ProjectError).
    """
    from cytoreview.io.fields import list_field_files

    h = hashlib.sha256()
    files = list_field_files(path) if path.is_dir() else [path]
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}\n".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > (2 << 20):
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read())
    return "q1:" + h.hexdigest()


def file_stamp(path: Path) -> str | None:
    """Size and modification time (ns) of a slide file, or of each field file of a field-set folder: a stat-only
    signature that changes when a path is given a different slide or field set (cheap enough to take each time a
    project is opened; a file merely touched changes it too).

    An image that cannot be listed or stat-ed gives None.
    """
    from cytoreview.io.fields import list_field_files

    try:
        files = list_field_files(path) if path.is_dir() else [path]
        stats = [f.stat() for f in files]
    except OSError:
        return None
    return ";".join(f"{f.name}:{st.st_size}:{st.st_mtime_ns}" for f, st in zip(files, stats))


def add_image(db: Database, path: str | os.PathLike, *, kind: str, mpp: float, case_id: str | None = None,
              plane_shape: tuple[int, int] | None = None, checksum: str | None = None) -> int:
    """Register an image and return its id; see :meth:`cytoreview.review.Project.add_image`."""
    p = Path(path).expanduser().absolute()
    if kind not in ("wsi", "fields"):
        raise ProjectError(f"image kind {kind!r} is not 'wsi' or 'fields'")
    try:
        mpp = float(mpp)
    except (TypeError, ValueError):
        raise ProjectError(f"mpp {mpp!r} for {p} is not a number") from None
    if not mpp > 0:
        raise ProjectError(f"mpp {mpp!r} for {p} must be > 0 um/px")
    if not p.exists():
        raise ProjectError(f"image {p} does not exist")
    known = db.read(lambda con: con.execute("SELECT 1 FROM images WHERE path=?", (str(p),)).fetchone())
    if plane_shape is None:
        plane_shape = _plane_shape_of(p)
    if checksum is None and known is None:  # fingerprint once, when the image is first added
        try:
            checksum = quick_checksum(p)
        except OSError as exc:
            raise ProjectError(f"cannot fingerprint image {p}: {exc}") from exc
    h, w = (None, None) if plane_shape is None else (int(plane_shape[0]), int(plane_shape[1]))
    with db.write() as con:
        row = con.execute("SELECT id, kind, mpp FROM images WHERE path=?", (str(p),)).fetchone()
        if row is not None:
            if row[1] != kind or abs(row[2] - mpp) > 1e-9 * mpp:
                raise ProjectError(f"image {p} is already in the project as kind={row[1]!r}, mpp={row[2]}; "
                                   f"got kind={kind!r}, mpp={mpp}")
            con.execute("UPDATE images SET case_id=COALESCE(case_id, ?), height_px=COALESCE(height_px, ?), "
                        "width_px=COALESCE(width_px, ?) WHERE id=?", (case_id, h, w, row[0]))
            return int(row[0])
        moved = _moved_record(con, checksum, kind, mpp) if known is None else None
        if moved is not None:  # the same slide or field set, moved: the project follows it instead of a duplicate
            con.execute("UPDATE images SET path=? WHERE id=?", (str(p), moved[0]))
            _log.info("image %s moved from %s to %s: the project now reads it there", moved[0], moved[1], p)
            return int(moved[0])
        cur = con.execute("INSERT INTO images(path, kind, mpp, checksum, case_id, height_px, width_px, added_at) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (str(p), kind, mpp, checksum, case_id, h, w, now_iso()))
        return int(cur.lastrowid)


def _moved_record(con, checksum: str | None, kind: str, mpp: float) -> tuple[int, str] | None:
    """``(id, old path)`` of the registered image that ``checksum`` says was moved: the same content fingerprint,
    kind and pixel size, at a path that no longer exists. A copy (the old path still there) is not a move."""
    if not checksum:
        return None
    rows = con.execute("SELECT id, path, kind, mpp FROM images WHERE checksum=? ORDER BY id", (checksum,)).fetchall()
    for image_id, old_path, old_kind, old_mpp in rows:
        if old_kind == kind and abs(old_mpp - mpp) <= 1e-9 * mpp and not Path(old_path).exists():
            return int(image_id), old_path
    return None


def image_problems(db: Database, image_ids=None, *, content: bool = True) -> dict[int, str]:
    """What stands between the project and its images: ``{image_id: reason}`` for each image (of ``image_ids``, or
    all) that is not at its recorded path, or (with ``content``) whose files now hold other pixels than when it was
    added -- its :func:`quick_checksum` differs from the stored one, so its predictions, cells and labels belong to
    the slide that was there before. Images without a stored checksum are only checked for presence.

    ``content`` reads up to 2 MiB of each slide file, or of each field file of a field set.
    """
    wanted = None if image_ids is None else {int(i) for i in image_ids}
    problems: dict[int, str] = {}
    for rec in list_images(db):
        if wanted is not None and rec.id not in wanted:
            continue
        if not rec.path.exists():
            problems[rec.id] = (f"{rec.path} is not there: moved or unmounted (adding it at its new path relinks "
                                "it)")
        elif content and rec.checksum:
            try:
                now = quick_checksum(rec.path)
            except OSError as exc:
                problems[rec.id] = f"{rec.path} cannot be read: {exc.strerror or exc}"
                continue
            if now != rec.checksum:
                problems[rec.id] = (f"{rec.path} holds other content than when it was added on {rec.added_at[:10]}:"
                                    " its predictions and labels belong to the image that was there")
    return problems


def list_images(db: Database) -> list[ImageRecord]:
    """All images, by id."""
    rows = db.read(lambda con: con.execute(f"SELECT {_IMAGE_COLUMNS} FROM images ORDER BY id").fetchall())
    return [_record(r) for r in rows]


def get_image(db: Database, image_id: int) -> ImageRecord:
    """The image with id ``image_id``; :class:`ProjectError` if there is none."""
    try:
        key = int(image_id)
    except (TypeError, ValueError):
        key = None
    row = None if key is None else db.read(lambda con: con.execute(
        f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id=?", (key,)).fetchone())
    if row is None:
        raise ProjectError(f"no image with id {image_id!r} in project {db.path.parent}")
    return _record(row)


def plane_shape(con, image_id: int) -> tuple[int, int] | None:
    """``(height, width)`` of image ``image_id`` inside a transaction; :class:`ProjectError` if no such image."""
    img = con.execute("SELECT height_px, width_px FROM images WHERE id=?", (image_id,)).fetchone()
    if img is None:
        raise ProjectError(f"no image with id {image_id!r} in the project")
    return None if img[0] is None else (img[0], img[1])


def record_prediction_store(con, image_id: int, path: Path, pack: str, pack_version: str, n_items: int) -> None:
    """Note (inside the import's transaction) that the store at ``path`` was imported for ``image_id``."""
    con.execute(
        "INSERT INTO predictions(image_id, path, pack, pack_version, n_items, imported_at) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(image_id, path) DO UPDATE SET n_items=excluded.n_items, imported_at=excluded.imported_at",
        (image_id, str(path), str(pack), str(pack_version), int(n_items), now_iso()))


def prediction_stores(db: Database) -> list[PredictionStoreRecord]:
    """The prediction stores imported into the project, in import order."""
    rows = db.read(lambda con: con.execute(
        "SELECT image_id, path, pack, pack_version, n_items, imported_at FROM predictions ORDER BY id").fetchall())
    return [PredictionStoreRecord(*r) for r in rows]


def _record(r) -> ImageRecord:
    return ImageRecord(id=r[0], path=Path(r[1]), kind=r[2], mpp=r[3], checksum=r[4], case_id=r[5],
                       plane_shape=None if r[6] is None else (r[6], r[7]), added_at=r[8])


def _plane_shape_of(path: Path) -> tuple[int, int] | None:
    """``(height, width)`` of one plane via :func:`cytoreview.io.open_image`."""
    from cytoreview.io import open_image

    image = open_image(path)
    try:
        return tuple(int(v) for v in image.plane_shape)
    finally:
        close = getattr(image, "close", None)
        if close is not None:
            close()
