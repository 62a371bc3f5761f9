"""The gallery's rules without a GUI: groups and orders, keys as project changes, crops at one physical scale."""

import numpy as np
import pandas as pd
import pytest

from cytoreview.errors import ProjectError
from cytoreview.io import open_image
from cytoreview.review import gallery
from cytoreview.review.cell_crops import CropReader, read_cell_crop
from cytoreview.review.differential import NOT_CLASSED, UNIDENTIFIED, differential

from .cell_project import make_cell_project


@pytest.fixture
def project(tmp_path):
    p = make_cell_project(tmp_path)
    yield p
    p.close()


def test_orders(project):
    doubt = gallery.gallery_cells(project)
    assert doubt["group"].iloc[-1] == UNIDENTIFIED and (doubt[doubt["group"] == UNIDENTIFIED]["confidence"] < 0.5).all()
    rare = gallery.gallery_cells(project, sort="rare")
    sizes = rare[rare["group"] != UNIDENTIFIED]["group"].value_counts()
    firsts = list(dict.fromkeys(rare["group"]))
    assert sizes[firsts[0]] == sizes.min()
    unc = gallery.gallery_cells(project, sort="uncertainty", unidentified_below=None)
    first = unc[unc["group"] == unc["group"].iloc[0]]
    assert list(first["confidence"]) == sorted(first["confidence"])
    item = int(doubt["item_id"].iloc[3])
    project.set_label(item, [project.schema.by_name("atypical").id], "dr")
    dis = gallery.gallery_cells(project, sort="disagreement")
    atypical = dis[dis["group"] == "atypical"]
    assert int(atypical["item_id"].iloc[0]) == item
    with pytest.raises(ProjectError, match="sort"):
        gallery.gallery_cells(project, sort="size")
    # inside every group: unreviewed first, then the lowest confidence, then the item id
    project.set_label(int(doubt["item_id"].iloc[0]), [int(doubt["label_id"].iloc[0])], "dr")
    for sort in ("doubt", "uncertainty"):
        cells = gallery.gallery_cells(project, sort=sort)
        for _group, part in cells.groupby("group", sort=False):
            keys = list(zip(part["reviewed"], part["confidence"], part["item_id"]))
            assert keys == sorted(keys)
    dis = gallery.gallery_cells(project, sort="disagreement")
    for _group, part in dis.groupby("group", sort=False):
        keys = list(zip(~part["corrected"], part["reviewed"], part["confidence"], part["item_id"]))
        assert keys == sorted(keys)


def test_keys_as_changes(project):
    ids = gallery.gallery_cells(project)["item_id"].tolist()[:4]
    assert gallery.reclassify(project, ids[:2], project.schema.by_name("lymphocyte").id, "dr") == 2
    gallery.mark_not_classed(project, ids[2:3], "dr")
    assert project.item(ids[2]).label == [project.schema.by_name(NOT_CLASSED).id]
    assert gallery.accept_calls(project, ids, "dr") == [ids[3]]  # the three changed ones keep their labels
    assert gallery.undo_key_press(project, "dr") == [ids[3]]
    assert gallery.undo_key_press(project, "dr") == [ids[2]]
    assert project.item(ids[3]).reviewed is False and project.item(ids[2]).reviewed is False
    assert gallery.redo_key_press(project, "dr") == [ids[2]]
    assert gallery.redo_key_press(project, "dr") == [ids[3]]
    assert gallery.redo_key_press(project, "dr") == []  # only the two undone changes come back
    assert project.item(ids[3]).reviewed is True and project.item(ids[2]).label == [project.schema.by_name(
        NOT_CLASSED).id]


def test_crops_share_one_physical_scale_and_batch_equals_single(project, tmp_path):
    cells = gallery.gallery_cells(project).head(30).to_dict("records")
    reader = CropReader(project, crop_um=20.0, thumb_px=64)
    batch = reader.crops(cells)
    single = [reader.crop(c) for c in cells]
    for a, b in zip(batch, single):
        np.testing.assert_array_equal(a.rgb, b.rgb)
        assert a.padded == b.padded and a.rgb.shape == (64, 64, 3)
    reader.close()
    image = open_image(project.image(1).path)
    # the same 20 µm at half the pixel size covers twice the pixels: the cell looks the same size
    fine = read_cell_crop(image, 0, 150, 200, crop_um=20.0, thumb_px=64)
    image.mpp = image.mpp / 2
    coarse = read_cell_crop(image, 0, 150, 200, crop_um=10.0, thumb_px=64)
    np.testing.assert_array_equal(fine.rgb, coarse.rgb)
    off = read_cell_crop(image, 0, 1, 1, crop_um=10.0, thumb_px=64)
    assert off.padded and (off.rgb[0, :8] != 236).any()  # hatched, not glass-white


def test_cells_kept_in_memory_match_a_fresh_read_after_every_kind_of_change(project):
    state = gallery.GalleryCells(project)
    ids = state.cells()["item_id"].tolist()
    lymphocyte = project.schema.by_name("lymphocyte").id
    steps = [lambda: gallery.reclassify(project, ids[:7], lymphocyte, "dr"),
             lambda: gallery.mark_not_classed(project, ids[7:9], "dr"),
             lambda: gallery.accept_calls(project, ids[5:20], "dr"),
             lambda: project.set_label(ids[30], [project.schema.by_name("unsure").id], "dr"),
             lambda: [gallery.undo_key_press(project, "dr") for _ in range(3)],
             lambda: [gallery.redo_key_press(project, "dr") for _ in range(2)]]
    for step in steps:
        step()
        state.update(ids[:40])
        for sort in gallery.SORTS:
            state.set_order(sort, 0.5)
            pd.testing.assert_frame_equal(state.cells(), gallery.gallery_cells(project, sort=sort),
                                          check_dtype=False)
        state.set_order("doubt", 0.5)
        pd.testing.assert_frame_equal(state.differential(by="project"),
                                      differential(project, by="project", unidentified_below=0.5), check_dtype=False)
        pd.testing.assert_frame_equal(state.differential(by="case", counted=["neutrophil", "lymphocyte"]),
                                      differential(project, by="case", counted=["neutrophil", "lymphocyte"],
                                                   unidentified_below=0.5), check_dtype=False)
    assert state.update([10**9]) == []  # not a cell of the gallery: ignored
