"""Export into places that cannot take it: one ExportError naming the path, no half-written file looking complete."""

from __future__ import annotations

import errno
import json
import pathlib

import pandas as pd
import pytest

from tests.export.conftest import field_image, images, table, wsi_image  # noqa: F401 - fixtures

from cytoreview.errors import ExportError
from cytoreview.export import export_labels

FORMATS = ["csv", "geojson", "coco", "imagefolder"]


def _check_no_half_files(out: pathlib.Path) -> None:
    """Every file that exists under ``out`` is complete: JSON parses, CSV parses, no temporary left behind."""
    for path in out.rglob("*"):
        assert ".partial" not in path.name, f"temporary left behind: {path}"
        if path.is_file() and path.suffix in (".json", ".geojson"):
            json.loads(path.read_text("utf-8"))
        elif path.is_file() and path.suffix == ".csv":
            pd.read_csv(path)


def test_out_dir_under_a_file(tmp_path, table, images):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("I am a file")
    out = blocker / "export"
    with pytest.raises(ExportError) as info:
        export_labels(table, out, FORMATS, images=images)
    assert str(out) in str(info.value) or str(blocker) in str(info.value)
    assert blocker.read_text() == "I am a file"


def test_out_dir_is_a_file(tmp_path, table, images):
    out = tmp_path / "export"
    out.write_text("occupied")
    with pytest.raises(ExportError, match="export"):
        export_labels(table, out, ["csv"], images=images)
    assert out.read_text() == "occupied"


def _full_disk_in_stream(monkeypatch, target: str, module, after_bytes: int = 200):
    """Make ``open`` in ``module`` (the streamed writers write feature by feature) fail with ENOSPC once a file whose
    path contains ``target`` has taken ``after_bytes``."""
    real_open = open

    class Filling:
        def __init__(self, fh, path):
            self.fh, self.path, self.written = fh, path, 0

        def write(self, text):
            if self.written + len(text) > after_bytes:
                self.fh.write(text[: max(0, after_bytes - self.written)])
                raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
            self.written += len(text)
            return self.fh.write(text)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def filling_open(path, *args, **kwargs):
        fh = real_open(path, *args, **kwargs)
        return Filling(fh, path) if target in str(path) else fh

    monkeypatch.setattr(module, "open", filling_open, raising=False)


@pytest.mark.parametrize("fmt, target, final", [
    ("coco", "instances.json", "coco/instances.json"),
    ("geojson", ".geojson", None),
    ("csv", "labels.csv", "labels.csv"),
])
def test_full_disk_mid_write(tmp_path, table, images, monkeypatch, fmt, target, final):
    out = tmp_path / "export"
    import importlib

    # all three are streamed to their files (the CSV by cytoreview.export.csvtext): the disk fills part-way through
    module = importlib.import_module(f"cytoreview.export.{'csvtext' if fmt == 'csv' else fmt}")
    _full_disk_in_stream(monkeypatch, target, module)
    with pytest.raises(ExportError) as info:
        export_labels(table, out, [fmt], images=images)
    message = str(info.value)
    assert "disk is full" in message and target.strip(".") in message, message
    assert (out / "_INCOMPLETE").exists()
    if final:
        assert not (out / final).exists()
    assert not (out / "export.json").exists()
    _check_no_half_files(out)
    monkeypatch.undo()
    export_labels(table, out, [fmt], images=images)  # a re-run completes
    assert not (out / "_INCOMPLETE").exists()
    _check_no_half_files(out)


def test_full_disk_while_writing_crops(tmp_path, table, images, monkeypatch):
    from PIL import Image as PILImage

    out = tmp_path / "export"
    export_labels(table, out, ["csv", "imagefolder"], images=images)  # a complete earlier export
    before = {p.relative_to(out): p.read_bytes() for p in (out / "imagefolder").rglob("*") if p.is_file()}
    csv_before = (out / "labels.csv").read_bytes()
    original, calls = PILImage.Image.save, []

    def save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 3:
            pathlib.Path(fp).write_bytes(b"\x89PNG\r\n")  # the disk filled up mid-file
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, fp, *args, **kwargs)

    monkeypatch.setattr(PILImage.Image, "save", save)
    with pytest.raises(ExportError, match="disk is full") as info:
        export_labels(table, out, ["csv", "imagefolder"], images=images)
    assert "imagefolder" in str(info.value)
    assert (out / "_INCOMPLETE").exists()
    after = {p.relative_to(out): p.read_bytes() for p in (out / "imagefolder").rglob("*") if p.is_file()}
    assert after == before  # the earlier complete ImageFolder is untouched, no half PNG inside it
    assert len(pd.read_csv(out / "labels.csv")) == len(pd.read_csv(pd.io.common.BytesIO(csv_before)))
    _check_no_half_files(out)
