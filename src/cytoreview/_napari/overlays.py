"""Prediction overlays: a prediction store shown over its image layer, in micrometres.

Roles (see the GUI contract in the brief):

* ``"tile_classes"`` -- Labels, value = pack class id + 1 (0 = not predicted), card colours;
* ``"probability"`` -- Image, the model's probability of one class per tile, the class named in the layer name
  (``"<pack> P(<class>)"``; by default the rarest class the model called, background aside: see
  :func:`default_heatmap_class`; :func:`set_probability_class` shows another), viridis, hidden;
* ``"uncertainty"`` -- Image, normalised entropy over the pack's classes per tile (magma fading to transparent where
  the model is certain, contrast 0..1, hidden).

Both heatmaps carry napari's colour bar and are NaN (transparent) where nothing was predicted (glass the tissue mask
skipped, a run still going), so "not predicted" never reads as "probability 0".
* ``"cells"`` -- Points in µm with ``class``/``class_id``/``score`` features, plus ``area_um2``, ``confidence``
  (mean foreground probability of the cell) and ``uncertainty`` where the store has them (segmentation and
  cell-classification stores);
* ``"cell_mask"`` / ``"foreground"`` / ``"cell_outlines"`` -- a segmentation store's per-pixel class mask (multiscale
  Labels, card colours), foreground probability (multiscale Image with a colour bar) and cell outlines (Shapes); see
  :mod:`cytoreview._napari.pixel_layers`. A cell-classification store has no tile grid: only its ``cells``.

Geometry: tile ``(r, c)`` covers level-0 pixels ``[r*T, (r+1)*T)`` clipped to the image; the image layer shows its
pixel ``k`` centred at ``k * mpp``. A tile grid layer shows each tile as ``s x s`` layer pixels
(:func:`grid_subdivision`; ``s = 1`` when the image is a whole number of tiles) with scale ``T/s*mpp`` and translate
``(T/(2s) - 0.5)*mpp``, which puts the edges of tile ``r`` exactly on the outer edges of image pixels ``r*T`` and
``(r+1)*T - 1``. The layer has ``floor(H*s/T) x floor(W*s/T)`` pixels: the edge row and column of tiles are cut where
the image ends, so no overlay paints past the image (with ``s = T / gcd(T, H mod T, W mod T)`` the cut is exact; a
grid too large for that gets a smaller ``s`` and leaves less than ``T/s`` image pixels unpainted at the edge, never
more than the image). The grid layers are not multiscale, so the match does not depend on the zoom.

Layers are matched to an image and a pack through their :class:`~cytoreview._napari.layer_meta.LayerMeta` (the
image's path and id, never the layer name, and the pack): adding the predictions of a pack again (a re-run, a new
version) updates those layers in place, however the layers were renamed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cytoreview._napari.layer_meta import ROLES, LayerMeta, image_meta, overlays_of
from cytoreview.inference import PredictionStore, list_stores


#: Opacities and colour maps of the overlays.
CLASSES_OPACITY = 0.4
HEATMAP_OPACITY = 0.5
UNCERTAINTY_OPACITY = 0.8
PROBABILITY_COLORMAP = "viridis"
UNCERTAINTY_COLORMAP = "magma"
#: Alpha of the uncertainty colours: 0 (certain) is fully transparent, 1 (uniform probabilities) opaque.
UNCERTAINTY_ALPHA_MIN = 0.0
#: Diameter of a cell marker, micrometres: a ring around the nucleus, so the nucleus itself stays visible.
CELL_SIZE_UM = 10.0
#: napari marker of a cell: a ring in its class colour (a filled disc hid the nucleus a cytologist reads).
CELL_SYMBOL = "ring"
#: Colour of a label value that the card does not name (a class added during review).
UNKNOWN_CLASS_COLOR = "#808080"
#: Grids with more tiles than this show their heatmaps lazily (dask over the zarr arrays, read per view).
LAZY_TILES = 1 << 20
#: Most layer pixels a subdivided tile-grid layer may have (all fields), and most along one side.
GRID_MAX_PIXELS = 1 << 23
GRID_MAX_SIDE = 8192


# ---------------------------------------------------------------------------------------------------- helpers
def open_store(store) -> PredictionStore:
    """A :class:`PredictionStore` from a store, or from its path."""
    return store if isinstance(store, PredictionStore) else PredictionStore(store)


def image_info(image_layer) -> dict:
    """The image description (:func:`cytoreview.io.info.describe`) a cytoreview image layer carries: ``path``,
    ``kind``, ``mpp``, ``n_z`` ... (raises ValueError for any other layer)."""
    return image_meta(image_layer).to_metadata()["cytoreview"]


def is_image_layer(layer) -> bool:
    """True for an image layer opened by cytoreview (not one of its overlays)."""
    from napari.layers import Image as ImageLayer

    meta = LayerMeta.of(layer)
    return isinstance(layer, ImageLayer) and meta is not None and meta.is_image


def _n_z(image_layer) -> int:
    """Focus planes of a field-set layer (1 unless its data has a z axis)."""
    info = image_info(image_layer)
    return int(info.get("n_z") or 1) if info.get("kind") == "fields" else 1


def grid_subdivision(store: PredictionStore, lazy: bool = False) -> int:
    """Layer pixels per tile side ``s`` that let a tile-grid layer stop exactly at the image's edge.

    ``T / gcd(T, H mod T, W mod T)`` (1 when the image is a whole number of tiles, or its size is not in the store),
    lowered to keep the layer within :data:`GRID_MAX_PIXELS` and :data:`GRID_MAX_SIDE`; 1 for lazy heatmaps.
    """
    plane = store.plane_shape
    if plane is None or lazy:
        return 1
    t = int(store.tile_px_level0)
    s = t // math.gcd(t, int(plane[0]) % t, int(plane[1]) % t)
    if s == 1:
        return 1
    n_fields, n_rows, n_cols = store.grid_shape
    by_side = GRID_MAX_SIDE // max(n_rows, n_cols, 1)
    by_total = int(math.sqrt(GRID_MAX_PIXELS / max(n_fields * n_rows * n_cols, 1)))
    return max(1, min(s, by_side, by_total))


def clip_grid(data, store: PredictionStore, subdivision: int):
    """A grid array ``(..., n_rows, n_cols)`` as layer pixels: each tile repeated ``subdivision`` times per side,
    then cut to ``floor(H*s/T) x floor(W*s/T)`` so nothing lies past the image (numpy or dask in, same out)."""
    s = int(subdivision)
    if s > 1:
        if hasattr(data, "compute"):
            data = data.repeat(s, axis=-2).repeat(s, axis=-1)
        else:
            data = np.repeat(np.repeat(data, s, axis=-2), s, axis=-1)
    plane = store.plane_shape
    if plane is None:
        return data
    t = int(store.tile_px_level0)
    return data[..., : int(plane[0]) * s // t, : int(plane[1]) * s // t]


def tile_pixels(field: int, row: int, col: int, subdivision: int, layer_shape, is_fields: bool) -> tuple:
    """Index arrays (for ``Labels.data_setitem`` or fancy indexing) of the layer pixels showing one tile; empty
    where the tile was cut off at the image edge."""
    s = int(subdivision)
    rows = np.arange(row * s, min((row + 1) * s, int(layer_shape[-2])))
    cols = np.arange(col * s, min((col + 1) * s, int(layer_shape[-1])))
    rr, cc = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
    if is_fields:
        return np.full(rr.shape, int(field)), rr, cc
    return rr, cc


def grid_transform(store: PredictionStore, image_layer, subdivision: int = 1) -> tuple[tuple, tuple]:
    """``(scale, translate)`` of the tile-grid layers of ``store`` over ``image_layer``, each tile shown as
    ``subdivision x subdivision`` layer pixels.

    Uses the image layer's own pixel scale and offset, so the overlay follows the image wherever it is placed.
    A field set gets a leading field axis (scale 1); a field set with focus planes also a z axis whose one plane
    spans every focus plane (the predictions were made on one plane and apply to the field).
    """
    t = store.tile_px_level0 / int(subdivision)
    sy, sx = (float(v) for v in image_layer.scale[-2:])
    ty, tx = (float(v) for v in image_layer.translate[-2:])
    scale = [t * sy, t * sx]
    translate = [ty + (t / 2 - 0.5) * sy, tx + (t / 2 - 0.5) * sx]
    if image_info(image_layer).get("kind") == "fields":
        lead_scale = [float(v) for v in image_layer.scale[:-2]]
        lead_translate = [float(v) for v in image_layer.translate[:-2]]
        n_z = _n_z(image_layer)
        if n_z > 1:  # one plane standing for all of them: data index 0 covers world z in [-0.5, n_z - 0.5)
            lead_scale[1] *= n_z
            lead_translate[1] += (n_z - 1) / 2 * lead_scale[1] / n_z
        scale = lead_scale + scale
        translate = lead_translate + translate
    return tuple(scale), tuple(translate)


def _grid_view(array, image_layer, lazy: bool):
    """A store array ``(n_fields, n_rows, n_cols, ...)`` shaped for the image layer: the field axis dropped for a
    slide, a z axis of one plane added for a focus stack. Dask over zarr when ``lazy``, else numpy."""
    kind = image_info(image_layer).get("kind")
    if lazy:
        import dask.array as da

        data = da.from_zarr(array, name=False)  # a fresh name: napari's dask cache never serves an older read
    else:
        data = np.asarray(array[...])
    if kind != "fields":
        return data[0]
    if _n_z(image_layer) > 1:
        return data[:, None]
    return data


def _is_lazy(store: PredictionStore, lazy: bool | None) -> bool:
    if lazy is not None:
        return bool(lazy)
    if "tile_class" not in store.group:  # a cell-classification store: no tile grid
        return False
    return int(np.prod(store.grid_shape)) > LAZY_TILES


def class_colormap(classes: list[dict]):
    """DirectLabelColormap: label ``id + 1`` -> the class colour, 0 transparent, unnamed labels grey."""
    from napari.utils.colormaps import DirectLabelColormap

    colors: dict = {None: UNKNOWN_CLASS_COLOR, 0: "transparent"}
    for c in classes:
        colors[int(c["id"]) + 1] = c.get("color") or UNKNOWN_CLASS_COLOR
    return DirectLabelColormap(color_dict=colors)


def probability_colormap():
    """Viridis whose opacity grows with the probability: tiles where the class is unlikely leave the image as it is."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    viridis = ensure_colormap(PROBABILITY_COLORMAP)
    controls = np.linspace(0.0, 1.0, 33)
    colors = np.asarray(viridis.map(controls), dtype=np.float32)
    colors[:, 3] = np.sqrt(controls)
    return Colormap(colors=colors, controls=controls, name=f"{PROBABILITY_COLORMAP} (transparent at 0)")


def uncertainty_colormap():
    """Magma whose opacity grows with the value: confident tiles leave the image as it is, uncertain ones glow."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    magma = ensure_colormap(UNCERTAINTY_COLORMAP)
    controls = np.linspace(0.0, 1.0, 33)
    colors = np.asarray(magma.map(controls), dtype=np.float32)
    colors[:, 3] = UNCERTAINTY_ALPHA_MIN + (1.0 - UNCERTAINTY_ALPHA_MIN) * np.sqrt(controls)
    return Colormap(colors=colors, controls=controls, name=f"{UNCERTAINTY_COLORMAP} (transparent when certain)")


def label_data(store: PredictionStore, image_layer, subdivision: int = 1) -> np.ndarray:
    """Tile classes as Labels data: ``class id + 1``, 0 where not predicted (int32, writable, in memory), each tile
    ``subdivision`` pixels a side and cut at the image edge (:func:`clip_grid`)."""
    cls = _grid_view(store.tile_class, image_layer, lazy=False)
    values = np.where(cls >= 0, cls.astype(np.int32) + 1, 0).astype(np.int32)
    return np.ascontiguousarray(clip_grid(values, store, subdivision))


def default_heatmap_class(store: PredictionStore) -> dict:
    """The class the probability heatmap shows first: the rarest class the model called, leaving out the pack's
    first class (background / glass by the packs' convention) unless it is the only one called; the last class of
    the pack when nothing was called yet."""
    classes = store.classes
    cls = np.asarray(store.tile_class[...])
    ids = [int(c["id"]) for c in classes]
    counts = {k: int((cls == k).sum()) for k in ids}
    called = [k for k in ids[1:] if counts[k] > 0] or [k for k in ids if counts[k] > 0]
    if not called:
        return classes[-1]
    rarest = min(called, key=lambda k: (counts[k], -k))
    return next(c for c in classes if int(c["id"]) == rarest)


def _class_index(store: PredictionStore, heatmap_class) -> tuple[int, dict]:
    """Index into ``tile_prob``'s class axis and the class dict of a class given by name, id or dict."""
    classes = store.classes
    if heatmap_class is None:
        heatmap_class = default_heatmap_class(store)
    if isinstance(heatmap_class, dict):
        heatmap_class = heatmap_class["name"]
    for k, c in enumerate(classes):
        if heatmap_class == c["name"] or (isinstance(heatmap_class, int) and heatmap_class == int(c["id"])):
            return k, c
    raise ValueError(f"pack {store.group.attrs['pack']} has no class {heatmap_class!r}; its classes are "
                     + ", ".join(c["name"] for c in classes))


def probability_layer_name(pack: str, class_name: str) -> str:
    """``"<pack> P(<class>)"``: the heatmap's layer name says which class it shows."""
    return f"{pack} P({class_name})"


def uncertainty_layer_name(pack: str, n_classes: int) -> str:
    """``"<pack> uncertainty (entropy, N classes)"``."""
    return f"{pack} uncertainty (entropy, {n_classes} classes)"


def probability_data(store: PredictionStore, image_layer, lazy: bool | None = None, heatmap_class=None,
                     subdivision: int = 1):
    """The model's probability of ``heatmap_class`` (name, id or class dict; default
    :func:`default_heatmap_class`) per tile, NaN where not predicted (float32), cut at the image edge
    (:func:`clip_grid`)."""
    k, _ = _class_index(store, heatmap_class)
    data = _grid_view(store.tile_prob, image_layer, _is_lazy(store, lazy))
    if hasattr(data, "compute"):
        return clip_grid(data[..., k].astype(np.float32), store, subdivision)
    return np.ascontiguousarray(clip_grid(np.asarray(data[..., k], dtype=np.float32), store, subdivision))


def uncertainty_data(store: PredictionStore, image_layer, lazy: bool | None = None, subdivision: int = 1):
    """Normalised entropy per tile, NaN where not predicted (float32), cut at the image edge (:func:`clip_grid`)."""
    data = _grid_view(store.tile_uncertainty, image_layer, _is_lazy(store, lazy))
    if hasattr(data, "compute"):
        return clip_grid(data.astype(np.float32), store, subdivision)
    return np.ascontiguousarray(clip_grid(np.asarray(data, dtype=np.float32), store, subdivision))


def cell_points(store: PredictionStore, image_layer):
    """``(coords_um, features)`` of a segmentation store's cells; ``None`` when it has none.

    Coordinates are world µm: ``((field,) y*mpp + offset, x*mpp + offset)`` (a focus stack also gets z = 0).
    """
    import pandas as pd

    cells = store.cells()
    if not cells:
        return None
    sy, sx = (float(v) for v in image_layer.scale[-2:])
    ty, tx = (float(v) for v in image_layer.translate[-2:])
    columns = [cells["y_px"] * sy + ty, cells["x_px"] * sx + tx]
    if image_info(image_layer).get("kind") == "fields":
        lead = [cells["field"].astype(np.float64) * float(image_layer.scale[0]) + float(image_layer.translate[0])]
        if _n_z(image_layer) > 1:
            lead.append(np.full(len(cells["field"]), float(image_layer.translate[1])))
        columns = lead + columns
    coords = np.stack(columns, axis=1) if len(cells["field"]) else np.zeros((0, len(columns)))
    names = store.class_names
    class_id = cells["class"].astype(np.int64)
    features = pd.DataFrame(
        {
            "class": pd.Categorical(
                [names.get(int(k), str(k)) for k in class_id], categories=[c["name"] for c in store.classes]
            ),
            "class_id": class_id,
            "score": cells["score"].astype(np.float64),
        }
    )
    if "area_um2" in cells:
        features["area_um2"] = cells["area_um2"].astype(np.float64)
    confidence = cells.get("detection_prob", cells.get("prob_mean"))
    if confidence is not None:
        features["confidence"] = confidence.astype(np.float64)
    if "uncertainty" in cells:
        features["uncertainty"] = cells["uncertainty"].astype(np.float64)
    return coords, features


def _metadata(store: PredictionStore, image_layer, role: str, **extra) -> dict:
    meta = image_meta(image_layer).overlay(
        role, store=str(store.path), pack=store.group.attrs["pack"], pack_version=store.group.attrs["pack_version"],
        tile_px_level0=store.tile_px_level0, classes=store.classes, complete=store.complete, **extra)
    return meta.to_metadata()


# ---------------------------------------------------------------------------------------------------- finding
def prediction_layers(viewer, image_layer=None, pack: str | None = None) -> list:
    """Overlay layers in ``viewer``, optionally only those of ``image_layer`` (a layer, or the name of one now) and
    ``pack``; an overlay belongs to an image by its path and id (:meth:`LayerMeta.belongs_to`), not by name."""
    if isinstance(image_layer, str):
        image_layer = viewer.layers[image_layer]
    return overlays_of(viewer, image_layer, pack)


def overlays_by_role(viewer, image_layer, pack: str | None = None) -> dict:
    """``{role: layer}`` of the overlays of ``image_layer`` (and ``pack``); the topmost layer wins per role."""
    return {LayerMeta.of(layer).role: layer for layer in prediction_layers(viewer, image_layer, pack)}


# ---------------------------------------------------------------------------------------------------- adding
def add_prediction_layers(viewer, store, image_layer, *, lazy: bool | None = None, heatmap_class=None) -> dict:
    """Show a prediction store over its image layer; replace the overlays of the same image and pack.

    Parameters
    ----------
    viewer : napari.Viewer
    store : PredictionStore or str or Path
        The store (complete or not: unpredicted tiles show as 0 / transparent).
    image_layer : napari.layers.Image
        The cytoreview image layer the store was made from.
    lazy : bool, optional
        Heatmaps as dask arrays over the zarr store (read per view) instead of in memory; by default lazy when the
        grid has more than :data:`LAZY_TILES` tiles. Tile classes are always in memory (small, and the review
        widget writes into them).
    heatmap_class : str or int, optional
        The class the probability heatmap shows (name or pack id); by default the class an existing heatmap of the
        pack shows, else :func:`default_heatmap_class`.

    Returns
    -------
    dict
        Role -> layer: ``tile_classes``, ``probability``, ``uncertainty`` and, for a store with cells, ``cells``.
        Existing layers of the same image and pack are updated in place (their visibility and opacity kept);
        a layer whose shape changed is replaced at the same place in the layer list.
    """
    store = open_store(store)
    pack = store.group.attrs["pack"]
    existing = overlays_by_role(viewer, image_layer, pack)
    lazy = _is_lazy(store, lazy)
    has_grid = "tile_class" in store.group  # a cell-classification store has cells only
    labels_sub = grid_subdivision(store) if has_grid else 1  # tile classes are in memory whatever the grid size
    heat_sub = grid_subdivision(store, lazy) if has_grid else 1
    scale, translate = grid_transform(store, image_layer)  # one pixel per tile (the per-pixel layers' base)
    transforms = {sub: grid_transform(store, image_layer, sub) for sub in {labels_sub, heat_sub}}
    classes = store.classes
    units = tuple(image_layer.units)
    old_prob = existing.get("probability")
    if heatmap_class is None and old_prob is not None:  # a refresh keeps the class the heatmap shows
        previous = LayerMeta.of(old_prob).extra.get("class_name")
        heatmap_class = previous if previous in {c["name"] for c in classes} else None
    grids = {}
    if has_grid:
        _, prob_class = _class_index(store, heatmap_class)
        grids = {
            "tile_classes": label_data(store, image_layer, labels_sub),
            "probability": probability_data(store, image_layer, lazy, prob_class, heat_sub),
            "uncertainty": uncertainty_data(store, image_layer, lazy, heat_sub),
        }
    else:
        prob_class = {"name": "", "id": -1}
    names = {
        "tile_classes": f"{pack} classes",
        "probability": probability_layer_name(pack, prob_class["name"]),
        "uncertainty": uncertainty_layer_name(pack, len(classes)),
    }
    made: dict = {}
    for role, data in grids.items():
        sub = labels_sub if role == "tile_classes" else heat_sub
        scale_r, translate_r = transforms[sub]
        meta = _metadata(store, image_layer, role, subdivision=sub, grid_shape=list(store.grid_shape),
                         **({"class_name": prob_class["name"], "class_id": int(prob_class["id"])}
                            if role == "probability" else {}))
        layer = existing.get(role)
        if layer is not None and tuple(layer.data.shape) == tuple(data.shape):
            layer.metadata = meta
            layer.scale, layer.translate = scale_r, translate_r
            layer.data = data
            layer.name = names[role]
            if role == "tile_classes":
                layer.colormap = class_colormap(classes)
            made[role] = layer
            continue
        index = _remove(viewer, layer)
        if role == "tile_classes":
            new = viewer.add_labels(
                data, name=names[role], scale=scale_r, translate=translate_r, colormap=class_colormap(classes),
                opacity=CLASSES_OPACITY, units=units, metadata=meta,
                visible=store.task != "segmentation",  # a detector is read through its per-pixel mask and cells
            )  # fmt: skip
        else:
            probability = role == "probability"
            new = viewer.add_image(
                data, name=names[role], scale=scale_r, translate=translate_r,
                colormap=probability_colormap() if probability else uncertainty_colormap(), contrast_limits=(0.0, 1.0),
                opacity=HEATMAP_OPACITY if probability else UNCERTAINTY_OPACITY, visible=False,
                blending="translucent", interpolation2d="nearest", units=units, metadata=meta,
            )  # fmt: skip
            show_colorbar(new)
        made[role] = _place(viewer, new, index)

    points = cell_points(store, image_layer)  # the cells go on top of the per-pixel layers (they are clicked)
    old_cells = existing.get("cells")
    if points is None:
        _remove(viewer, old_cells)
    else:
        coords, features = points
        meta = _metadata(store, image_layer, "cells")
        colors = {c["name"]: c.get("color") or UNKNOWN_CLASS_COLOR for c in classes}
        if old_cells is not None and old_cells.ndim == coords.shape[1]:
            old_cells.metadata = meta
            old_cells.data = coords
            old_cells.features = features
            old_cells.face_color_cycle = colors
            old_cells.face_color = "class"
            made["cells"] = old_cells
        else:
            index = _remove(viewer, old_cells)
            new = viewer.add_points(
                coords, ndim=coords.shape[1], name=f"{pack} cells", features=features, face_color="class",
                face_color_cycle=colors, border_color="black", border_width=0.05, size=CELL_SIZE_UM, symbol=CELL_SYMBOL,
                out_of_slice_display=False, units=units, metadata=meta,
            )  # fmt: skip
            made["cells"] = _place(viewer, new, index)
    if store.task == "segmentation":
        made.update(_pixel_layers(viewer, store, image_layer, scale, translate, existing))
        _keep_on_top(viewer, made.get("cells"), [made.get(role) for role in ("cell_mask", "foreground", "cell_outlines")])
    detector = store.group.attrs.get("detector")
    if detector and "cells" in made:  # the classifier's cells replace the detector's on screen (its outlines stay)
        for layer in prediction_layers(viewer, image_layer, str(detector).split("@")[0]):
            if LayerMeta.of(layer).role == "cells":
                layer.visible = False
    return made


def _pixel_layers(viewer, store, image_layer, scale, translate, existing) -> dict:
    from cytoreview._napari.pixel_layers import add_pixel_layers

    kind = image_info(image_layer).get("kind")
    n_z = _n_z(image_layer)

    def lead_world(field: int) -> list:
        if kind != "fields":
            return []
        lead = [field * float(image_layer.scale[0]) + float(image_layer.translate[0])]
        if n_z > 1:
            lead.append(float(image_layer.translate[1]))
        return lead

    return add_pixel_layers(viewer, store, image_layer, base_scale=scale, base_translate=translate,
                            metadata_for=lambda role: _metadata(store, image_layer, role), kind=kind, n_z=n_z,
                            existing=existing, place=_place, remove=_remove, lead_world=lead_world)


def show_colorbar(layer) -> None:
    """Turn on napari's colour bar of a heatmap layer (shown while the layer is)."""
    colorbar = getattr(layer, "colorbar", None)
    if colorbar is not None:
        colorbar.visible = True


def set_probability_class(viewer, image_layer, pack: str, heatmap_class) -> dict:
    """Show the probability of another class (name or id) in the heatmap of ``pack`` over ``image_layer``."""
    layers = overlays_by_role(viewer, image_layer, pack)
    if "probability" not in layers:
        raise ValueError(f"no probability heatmap of pack {pack!r} over {getattr(image_layer, 'name', image_layer)}")
    store = open_store(LayerMeta.of(layers["probability"]).store)
    return add_prediction_layers(viewer, store, image_layer, lazy=type(layers["probability"].data).__module__
                                 .startswith("dask"), heatmap_class=heatmap_class)


def update_prediction_layers(viewer, store, image_layer) -> dict:
    """Refresh the overlays of ``store`` from disk (a run in progress); add them when they are missing."""
    return add_prediction_layers(viewer, store, image_layer)


def remove_prediction_layers(viewer, image_layer=None, pack: str | None = None) -> int:
    """Remove the overlays of ``image_layer`` (and ``pack``); return how many were removed."""
    layers = prediction_layers(viewer, image_layer, pack)
    for layer in layers:
        viewer.layers.remove(layer)
    return len(layers)


def _remove(viewer, layer) -> int | None:
    """Remove ``layer`` when given; return its former index."""
    if layer is None or layer not in viewer.layers:
        return None
    index = viewer.layers.index(layer)
    viewer.layers.remove(layer)
    return index


def _keep_on_top(viewer, layer, below: list) -> None:
    """Move ``layer`` just above the highest of ``below`` (the cells stay clickable above masks and outlines)."""
    if layer is None or layer not in viewer.layers:
        return
    indices = [viewer.layers.index(other) for other in below if other is not None and other in viewer.layers]
    current = viewer.layers.index(layer)
    if indices and current < max(indices):
        viewer.layers.move(current, max(indices) + 1)


def _place(viewer, layer, index: int | None):
    """Move a just added layer to ``index`` (where the layer it replaces was)."""
    if index is not None:
        current = viewer.layers.index(layer)
        if current != index:
            viewer.layers.move(current, index)
    return layer


# ---------------------------------------------------------------------------------------------------- reopening
def stores_dir(project_or_dir) -> Path:
    """Where the stores are: ``<project>/predictions`` for a project (object or folder), else the folder itself."""
    folder = Path(getattr(project_or_dir, "folder", project_or_dir))
    return folder / "predictions" if (folder / "predictions").is_dir() else folder


def load_existing_predictions(viewer, image_layer, project_or_dir=None, *, lazy: bool | None = True) -> list[dict]:
    """Show the prediction stores already on disk for the image of ``image_layer``.

    Parameters
    ----------
    viewer : napari.Viewer
    image_layer : napari.layers.Image
        A cytoreview image layer.
    project_or_dir : Project or str or Path, optional
        A review project (object or folder) or a folder of stores; default :func:`cytoreview.workflows.project_folder_for`.
    lazy : bool, optional
        Heatmaps as dask arrays over the zarr stores (default: yes, nothing big is read until it is shown).

    Returns
    -------
    list of dict
        One role -> layer dict per pack with a store for this image: its newest version (by version number).
        Stores of other images and broken stores are skipped.
    """
    info = image_info(image_layer)
    from cytoreview.workflows import project_folder_for

    folder = stores_dir(project_or_dir if project_or_dir is not None else project_folder_for(info["path"]))
    newest: dict[str, PredictionStore] = {}
    for store in list_stores(folder, info["path"]):
        pack = str(store.group.attrs["pack"])
        if pack not in newest or _version_key(store) > _version_key(newest[pack]):
            newest[pack] = store
    return [add_prediction_layers(viewer, newest[pack], image_layer, lazy=lazy) for pack in sorted(newest)]


def _version_key(store: PredictionStore) -> tuple:
    """Sort key of a store's pack version: ``1.10.0`` after ``1.9.2`` (numeric parts compare as numbers)."""
    import re

    parts = re.split(r"[.+-]", str(store.group.attrs["pack_version"]))
    return tuple((1, int(p), "") if p.isdigit() else (0, 0, p) for p in parts)
