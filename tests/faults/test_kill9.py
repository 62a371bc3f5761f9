"""kill -9 of real processes during prediction, review (undo/redo bursts) and export; then recovery."""

from __future__ import annotations

import json
import selectors
import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.faults.conftest import kill9, read_until, spawn
from tests.inference.conftest import blob_slide, write_tiff
from tests.io.conftest import write_fields
from tests.models.onnx_graphs import base_card, write_pack

from cytoreview.inference import predict
from cytoreview.models import load_pack
from cytoreview.review import Project
from cytoreview.review.connection import DB_NAME

DEADLINE_S = 60


def _arrays(group, prefix=""):
    """Every array of a zarr group (recursively) as numpy, by path."""
    out = {}
    for name, arr in group.arrays():
        out[prefix + name] = np.asarray(arr[...])
    for name, sub in group.groups():
        out.update(_arrays(sub, f"{prefix}{name}/"))
    return out


# ------------------------------------------------------------------------------------------------ prediction
def test_kill_9_during_predict_then_resume_is_bit_identical(tmp_path):
    import zarr

    slide = write_tiff(tmp_path / "slide.tif", blob_slide(256, 384, seed=5))
    pack_dir = write_pack(tmp_path / "packs" / "slowish", base_card("slowish"))
    out = tmp_path / "killed"
    proc = spawn("_predict_worker.py", slide, pack_dir, out, 0.06)
    start = time.monotonic()
    try:
        def half_done(line):
            parts = line.split()
            return (parts[0] == "progress" and int(parts[1]) * 2 >= int(parts[2])
                    and time.monotonic() - start > 1.0) or time.monotonic() - start > DEADLINE_S

        lines = read_until(proc, half_done)
        assert not lines[-1].startswith("finished")
    finally:
        kill9(proc)
    stores = list(out.glob("*.zarr"))
    assert len(stores) == 1
    partial = zarr.open_group(str(stores[0]), mode="r")
    assert partial.attrs["complete"] is False
    done = np.asarray(partial["done"][...])
    assert 0 < done.sum() < done.size, "the kill should land after some rows were written and before the end"

    pack = load_pack(pack_dir)
    resumed = predict(slide, pack, out, threads=1, resume=True)
    reference = predict(slide, pack, tmp_path / "reference", threads=1, batch_size=4)
    assert resumed.complete and resumed.path == stores[0]
    got = _arrays(zarr.open_group(str(resumed.path), mode="r"))
    want = _arrays(zarr.open_group(str(reference.path), mode="r"))
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype and got[key].tobytes() == want[key].tobytes(), key
    assert (got["tile_class"] >= 0).sum() > 20


# ------------------------------------------------------------------------------------------------ review
def _n_actions(lines):
    return sum(line.split()[0] in ("set", "undo", "redo") for line in lines)


def _journal_is_consistent(folder, ids):
    """For every item: journal rows chain (old == previous new), and the item's label is the last new."""
    with Project.open(folder) as p:
        history = p.history()
        items = p.items()
    labels = dict(zip(items["item_id"], items["label"]))
    for item, rows in history.groupby("item_id"):
        previous = None
        for row in rows.itertuples():
            assert row.old == previous, f"item {item}: journal row {row.journal_id} old={row.old} != {previous}"
            previous = row.new
        assert labels[item] == previous, f"item {item}: label {labels[item]} but journal ends at {previous}"
    untouched = set(ids) - set(history["item_id"])
    assert all(labels[i] is None for i in untouched)
    # a group of rows (one key press, or the undo / redo of one) is on disk whole or not at all
    with sqlite3.connect(Path(folder) / DB_NAME) as con:
        prevs = dict(con.execute("SELECT id, prev FROM journal"))
    for jid, prev in prevs.items():
        span = (json.loads(prev) or {}).get("group") if prev else None
        if span:
            assert all(json.loads(prevs[k]).get("group") == span for k in range(span[0], span[1] + 1)), (jid, span)
    return history


@pytest.fixture
def review_project(tmp_path):
    fields = write_fields(tmp_path / "case", 2)[0].parent
    folder = tmp_path / "proj"
    with Project.open(folder, create=True) as p:
        img = p.add_image(fields, kind="fields", mpp=0.293)
        p.schema.add("benign")
        p.schema.add("malignant")
        ids = p.add_items(img, [{"level": "cell", "geometry": {"type": "point", "y": i, "x": i}} for i in range(20)])
    return folder, ids


def test_kill_9_during_undo_redo_bursts_keeps_the_journal_chained(review_project):
    folder, ids = review_project
    procs = [spawn("_undo_worker.py", folder, name, ",".join(map(str, ids)), seed)
             for name, seed in (("ana", 1), ("ben", 2))]
    confirmed = {proc.pid: [] for proc in procs}
    try:
        for proc in procs:
            read_until(proc, lambda line: line == "ready")
        # both bursts run at once; read both pipes as lines come (an unread pipe would let its writer run on) and
        # kill both as soon as each has 150 confirmed actions
        selector = selectors.DefaultSelector()
        for proc in procs:
            selector.register(proc.stdout, selectors.EVENT_READ, proc)
        deadline = time.monotonic() + DEADLINE_S
        while min(_n_actions(lines) for lines in confirmed.values()) < 150:
            assert time.monotonic() < deadline, {pid: _n_actions(lines) for pid, lines in confirmed.items()}
            for key, _ in selector.select(timeout=1):
                line = key.fileobj.readline()
                assert line, f"worker died: {key.data.stderr.read()}"
                confirmed[key.data.pid].append(line.strip())
    finally:
        for proc in procs:
            kill9(proc)
    history = _journal_is_consistent(folder, ids)
    journal_ids = set(history["journal_id"])
    actions = [line.split() for lines in confirmed.values() for line in lines]
    acknowledged = [int(a[1]) for a in actions if a[0] in ("set", "undo", "redo") and a[1] != "None"]
    assert acknowledged and set(acknowledged) <= journal_ids  # every confirmed change is in the journal
    assert {"undo", "redo"} <= set(history["action"])
    with Project.open(folder) as p:  # the reopened project still works: undo after the crash
        for reviewer in ("ana", "ben"):
            p.undo(reviewer, force=True)
            p.redo(reviewer, force=True)
    _journal_is_consistent(folder, ids)


# ------------------------------------------------------------------------------------------------ load
def test_two_processes_1000_corrections_each_none_lost(review_project):
    from tests.review.test_durability import WRITER, _env
    import subprocess
    import sys

    folder, ids = review_project
    procs = [subprocess.Popen([sys.executable, str(WRITER), str(folder), name, "1000", ",".join(map(str, ids)),
                               str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for name, seed in (("ana", 11), ("ben", 12))]
    outputs = {}
    try:
        for proc, name in zip(procs, ("ana", "ben")):
            out, err = proc.communicate(timeout=DEADLINE_S)
            assert proc.returncode == 0, err
            outputs[name] = [tuple(int(v) for v in line.split()) for line in out.splitlines()[1:]]
    finally:
        for proc in procs:
            if proc.poll() is None:
                kill9(proc)
    with Project.open(folder) as p:
        history = p.history()
    for name, confirmed in outputs.items():
        assert len(confirmed) == 1000
        mine = history[history["reviewer"] == name]
        assert len(mine) == 1000
        by_id = mine.set_index("journal_id")
        for jid, item, cls in confirmed:
            assert by_id.loc[jid, "item_id"] == item and by_id.loc[jid, "new"] == [cls]
    assert len(history) == 2000 and history["journal_id"].is_unique


# ------------------------------------------------------------------------------------------------ export
@pytest.fixture
def export_project_folder(tmp_path):
    fields = write_fields(tmp_path / "case", 3)[0].parent
    folder = tmp_path / "proj"
    with Project.open(folder, create=True) as p:
        img = p.add_image(fields, kind="fields", mpp=0.293, case_id="A")
        a = p.schema.add("benign", level="cell")
        b = p.schema.add("malignant", level="cell")
        ids = p.add_items(img, [{"level": "cell", "field": k % 3, "geometry": {"type": "point", "y": 10 + k % 40,
                                                                                  "x": 10 + k % 70}}
                                for k in range(240)])
        for n, i in enumerate(ids):
            p.set_label(i, (a.id, b.id)[n % 2], "ana")
    return folder


def _no_half_files(out):
    for path in out.rglob("*"):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(out).parts):
            continue  # hidden .<name>.partial-<pid> folders are the staging area, not presented as output
        if path.suffix in (".json", ".geojson"):
            json.loads(path.read_text("utf-8"))
        elif path.suffix == ".csv":
            pd.read_csv(path)
        elif path.suffix == ".png":
            from PIL import Image as PILImage

            with PILImage.open(path) as im:
                im.load()


def test_kill_9_during_export_marks_incomplete_and_a_rerun_completes(export_project_folder, tmp_path):
    out = tmp_path / "export"
    proc = spawn("_export_worker.py", export_project_folder, out, 0.01)
    try:
        read_until(proc, lambda line: line.startswith("stage imagefolder") and line.split()[2] != "0")
    finally:
        kill9(proc)
    assert (out / "_INCOMPLETE").exists()
    assert not (out / "export.json").exists()
    assert not (out / "imagefolder").exists()  # the folder appears only when all crops are in
    _no_half_files(out)

    from cytoreview.export import export_project

    result = export_project(export_project_folder, out, ["csv", "geojson", "coco", "imagefolder"], select="reviewed",
                            crop_px=16)
    assert not (out / "_INCOMPLETE").exists()
    _no_half_files(out)
    assert len(pd.read_csv(result["csv"])) == 240
    meta = pd.read_csv(result["imagefolder"] / "metadata.csv")
    assert len(meta) == 240 and all((result["imagefolder"] / f).is_file() for f in meta["file_name"])


def test_rerun_after_a_killed_export_leaves_no_staging_litter(export_project_folder, tmp_path):
    out = tmp_path / "export"
    proc = spawn("_export_worker.py", export_project_folder, out, 0.01)
    try:
        read_until(proc, lambda line: line.startswith("stage imagefolder") and line.split()[2] != "0")
    finally:
        kill9(proc)
    from cytoreview.export import export_project

    export_project(export_project_folder, out, ["csv", "imagefolder"], select="reviewed", crop_px=16)
    litter = [p.name for p in out.iterdir() if ".partial" in p.name]
    assert not litter, litter
