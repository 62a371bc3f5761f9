"""Durability: a confirmed change survives kill -9; two processes never lose each other's changes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cytoreview.review import Project

WRITER = Path(__file__).with_name("_writer.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture
def cells(tmp_path, fieldset):
    folder = tmp_path / "proj"
    with Project.open(folder, create=True) as p:
        img = p.add_image(fieldset, kind="fields", mpp=0.293)
        p.schema.add("benign")
        p.schema.add("malignant")
        ids = p.add_items(img, [{"level": "cell", "geometry": {"type": "point", "y": i, "x": 2 * i},
                                 "model": "m@1", "model_class": 0, "model_prob": 0.7, "uncertainty": 0.3}
                                for i in range(50)])
    return folder, ids


def _writer(folder, reviewer, n, ids, seed):
    return subprocess.Popen([sys.executable, str(WRITER), str(folder), reviewer, str(n), ",".join(map(str, ids)),
                             str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def test_every_confirmed_change_survives_kill_9(cells):
    folder, ids = cells
    proc = _writer(folder, "killed", 0, ids, seed=1)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    confirmed = []
    try:
        while len(confirmed) < 60:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            confirmed.append(tuple(int(v) for v in line.split()))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    confirmed += [tuple(int(v) for v in line.split()) for line in proc.stdout.read().splitlines()]
    proc.stdout.close()
    proc.stderr.close()
    with Project.open(folder) as p:
        h = p.history(reviewer="killed").set_index("journal_id")
        for jid, item, cls in confirmed:
            assert jid in h.index, f"confirmed journal row {jid} lost"
            assert h.loc[jid, "item_id"] == item and h.loc[jid, "new"] == [cls]
        # the items table agrees with the journal: each item holds its newest journalled label
        items = p.items().set_index("item_id")
        for item, rows in h.groupby("item_id"):
            assert items.loc[item, "label"] == rows["new"].iloc[-1]


def test_two_processes_500_corrections_each_lose_nothing(cells):
    folder, ids = cells
    procs = [_writer(folder, name, 500, ids, seed=k) for k, name in enumerate(("ann", "bob"))]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        outs.append([tuple(int(v) for v in line.split()) for line in out.splitlines()[1:]])
    assert [len(o) for o in outs] == [500, 500]
    with Project.open(folder) as p:
        h = p.history()
        sets = h[h["action"] == "set"]
        assert len(sets) == 1000
        assert sorted(sets["journal_id"]) == sorted(j for o in outs for j, _, _ in o)
        items = p.items().set_index("item_id")
        for item, rows in h.groupby("item_id"):
            rows = rows.sort_values("journal_id")
            # no lost update: every change read the value the previous committed change wrote
            assert rows["old"].iloc[1:].tolist() == rows["new"].iloc[:-1].tolist(), item
            assert items.loc[item, "label"] == rows["new"].iloc[-1]


def test_conflict_on_one_item_newest_wins_both_kept(cells):
    folder, ids = cells
    with Project.open(folder) as p1, Project.open(folder) as p2:
        j1 = p1.set_label(ids[0], 1, "ann")
        j2 = p2.set_label(ids[0], 0, "bob")
        assert p1.item(ids[0]).label == [0] and p1.item(ids[0]).reviewer == "bob"
        h = p1.history(ids[0])
        assert h["journal_id"].tolist()[-2:] == [j1, j2]
        assert h["old"].tolist()[-1] == [1]  # bob's change read ann's committed value
        assert p1.reviewer_labels("ann")[ids[0]] == [1] and p1.reviewer_labels("bob")[ids[0]] == [0]
