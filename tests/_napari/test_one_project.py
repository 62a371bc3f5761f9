"""One project folder for all docks: a folder chosen in any dock shows in the others."""

from __future__ import annotations

import pytest

from tests._napari.test_overlays import open_in, write_slide

pytestmark = pytest.mark.gui


def test_a_project_chosen_in_one_dock_is_every_docks(make_napari_viewer, qtbot, tmp_path):
    from cytoreview._napari.predict_widget import PredictWidget
    from cytoreview._napari.review_widget import ReviewWidget
    from cytoreview._napari.train_widget import TrainWidget

    viewer = make_napari_viewer()
    open_in(viewer, write_slide(tmp_path))
    predict, review, train = PredictWidget(viewer), ReviewWidget(viewer), TrainWidget(viewer)
    for name, dock in (("p", predict), ("r", review), ("t", train)):
        viewer.window.add_dock_widget(dock, name=name)
    # the default: the same folder everywhere (the one rule, cytoreview.workflows.project_folder_for)
    default = predict.output_edit.text()
    assert default and review.folder_edit.placeholderText() == default == train.project_edit.text()

    chosen = tmp_path / "shared project"
    predict.set_project_folder(chosen)
    assert review.folder_edit.text() == str(chosen) == train.project_edit.text()
    other = tmp_path / "second"
    train.project_edit.setText(str(other))
    train.project_edit.editingFinished.emit()  # what leaving the field after typing does
    assert predict.output_edit.text() == str(other) == review.folder_edit.text()
    review.folder_edit.setText(str(chosen))
    review.folder_edit.editingFinished.emit()
    assert predict.output_edit.text() == str(chosen) == train.project_edit.text()
    for dock in (predict, review, train):
        dock.close()
