import json

import numpy as np
import pytest
import tifffile

from cytoreview.errors import ImageReadError
from cytoreview.io import fields as fields_module
from cytoreview.io import open_image

from .conftest import tissue_like, write_fields


def test_field_folder_is_one_lazy_stack(field_folder):
    image = open_image(field_folder)
    assert image.kind == "fields" and image.shape == (5, 60, 96, 3)
    assert image.mpp == pytest.approx(0.293) and image.mpp_source.startswith("default")
    assert image.field_names == [f"field_{i:03d}.jpg" for i in range(5)]
    region = image.read_region(10, 20, 16, 16, field=3)
    decoded = np.asarray(fields_module.decode_field(field_folder / "field_003.jpg"))
    np.testing.assert_array_equal(region, decoded[10:26, 20:36])


def test_natural_order_and_file_list(tmp_path):
    paths = write_fields(tmp_path / "c", 3, names=["f10.png", "f2.png", "f1.png"])
    image = open_image(tmp_path / "c")
    assert image.field_names == ["f1.png", "f2.png", "f10.png"]
    image2 = open_image(paths[:2])
    assert image2.n_fields == 2


def test_500_fields_open_without_decoding(tmp_path, monkeypatch):
    folder = tmp_path / "many"
    write_fields(folder, 1)
    payload = (folder / "field_000.jpg").read_bytes()
    for i in range(1, 500):
        (folder / f"field_{i:03d}.jpg").write_bytes(payload)
    calls = []
    original = fields_module.decode_field
    monkeypatch.setattr(fields_module, "decode_field", lambda *a, **k: calls.append(a) or original(*a, **k))
    image = open_image(folder)
    assert image.shape == (500, 60, 96, 3)
    assert calls == []
    np.asarray(image.levels[0][123])
    assert [c[0].name for c in calls] == ["field_123.jpg"]


def test_sidecar_sets_pixel_size(field_folder):
    (field_folder / "cytoscan.json").write_text(json.dumps({"mpp": 0.21, "case_id": "C-7"}))
    image = open_image(field_folder)
    assert image.mpp == pytest.approx(0.21) and image.mpp_source == "sidecar"
    assert image.metadata["case_id"] == "C-7"


def test_focus_planes_from_file_names(tmp_path):
    names = [f"field_{f}_z{z}.jpg" for f in range(3) for z in range(4)]
    write_fields(tmp_path / "z", len(names), names=names)
    image = open_image(tmp_path / "z")
    assert image.shape == (3, 4, 60, 96, 3) and image.n_z == 4
    expected = fields_module.decode_field(tmp_path / "z" / "field_2_z1.jpg")
    np.testing.assert_array_equal(image.read_region(0, 0, 60, 96, field=2, z=1), expected)


def test_focus_planes_from_multipage_tiff(tmp_path):
    folder = tmp_path / "mp"
    folder.mkdir()
    for f in range(2):
        tifffile.imwrite(folder / f"f{f}.tif", np.stack([tissue_like(40, 50, seed=10 * f + z) for z in range(3)]),
                         photometric="rgb")
    image = open_image(folder)
    assert image.shape == (2, 3, 40, 50, 3)
    np.testing.assert_array_equal(image.read_region(0, 0, 40, 50, field=1, z=2), tissue_like(40, 50, seed=12))


def test_mixed_sizes_keep_majority_and_name_the_odd_file(tmp_path):
    folder = tmp_path / "mixed"
    write_fields(folder, 3)
    write_fields(folder, 1, height=80, names=["odd.jpg"])
    image = open_image(folder)
    assert image.n_fields == 3
    assert any("odd.jpg" in w and "differs" in w for w in image.warnings)


def test_corrupt_field_is_reported_and_rest_opens(field_folder):
    (field_folder / "field_001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    data = (field_folder / "field_002.jpg").read_bytes()
    (field_folder / "field_002.jpg").write_bytes(data[: len(data) // 3])  # truncated: header fine, pixels cut
    (field_folder / "empty.png").write_bytes(b"")
    image = open_image(field_folder)
    assert "field_000.jpg" in image.field_names and "field_003.jpg" in image.field_names
    assert any("field_001.jpg" in w for w in image.warnings)
    assert any("empty.png" in w and "empty file" in w for w in image.warnings)
    if "field_002.jpg" in image.field_names:  # header intact: pixels decode partially or blank, never raise
        pixels = np.asarray(image.levels[0][image.field_names.index("field_002.jpg")])
        assert pixels.shape == (60, 96, 3)
    else:
        assert any("field_002.jpg" in w for w in image.warnings)
    for index in range(image.n_fields):
        assert np.asarray(image.levels[0][index]).shape == (60, 96, 3)


def test_unreadable_only_field_is_error(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"junk")
    with pytest.raises(ImageReadError, match="a.jpg"):
        open_image(folder)


def test_undecodable_pixels_show_blank_with_warning(tmp_path, monkeypatch):
    folder = tmp_path / "c"
    write_fields(folder, 2)

    def broken(path, page=0, notes=None):
        raise OSError("decoder exploded")

    image = open_image(folder)
    monkeypatch.setattr(fields_module, "decode_field", broken)
    pixels = np.asarray(image.levels[0][0])
    assert (pixels == 255).all()
    assert any("decoder exploded" in w for w in image.warnings)


def test_empty_folder_is_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no field images"):
        open_image(tmp_path / "empty")


def test_single_field_file_opens_as_one_field(tmp_path):
    path = write_fields(tmp_path, 1)[0]
    image = open_image(path)
    assert image.kind == "fields" and image.n_fields == 1


def test_implausible_sidecar_pixel_size_is_refused(field_folder):
    (field_folder / "cytoscan.json").write_text(json.dumps({"mpp": 293}))
    with pytest.raises(ImageReadError, match="cytoscan.json: mpp 293"):
        open_image(field_folder)


def test_field_index_out_of_range_is_clear_error(field_folder):
    image = open_image(field_folder)
    with pytest.raises(ImageReadError, match="field 7 out of range"):
        image.read_region(0, 0, 4, 4, field=7)
