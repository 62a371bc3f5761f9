"""The bundled sample cases: the committed copy in ``sample_data/`` if present, else generated once into the cache.

Generation is atomic: a case is rendered into a hidden temporary folder beside its final place and renamed into
place only when complete, so a killed or failed generation never leaves a half case behind, and two processes that
race each keep one complete copy (the loser discards its own).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from .._fs import atomic_dir
from .._paths import bundled_dir, cache_dir

#: Folder names of the cases, in ``sample_data/`` and in the cache.
WARTHIN_NAME = "warthin_fna"
EFFUSION_NAME = "serous_effusion"
LYMPH_NODE_NAME = "lymph_node"
LYMPH_NODE_FILE = "lymph_node.tif"

#: Marker file written last into a generated folder; a folder without it is not a complete case.
COMPLETE_MARKER = "cytoscan.json"


def generator_digest() -> str:
    """Short hash of this package's source: a cached case made by other rendering code is never reused."""
    import hashlib

    h = hashlib.sha1()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _cache_root() -> Path:
    from .. import __version__ as version

    return cache_dir() / "samples" / f"{version}-{generator_digest()}"


def ensure_generated(final: Path, build: Callable[[Path], object], marker: str) -> Path:
    """Return ``final``, building it with ``build(tmp_folder)`` first if ``final/marker`` does not exist.

    Parameters
    ----------
    final : Path
        Folder the case lives in.
    build : callable
        Writes the complete case into the (empty, existing) folder it is given.
    marker : str
        File name inside ``final`` whose presence means the case is complete.

    Returns
    -------
    Path
        ``final``.
    """
    final = Path(final)
    if (final / marker).is_file():
        return final
    with atomic_dir(final, replace=False) as tmp:  # a lost race keeps the other process's complete copy
        build(tmp)
        if not (tmp / marker).is_file():
            raise RuntimeError(f"sample generator did not write {marker} into {tmp}")
        if final.exists() and not (final / marker).is_file():
            shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover from an old, non-atomic writer
    if not (final / marker).is_file():
        raise RuntimeError(f"sample case {final} is incomplete after generation ({marker} missing)")
    return final


def _case(name: str, marker: str, build: Callable[[Path], object], out_dir) -> Path:
    if out_dir is None:
        bundled = bundled_dir("sample_data") / name
        if (bundled / marker).is_file():
            return bundled
        root = _cache_root()
    else:
        root = Path(out_dir)
    return ensure_generated(root / name, build, marker)


def warthin_case(out_dir=None) -> Path:
    """Folder of the synthetic Warthin tumour FNA field set (8 fields, seed 0) with ground truth.

    Parameters
    ----------
    out_dir : str or Path, optional
        Where to keep (and if needed generate) the case, as ``out_dir/warthin_fna``. By default the committed copy
        in ``sample_data/`` is used, or else one generated once into the user cache.

    Returns
    -------
    Path
    """
    from .warthin import make_warthin_fields

    return _case(WARTHIN_NAME, COMPLETE_MARKER, lambda d: make_warthin_fields(d, n_fields=8, seed=0), out_dir)


def effusion_case(out_dir=None) -> Path:
    """Folder of the synthetic serous effusion field set (8 fields, seed 0) with ground truth.

    See :func:`warthin_case` for ``out_dir``.
    """
    from .effusion import make_effusion_fields

    return _case(EFFUSION_NAME, COMPLETE_MARKER, lambda d: make_effusion_fields(d, n_fields=8, seed=0), out_dir)


def lymph_node_slide(out_dir=None) -> Path:
    """Path of the synthetic lymph node whole-slide image (16384 px square, 0.5 um/px, seed 0).

    Beside it lie ``lymph_node_tumor_mask.tif`` and ``lymph_node.json``. It is not committed: the first call renders
    it (about a minute) into the user cache, or into ``out_dir/lymph_node/`` when ``out_dir`` is given.

    Returns
    -------
    Path
        The ``lymph_node.tif`` file.
    """
    from .lymph_node import make_lymph_node_slide

    folder = _case(LYMPH_NODE_NAME, "lymph_node.json",
                   lambda d: make_lymph_node_slide(d / LYMPH_NODE_FILE, size_px=16384, seed=0), out_dir)
    return folder / LYMPH_NODE_FILE
