"""Projects from the shell: make one, register images in it, open one that must already exist.

An image is registered once, under one spelling of its path: the same file reached through a symlink, ``..`` or
another mount point is refused with the spelling the project already has, instead of becoming a second image
whose labels would be split from the first one's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cytoreview.errors import CytoreviewError, ProjectError
from cytoreview.io.mpp import mpp_is_guessed

class WorkflowError(CytoreviewError):
    """A workflow cannot do what was asked (no project there, an image registered twice, ...)."""


@dataclass
class AddedImage:
    """One image registered in a project.

    Attributes
    ----------
    image_id : int
    path : Path
        The path as the project stores it.
    kind : {"wsi", "fields"}
    mpp : float
        Micrometres per pixel the project holds for it.
    mpp_source : str
        Where the pixel size came from (``"given"``, ``"svs-description"``, ``"assumed"``, ...).
    notes : list of str
        What the user should know (a guessed pixel size).
    """

    image_id: int
    path: Path
    kind: str
    mpp: float
    mpp_source: str
    notes: list[str] = field(default_factory=list)


def guessed_mpp_note(image) -> str | None:
    """A one-line note when ``image`` (an opened :class:`~cytoreview.io.Image`) has a guessed pixel size, else None."""
    if not mpp_is_guessed(image.mpp_source):
        return None
    return (f"{Path(image.path).name}: no pixel size in the image; assuming {image.mpp:g} µm/px "
            f"({image.mpp_source}) -- pass --mpp to set it")  # fmt: skip


def ood_note(image, pack, store) -> str | None:
    """Score a complete store against its pack's training statistics (:func:`cytoreview.inference.ood.assess`),
    record the result in the store (attribute ``ood``) and return the warning when the image is far outside them
    (None when it is not, or when the pack has no reference statistics)."""
    from cytoreview.inference.ood import assess, record

    if not store.complete:
        return None
    report = assess(image, pack, store)
    if report is None:
        return None
    record(store, report, pack.ref)
    return f"{Path(image.path).name}: {report.message(pack.ref)}" if report.far else None


def init_project(folder: str | os.PathLike):
    """Create an empty project in ``folder`` and return it open (an existing project is opened as it is).

    Raises
    ------
    WorkflowError
        The folder cannot be made or written (nothing is left behind that was not there before).
    ProjectError
        A file in the way, or a damaged store.
    """
    from cytoreview.review import Project

    folder = Path(folder).expanduser().absolute()
    made = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        return Project.open(folder, create=True)
    except ProjectError as exc:
        for p in made:  # only folders this call made, deepest first, and only while still empty
            try:
                p.rmdir()
            except OSError:
                break
        if not os.access(_existing_parent(folder), os.W_OK):
            raise WorkflowError(f"cannot create a project in {folder}: the folder is not writable") from exc
        raise


def open_project(folder: str | os.PathLike):
    """Open the project in ``folder``, which must exist (made with ``cytoreview project init`` or a dock).

    Raises
    ------
    WorkflowError
        No project there (the message says how to make one).
    """
    from cytoreview.review import Project
    from cytoreview.review.store import DB_NAME

    folder = Path(folder).expanduser().absolute()
    if not (folder / DB_NAME).is_file():
        raise WorkflowError(f"no cytoreview project in {folder}; make one with `cytoreview project init {folder}`")
    return Project.open(folder)


def find_image(project, image_path: str | os.PathLike):
    """The project's :class:`~cytoreview.review.ImageRecord` of ``image_path`` (any spelling of it), or None."""
    target = same_file_key(image_path)
    for record in project.images():
        if same_file_key(record.path) == target:
            return record
    return None


def check_spelling(project, image_path: str | os.PathLike) -> None:
    """Refuse ``image_path`` when the project has the same file under another spelling of its path.

    Raises
    ------
    WorkflowError
        Naming the spelling the project uses (register or predict with that one).
    """
    record = find_image(project, image_path)
    given = Path(image_path).expanduser().absolute()
    if record is not None and Path(record.path) != given:
        raise WorkflowError(f"{given} is already in project {project.folder} as {record.path} (image "
                            f"{record.id}); use that path")  # fmt: skip


def check_registrable(project, image) -> None:
    """Refuse an opened image the project cannot take: another spelling of a registered path, or a registered path
    with another kind or pixel size.

    Raises
    ------
    WorkflowError
    """
    check_spelling(project, image.path)
    record = find_image(project, image.path)
    if record is not None and (record.kind != image.kind or abs(float(record.mpp) - float(image.mpp)) > 1e-9 * image.mpp):
        raise WorkflowError(f"{record.path} is already in project {project.folder} as {record.kind} at "
                            f"{record.mpp:g} µm/px, not {image.kind} at {image.mpp:g} µm/px"
                            + (" (pass --mpp to match)" if record.kind == image.kind else ""))  # fmt: skip


def register_image(project, image, *, case_id: str | None = None) -> AddedImage:
    """Register an opened image in ``project`` (the same path again returns the existing id).

    Parameters
    ----------
    project : Project
    image : cytoreview.io.Image
        Opened with the pixel size to store (``open_image(path, mpp=...)``).
    case_id : str, optional
        Default: the ``case_id`` the image's metadata gives (a field set's ``cytoscan.json``), if any.
    """
    check_registrable(project, image)
    if case_id is None:
        case_id = (image.metadata or {}).get("case_id")
    plane = tuple(int(v) for v in image.levels[0].shape[-3:-1])
    image_id = project.add_image(image.path, kind=image.kind, mpp=image.mpp, case_id=case_id, plane_shape=plane)
    record = project.image(image_id)
    note = guessed_mpp_note(image)
    return AddedImage(image_id=image_id, path=Path(record.path), kind=record.kind, mpp=float(record.mpp),
                      mpp_source=image.mpp_source, notes=[note] if note else [])  # fmt: skip


def add_images(project_folder: str | os.PathLike, paths, *, mpp: float | None = None,
               case_id: str | None = None) -> list[AddedImage]:  # fmt: skip
    """Register slides / field sets in an existing project.

    Every path is opened (headers only) and checked before the first one is registered, so a bad path in the list
    registers nothing.

    Parameters
    ----------
    project_folder : path-like
        An existing project.
    paths : iterable of path-like
        Slide files or field-set folders.
    mpp : float, optional
        Pixel size (µm/px) of every image, instead of what the files declare.
    case_id : str, optional
        Case of every image (default: what a field set's ``cytoscan.json`` says).

    Returns
    -------
    list of AddedImage

    Raises
    ------
    WorkflowError
        No project; an image already in the project under another spelling of its path; a path given twice.
    ImageReadError
        A path that cannot be opened.
    """
    from cytoreview.io import open_image

    check_mpp(mpp)
    paths = [Path(p).expanduser().absolute() for p in paths]
    if not paths:
        raise WorkflowError("no image paths given")
    with open_project(project_folder) as project:
        keys: dict = {}
        for p in paths:
            key = same_file_key(p)
            if key in keys:
                raise WorkflowError(f"{p} is given twice (also as {keys[key]})")
            keys[key] = p
            check_spelling(project, p)
        images = []
        try:
            for p in paths:
                images.append(open_image(p, mpp=mpp))
                check_registrable(project, images[-1])
            return [register_image(project, image, case_id=case_id) for image in images]
        finally:
            for image in images:
                image.close()


def check_mpp(mpp) -> None:
    """Refuse a pixel size that is given but not a positive number (``None``: use the image's own).

    Raises
    ------
    WorkflowError
    """
    if mpp is not None and not (isinstance(mpp, (int, float)) and float(mpp) > 0):
        raise WorkflowError(f"--mpp must be a positive number of µm per pixel, got {mpp!r}")


def same_file_key(path: str | os.PathLike):
    """What identifies a file whatever its path spelling: (device, inode) when it exists, else its resolved path."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
        return (st.st_dev, st.st_ino)
    except OSError:
        return str(p.resolve())


def _existing_parent(folder: Path) -> Path:
    for p in [folder, *folder.parents]:
        if p.exists():
            return p
    return Path("/")
