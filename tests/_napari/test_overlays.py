"""Prediction overlays in a real napari viewer: layer types, colours, and numeric alignment with the image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from cytoreview._napari.layer_meta import LayerMeta
from cytoreview._napari.layers import scale_bar
from cytoreview._napari.overlays import (
    CELL_SIZE_UM,
    add_prediction_layers,
    load_existing_predictions,
    prediction_layers,
    remove_prediction_layers,
    set_probability_class,
)
from cytoreview.inference import predict
from cytoreview.workflows import project_folder_for as default_project_folder
from tests.io.conftest import tissue_like, write_pyramid
from tests.models.onnx_graphs import base_card, classifier_graph, segmenter_graph, write_pack

pytestmark = pytest.mark.gui

FIELD_MPP = 0.293


# ---------------------------------------------------------------------------------------------------- test data
def write_tiny_pack(folder: Path, name: str = "tiny", mpp: float = 1.0, version: str = "1.0.0", **card) -> Path:
    """A 16 px channel-mean classifier (red / green / blue) at ``mpp``."""
    return write_pack(folder / name, base_card(name, version=version, input={"mpp": mpp}, **card), classifier_graph)


def write_tiny_segmenter(folder: Path, name: str = "tiny-seg", mpp: float = FIELD_MPP) -> Path:
    """A 3x3 valid-conv segmenter (dark = nucleus) with a 1 px halo."""
    card = base_card(name, task="segmentation", input={"size_px": 16, "mpp": mpp},
                     outputs={"probabilities": {"name": "probs"}, "halo_px": 1},
                     classes=[{"id": 0, "name": "background", "color": "#f0f0f0", "level": "cell"},
                              {"id": 1, "name": "nucleus", "color": "#7030a0", "level": "cell"}])  # fmt: skip
    return write_pack(folder / name, card, segmenter_graph)


def slide_pixels(height: int = 512, width: int = 768) -> np.ndarray:
    """Texture on the left, white glass on the right (background tiles are not predicted)."""
    arr = tissue_like(height, width)
    arr[:, width * 2 // 3 :] = 245
    return arr


def write_slide(folder: Path) -> Path:
    """A 512 x 768 px tiled JPEG pyramid (3 levels) at 0.5 um/px."""
    return write_pyramid(folder / "slide.tif", slide_pixels(), n_levels=3, mpp=0.5)


def write_field_set(folder: Path, n_fields: int = 3, height: int = 128, width: int = 192, cells: bool = False) -> Path:
    """Small JPEG fields at 0.293 um/px; with ``cells``, dark nuclei on light glass instead of texture."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:height, :width]
    for i in range(n_fields):
        if cells:
            arr = np.full((height, width, 3), 240, dtype=np.uint8)
            for cy, cx in [(20 + 10 * i, 30), (70, 100 + 20 * i), (100, 160)]:
                arr[(yy - cy) ** 2 + (xx - cx) ** 2 <= 25] = [60, 20, 90]
        else:
            arr = tissue_like(height, width, seed=i)
            arr[:, width // 2 :] = 245
        PILImage.fromarray(arr).save(folder / f"field_{i:03d}.jpg", quality=95)
    (folder / "cytoscan.json").write_text(json.dumps({"mpp": FIELD_MPP, "case_id": folder.name}))
    return folder


def open_in(viewer, path: Path):
    return viewer.open(str(path), plugin="cytoreview")[0]


def tile_world_bounds(layer, index) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates of the outer corners of data pixel ``index`` (leading axes kept at their index)."""
    index = np.asarray(index, dtype=float)
    lo, hi = index.copy(), index.copy()
    lo[-2:] -= 0.5
    hi[-2:] += 0.5
    return np.asarray(layer.data_to_world(lo)), np.asarray(layer.data_to_world(hi))


def hex_rgba(color: str) -> np.ndarray:
    color = color.lstrip("#")
    return np.array([int(color[i : i + 2], 16) / 255 for i in (0, 2, 4)] + [1.0])


@pytest.fixture(scope="module")
def slide_case(tmp_path_factory) -> dict:
    """A slide and its stores in its default project: tiny@1.0.0 (T=32), tiny@1.1.0 (T=64), other@1.0.0."""
    root = tmp_path_factory.mktemp("slide_case")
    slide = write_slide(root)
    out = default_project_folder(slide) / "predictions"
    packs = root / "packs"
    stores = {
        "tiny@1.0.0": predict(slide, write_tiny_pack(packs), out, threads=1),
        "tiny@1.1.0": predict(slide, write_tiny_pack(packs / "v2", mpp=2.0, version="1.1.0"), out, threads=1),
        "other@1.0.0": predict(slide, write_tiny_pack(packs, name="other"), out, threads=1),
    }
    return {"root": root, "slide": slide, "stores": stores}


# ---------------------------------------------------------------------------------------------------- tests
def test_wsi_overlays_types_colours_and_alignment_at_every_level(make_napari_viewer, slide_case):
    slide, store = slide_case["slide"], slide_case["stores"]["tiny@1.0.0"]
    T = store.tile_px_level0
    assert T == 32 and store.grid_shape == (1, 16, 24)
    viewer = make_napari_viewer()
    assert not scale_bar(viewer).visible
    image = open_in(viewer, slide)
    # legends: opening a case turns napari's scale bar on, in micrometres (the unit of the displayed axes)
    assert scale_bar(viewer).visible and str(viewer.layers.units[-1]) == "micrometer"
    layers = add_prediction_layers(viewer, store, image)

    assert set(layers) == {"tile_classes", "probability", "uncertainty"}
    classes, prob, unc = layers["tile_classes"], layers["probability"], layers["uncertainty"]
    shown = prob.metadata["cytoreview"]["class_name"]
    assert shown in {c["name"] for c in store.classes[1:]}  # a class the model called, not the first (background)
    assert (classes.name, prob.name, unc.name) == ("tiny classes", f"tiny P({shown})",
                                                   "tiny uncertainty (entropy, 3 classes)")
    assert type(classes).__name__ == "Labels" and type(prob).__name__ == "Image" == type(unc).__name__
    assert classes.visible and not prob.visible and not unc.visible
    assert classes.opacity == pytest.approx(0.4) and prob.opacity == pytest.approx(0.5)
    assert prob.colormap.name.startswith("viridis") and unc.colormap.name.startswith("magma")
    assert prob.colorbar.visible and unc.colorbar.visible  # legends: napari's colour bar on both heatmaps
    # uncertainty: magma colours, transparent where the model is certain, opaque where it cannot tell
    assert unc.colormap.map(np.array([0.0]))[0][3] == 0 and unc.colormap.map(np.array([1.0]))[0][3] == 1
    assert tuple(unc.contrast_limits) == (0.0, 1.0)
    for layer in layers.values():
        np.testing.assert_allclose(layer.scale, [T * 0.5, T * 0.5])
        np.testing.assert_allclose(layer.translate, [(T / 2 - 0.5) * 0.5] * 2)
        meta = LayerMeta.of(layer)
        assert meta.store == str(store.path) and meta.pack == "tiny" and meta.pack_version == "1.0.0"
        assert meta.tile_px_level0 == T and meta.mpp == 0.5 and meta.units == ("µm", "µm")
        image_meta = LayerMeta.of(image)  # tied to the image by its path and id, not its layer name
        assert (meta.image_path, meta.image_uid) == (image_meta.image_path, image_meta.image_uid)
        assert meta.image_uid and meta.belongs_to(image_meta)

    # values: class id + 1, 0 on glass; probability = max class probability; uncertainty as stored
    cls = store.tile_class[:][0]
    np.testing.assert_array_equal(classes.data, np.where(cls >= 0, cls + 1, 0))
    assert (classes.data[:, -8:] == 0).all() and (classes.data[:, :16] > 0).mean() > 0.5
    k = [c["name"] for c in store.classes].index(shown)
    np.testing.assert_allclose(prob.data, store.tile_prob[:][0][..., k], rtol=0)  # NaN (transparent) on glass
    np.testing.assert_allclose(unc.data, store.tile_uncertainty[:][0], rtol=0)
    assert np.isnan(prob.data[cls < 0]).all() and np.isnan(unc.data[cls < 0]).all() and (cls < 0).any()
    # card colours through a DirectLabelColormap; 0 transparent
    for c in store.classes:
        np.testing.assert_allclose(classes.colormap.map(np.array([c["id"] + 1]))[0], hex_rgba(c["color"]), atol=1e-6)
    assert classes.colormap.map(np.array([0]))[0][3] == 0

    # level 0: tile (r, c) covers exactly image pixels [r*T, (r+1)*T) x [c*T, (c+1)*T)
    for r, c in [(0, 0), (3, 7), (15, 23)]:
        lo, hi = tile_world_bounds(classes, (r, c))
        img_lo, _ = tile_world_bounds(image, (r * T, c * T))
        _, img_hi = tile_world_bounds(image, ((r + 1) * T - 1, (c + 1) * T - 1))
        np.testing.assert_allclose(lo, img_lo, atol=1e-9)
        np.testing.assert_allclose(hi, img_hi, atol=1e-9)
        for layer in (prob, unc):
            np.testing.assert_allclose(tile_world_bounds(layer, (r, c))[0], lo, atol=1e-9)

    # every pyramid level napari shows: zoom out step by step (the canvas reports what it displays, as on a draw)
    seen = set()
    for view_um in (20.0, 100.0, 240.0):
        corners = np.array([[0.0, 0.0], [view_um, view_um * 1.5]])
        image._update_draw(scale_factor=view_um / 256, corner_pixels_displayed=corners, shape_threshold=(64, 96))
        image.refresh()
        level = image.data_level
        seen.add(level)
        ds = np.asarray(image.downsample_factors[level])
        tile2data = image._transforms["tile2data"]
        np.testing.assert_allclose(tile2data.scale, ds)
        for r, c in [(0, 0), (1, 2)]:
            first = np.array([r * T, c * T]) / ds  # index, at this level, of the tile's first pixel
            texel_lo = image._transforms[1:].simplified((first - 0.5) * ds)  # its outer corner in world µm
            lo, _ = tile_world_bounds(classes, (r, c))
            # napari centres a level pixel on level-0 pixel j*ds: within half a shown pixel of the tile edge
            assert np.all(np.abs(np.asarray(texel_lo) - lo) <= ds / 2 * 0.5 + 1e-9), (level, texel_lo, lo)
    assert seen == {0, 1, 2}


def test_field_overlays_follow_the_field_slider(make_napari_viewer, tmp_path):
    folder = write_field_set(tmp_path / "case")
    store = predict(folder, write_tiny_pack(tmp_path / "packs", mpp=2 * FIELD_MPP), tmp_path / "out", threads=1)
    T = store.tile_px_level0
    assert T == 32 and store.grid_shape == (3, 4, 6)
    viewer = make_napari_viewer()
    image = open_in(viewer, folder)
    layers = add_prediction_layers(viewer, store, image)
    classes = layers["tile_classes"]
    assert classes.data.shape == (3, 4, 6)
    for layer in layers.values():
        np.testing.assert_allclose(layer.scale, [1.0, T * FIELD_MPP, T * FIELD_MPP])
        np.testing.assert_allclose(layer.translate, [0.0, (T / 2 - 0.5) * FIELD_MPP, (T / 2 - 0.5) * FIELD_MPP])

    expected = np.where(store.tile_class[:] >= 0, store.tile_class[:] + 1, 0)
    for f in (0, 2, 1):
        viewer.dims.set_point(0, f)
        # the slice on screen is field f of both layers
        np.testing.assert_array_equal(np.asarray(classes._slice.image.raw), expected[f])
        assert round(float(image.world_to_data(viewer.dims.point)[0])) == f
        for r, c in [(0, 0), (3, 5)]:
            lo, hi = tile_world_bounds(classes, (f, r, c))
            img_lo, _ = tile_world_bounds(image, (f, r * T, c * T))
            _, img_hi = tile_world_bounds(image, (f, (r + 1) * T - 1, (c + 1) * T - 1))
            np.testing.assert_allclose(lo, img_lo, atol=1e-9)
            np.testing.assert_allclose(hi, img_hi, atol=1e-9)
    assert (classes.data > 0).all()  # field sets run every tile by default (no tissue gating)


def test_overlays_follow_their_image_through_a_rename(make_napari_viewer, slide_case):
    store = slide_case["stores"]["tiny@1.0.0"]
    viewer = make_napari_viewer()
    image = open_in(viewer, slide_case["slide"])
    first = add_prediction_layers(viewer, store, image)
    image.name = "renamed slide"
    first["tile_classes"].name = "my classes"
    assert set(prediction_layers(viewer, image)) == set(first.values())
    assert prediction_layers(viewer, "renamed slide") == prediction_layers(viewer, image)
    again = add_prediction_layers(viewer, store, image)  # updated in place, not added a second time
    assert all(again[k] is first[k] for k in first) and len(viewer.layers) == 4
    # a second layer of the same file (another image id) has overlays of its own
    twin = open_in(viewer, slide_case["slide"])
    assert LayerMeta.of(twin).image_path == LayerMeta.of(image).image_path
    assert prediction_layers(viewer, twin) == []
    add_prediction_layers(viewer, store, twin)
    assert len(prediction_layers(viewer, twin)) == 3 and set(prediction_layers(viewer, image)) == set(first.values())


def test_adding_again_replaces_instead_of_duplicating(make_napari_viewer, slide_case):
    stores = slide_case["stores"]
    store = stores["tiny@1.0.0"]
    viewer = make_napari_viewer()
    image = open_in(viewer, slide_case["slide"])
    first = add_prediction_layers(viewer, store, image)
    first["tile_classes"].opacity = 0.7  # a user's setting survives an in-place update
    again = add_prediction_layers(viewer, store.path, image)
    assert all(again[k] is first[k] for k in first)
    assert len(viewer.layers) == 4 and first["tile_classes"].opacity == pytest.approx(0.7)

    # a new version of the pack with another grid: same names and places, new shape, no duplicates
    names_before = [layer.name for layer in viewer.layers]
    second = add_prediction_layers(viewer, stores["tiny@1.1.0"], image)
    assert [layer.name for layer in viewer.layers] == names_before
    assert second["tile_classes"].data.shape == (8, 12)
    assert second["tile_classes"].metadata["cytoreview"]["pack_version"] == "1.1.0"
    np.testing.assert_allclose(second["tile_classes"].scale, [32.0, 32.0])

    # another pack gets its own layers; removing by pack leaves the others
    add_prediction_layers(viewer, stores["other@1.0.0"], image)
    assert len(prediction_layers(viewer, image)) == 6 and len(prediction_layers(viewer, image, "other")) == 3
    assert remove_prediction_layers(viewer, image, "tiny") == 3
    other = stores["other@1.0.0"]
    assert [layer.name for layer in viewer.layers] == [
        "slide.tif",
        "other classes",
        f"other P({LayerMeta.of(prediction_layers(viewer, image, 'other')[1]).extra['class_name']})",
        "other uncertainty (entropy, 3 classes)",
    ]
    # the heatmap can show another class: named in the layer, values of that class
    swapped = set_probability_class(viewer, image, "other", other.classes[0]["name"])
    assert swapped["probability"].name == f"other P({other.classes[0]['name']})"
    np.testing.assert_allclose(swapped["probability"].data, other.tile_prob[:][0][..., 0], rtol=0)


def test_cells_become_points_in_micrometres_with_class_features(make_napari_viewer, tmp_path):
    folder = write_field_set(tmp_path / "cells_case", n_fields=2, cells=True)
    store = predict(folder, write_tiny_segmenter(tmp_path / "packs"), tmp_path / "out", threads=1)
    cells = store.cells()
    assert len(cells["field"]) == 6
    viewer = make_napari_viewer()
    image = open_in(viewer, folder)
    layers = add_prediction_layers(viewer, store, image)
    points = layers["cells"]
    assert type(points).__name__ == "Points" and points.name == "tiny-seg cells"
    expected = np.stack([cells["field"], cells["y_px"] * FIELD_MPP, cells["x_px"] * FIELD_MPP], axis=1)
    np.testing.assert_allclose(points.data, expected)
    assert list(points.features.columns[:3]) == ["class", "class_id", "score"]
    assert set(points.features["class"]) == {"nucleus"} and (points.features["class_id"] == 1).all()
    np.testing.assert_allclose(points.features["score"], cells["score"], rtol=1e-6)
    np.testing.assert_allclose(points.face_color, np.tile(hex_rgba("#7030a0"), (6, 1)), atol=1e-6)
    np.testing.assert_allclose(points.size, CELL_SIZE_UM)
    # a cell centred on level-0 pixel (y, x) is drawn where the image shows that pixel
    np.testing.assert_allclose(image.world_to_data(points.data[0])[1:], [cells["y_px"][0], cells["x_px"][0]])
    assert viewer.layers[-1] is points
    # adding again updates the same Points layer in place
    n_layers = len(viewer.layers)
    again = add_prediction_layers(viewer, store, image)
    assert again["cells"] is points and len(viewer.layers) == n_layers
    np.testing.assert_allclose(points.data, expected)
    np.testing.assert_allclose(points.face_color, np.tile(hex_rgba("#7030a0"), (6, 1)), atol=1e-6)


def test_reopening_loads_stored_predictions_lazily(make_napari_viewer, slide_case, tmp_path):
    slide, stores = slide_case["slide"], slide_case["stores"]
    project = default_project_folder(slide)
    assert project == slide_case["root"] / "slide.tif.cytoreview"
    # a store of another image with the same stem is not shown
    other_dir = tmp_path / "elsewhere"
    other_dir.mkdir()
    other = write_slide(other_dir)
    predict(other, write_tiny_pack(tmp_path / "packs", name="foreign"), project / "predictions", threads=1)

    from dask.callbacks import Callback

    computed = []

    class CountComputes(Callback):
        def _start(self, dsk):
            computed.append(len(dsk))

    viewer = make_napari_viewer()
    image = open_in(viewer, slide)
    with CountComputes():
        loaded = load_existing_predictions(viewer, image)
        assert computed == []  # the hidden heatmaps read nothing from the stores
        loaded[1]["uncertainty"].visible = True  # shown: read now
        assert computed
    # one set per pack, the newest version of each
    assert [d["tile_classes"].metadata["cytoreview"]["store"] for d in loaded] == [
        str(stores["other@1.0.0"].path),
        str(stores["tiny@1.1.0"].path),
    ]
    assert [layer.name for layer in viewer.layers] == ["slide.tif"] + [
        name for pack, d in zip(("other", "tiny"), loaded)
        for name in (f"{pack} classes", f"{pack} P({d['probability'].metadata['cytoreview']['class_name']})",
                     f"{pack} uncertainty (entropy, 3 classes)")]
    prob = loaded[1]["probability"]
    assert type(prob.data).__module__.startswith("dask")  # nothing read until napari shows it
    k = [c["name"] for c in stores["tiny@1.1.0"].classes].index(prob.metadata["cytoreview"]["class_name"])
    np.testing.assert_allclose(np.asarray(prob.data), stores["tiny@1.1.0"].tile_prob[:][0][..., k])
    # loading again (here from the project folder) adds nothing new
    load_existing_predictions(viewer, image, project)
    assert len(viewer.layers) == 7
    # a folder without stores loads nothing
    assert load_existing_predictions(viewer, image, tmp_path / "nothing-here") == []


def test_focus_stack_overlays_show_on_every_focus_plane(make_napari_viewer, tmp_path):
    folder = tmp_path / "stack"
    folder.mkdir()
    for f in range(2):
        for z in range(3):
            arr = tissue_like(64, 96, seed=f)
            arr[:, 48:] = 245
            PILImage.fromarray(arr).save(folder / f"field_{f:03d}_z{z}.jpg", quality=95)
    store = predict(folder, write_tiny_pack(tmp_path / "packs", mpp=2 * FIELD_MPP), tmp_path / "out", threads=1)
    T = store.tile_px_level0
    viewer = make_napari_viewer()
    image = open_in(viewer, folder)
    assert image.data.shape[:2] == (2, 3)
    classes = add_prediction_layers(viewer, store, image)["tile_classes"]
    assert classes.data.shape == (2, 1, 2, 3)
    expected = np.where(store.tile_class[:] >= 0, store.tile_class[:] + 1, 0)
    for f in range(2):
        for z in range(3):
            viewer.dims.set_point(0, f)
            viewer.dims.set_point(1, z)
            np.testing.assert_array_equal(np.asarray(classes._slice.image.raw), expected[f])
            lo, hi = tile_world_bounds(classes, (f, 0, 1, 2))
            img_lo, _ = tile_world_bounds(image, (f, z, T, 2 * T))
            _, img_hi = tile_world_bounds(image, (f, z, 2 * T - 1, 3 * T - 1))
            np.testing.assert_allclose(lo[2:], img_lo[2:], atol=1e-9)
            np.testing.assert_allclose(hi[2:], img_hi[2:], atol=1e-9)
            assert lo[0] == f
    # the one stored plane spans the whole focus range: world z from -0.5 to n_z - 0.5
    z_lo = classes.data_to_world((0, -0.5, 0, 0))[1]
    z_hi = classes.data_to_world((0, 0.5, 0, 0))[1]
    assert (z_lo, z_hi) == pytest.approx((-0.5, 2.5))


def test_grid_overlays_stop_at_the_image_edge(make_napari_viewer, tmp_path):
    """Fields of 200 x 300 px under 32 px tiles: the last row (8 px) and column (12 px) of tiles are cut where the
    image ends, on every grid layer, and painting an edge tile journals the whole tile."""
    from cytoreview._napari.review_session import ReviewSession
    from cytoreview.review import Project
    from cytoreview.workflows import import_store

    folder = write_field_set(tmp_path / "case", n_fields=2, height=200, width=300)
    store = predict(folder, write_tiny_pack(tmp_path / "packs", mpp=2 * FIELD_MPP), tmp_path / "out", threads=1)
    T = store.tile_px_level0
    assert T == 32 and store.grid_shape == (2, 7, 10) and store.plane_shape == (200, 300)
    viewer = make_napari_viewer()
    image = open_in(viewer, folder)
    layers = add_prediction_layers(viewer, store, image)
    # gcd(32, 200 % 32 = 8, 300 % 32 = 12) = 4 px: each tile is 8 x 8 layer pixels, 50 x 75 of them per field
    for layer in (layers["tile_classes"], layers["probability"], layers["uncertainty"]):
        assert layer.data.shape == (2, 50, 75)
        lo, _ = tile_world_bounds(layer, (0, 0, 0))
        _, hi = tile_world_bounds(layer, (1, 49, 74))
        img_lo, _ = tile_world_bounds(image, (0, 0, 0))
        _, img_hi = tile_world_bounds(image, (1, 199, 299))
        np.testing.assert_allclose(lo, img_lo, atol=1e-9)  # starts where the image starts
        np.testing.assert_allclose(hi[-2:], img_hi[-2:], atol=1e-9)  # and ends exactly at its last pixel
        extent = np.asarray(layer.extent.world)
        assert (extent[1, -2:] <= np.asarray(image.extent.world)[1, -2:] + 1e-9).all()
    classes = layers["tile_classes"]
    # a tile's pixels show its class; the edge tile (6, 9) keeps its 8 x 12 px inside the image, 2 x 3 layer pixels
    expected = np.where(store.tile_class[:] >= 0, store.tile_class[:] + 1, 0)
    np.testing.assert_array_equal(classes.data[:, ::8, ::8], expected)
    assert classes.data[0, 48:, 72:].shape == (2, 3) and (classes.data[0, 48:, 72:] == expected[0, 6, 9]).all()
    prob_k = [c["name"] for c in store.classes].index(layers["probability"].metadata["cytoreview"]["class_name"])
    np.testing.assert_allclose(layers["probability"].data[:, ::8, ::8], store.tile_prob[:][..., prob_k])

    # painting one layer pixel of the edge tile labels the tile (one item) and fills all its pixels
    import_store(tmp_path / "project", folder, store.path, create=True)
    project = Project.open(tmp_path / "project")
    session = ReviewSession(viewer, image, project, reviewer="ann")
    new_value = 1 if int(expected[0, 6, 9]) != 1 else 2
    classes.brush_size = 1
    classes.paint((0, 49, 74), new_value)
    session.tiles.flush()
    iid = session.tiles.item_at(0, 6, 9)
    assert project.item(iid).label == [new_value - 1]
    assert (classes.data[0, 48:, 72:] == new_value).all()
    assert session.tiles.shown_value(iid) == new_value
    assert (classes.data[0, :48] == np.repeat(np.repeat(expected[0, :6], 8, 0), 8, 1)[:, :75]).all()
    viewer.dims.set_point(0, 0)
    viewer.reset_view()
    shot = viewer.screenshot(str(tmp_path / "edge.png"), canvas_only=True)
    assert shot.shape[0] > 0


def test_per_pixel_mask_layers_stop_at_the_image_edge(make_napari_viewer, tmp_path):
    """A segmenter's stitched mask covers whole tiles; its layers are cut where the image ends, at every level."""
    from tests._napari.test_cell_layers import detector

    folder = write_field_set(tmp_path / "case", n_fields=1, height=200, width=300, cells=True)
    store = predict(folder, detector(tmp_path), tmp_path / "out", threads=1)
    k = store.mask_px_level0
    assert store.mask.shape[-2] * k > 200 or store.mask.shape[-1] * k > 300  # the stitched mask runs past the image
    viewer = make_napari_viewer()
    image = open_in(viewer, folder)
    made = add_prediction_layers(viewer, store, image)
    img_hi = np.asarray(image.extent.world)[1, -2:]
    for role in ("cell_mask", "foreground"):
        layer = made[role]
        levels = layer.data if layer.multiscale else [layer.data]
        for level, data in enumerate(levels):
            assert data.shape[-2] == int(200 / k) // 2**level and data.shape[-1] == int(300 / k) // 2**level
        hi = np.asarray(layer.extent.world)[1, -2:]
        assert (hi <= img_hi + 1e-9).all(), (role, hi, img_hi)
