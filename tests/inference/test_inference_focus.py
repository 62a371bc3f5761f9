"""``predict --focus``: a focus-stack field set predicted on its all-in-focus plane (or one chosen plane)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage
from tests.models.onnx_graphs import base_card, classifier_graph, write_pack

import cytoreview.cli
from cytoreview.inference import PredictionStore, predict
from cytoreview.io import open_image
from cytoreview.models import load_pack
from cytoreview.samples.focus_stack import defocus_stack, region_plane_map

from .conftest import blob_slide


@pytest.fixture
def cli(monkeypatch, tmp_path):
    monkeypatch.delenv("CYTOREVIEW_MODEL_PATH", raising=False)
    monkeypatch.setattr("cytoreview._paths.bundled_dir", lambda name: tmp_path / "no-bundled")
    return cytoreview.cli.main


@pytest.fixture
def stack(tmp_path):
    folder = tmp_path / "stack"
    folder.mkdir()
    for f in range(2):
        sharp = blob_slide(96, 128, seed=f)
        for z, plane in enumerate(defocus_stack(sharp, region_plane_map(sharp.shape[:2], 3, rows=2, cols=2), 3)):
            PILImage.fromarray(plane).save(folder / f"field_{f}_z{z}.png")
    (folder / "cytoscan.json").write_text(json.dumps({"mpp": 0.5}))
    return folder


def test_predict_focus_edf_from_the_cli(cli, stack, tmp_path, capsys):
    pack_dir = write_pack(tmp_path / "packs" / "colours", base_card("colours"), classifier_graph)
    code = cli(["predict", str(stack), "--model", str(pack_dir), "--out", str(tmp_path / "out"), "--focus", "edf",
                "--threads", "1", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    store = PredictionStore(captured.out.strip())
    assert store.complete and store.attrs["focus"] == "edf"
    reference = predict(open_image(stack, focus="edf"), load_pack(pack_dir), tmp_path / "ref", threads=1)
    np.testing.assert_array_equal(store.tile_class[:], reference.tile_class[:])
    np.testing.assert_allclose(store.tile_prob[:], reference.tile_prob[:], rtol=1e-6)
    plane = predict(stack, load_pack(pack_dir), tmp_path / "plane", threads=1, focus=0)
    assert plane.attrs["focus"] == "0"


def test_predict_bad_focus_is_one_line(cli, stack, tmp_path, capsys):
    pack_dir = write_pack(tmp_path / "packs" / "colours", base_card("colours"), classifier_graph)
    assert cli(["predict", str(stack), "--model", str(pack_dir), "--out", str(tmp_path / "o"), "--focus", "sharp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "focus 'sharp' is not 'edf', 'best' or a focus-plane number" in err[0]
    assert cli(["predict", str(stack), "--model", str(pack_dir), "--out", str(tmp_path / "o"), "--focus", "7"]) == 2
    assert "focus plane 7 out of range" in capsys.readouterr().err
