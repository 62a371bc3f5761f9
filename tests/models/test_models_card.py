"""Card schema and validation: every bad key is named in the error."""

from __future__ import annotations

import pytest
import yaml
from tests.models.onnx_graphs import base_card

from cytoreview.errors import PackError
from cytoreview.models.card import classes_from_metadata, load_card, validate_card


def _write(tmp_path, card) -> str:
    path = tmp_path / "cytoreview.yaml"
    path.write_text(yaml.safe_dump(card, allow_unicode=True), "utf-8")
    return path


def test_valid_card_gets_defaults(tmp_path):
    card = base_card()
    del card["input"]["channel_order"], card["input"]["mean"], card["input"]["std"], card["input"]["scale"]
    del card["outputs"]["probabilities"]["activation"]
    for cls in card["classes"]:
        del cls["color"], cls["hotkey"], cls["level"]
    out = load_card(_write(tmp_path, card))
    assert out["input"]["channel_order"] == "RGB"
    assert out["input"]["scale"] == pytest.approx(1 / 255)
    assert out["outputs"]["probabilities"]["activation"] == "softmax"
    assert out["outputs"]["halo_px"] == 0
    assert [c["hotkey"] for c in out["classes"]] == ["1", "2", "3"]
    assert all(c["level"] == "tile" and c["color"].startswith("#") for c in out["classes"])


def test_bad_layout_names_the_key_and_choices(tmp_path):
    card = base_card(input={"layout": "NCWH"})
    path = _write(tmp_path, card)
    with pytest.raises(PackError) as err:
        load_card(path)
    assert str(err.value) == f"{path}: input.layout: 'NCWH' is not one of NCHW, NHWC"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c["input"].pop("mpp"), "input: missing required key 'mpp'"),
        (lambda c: c.pop("outputs"), "(top level): missing required key 'outputs'"),
        (lambda c: c["classes"][1].update(color="red"), "classes[1].color: 'red' is not a colour '#rrggbb'"),
        (lambda c: c["classes"][2].update(id=0), "classes[2].id: 0 is already used by classes[0]"),
        (lambda c: c["classes"][2].update(hotkey="1"), "classes[2].hotkey: '1' is already used by classes[0]"),
        (lambda c: c["classes"][0].update(id="zero"), "classes[0].id: 'zero' is not of type integer"),
        (lambda c: c.update(task="detection"), "task: 'detection' is not one of tile-classification, segmentation"),
        (lambda c: c.update(name="My Pack"), "name: 'My Pack' is not lower-case letters"),
        (lambda c: c["input"].update(mean=[0, 0]), "input.mean: expected at least 3 item(s), found 2"),
        (lambda c: c["input"].update(size_px=0), "input.size_px: 0 must be >= 1"),
        (lambda c: c["outputs"]["probabilities"].update(activation="relu"), "outputs.probabilities.activation"),
        (lambda c: c["input"].update(colour="RGB"), "input: unknown key(s) 'colour'"),
        (lambda c: c["outputs"].update(halo_px=2), "outputs.halo_px: only a segmentation pack has a halo"),
    ],
)
def test_bad_cards_name_the_key(tmp_path, mutate, expected):
    card = base_card()
    mutate(card)
    path = _write(tmp_path, card)
    with pytest.raises(PackError, match=None) as err:
        load_card(path)
    assert str(err.value).startswith(f"{path}: ")
    assert expected in str(err.value)


def test_unicode_class_names_and_numeric_version():
    card = base_card(version=2)
    card["classes"][0]["name"] = "Zellen mit Kernvergrößerung (腺上皮)"
    out = validate_card(card, "x.yaml")
    assert out["version"] == "2"
    assert out["classes"][0]["name"] == "Zellen mit Kernvergrößerung (腺上皮)"


def test_halo_must_leave_output():
    card = base_card(task="segmentation", outputs={"halo_px": 8})
    with pytest.raises(PackError, match="outputs.halo_px: 8 leaves no valid output in a 16 px patch"):
        validate_card(card, "x.yaml")


def test_not_yaml_and_missing_card(tmp_path):
    path = tmp_path / "cytoreview.yaml"
    path.write_text("name: [unclosed", "utf-8")
    with pytest.raises(PackError, match="not valid YAML"):
        load_card(path)
    with pytest.raises(PackError, match="no model-pack card"):
        load_card(tmp_path / "missing.yaml")
    path.write_text("- just\n- a list\n", "utf-8")
    with pytest.raises(PackError, match="must be a mapping"):
        load_card(path)


def test_classes_from_metadata_json_and_comma_lists():
    names = classes_from_metadata({"classes": '["bg", "Tumör"]'}, "tile-classification", "m.onnx")
    assert [(c["id"], c["name"], c["hotkey"]) for c in names] == [(0, "bg", "1"), (1, "Tumör", "2")]
    comma = classes_from_metadata({"classes": "a, b ,c"}, "segmentation", "m.onnx")
    assert [c["name"] for c in comma] == ["a", "b", "c"] and comma[0]["level"] == "cell"
    objs = classes_from_metadata(
        {"classes": '[{"id": 5, "name": "x", "color": "#010203"}]'}, "tile-classification", "m"
    )
    assert objs[0]["id"] == 5 and objs[0]["color"] == "#010203"
    assert classes_from_metadata({}, "tile-classification", "m.onnx") is None
    with pytest.raises(PackError, match="not valid JSON"):
        classes_from_metadata({"classes": "[broken"}, "tile-classification", "m.onnx")
    with pytest.raises(PackError, match=r"classes\[0\].color"):
        classes_from_metadata({"classes": '[{"id": 0, "name": "x", "color": "blue"}]'}, "tile-classification", "m")
