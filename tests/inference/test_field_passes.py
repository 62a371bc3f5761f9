"""Cells and pixel pyramid of a field set made from the predictor's buffers while the model runs on (one field at a
time, as its last row comes in) against the same passes read back from the store: the same cells and the same
pyramid, and a cancelled run resumed to the same store -- real onnxruntime sessions of a tiny graph."""

from __future__ import annotations

import threading

import numpy as np
import zarr

from tests.inference.test_cells import cells_image
from tests.models.onnx_graphs import foreground_graph, segmentation_card, write_pack

from cytoreview.inference import predict
from cytoreview.inference.instances import cells_from_store
from cytoreview.inference.pyramid import PixelPyramid, build_pixel_pyramid
from cytoreview.io.image import Image
from cytoreview.models import load_pack


def _fields(tmp_path, n_fields=6):
    planes = np.stack([cells_image(seed, shape=(70, 100), n=6, touching=1)[0] for seed in range(n_fields)])
    planes[3] = 235  # a field without cells
    return Image(path=tmp_path / "case", kind="fields", levels=[planes], mpp=0.5, reader="test")


def _pack(tmp_path):
    outputs = {"probabilities": {"name": "probs", "activation": "sigmoid", "threshold": 0.3},
               "boundary": {"name": "boundary", "activation": "none"}, "markers": {"name": "markers"}, "halo_px": 1}
    card = segmentation_card("mk", size_px=24, outputs=outputs, cells={"split": "markers", "min_area_um2": 5.0})
    return load_pack(write_pack(tmp_path / "mk", card, foreground_graph, boundary=True, markers=True))


def _walk(group, prefix=""):
    for name, node in group.members():
        if isinstance(node, zarr.Array):
            yield prefix + name, np.asarray(node[...])
        else:
            yield from _walk(node, f"{prefix}{name}/")


def _store_arrays(store) -> dict:
    return dict(_walk(zarr.open_group(str(store.path), mode="r")))


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)  # NaN == NaN; exact bits otherwise


def test_fields_done_from_memory_match_the_passes_read_back(tmp_path, monkeypatch):
    read_back = []
    original = PixelPyramid.from_store
    monkeypatch.setattr(PixelPyramid, "from_store",
                        lambda self, fields: (read_back.append(list(fields)), original(self, fields))[1])
    pack = _pack(tmp_path)
    store = predict(_fields(tmp_path), pack, tmp_path / "out", threads=1, batch_size=4)
    assert store.complete and read_back == [[]]  # every field was done from the buffers, none read back
    assert not [t.name for t in threading.enumerate() if t.name.startswith("cytoreview-")]
    group = zarr.open_group(str(store.path), mode="r+")
    assert "markers" in group and "boundary" in group  # the card's alternative split can be run on the store later
    ours = store.cells()
    assert len(ours["y_px"]) > 20 and set(np.unique(ours["field"]).tolist()) == {0, 1, 2, 4, 5}
    again, _ = cells_from_store(group, pack.card, pack.classes, out_px=22)
    assert again.keys() <= ours.keys()
    for key in again:
        np.testing.assert_array_equal(again[key], ours[key], err_msg=key)
    pyramid = {k: v for k, v in _store_arrays(store).items() if k.startswith("pixels/")}
    build_pixel_pyramid(group, pack.classes)
    assert (pyramid["pixels/labels/0"] == 1).sum() > 100
    _assert_same({k: v for k, v in _store_arrays(store).items() if k.startswith("pixels/")}, pyramid)


def test_a_cancelled_field_set_resumes_to_the_same_store(tmp_path):
    pack = _pack(tmp_path)
    image = _fields(tmp_path)
    reference = _store_arrays(predict(image, pack, tmp_path / "ref", threads=1, batch_size=4))
    cancel = threading.Event()

    def stop_midway(done, total):
        if done >= total // 2:
            cancel.set()

    partial = predict(image, pack, tmp_path / "out", threads=1, batch_size=4, progress=stop_midway, cancel=cancel)
    assert not partial.complete and partial.done[:].any() and not partial.done[:].all()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("cytoreview-")]
    resumed = predict(image, pack, tmp_path / "out", threads=1)
    assert resumed.complete
    _assert_same(_store_arrays(resumed), reference)
