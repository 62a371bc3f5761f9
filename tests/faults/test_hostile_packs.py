"""Hostile packs: files outside the pack folder, absurd patch sizes and pixel sizes, class names with control
characters. Each is refused when the pack loads (PackError naming the card and key; exit 2 on the CLI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.faults.conftest import child_env
from tests.inference.conftest import blob_slide, write_tiff
from tests.models.onnx_graphs import base_card, classifier_graph, write_pack

from cytoreview.errors import PackError
from cytoreview.inference import predict
from cytoreview.inference.grid import ResolutionError
from cytoreview.models import load_pack


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cytoreview.cli", *map(str, args)], capture_output=True, text=True,
                          env=child_env(), timeout=120)


def _exit2_one_line(result, *words):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.fixture
def slide(tmp_path):
    return write_tiff(tmp_path / "slide.tif", blob_slide(96, 128, seed=1))


@pytest.fixture
def outside_model(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return classifier_graph(elsewhere / "x.onnx")


@pytest.mark.parametrize("how", ["dotdot", "absolute", "nested-dotdot"])
def test_model_file_outside_the_pack_is_refused(tmp_path, outside_model, slide, how):
    model_file = {"dotdot": "../elsewhere/x.onnx", "absolute": str(outside_model),
                  "nested-dotdot": "sub/../../elsewhere/x.onnx"}[how]
    folder = write_pack(tmp_path / "pack", base_card("escape", model_file=model_file), graph_fn=None)
    (folder / "sub").mkdir()
    with pytest.raises(PackError, match="model_file") as info:
        load_pack(folder)
    assert "outside the pack folder" in str(info.value) or "absolute path" in str(info.value)
    out = tmp_path / "out"
    _exit2_one_line(_cli("predict", slide, "--model", folder, "--out", out, "--quiet"), "model_file")
    assert not out.exists() or not any(out.iterdir())


def test_model_symlink_out_of_the_pack_is_refused(tmp_path, outside_model):
    folder = write_pack(tmp_path / "pack", base_card("linked"), graph_fn=None)
    os.symlink(outside_model, folder / "model.onnx")
    with pytest.raises(PackError, match="outside the pack folder"):
        load_pack(folder)
    folder2 = write_pack(tmp_path / "pack2", base_card("linked2", model_file="inner/model.onnx"), graph_fn=None)
    os.symlink(outside_model.parent, folder2 / "inner")  # a linked folder leads out just the same
    with pytest.raises(PackError, match="outside the pack folder"):
        load_pack(folder2)


def test_model_file_in_a_subfolder_of_the_pack_loads(tmp_path):
    folder = write_pack(tmp_path / "pack", base_card("nested", model_file="weights/m.onnx"), graph_fn=None)
    (folder / "weights").mkdir()
    classifier_graph(folder / "weights" / "m.onnx")
    assert load_pack(folder).onnx_path == (folder / "weights" / "m.onnx").resolve()


@pytest.mark.parametrize(
    "inp, key",
    [({"size_px": 30000}, "input.size_px"), ({"mpp": 1e9}, "input.mpp"), ({"mpp": float("inf")}, "input.mpp"),
     ({"mpp": float("nan")}, "input.mpp"), ({"mpp": 0.0}, "input.mpp"), ({"mpp": 1e-9}, "input.mpp"),
     ({"scale": float("nan")}, "input.scale"), ({"std": [1.0, float("inf"), 1.0]}, "input.std[1]")],
    ids=["size30000", "mpp1e9", "mpp-inf", "mpp-nan", "mpp0", "mpp1e-9", "scale-nan", "std-inf"],
)
def test_absurd_card_ranges_are_refused_at_load(tmp_path, inp, key):
    folder = write_pack(tmp_path / "pack", base_card("absurd", input=inp))
    with pytest.raises(PackError) as info:
        load_pack(folder)
    message = str(info.value)
    assert key in message and "cytoreview.yaml" in message, message


def test_absurd_card_on_the_cli_exits_2(tmp_path, slide):
    folder = write_pack(tmp_path / "pack", base_card("absurd-cli", input={"mpp": float("inf")}))
    _exit2_one_line(_cli("predict", slide, "--model", folder, "--out", tmp_path / "out", "--quiet"), "input.mpp")


def test_patch_larger_than_the_image_is_refused(tmp_path, slide):
    pack = load_pack(write_pack(tmp_path / "pack", base_card("big-patch", input={"size_px": 512, "mpp": 2.0}), size_px=512))
    with pytest.raises(ResolutionError, match="larger than the whole image"):
        predict(slide, pack, tmp_path / "out", threads=1)
    _exit2_one_line(_cli("predict", slide, "--model", pack.path, "--out", tmp_path / "out2", "--quiet"),
                    "larger than the whole image")


@pytest.mark.parametrize("name", ["bad\x00name", "esc\x1b[31mred", "two\nlines", "tab\there", "c1\x9b31m"],
                         ids=["nul", "esc", "newline", "tab", "c1"])
def test_class_names_with_control_characters_are_refused_at_card_load(tmp_path, name):
    card = base_card("ctrl")
    card["classes"][1]["name"] = name
    folder = write_pack(tmp_path / "pack", card)
    with pytest.raises(PackError, match=r"classes\[1\]\.name.*control characters"):
        load_pack(folder)


def test_class_names_with_control_characters_in_onnx_metadata_are_refused(tmp_path):
    import json

    card = base_card("ctrl-meta", classes=None)
    folder = write_pack(tmp_path / "pack", card, metadata={"classes": json.dumps(["ok", "bad\x1bname", "x"])})
    with pytest.raises(PackError, match="control characters"):
        load_pack(folder)
