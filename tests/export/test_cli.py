"""The ``cytoreview export`` subcommand (with a stand-in Project until the review branch lands)."""

import argparse
import sys
import types

import pandas as pd
import pytest

from cytoreview.export import cli


def _parser():
    parser = argparse.ArgumentParser(prog="cytoreview")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub)
    return parser


def test_cli_exports_through_project(table, field_image, wsi_image, tmp_path, monkeypatch, capsys):
    opened = {}

    class FakeProject:
        schema = types.SimpleNamespace(classes=[])

        @classmethod
        def open(cls, folder):
            opened["folder"] = folder
            return cls()

        def label_table(self):
            return table

    monkeypatch.setitem(sys.modules, "cytoreview.review", types.SimpleNamespace(Project=FakeProject))
    (tmp_path / "proj").mkdir()
    args = _parser().parse_args(
        ["export", str(tmp_path / "proj"), "--format", "csv,geojson", "--out", str(tmp_path / "out"),
         "--select", "all", "--split", "0.5,0.5", "-q"]
    )  # fmt: skip
    assert args.func(args) == 0
    assert opened["folder"] == tmp_path / "proj"
    printed = capsys.readouterr().out
    assert "csv\t" in printed and "geojson\t" in printed
    frame = pd.read_csv(tmp_path / "out" / "labels.csv")
    assert len(frame) == 10 and set(frame["split"]) <= {"train", "validation"}


def test_cli_rejects_bad_format_and_split(tmp_path):
    from cytoreview.errors import ExportError

    parser = _parser()
    args = parser.parse_args(["export", str(tmp_path), "--format", "pdf", "--out", str(tmp_path / "o")])
    with pytest.raises(ExportError, match="pdf"):
        args.func(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["export", str(tmp_path), "--split", "a,b", "--out", "x"])
