"""The out-of-distribution warning in the predict dock: a real IHC image run through warthin-tiles is flagged (in the
dock, as a napari warning and in the store); the pack's own sample case is not."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image as PILImage

from cytoreview.inference import PredictionStore
from tests._napari.test_overlays import open_in
from tests._napari.test_predict_widget import choose_pack, click_run_and_wait, make_widget, n_notifications
from tests.plugins.conftest import SAMPLE_DATA

pytestmark = pytest.mark.gui


def _warnings_since(start: int) -> list[str]:
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records[start:] if str(n.severity) == "warning"]


def _run(viewer, qtbot, folder):
    widget = make_widget(viewer, qtbot)
    choose_pack(widget, "warthin-tiles@")
    open_in(viewer, folder)
    start = n_notifications()
    click_run_and_wait(widget, qtbot)
    assert widget.last_result.error is None and widget.last_result.complete
    return widget, _warnings_since(start), PredictionStore(widget.last_result.store_path)


def test_real_ihc_image_is_flagged(make_napari_viewer, qtbot, tmp_path):
    from skimage import data

    folder = tmp_path / "ihc"
    folder.mkdir()
    PILImage.fromarray(np.asarray(data.immunohistochemistry())).save(folder / "field_000.png")  # real IHC, 512 px
    widget, warnings, store = _run(make_napari_viewer(), qtbot, folder)
    assert not widget.ood_label.isHidden() and "far outside what warthin-tiles" in widget.ood_label.text()
    assert any("far outside" in w for w in warnings)
    ood = store.group.attrs["ood"]
    assert ood["far"] and ood["embedding_score"] > ood["embedding_limit"] and "far outside" in ood["message"]


def test_sample_case_is_not_flagged(make_napari_viewer, qtbot, tmp_path):
    folder = tmp_path / "warthin_fna"
    shutil.copytree(SAMPLE_DATA / "warthin_fna", folder, ignore=shutil.ignore_patterns("ground_truth"))
    widget, warnings, store = _run(make_napari_viewer(), qtbot, folder)
    assert widget.ood_label.isHidden() and not any("far outside" in w for w in warnings)
    ood = store.group.attrs["ood"]
    assert not ood["far"] and ood["embedding_score"] < ood["embedding_limit"] and "within" in ood["message"]
