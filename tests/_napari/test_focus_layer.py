"""A focus-stack field set opens with an all-in-focus layer over its planes (real viewer under Xvfb)."""

import numpy as np
import pytest
from PIL import Image as PILImage

from cytoreview.io import open_image
from cytoreview.io.focus import sharpness
from cytoreview.samples.focus_stack import defocus_stack, region_plane_map
from tests.io.test_focus import detailed_texture

pytestmark = pytest.mark.gui


def test_focus_stack_opens_with_an_edf_layer_to_switch_to(make_napari_viewer, tmp_path):
    folder = tmp_path / "stack"
    folder.mkdir()
    for f in range(2):
        sharp = detailed_texture(120, 180, seed=f)
        for z, plane in enumerate(defocus_stack(sharp, region_plane_map(sharp.shape[:2], 3, rows=2, cols=2), 3)):
            PILImage.fromarray(plane).save(folder / f"field_{f}_z{z}.png")
    viewer = make_napari_viewer(show=True)
    stack_layer, edf_layer = viewer.open(str(folder), plugin="cytoreview")
    assert stack_layer.data.shape == edf_layer.data.shape == (2, 3, 120, 180, 3)
    assert edf_layer.name == "stack [all-in-focus]" and edf_layer.metadata["cytoreview"]["focus"] == "edf"
    assert list(viewer.layers).index(edf_layer) > list(viewer.layers).index(stack_layer)  # on top
    # every plane position shows the same fused field, sharper than any of the planes
    fused = open_image(folder, focus="edf").read_plane(0, 1)
    for z in range(3):
        np.testing.assert_array_equal(np.asarray(edf_layer.data[1, z]), fused)
    assert sharpness(fused) > max(sharpness(np.asarray(stack_layer.data[1, z])) for z in range(3))
    viewer.dims.set_point(0, 1)
    viewer.reset_view()
    shot_edf = viewer.screenshot(canvas_only=True, flash=False)
    edf_layer.visible = False  # switching to the planes
    viewer.dims.set_point(1, 2)
    shot_plane = viewer.screenshot(canvas_only=True, flash=False)
    assert not np.array_equal(shot_edf, shot_plane)
