"""Find the images of a de-identified label set again: ``cytoreview import --image-root DIR``.

A de-identified export names each image by a key (``<case>_img<id>``), never by its path. Its ``export.json`` keeps,
beside each key, the image's content fingerprint (:func:`content_fingerprint`: sizes and first / last MiB of the
file, or of each field file of a field set; not the slide's own name, so a renamed or moved slide is still found).
Given a folder, every slide file and field-set folder under it is fingerprinted (only until every key is found) and
the keys are relinked to the images whose fingerprints match. A label set that names real paths (exported with
``include_paths``, or made elsewhere) is relinked by file or folder name under the folder instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cytoreview.errors import ExportError

#: Folders never searched for images (project folders, prediction stores, exports' crops).
_SKIP_SUFFIXES = (".cytoreview", ".zarr")


def content_fingerprint(path: str | os.PathLike) -> str:
    """A cheap, name-independent fingerprint of a slide file or field-set folder.

    sha256 over the size and the first and last MiB of the file; for a field-set folder, over each field file's name
    (inside the set), size, first and last MiB. A slide keeps its fingerprint when it is renamed or moved.

    Raises
    ------
    OSError
        A file cannot be read.
    """
    import hashlib

    from cytoreview.io.fields import list_field_files

    path = Path(path)
    h = hashlib.sha256()
    files = list_field_files(path) if path.is_dir() else [path]
    for f in files:
        size = f.stat().st_size
        h.update((f"{f.name}:" if path.is_dir() else "").encode() + f"{size}\n".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > (2 << 20):
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read())
    return "f1:" + h.hexdigest()


def image_fingerprints(records) -> dict[int, str]:
    """``{image id: content_fingerprint}`` of a project's image records (images not readable here are left out)."""
    out = {}
    for rec in records:
        try:
            out[int(rec.id)] = content_fingerprint(rec.path)
        except OSError:
            continue
    return out


def export_summary(labelset: str | os.PathLike) -> dict:
    """The ``export.json`` next to (or above) a label set, or ``{}`` when there is none."""
    path = Path(labelset)
    for folder in (path if path.is_dir() else path.parent, path.parent, path.parent.parent):
        summary = folder / "export.json"
        if summary.is_file():
            try:
                return json.loads(summary.read_text("utf-8"))
            except (OSError, ValueError):
                return {}
    return {}


def image_candidates(root: Path):
    """Slide files and field-set folders under ``root`` (hidden folders, projects and zarr stores skipped)."""
    from cytoreview.io.fields import FIELD_SUFFIXES, list_field_files
    from cytoreview.io.open import OPENSLIDE_ONLY_SUFFIXES, TIFF_SLIDE_SUFFIXES

    slide_suffixes = TIFF_SLIDE_SUFFIXES | OPENSLIDE_ONLY_SUFFIXES | set(FIELD_SUFFIXES)
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(_SKIP_SUFFIXES))
        here = Path(folder)
        try:
            if here != root and list_field_files(here):
                yield here
        except OSError:
            pass
        for name in sorted(files):
            if Path(name).suffix.lower() in slide_suffixes:
                yield here / name


def relink_images(image_paths: list[str], labelset: str | os.PathLike, image_root: str | os.PathLike) -> dict[str, str]:
    """Map each image name of a label set that is not a file here to the image under ``image_root`` it stands for.

    Parameters
    ----------
    image_paths : list of str
        The label set's image names (de-identified keys, or paths from another machine).
    labelset : path-like
        The label set (its ``export.json`` gives the keys' fingerprints).
    image_root : path-like
        Folder holding the images (searched recursively).

    Returns
    -------
    dict
        ``{name in the label set: path here}`` for every name that is not already an existing path.

    Raises
    ------
    ExportError
        The folder does not exist, or an image cannot be found under it (the message names the key).
    """
    root = Path(image_root).expanduser().absolute()
    if not root.is_dir():
        raise ExportError(f"--image-root {root} is not a folder")
    wanted = [p for p in dict.fromkeys(image_paths) if not Path(p).exists()]
    if not wanted:
        return {}
    fingerprints = {e["key"]: e.get("fingerprint") for e in export_summary(labelset).get("images", []) if "key" in e}
    mapping: dict[str, str] = {}
    by_checksum = {fingerprints[k]: k for k in wanted if fingerprints.get(k)}
    by_name: dict[str, list[str]] = {}
    for k in wanted:
        if k not in fingerprints:
            by_name.setdefault(Path(k).name, []).append(k)
    for candidate in image_candidates(root):
        if not by_checksum and not by_name:
            break
        for k in by_name.pop(candidate.name, []):
            mapping[k] = str(candidate)
        if by_checksum:
            try:
                checksum = content_fingerprint(candidate)
            except OSError:
                continue
            key = by_checksum.pop(checksum, None)
            if key is not None:
                mapping[key] = str(candidate)
    missing = [k for k in wanted if k not in mapping]
    if missing:
        how = "with the fingerprint export.json gives it" if fingerprints.get(missing[0]) else "by that name"
        extra = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        if missing[0] in fingerprints and not fingerprints[missing[0]]:
            how = "(export.json has no fingerprint for it)"
        raise ExportError(f"{labelset}: image {missing[0]!r}{extra} not found under {root} {how}")
    return mapping
