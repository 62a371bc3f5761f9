"""Open an existing labelled dataset as a project, so a reviewer can audit and fix its labels.

The label set is read by :func:`cytoreview.export.importers.import_labels` (a class-per-folder image dataset, a
CSV/Parquet manifest in the export columns, or a QuPath GeoJSON); every image is registered, every labelled item added,
and each label journalled with source ``import:<file name>`` so the history shows where it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

from cytoreview.errors import ExportError, ProjectError

#: Who the journal names for imported labels (the source column says which file).
IMPORT_REVIEWER = "import"


def import_into_project(labelset: str | Path, project_folder: str | Path, *, progress=None, image_root=None,
                        **read_options):  # fmt: skip
    """Import ``labelset`` into the project at ``project_folder`` (created if missing).

    Parameters
    ----------
    labelset : path
        Folder (ImageFolder), ``.csv``/``.parquet`` manifest or ``.geojson``.
    project_folder : path
        The project to add to; classes missing from its schema are added by name.
    progress : callable, optional
        ``progress(done_items, total_items)``.
    image_root : path, optional
        Folder holding the images of a de-identified label set (or one made on another machine): each image it names
        that is not a file here is found under this folder (:func:`cytoreview.export.relink.relink_images`).
    **read_options
        Passed to the importer (e.g. ``mpp=`` or, for GeoJSON, ``image_path=``).

    Returns
    -------
    tuple of (Project, int)
        The open project and the number of labelled items imported.

    Raises
    ------
    ExportError
        When the label set cannot be read or names an image that does not exist here.
    """
    from cytoreview.export.importers import import_labels
    from cytoreview.io import open_image
    from cytoreview.review import Project

    labelset = Path(labelset)
    imported = import_labels(labelset, **read_options)
    if imported.table.empty:
        raise ExportError(f"{labelset}: no labelled items to import")
    if image_root is not None:
        from cytoreview.export.relink import relink_images

        mapping = relink_images([str(p) for p in imported.images["image_path"]], labelset, image_root)
        imported.images["image_path"] = [mapping.get(str(p), str(p)) for p in imported.images["image_path"]]
        imported.table["image_path"] = [mapping.get(str(p), str(p)) for p in imported.table["image_path"]]
    missing = [p for p in imported.images["image_path"] if not Path(str(p)).exists()]
    if missing:
        raise ExportError(
            f"{labelset}: image {missing[0]} is not on this machine (give the folder that holds the images with "
            "--image-root, export with include_paths, or keep the images where the label set says)"
        )
    source = f"import:{labelset.name}"
    project = Project.open(project_folder, create=True)
    try:
        image_ids: dict[int, int] = {}
        for row in imported.images.itertuples(index=False):
            image_path = Path(row.image_path)
            if not image_path.exists():
                raise ExportError(
                    f"{labelset}: image {image_path} is not on this machine (export with include_paths, or keep the "
                    "images where the label set says)"
                )
            with open_image(image_path, mpp=float(row.mpp) if row.mpp == row.mpp else None) as image:
                kind, mpp = image.kind, image.mpp
            image_ids[int(row.image_id)] = project.add_image(image_path, kind=kind, mpp=mpp, case_id=row.case_id)
        colors = dict(imported.colors) or _export_colors(labelset)
        for name in sorted({name for names in imported.table["labels"] for name in names}):
            try:
                project.schema.by_name(name)
            except ProjectError:
                project.schema.add(name, color=colors.get(name))
        total, done = len(imported.table), 0
        for image_id, rows in imported.table.groupby("image_id", sort=True):
            items = [
                {"level": r.level, "field": int(r.field), "z": int(r.z), "geometry": json.loads(r.geometry)}
                for r in rows.itertuples(index=False)
            ]
            item_ids = project.add_items(image_ids[int(image_id)], items)
            for item_id, r in zip(item_ids, rows.itertuples(index=False)):
                class_ids = [project.schema.by_name(name).id for name in r.labels]
                if class_ids:
                    label = class_ids if r.level == "field" else class_ids[0]
                    project.set_label(item_id, label, IMPORT_REVIEWER, source=source)
                done += 1
                if progress is not None:
                    progress(done, total)
    except Exception:
        project.close()
        raise
    return project, done


def _export_colors(labelset: Path) -> dict[str, str]:
    """Class colours from the ``export.json`` beside a label set of ours (``{}`` when there is none)."""
    from cytoreview.export.relink import export_summary
    from cytoreview.export.importers import hex_color

    colors = {}
    for cls in export_summary(labelset).get("classes") or []:
        color = hex_color(cls.get("color")) if isinstance(cls, dict) else None
        if color is not None and cls.get("name") is not None:
            colors[str(cls["name"])] = color
    return colors
