"""The persistent thumbnail cache: cut once in field order, read back by cell id after reopening, invalidated when a
cell moves or the crop side changes, none where the project cannot be written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cytoreview.review import Project, edits, gallery
from cytoreview.review.cell_crops import GALLERY_THUMB_PX, CropReader
from cytoreview.review.thumbnails import CACHE_FOLDER, KEEP_SIZES, ThumbnailCache, cache_key

from .cell_project import make_cell_project


@pytest.fixture
def project(tmp_path):
    p = make_cell_project(tmp_path, n_cells=(60, 40))
    yield p
    p.close()


def _cells(project):
    return gallery.gallery_cells(project).to_dict("records")


def test_fill_once_then_pages_come_from_the_cache_after_reopening(project, tmp_path):
    cells = _cells(project)
    plain = CropReader(project, thumb_px=48).crops(cells)
    reader = CropReader(project, thumb_px=48, cache=True)
    assert reader.fill(cells) == len(cells)
    assert reader.fill(cells) == 0  # nothing left to cut
    reader.close()
    folder = project.folder
    project.close()
    # the images are gone: whatever comes back now can only come from the cache, after a reopen
    for case in ("case-1", "case-2"):
        shutil.move(tmp_path / case, tmp_path / f"{case}.away")
    with Project.open(folder) as again:
        reader = CropReader(again, thumb_px=48, cache=True)
        cached = reader.crops(cells[::-1])
        reader.close()
    for a, b in zip(plain[::-1], cached):
        np.testing.assert_array_equal(a.rgb, b.rgb)
        assert a.padded == b.padded
    assert any(c.padded for c in cached)  # the edge cells stay padded and marked through the cache
    assert (folder / CACHE_FOLDER / cache_key(24.0, 48)).is_dir()


def test_a_page_read_keeps_its_crops_and_a_moved_cell_is_cut_again(project):
    cells = _cells(project)
    reader = CropReader(project, thumb_px=48, cache=True)
    first = reader.crops(cells[:10])
    assert len(reader.cache) == 10
    # the same item at another place (its geometry changed) is a miss: cut at the new place, not the old crop
    moved = dict(cells[3])
    geometry = json.loads(moved["geometry"]) if isinstance(moved["geometry"], str) else dict(moved["geometry"])
    geometry["y"], geometry["x"] = 150.0, 200.0
    moved["geometry"] = geometry
    again = reader.crops([moved])[0]
    plain = CropReader(project, thumb_px=48).crops([moved])[0]
    np.testing.assert_array_equal(again.rgb, plain.rgb)
    assert not np.array_equal(again.rgb, first[3].rgb)
    assert len(reader.cache) == 10  # overwritten in its slot
    # a cell moved in the project is a new item with a thumbnail of its own place
    cell = cells[5]
    new_id = edits.move_cell(project, int(cell["item_id"]), int(cell["field"]), 120.0, 130.0, "dr")
    new = project.items(ids=[new_id]).to_dict("records")
    crop = reader.crops(new)[0]
    np.testing.assert_array_equal(crop.rgb, CropReader(project, thumb_px=48).crops(new)[0].rgb)
    reader.close()


def test_another_crop_side_is_another_cache_and_old_ones_are_pruned(project):
    cells = _cells(project)[:5]
    for crop_um in (24.0, 30.0, 36.0):
        reader = CropReader(project, crop_um=crop_um, thumb_px=48, cache=True)
        reader.crops(cells)
        reader.close()
    kept = sorted(p.name for p in (project.folder / CACHE_FOLDER).iterdir())
    assert len(kept) == KEEP_SIZES and cache_key(36.0, 48) in kept and cache_key(24.0, 48) not in kept
    # 30 µm crops are not 36 µm crops
    a = CropReader(project, crop_um=30.0, thumb_px=48, cache=True)
    b = CropReader(project, crop_um=36.0, thumb_px=48, cache=True)
    assert not np.array_equal(a.crops(cells)[2].rgb, b.crops(cells)[2].rgb)
    a.close()
    b.close()


def test_background_fill_in_field_order_and_close_stops_it(project):
    cells = _cells(project)
    reader = CropReader(project, thumb_px=48, cache=True)
    thread = reader.fill_in_background(cells)
    thread.join(60)
    assert not thread.is_alive() and reader.fill_progress == (len(cells), len(cells))
    assert len(reader.cache) == len(cells)
    reader.close()
    reader = CropReader(project, crop_um=30.0, thumb_px=48, cache=True)
    stops = iter([False, True])
    assert 0 < reader.fill(cells, should_stop=lambda: next(stops)) < len(cells)  # one field, then it stopped
    reader.close()


def test_a_project_folder_that_cannot_hold_the_cache_gets_crops_without_one(project, caplog):
    cells = _cells(project)[:4]
    (project.folder / CACHE_FOLDER).write_text("not a folder")  # the cache folder cannot be made (as root too)
    reader = CropReader(project, thumb_px=48, cache=True)
    assert reader.cache is None and "no thumbnail cache" in caplog.text
    plain = CropReader(project, thumb_px=48).crops(cells)
    for a, b in zip(reader.crops(cells), plain):
        np.testing.assert_array_equal(a.rgb, b.rgb)
    assert reader.fill(cells) == 0
    reader.close()


def test_cache_refuses_a_thumbnail_of_the_wrong_size(project):
    cache = ThumbnailCache(project.folder, 24.0, 48)
    with pytest.raises(ValueError, match="expected"):
        cache.put([1], [7], [(np.zeros((40, 40, 3), np.uint8), False)])
    assert cache.get([1], [7]) == {}
    cache.close()


def test_thumbnails_command_cuts_once_and_refuses_a_project_without_cells(project, tmp_path, capsys):
    import cytoreview.cli

    folder = str(project.folder)
    assert cytoreview.cli.main(["thumbnails", folder]) == 0
    assert capsys.readouterr().out.strip() == "100 thumbnails cut, 0 already cached (100 cells)"
    assert cytoreview.cli.main(["thumbnails", folder]) == 0
    assert capsys.readouterr().out.strip() == "0 thumbnails cut, 100 already cached (100 cells)"
    # the gallery's reader finds them: a page is all hits
    reader = CropReader(project, thumb_px=GALLERY_THUMB_PX, cache=True)
    assert reader.cache is not None and len(reader.cache) == 100
    reader.close()
    with Project.open(tmp_path / "empty", create=True):
        pass
    assert cytoreview.cli.main(["thumbnails", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no cells" in err[0]


_KILLED_PUT = r"""
import os, signal, sys
import numpy as np
from cytoreview.review.thumbnails import ThumbnailCache

cache = ThumbnailCache(sys.argv[1], 10.0, 8)
cache.put([7], [111], [(np.full((8, 8, 3), 10, np.uint8), False)])  # the cell where it was: committed


class KilledBeforeTheIndex:  # the process dies (kill -9) after the new pixels, before the index row is written
    def __init__(self, con):
        self.con = con

    def execute(self, *args):
        return self.con.execute(*args)

    def executemany(self, sql, rows):
        os.kill(os.getpid(), signal.SIGKILL)


cache._db = KilledBeforeTheIndex(cache._db)
cache.put([7], [222], [(np.full((8, 8, 3), 200, np.uint8), False)])  # the same cell moved: cut again
"""


def test_a_kill_while_a_moved_cell_is_cut_again_never_shows_its_new_crop_for_its_old_place(tmp_path):
    """kill -9 between the moved cell's pixels and its index row: the old fingerprint (the cell moved back: undo)
    must not find the new pixels (a miss, cut again, is right)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _KILLED_PUT, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    cache = ThumbnailCache(tmp_path, 10.0, 8)
    try:
        hit = cache.get([7], [111])
        assert 7 not in hit or int(hit[7][0].max()) == 10
        assert cache.get([7], [222]) == {}
    finally:
        cache.close()


def test_cells_of_a_moved_image_get_marked_placeholders_not_an_error(project, tmp_path):
    """A project whose image was moved away (not yet cached) must not stop the gallery: its cells get hatched grey
    placeholders marked ``missing`` (never cached, so the real crops come back with the image), the others crop."""
    cells = _cells(project)
    shutil.move(tmp_path / "case-1", tmp_path / "case-1.away")
    reader = CropReader(project, thumb_px=48, cache=True)
    crops = reader.crops(cells)
    missing = [c.missing for c in crops]
    assert any(missing) and not all(missing)  # case-1's cells only
    assert all(c.padded for c in crops if c.missing)
    assert list(reader.unreadable) and "case-1" in next(iter(reader.unreadable.values()))
    assert len(reader.cache) == missing.count(False)  # placeholders are not kept
    assert reader.fill(cells) == 0  # the background fill skips them too, without raising
    shutil.move(tmp_path / "case-1.away", tmp_path / "case-1")
    again = reader.crops(cells)
    assert not any(c.missing for c in again) and len(reader.cache) == len(cells)
    reader.close()


def test_a_slide_replaced_at_the_same_path_is_cut_again_and_a_slide_away_still_shows(project, tmp_path):
    """The cache must never show the crops of a slide that is no longer at its path: a field set rewritten in place
    (same names, other pixels) gets its cells cut again; one that is only away keeps showing its cached crops."""
    cells = _cells(project)
    reader = CropReader(project, thumb_px=48, cache=True)
    assert reader.fill(cells) == len(cells)
    old = reader.crops(cells)
    reader.close()
    field = tmp_path / "case-1" / "field_000.png"
    from PIL import Image as PILImage

    rgb = 255 - np.asarray(PILImage.open(field).convert("RGB"))
    PILImage.fromarray(rgb).save(field)  # the same path now holds other pixels
    reader = CropReader(project, thumb_px=48, cache=True)
    new = reader.crops(cells)
    plain = CropReader(project, thumb_px=48).crops(cells)
    for a, b in zip(new, plain):
        np.testing.assert_array_equal(a.rgb, b.rgb)
    changed = [not np.array_equal(a.rgb, b.rgb) for a, b in zip(old, new)]
    assert any(changed)
    reader.close()
    shutil.move(tmp_path / "case-1", tmp_path / "case-1.away")  # away now: the new crops still come from the cache
    reader = CropReader(project, thumb_px=48, cache=True)
    away = reader.crops(cells)
    reader.close()
    assert not any(c.missing for c in away)
    for a, b in zip(away, plain):
        np.testing.assert_array_equal(a.rgb, b.rgb)
