"""``cytoreview models`` / ``cytoreview predict`` and predict_many on a dask LocalCluster."""

from __future__ import annotations

import json

import numpy as np
import pytest
from .conftest import blob_slide, write_tiff
from tests.models.onnx_graphs import base_card, classifier_graph, write_pack

import cytoreview.cli
from cytoreview.inference import PredictionStore, predict
from cytoreview.models import load_pack


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """``cytoreview.cli.main`` that sees only the test's packs."""
    monkeypatch.delenv("CYTOREVIEW_MODEL_PATH", raising=False)
    monkeypatch.setattr("cytoreview._paths.bundled_dir", lambda name: tmp_path / "no-bundled")
    return cytoreview.cli.main


@pytest.fixture
def packs(tmp_path):
    root = tmp_path / "packs"
    write_pack(root / "colours", base_card("colours"), classifier_graph)
    write_pack(
        root / "kerne",
        base_card("kerne", classes=[{"id": i, "name": n} for i, n in enumerate(["Glas", "Kern", "Zelle"])]),
        classifier_graph,
    )
    return root


def test_models_lists_packs(cli, packs, capsys):
    assert cli(["models", "--path", str(packs), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(p["name"], p["version"], p["task"], p["mpp"], p["size_px"]) for p in listed] == [
        ("colours", "1.0.0", "tile-classification", 0.5, 16),
        ("kerne", "1.0.0", "tile-classification", 0.5, 16),
    ]
    assert listed[1]["classes"] == ["Glas", "Kern", "Zelle"]
    assert cli(["models", "--path", str(packs)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert (
        table[0].split()[:3] == ["NAME", "VERSION", "TASK"]
        and table[2].startswith("kerne")
        and "Glas, Kern" in table[2]
    )


def test_predict_cli(cli, packs, tmp_path, capsys, image_opener):
    slide = write_tiff(tmp_path / "slide.tif", blob_slide())
    code = cli(
        [
            "predict",
            str(slide),
            "--model",
            str(packs / "colours"),
            "--out",
            str(tmp_path / "out"),
            "--threads",
            "1",
            "--batch-size",
            "8",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    store = PredictionStore(captured.out.strip())
    assert store.complete and store.path.name == "slide__colours@1.0.0.zarr"
    assert "tiles" in captured.err and f"{store.tissue[:].sum()}/{store.tissue[:].sum()}" in captured.err
    reference = predict(image_opener(slide), load_pack(packs / "colours"), tmp_path / "ref", threads=1)
    np.testing.assert_array_equal(store.tile_class[:], reference.tile_class[:])


def test_predict_cli_errors_are_one_line(cli, packs, tmp_path, capsys, image_opener):
    slide = write_tiff(tmp_path / "slide.tif", blob_slide())
    assert (
        cli(["predict", str(slide), "--model", "nope", "--out", str(tmp_path / "o"), "--model-path", str(packs)]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cytoreview predict: error: no model pack named 'nope'")
    fine = write_pack(tmp_path / "fine", base_card("fine", input={"mpp": 0.1}), classifier_graph)
    assert cli(["predict", str(slide), "--model", str(fine), "--out", str(tmp_path / "o")]) == 2
    assert "would be upsampled" in capsys.readouterr().err


def test_predict_many_on_a_local_cluster_matches_local(packs, tmp_path, image_opener):
    pytest.importorskip("distributed")
    from cytoreview.inference.distributed import predict_many

    paths = [write_tiff(tmp_path / f"s{i}.tif", blob_slide(seed=i)) for i in range(3)]
    pack = load_pack(packs / "colours")
    ticks = []
    stores = predict_many(
        paths,
        pack,
        tmp_path / "dist",
        n_workers=2,
        processes=False,
        threads=1,
        progress=lambda d, t: ticks.append((d, t)),
    )
    assert [s.name for s in stores] == [f"s{i}__colours@1.0.0.zarr" for i in range(3)]
    assert ticks[-1] == (3, 3)
    for path, store_path in zip(paths, stores):
        local = predict(image_opener(path), pack, tmp_path / "local", threads=1)
        remote = PredictionStore(store_path)
        assert remote.complete
        for name in ("tile_class", "tile_prob", "tile_uncertainty", "tissue"):
            np.testing.assert_array_equal(remote.group[name][:], local.group[name][:], err_msg=name)


def test_each_worker_opens_its_session_once_and_sizes_its_pipeline_to_its_share(packs, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    import cytoreview.inference.distributed as dist

    opened = []
    real_session = type(load_pack(packs / "colours")).session

    def counting_session(self, *args, **kwargs):
        opened.append(self.name)
        return real_session(self, *args, **kwargs)

    monkeypatch.setattr(type(load_pack(packs / "colours")), "session", counting_session)
    monkeypatch.setattr(dist, "_SESSIONS", {})
    seen_readers = []
    import importlib

    predict_module = importlib.import_module("cytoreview.inference.predict")  # the module, not the function
    real_predict = predict_module.predict

    def recording_predict(*args, **kwargs):
        seen_readers.append(kwargs.get("readers"))
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(predict_module, "predict", recording_predict)
    paths = [write_tiff(tmp_path / f"s{i}.tif", blob_slide(seed=i)) for i in range(3)]
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            assert list(dist._threads_per_host(client).values()) == [2]
            stores = dist.predict_many(paths, load_pack(packs / "colours"), tmp_path / "d", client=client)
    assert len(stores) == 3 and all(PredictionStore(s).complete for s in stores)
    assert opened == ["colours"]  # one session for the three images (one worker process)
    assert seen_readers == [max(1, predict_module.available_cores() // 2)] * 3  # host cores over its 2 task threads


def test_the_local_cluster_runs_worker_threads_sharing_one_session(packs, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    import cytoreview.inference.distributed as dist

    monkeypatch.setattr(dist, "_SESSIONS", {})
    paths = [write_tiff(tmp_path / f"s{i}.tif", blob_slide(seed=i)) for i in range(2)]
    stores = dist.predict_many(paths, load_pack(packs / "colours"), tmp_path / "d", n_workers=2, threads=1)
    assert all(PredictionStore(s).complete for s in stores)
    assert len(dist._SESSIONS) == 1  # both workers ran in this process, on one session


def test_a_worker_thread_stops_at_the_next_batch_when_its_run_is_cancelled(packs, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    import threading

    import cytoreview.inference.distributed as dist

    slide = write_tiff(tmp_path / "s.tif", blob_slide())
    event = threading.Event()
    event.set()
    monkeypatch.setattr(dist, "_CANCELS", {"run-1": event})
    options = {"batch_size": 1, "tissue_threshold": 0.0}
    path = dist._predict_task(str(slide), str(packs / "colours"), str(tmp_path / "d"), options, {}, "run-1")
    assert not PredictionStore(path).complete  # stopped, finished rows kept
    path = dist._predict_task(str(slide), str(packs / "colours"), str(tmp_path / "d"), options, {}, "other-run")
    assert PredictionStore(path).complete  # no event for that run: it resumes and finishes


def test_an_interrupted_run_cancels_its_worker_threads_and_forgets_the_run(packs, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    import threading

    import cytoreview.inference.distributed as dist

    events = {}

    class Recording(dict):
        def __setitem__(self, key, value):
            events[key] = value
            super().__setitem__(key, value)

    monkeypatch.setattr(dist, "_CANCELS", Recording())
    paths = [write_tiff(tmp_path / f"s{i}.tif", blob_slide(seed=i)) for i in range(2)]

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dist.predict_many(paths, load_pack(packs / "colours"), tmp_path / "d", n_workers=1, progress=interrupt)
    (event,) = events.values()
    assert isinstance(event, threading.Event) and event.is_set() and not dist._CANCELS


def test_worker_processes_start_without_dasks_malloc_trim_threshold(monkeypatch):
    pytest.importorskip("distributed")
    import os

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)  # dask's default would set it in every worker
    from distributed import Client

    from cytoreview.inference.distributed import local_cluster

    with local_cluster(1, 1, processes=True) as cluster, Client(cluster) as client:
        env = client.run(lambda: (os.getpid(), os.environ.get("MALLOC_TRIM_THRESHOLD_")))
    (pid, trim), = env.values()
    assert pid != os.getpid() and trim is None


def test_processes_needs_workers(cli, packs, tmp_path, capsys):
    slide = write_tiff(tmp_path / "slide.tif", blob_slide())
    code = cli(["predict", str(slide), "--model", str(packs / "colours"), "--out", str(tmp_path / "o"), "--processes"])
    assert code == 2 and "--processes needs --workers" in capsys.readouterr().err


def test_stage_progress_to_a_pipe_writes_one_line_per_update():
    import io

    from cytoreview.inference.cli import StageProgress

    stream = io.StringIO()  # not a terminal
    progress = StageProgress(stream=stream)
    for stage, total in (("csv", 1), ("parquet", 1), ("coco", 3)):
        for done in range(total + 1):
            progress(stage, done, total)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split(" [")[0] for line in lines] == ["csv", "csv", "parquet", "parquet", "coco", "coco", "coco",
                                                       "coco"]
    assert lines[1].split("] ")[1].startswith("1/1") and lines[3].split("] ")[1].startswith("1/1")
    quiet = io.StringIO()
    StageProgress(stream=quiet, quiet=True)("csv", 1, 1)
    assert quiet.getvalue() == ""


def test_predict_scheduler_runs_on_a_running_cluster_and_an_unreachable_one_is_one_error(cli, packs, tmp_path,
                                                                                      capsys):
    """``--scheduler ADDR`` (a cluster started elsewhere) still predicts every image; a wrong address is exit 2."""
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    paths = [str(write_tiff(tmp_path / f"s{i}.tif", blob_slide(seed=i))) for i in range(2)]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        code = cli(["predict", *paths, "--model", str(packs / "colours"), "--out", str(tmp_path / "o"), "--quiet",
                    "--scheduler", cluster.scheduler_address])
    assert code == 0, capsys.readouterr().err
    stores = sorted((tmp_path / "o").glob("*"))
    assert len(stores) == 2 and all(PredictionStore(s).complete for s in stores)
    capsys.readouterr()
    code = cli(["predict", paths[0], "--model", str(packs / "colours"), "--out", str(tmp_path / "o2"), "--quiet",
                "--scheduler", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach the dask scheduler at tcp://127.0.0.1:9" in err and "Traceback" not in err
