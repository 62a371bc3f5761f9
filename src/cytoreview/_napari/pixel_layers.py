"""Per-pixel segmentation overlays: the class mask as a multiscale Labels layer, the foreground probability as a
multiscale Image layer with a colour bar, and cell outlines as Shapes (those of the cells in view,
:mod:`cytoreview._napari.cell_outlines`) -- all in µm over their image layer.

The data are the zarr levels of the store's ``pixels/`` pyramid (:mod:`cytoreview.inference.pyramid`), handed to
napari as dask arrays with the store's 1024-px chunks: nothing is read until it is on screen, and a 100k² slide
costs what the view shows. Roles (``metadata["cytoreview"]["role"]``): ``cell_mask``, ``foreground``,
``cell_outlines``.
"""

from __future__ import annotations

import numpy as np

from cytoreview._napari.cell_outlines import OutlinesInView, outlines_in_view
from cytoreview.inference.pyramid import pixel_levels

PIXEL_ROLES = ("cell_mask", "foreground", "cell_outlines")
MASK_OPACITY = 0.45
FOREGROUND_OPACITY = 0.5
FOREGROUND_COLORMAP = "inferno"
OUTLINE_COLOR = "#ffff00"
OUTLINE_WIDTH_UM = 0.3


def pixel_transform(store, image_layer, base_scale, base_translate) -> tuple[tuple, tuple]:
    """``(scale, translate)`` of level 0 of the pixel pyramid, from the tile-grid ``(scale, translate)``.

    Mask pixel ``j`` covers level-0 pixels centred on ``(j + 0.5) * k - 0.5`` with ``k = mask_px_level0``.
    """
    k = float(store.group.attrs["mask_px_level0"])
    sy, sx = (float(v) for v in image_layer.scale[-2:])
    ty, tx = (float(v) for v in image_layer.translate[-2:])
    lead = len(base_scale) - 2
    scale = tuple(base_scale[:lead]) + (k * sy, k * sx)
    translate = tuple(base_translate[:lead]) + (ty + (k / 2 - 0.5) * sy, tx + (k / 2 - 0.5) * sx)
    return scale, translate


def _view(levels, kind: str, n_z: int, plane_px=None) -> list:
    """Dask views of the pyramid levels shaped for the image layer; with ``plane_px`` (the image plane's size in
    level-0 mask pixels) each level is cut where the image ends, so the mask never paints past the image (the
    stitched mask covers whole tiles, the last row and column of which run past it)."""
    import dask.array as da

    out = []
    for k, arr in enumerate(levels):
        data = da.from_zarr(arr, name=False)
        if plane_px is not None:
            ds = 2**k
            data = data[..., : max(1, int(plane_px[0] // ds)), : max(1, int(plane_px[1] // ds))]
        if kind != "fields":
            data = data[0]
        elif n_z > 1:
            data = data[:, None]
        out.append(data)
    return out


def mask_colormap(class_ids: list[int], classes: list[dict]):
    """Label ``i + 1`` -> colour of cell class ``class_ids[i]``; 0 transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    by_id = {int(c["id"]): c for c in classes}
    colors: dict = {None: "#808080", 0: "transparent"}
    for i, cid in enumerate(class_ids):
        colors[i + 1] = by_id.get(int(cid), {}).get("color") or "#808080"
    return DirectLabelColormap(color_dict=colors)


def outline_shapes(store, image_layer, lead_world) -> list[np.ndarray] | None:
    """Cell outlines as polygons in world µm (``lead_world(fields)`` gives the leading coordinates); None if the
    store has none."""
    cells = store.cells()
    if "outline_offset" not in cells or not len(cells["field"]):
        return None
    sy, sx = (float(v) for v in image_layer.scale[-2:])
    ty, tx = (float(v) for v in image_layer.translate[-2:])
    off, yx = cells["outline_offset"], cells["outline_yx"].astype(np.float64)
    polys = []
    for i, f in enumerate(cells["field"].tolist()):
        p = yx[off[i] : off[i + 1]]
        if len(p) < 3:
            continue
        world = np.column_stack([p[:, 0] * sy + ty, p[:, 1] * sx + tx])
        lead = lead_world(f)
        if lead:
            world = np.column_stack([np.full((len(p), len(lead)), lead), world])
        polys.append(world)
    return polys


def add_pixel_layers(viewer, store, image_layer, *, base_scale, base_translate, metadata_for, kind: str, n_z: int,
                     existing: dict, place, remove, lead_world) -> dict:
    """Add or refresh the ``cell_mask`` / ``foreground`` / ``cell_outlines`` layers of a segmentation store.

    Called by :func:`cytoreview._napari.overlays.add_prediction_layers` (which passes its own helpers for the
    metadata, placement and the tile grid's transform); returns role -> layer.
    """
    found = pixel_levels(store.group)
    made: dict = {}
    if found is None:
        for role in PIXEL_ROLES:
            remove(viewer, existing.get(role))
        return made
    label_levels, fg_levels, attrs = found
    pack = store.group.attrs["pack"]
    scale, translate = pixel_transform(store, image_layer, base_scale, base_translate)
    units = tuple(image_layer.units)
    ids = [int(v) for v in attrs.get("label_class_ids", [])]
    plane = store.plane_shape
    mask_px = float(attrs.get("mask_px_level0") or store.group.attrs.get("mask_px_level0") or 0)
    plane_px = None if plane is None or mask_px <= 0 else (plane[0] / mask_px, plane[1] / mask_px)
    labels = _view(label_levels, kind, n_z, plane_px)
    fg = _view(fg_levels, kind, n_z, plane_px)
    for role, data in (("cell_mask", labels), ("foreground", fg)):
        index = remove(viewer, existing.get(role))
        meta = metadata_for(role)
        multiscale = len(data) > 1
        payload = data if multiscale else data[0]
        if role == "cell_mask":
            new = viewer.add_labels(payload, name=f"{pack} cell mask", scale=scale, translate=translate,
                                    colormap=mask_colormap(ids, store.classes), opacity=MASK_OPACITY,
                                    multiscale=multiscale, units=units, metadata=meta)
        else:
            new = viewer.add_image(payload, name=f"{pack} foreground", scale=scale, translate=translate,
                                   colormap=FOREGROUND_COLORMAP, contrast_limits=(0.0, 1.0), opacity=FOREGROUND_OPACITY,
                                   blending="translucent", interpolation2d="nearest", visible=False,
                                   multiscale=multiscale, units=units, metadata=meta)
            try:
                new.colorbar.visible = True
            except AttributeError:  # napari without layer colour bars
                pass
        made[role] = place(viewer, new, index)
    polys = outline_shapes(store, image_layer, lead_world)
    old = existing.get("cell_outlines")
    if old is not None and outlines_in_view(old) is not None:
        outlines_in_view(old).disconnect()
    index = remove(viewer, old)
    if polys:
        # the layer starts empty: OutlinesInView fills it with the outlines of the cells in view, as the camera moves
        new = viewer.add_shapes(None, ndim=polys[0].shape[1], name=f"{pack} outlines", edge_color=OUTLINE_COLOR,
                                face_color="transparent", edge_width=OUTLINE_WIDTH_UM, units=units,
                                metadata=metadata_for("cell_outlines"), visible=True)
        made["cell_outlines"] = place(viewer, new, index)
        OutlinesInView(viewer, new, polys, n_lead=polys[0].shape[1] - 2, edge_width_um=OUTLINE_WIDTH_UM,
                       edge_color=OUTLINE_COLOR)
    return made
