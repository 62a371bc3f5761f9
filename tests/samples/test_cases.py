"""Case accessors: bundled copy first, else atomic generation into the cache."""

import pytest

from cytoreview.samples.cases import ensure_generated


def test_bundled_cases_are_used():
    from cytoreview._paths import bundled_dir
    from cytoreview.samples import effusion_case, warthin_case

    assert warthin_case() == bundled_dir("sample_data") / "warthin_fna"
    assert effusion_case() == bundled_dir("sample_data") / "serous_effusion"


def _writer(calls, fail_after_first_file=False):
    def build(folder):
        calls.append(folder)
        (folder / "field_000.jpg").write_bytes(b"x")
        if fail_after_first_file:
            raise KeyboardInterrupt("killed mid-generation")
        (folder / "cytoscan.json").write_text("{}")

    return build


def test_generation_is_atomic(tmp_path):
    final = tmp_path / "cache" / "case"
    calls = []
    with pytest.raises(KeyboardInterrupt):
        ensure_generated(final, _writer(calls, fail_after_first_file=True), "cytoscan.json")
    assert not final.exists()
    assert list((tmp_path / "cache").iterdir()) == []  # no half case, no temp folder left
    assert ensure_generated(final, _writer(calls), "cytoscan.json") == final
    assert (final / "cytoscan.json").is_file() and (final / "field_000.jpg").is_file()
    assert ensure_generated(final, _writer(calls), "cytoscan.json") == final
    assert len(calls) == 2  # the complete case is reused, not rebuilt
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["case"]


def test_incomplete_leftover_is_replaced(tmp_path):
    final = tmp_path / "case"
    final.mkdir()
    (final / "field_000.jpg").write_bytes(b"half")
    ensure_generated(final, _writer([]), "cytoscan.json")
    assert (final / "cytoscan.json").is_file()


def test_case_generated_into_out_dir(tmp_path, monkeypatch):
    """With out_dir, a small slide case is generated there once and then reused."""
    from cytoreview.samples import cases
    from cytoreview.samples.lymph_node import make_lymph_node_slide

    made = []

    def fake_make(out_path, size_px=16384, seed=0):
        made.append(out_path)
        return make_lymph_node_slide(out_path, size_px=1024, seed=seed)

    monkeypatch.setattr("cytoreview.samples.lymph_node.make_lymph_node_slide", fake_make)
    path = cases.lymph_node_slide(out_dir=tmp_path)
    assert path == tmp_path / "lymph_node" / "lymph_node.tif" and path.is_file()
    assert (path.parent / "lymph_node.json").is_file()
    assert cases.lymph_node_slide(out_dir=tmp_path) == path
    assert len(made) == 1
