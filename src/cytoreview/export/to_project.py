"""Open an existing labelled dataset as a project, so a reviewer can audit and fix its labels.

The label set is read by :func:`cytoreview.export.importers.import_labels` (a class-per-folder image dataset, a
CSV/Parquet manifest in the export columns, or a QuPath GeoJSON); every image is registered, every labelled item added,
and each label journalled with source ``import:<file name>`` so the history shows where it came from.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from cytoreview.errors import ExportError, ProjectError
from cytoreview.io.mpp import mpp_is_guessed

#: Who the journal names for imported labels (the source column says which file).
IMPORT_REVIEWER = "import"

log = logging.getLogger(__name__)


def import_into_project(labelset: str | Path, project_folder: str | Path, *, progress=None, warnings: list | None = None,
                        image_root=None, **read_options):  # fmt: skip
    """Import ``labelset`` into the project at ``project_folder`` (created if missing).

    Parameters
    ----------
    labelset : path
        Folder (ImageFolder), ``.csv``/``.parquet`` manifest or ``.geojson``.
    project_folder : path
        The project to add to; classes missing from its schema are added by name.
    progress : callable, optional
        ``progress(done_items, total_items)``.
    warnings : list, optional
        Receives what the import changed or left out (repaired polygons, clipped or off-image items, links not
        followed, duplicate images, unlabelled items); each is also logged.
    image_root : path, optional
        Folder holding the images of a de-identified label set (or one made on another machine): each image it names
        that is not a file here is found under this folder (:func:`cytoreview.export.relink.relink_images`).
    **read_options
        Passed to the importer (e.g. ``mpp=`` or, for GeoJSON, ``image_path=``).

    Returns
    -------
    tuple of (Project, int)
        The open project and the number of labelled items imported (items without a label are added for review but
        not counted).

    Raises
    ------
    ExportError
        When the label set cannot be read, a row or feature is invalid, or it names an image that does not exist
        here. Everything is checked before the project is written; a project folder this call created is removed
        again if writing fails.
    """
    from cytoreview.export.importers import fit_to_plane, import_labels
    from cytoreview.io import open_image
    from cytoreview.review import Project

    labelset = Path(labelset)
    imported = import_labels(labelset, **read_options)
    found = list(imported.warnings)
    if imported.table.empty:
        raise ExportError(f"{labelset}: no labelled items to import")
    if image_root is not None:
        from cytoreview.export.relink import relink_images

        mapping = relink_images([str(p) for p in imported.images["image_path"]], labelset, image_root)
        imported.images["image_path"] = [mapping.get(str(p), str(p)) for p in imported.images["image_path"]]
        imported.table["image_path"] = [mapping.get(str(p), str(p)) for p in imported.table["image_path"]]
    source = f"import:{labelset.name}"
    # Everything is read and checked before the project is touched: a bad label set leaves nothing behind.
    opened: dict[int, dict] = {}
    guessed: list[tuple[str, float]] = []
    for row in imported.images.itertuples(index=False):
        image_path = Path(row.image_path)
        if not image_path.exists():
            raise ExportError(
                f"{labelset}: image {image_path} is not on this machine (give the folder that holds the images "
                "with --image-root, export with include_paths, or keep the images where the label set says)"
            )
        with open_image(image_path, mpp=float(row.mpp) if row.mpp == row.mpp else None) as image:
            if mpp_is_guessed(image.mpp_source):
                guessed.append((image_path.name, image.mpp))
            opened[int(row.image_id)] = {"path": image_path.resolve(), "kind": image.kind, "mpp": image.mpp,
                                         "plane_shape": image.plane_shape, "case_id": row.case_id}
    if guessed:  # one line, however many crops
        first, mpp0 = guessed[0]
        more = f" and {len(guessed) - 1} more" if len(guessed) > 1 else ""
        found.append(f"no pixel size in the label set or the image for {first}{more}; assuming {mpp0:g} µm/px -- "
                     "pass --mpp to set it")  # fmt: skip
    same_as = _same_images(opened, labelset, found)
    items_by_image: dict[int, list[tuple[dict, list[str]]]] = {}
    off_image = clipped = 0
    for r in imported.table.itertuples(index=False):
        image_id = same_as.get(int(r.image_id), int(r.image_id))
        height, width = opened[image_id]["plane_shape"]
        geometry, changed = fit_to_plane(json.loads(r.geometry), height, width)
        if geometry is None:
            off_image += 1
            continue
        clipped += changed
        item = {"level": r.level, "field": int(r.field), "z": int(r.z), "geometry": geometry}
        items_by_image.setdefault(image_id, []).append((item, [str(n) for n in r.labels]))
    if off_image:
        found.append(f"{labelset}: {off_image} item(s) lie entirely outside their image and were left out")
    if clipped:
        found.append(f"{labelset}: {clipped} region(s) reaching past the image edge were clipped to it")
    if not items_by_image:
        raise ExportError(f"{labelset}: no item lies on its image; nothing imported")

    folder = Path(project_folder)
    created = not folder.exists()
    project = Project.open(folder, create=True)
    try:
        image_ids = {image_id: project.add_image(info["path"], kind=info["kind"], mpp=info["mpp"],
                                                 case_id=info["case_id"], plane_shape=info["plane_shape"])
                     for image_id, info in opened.items() if image_id in items_by_image}
        colors = dict(imported.colors) or _export_colors(labelset)
        for name in sorted({name for items in items_by_image.values() for _, names in items for name in names}):
            try:
                project.schema.by_name(name)
            except ProjectError:
                project.schema.add(name, color=colors.get(name))
        total = sum(len(items) for items in items_by_image.values())
        done = labelled = 0
        for image_id in sorted(items_by_image):
            pairs = items_by_image[image_id]
            item_ids = project.add_items(image_ids[image_id], [item for item, _ in pairs])
            for item_id, (item, names) in zip(item_ids, pairs):
                class_ids = [project.schema.by_name(name).id for name in names]
                if class_ids:
                    label = class_ids if item["level"] == "field" else class_ids[0]
                    project.set_label(item_id, label, IMPORT_REVIEWER, source=source)
                    labelled += 1
                done += 1
                if progress is not None:
                    progress(done, total)
        if done > labelled:
            found.append(f"{labelset}: {done - labelled} item(s) have no label; added unlabelled, for review")
    except Exception:
        project.close()
        if created:
            _remove_new_project(folder)
        raise
    for warning in found:
        log.warning(warning)
    if warnings is not None:
        warnings.extend(found)
    return project, labelled


def _same_images(opened: dict[int, dict], labelset: Path, warnings: list) -> dict[int, int]:
    """Map image ids that name one image (same resolved path, or files of identical content) onto the first of them.

    Contents are compared by sha256 only among files of equal size, so distinct slides are never read whole.
    """

    first_by_key: dict[tuple, int] = {}
    same_as: dict[int, int] = {}
    by_size: dict[int, list[int]] = {}
    for image_id in sorted(opened):
        info = opened[image_id]
        key = ("path", str(info["path"]))
        if key in first_by_key:
            same_as[image_id] = first_by_key[key]
            continue
        first_by_key[key] = image_id
        if info["path"].is_file():
            by_size.setdefault(info["path"].stat().st_size, []).append(image_id)
    for ids in by_size.values():
        if len(ids) < 2:
            continue
        seen: dict[str, int] = {}
        for image_id in ids:
            try:
                digest = _sha256(opened[image_id]["path"])
            except OSError:
                continue
            if digest in seen:
                same_as[image_id] = seen[digest]
                warnings.append(f"{labelset}: {opened[image_id]['path']} has the same content as "
                                f"{opened[seen[digest]]['path']}; imported as one image (a copy in two places "
                                "would leak between splits)")
            else:
                seen[digest] = image_id
    return same_as


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remove_new_project(folder: Path) -> None:
    """Remove a project folder this import created and filled only partly (nothing in it was there before)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def _export_colors(labelset: Path) -> dict[str, str]:
    """Class colours from the ``export.json`` beside a label set of ours (``{}`` when there is none)."""
    from cytoreview.export.importers import hex_color
    from cytoreview.export.relink import export_summary

    colors = {}
    for cls in export_summary(labelset).get("classes") or []:
        color = hex_color(cls.get("color")) if isinstance(cls, dict) else None
        if color is not None and cls.get("name") is not None:
            colors[str(cls["name"])] = color
    return colors
