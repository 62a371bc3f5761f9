"""``open_image``: one entry point that picks the reader for a path."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from cytoreview.errors import ImageReadError
from cytoreview.io.fields import FIELD_SUFFIXES, list_field_files, open_fields
from cytoreview.io.focus import focus_image, parse_focus
from cytoreview.io.image import Image, as_path_list

#: Suffixes opened as whole-slide images with tifffile first.
TIFF_SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".btf", ".tf8", ".tf2", ".ndpi", ".scn", ".bif", ".qptiff"}
#: Suffixes only openslide reads.
OPENSLIDE_ONLY_SUFFIXES = {".mrxs", ".vms", ".vmu", ".svslide"}
#: A single TIFF no larger than this (long side, px), not tiled and without a pyramid, is a field, not a slide.
FIELD_MAX_PX = 4096


def can_open(path: str | Path | Sequence[str | Path]) -> bool:
    """Cheap check (no pixel decoding, no file opening) whether :func:`open_image` would try ``path``."""
    paths = as_path_list(path)
    if not paths:
        return False
    if len(paths) > 1:
        return all(p.suffix.lower() in FIELD_SUFFIXES for p in paths)
    p = paths[0]
    if p.is_dir():
        try:
            return any(True for _ in list_field_files(p)) or any(p.glob("*.mrxs"))
        except OSError:
            return False
    suffix = p.suffix.lower()
    return suffix in FIELD_SUFFIXES or suffix in TIFF_SLIDE_SUFFIXES or suffix in OPENSLIDE_ONLY_SUFFIXES


def open_image(path: str | Path | Sequence[str | Path], *, mpp: float | None = None, focus=None) -> Image:
    """Open a CytoScan field set or a whole-slide image lazily.

    Parameters
    ----------
    path : str, Path or list of them
        A folder of fields, a list of field files, a single field image, or a slide file (pyramidal TIFF, SVS,
        OME-TIFF; MRXS and other openslide formats when openslide is installed).
    mpp : float, optional
        Override the pixel size of level 0 in µm/px.
    focus : {None, "edf", "best"} or int, optional
        For a field set with focus planes: ``"edf"`` an all-in-focus plane per field (extended depth of field),
        ``"best"`` the sharpest plane of each field, ``K`` plane K; None keeps the planes as a z axis. See
        :mod:`cytoreview.io.focus`.

    Returns
    -------
    Image
        Lazy levels, largest first, with ``mpp``, ``kind`` (``"wsi"`` or ``"fields"``) and ``read_region``.

    Raises
    ------
    ImageReadError
        With a message naming the file when it does not exist, is empty, corrupt or of an unsupported format.
    """
    focus = parse_focus(focus)  # a bad choice is refused before anything is opened
    image = _open_any(path, mpp)
    if focus is None:
        return image
    try:
        return focus_image(image, focus)
    except BaseException:
        image.close()
        raise


def _open_any(path, mpp: float | None) -> Image:
    paths = as_path_list(path)
    if not paths:
        raise ImageReadError("no path given")
    for p in paths:
        if not p.exists():
            raise ImageReadError(f"{p}: no such file or folder")
    if len(paths) > 1:
        return open_fields(paths, mpp=mpp)
    p = paths[0]
    if p.is_dir():
        slides = sorted(p.glob("*.mrxs"))
        if slides and not list_field_files(p):
            return _open_slide(slides[0], mpp)
        return open_fields(p, mpp=mpp)
    if p.stat().st_size == 0:
        raise ImageReadError(f"{p.name}: empty file")
    suffix = p.suffix.lower()
    if suffix in OPENSLIDE_ONLY_SUFFIXES:
        return _open_slide(p, mpp)
    if suffix in (".tif", ".tiff") and _is_small_plain_tiff(p):
        return open_fields([p], mpp=mpp)
    if suffix in TIFF_SLIDE_SUFFIXES:
        return _open_slide(p, mpp)
    if suffix in FIELD_SUFFIXES:
        return open_fields([p], mpp=mpp)
    raise ImageReadError(
        f"{p.name}: unsupported file type {suffix or '(no suffix)'}; expected a field image "
        f"({', '.join(sorted(FIELD_SUFFIXES))}) or a slide ({', '.join(sorted(TIFF_SLIDE_SUFFIXES | OPENSLIDE_ONLY_SUFFIXES))})"
    )


def _is_small_plain_tiff(path: Path) -> bool:
    """True for a TIFF that is a single untiled, unpyramided image of field size (e.g. an exported field)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            series = tif.series[0]
            return (
                not page.is_tiled
                and len(series.levels) == 1
                and not page.subifds
                and max(page.shape[:2]) <= FIELD_MAX_PX
            )
    except Exception:  # noqa: BLE001 - the slide readers give the proper error
        return False


def _open_slide(path: Path, mpp: float | None) -> Image:
    """tifffile first (fast, see DESIGN §4); openslide when tifffile cannot read the file."""
    from cytoreview.io.openslide_reader import open_openslide
    from cytoreview.io.wsi import open_tiff_slide

    if path.suffix.lower() in OPENSLIDE_ONLY_SUFFIXES:
        return open_openslide(path, mpp)
    try:
        return open_tiff_slide(path, mpp)
    except ImageReadError as tiff_error:
        try:
            return open_openslide(path, mpp)
        except ImageReadError as slide_error:
            raise ImageReadError(f"{tiff_error}; openslide fallback: {slide_error}") from tiff_error
