"""Published third-party ONNX models behind a cytoreview card: PaddleOCR's DB text detector and recogniser as
shipped in the ``rapidocr-onnxruntime`` wheel (read out of the wheel, never installed, never committed).

``CYTOREVIEW_RAPIDOCR_WHEEL`` may name a downloaded wheel; otherwise the pinned wheel is fetched once per session
with ``pip download --no-deps`` (PyPI only, as CI reaches it), and the tests skip cleanly where it cannot be fetched.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.pypi import downloaded

#: The wheel the card fixtures below were written for (its member names and output names).
RAPIDOCR = "rapidocr-onnxruntime==1.4.4"
WHEEL: str | None = None


@pytest.fixture(scope="module", autouse=True)
def rapidocr_wheel(tmp_path_factory):
    """The rapidocr-onnxruntime wheel: ``$CYTOREVIEW_RAPIDOCR_WHEEL`` or fetched (never installed, never committed)."""
    global WHEEL
    WHEEL = str(downloaded(RAPIDOCR, tmp_path_factory.mktemp("rapidocr-wheel"), "rapidocr_onnxruntime-*.whl",
                           env_var="CYTOREVIEW_RAPIDOCR_WHEEL"))
    return WHEEL


def _member(name_end: str, dest: Path) -> Path:
    with zipfile.ZipFile(WHEEL) as wheel:
        member = next(n for n in wheel.namelist() if n.endswith(name_end))
        dest.write_bytes(wheel.read(member))
    return dest


def _det_pack(tmp_path: Path) -> Path:
    folder = tmp_path / "db-text"
    folder.mkdir()
    _member("_det_infer.onnx", folder / "model.onnx")
    card = {
        "name": "db-text", "version": "4.0.0", "task": "segmentation",
        "description": "PaddleOCR v4 DB text detector (rapidocr-onnxruntime), a probability map ending in Sigmoid",
        "input": {"name": "x", "layout": "NCHW", "size_px": 320, "mpp": 0.5, "channel_order": "BGR",
                  "scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "multiple_of": 32,
                  "pad": "constant"},
        "outputs": {"probabilities": {"name": "sigmoid_0.tmp_0", "activation": "none", "threshold": 0.3},
                    "halo_px": 0},
        "cells": {"split": "none", "min_area_um2": 4.0},
        "classes": [{"id": 1, "name": "text", "color": "#ff00ff"}],
    }
    (folder / "cytoreview.yaml").write_text(yaml.safe_dump(card, allow_unicode=True))
    return folder


def _text_image(path: Path) -> tuple[Path, int]:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (900, 500), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=36)
    lines = ["cytology review 2026", "serous effusion", "Warthin tumour FNA", "atypical cells 12"]
    for i, text in enumerate(lines):
        draw.text((40 + 60 * (i % 2), 40 + 110 * i), text, fill="black", font=font)
    import tifffile

    per_cm = 1e4 / 0.5
    tifffile.imwrite(path, np.asarray(img), photometric="rgb", tile=(256, 256), resolution=(per_cm, per_cm),
                     resolutionunit=3)
    return path, len(lines)


def test_db_text_detector_runs_and_finds_instances(tmp_path):
    from cytoreview.inference import predict
    from cytoreview.models import load_pack
    from cytoreview.models.check import pack_problem

    pack = load_pack(_det_pack(tmp_path))
    assert pack_problem(pack) is None
    image, n_lines = _text_image(tmp_path / "text.tif")
    store = predict(image, pack, tmp_path / "out", threads=1, tissue_threshold=0.0)
    cells = store.cells()
    assert store.complete and len(cells["y_px"]) >= n_lines  # words or lines, one instance each at least
    # instances lie on the text rows
    assert all(np.min(np.abs(y - (40 + 110 * np.arange(n_lines) + 20))) < 40 for y in cells["y_px"])


def test_double_sigmoid_on_the_db_detector_is_refused(tmp_path):
    from cytoreview.errors import PackError
    from cytoreview.models import load_pack

    folder = _det_pack(tmp_path)
    card = yaml.safe_load((folder / "cytoreview.yaml").read_text())
    card["outputs"]["probabilities"]["activation"] = "sigmoid"
    (folder / "cytoreview.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(PackError, match="applied twice.*Sigmoid"):
        load_pack(folder).session()


def test_recogniser_classes_from_metadata_and_listed_as_broken(tmp_path):
    from cytoreview.models import load_pack
    from cytoreview.models.check import pack_problem

    folder = tmp_path / "ppocr-rec"
    folder.mkdir()
    _member("_rec_infer.onnx", folder / "model.onnx")
    card = {"name": "ppocr-rec", "version": "4.0.0", "task": "cell-classification",
            "input": {"name": "x", "layout": "NCHW", "size_px": 48, "mpp": 0.5},
            "outputs": {"probabilities": {"name": "softmax_11.tmp_0", "activation": "none"}},
            "classes_from_metadata": "character"}
    (folder / "cytoreview.yaml").write_text(yaml.safe_dump(card))
    pack = load_pack(folder)
    assert len(pack.classes) > 6000  # one class per character of the model's metadata
    problem = pack_problem(pack)  # a sequence output (N, T, C) is no per-cell class distribution
    assert problem is not None and "shape" in problem
