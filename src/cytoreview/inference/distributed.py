"""Predict many images on a dask.distributed cluster: whole images as work units, one session per worker process.

(Worker threads of one process share it.)

Only the pack's folder path and plain options travel to the workers (an onnxruntime session cannot be pickled). Each
worker process loads the pack and opens its session once (kept for the next image with the same pack), runs
:func:`cytoreview.inference.predict` on whole images and writes the store itself; only the store path comes back.
A worker's pipeline is sized to its share of its machine: the host's cores divided by the task threads of all the
workers on that host, so two workers on a 2-core machine run one pipeline worker each and never oversubscribe.

A whole image is the unit of work (tens of thousands of tiles on a slide), so scheduling costs nothing next to it;
with fewer images than workers the spare workers idle (one image is not split across processes).

The local cluster (no scheduler given) runs its workers as threads of this process by default: on one host the
pipeline already releases the GIL where the time goes (JPEG decode, ``session.run``), so worker processes would only
add their start-up (a Python interpreter, dask and onnx imports, a session each: about 1.5 s of CPU per worker,
measured in ``benchmarks/bench_distributed.py``) and one copy of the session per process. ``processes=True`` starts
worker processes instead; they are started without dask's ``MALLOC_TRIM_THRESHOLD_`` setting, which turns off glibc's
adaptive mmap threshold so that every batch-sized buffer is mapped and unmapped again (4.7x the page faults and
1.2x the CPU time per slide, measured). Workers of a cluster started elsewhere (``scheduler=``) keep the environment
they were started with: start them with ``MALLOC_TRIM_THRESHOLD_`` unset for the same reason.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from cytoreview.errors import CytoreviewError

#: Sessions opened in this (worker) process: ``(pack folder, pack sha256, providers, threads) -> (pack, session)``.
_SESSIONS: dict = {}
_SESSIONS_LOCK = threading.Lock()
#: Cancel events of the :func:`predict_many` runs of this process, by run id: worker threads of a local cluster find
#: theirs here and stop at the next batch when the run is interrupted (a worker process elsewhere finds none).
_CANCELS: dict[str, threading.Event] = {}


def worker_session(pack_path: str, providers=None, threads: int = 1):
    """``(pack, session)`` of the pack folder in this (worker) process, loaded on the first task and reused after.

    Worker threads of one process share the session (onnxruntime runs one session from several threads at once).
    """
    from cytoreview.models.pack import load_pack

    pack = load_pack(pack_path)
    key = (str(Path(pack_path).resolve()), pack.sha256, str(providers), int(threads))
    with _SESSIONS_LOCK:
        hit = _SESSIONS.get(key)
        if hit is None:
            hit = _SESSIONS[key] = (pack, pack.session(providers=providers, threads=threads))
    return hit


def _cores_share(threads_on_host: dict) -> int:
    """Cores this task may use: the host's cores over the task threads of every worker on the host (at least 1)."""
    from cytoreview.inference.predict import available_cores

    try:
        from distributed import get_worker

        host = get_worker().address.rsplit(":", 1)[0]
    except (ImportError, ValueError):  # not on a worker (called directly)
        return available_cores()
    return max(1, available_cores() // max(1, int(threads_on_host.get(host, 1))))


def _predict_task(image_path: str, pack_path: str, out_dir: str, options: dict, threads_on_host: dict,
                  run_id: str | None = None) -> str:
    """Worker side: predict one image with this process's session of the pack, return the store path.

    In the process that started the run (worker threads), the run's cancel event stops it at the next batch, with the
    finished rows kept (a later run resumes the store).
    """
    from cytoreview.inference.predict import pipeline_workers, predict

    options = dict(options)
    threads = int(options.pop("threads", None) or 1)
    providers = options.pop("providers", None)
    pack, session = worker_session(pack_path, providers, threads)
    readers = options.pop("readers", None) or pipeline_workers(threads, cores=_cores_share(threads_on_host))
    store = predict(image_path, pack, out_dir, session=session, readers=readers, cancel=_CANCELS.get(run_id or ""),
                    **options)
    return str(store.path)


def _threads_per_host(client) -> dict:
    """``host -> task threads of all workers there``, from the scheduler's view of the cluster."""
    per_host: dict = {}
    for address, info in client.scheduler_info().get("workers", {}).items():
        host = address.rsplit(":", 1)[0]
        per_host[host] = per_host.get(host, 0) + int(info.get("nthreads", 1) or 1)
    return per_host


def local_cluster(n_workers: int = 2, threads_per_worker: int = 1, processes: bool = False):
    """The LocalCluster :func:`predict_many` starts: ``n_workers`` workers of ``threads_per_worker`` task threads.

    Worker threads of this process by default; with ``processes=True`` worker processes, spawned without dask's
    ``MALLOC_TRIM_THRESHOLD_`` (see the module's notes). No dashboard.
    """
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=processes,
            dashboard_address=None,
        )


def predict_many(
    paths: Iterable[str | Path],
    pack,
    out_dir: str | Path,
    *,
    scheduler: str | None = None,
    client=None,
    n_workers: int = 2,
    processes: bool = False,
    threads_per_worker: int = 1,
    progress: Callable[[int, int], None] | None = None,
    **options,
) -> list[Path]:
    """Run :func:`~cytoreview.inference.predict` over many images on dask.distributed.

    Parameters
    ----------
    paths : iterable of str or Path
        Images (slides or field-set folders), opened on the workers.
    pack : ModelPack or str or Path
        The pack (its folder is sent; each worker process loads it once).
    out_dir : str or Path
        Where the stores go (must be reachable by every worker); each worker writes its images' stores.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``).
    client : distributed.Client, optional
        An existing client (takes precedence over ``scheduler``).
    n_workers, processes, threads_per_worker
        Shape of the LocalCluster started when neither ``client`` nor ``scheduler`` is given: ``n_workers`` workers
        of ``threads_per_worker`` task threads each (one image at a time per worker by default), as threads of this
        process, or as worker processes with ``processes=True``.
    progress : callable, optional
        ``progress(images_done, images_total)`` as tasks finish.
    **options
        Passed to ``predict`` (batch_size, threads, providers, tissue_threshold, resume, allow_upsample, focus,
        readers).

    Returns
    -------
    list of Path
        Store paths, in the order of ``paths``.

    Raises
    ------
    CytoreviewError
        The first error of a failed image (the message names it).
    """
    from distributed import Client, as_completed

    from cytoreview.models.pack import load_pack

    pack = load_pack(pack)
    paths = [str(Path(p)) for p in paths]
    out_dir = str(Path(out_dir).resolve())
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    owned = []
    if client is None:
        if scheduler:
            try:
                client = Client(scheduler, timeout="10s")
            except (OSError, TimeoutError) as exc:
                raise CytoreviewError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from None
        else:
            cluster = local_cluster(n_workers, threads_per_worker, processes)
            owned.append(cluster)
            client = Client(cluster)
        owned.insert(0, client)
    run_id = uuid.uuid4().hex
    cancel = _CANCELS[run_id] = threading.Event()
    try:
        per_host = _threads_per_host(client)
        futures = [
            client.submit(
                _predict_task,
                p,
                str(pack.path),
                out_dir,
                options,
                per_host,
                run_id,
                key=f"cytoreview-predict-{i}-{Path(p).name}",
                pure=False,
            )
            for i, p in enumerate(paths)
        ]
        n_done = 0
        for future in as_completed(futures):
            exc = future.exception()
            if exc is not None:
                if isinstance(exc, CytoreviewError):
                    raise exc
                raise CytoreviewError(f"prediction failed on a worker: {type(exc).__name__}: {exc}") from exc
            n_done += 1
            if progress:
                progress(n_done, len(futures))
        return [Path(f.result()) for f in futures]
    except BaseException:
        cancel.set()  # worker threads stop at their next batch, so closing the cluster does not wait for whole slides
        raise
    finally:
        for obj in owned:
            obj.close()
        _CANCELS.pop(run_id, None)  # after the workers are gone: a task that starts while closing still finds it
