"""Per-plane class masks: tiled TIFF and OME-Zarr (NGFF image + ``labels/classes``).

A mask covers one plane (a slide, or one field) at ``downsample`` relative to level 0. Pixel values are
``1 + position of the class`` in the exported class list (sorted by class id; or the order of ``mask_classes``), and
0 means "no label". ``classes.json`` beside the masks gives the value -> name and colour legend. Items are painted in
this order, later ones over earlier ones: field labels (the whole plane), tiles (their squares), regions (their
polygons, filled with ``skimage.draw.polygon``), cells (discs of ``cell_diameter_um``, at least one pixel). A
multi-label item paints its first label. A CAMELYON-style tumour mask is this with ``mask_classes=["tumour"]``
(tumour = 1, everything else 0).

Files per plane: ``<plane>.tif`` (uint8, or uint16 above 255 classes; 256x256 tiles, zlib; resolution tags in
pixels per centimetre) and ``<plane>.ome.zarr`` (NGFF written with the ``ome-zarr`` package: the RGB image at the
mask's resolution as the ``c, y, x`` multiscale image, and the mask as the label image ``labels/classes`` with
``image-label`` colours and class-name properties), both with the physical pixel size in micrometres.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from cytoreview.errors import ExportError
from cytoreview.export.images import ImageSource, read_crop
from cytoreview.export.table import LEVELS, outline_xy, parse_geometry, plane_keys
from cytoreview.export.writing import atomic_dir, write_text, write_with

#: Largest mask side chosen automatically (the downsample doubles until the plane fits).
AUTO_MAX_SIDE_PX = 4096


def auto_downsample(plane_hw: tuple[int, int], max_side_px: int = AUTO_MAX_SIDE_PX) -> int:
    """The smallest power of two that brings the plane's longer side to at most ``max_side_px``."""
    ds = 1
    while max(plane_hw) / ds > max_side_px:
        ds *= 2
    return ds


def rasterise(
    items: pd.DataFrame,
    plane_hw: tuple[int, int],
    downsample: float,
    values: dict[str, int],
    *,
    cell_diameter_um: float = 10.0,
    dtype=np.uint8,
) -> np.ndarray:
    """Paint the items of one plane into a class mask.

    Parameters
    ----------
    items : pandas.DataFrame
        Rows of a validated label table, all on one plane.
    plane_hw : (int, int)
        Level-0 plane size in pixels.
    downsample : float
        Mask pixel size in level-0 pixels.
    values : dict
        ``{class name: mask value}``; items whose first label is not in it are skipped.
    cell_diameter_um : float
        Diameter of the disc painted for a cell.

    Returns
    -------
    numpy.ndarray
        ``(ceil(h / downsample), ceil(w / downsample))`` mask.
    """
    from skimage.draw import disk, polygon

    h = int(math.ceil(plane_hw[0] / downsample))
    w = int(math.ceil(plane_hw[1] / downsample))
    mask = np.zeros((h, w), dtype=dtype)
    rank = {lvl: i for i, lvl in enumerate(LEVELS)}
    order = sorted(range(len(items)), key=lambda i: rank[items["level"].iloc[i]])
    for i in order:
        row = items.iloc[i]
        labels = [lbl for lbl in row["labels"] if lbl in values]
        if not labels:
            continue
        value = values[labels[0]]
        geom = parse_geometry(row["geometry"], row["item_id"])
        kind = geom["type"]
        if kind == "field":
            mask[:] = value
        elif kind == "tile":
            t = float(geom["size_px"])
            r0, c0 = float(geom["row"]) * t / downsample, float(geom["col"]) * t / downsample
            r1, c1 = r0 + t / downsample, c0 + t / downsample
            mask[int(round(r0)) : int(round(r1)), int(round(c0)) : int(round(c1))] = value
        elif kind == "polygon":
            xy = np.asarray(outline_xy(geom, row), dtype=float) / downsample
            rr, cc = polygon(xy[:, 1], xy[:, 0], shape=mask.shape)
            mask[rr, cc] = value
        else:
            radius = max(cell_diameter_um / float(row["mpp"]) / 2.0 / downsample, 0.5)
            cy, cx = float(geom["y"]) / downsample, float(geom["x"]) / downsample
            rr, cc = disk((cy, cx), radius, shape=mask.shape)
            if len(rr) == 0 and 0 <= int(cy) < h and 0 <= int(cx) < w:
                rr, cc = np.array([int(cy)]), np.array([int(cx)])
            mask[rr, cc] = value
    return mask


def read_plane_rgb(image, field: int, z: int, downsample: float, mask_hw: tuple[int, int], block_px: int = 2048):
    """Read one plane at ``downsample`` in blocks (never the whole level 0 at once), as ``(h, w, 3)`` uint8."""
    out = np.empty((*mask_hw, 3), dtype=np.uint8)
    out_mpp = float(image.mpp) * downsample
    for r in range(0, mask_hw[0], block_px):
        for c in range(0, mask_hw[1], block_px):
            bh, bw = min(block_px, mask_hw[0] - r), min(block_px, mask_hw[1] - c)
            box = (c * downsample, r * downsample, (c + bw) * downsample, (r + bh) * downsample)
            crop, _ = read_crop(image, box, field=field, z=z, out_mpp=out_mpp)
            if crop.shape[:2] != (bh, bw):
                from cytoreview.export.images import resize_rgb

                crop = resize_rgb(crop, bh, bw)
            out[r : r + bh, c : c + bw] = crop
    return out


def write_tiff_mask(path: Path, mask: np.ndarray, mpp_mask: float, legend: list[dict]) -> Path:
    """Write a tiled, zlib-compressed TIFF mask with its pixel size (µm) in the resolution tags."""
    import tifffile

    px_per_cm = 1e4 / mpp_mask

    def _write(tmp: Path) -> None:
        tifffile.imwrite(
            tmp,
            mask,
            photometric="minisblack",
            tile=(256, 256),
            compression="zlib",
            resolution=(px_per_cm, px_per_cm),
            resolutionunit="CENTIMETER",
            description=json.dumps({"cytoreview": "class mask", "mpp": mpp_mask, "classes": legend}),
            metadata=None,
        )

    return write_with(path, _write)


def write_ome_zarr_mask(path: Path, rgb: np.ndarray, mask: np.ndarray, mpp_mask: float, legend: list[dict]) -> Path:
    """Write the plane image and its class mask as OME-Zarr (NGFF image + ``labels/classes``)."""
    try:
        import zarr
        from ome_zarr.writer import write_image, write_labels
    except ImportError as exc:
        raise ExportError("OME-Zarr masks need the ome-zarr package (pip install ome-zarr)") from exc
    scale_factors = tuple(f for f in (2, 4, 8) if min(mask.shape) // f >= 256)
    with atomic_dir(path) as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        chunks = (3, min(1024, rgb.shape[0]), min(1024, rgb.shape[1]))
        write_image(
            np.moveaxis(rgb, -1, 0),
            root,
            scale_factors=scale_factors,
            axes="cyx",
            scale={"c": 1.0, "y": mpp_mask, "x": mpp_mask},
            axes_units={"y": "micrometer", "x": "micrometer"},
            storage_options={"chunks": chunks},
        )
        write_labels(
            mask,
            root,
            name="classes",
            scaler=None,
            scale_factors=scale_factors,
            axes="yx",
            scale={"y": mpp_mask, "x": mpp_mask},
            axes_units={"y": "micrometer", "x": "micrometer"},
            storage_options={"chunks": (min(1024, mask.shape[0]), min(1024, mask.shape[1]))},
            label_metadata={
                "colors": [{"label-value": e["value"], "rgba": [*e["color"], 255]} for e in legend],
                "properties": [{"label-value": e["value"], "class": e["name"]} for e in legend],
                "source": {"image": "../../"},
            },
        )
    return path


def write_masks(
    table: pd.DataFrame,
    out_dir: Path,
    source: ImageSource,
    colors: dict,
    *,
    mask_classes: list[str] | None = None,
    downsample: float | None = None,
    cell_diameter_um: float = 10.0,
    formats: tuple[str, ...] = ("tiff", "ome-zarr"),
    progress=None,
) -> list[Path]:
    """Write a class mask per plane (see the module docstring); return the paths written.

    Parameters
    ----------
    table : pandas.DataFrame
        Validated, filtered label table.
    out_dir : Path
        Folder for ``<plane>.tif``, ``<plane>.ome.zarr`` and ``classes.json``; built beside and swapped in when
        complete, replacing an earlier export's folder.
    source : ImageSource
        Gives each plane's size (and pixels for the OME-Zarr image).
    colors : dict
        ``{class name: (r, g, b)}``.
    mask_classes : list of str, optional
        Classes to paint, in value order (value = position + 1); default every class in the table by class id.
    downsample : float, optional
        Mask pixel size in level-0 pixels; default :func:`auto_downsample` per plane.
    formats : tuple of str
        Any of ``"tiff"``, ``"ome-zarr"``.
    progress : callable, optional
        ``progress(done, total)`` after each plane.
    """
    from cytoreview.export.table import class_order

    unknown = set(formats) - {"tiff", "ome-zarr"}
    if unknown:
        raise ExportError(f"unknown mask format(s) {sorted(unknown)}; expected tiff, ome-zarr")
    if mask_classes is None:
        mask_classes = [name for _, name in class_order(table)]
    if len(mask_classes) != len(set(mask_classes)):
        raise ExportError(f"mask_classes has duplicates: {mask_classes}")
    present = {lbl for labels in table["labels"] for lbl in labels}
    missing = [c for c in mask_classes if c not in present and c not in colors]
    if missing and len(table):
        raise ExportError(f"mask class(es) {missing} do not occur in the exported labels")
    values = {name: i + 1 for i, name in enumerate(mask_classes)}
    dtype = np.uint8 if len(values) < 256 else np.uint16
    legend = [
        {"value": v, "name": n, "color": list(colors.get(n, (255, 255, 255)))} for n, v in values.items()
    ]
    out_dir = Path(out_dir)
    table = table.assign(_plane=plane_keys(table).to_numpy())
    groups = list(table.groupby("_plane", sort=True))
    with atomic_dir(out_dir) as tmp:  # a re-export replaces the folder: no stale masks from an earlier export
        written = [write_text(tmp / "classes.json", json.dumps({"0": "no label", "classes": legend}, indent=1))]
        for n, (plane, items) in enumerate(groups):
            first = items.iloc[0]
            image = source.get(first["image_id"], first["image_path"], first["mpp"])
            plane_hw = tuple(int(v) for v in image.plane_shape)
            ds = float(downsample) if downsample else float(auto_downsample(plane_hw))
            mask = rasterise(items, plane_hw, ds, values, cell_diameter_um=cell_diameter_um, dtype=dtype)
            mpp_mask = float(image.mpp) * ds
            if "tiff" in formats:
                written.append(write_tiff_mask(tmp / f"{plane}.tif", mask, mpp_mask, legend))
            if "ome-zarr" in formats:
                rgb = read_plane_rgb(image, int(first["field"]), int(first["z"]), ds, mask.shape)
                written.append(write_ome_zarr_mask(tmp / f"{plane}.ome.zarr", rgb, mask, mpp_mask, legend))
            if progress is not None:
                progress(n + 1, len(groups))
    return [out_dir / p.name for p in written]
