"""``export_labels``: filter, split, balance and write a label table in every format trainers use.

Output folder layout (only the requested formats)::

    out_dir/
      labels.csv, labels.parquet     manifest (format "csv" / "parquet")
      imagefolder/                   crops per class (+ split folders), metadata.csv
      coco/instances.json            COCO (+ instances_<split>.json)
      geojson/<plane>.geojson        QuPath GeoJSON per plane
      masks/<plane>.tif, <plane>.ome.zarr, classes.json
      export.json                    what was exported: options, counts, class distribution, split report

Each file appears only when complete (temp name + rename); ``out_dir/_INCOMPLETE`` exists while an export runs and
stays when it failed.
"""

from __future__ import annotations

import datetime as _dt
import json
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from cytoreview.errors import ExportError
from cytoreview.export.balance import balance_table, class_distribution
from cytoreview.export.filters import filter_items
from cytoreview.export.images import ImageSource
from cytoreview.export.splits import SplitWarning, assign_splits, split_report
from cytoreview.export.table import (
    attach_geometries,
    class_colors,
    class_order,
    fill_field_boxes,
    validate_table,
)
from cytoreview.export.writing import finish_out_dir, prepare_out_dir, write_text

#: Formats ``export_labels`` writes, in the order it writes them.
FORMATS = ("csv", "parquet", "geojson", "coco", "mask", "imagefolder")
_ALIASES = {"masks": "mask", "ome-zarr": "mask", "tiff": "mask", "json": "coco", "qupath": "geojson"}


def parse_formats(formats: str | Iterable[str]) -> list[str]:
    """Normalise ``"csv,coco"`` or ``["csv", "coco"]`` (or ``"all"``) to a list of known format names."""
    if isinstance(formats, str):
        formats = [f for f in formats.split(",") if f.strip()]
    out: list[str] = []
    for f in formats:
        name = _ALIASES.get(f.strip().lower(), f.strip().lower())
        if name == "all":
            return list(FORMATS)
        if name not in FORMATS:
            raise ExportError(f"unknown export format {f!r}; choose from {', '.join(FORMATS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ExportError("no export format given")
    return out


def export_labels(
    table: pd.DataFrame,
    out_dir: str | Path,
    formats: str | Iterable[str] = ("csv",),
    *,
    images: Mapping[Any, Any] | Callable | None = None,
    only_reviewed: bool | None = None,
    select: str = "reviewed",
    min_confidence: float = 0.9,
    include_unsure: bool = False,
    split: Any = None,
    balance: str | None = None,
    balance_target: int | None = None,
    crop_um: float | None = 32.0,
    crop_px: int | None = None,
    crop_mpp: float | None = None,
    max_crop_px: int = 1024,
    image_format: str = "png",
    cell_diameter_um: float = 10.0,
    cell_shape: str = "point",
    mask_classes: list[str] | None = None,
    mask_downsample: float | None = None,
    mask_formats: tuple[str, ...] = ("tiff", "ome-zarr"),
    colors: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    include_paths: bool = False,
    image_fingerprints: Mapping[int, str] | None = None,
) -> dict[str, Path]:
    """Export a label table; return ``{format: path}`` of what was written.

    Parameters
    ----------
    table : pandas.DataFrame
        The label table (``Project.label_table()``; columns in
        :data:`cytoreview.export.table.LABEL_TABLE_COLUMNS`).
    out_dir : str or Path
        Output folder (created). See the module docstring for its layout.
    formats : str or iterable of str
        Any of ``csv``, ``parquet``, ``geojson``, ``coco``, ``mask``, ``imagefolder`` (or ``"all"``; a
        comma-separated string works too).
    images : mapping, callable or None
        How to get pixels and plane sizes (``coco``, ``mask``, ``imagefolder``): ``{image_id or path: Image}``, a
        callable ``open(path) -> Image``, or None for ``cytoreview.io.open_image``.
    only_reviewed : bool, optional
        Shorthand: True is ``select="reviewed"``, False is ``select="all"``; None leaves ``select`` as given.
    select : {"reviewed", "all", "corrected", "trusted"}
        Which items to export (:func:`cytoreview.export.filters.filter_items`).
    min_confidence : float
        For ``select="trusted"``: least model confidence of accepted items.
    include_unsure : bool
        Export items marked unsure (left out by default).
    split : None, True, sequence or dict
        Make train/validation/test splits grouped by case: True for 70/15/15, or fractions.
    balance : {None, "oversample", "undersample"}
        Balance classes of the training split (all items when there are no splits).
    balance_target : int, optional
        Items per class after balancing (default: largest class for oversample, smallest for undersample).
    crop_um, crop_px, crop_mpp, max_crop_px, image_format
        ImageFolder crop options (:func:`cytoreview.export.imagefolder.write_imagefolder`).
    cell_diameter_um : float
        Size given to cells (points) in COCO boxes, GeoJSON discs and masks.
    cell_shape : {"point", "disc"}
        How GeoJSON writes cells.
    mask_classes, mask_downsample, mask_formats
        Mask options (:func:`cytoreview.export.masks.write_masks`).
    colors : mapping, optional
        ``{class name: "#rrggbb" or (r, g, b)}`` (the project schema's colours); others get a stable colour.
    seed : int
        Seed for splits, balancing and augmentation.
    progress : callable, optional
        ``progress(stage, done, total)``; stage is the format being written.
    include_paths : bool
        Write original image paths into the outputs (off: images are named by case id and image id).
    image_fingerprints : mapping, optional
        ``{image_id: content fingerprint}`` (:func:`cytoreview.export.relink.content_fingerprint`). Written into
        ``export.json`` beside each de-identified image key, so ``cytoreview import --image-root`` can find the
        images again by their content without the export naming a path.

    Returns
    -------
    dict
        ``{"csv": out_dir/"labels.csv", "coco": out_dir/"coco/instances.json", "geojson": out_dir/"geojson",
        "mask": out_dir/"masks", "imagefolder": out_dir/"imagefolder", "parquet": ..., "summary": out_dir/"export.json"}``.

    Raises
    ------
    ExportError
        Bad table or option, an image that cannot be opened, or an output that cannot be written (the message names
        the path); ``out_dir/_INCOMPLETE`` is left behind in that case.
    """
    fmts = parse_formats(formats)
    if only_reviewed is not None:
        select = "reviewed" if only_reviewed else "all"
    data = validate_table(table)
    data, filter_report = filter_items(data, select, min_confidence=min_confidence, include_unsure=include_unsure)
    if set(fmts) - {"csv", "parquet"}:
        data = attach_geometries(data)  # parse and check every geometry once, before anything is written
    classes = class_order(data)
    palette = class_colors([name for _, name in classes], dict(colors or {}))
    notes: list[str] = []
    if split is not None and split is not False:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SplitWarning)
            data["split"] = assign_splits(data, split, seed=seed).to_numpy()
        for w in caught:  # kept in export.json, and passed on to the caller
            notes.append(str(w.message))
            warnings.warn(w.message, stacklevel=2)
    if balance == "undersample":
        data = balance_table(data, "undersample", target=balance_target, split="train" if "split" in data else None,
                             seed=seed)
    originals = data
    if balance == "oversample":
        balanced = balance_table(data, "oversample", target=balance_target,
                                 split="train" if "split" in data else None, seed=seed)
    elif balance in (None, "undersample"):
        balanced = data
    else:
        raise ExportError(f"unknown balance {balance!r}; expected oversample or undersample")

    out = prepare_out_dir(Path(out_dir))
    result: dict[str, Path] = {}

    def stage(name: str):
        if progress is None:
            return None
        return lambda done, total: progress(name, done, total)

    with ImageSource(images) as source:
        if set(fmts) - {"csv", "parquet"}:
            originals = fill_field_boxes(originals, source)
            balanced = fill_field_boxes(balanced, source)
        for fmt in fmts:
            if progress is not None:
                progress(fmt, 0, 1)
            if fmt in ("csv", "parquet"):
                from cytoreview.export.csv import manifest, write_csv, write_parquet

                frame = manifest(originals, include_paths=include_paths)
                if fmt == "csv":
                    result["csv"] = write_csv(frame, out / "labels.csv")
                else:
                    result["parquet"] = write_parquet(frame, out / "labels.parquet")
                del frame  # a million-row manifest is not kept while the other formats are written
            elif fmt == "geojson":
                from cytoreview.export.geojson import write_geojson

                write_geojson(originals, out / "geojson", palette, cell_shape=cell_shape,
                              cell_diameter_um=cell_diameter_um, progress=stage(fmt))
                result["geojson"] = out / "geojson"
            elif fmt == "coco":
                from cytoreview.export.coco import write_coco

                paths = write_coco(originals, out / "coco", source, cell_diameter_um=cell_diameter_um,
                                   include_paths=include_paths)
                result["coco"] = paths[0]
            elif fmt == "mask":
                from cytoreview.export.masks import write_masks

                write_masks(originals, out / "masks", source, palette, mask_classes=mask_classes,
                            downsample=mask_downsample, cell_diameter_um=cell_diameter_um,
                            formats=tuple(mask_formats), progress=stage(fmt))
                result["mask"] = out / "masks"
            elif fmt == "imagefolder":
                from cytoreview.export.imagefolder import write_imagefolder

                result["imagefolder"] = write_imagefolder(
                    balanced, out / "imagefolder", source, crop_um=crop_um, crop_px=crop_px, crop_mpp=crop_mpp,
                    max_crop_px=max_crop_px, image_format=image_format,
                    class_names=[name for _, name in classes], progress=stage(fmt),
                )
            if progress is not None:
                progress(fmt, 1, 1)
    summary = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "formats": fmts,
        "options": {
            "select": select, "min_confidence": min_confidence, "include_unsure": include_unsure,
            "split": split if split in (None, True) or isinstance(split, dict) else list(split),
            "balance": balance, "balance_target": balance_target, "seed": seed, "crop_um": crop_um,
            "crop_px": crop_px, "crop_mpp": crop_mpp, "cell_diameter_um": cell_diameter_um,
            "include_paths": include_paths,
        },
        "filter": asdict(filter_report),
        "classes": [{"id": cid, "name": name, "color": list(palette[name])} for cid, name in classes],
        "distribution": class_distribution(originals).to_dict(orient="records"),
        "splits": split_report(originals) if "split" in originals.columns else None,
        "imagefolder_items": len(balanced) if "imagefolder" in fmts else None,
        "outputs": {k: str(v.relative_to(out)) for k, v in result.items()},
        "images": _image_entries(originals, image_fingerprints),
        "warnings": notes,
    }
    _remove_stale_outputs(out, result)
    result["summary"] = write_text(out / "export.json", json.dumps(summary, indent=1, default=str))
    finish_out_dir(out)
    return result


#: What an export writes at the top of its folder, by format (a re-export removes the ones it does not write again).
OUTPUT_NAMES = {"csv": "labels.csv", "parquet": "labels.parquet", "geojson": "geojson", "coco": "coco",
                "mask": "masks", "imagefolder": "imagefolder"}  # fmt: skip


def _remove_stale_outputs(out: Path, written: Mapping[str, Path]) -> None:
    """Remove what an earlier export into ``out`` wrote (its ``export.json`` says) and this one did not write again.

    Only our own output names are touched, so a file the user put there is never deleted.
    """
    from cytoreview._fs import remove

    try:
        previous = json.loads((out / "export.json").read_text("utf-8")).get("formats") or []
    except (OSError, ValueError, AttributeError):
        return
    for fmt in previous:
        name = OUTPUT_NAMES.get(str(fmt))
        if name is None or fmt in written:
            continue
        target = out / name
        try:
            remove(target)
        except OSError as exc:
            raise ExportError(f"cannot remove {target} left by the previous export there: {exc}") from exc


def _image_entries(table: pd.DataFrame, fingerprints: Mapping[int, str] | None) -> list[dict]:
    """One entry per exported image: its de-identified key, kind, mpp and (when known) content fingerprint."""
    from cytoreview.export.table import image_keys, image_kinds

    if table.empty:
        return []
    kinds = image_kinds(table)
    entries: dict[int, dict] = {}
    for key, image_id, mpp in zip(image_keys(table), table["image_id"].tolist(), table["mpp"].tolist()):
        if int(image_id) not in entries:
            fingerprint = (fingerprints or {}).get(int(image_id))
            entries[int(image_id)] = {"key": key, "image_id": int(image_id), "kind": kinds.get(int(image_id)),
                                      "mpp": float(mpp), "fingerprint": fingerprint}  # fmt: skip
    return [entries[k] for k in sorted(entries)]


def export_project(project: Any, out_dir: str | Path, formats: str | Iterable[str] = ("csv",), **kwargs) -> dict:
    """Export a :class:`cytoreview.review.Project` (or the path of its folder); see :func:`export_labels`.

    The project's label table, its class colours and its images (opened with ``cytoreview.io.open_image`` unless
    ``images=`` is given) are used.
    """
    if isinstance(project, (str, Path)):
        from cytoreview.review import Project  # imported lazily: export does not need review to be installed

        opened = Project.open(project)
        try:
            return export_project(opened, out_dir, formats, **kwargs)
        finally:
            opened.close()
    table = project.label_table()
    colors = {}
    schema = getattr(project, "schema", None)
    for cls in getattr(schema, "classes", []) or []:
        colors[cls.name] = cls.color
    colors.update(kwargs.pop("colors", None) or {})
    fingerprints = None
    if hasattr(project, "images"):
        from cytoreview.export.relink import image_fingerprints

        fingerprints = image_fingerprints(project.images())
    return export_labels(table, out_dir, formats, colors=colors, image_fingerprints=fingerprints, **kwargs)
