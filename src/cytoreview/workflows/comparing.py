"""Compare two packs on a project's images: the tiles whose predicted class changed (the "flips").

After a refit the reviewer wants to see where the new pack disagrees with the one it came from. Both packs are run
on each image into ``<project>/predictions`` (a complete store of the same pack version is reused, an unfinished one
resumed) and :func:`cytoreview.train.flips` lists the differences.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cytoreview.errors import CytoreviewError
from cytoreview.workflows.projects import WorkflowError, find_image, open_project

#: Columns the comparison adds in front of :data:`cytoreview.train.flips.FLIP_COLUMNS`.
IMAGE_COLUMNS = ("image_id", "image_path")


class Cancelled(CytoreviewError):
    """The comparison was cancelled (finished prediction rows are kept; running again resumes)."""


@dataclass
class ImageComparison:
    """Both packs' stores of one image and their flips.

    Attributes
    ----------
    image_path : Path
    base_store, new_store : Path
    flips : pandas.DataFrame
        :func:`cytoreview.train.flips` of the two stores.
    notes : list of str
    """

    image_path: Path
    base_store: Path
    new_store: Path
    flips: object  # pandas.DataFrame
    notes: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    """Flips of two packs over a project's images.

    Attributes
    ----------
    base, new : str
        ``pack@version`` of the two packs.
    images : list of ImageComparison
    flips : pandas.DataFrame
        All images' flips, with ``image_id`` and ``image_path`` in front.
    n_tiles : int
        Tiles predicted by both packs (the flips are out of these).
    """

    base: str
    new: str
    images: list[ImageComparison]
    flips: object  # pandas.DataFrame
    n_tiles: int = 0


def compare_image(image_path: str | os.PathLike, base_pack, new_pack, project_folder: str | os.PathLike, *,
                  import_new: bool = False, threads: int | None = None, providers=None, progress=None,
                  cancel=None) -> ImageComparison:  # fmt: skip
    """Predict one image with both packs into ``<project>/predictions`` and return their flips.

    Parameters
    ----------
    image_path : path-like
    base_pack, new_pack : ModelPack or str or Path
    project_folder : path-like
        Where the stores go; with ``import_new`` the project whose image gets the new pack's predictions.
    import_new : bool
        Import the new pack's predictions into the project (when the image is registered there).
    threads, providers
        Passed to :func:`cytoreview.inference.predict`.
    progress : callable, optional
        ``progress(pack_ref, done_tiles, total_tiles)``.
    cancel : threading.Event-like, optional

    Raises
    ------
    Cancelled
        When ``cancel`` was set before both stores were complete.
    """
    from cytoreview.inference import predict
    from cytoreview.models import load_pack
    from cytoreview.train import flips

    base_pack, new_pack = load_pack(base_pack), load_pack(new_pack)
    if base_pack.task != "tile-classification" or new_pack.task != "tile-classification":
        raise WorkflowError(f"compare needs two tile-classification packs, got {base_pack.ref} ({base_pack.task}) "
                            f"and {new_pack.ref} ({new_pack.task})")  # fmt: skip
    folder = Path(project_folder).expanduser().absolute()
    out = folder / "predictions"
    notes: list[str] = []

    def stage(ref):
        return None if progress is None else (lambda done, total: progress(ref, done, total))

    stores = []
    for pack in (base_pack, new_pack):
        store = predict(image_path, pack, out, threads=threads, providers=providers, progress=stage(pack.ref),
                        cancel=cancel)  # fmt: skip
        if not store.complete:
            raise Cancelled(f"cancelled while predicting {Path(image_path).name} with {pack.ref}; run again to resume")
        stores.append(store)
    base_store, new_store = stores
    if import_new:
        try:
            with open_project(folder) as project:
                record = find_image(project, image_path)
                if record is None:
                    notes.append(f"{new_pack.ref} predictions not imported: {Path(image_path).name} is not in the "
                                 "project")  # fmt: skip
                else:
                    project.import_predictions(record.id, new_store.path)
                    notes.append(f"imported {new_pack.ref} predictions into the project")
        except CytoreviewError as exc:
            notes.append(f"predictions not imported into the project: {exc}")
    return ImageComparison(image_path=Path(image_path), base_store=Path(base_store.path),
                           new_store=Path(new_store.path), flips=flips(base_store, new_store), notes=notes)  # fmt: skip


def compare_packs(project_folder: str | os.PathLike, base_pack, new_pack, *, image_ids=None,
                  import_new: bool = False, threads: int | None = None, providers=None, progress=None,
                  cancel=None, extra_dirs=()) -> Comparison:  # fmt: skip
    """Flips of ``new_pack`` against ``base_pack`` on every image of a project (or the ones in ``image_ids``).

    Parameters
    ----------
    project_folder : path-like
        An existing project; packs are also looked up in its ``packs/`` folder.
    base_pack, new_pack : ModelPack or str or Path
        Pack objects, folders, or ``name`` / ``name@version``.
    image_ids : iterable of int, optional
    import_new : bool
        Import the new pack's predictions into the project.
    threads, providers, progress, cancel
        As for :func:`compare_image`.
    extra_dirs : iterable of path
        More folders to look for packs in.

    Returns
    -------
    Comparison

    Raises
    ------
    WorkflowError
        No project; no images in it; an image id it does not have; a pack that is not a tile classifier.
    PackError
        A pack that cannot be found or loaded.
    """
    import numpy as np
    import pandas as pd

    from cytoreview.inference import PredictionStore
    from cytoreview.models import load_pack
    from cytoreview.train.flips import FLIP_COLUMNS

    folder = Path(project_folder).expanduser().absolute()
    with open_project(folder) as project:
        records = project.images()
    dirs = [*extra_dirs, folder / "packs"] if (folder / "packs").is_dir() else list(extra_dirs)
    base_pack, new_pack = load_pack(base_pack, extra_dirs=dirs), load_pack(new_pack, extra_dirs=dirs)
    if image_ids is not None:
        wanted = [int(i) for i in image_ids]
        known = {r.id for r in records}
        missing = [i for i in wanted if i not in known]
        if missing:
            raise WorkflowError(f"project {folder} has no image {missing[0]}")
        records = [r for r in records if r.id in wanted]
    if not records:
        raise WorkflowError(f"project {folder} has no images; add some with `cytoreview project add` or predict")
    results, frames, n_tiles = [], [], 0
    for record in records:
        result = compare_image(record.path, base_pack, new_pack, folder, import_new=import_new, threads=threads,
                               providers=providers, progress=progress, cancel=cancel)  # fmt: skip
        results.append(result)
        df = result.flips.copy()
        df.insert(0, "image_path", str(record.path))
        df.insert(0, "image_id", int(record.id))
        frames.append(df)
        a = np.asarray(PredictionStore(result.base_store).tile_class[:])
        b = np.asarray(PredictionStore(result.new_store).tile_class[:])
        n_tiles += int(((a >= 0) & (b >= 0)).sum())
    columns = [*IMAGE_COLUMNS, *FLIP_COLUMNS]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return Comparison(base=base_pack.ref, new=new_pack.ref, images=results, flips=table[columns], n_tiles=n_tiles)
