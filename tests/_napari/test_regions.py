"""Regions: a polygon drawn on the regions layer becomes a journalled region item with the palette's class,
exported and measured like every item, and shown again when the session is reopened."""

from __future__ import annotations

import numpy as np
import pytest

from cytoreview.review.measure import measure
from tests._napari.test_review_support import MPP, open_case, review_case  # noqa: F401
from tests._napari.test_review_widget import dock  # noqa: F401

pytestmark = pytest.mark.gui


def test_polygon_on_the_regions_layer_is_a_journalled_region_item(dock, tmp_path):  # noqa: F811
    viewer, widget, _overlays, _ = dock
    s = widget.session
    layer = widget.regions.layer
    assert layer.name.endswith("regions") and type(layer).__name__ == "Shapes"
    cls = s.project.schema.active_classes[-1]
    widget.palette_table.cellClicked.emit(widget._palette_rows.index(cls.id), 0)  # choose the class
    before = len(s.project.history())
    square_px = np.array([[100, 100], [100, 400], [400, 400], [400, 100]], dtype=float)
    field = 1 if s.kind == "fields" else None
    verts = square_px * MPP if field is None else np.c_[np.full(4, field), square_px * MPP]
    layer.add_polygons([verts])  # what drawing a polygon adds

    regions = s.project.items(image_id=s.image_id, level="region")
    assert len(regions) == 1
    region = regions.iloc[0]
    assert region["label"] == [cls.id] and region["reviewed"] and region["reviewer"] == "alice"
    np.testing.assert_allclose(region["geometry"]["coords"], square_px, atol=1e-3)
    assert int(region["field"]) == (field or 0)
    history = s.project.history()
    assert len(history) == before + 1 and history.iloc[-1]["item_id"] == region["item_id"]  # journalled
    np.testing.assert_allclose(np.asarray(layer.face_color)[0][:3], [int(cls.color[k:k + 2], 16) / 255
                                                                       for k in (1, 3, 5)], atol=1e-6)
    table = measure(s.project)
    row = table[table["region_id"] == region["item_id"]].iloc[0]
    assert row["area_mm2"] == pytest.approx(300 * 300 * MPP**2 / 1e6) and row["region_class"] == cls.name

    from cytoreview.export.api import export_project

    out = tmp_path / "export"
    export_project(s.project, out, formats="geojson,coco", select="reviewed")
    import json

    coco = json.loads((out / "coco" / "instances.json").read_text())
    assert any(a["area"] == pytest.approx(300 * 300) for a in coco["annotations"])

    widget.close_session()  # reopening shows the region again, without a new item
    assert widget.open_session() is not None
    assert len(widget.regions.layer.data) == 1
    assert len(widget.session.project.items(level="region")) == 1


def test_measurements_tab_shows_fields_and_regions(dock):  # noqa: F811
    viewer, widget, _overlays, _ = dock
    s = widget.session
    square_px = np.array([[0, 0], [0, 500], [500, 500], [500, 0]], dtype=float)
    verts = square_px * MPP if s.kind != "fields" else np.c_[np.zeros(4), square_px * MPP]
    widget.regions.layer.add_polygons([verts])
    widget.tabs.setCurrentWidget(widget.measure)
    widget.refresh_stats(full=True)
    table = measure(s.project, [s.image_id])
    assert widget.measure.table.rowCount() == len(table) and len(table) >= 2
    region_row = next(i for i in range(len(table)) if widget.measure.cell(i, "region").startswith("#"))
    assert float(widget.measure.cell(region_row, "area_mm2")) == pytest.approx(500 * 500 * MPP**2 / 1e6, rel=1e-3)
    assert widget.measure.cell(region_row, "n_tiles") == str(int(table.iloc[region_row]["n_tiles"]))


def test_reshaping_deleting_and_undoing_regions_are_journalled(dock, tmp_path):  # noqa: F811
    viewer, widget, _overlays, _ = dock
    s = widget.session
    layer = widget.regions.layer
    cls = s.project.schema.active_classes[-1]
    widget.palette_table.cellClicked.emit(widget._palette_rows.index(cls.id), 0)
    field = 1 if s.kind == "fields" else None

    def world(px):
        px = np.asarray(px, dtype=float)
        return px * MPP if field is None else np.c_[np.full(len(px), field), px * MPP]

    small = [[100, 100], [100, 400], [400, 400], [400, 100]]
    wide = [[100, 100], [100, 700], [400, 700], [400, 100]]
    other = [[600, 600], [600, 800], [800, 800], [800, 600]]
    layer.add_polygons([world(small), world(other)])  # draw two regions
    first, second = widget.regions.item_ids
    n = len(s.project.history())

    # reshape the first: napari replaces its vertices and reports the change
    layer.data = [world(wide), world(other)]
    reshaped = widget.regions.item_ids[0]
    assert reshaped not in (first, second) and len(s.project.history()) == n + 2
    nar = s.project.schema.by_name("not a region").id
    assert s.project.item(first).label == [nar] and s.project.item(reshaped).label == [cls.id]
    np.testing.assert_allclose(s.project.item(reshaped).geometry["coords"], wide, atol=1e-3)

    # delete the second with the layer's delete (selected shapes removed)
    layer.selected_data = {1}
    layer.remove_selected()
    assert s.project.item(second).label == [nar] and len(layer.data) == 1
    assert len(s.project.history()) == n + 3
    live = measure(s.project)
    assert live.loc[live["region_id"].notna(), "region_id"].astype(int).tolist() == [reshaped]

    # Ctrl+Z: the deleted region comes back on the layer, then the reshape is taken back with one more Ctrl+Z
    widget.on_action("undo")
    assert s.project.item(second).label == [cls.id] and len(layer.data) == 2
    assert second in widget.regions.item_ids
    widget.on_action("undo")
    assert reshaped not in widget.regions.item_ids and first in widget.regions.item_ids and len(layer.data) == 2
    assert s.project.item(first).label == [cls.id] and s.project.item(reshaped).label is None
    k = widget.regions.item_ids.index(first)
    np.testing.assert_allclose(np.asarray(layer.data[k])[:, -2:], np.asarray(small) * MPP, atol=1e-6)
    widget.on_action("redo")  # and forward again in one step: the wide outline is back, the first deleted
    assert first not in widget.regions.item_ids and reshaped in widget.regions.item_ids and len(layer.data) == 2
    widget.on_action("undo")
    assert first in widget.regions.item_ids and len(layer.data) == 2

    widget.on_action("redo")  # the reshape once more: the first is deleted, the wide outline live

    # reopening shows the live regions only (the deleted first one stays hidden), with the reshaped outline
    widget.close_session()
    assert widget.open_session() is not None
    assert sorted(widget.regions.item_ids) == sorted([reshaped, second])
    assert len(widget.regions.layer.data) == 2
    k = widget.regions.item_ids.index(reshaped)
    np.testing.assert_allclose(np.asarray(widget.regions.layer.data[k])[:, -2:], np.asarray(wide) * MPP, atol=1e-6)
    viewer.reset_view()


def test_brush_strokes_become_region_items_and_extend_them(dock):  # noqa: F811
    viewer, widget, _overlays, _ = dock
    s = widget.session
    regions = widget.regions
    layer = regions.brush.layer
    assert type(layer).__name__ == "Labels" and layer.name.endswith("region brush")
    b = regions.brush.px_level0
    np.testing.assert_allclose(layer.scale[-2:], [b * MPP, b * MPP])
    cls = s.project.schema.active_classes[-1]
    widget.palette_table.cellClicked.emit(widget._palette_rows.index(cls.id), 0)
    assert layer.selected_label == cls.id + 1  # the palette's class is what the brush paints
    lead = (1,) if s.kind == "fields" else ()
    layer.brush_size = 9
    n = len(s.project.history())
    layer.paint(lead + (60, 60), cls.id + 1)  # one dab of the class's value
    made = regions.brush.flush()
    assert len(made) == 1 and len(s.project.history()) == n + 1
    item = s.project.item(made[0])
    assert item.level == "region" and item.label == [cls.id] and item.field == (lead[0] if lead else 0)
    coords = np.asarray(item.geometry["coords"])
    assert 40 * b <= coords.mean(0)[0] <= 80 * b  # around the dab, in level-0 px
    assert not np.asarray(layer.data).any()  # the scratch surface is cleared ...
    assert regions.item_ids == made and len(regions.layer.data) == 1  # ... the outline is on the regions layer
    area = float(measure(s.project).set_index("region_id").loc[made[0], "area_mm2"])

    layer.paint(lead + (60, 66), 200)  # overlapping, with a value that is no class: the palette's class, merged
    extended = regions.brush.flush()
    assert len(extended) == 1 and extended[0] != made[0]
    assert s.project.item(made[0]).label == [s.project.schema.by_name("not a region").id]
    assert regions.item_ids == extended and len(regions.layer.data) == 1
    assert float(measure(s.project).set_index("region_id").loc[extended[0], "area_mm2"]) > area

    widget.on_action("undo")  # the extension is taken back with one Ctrl+Z, the layer following
    assert regions.item_ids == made and len(regions.layer.data) == 1
    assert s.project.item(made[0]).label == [cls.id] and s.project.item(extended[0]).label is None

    from cytoreview._napari.review_brush import ERASE_VALUE

    layer.brush_size = 3  # erasing a line through the dab's middle cuts it in two
    for y in range(40, 81):
        layer.paint(lead + (y, 60), ERASE_VALUE)
    cut = regions.brush.flush()
    nar = s.project.schema.by_name("not a region").id
    assert s.project.item(made[0]).label == [nar] and len(cut) == 2 and len(regions.layer.data) == 2
    assert all(s.project.item(i).label == [cls.id] for i in cut)
    widget.on_action("undo")  # one Ctrl+Z: the dab is whole again
    assert regions.item_ids == made and len(regions.layer.data) == 1


def test_regions_on_a_focus_stack_keep_their_field(make_napari_viewer, tmp_path):
    """A focus stack has a z axis between field and y: the regions layers carry it, so a polygon drawn or a region
    brushed on field 1 (at any focus plane) is a region of field 1."""
    from PIL import Image as PILImage

    from cytoreview._napari.review_regions import RegionLayerSync
    from cytoreview._napari.review_session import ReviewSession
    from cytoreview.inference import predict
    from cytoreview.review import Project
    from cytoreview.workflows import import_store
    from tests._napari.test_overlays import FIELD_MPP, open_in, write_tiny_pack
    from tests.io.conftest import tissue_like

    folder = tmp_path / "stack"
    folder.mkdir()
    for f in range(2):
        for z in range(3):
            PILImage.fromarray(tissue_like(128, 192, seed=f)).save(folder / f"field_{f:03d}_z{z}.jpg", quality=95)
    store = predict(folder, write_tiny_pack(tmp_path / "packs", mpp=2 * FIELD_MPP), tmp_path / "out", threads=1)
    import_store(tmp_path / "project", folder, store.path, create=True)
    project = Project.open(tmp_path / "project")
    viewer = make_napari_viewer()
    image = open_in(viewer, folder)
    session = ReviewSession(viewer, image, project, reviewer="ann")
    regions = RegionLayerSync(viewer, session)
    assert regions.layer.ndim == 4 and regions.brush.layer.ndim == 4 and regions.brush.layer.data.shape[:2] == (2, 1)
    square = np.array([[10, 10], [10, 60], [60, 60], [60, 10]], float) * FIELD_MPP
    regions.layer.add_polygons([np.c_[np.full(4, 1.0), np.full(4, 2.0), square]])  # drawn on field 1, plane 2
    (drawn,) = regions.item_ids
    assert project.item(drawn).field == 1
    brush = regions.brush
    brush.layer.brush_size = 5
    brush.layer.paint((1, 0, 90 // brush.px_level0, 150 // brush.px_level0), project.schema.active_classes[0].id + 1)
    (brushed,) = regions.brush.flush()
    assert project.item(brushed).field == 1
    regions.close()
    session.close()
