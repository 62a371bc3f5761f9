"""ImageFolder crops: layout, pixels, HF datasets, importer round trip."""

import os

import numpy as np
import pandas as pd
import pytest

from cytoreview.export import export_labels
from cytoreview.export.importers import read_imagefolder

from .conftest import CLASSES


def _walk(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))


def test_layout_and_crops(table, images, tmp_path):
    out = export_labels(table, tmp_path / "out", "imagefolder", images=images, select="all", crop_um=8.0)
    root = out["imagefolder"]
    files = _walk(root)
    assert "lymphocytes/B_img2_i10.png" in files
    assert "oncocytic epithelium/A_img1_f000_i1.png" in files  # multi-label: first label's folder
    meta = pd.read_csv(root / "metadata.csv")
    assert sorted(meta["file_name"]) == files
    m = meta.set_index("item_id")
    assert m.loc[1, "labels"] == "oncocytic epithelium|lymphocytes"
    from PIL import Image as PILImage

    # cell crop: 8 um at 0.5 um/px = 16 px, centred on (x=100.25, y=200.5), read at level 0
    cell = np.asarray(PILImage.open(root / "lymphocytes/B_img2_i10.png"))
    assert cell.shape == (16, 16, 3)
    x0, y0 = int(np.floor(100.25 - 8 + 0.5)), int(np.floor(200.5 - 8 + 0.5))  # snapped to whole pixels
    assert np.array_equal(cell, images[2].levels[0][y0 : y0 + 16, x0 : x0 + 16])  # the slide's pixels, not resampled
    assert (m.loc[10, "x_min"], m.loc[10, "y_min"], m.loc[10, "x_max"], m.loc[10, "y_max"]) == (x0, y0, x0 + 16, y0 + 16)
    # tile crop: its square; a cell near the border is white-padded outside the slide
    tile = np.asarray(PILImage.open(root / "tumour/B_img2_i7.png"))
    assert np.array_equal(tile, images[2].levels[0][:128, :128])
    # field crop: the whole field
    field = np.asarray(PILImage.open(root / "clean background/A_img1_f001_i2.png"))
    assert np.array_equal(field, images[1].levels[0][1])
    assert str(tmp_path) not in (root / "metadata.csv").read_text()


def test_crop_at_border_is_white_padded(table, images, tmp_path):
    from PIL import Image as PILImage

    t = table[table["item_id"] == 11]  # cell at x=500 of a 512 px slide
    out = export_labels(t, tmp_path / "out", "imagefolder", images=images, select="all", crop_px=64)
    edge = np.asarray(PILImage.open(out["imagefolder"] / "tumour/B_img2_i11.png"))
    assert edge.shape == (64, 64, 3)
    assert (edge[:, 44:] == 255).all() and (edge[22:, :44] != 255).any()


def test_crop_mpp_reads_coarser_level(table, images, tmp_path):
    calls = []
    wsi = images[2]
    original = wsi.read_region

    def spy(row, col, height, width, level=0, field=0, z=0):
        calls.append((level, height, width))
        return original(row, col, height, width, level=level, field=field, z=z)

    wsi.read_region = spy
    t = table[table["item_id"] == 7]
    out = export_labels(t, tmp_path / "out", "imagefolder", images=images, select="all", crop_mpp=2.0)
    from PIL import Image as PILImage

    crop = np.asarray(PILImage.open(out["imagefolder"] / "tumour/B_img2_i7.png"))
    assert crop.shape == (32, 32, 3)
    assert calls == [(2, 32, 32)]  # level 2 (2 um/px), only the tile's pixels


def test_splits_balance_and_hf_datasets(table, images, tmp_path):
    out = export_labels(table, tmp_path / "out", "imagefolder", images=images, select="all", split=True,
                        balance="oversample", seed=0)
    root = out["imagefolder"]
    splits = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert set(splits) <= {"train", "validation", "test"} and "train" in splits
    assert sorted(p.name for p in root.iterdir() if not p.is_dir()) == ["README.md"]  # the dataset card
    train = pd.read_csv(root / "train" / "metadata.csv")
    counts = train["label"].value_counts()
    assert counts.nunique() == 1  # balanced to the largest class
    assert (train["augment"] != "none").any()
    for split in splits:
        meta = pd.read_csv(root / split / "metadata.csv")
        assert sorted(meta["file_name"]) == _walk(root / split)
    cases = {s: set(pd.read_csv(root / s / "metadata.csv")["case_id"]) for s in splits}
    for a in splits:
        for b in splits:
            if a != b:
                assert not cases[a] & cases[b]
    datasets = pytest.importorskip("datasets")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    ds = datasets.load_dataset("imagefolder", data_dir=str(root), cache_dir=str(tmp_path / "hf"))
    assert set(ds.keys()) == set(splits)
    assert ds["train"].num_rows == len(train)
    ex = ds["train"][0]
    assert ex["image"].size[0] > 0 and ex["label"] in counts.index


def _hf_load(path, cache):
    datasets = pytest.importorskip("datasets")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    return datasets, datasets.load_dataset(str(path), cache_dir=str(cache))


def test_hf_datasets_label_is_a_class_label_in_schema_order(table, images, tmp_path):
    out = export_labels(table, tmp_path / "out", "imagefolder", images=images, select="all", split=True)
    root = out["imagefolder"]
    datasets, ds = _hf_load(root, tmp_path / "hf")
    schema_order = [name for name, _ in sorted(CLASSES.items(), key=lambda kv: kv[1])]
    used = {name for lbls in table["labels"] for name in lbls}
    expected = [n for n in schema_order if n in used]  # class id order, not alphabetical, not folder order
    assert expected != sorted(expected)
    splits = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert set(ds.keys()) == set(splits)
    for split in splits:
        feature = ds[split].features["label"]
        assert isinstance(feature, datasets.ClassLabel) and feature.names == expected
        meta = pd.read_csv(root / split / "metadata.csv")
        assert ds[split].num_rows == len(meta)
        names_by_folder = {f.split("/")[0]: lbl for f, lbl in zip(meta["file_name"], meta["label"])}
        rows = ds[split].cast_column("image", datasets.Image(decode=False))
        for ex in rows:
            folder = os.path.basename(os.path.dirname(ex["image"]["path"]))
            assert feature.int2str(ex["label"]) == names_by_folder[folder]  # the int is the folder it came from
            assert isinstance(ex["item_id"], int) and ex["labels"].split("|")[0] == names_by_folder[folder]
    # the other readers keep their columns: metadata.csv still says the class name
    assert set(pd.read_csv(root / splits[0] / "metadata.csv")["label"]) <= set(expected)


def test_class_label_order_is_stable_across_exports(table, images, tmp_path):
    first = export_labels(table, tmp_path / "a", "imagefolder", images=images, select="all")["imagefolder"]
    shuffled = table.sample(frac=1.0, random_state=3).reset_index(drop=True)
    second = export_labels(shuffled, tmp_path / "b", "imagefolder", images=images, select="all")["imagefolder"]
    _, ds_a = _hf_load(first, tmp_path / "hf_a")
    _, ds_b = _hf_load(second, tmp_path / "hf_b")
    assert ds_a["train"].features["label"].names == ds_b["train"].features["label"].names
    assert (first / "README.md").read_text() == (second / "README.md").read_text()


def test_imagefolder_importer_round_trip(table, images, tmp_path):
    out = export_labels(table, tmp_path / "out", "imagefolder", images=images, select="all", split=True)
    got = read_imagefolder(out["imagefolder"])
    t = got.table
    assert len(t) == 10
    assert set(t["split"]) <= {"train", "validation", "test"}
    multi = t[t["labels"].map(len) == 2]
    assert multi["labels"].iloc[0] == ["oncocytic epithelium", "lymphocytes"]
    assert (t["level"] == "field").all() and t["source"].str.startswith("import:").all()
    assert set(t["case_id"]) == {"A", "B"}
    assert len(got.images) == 10


def test_plain_class_folders_import(tmp_path):
    from PIL import Image as PILImage

    for cls in ("cat", "dog"):
        (tmp_path / "ds" / cls).mkdir(parents=True)
        for i in range(2):
            PILImage.fromarray(np.zeros((8, 12, 3), np.uint8)).save(tmp_path / "ds" / cls / f"{i}.png")
    got = read_imagefolder(tmp_path / "ds", mpp=0.25).table
    assert sorted(map(tuple, got["labels"])) == [("cat",), ("cat",), ("dog",), ("dog",)]
    assert got["x_max"].iloc[0] == 12 and got["y_max"].iloc[0] == 8 and got["mpp"].iloc[0] == 0.25
    assert got["source"].iloc[0] == "import:ds"


def test_unsafe_class_names_map_to_distinct_folders(table, images, tmp_path):
    t = table[table["item_id"].isin([7, 9, 10, 11])].copy()
    names = ["a/b", "a_b", "..", "🦠"]
    t["labels"] = [[n] for n in names]
    t["label_ids"] = [[i] for i in range(4)]
    out = export_labels(t, tmp_path / "out", "imagefolder", images=images, select="all")
    root = out["imagefolder"]
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert len(folders) == 4 and all(p.parent == root for p in root.iterdir())
    assert "a_b" in folders and "microbe" in folders and "unnamed" in folders
    meta = pd.read_csv(root / "metadata.csv")
    assert sorted(meta["label"]) == sorted(names)


def test_crops_use_the_projects_pixel_size_not_the_files(tmp_path):
    """The project says 0.5 um/px; the field folder has no metadata (open_image would assume 0.293)."""
    from PIL import Image as PILImage

    from .conftest import _row

    folder = tmp_path / "fields"
    folder.mkdir()
    pixels = np.random.default_rng(3).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    PILImage.fromarray(pixels).save(folder / "field_000.png")
    t = pd.DataFrame([_row(1, 1, folder, "A", "cell", 0, {"type": "point", "y": 60, "x": 80}, ["lymphocytes"], [3],
                           0.5, (80, 60, 80, 60))])
    out = export_labels(t, tmp_path / "out", "imagefolder", images=None, select="all", crop_um=8.0)
    (path,) = (out["imagefolder"] / "lymphocytes").glob("*.png")
    crop = np.asarray(PILImage.open(path))
    assert crop.shape == (16, 16, 3)  # 8 um at the project's 0.5 um/px (27 px at the file's default 0.293)
    assert np.array_equal(crop, pixels[52:68, 72:88])
