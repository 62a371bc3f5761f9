"""The layer-metadata contract as a dataclass: storage round trip, and overlays bound by image path and id."""

from __future__ import annotations

import pytest

from cytoreview._napari.layer_meta import ROLES, SESSION_ROLES, LayerMeta, image_meta, new_image_uid


def _image(path="/data/case_A", uid=None):
    return {"cytoreview": {"path": path, "kind": "fields", "mpp": 0.293, "uid": uid or new_image_uid(),
                           "units": ["pixel", "µm", "µm"], "levels": [[1208, 1928]], "n_z": 1}}


def test_image_metadata_round_trips_and_keeps_the_description():
    md = _image(uid="abc")
    meta = LayerMeta.of(md)
    assert meta.is_image and not meta.is_overlay and meta.role is None
    assert (meta.image_path, meta.image_uid, meta.kind, meta.mpp, meta.units) == (
        "/data/case_A", "abc", "fields", 0.293, ("pixel", "µm", "µm"))
    assert meta.extra == {"levels": [[1208, 1928]], "n_z": 1}
    assert meta.to_metadata() == md
    assert LayerMeta.of({"other": {}}) is None and LayerMeta.of({}) is None


def test_overlay_metadata_names_its_image_by_path_and_id():
    image = LayerMeta.of(_image(uid="abc"))
    overlay = image.overlay("tile_classes", pack="tiny", pack_version="1.0.0", store="/p/s.zarr", tile_px_level0=64,
                            classes=[{"id": 0, "name": "a"}])
    stored = overlay.to_metadata()["cytoreview"]
    assert stored["image_path"] == "/data/case_A" and stored["image_uid"] == "abc" and "image_layer" not in stored
    assert stored["role"] == "tile_classes" and stored["classes"] == [{"id": 0, "name": "a"}]
    back = LayerMeta.of({"cytoreview": stored})
    assert back == overlay and back.is_overlay and back.belongs_to(image)
    # another layer of the same file has another id: not its overlay
    assert not back.belongs_to(LayerMeta.of(_image(uid="xyz")))
    # an image layer (or overlay) without an id falls back to the path
    no_id = LayerMeta.of({"cytoreview": {"path": "/data/case_A", "kind": "fields", "mpp": 0.293}})
    assert back.belongs_to(no_id) and not back.belongs_to(LayerMeta.of(_image("/data/case_B")))
    assert not image.belongs_to(image)  # an image belongs to no image


def test_roles_are_defined_once_and_checked():
    assert ROLES == ("tile_classes", "probability", "uncertainty", "cells", "cell_mask", "foreground", "cell_outlines")
    image = LayerMeta.of(_image())
    for role in ROLES + SESSION_ROLES:
        assert image.overlay(role).role == role
    with pytest.raises(ValueError, match="not one of"):
        image.overlay("heatmap")
    with pytest.raises(ValueError, match="from an image"):
        image.overlay("cells").overlay("cells")
    with pytest.raises(ValueError, match="not a cytoreview image layer"):
        image_meta({"cytoreview": image.overlay("cells").to_metadata()["cytoreview"]})
