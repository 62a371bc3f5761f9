"""``cytoreview demo`` on a cell case opens the cell gallery dock, which shows the cells once they are predicted."""

from __future__ import annotations

import pytest

from cytoreview._napari.cell_gallery import CellGalleryWidget
from cytoreview._napari.demo import GALLERY_DOCK, gallery_dock, open_demo
from cytoreview._napari.hub import hub
from tests.review.cell_project import make_cell_project

pytestmark = pytest.mark.gui


def _docks(viewer) -> list[str]:
    return [name for name in viewer.window._dock_widgets]


def test_the_effusion_demo_opens_the_gallery_and_it_shows_the_predicted_cells(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    _image, _predict, review_dock, _train = open_demo(viewer, "effusion", project_folder=tmp_path / "project",
                                                      reviewer="dr-demo")
    assert any(GALLERY_DOCK in name for name in _docks(viewer))
    gallery = gallery_dock(viewer)  # the dock already there, not a second one
    assert isinstance(gallery, CellGalleryWidget)
    assert sum(GALLERY_DOCK in name for name in _docks(viewer)) == 1
    assert review_dock.level_combo.currentText() == "cell"
    # the project gets its cells (here a project of 12 cells stands for the packs' run) and is announced
    make_cell_project(tmp_path, n_cells=(12,)).close()
    hub().project_chosen.emit(str(tmp_path / "project"))
    assert gallery.project is not None and len(gallery.model.cells) == 12
    assert "12 cells" in gallery.message.text()
    gallery.close()


def test_the_tile_demo_has_no_gallery(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    open_demo(viewer, "warthin", project_folder=tmp_path / "project")
    assert not any(GALLERY_DOCK in name for name in _docks(viewer))
