"""Pack discovery and loading: ONNX only, by name / folder / file, from plugins, env and extra folders."""

from __future__ import annotations

import pytest
from tests.models.onnx_graphs import base_card, classifier_graph, write_pack

from cytoreview.errors import PackError
from cytoreview.models import find_packs, load_pack
from cytoreview.models.pack import PackWarning


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("CYTOREVIEW_MODEL_PATH", raising=False)
    # keep discovery to the test folders, whatever is bundled in plugins/
    monkeypatch.setattr("cytoreview._paths.bundled_dir", lambda name: tmp_path / "no-bundled")


def test_load_by_folder_card_and_onnx(make_pack):
    folder = make_pack("alpha")
    for ref in (folder, folder / "cytoreview.yaml", folder / "model.onnx", str(folder)):
        pack = load_pack(ref)
        assert (pack.name, pack.version, pack.task) == ("alpha", "1.0.0", "tile-classification")
        assert pack.onnx_path == (folder / "model.onnx").resolve()
        assert [c["name"] for c in pack.classes] == ["red", "green", "blue"]
        assert pack.ref == "alpha@1.0.0" and pack.mpp == 0.5 and pack.size_px == 16


def test_find_packs_from_env_and_extra_dirs(tmp_path, monkeypatch):
    env_dir, extra_dir = tmp_path / "env", tmp_path / "extra"
    write_pack(env_dir / "a", base_card("a"))
    write_pack(env_dir / "a2", base_card("a", version="1.10.0"))
    write_pack(env_dir / "a3", base_card("a", version="1.9.0"))
    write_pack(extra_dir, base_card("b"))  # a folder that is itself a pack
    monkeypatch.setenv("CYTOREVIEW_MODEL_PATH", f"{env_dir}{__import__('os').pathsep}{tmp_path / 'missing'}")
    packs = find_packs([extra_dir])
    assert [p.ref for p in packs] == ["a@1.0.0", "a@1.9.0", "a@1.10.0", "b@1.0.0"]
    assert load_pack("a").version == "1.10.0"  # newest by numeric version
    assert load_pack("a@1.9.0").version == "1.9.0"
    with pytest.raises(PackError, match=r"no model pack named 'c' \(available: a@1.0.0, a@1.10.0, a@1.9.0"):
        load_pack("c")


def test_bundled_plugins_are_found(tmp_path, monkeypatch):
    write_pack(tmp_path / "bundled" / "warthin-tiles", base_card("warthin-tiles"))
    monkeypatch.setattr("cytoreview._paths.bundled_dir", lambda name: tmp_path / "bundled")
    assert [p.name for p in find_packs()] == ["warthin-tiles"]


def test_invalid_pack_is_skipped_with_a_message(tmp_path):
    write_pack(tmp_path / "d" / "good", base_card("good"))
    write_pack(tmp_path / "d" / "bad", base_card("bad", input={"layout": "CHW"}))
    errors: list[str] = []
    assert [p.name for p in find_packs([tmp_path / "d"], errors=errors)] == ["good"]
    assert len(errors) == 1 and "input.layout: 'CHW' is not one of NCHW, NHWC" in errors[0]
    with pytest.warns(PackWarning, match="input.layout"):
        find_packs([tmp_path / "d"])


@pytest.mark.parametrize("suffix", [".pt", ".pkl", ".joblib", ".pth"])
def test_non_onnx_models_are_refused(tmp_path, suffix):
    folder = write_pack(tmp_path / "p", base_card("p"), graph_fn=None)
    weights = folder / f"model{suffix}"
    weights.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(PackError, match=rf"only ONNX models are loaded; found model\{suffix}"):
        load_pack(folder)
    with pytest.raises(PackError, match=rf"only ONNX models are loaded, not \{suffix} files"):
        load_pack(weights)


def test_missing_or_ambiguous_onnx(tmp_path):
    folder = write_pack(tmp_path / "p", base_card("p"), graph_fn=None)
    with pytest.raises(PackError, match="no model.onnx in this pack"):
        load_pack(folder)
    classifier_graph(folder / "a.onnx")
    classifier_graph(folder / "b.onnx")
    with pytest.raises(PackError, match="several ONNX files"):
        load_pack(folder)
    card = base_card("p", model_file="b.onnx")
    write_pack(folder, card, graph_fn=None)
    assert load_pack(folder).onnx_path.name == "b.onnx"


def test_corrupt_onnx_is_a_pack_error(tmp_path):
    folder = write_pack(tmp_path / "p", base_card("p"), graph_fn=None)
    (folder / "model.onnx").write_bytes(b"garbage")
    pack = load_pack(folder)
    with pytest.raises(PackError, match="cannot be loaded by onnxruntime"):
        pack.session()


def test_classes_from_onnx_metadata(tmp_path):
    card = base_card("meta", classes=None)
    folder = write_pack(
        tmp_path / "m", card, classifier_graph, metadata={"classes": '["Plattenepithel", "Drüse", "x"]'}
    )
    pack = load_pack(folder)
    assert [c["name"] for c in pack.classes] == ["Plattenepithel", "Drüse", "x"]
    folder2 = write_pack(tmp_path / "n", base_card("nometa", classes=None), classifier_graph)
    with pytest.raises(PackError, match="classes: missing, and model.onnx has no 'classes' entry"):
        load_pack(folder2)


def test_not_a_pack_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackError, match="not a model pack"):
        load_pack(tmp_path / "empty")
    with pytest.raises(PackError, match="no such model pack"):
        load_pack(tmp_path / "nothing" / "model.onnx")


def test_models_cli_lists_a_pack_that_cannot_run_as_broken(tmp_path, capsys):
    """A card whose halo does not match its graph loads, but cannot run: listed BROKEN with the reason."""
    from tests.models.onnx_graphs import foreground_graph, segmentation_card

    from cytoreview.cli import main

    write_pack(tmp_path / "packs" / "good", segmentation_card("good"), foreground_graph)
    write_pack(tmp_path / "packs" / "halo", segmentation_card("halo", halo_px=3), foreground_graph)
    assert main(["models", "--path", str(tmp_path / "packs")]) == 0
    captured = capsys.readouterr()
    rows = {line.split()[0]: line for line in captured.out.splitlines()[1:]}
    assert " ok " in rows["good"] and "BROKEN" in rows["halo"]
    assert "broken pack halo@1.0.0" in captured.err and "shape" in captured.err
