"""Awkward class names through the whole chain: card -> predict -> import -> set_label -> export -> read back."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.inference.conftest import blob_slide, write_tiff
from tests.models.onnx_graphs import base_card, write_pack

from cytoreview.export import export_project
from cytoreview.inference import predict
from cytoreview.io import open_image
from cytoreview.models import load_pack
from cytoreview.review import Project

#: Names a cytologist might type; the first three are what the model predicts (red / green / blue tiles).
NAMES = [
    "tumour/atypical",  # a path separator
    "n.o.s.",  # dots
    "..",  # a parent-folder name
    "核 épithélium",  # CJK + accents (NFC)
    "🦠 microbe",  # emoji
    "Tumour\\atypical",  # a Windows separator, differing from the first only in case and slash
]
COLOURS = ["#ff0000", "#00ff00", "#0000ff", "#808000", "#008080", "#800080"]


@pytest.fixture
def chain(tmp_path):
    """A slide, a pack whose classes have awkward names, predictions imported, and six corrections."""
    folder = tmp_path / "Fall ü 🦠 #1"  # the slide's own path is awkward too
    folder.mkdir()
    slide = write_tiff(folder / "slide 1 (ü).tif", blob_slide(96, 128, seed=3))
    card = base_card("odd-names")
    card["classes"] = [{"id": i, "name": n, "color": COLOURS[i], "hotkey": str(i + 1), "level": "tile"}
                       for i, n in enumerate(NAMES)]
    weights = np.zeros((3, len(NAMES)), np.float32)
    weights[:, :3] = np.eye(3) * 10
    pack = load_pack(write_pack(tmp_path / "packs" / "odd-names", card, weights=weights))
    assert [c["name"] for c in pack.classes] == NAMES

    project = Project.open(tmp_path / "proj #1 ?ü 🦠 %20", create=True)  # URI-special characters in the path
    image = open_image(slide)
    image_id = project.add_image(slide, kind="wsi", mpp=image.mpp, case_id="case 🦠/1")
    store = predict(image, pack, project.predictions_dir, threads=1)
    n = project.import_predictions(image_id, store.path)
    assert n > 6
    by_name = {c.name: c.id for c in project.schema.classes}
    assert set(NAMES) <= set(by_name), by_name
    items = project.queue(strategy="uncertainty")[:6]
    for item, name in zip(items, NAMES):
        project.set_label(item, by_name[name], "ana")
    yield project, tmp_path, dict(zip(items, NAMES)), image
    project.close()


def test_names_survive_predict_and_import(chain):
    project, _, labelled, _ = chain
    table = project.label_table(only_reviewed=True)
    got = {int(r.item_id): r.labels[0] for r in table.itertuples()}
    assert got == labelled
    assert project.label_table()["model_label"].dropna().isin(NAMES[:3]).all()


def test_export_round_trips_every_name(chain, tmp_path):
    project, _, labelled, image = chain
    out = tmp_path / "export"
    result = export_project(project, out, ["csv", "geojson", "coco", "imagefolder"], select="reviewed",
                            crop_px=16)
    assert not (out / "_INCOMPLETE").exists()

    csv = pd.read_csv(result["csv"], keep_default_na=False)
    assert sorted(csv["label"]) == sorted(labelled.values())

    features = []
    for path in Path(result["geojson"]).rglob("*.geojson"):
        features += json.loads(path.read_text("utf-8"))["features"]
    assert sorted(f["properties"]["classification"]["name"] for f in features) == sorted(labelled.values())

    from pycocotools.coco import COCO

    coco = COCO(str(result["coco"]))
    cats = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert set(labelled.values()) <= set(cats.values())
    assert sorted(cats[a["category_id"]] for a in coco.loadAnns(coco.getAnnIds())) == sorted(labelled.values())

    folder = Path(result["imagefolder"])
    class_dirs = [p for p in folder.rglob("*") if p.is_dir()]
    assert len(class_dirs) == len(NAMES)  # distinct: no two names merged, none escaped into a sub-folder
    for d in class_dirs:
        assert d.parent == folder, d  # "/" and "\\" did not make nested folders
        assert d.name not in (".", "..") and not d.name.startswith(".")
        assert "/" not in d.name and "\\" not in d.name
        assert unicodedata.is_normalized("NFC", d.name)
    assert len({d.name.lower() for d in class_dirs}) == len(NAMES)  # distinct on case-insensitive file systems
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))
    meta = pd.read_csv(folder / "metadata.csv", keep_default_na=False)
    assert sorted(meta["label"]) == sorted(labelled.values())
    for row in meta.itertuples():
        assert (folder / row.file_name).is_file()
    by_dir = {Path(f).parts[0]: label for f, label in zip(meta["file_name"], meta["label"])}
    assert len(set(by_dir.values())) == len(by_dir) == len(NAMES)  # one folder per name, one name per folder
