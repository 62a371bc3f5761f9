"""Where things go: the one rule for an image's project folder, and the folder of a refit pack inside a project.

Every dock and every command asks these functions, so a project made in napari is the one the shell finds, and
the other way round.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Name of the project folder inside a field-set folder, and the suffix of the one beside a slide file.
PROJECT_SUFFIX = ".cytoreview"


def project_folder_for(image_path: str | os.PathLike) -> Path:
    """The default review project of an image.

    ``<folder>/.cytoreview/`` inside a field-set folder, ``<slide>.cytoreview/`` beside a slide file (a single field
    file counts as a slide file). When that place cannot be written (a read-only share, an installed sample case)
    and no project is there yet, the project goes to ``<cache>/projects/<image name>.cytoreview/`` instead.

    Parameters
    ----------
    image_path : path-like
        Slide file or field-set folder.

    Returns
    -------
    Path
        The folder (not created).
    """
    path = Path(image_path).expanduser().absolute()
    folder = path / PROJECT_SUFFIX if path.is_dir() else path.with_name(path.name + PROJECT_SUFFIX)
    parent = folder.parent
    if folder.exists() or not parent.exists() or os.access(parent, os.W_OK):
        return folder
    from cytoreview._paths import cache_dir

    return cache_dir() / "projects" / f"{path.name}{PROJECT_SUFFIX}"


def next_pack_folder(project_folder: str | os.PathLike, base, name: str | None = None) -> Path:
    """``<project>/packs/<name>-<next version>``: where a refit of ``base`` goes; a folder that does not exist yet.

    Parameters
    ----------
    project_folder : path-like
    base : ModelPack
        The pack being refit.
    name : str, optional
        Name of the new pack (default: the base's name, with the next free version; another name starts at 1.0.0).
    """
    from cytoreview.train.refit import next_version

    name = name or base.name
    packs = Path(project_folder) / "packs"
    taken = {base.version} if name == base.name else set()
    if packs.is_dir():
        from cytoreview.models import find_packs

        taken |= {p.version for p in find_packs([packs], errors=[]) if p.name == name}
    version = next_version(base.version, taken) if name == base.name else "1.0.0"
    while version in taken or (packs / f"{name}-{version}").exists():
        taken.add(version)
        version = next_version(version, taken)
    return packs / f"{name}-{version}"
