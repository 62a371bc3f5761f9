import json

from cytoreview.cli import main


def test_info_json(pyramid_tif, capsys):
    assert main(["info", str(pyramid_tif), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "wsi" and summary["reader"] == "tifffile"
    assert summary["levels"] == [[1024, 1536], [512, 768], [256, 384]]
    assert summary["mpp"] == 0.5


def test_info_text_fields(field_folder, capsys):
    assert main(["info", str(field_folder)]) == 0
    out = capsys.readouterr().out
    assert "fields:   5" in out and "0.293" in out


def test_info_error_is_one_line_nonzero(tmp_path, capsys):
    bad = tmp_path / "x.svs"
    bad.write_bytes(b"nope")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.svs" in err[0]
