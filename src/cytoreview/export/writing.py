"""Writing outputs so that a failed export never leaves a file that looks finished.

Single files are written to a temporary name in the same folder and renamed into place (``os.replace`` is atomic on
one file system). Folders (ImageFolder crops, OME-Zarr) are built under a hidden ``.<name>.partial`` folder and
renamed when complete. While an export runs, ``out_dir/_INCOMPLETE`` exists; it is removed only on success.
OS errors (read-only folder, full disk) become :class:`~cytoreview.errors.ExportError` naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from cytoreview import _fs
from cytoreview.errors import ExportError

INCOMPLETE_MARKER = "_INCOMPLETE"


def os_error(path: Path, exc: OSError) -> ExportError:
    """An ExportError that names ``path`` and says why in words a user understands."""
    if exc.errno == errno.ENOSPC:
        why = "the disk is full"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "permission denied (read-only or not writable)"
    else:
        why = exc.strerror or str(exc)
    return ExportError(f"cannot write {path}: {why}")


def prepare_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` (and parents), check it is writable, and put the ``_INCOMPLETE`` marker in it."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        marker = out_dir / INCOMPLETE_MARKER
        marker.write_text("an export is running or failed; files here may be partial\n", encoding="utf-8")
    except OSError as exc:
        raise os_error(out_dir, exc) from exc
    return out_dir


def finish_out_dir(out_dir: Path) -> None:
    """Remove the ``_INCOMPLETE`` marker (the export succeeded)."""
    with contextlib.suppress(FileNotFoundError):
        (Path(out_dir) / INCOMPLETE_MARKER).unlink()


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds, else delete it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise os_error(path, exc) from exc
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; swap it in for ``path`` when the block succeeds.

    :func:`cytoreview._fs.atomic_dir` with OS errors turned into ExportError naming ``path``.
    """
    path = Path(path)
    try:
        with _fs.atomic_dir(path, replace=True) as tmp:
            yield tmp
    except OSError as exc:
        raise os_error(path, exc) from exc


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_with(path: Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and rename the result to ``path`` atomically."""
    with atomic_file(path) as tmp:
        writer(tmp)
    return Path(path)


_remove = _fs.remove
