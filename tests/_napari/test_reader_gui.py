"""The reader through napari itself (real viewer under Xvfb)."""

import numpy as np
import pytest

from cytoreview._napari.reader import get_reader
from tests.io.conftest import tissue_like, write_fields, write_pyramid

pytestmark = pytest.mark.gui


def test_viewer_opens_pyramid_multiscale_in_micrometres(make_napari_viewer, tmp_path):
    path = write_pyramid(tmp_path / "slide.tif", tissue_like(1024, 1536), n_levels=3, mpp=0.5)
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="cytoreview")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.name == "slide.tif"
    assert layer.multiscale and len(layer.data) == 3 and layer.rgb
    np.testing.assert_allclose(layer.scale, [0.5, 0.5])
    assert tuple(str(u) for u in layer.units) == ("micrometer", "micrometer")
    assert layer.metadata["cytoreview"]["mpp"] == 0.5
    # world extent is the slide size in µm
    extent = layer.extent.world
    np.testing.assert_allclose(extent[1] - extent[0], [512.0, 768.0], atol=0.6)


def test_viewer_opens_field_folder_with_field_slider(make_napari_viewer, tmp_path):
    folder = tmp_path / "case"
    write_fields(folder, 4)
    viewer = make_napari_viewer()
    layer = viewer.open(str(folder), plugin="cytoreview")[0]
    assert layer.data.shape == (4, 60, 96, 3)
    np.testing.assert_allclose(layer.scale, [1.0, 0.293, 0.293])
    assert viewer.dims.axis_labels[0] == "field"
    viewer.dims.set_point(0, 2)
    assert viewer.dims.point[0] == 2


def test_reader_declines_foreign_paths(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert get_reader(str(other)) is None
    assert get_reader(str(tmp_path / "empty-dir-that-does-not-exist")) is None
