"""Write ``v2_project/`` here: a small schema-version-2 project as cytoreview wrote it before the items identity key
(schema 3), for the 2 -> 3 migration test (tests/review/test_migration_v3.py). Run once with the version-2 code:

    PYTHONPATH=src python tests/review/data/make_v2_project.py

It holds fields (multi-label), cells (points and polygons, with model calls), tiles, regions, two reviewers'
labels, an undo and a redo, an accepted call and a class merge; ``v2_expected.json`` beside it records, as the
version-2 code read them back, every item's label, the journal (history) and the journal check. The image path is
stored relative (``case_A``) so the fixture names no machine's folder.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from tests.review.conftest import write_fieldset  # noqa: E402

from cytoreview.review import Project, edits  # noqa: E402


def build(folder: Path, fieldset: Path) -> None:
    with Project.open(folder, create=True) as p:
        img = p.add_image(fieldset, kind="fields", mpp=0.293, case_id="A", plane_shape=(1208, 1928))
        benign = p.schema.add("benign").id
        malignant = p.schema.add("malignant").id
        p.schema.add("atypical")
        cells = [{"level": "cell", "field": k % 2, "geometry": {"type": "point", "y": 10.5 * k, "x": 3 * k},
                  "model": "det@1.0.0", "model_class": k % 2, "model_prob": 0.5 + k / 100,
                  "uncertainty": 0.5 - k / 100} for k in range(40)]
        cells += [{"level": "cell", "geometry": {"type": "polygon", "coords": [[100 + k, 100], [110 + k, 105.25],
                                                                               [104 + k, 120]]},
                   "model": "det@1.0.0", "model_class": benign, "model_prob": 0.9, "uncertainty": 0.1}
                  for k in range(5)]
        tiles = [{"level": "tile", "field": f, "geometry": {"type": "tile", "row": r, "col": c, "size_px": 400},
                  "model": "tiles@2.0.0", "model_class": (r + c) % 2, "model_prob": 0.7, "uncertainty": 0.3}
                 for f in range(2) for r in range(3) for c in range(5)]
        fields = [{"level": "field", "field": f, "model": "fields@1.0.0", "model_labels": [0, 1][:f + 1],
                   "model_prob": 0.6, "uncertainty": 0.4} for f in range(2)]
        ids = p.add_items(img, cells + tiles + fields)
        for i in ids[:8]:
            p.set_label(i, malignant, "ana", dwell_s=1.25)
        p.set_label(ids[-1], [benign, malignant], "ana")
        p.undo("ana")
        p.redo("ana")
        p.undo("ana")
        p.accept(ids[9], "ana")
        p.set_label(ids[0], benign, "ben", dwell_s=0.5)
        p.set_label(ids[3], benign, "ben")
        p.set_labels(ids[50:54], malignant, "ben")
        edits.add_region(p, img, 0, [[0, 0], [0, 300], [200, 300], [200, 0]], malignant, "ana")
        edits.add_cell(p, img, 1, 55.5, 66.25, benign, "ben")
        edits.delete_cells(p, [ids[12]], "ana")
        p.schema.merge(p.schema.by_name("atypical").id, malignant, "ana")
        p.set_cursor("ana", ids[5], "uncertainty")
    con = sqlite3.connect(folder / "project.sqlite")
    con.execute("UPDATE images SET path = 'case_A'")  # not part of the journal's hash chain
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("VACUUM")
    con.close()


def expected(folder: Path) -> dict:
    with Project.open(folder) as p:
        check = p.verify_journal()
        items = p.items()
        history = p.history()
        return {"user_version": p.db.read(lambda con: con.execute("PRAGMA user_version").fetchone()[0]),
                "verify_ok": bool(check.ok), "n_journal": int(check.n_rows),
                "items": json.loads(items.to_json(orient="records")),
                "history": json.loads(history.to_json(orient="records")),
                "reviewer_labels": {r: {str(k): v for k, v in p.reviewer_labels(r).items()} for r in p.reviewers()},
                "cursor": list(p.cursor("ana"))}


def main() -> int:
    out = HERE / "v2_project"
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build(tmp / "proj", write_fieldset(tmp / "case_A", 2))
        out.mkdir()
        shutil.copy(tmp / "proj" / "project.sqlite", out / "project.sqlite")
    (HERE / "v2_expected.json").write_text(json.dumps(expected(out), indent=1, sort_keys=True) + "\n")
    for extra in out.iterdir():  # opening it to read back may have left WAL files or a predictions folder
        if extra.name != "project.sqlite":
            shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
