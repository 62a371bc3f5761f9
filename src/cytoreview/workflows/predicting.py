"""Predict into a project: run a pack over an image, register the image, import the finished predictions.

This is what the predict dock runs in its worker thread and what ``cytoreview predict --project`` runs per image.
Stores go to ``<project>/predictions``; a store that did not finish (cancelled) is kept for resuming but not
imported, and the project is not touched until a store is complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cytoreview.workflows.projects import (
    WorkflowError,
    check_mpp,
    check_registrable,
    guessed_mpp_note,
    ood_note,
    open_project,
    register_image,
)


@dataclass
class PredictionRun:
    """What predicting one image into a project produced.

    Attributes
    ----------
    store_path : Path
        The prediction store.
    project_folder : Path
    complete : bool
        False when the run was cancelled (finished rows are kept; running again resumes).
    image_id : int or None
        The image's id in the project (None until a complete store was imported).
    n_items : int
        Items the store describes in the project (0 when not imported).
    done_tiles, total_tiles : int
        Progress of the run when it ended.
    notes : list of str
        What the user should know (a guessed pixel size, an image far outside the pack's training data).
    cell_store_path : Path or None
        The cell classifier's store of a chained run (``then=``).
    ood_warning : str or None
        The out-of-distribution warning (:func:`cytoreview.workflows.ood_note`), also among ``notes``.
    """

    store_path: Path
    project_folder: Path
    complete: bool
    image_id: int | None = None
    n_items: int = 0
    done_tiles: int = 0
    total_tiles: int = 0
    notes: list[str] = field(default_factory=list)
    cell_store_path: Path | None = None
    ood_warning: str | None = None


def predict_into_project(
    image_path: str | os.PathLike,
    pack,
    project_folder: str | os.PathLike,
    *,
    create: bool = False,
    mpp: float | None = None,
    case_id: str | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    providers=None,
    tissue_threshold: float | None = None,
    resume: bool = True,
    allow_upsample: bool = False,
    session=None,
    progress=None,
    cancel=None,
    focus=None,
    then=None,
) -> PredictionRun:
    """Predict ``image_path`` with ``pack`` into the project at ``project_folder``.

    Parameters
    ----------
    image_path : path-like
        Slide file or field-set folder.
    pack : ModelPack or str or Path
        Anything :func:`cytoreview.models.load_pack` accepts.
    project_folder : path-like
        The review project; see :func:`cytoreview.workflows.project_folder_for` for the default place.
    create : bool
        Make the project when there is none (the docks do; the CLI asks for ``cytoreview project init`` first). It
        is made only once a store is complete.
    mpp : float, optional
        Pixel size (µm/px) of the image instead of what it declares.
    case_id : str, optional
        Case of the image (default: what a field set's ``cytoscan.json`` says).
    batch_size, threads, providers, tissue_threshold, resume, allow_upsample, session, cancel
        Passed to :func:`cytoreview.inference.predict`.
    progress : callable, optional
        ``progress(done_tiles, total_tiles)``.
    focus : {None, "edf", "best"} or int, optional
        For a field set with focus planes: predict on the collapsed stack (see :mod:`cytoreview.io.focus`).
    then : ModelPack or str or Path, optional
        A ``cell-classification`` pack run on every cell ``pack`` (a segmentation pack) finds
        (:func:`cytoreview.inference.classify.classify_cells`); its store is imported in the detector's stead, so each
        cell item carries the classifier's class, probability and uncertainty. ``run.cell_store_path`` names it.

    Returns
    -------
    PredictionRun

    Raises
    ------
    WorkflowError
        No project (and ``create`` false); the image is in the project under another spelling of its path.
    CytoreviewError
        A bad pack, resolution mismatch, unreadable image, unwritable store (from ``predict``).
    """
    from cytoreview.inference import predict
    from cytoreview.inference.predict import image_problems
    from cytoreview.io import open_image
    from cytoreview.models import load_pack

    check_mpp(mpp)
    folder = Path(project_folder).expanduser().absolute()
    pack = load_pack(pack)
    if then is not None:
        from cytoreview.inference.classify import check_chain

        then = load_pack(then)
        check_chain(pack, then)
    if not create:
        open_project(folder).close()  # raises the "no project" error
    counts = [0, 0]

    def report(done: int, total: int) -> None:
        counts[:] = [done, total]
        if progress is not None:
            progress(done, total)

    with open_image(image_path, mpp=mpp, focus=focus) as image:
        if (folder / "project.sqlite").is_file():
            with open_project(folder) as project:  # refuse what the project cannot take before any tile runs
                check_registrable(project, image)
        note = guessed_mpp_note(image)
        store = predict(image, pack, folder / "predictions", batch_size=batch_size, threads=threads,
                        providers=providers, tissue_threshold=tissue_threshold, progress=report, cancel=cancel,
                        resume=resume, allow_upsample=allow_upsample, session=session)  # fmt: skip
        run = PredictionRun(store_path=Path(store.path), project_folder=folder, complete=bool(store.complete),
                            done_tiles=counts[0], total_tiles=counts[1],
                            notes=([note] if note else []) + image_problems(store.path))  # fmt: skip
        far = ood_note(image, pack, store)  # the image unlike the pack's training tiles: say so, in the store too
        if far:
            run.notes.append(far)
            run.ood_warning = far
        if store.complete and then is not None:
            from cytoreview.inference.classify import classify_cells

            cells = classify_cells(image, store, then, folder / "predictions", threads=threads, providers=providers,
                                   progress=report, cancel=cancel)
            run.cell_store_path = Path(cells.path)
            run.complete = bool(cells.complete)
        if run.complete:
            # the detector's store brings the classifier's beside it (cytoreview.review.predictions.store_yield)
            run.image_id, run.n_items = import_store(folder, image, store.path, case_id=case_id, create=create)
    return run


def import_store(project_folder, image, store_path, *, case_id: str | None = None,
                 create: bool = False) -> tuple[int, int]:  # fmt: skip
    """Register ``image`` in the project and import its complete prediction store.

    Parameters
    ----------
    project_folder : path-like
    image : cytoreview.io.Image or path-like
        The opened image (or its path, opened here with the pixel size it declares).
    store_path : path-like
        A complete store of that image.
    case_id : str, optional
    create : bool
        Make the project when there is none.

    Returns
    -------
    (int, int)
        The image id and the number of items the store describes.
    """
    from cytoreview.io import open_image
    from cytoreview.review import Project

    folder = Path(project_folder).expanduser().absolute()
    if not create:
        open_project(folder).close()
    if isinstance(image, (str, os.PathLike)):
        with open_image(image) as opened:
            return import_store(folder, opened, store_path, case_id=case_id, create=create)
    with Project.open(folder, create=create) as project:
        added = register_image(project, image, case_id=case_id)
        return added.image_id, project.import_predictions(added.image_id, store_path)


def predict_images_into_project(paths, pack, project_folder, *, progress_for=None, **options) -> list[PredictionRun]:
    """:func:`predict_into_project` for several images with one onnxruntime session.

    Every path is checked (exists, not registered under another spelling, given once) before the first tile is
    predicted.

    Parameters
    ----------
    paths : iterable of path-like
    pack : ModelPack or str or Path
    project_folder : path-like
        An existing project (unless ``create=True`` is passed).
    progress_for : callable, optional
        ``progress_for(path) -> progress callable or None`` (one progress bar per image).
    **options
        Passed to :func:`predict_into_project` (``providers`` and ``threads`` also open the shared session).
    """
    from cytoreview.models import load_pack
    from cytoreview.workflows.projects import same_file_key

    pack = load_pack(pack)
    paths = [Path(p).expanduser().absolute() for p in paths]
    if not paths:
        raise WorkflowError("no image paths given")
    folder = Path(project_folder).expanduser().absolute()
    if not options.get("create"):
        open_project(folder).close()  # raises the "no project" error
    seen: dict = {}
    for p in paths:
        key = same_file_key(p)
        if key in seen:
            raise WorkflowError(f"{p} is given twice (also as {seen[key]})")
        seen[key] = p
    _check_openable(paths, folder, options.get("mpp"), options.get("focus"))
    session = options.pop("session", None) or pack.session(providers=options.get("providers"),
                                                             threads=options.get("threads"))  # fmt: skip
    runs = []
    for p in paths:
        progress = progress_for(p) if progress_for is not None else None
        runs.append(predict_into_project(p, pack, folder, session=session, progress=progress, **options))
    return runs


def _check_openable(paths, folder: Path, mpp, focus=None) -> None:
    """Open every image (headers only) before the first tile is predicted, and check that the project can take it."""
    from cytoreview.io import open_image
    from cytoreview.workflows.projects import check_registrable

    project = open_project(folder) if (folder / "project.sqlite").is_file() else None
    try:
        for p in paths:
            with open_image(p, mpp=mpp, focus=focus) as image:
                if project is not None:
                    check_registrable(project, image)
    finally:
        if project is not None:
            project.close()
