"""GeoJSON features and COCO annotations written straight as text are the text ``json.dumps`` gives for their dicts
(cells take a formatted fast path; everything else is an encoded dict)."""

from __future__ import annotations

import json

import numpy as np

from cytoreview.export.coco import _Coco
from cytoreview.export.geojson import _Features
from cytoreview.export.images import ImageSource
from cytoreview.export.table import attach_geometries, class_colors, class_order, validate_table


def _awkward(table):
    table = table.copy()
    cells = table.index[table["level"] == "cell"]
    table.loc[cells[0], "reviewer"] = None
    table.loc[cells[1], "confidence"] = np.nan
    table.loc[cells[2], "source"] = 'Dr. Müller "x" },{'  # quotes, braces and non-ASCII inside a value
    table.at[cells[3], "labels"] = ["lymphocytes", "tumour"]
    table.at[cells[3], "label_ids"] = [3, 4]
    table["split"] = np.where(np.arange(len(table)) % 2, "train", None)
    table = table[table["labels"].map(len) > 0]
    return attach_geometries(validate_table(table))


def _dumps(value):
    return json.dumps(value, separators=(",", ":"))


def test_geojson_feature_text_is_the_json_of_its_feature(table):
    data = _awkward(table)
    palette = class_colors([name for _, name in class_order(data)], {})
    features = _Features(data, palette, "point", 10.0)
    texts = [features.text(i) for i in range(len(data))]
    assert texts == [_dumps(features.feature(i)) for i in range(len(data))]
    assert sum(json.loads(t)["geometry"]["type"] == "Point" for t in texts) == (data["level"] == "cell").sum()


def test_coco_annotation_text_is_the_json_of_its_annotation(table, images):
    data = _awkward(table)
    with ImageSource(images) as source:
        coco = _Coco(data, source, include_paths=True)
        for subset in (None, {coco.images[0]["id"]}):
            texts = list(coco.annotation_texts(subset, chunk=3))
            assert texts == [_dumps(a) for a in coco.annotations(subset, chunk=3)]
            assert texts


def _odd(table):
    """The awkward table with odd class names (quotes, commas, non-ASCII), an infinite and a NaN confidence,
    None reviewers, cells near the origin (negative boxes) and 3-decimal coordinates."""
    table = table.copy()
    table["labels"] = [[{"lymphocytes": 'lympho "T", CD8+', "tumour": "tumeur atypique é/ü"}.get(n, n) for n in v]
                       for v in table["labels"]]
    cells = table.index[table["level"] == "cell"].tolist()
    table["confidence"] = table["confidence"].astype(object)
    table.at[cells[0], "confidence"] = float("inf")
    table.at[cells[1], "confidence"] = None
    table.at[cells[2], "confidence"] = np.nan
    table.at[cells[4], "geometry"] = json.dumps({"type": "point", "y": 0.125, "x": 1.001})
    return _awkward(table)


def _expected_geojson(features, rows):
    return '{"type":"FeatureCollection","features":[' + ",".join(_dumps(features.feature(i)) for i in rows) + "]}"


def test_geojson_files_are_the_json_of_their_features(table, tmp_path):
    """Fail-before: an infinite confidence was written as ``inf`` (a file json cannot read); now the files are
    byte for byte what ``json.dumps`` gives for the feature dicts, whatever the chunk size."""
    from cytoreview.export.geojson import write_geojson

    data = _odd(table)
    palette = class_colors([name for _, name in class_order(data)], {})
    features = _Features(data, palette, "point", 10.0)
    planes = features.planes
    for chunk in (2, 65536):
        paths = write_geojson(data, tmp_path / f"g{chunk}", palette, chunk=chunk)
        assert len(paths) == len(set(planes))
        for path in paths:
            rows = [i for i, p in enumerate(planes) if f"{p}.geojson" == path.name]
            text = path.read_text(encoding="utf-8")
            assert text == _expected_geojson(features, rows)
            json.loads(text)  # readable by json (Infinity, null)
    assert "Infinity" in "".join(p.read_text(encoding="utf-8") for p in paths)


def test_coco_file_is_the_json_of_build_coco(table, images, tmp_path):
    """``instances.json`` written a chunk of texts at a time is the text ``json.dumps`` gives for
    :func:`build_coco`'s dict (odd class names, inf / NaN / None confidences, fields, tiles, regions, cells)."""
    from cytoreview.export.coco import build_coco, write_coco

    data = _odd(table)
    with ImageSource(images) as source:
        paths = write_coco(data, tmp_path / "coco", source, include_paths=True)
        reference = build_coco(data, source, include_paths=True)
        written = json.loads(paths[0].read_text(encoding="utf-8"))
        reference["info"]["date_created"] = written["info"]["date_created"]
        assert paths[0].read_text(encoding="utf-8") == _dumps({k: reference[k] for k in (
            "info", "licenses", "images", "categories", "annotations")})
        assert any(a["confidence"] == float("inf") for a in written["annotations"])
        for split_path in paths[1:]:  # per split: the subset's annotations, ids as in the whole export
            split = split_path.stem.split("_", 1)[1]
            sub = json.loads(split_path.read_text(encoding="utf-8"))
            keep = {im["id"] for im in reference["images"] if im["split"] == split}
            assert sub["annotations"] == [a for a in written["annotations"] if a["image_id"] in keep]


def test_float_texts_are_what_json_dumps_writes():
    from cytoreview.export.jsontext import float_texts

    rng = np.random.default_rng(0)
    values = np.concatenate([
        np.round(rng.uniform(-5e4, 3e5, 20000), 3), np.round(rng.uniform(-1, 1, 20000), 4),
        np.round(rng.uniform(0, 2e9, 2000), 2), rng.uniform(-1e5, 1e5, 2000),
        [0.0, -0.0, 1e-4, -1e-4, 1.5e-4, 0.1 + 0.2, 2.0**31 - 0.5, 2.0**31, 1e16, 1e15 + 0.5, 5e-324, 1e300,
         262143.9999, 262144.0001, np.nan, np.inf, -np.inf],
    ])
    texts = float_texts(values)
    assert texts == [json.dumps(v) for v in values.tolist()]
    assert float_texts(values[-3:], nan="", inf="inf") == ["", "inf", "-inf"]
    assert all(float(t) == v for t, v in zip(texts[:-3], values[:-3].tolist()))


def test_csv_text_is_what_pandas_to_csv_writes(tmp_path):
    import pandas as pd

    from cytoreview.export.csvtext import write_frame_csv

    rng = np.random.default_rng(0)
    n = 3000
    odd = ["plain", "a,b", 'q"q', "line\nbreak", "cr\rhere", "", " lead", "Müller", None, '"', "x\r\n"]
    frame = pd.DataFrame({
        "text": pd.Series(np.array(odd, dtype=object)[rng.integers(0, len(odd), n)], dtype=object),
        "string": pd.Series(np.array(odd, dtype=object)[rng.integers(0, len(odd), n)], dtype="string"),
        "float": np.where(rng.random(n) < 0.1, np.nan, rng.normal(0, 1e6, n)),
        "edges": np.array([1e16, 1e-5, -0.0, np.inf, -np.inf, np.nan, 0.1, 123.0, 1e300, 5e-324] * (n // 10)),
        "rounded": np.round(rng.uniform(-1000, 1000, n), 3),
        "int": rng.integers(-10**12, 10**12, n), "small": rng.integers(0, 255, n).astype(np.uint8),
        "flag": rng.random(n) < 0.5,
        "mixed": pd.Series([1, 1.0, True, "1", None, np.float64(2.5), [1, 2], np.nan, 3, "a,b"] * (n // 10),
                           dtype=object),
        'odd "name", too': "cytoreview",
    })
    frame.to_csv(tmp_path / "pandas.csv", index=False, encoding="utf-8")
    write_frame_csv(frame, tmp_path / "ours.csv", chunk_rows=777)
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
    for name, value in (("single", np.float32(0.1)), ("when", pd.Timestamp("2026-12-02"))):
        frame[name] = value  # a dtype it does not format itself: pandas writes the file
        frame.to_csv(tmp_path / "pandas.csv", index=False, encoding="utf-8")
        write_frame_csv(frame, tmp_path / "ours.csv")
        assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
