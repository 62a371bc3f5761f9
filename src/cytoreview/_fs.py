"""Small file-system helpers shared by parts that must not depend on each other (export, samples)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Build a folder under a hidden temporary name beside ``path`` and rename it to ``path`` when the block succeeds.

    A failed or killed block never leaves a half-written ``path``: the temporary folder is removed (a killed process
    leaves only a hidden ``.<name>.partial-*`` folder, which the next build of the same ``path`` removes; two
    processes building the same folder at once is not supported).

    Parameters
    ----------
    path : path-like
        The folder to create.
    replace : bool
        True: an existing ``path`` is replaced by the new folder (a re-export). False: if another process created
        ``path`` in the meantime (a lost race), keep theirs and discard ours.

    Yields
    ------
    Path
        The empty temporary folder to write into.

    Raises
    ------
    OSError
        Creating, writing or renaming failed (callers turn it into their own error naming the path).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.partial-*"):  # left by a killed run: nobody finishes it now
        remove(stale)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the result is ordinary readable data
        yield tmp
        if replace:
            remove(path)
            os.replace(tmp, path)
        else:
            try:
                os.rename(tmp, path)
            except OSError:
                if not path.is_dir():  # not a lost race: a real error
                    raise
    finally:
        if tmp.exists():
            remove(tmp)


def remove(path: Path) -> None:
    """Delete a file, link or folder tree if it exists (errors ignored)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError:
        pass
