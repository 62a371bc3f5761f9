"""The pipeline's shape: workers sized to the cores, store chunks written whole, results independent of the workers."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from .conftest import blob_slide, wsi
from tests.models.onnx_graphs import base_card, classifier_graph, write_pack

from cytoreview.inference import PredictionStore, predict
from cytoreview.inference.predict import pipeline_workers
from cytoreview.inference.store import TARGET_CHUNK_TILES, StoreError, chunk_layout
from cytoreview.io.image import Image
from cytoreview.models import load_pack


def test_workers_never_ask_for_more_cores_than_there_are():
    assert pipeline_workers(1, cores=2) == 2
    assert pipeline_workers(2, cores=2) == 1
    assert pipeline_workers(4, cores=2) == 1
    assert pipeline_workers(2, cores=16) == 8
    assert pipeline_workers(1, cores=16) == 16


def test_results_do_not_depend_on_the_number_of_workers(tmp_path):
    slide = wsi(blob_slide(160, 224, seed=3), path=tmp_path / "slide.tif")
    card = base_card("emb", outputs={"probabilities": {"name": "probs"}, "embedding": {"name": "embedding"}})
    pack = load_pack(write_pack(tmp_path / "p", card, classifier_graph, embedding=True))
    one = predict(slide, pack, tmp_path / "one", threads=1, readers=1, batch_size=3)
    three = predict(slide, pack, tmp_path / "three", threads=1, readers=3, batch_size=3)
    for name in ("tile_class", "tile_prob", "tile_uncertainty", "embedding", "done", "tissue"):
        a, b = np.asarray(one.group[name][...]), np.asarray(three.group[name][...])
        assert a.tobytes() == b.tobytes(), name
    assert one.complete and three.complete


def test_store_chunks_are_blocks_of_rows_and_done_is_one_chunk(tmp_path):
    slide = wsi(blob_slide(96, 128), path=tmp_path / "slide.tif")
    store = predict(slide, load_pack(write_pack(tmp_path / "p", base_card("p"), classifier_graph)), tmp_path / "o",
                    threads=1)
    n_fields, n_rows, n_cols = store.grid_shape
    assert store.tile_class.chunks == (1, n_rows, n_cols)  # a small grid is one chunk, written whole
    assert store.done.chunks == store.done.shape
    chunk_files = [p for p in (store.path / "tile_class").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(chunk_files) == 1


def test_chunk_layout_follows_band_rows_and_whole_fields():
    class G:  # a grid-like object: only the sizes matter
        def __init__(self, nf, nr, nc):
            self.n_fields, self.n_rows, self.n_cols = nf, nr, nc

    cf, cr = chunk_layout(G(1, 2000, 1000), rows_per_band=8)
    assert cf == 1 and cr % 8 == 0 and cr * 1000 >= TARGET_CHUNK_TILES and cr < 2000
    cf, cr = chunk_layout(G(500, 5, 8), rows_per_band=1)
    assert cr == 5 and cf == TARGET_CHUNK_TILES // 40  # whole small fields per chunk
    cf, cr = chunk_layout(G(3, 5, 8))
    assert (cf, cr) == (3, 5)
    # a segmenter's wide mask rows: the buffered block stays bounded
    cf, cr = chunk_layout(G(1, 400, 400), rows_per_band=4, bytes_per_tile=6 * 256 * 256)
    assert cr * 400 * 6 * 256 * 256 <= 64 * 1024**2 or cr == 1


def test_field_set_chunks_hold_several_fields(tmp_path):
    fields = np.full((6, 32, 48, 3), 245, dtype=np.uint8)
    fields[:, :16, :16] = [220, 30, 30]
    image = Image(path=tmp_path / "case", kind="fields", levels=[fields], mpp=0.5, reader="test")
    store = predict(image, load_pack(write_pack(tmp_path / "p", base_card("p"), classifier_graph)), tmp_path / "o",
                    threads=1)
    assert store.tile_class.chunks[:2] == (6, 2)
    assert (store.tile_class[:][:, 0, 0] == 0).all()


def test_the_reader_opens_a_cells_only_store_and_names_what_is_missing(tmp_path):
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="w")
    g.attrs.update({"pack": "cells", "pack_version": "1", "tile_px_level0": 16, "n_fields": 1,
                    "classes": [{"id": 0, "name": "bg"}, {"id": 1, "name": "cell"}], "complete": True})
    cells = g.create_group("cells")
    for name, dtype in (("field", "int32"), ("y_px", "float64"), ("x_px", "float64"), ("class", "int16"),
                        ("score", "float32")):
        cells.create_array(name, shape=(2,), dtype=dtype)[...] = np.array([0, 0]) if name == "field" else [1, 1]
    store = PredictionStore(tmp_path / "c.zarr")
    calls = store.cell_calls()
    assert len(calls.field) == 2 and np.allclose(calls.uncertainty, 0.0)
    assert store.tile_calls() is None
    with pytest.raises(StoreError, match="no tile arrays"):
        store.tile_class  # noqa: B018
    del g.attrs["n_fields"]
    with pytest.raises(StoreError, match="n_fields"):
        PredictionStore(tmp_path / "c.zarr")
    with pytest.raises(StoreError, match="does not exist"):
        PredictionStore(tmp_path / "nothing.zarr")


def test_batches_straddling_store_blocks_give_the_same_store_as_one_block(tmp_path, monkeypatch):
    """Blocks of 2 rows and batches of 5 tiles: most batches end in the next block (the results are split between
    their buffers); the store equals that of a run whose grid is one block."""
    import importlib

    predict_module = importlib.import_module("cytoreview.inference.predict")

    slide = wsi(blob_slide(160, 224, seed=4), path=tmp_path / "slide.tif")
    card = base_card("emb", outputs={"probabilities": {"name": "probs"}, "embedding": {"name": "embedding"}})
    pack = load_pack(write_pack(tmp_path / "p", card, classifier_graph, embedding=True))
    whole = predict(slide, pack, tmp_path / "whole", threads=1, readers=2, batch_size=5, tissue_threshold=0)
    monkeypatch.setattr(predict_module, "chunk_layout", lambda grid, rows_per_band, bytes_per_tile: (1, 2))
    split = predict(slide, pack, tmp_path / "split", threads=1, readers=2, batch_size=5, tissue_threshold=0)
    assert split.tile_class.chunks[1] == 2 < split.grid_shape[1] and whole.tile_class.chunks[1] > 2
    for name in ("tile_class", "tile_prob", "tile_uncertainty", "embedding", "done"):
        a, b = np.asarray(whole.group[name][...]), np.asarray(split.group[name][...])
        assert a.tobytes() == b.tobytes(), name
    assert split.complete and bool(np.asarray(split.done[...]).all())


def test_work_units_are_the_batches_of_one_band_and_the_tail_is_split():
    from cytoreview.inference.predict import work_units

    class Reader:  # bands of 4 rows x 4 columns
        def band_key(self, tile):
            return int(tile[0]), int(tile[1]) // 4, int(tile[2]) // 4

    tiles = np.array([(0, r, c) for br in range(3) for bc in range(2) for r in range(4 * br, 4 * br + 4)
                      for c in range(4 * bc, 4 * bc + 4)], dtype=np.int64)
    batches = [tiles[i : i + 5] for i in range(0, len(tiles), 5)]
    units = work_units(batches, Reader(), n_workers=2)
    assert [b for unit in units for b in unit] == batches  # every batch once, in order
    firsts = [Reader().band_key(unit[0][0]) for unit in units]
    assert firsts[:4] == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)]
    assert all(Reader().band_key(b[0]) == Reader().band_key(unit[0][0]) for unit in units for b in unit)
    assert [len(u) for u in units[-3:]] == [1, 1, 1] and len(units[0]) == 4  # the last two bands, batch by batch
    assert [len(u) for u in work_units(batches, Reader(), n_workers=1)] == [4, 3, 3, 3, 3, 4]


def test_a_cancel_seen_first_by_a_worker_ends_the_run_and_it_resumes_identically(tmp_path):
    """The cancel is set inside a batch: that worker's next batch never runs (its result is cancelled), the main
    thread stops on it instead of waiting, finished rows are kept, and resuming gives the uninterrupted store."""
    import threading

    from .conftest import CountingSession

    slide = wsi(blob_slide(160, 224, seed=5), path=tmp_path / "slide.tif")
    pack = load_pack(write_pack(tmp_path / "p", base_card("p"), classifier_graph))
    whole = predict(slide, pack, tmp_path / "whole", threads=1, readers=2, batch_size=3, tissue_threshold=0)
    cancel = threading.Event()

    class Cancelling(CountingSession):
        def run_prepared(self, x):
            if self.calls == 5:
                cancel.set()
            return super().run_prepared(x)

    sess = Cancelling(pack.session(threads=1))
    part = predict(slide, pack, tmp_path / "out", session=sess, readers=2, batch_size=3, tissue_threshold=0,
                   cancel=cancel)
    assert not part.complete and sess.calls < 20
    resumed = predict(slide, pack, tmp_path / "out", threads=1, readers=2, tissue_threshold=0)
    assert resumed.complete
    for name in ("tile_class", "tile_prob", "tile_uncertainty", "done"):
        assert np.asarray(whole.group[name][...]).tobytes() == np.asarray(resumed.group[name][...]).tobytes(), name


@pytest.mark.parametrize("activation, readers", [("softmax", 1), ("sigmoid", 1), ("softmax", 2)])
def test_a_units_class_and_uncertainty_are_those_of_its_batches_run_one_by_one(tmp_path, activation, readers):
    """A tile classifier's class and uncertainty are computed once per unit of batches (one worker: the whole band,
    47 batches, is one unit): bit for bit what the session gives batch by batch; progress still comes after every
    batch."""
    from cytoreview.inference.grid import PatchReader, make_grid
    from cytoreview.models.session import normalised_entropy

    slide = wsi(blob_slide(160, 224, seed=6), path=tmp_path / "slide.tif")
    card = base_card("emb", outputs={"probabilities": {"name": "probs", "activation": activation},
                                     "embedding": {"name": "embedding"}})
    pack = load_pack(write_pack(tmp_path / "p", card, classifier_graph, embedding=True))
    seen = []
    store = predict(slide, pack, tmp_path / "o", threads=1, readers=readers, batch_size=3, tissue_threshold=0,
                    progress=lambda done, total: seen.append(done))
    sess = pack.session(threads=1)
    grid = make_grid(slide, pack)
    tiles = np.argwhere(np.ones((1, grid.n_rows, grid.n_cols), dtype=bool))
    reader = PatchReader(grid, slide, tiles)
    ordered = reader.order(tiles)
    assert len({reader.band_key(t) for t in ordered}) == 1 and len(ordered) == 140
    prob, emb, unc, cls = (np.asarray(a[...]) for a in (store.tile_prob, store.embedding, store.tile_uncertainty,
                                                         store.tile_class))
    for i in range(0, len(ordered), 3):
        batch = ordered[i : i + 3]
        result = sess.run(reader.read(batch))
        f, r, c = batch.T
        assert prob[f, r, c].tobytes() == result["probs"].tobytes()
        assert emb[f, r, c].tobytes() == result["embedding"].tobytes()
        assert unc[f, r, c].tobytes() == normalised_entropy(result["probs"], activation).tobytes()
        assert (cls[f, r, c] == np.argmax(result["probs"], axis=-1)).all()
    assert seen == [0, *range(3, len(ordered), 3), len(ordered)]
