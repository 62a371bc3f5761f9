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


@pytest.fixture
def reader_prefs():
    """napari's reader preferences, emptied for the test and restored after it."""
    from napari.settings import get_settings

    plugins = get_settings().plugins
    saved = dict(plugins.extension2reader)
    plugins.extension2reader = {}
    yield plugins
    plugins.extension2reader = saved


def test_a_case_opened_once_opens_with_cytoreview_without_the_reader_dialog(make_napari_viewer, tmp_path,
                                                                             reader_prefs):
    from napari.errors import MultipleReaderError
    from napari.plugins.utils import get_preferred_reader

    from cytoreview._napari.layer_meta import LayerMeta
    from cytoreview._napari.reader import reader_pattern

    folder = tmp_path / "case A"
    write_fields(folder, 2)
    slide = write_pyramid(tmp_path / "slide.tif", tissue_like(256, 256), n_levels=2, mpp=0.5)
    other = write_pyramid(tmp_path / "other.tif", tissue_like(64, 64), n_levels=1, mpp=0.5)
    viewer = make_napari_viewer()
    # the cause: napari's builtin reader claims every folder and *.tif too, so with no preference napari must ask
    # (`napari PATH` opens with plugin=None; MultipleReaderError is what makes napari's GUI show its dialog)
    for path in (folder, slide):
        with pytest.raises(MultipleReaderError):
            viewer.open(str(path), plugin=None)

    viewer.open(str(folder), plugin="cytoreview")  # cytoreview reads it once (dialog, --plugin, cytoreview open)
    viewer.open(str(slide), plugin="cytoreview")
    prefs = dict(reader_prefs.extension2reader)
    assert prefs == {reader_pattern(folder): "cytoreview", reader_pattern(slide): "cytoreview"}
    assert all(not key.startswith("*") for key in prefs)  # exact paths: no file type, no folder pattern
    assert get_preferred_reader(str(folder)) == get_preferred_reader(str(slide)) == "cytoreview"
    assert get_preferred_reader(str(other)) is None and get_preferred_reader(str(tmp_path)) is None
    assert get_preferred_reader(str(tmp_path / "case B")) is None
    from fnmatch import fnmatch

    odd = tmp_path / "case [1]*"
    odd.mkdir()  # fnmatch's special characters in a name match only themselves
    assert fnmatch(str(odd.resolve()) + "/", reader_pattern(odd)) and not fnmatch(str(tmp_path / "case 1") + "/",
                                                                                 reader_pattern(odd))
    n = len(viewer.layers)
    layers = viewer.open(str(folder), plugin=None)  # as `napari case_folder/` opens it: no error, so no dialog
    assert len(viewer.layers) == n + 1 and layers[0].data.shape[0] == 2
    assert LayerMeta.of(layers[0]).kind == "fields"  # read by cytoreview, not the builtin reader
    with pytest.raises(MultipleReaderError):  # any other .tif still asks, as the user's settings say
        viewer.open(str(other), plugin=None)

    # a preference the user saved for that path is theirs: opening it with cytoreview again does not change it
    reader_prefs.extension2reader = {**prefs, reader_pattern(slide): "napari"}
    viewer.open(str(slide), plugin="cytoreview")
    assert reader_prefs.extension2reader[reader_pattern(slide)] == "napari"


def test_cytoreview_open_refuses_a_path_it_cannot_open(tmp_path, capsys):
    from cytoreview import cli

    (tmp_path / "notes.txt").write_text("x")
    assert cli.main(["open", str(tmp_path / "notes.txt")]) == 2
    assert cli.main(["open", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "notes.txt: not a slide or CytoScan field set" in err and "missing: no such file" in err


def test_remembered_paths_stay_bounded_and_gone_paths_are_dropped(tmp_path, reader_prefs, monkeypatch):
    """One preference per opened path must not grow napari's settings file for ever: cytoreview's own exact-path
    entries are capped (oldest first) and those whose path is gone dropped; the user's own entries are never touched."""
    from cytoreview._napari import reader

    monkeypatch.setattr(reader, "MAX_REMEMBERED_PATHS", 3)
    user = {"*.svs": "cytoreview", "*.tif": "napari", str(tmp_path / "mine.tif"): "napari"}
    reader_prefs.extension2reader = dict(user)
    paths = []
    for k in range(5):
        path = tmp_path / f"slide [{k}]*.tif"
        path.write_bytes(b"x")
        paths.append(path)
        assert reader.remember_reader(path) == reader.reader_pattern(path)
    prefs = dict(reader_prefs.extension2reader)
    assert {key: prefs[key] for key in user} == user
    assert [key for key in prefs if key not in user] == [reader.reader_pattern(p) for p in paths[2:]]
    paths[3].unlink()  # a slide moved away: its entry goes at the next remember
    extra = tmp_path / "case"
    extra.mkdir()
    reader.remember_reader(extra)
    prefs = dict(reader_prefs.extension2reader)
    assert [key for key in prefs if key not in user] == [reader.reader_pattern(p) for p in (paths[2], paths[4], extra)]
