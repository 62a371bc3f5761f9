"""Flips between the base and the refit pack's predictions, and the ``cytoreview train`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cytoreview.cli import main
from cytoreview.errors import CytoreviewError
from cytoreview.inference import predict
from cytoreview.models import load_pack
from cytoreview.train import flips, refit
from cytoreview.train.flips import FLIP_COLUMNS

from .conftest import NAMES, tile_slide, write_tiff


def test_flips_are_the_tiles_whose_class_changed(project, base_pack, slide, tmp_path):
    path, truth = slide
    new = refit(project, base_pack, tmp_path / "new")
    a = predict(path, load_pack(base_pack), tmp_path / "pred", threads=1, readers=1)
    b = predict(path, new, tmp_path / "pred", threads=1, readers=1)
    df = flips(a, b.path)
    assert tuple(df.columns) == FLIP_COLUMNS
    ca, cb = np.asarray(a.tile_class[0]), np.asarray(b.tile_class[0])
    expected = {(r, c) for r, c in zip(*np.nonzero((ca >= 0) & (cb >= 0) & (ca != cb)))}
    assert {(r, c) for r, c in zip(df["row"], df["col"])} == expected
    assert len(df) > 5
    # red and green swap; blue does not flip
    assert set(df["old"]) | set(df["new"]) <= {"red", "green"}
    for _, row in df.iterrows():
        assert row["new"] == NAMES[truth[row["row"], row["col"]]]
        assert row["y0"] == row["row"] * a.tile_px_level0
        assert row["old_prob"] == pytest.approx(float(a.tile_prob[0, row["row"], row["col"], row["old_class"]]))
    assert list(df["new_prob"]) == sorted(df["new_prob"], reverse=True)
    assert flips(a, a).empty


def test_flips_refuse_other_images_and_grids(base_pack, slide, tmp_path):
    path, _ = slide
    arr, _ = tile_slide(n_rows=4, n_cols=4, seed=5)
    other = write_tiff(tmp_path / "other.tif", arr)
    a = predict(path, load_pack(base_pack), tmp_path / "p", threads=1, readers=1)
    b = predict(other, load_pack(base_pack), tmp_path / "p", threads=1, readers=1)
    with pytest.raises(CytoreviewError, match="different images"):
        flips(a, b)
    with pytest.raises(CytoreviewError, match="not a prediction store"):
        flips(a, tmp_path / "nothing.zarr")


def test_cli_train(project, base_pack, tmp_path, capsys):
    out = tmp_path / "cli-pack"
    assert main(["train", str(project.folder), "--base", str(base_pack), "--out", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "wrote tiny-tiles@1.1.0" in text and "held-out" in text and "accuracy" in text
    assert load_pack(out).card["provenance"]["parent"] == "tiny-tiles@1.0.0"
    out2 = tmp_path / "cli-json"
    assert main(["train", str(project.folder), "--base", str(base_pack), "--out", str(out2), "-q", "--json",
                 "--name", "tiny-json"]) == 0  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert data["pack"] == "tiny-json@1.0.0" and data["metrics"]["accuracy"] >= 0.9


def test_cli_errors_exit_2_with_one_line(project, base_pack, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "x").write_text("x")
    assert main(["train", str(project.folder), "--base", str(base_pack), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not empty" in err
    assert main(["train", str(tmp_path / "nope.csv"), "--base", str(base_pack), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
