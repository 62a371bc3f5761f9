"""Edge tiles of a real sample: the Warthin fields (1928 x 1208 px) are not a whole number of 256 px tiles.

The grid's edge rule (``cytoreview.inference.grid``): edge tiles are clipped to the image. So no queued tile lies (mostly) outside its field, and no exported box or crop reaches past the image.
"""

from __future__ import annotations

import json

import numpy as np
from .conftest import PLUGINS, SAMPLE_DATA, decoded_field_set

from cytoreview.inference import predict
from cytoreview.models import load_pack
from cytoreview.review import Project


def test_no_queued_tile_lies_outside_its_field_and_exports_stay_inside(tmp_path):
    case = SAMPLE_DATA / "warthin_fna"
    image = decoded_field_set(case)
    height, width = image.plane_shape
    pack = load_pack(PLUGINS / "warthin-tiles")
    store = predict(image, pack, tmp_path / "pred", threads=1)
    t = store.tile_px_level0
    assert (height % t, width % t) != (0, 0), "the sample must have partial edge tiles for this test to mean anything"

    project = Project.open(tmp_path / "project", create=True)
    image_id = project.add_image(case, kind="fields", mpp=image.mpp, plane_shape=(height, width))
    project.import_predictions(image_id, store.path)
    queue = project.queue()
    items = project.items(level="tile").set_index("item_id")
    assert len(items) == int((np.asarray(store.tile_class[:]) >= 0).sum()) and set(queue) >= set(items.index)
    queued = items.loc[[i for i in queue if i in items.index]]
    assert (queued["x_max"] <= width).all() and (queued["y_max"] <= height).all()
    assert (queued["x_min"] < width).all() and (queued["y_min"] < height).all()
    # the edge tiles are there, clipped: the last column is the 1928 - 7 * 256 = 136 px that are inside
    last_col = queued[queued["geometry"].map(lambda g: g["col"] == width // t)]
    assert len(last_col) and (last_col["x_max"] - last_col["x_min"] == width - (width // t) * t).all()
    from cytoreview.export.api import export_project

    out = tmp_path / "export"
    export_project(project, out, formats="coco,csv,imagefolder", select="all", images={image_id: image})
    coco = json.loads((out / "coco" / "instances.json").read_text())
    assert coco["annotations"]
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and x + w <= width + 1e-6 and y + h <= height + 1e-6, ann
        xs, ys = ann["segmentation"][0][0::2], ann["segmentation"][0][1::2]
        assert max(xs) <= width + 1e-6 and max(ys) <= height + 1e-6
    from PIL import Image as PILImage

    crops = [p for p in out.rglob("*.png")] + [p for p in out.rglob("*.jpg")]
    assert crops
    sizes = {PILImage.open(p).size for p in crops}
    assert (width - (width // t) * t, t) in sizes  # an edge crop is only the part inside the image
