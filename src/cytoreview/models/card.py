"""The model-pack card (``cytoreview.yaml``): its JSON schema, loading and validation.

A card says how to feed a model (input tensor, layout, patch size, pixel size, channel order, normalisation), what
comes out of it (probabilities and their activation, an optional embedding, the valid-padding halo of a segmenter),
which classes it predicts and where it came from. Every problem is reported as a :class:`~cytoreview.errors.PackError`
whose message names the card file and the key path, e.g.
``plugins/x/cytoreview.yaml: input.layout: 'NCWH' is not one of NCHW, NHWC``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cytoreview.class_names import name_key
from cytoreview.errors import PackError

#: File name of the card inside a pack folder.
CARD_FILENAME = "cytoreview.yaml"

TASKS = ("tile-classification", "segmentation", "cell-classification")
LAYOUTS = ("NCHW", "NHWC")
CHANNEL_ORDERS = ("RGB", "BGR")
ACTIVATIONS = ("softmax", "sigmoid", "none")
CLASS_LEVELS = ("field", "tile", "cell", "region")
PADS = ("reflect", "constant")
#: Named preprocessing steps a card may list in ``input.preprocess`` (see :mod:`cytoreview.models.preprocess`).
PREPROCESS_STEPS = ("clahe",)
SPLITS = ("watershed", "boundary", "markers", "none")
#: Optional one-channel per-pixel outputs of a segmenter besides its probabilities: a cell-contour probability that
#: separates touching cells, and a cell-centre (nucleus) probability that seeds one cell per marker.
PIXEL_OUTPUTS = ("boundary", "markers")
#: Foreground threshold of a segmenter's probabilities unless ``outputs.probabilities.threshold`` says otherwise.
DEFAULT_THRESHOLD = 0.5

_NUMBER3 = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}

#: Largest model patch side a card may declare (px): 4096² x 3 float32 is 200 MB per patch already.
MAX_SIZE_PX = 4096
#: Pixel sizes (µm/px) a card may declare: from 100 nm/px (beyond any light microscope) to 100 µm/px.
MPP_RANGE = (0.01, 100.0)
#: A class name: no control characters (C0, DEL, C1), which would corrupt terminals, CSVs and folder names.
CONTROL_CHARACTERS = "[\\x00-\\x1f\\x7f-\\x9f]"

#: JSON schema of a card (draft 2020-12). Uniqueness of class ids / hotkeys is checked after the schema.
CARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["name", "version", "task", "input", "outputs"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9-]+$"},
        "version": {"type": "string", "pattern": r"^[0-9A-Za-z][0-9A-Za-z.+-]*$"},
        "task": {"enum": list(TASKS)},
        "description": {"type": "string"},
        "model_file": {"type": "string", "pattern": r"\.onnx$"},  # inside the pack folder: checked by the pack
        "input": {
            "type": "object",
            "required": ["name", "layout", "size_px", "mpp"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "layout": {"enum": list(LAYOUTS)},
                "size_px": {"type": "integer", "minimum": 1, "maximum": MAX_SIZE_PX},
                "mpp": {"type": "number", "minimum": MPP_RANGE[0], "maximum": MPP_RANGE[1]},
                "channel_order": {"enum": list(CHANNEL_ORDERS)},
                "scale": {"type": "number"},
                "mean": _NUMBER3,
                "std": {**_NUMBER3, "items": {"type": "number", "exclusiveMinimum": 0}},
                "pad": {"enum": list(PADS)},
                "preprocess": {"type": "array", "items": {"enum": list(PREPROCESS_STEPS)}},
                "multiple_of": {"type": "integer", "minimum": 1},
            },
        },
        "outputs": {
            "type": "object",
            "required": ["probabilities"],
            "additionalProperties": False,
            "properties": {
                "probabilities": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "activation": {"enum": list(ACTIVATIONS)},
                        "threshold": {"type": "number"},
                    },
                },
                "boundary": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "activation": {"enum": ["sigmoid", "none"]},
                        "threshold": {"type": "number"},
                    },
                },
                "markers": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "activation": {"enum": ["sigmoid", "none"]},
                    },
                },
                "embedding": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {"name": {"type": "string", "minLength": 1}},
                },
                "halo_px": {"type": "integer", "minimum": 0},
            },
        },
        "cells": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "min_area_um2": {"type": "number", "minimum": 0},
                "max_area_um2": {"type": "number", "exclusiveMinimum": 0},
                "split": {"enum": list(SPLITS)},
                "marker_threshold": {"type": "number"},
                "min_distance_um": {"type": "number", "exclusiveMinimum": 0},
                "max_per_tile": {"type": "integer", "minimum": 1},
            },
        },
        "classes_from_metadata": {"type": "string", "minLength": 1},
        "reference": {  # statistics of the training tiles (cytoreview.inference.ood): the out-of-distribution check
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "n_tiles": {"type": "integer", "minimum": 0},
                "source": {"type": "string"},
                "colour": {
                    "type": "object",
                    "required": ["mean", "std"],
                    "additionalProperties": False,
                    "properties": {"mean": _NUMBER3, "std": _NUMBER3},
                },
                "embedding": {
                    "type": "object",
                    "required": ["mean", "components", "variances", "residual_variance", "score_p99"],
                    "additionalProperties": False,
                    "properties": {
                        "mean": {"type": "array", "minItems": 1, "items": {"type": "number"}},
                        "components": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                        "variances": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}},
                        "residual_variance": {"type": "number", "exclusiveMinimum": 0},
                        "score_p99": {"type": "number", "exclusiveMinimum": 0},
                    },
                },
            },
        },
        "classes": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "name"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "integer", "minimum": 0},
                    "name": {"type": "string", "minLength": 1, "not": {"pattern": CONTROL_CHARACTERS}},
                    "color": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
                    "hotkey": {"type": "string", "minLength": 1},
                    "level": {"enum": list(CLASS_LEVELS)},
                },
            },
        },
        "provenance": {
            "type": "object",
            "properties": {
                "parent": {"type": ["string", "null"]},
                "training_set": {"type": ["string", "object", "null"]},
                "metrics": {"type": ["object", "null"]},
                "created": {"type": ["string", "null"]},
            },
        },
    },
}

#: Colours given to classes that come without one (from ONNX metadata), in id order.
DEFAULT_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

_HOTKEYS = "1234567890"


def _key_path(path: Iterable[Any]) -> str:
    """Render a jsonschema error path as ``input.mean[2]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _message(error: jsonschema.ValidationError) -> str:
    """A short, user-facing message for one schema error."""
    v, inst = error.validator, error.instance
    if v == "enum":
        return f"{inst!r} is not one of {', '.join(str(x) for x in error.validator_value)}"
    if v == "required":
        missing = [k for k in error.validator_value if k not in (inst or {})]
        return f"missing required key {missing[0]!r}" if missing else error.message
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(inst) - set(allowed)) if isinstance(inst, dict) else []
        return f"unknown key(s) {', '.join(map(repr, extra))} (allowed: {', '.join(allowed)})"
    if v == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{inst!r} is not of type {expected}"
    if v == "pattern":
        hints = {
            "^#[0-9a-fA-F]{6}$": "a colour '#rrggbb'",
            "^[a-z0-9-]+$": "lower-case letters, digits and '-'",
            r"\.onnx$": "an .onnx file name",
        }
        return f"{inst!r} is not {hints.get(error.validator_value, 'matching ' + error.validator_value)}"
    if v in ("minItems", "maxItems"):
        bound = "at least" if v == "minItems" else "at most"
        return f"expected {bound} {error.validator_value} item(s), found {len(inst)}"
    if v in ("minimum", "exclusiveMinimum"):
        return f"{inst!r} must be {'>=' if v == 'minimum' else '>'} {error.validator_value}"
    if v == "not" and error.validator_value == {"pattern": CONTROL_CHARACTERS}:
        return f"{inst!r} holds control characters (NUL, ESC, newline, ...); class names must be printable"
    if v in ("maximum", "exclusiveMaximum"):
        return f"{inst!r} must be {'<=' if v == 'maximum' else '<'} {error.validator_value}"
    return error.message


def _check_finite(value: Any, source: str | Path, path: tuple = ()) -> None:
    """Refuse NaN and infinities anywhere in a card (YAML's ``.nan`` / ``.inf`` pass JSON-schema number checks)."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        raise PackError(f"{source}: {_key_path(path)}: {value!r} is not a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, source, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_finite(item, source, (*path, i))


def validate_card(card: Any, source: str | Path = CARD_FILENAME) -> dict[str, Any]:
    """Validate a parsed card and return a copy with defaults filled in.

    Parameters
    ----------
    card : dict
        The parsed YAML.
    source : str or Path
        Name used in error messages (the card file).

    Returns
    -------
    dict
        The card, with ``input.channel_order`` (RGB), ``input.scale`` (1/255), ``input.mean`` (0), ``input.std`` (1),
        ``outputs.probabilities.activation`` (softmax), ``outputs.halo_px`` (0), class ``color``/``hotkey``/``level``
        and ``description`` filled in where missing.

    Raises
    ------
    PackError
        On the first (deepest, then first by path) schema violation, or duplicate class ids / names / hotkeys, or a
        ``halo_px`` that leaves no valid output.
    """
    if not isinstance(card, dict):
        raise PackError(f"{source}: the card must be a mapping of keys, found {type(card).__name__}")
    if isinstance(card.get("version"), (int, float)) and not isinstance(card.get("version"), bool):
        card = {**card, "version": str(card["version"])}  # `version: 2` or `1.0` in YAML is a number
    _check_finite(card, source)
    validator = jsonschema.Draft202012Validator(CARD_SCHEMA)
    errors = sorted(validator.iter_errors(card), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise PackError(f"{source}: {_key_path(best.absolute_path)}: {_message(best)}")

    out = copy.deepcopy(card)
    inp = out["input"]
    inp.setdefault("channel_order", "RGB")
    inp.setdefault("scale", 1.0 / 255.0)
    inp.setdefault("mean", [0.0, 0.0, 0.0])
    inp.setdefault("std", [1.0, 1.0, 1.0])
    inp.setdefault("pad", "reflect" if out["task"] == "segmentation" else "constant")
    inp.setdefault("preprocess", [])
    out.setdefault("description", "")
    outputs = out["outputs"]
    outputs["probabilities"].setdefault("activation", "softmax")
    outputs.setdefault("halo_px", 0)
    _check_segmentation_keys(out, source)
    if out["task"] == "tile-classification" and outputs["halo_px"]:
        raise PackError(f"{source}: outputs.halo_px: only a segmentation pack has a halo (task is {out['task']!r})")
    if 2 * outputs["halo_px"] >= inp["size_px"]:
        raise PackError(
            f"{source}: outputs.halo_px: {outputs['halo_px']} leaves no valid output in a {inp['size_px']} px patch"
        )
    if "classes" in out:
        out["classes"] = normalise_classes(out["classes"], out["task"], source)
    return out


def _check_segmentation_keys(card: dict, source) -> None:
    """Thresholds in (0, 1), segmentation-only keys, ``cells`` defaults, ``multiple_of`` met by the patch size."""
    seg = card["task"] == "segmentation"
    outputs, inp = card["outputs"], card["input"]
    for key in ("probabilities", "boundary"):
        if key not in outputs:
            continue
        thr = outputs[key].get("threshold")
        if thr is not None and not 0.0 < float(thr) < 1.0:
            raise PackError(f"{source}: outputs.{key}.threshold: {thr!r} must lie strictly between 0 and 1")
        if seg:
            outputs[key].setdefault("threshold", DEFAULT_THRESHOLD)
    for key in PIXEL_OUTPUTS:
        if key in outputs and not seg:
            raise PackError(f"{source}: outputs.{key}: only a segmentation pack has a per-pixel {key} output "
                            f"(task is {card['task']!r})")
        if key in outputs:
            outputs[key].setdefault("activation", "sigmoid")
    if "cells" in card and not seg:
        raise PackError(f"{source}: cells: only a segmentation pack finds cells (task is {card['task']!r})")
    if seg:
        cells = card.setdefault("cells", {})
        cells.setdefault("min_area_um2", 0.0)
        cells.setdefault("split", "boundary" if "boundary" in outputs else "watershed")
        cells.setdefault("max_per_tile", 2000)
        for split in PIXEL_OUTPUTS:
            if cells["split"] == split and split not in outputs:
                raise PackError(f"{source}: cells.split: {split!r} needs an outputs.{split} entry naming that output")
        thr = cells.get("marker_threshold")
        if thr is not None and not 0.0 < float(thr) < 1.0:
            raise PackError(f"{source}: cells.marker_threshold: {thr!r} must lie strictly between 0 and 1")
        if "markers" in outputs:
            cells.setdefault("marker_threshold", DEFAULT_THRESHOLD)
        if "max_area_um2" in cells and cells["max_area_um2"] <= cells["min_area_um2"]:
            raise PackError(f"{source}: cells.max_area_um2: {cells['max_area_um2']!r} must exceed "
                            f"cells.min_area_um2 ({cells['min_area_um2']!r})")
    multiple = inp.get("multiple_of")
    if multiple and inp["size_px"] % multiple:
        raise PackError(f"{source}: input.multiple_of: size_px {inp['size_px']} is not a multiple of {multiple}")
    if card["task"] == "cell-classification" and outputs["halo_px"]:
        raise PackError(f"{source}: outputs.halo_px: a cell classifier has no halo")


def normalise_classes(classes: list[dict], task: str, source: str | Path) -> list[dict]:
    """Check class ids / names / hotkeys are unique and fill ``color``, ``hotkey`` and ``level`` defaults."""
    default_level = "cell" if task in ("segmentation", "cell-classification") else "tile"
    seen: dict[str, dict] = {"id": {}, "name": {}, "hotkey": {}}
    out = []
    for i, cls in enumerate(classes):
        cls = dict(cls)
        for key in ("id", "name", "hotkey"):
            if key not in cls:
                continue
            value = name_key(cls[key]) if key == "name" else cls[key]  # "Tumour" and "tumour" are one class
            if value in seen[key]:
                raise PackError(
                    f"{source}: classes[{i}].{key}: {cls[key]!r} is already used by classes[{seen[key][value]}]"
                )
            seen[key][value] = i
        out.append(cls)
    used_keys = set(seen["hotkey"])
    free_keys = [k for k in _HOTKEYS if k not in used_keys]
    for i, cls in enumerate(out):
        cls.setdefault("color", DEFAULT_COLORS[i % len(DEFAULT_COLORS)])
        if "hotkey" not in cls and free_keys:
            cls["hotkey"] = free_keys.pop(0)
        cls.setdefault("level", default_level)
    return sorted(out, key=lambda c: c["id"])


def classes_from_metadata(metadata: dict[str, str], task: str, source: str | Path,
                          key: str = "classes") -> list[dict] | None:
    """Class list from ONNX ``metadata_props`` under ``key`` (a JSON list, a comma- or newline-separated list).

    A JSON list may hold names (ids are then 0..n-1) or objects with ``id``/``name``/``color``/``hotkey``/``level``.
    A value with newlines is one name per line (how OCR recognisers ship their character lists): blank lines are
    dropped, and a name equal to an earlier one but for case gets its line number appended (``"s [17]"``), so that
    every line stays one output channel. Returns None when the model carries no such key.
    """
    raw = metadata.get(key)
    if raw is None:
        return None
    raw = raw.strip("\r\n ")
    items: list
    if "\n" in raw and not raw.lstrip().startswith("["):
        seen: set = set()
        items = []
        for i, line in enumerate(raw.splitlines()):
            name = line.strip("\r")
            if not name.strip():
                continue
            if name_key(name) in seen:  # class names are case-blind; keep the channel, tell the two apart
                name = f"{name} [{i}]"
            seen.add(name_key(name))
            items.append(name)
    elif raw.strip().startswith("["):
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PackError(f"{source}: ONNX metadata {key!r} is not valid JSON: {exc}") from None
    else:
        items = [part.strip() for part in raw.split(",") if part.strip()]
    if not items:
        raise PackError(f"{source}: ONNX metadata {key!r} is empty")
    classes = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            classes.append({"id": i, "name": item})
        elif isinstance(item, dict):
            classes.append(dict(item))
        else:
            raise PackError(f"{source}: ONNX metadata classes[{i}]: {item!r} is neither a name nor a mapping")
    schema = CARD_SCHEMA["properties"]["classes"]
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(classes))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise PackError(f"{source}: ONNX metadata classes{_key_path(best.absolute_path)}: {_message(best)}")
    return normalise_classes(classes, task, source)


def load_card(path: str | Path) -> dict[str, Any]:
    """Read and validate a ``cytoreview.yaml`` card.

    Parameters
    ----------
    path : str or Path
        The card file.

    Returns
    -------
    dict
        The validated card with defaults filled in (see :func:`validate_card`).

    Raises
    ------
    PackError
        When the file is missing, is not YAML, or does not follow the schema.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PackError(f"{path}: no model-pack card here") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PackError(f"{path}: cannot read the card: {exc}") from None
    try:
        card = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PackError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    return validate_card(card, path)
