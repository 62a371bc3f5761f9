"""Prediction stores and exports meeting a broken environment: unwritable or full disk, corrupt store, lost image."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from tests.inference.conftest import blob_slide, write_tiff
from tests.models.onnx_graphs import base_card, write_pack

from cytoreview.errors import CytoreviewError, ExportError, ProjectError
from cytoreview.export import export_project
from cytoreview.inference import predict
from cytoreview.models import load_pack
from cytoreview.review import Project


@pytest.fixture
def slide(tmp_path):
    return write_tiff(tmp_path / "slide.tif", blob_slide(96, 128, seed=1))


@pytest.fixture
def pack(tmp_path):
    return load_pack(write_pack(tmp_path / "packs" / "tiny", base_card("tiny")))


@pytest.fixture
def store(slide, pack, tmp_path):
    return predict(slide, pack, tmp_path / "preds", threads=1)


@pytest.fixture
def project(tmp_path, slide):
    p = Project.open(tmp_path / "proj", create=True)
    yield p, p.add_image(slide, kind="wsi", mpp=0.5)
    p.close()


def test_predict_into_a_folder_under_a_file(slide, pack, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    with pytest.raises(CytoreviewError, match="blocker"):
        predict(slide, pack, blocker / "out", threads=1)


def test_predict_on_a_full_disk_names_the_store(slide, pack, tmp_path, monkeypatch):
    _full_disk_for_chunks(monkeypatch)
    with pytest.raises(CytoreviewError, match="zarr"):
        predict(slide, pack, tmp_path / "preds", threads=1)


def _full_disk_for_chunks(monkeypatch):
    import zarr.storage

    original = zarr.storage.LocalStore.set

    async def full(self, key, value):
        if "tile_class/c" in key:
            raise OSError(errno.ENOSPC, "No space left on device")
        return await original(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", full)


def test_full_disk_during_predict_never_leaves_a_complete_looking_store(slide, pack, tmp_path, monkeypatch):
    import zarr

    _full_disk_for_chunks(monkeypatch)
    with pytest.raises((OSError, CytoreviewError)):  # it must fail ...
        predict(slide, pack, tmp_path / "preds", threads=1)
    monkeypatch.undo()
    (path,) = (tmp_path / "preds").glob("*.zarr")
    group = zarr.open_group(str(path), mode="r")
    assert group.attrs["complete"] is False and not np.asarray(group["done"][...]).any()  # ... and say so
    resumed = predict(slide, pack, tmp_path / "preds", threads=1)
    reference = predict(slide, pack, tmp_path / "reference", threads=1)
    assert resumed.complete
    np.testing.assert_array_equal(resumed.tile_class[:], reference.tile_class[:])


def test_import_of_a_store_with_a_corrupt_chunk(store, project):
    p, image_id = project
    for chunk in (store.path / "tile_class" / "c").rglob("*"):
        if chunk.is_file():
            chunk.write_bytes(b"garbage" * 3)
    with pytest.raises(ProjectError, match="tile_class"):
        p.import_predictions(image_id, store.path)
    assert p.n_items(image_id) == 0


def test_import_of_a_store_with_broken_metadata(store, project):
    p, image_id = project
    (store.path / "zarr.json").write_text("{not json")
    with pytest.raises(ProjectError) as info:
        p.import_predictions(image_id, store.path)
    assert store.path.name in str(info.value)
    assert p.n_items(image_id) == 0


def test_import_of_a_store_made_for_another_image(store, project, tmp_path):
    p, _ = project
    other = p.add_image(write_tiff(tmp_path / "other.tif", blob_slide(96, 128, seed=2)), kind="wsi", mpp=0.5)
    with pytest.raises(ProjectError, match="other.tif"):
        p.import_predictions(other, store.path)
    assert p.n_items(other) == 0


def test_predict_resumes_over_a_store_with_broken_metadata(store, slide, pack):
    (store.path / "zarr.json").write_text("{not json")
    again = predict(slide, pack, store.path.parent, threads=1)
    assert again.complete and again.path == store.path
    assert (again.tile_class[:] >= 0).any()


@pytest.mark.parametrize("damage", ["deleted", "garbage"])
def test_export_when_the_image_is_gone(project, slide, tmp_path, damage):
    p, image_id = project
    cls = p.schema.add("tissue")
    (item,) = p.add_items(image_id, [{"level": "tile", "geometry": {"type": "tile", "row": 0, "col": 0,
                                                                     "size_px": 16}}])
    p.set_label(item, cls.id, "ana")
    slide.unlink()
    if damage == "garbage":
        slide.write_bytes(b"garbage" * 100)
    out = tmp_path / "export"
    with pytest.raises(ExportError) as info:
        export_project(p, out, ["csv", "imagefolder"], crop_px=16)
    assert str(slide) in str(info.value)
    assert (out / "_INCOMPLETE").exists() and not (out / "imagefolder").exists()


def test_export_of_a_missing_project(tmp_path):
    with pytest.raises(ProjectError, match="nope"):
        export_project(tmp_path / "nope", tmp_path / "out", ["csv"])
    assert not (tmp_path / "nope").exists()


def test_undecodable_field_is_not_presented_as_predicted(tmp_path, pack):
    import json

    import zarr

    from tests.io.conftest import write_fields

    paths = write_fields(tmp_path / "case", 3, height=64, width=96)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])
    result = predict(tmp_path / "case", pack, tmp_path / "preds", threads=1)
    group = zarr.open_group(str(result.path), mode="r")
    tile_class = np.asarray(group["tile_class"][...])
    assert (tile_class[0] >= 0).all() and (tile_class[2] >= 0).all()  # the readable fields are predicted
    recorded = "field_001.jpg" in json.dumps(dict(group.attrs))
    assert (tile_class[1] == -1).all() or recorded
