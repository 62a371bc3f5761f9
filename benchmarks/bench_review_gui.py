"""Benchmark: correction -> journal -> screen latency of the review dock with 100,000 cells.

A real napari viewer (run under Xvfb: ``xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_review_gui.py``)
shows a field set with a cells Points layer of 100,000 points carrying features (class, class_id, score), built as
the GUI contract says, and the review dock on it at cell level. Each operation is what a key press does:
``ReviewWidget.on_action("class:k")`` = ``Project.set_label`` (committed, fsync) -> Points features/colours ->
next queue item (cursor committed, view centred, marker drawn, point selected).

Figures (milliseconds, p50 / p95 over ``--ops`` corrections):

* ``reference``: bare ``Project.set_label`` on the same project (the durable journal write alone);
* ``correction``: the whole key action, until every model and layer is updated (what Python does);
* ``correction + paint``: that, then the event loop runs until the canvas has been redrawn once. Under Xvfb the
  redraw is software OpenGL (llvmpipe) on the CPU, so this figure is a worst case, not what a GPU shows.

The ratio printed is correction p95 / reference p95; the product goal is correction p95 <= 50 ms.

Usage: python benchmarks/bench_review_gui.py [--cells 100000] [--fields 8] [--ops 120] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests._napari.test_review_support

from _common import Ratio, print_table, write_json


def _pct(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


def write_case(base: Path, n_fields: int, n_cells: int, seed: int = 0) -> tuple[Path, Path]:
    """A CytoScan-size field set and a prediction store with tiles and ``n_cells`` cells."""
    import zarr
    from PIL import Image as PILImage

    from tests._napari.test_review_support import PACK_CLASSES

    folder = base / "case"
    folder.mkdir(parents=True)
    h, w = 1208, 1928
    for i in range(n_fields):
        PILImage.new("RGB", (w, h), (230 - 5 * i, 220, 228)).save(folder / f"field_{i:03d}.jpg")
    rng = np.random.default_rng(seed)
    t = 256
    n_rows, n_cols = -(-h // t), -(-w // t)
    probs = rng.dirichlet(np.ones(len(PACK_CLASSES)), size=(n_fields, n_rows, n_cols)).astype(np.float32)
    store = base / "case__warthin-tiles@1.0.0.zarr"
    g = zarr.open_group(str(store), mode="w")
    g.attrs.update({"pack": "warthin-tiles", "pack_version": "1.0.0", "task": "segmentation",
                    "image_path": str(folder), "model_mpp": 0.586, "level": 0, "tile_px_level0": t,
                    "n_fields": n_fields, "classes": PACK_CLASSES, "complete": True})
    ent = -(probs * np.log(probs)).sum(-1) / np.log(len(PACK_CLASSES))
    for name, data in (("tile_class", probs.argmax(-1).astype(np.int16)), ("tile_prob", probs),
                       ("tile_uncertainty", ent.astype(np.float32)),
                       ("tissue", np.ones(probs.shape[:3], dtype=bool))):
        g.create_array(name, shape=data.shape, dtype=data.dtype)[...] = data
    cg = g.create_group("cells")
    cells = {"field": rng.integers(0, n_fields, n_cells).astype(np.int32),
             "y_px": rng.uniform(0, h - 1, n_cells).astype(np.float32),
             "x_px": rng.uniform(0, w - 1, n_cells).astype(np.float32),
             "class": rng.integers(0, len(PACK_CLASSES), n_cells).astype(np.int16),
             "score": rng.uniform(0.3, 1.0, n_cells).astype(np.float32)}
    for name, arr in cells.items():
        cg.create_array(name, shape=arr.shape, dtype=arr.dtype)[...] = arr
    return folder, store


def run():
    """Return the ratio rows for ``benchmarks/run_all.py`` (needs an X server: run run_all under xvfb-run)."""
    return measure([])


def main(argv=None) -> int:
    measure(argv)
    return 0


def measure(argv=None) -> list:
    """Run the measurement, print it and return the ratio rows."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--fields", type=int, default=8)
    ap.add_argument("--ops", type=int, default=120)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("XDG_CONFIG_HOME", tempfile.mkdtemp(prefix="bench_review_gui_cfg_"))

    import napari
    from qtpy.QtWidgets import QApplication

    from cytoreview._napari.layers import image_layer_data
    from cytoreview._napari.review_widget import ReviewWidget
    from cytoreview.io import open_image
    from tests._napari.test_review_support import add_overlays

    base = Path(tempfile.mkdtemp(prefix="bench_review_gui_", dir=args.dir))
    t0 = time.perf_counter()
    folder, store = write_case(base, args.fields, args.cells)
    print(f"case written in {time.perf_counter() - t0:.1f} s: {args.fields} fields, {args.cells:,} cells")

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    data, kwargs, _ = image_layer_data(open_image(folder))
    image_layer = viewer.add_image(data, **kwargs)
    overlays = add_overlays(viewer, store, image_layer)
    cells = overlays["cells"]
    assert len(cells.data) == args.cells and len(cells.features) == args.cells
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="cytoreview: review")
    widget.reviewer_edit.setText("bench")
    widget.level_combo.setCurrentText("cell")
    t0 = time.perf_counter()
    session = widget.open_session()
    t_open = time.perf_counter() - t0
    print(f"project created, {session.project.n_items():,} items imported and dock attached in {t_open:.1f} s")
    app = QApplication.instance()
    for _ in range(5):
        app.processEvents()

    rng = np.random.default_rng(1)
    qt_canvas = viewer.window._qt_viewer.canvas
    drawn = []
    qt_canvas._scene_canvas.events.draw.connect(lambda e: drawn.append(time.perf_counter()))

    def wait_paint(deadline_s=5.0):
        n = len(drawn)
        end = time.perf_counter() + deadline_s
        while len(drawn) == n and time.perf_counter() < end:
            app.processEvents()

    correction, with_paint, journal, layer, advance, same_field = [], [], [], [], [], []
    for k in range(args.ops):
        assert session.current is not None and session.current.level == "cell"
        iid = int(session.current.item_id)
        field_before = int(session.current.field)
        key = str(int(rng.integers(1, 5)))
        t0 = time.perf_counter()
        widget.on_action(f"class:{key}")
        t1 = time.perf_counter()
        wait_paint()
        t2 = time.perf_counter()
        correction.append(t1 - t0)
        with_paint.append(t2 - t0)
        timing = session.last_timing_s
        journal.append(timing["journal"])
        layer.append(timing["layer"])
        advance.append(timing["advance"])
        same_field.append(session.current is not None and int(session.current.field) == field_before)
        if k == 0:  # check it really happened: journal row, layer features
            row = session.cells.row_of[iid]
            name = session.project.schema.get(widget._hotkeys[key]).name
            assert session.project.history(item_id=iid).iloc[-1]["action"] == "set"
            assert cells.features["class"].iloc[row] == name, "layer not updated"

    # reference: the bare durable journal write, same project, same disk
    ids = session.project.items(image_id=session.image_id, level="cell")["item_id"].to_numpy()
    reference = []
    for k in range(args.ops):
        iid = int(ids[rng.integers(0, len(ids))])
        t0 = time.perf_counter()
        session.project.set_label(iid, [int(rng.integers(0, 4))], "bench-ref")
        reference.append(time.perf_counter() - t0)

    print(f"\n{'ms over ' + str(args.ops) + ' corrections':44s} {'p50':>8s} {'p95':>8s} {'max':>8s}")
    visible = np.add(journal, layer)
    adv = np.asarray(advance)
    same = np.asarray(same_field)
    for name, vals in (("reference: Project.set_label alone", reference),
                       ("  key: Project.set_label (journal)", journal),
                       ("  key: layer features + colours", layer),
                       ("correction = journal + layer", visible),
                       ("  key: next item, same field", adv[same] if same.any() else [np.nan]),
                       ("  key: next item, other field (re-slice)", adv[~same] if (~same).any() else [np.nan]),
                       ("whole key action (correction + next item)", correction),
                       ("whole key action + canvas redraw (sw GL)", with_paint)):
        print(f"{name:44s} {_pct(vals, 50):8.1f} {_pct(vals, 95):8.1f} {_pct(vals, 100):8.1f}")
    p95 = _pct(visible, 95)
    print(f"\ncorrection (journal + layer) p95 = {p95:.1f} ms -> goal <= 50 ms: {'met' if p95 <= 50 else 'NOT met'}; "
          f"{int((~same).sum())} of {len(same)} moves changed field")
    rows = [Ratio(f"correction p95 vs set_label p95 ({args.cells:,} cells)", p95, _pct(reference, 95),
                  "ms", "<= 10.0", note=f"absolute p95 {p95:.1f} ms"),
            Ratio("whole key action p95 vs set_label p95", _pct(correction, 95), _pct(reference, 95), "ms",
                  "<= 10.0", note=f"with software-GL redraw {_pct(with_paint, 95):.0f} ms")]
    print_table(rows)
    if args.json:
        write_json(rows, args.json)
    widget.close_session()
    viewer.close()
    return rows


if __name__ == "__main__":
    sys.exit(main())
