"""Predict many images on a dask.distributed cluster: one task per image, each worker loading the pack itself.

Only the pack's folder path and plain options travel to the workers (an onnxruntime session cannot be pickled);
every task opens its image, loads the pack, runs :func:`cytoreview.inference.predict` and returns the store path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from cytoreview.errors import CytoreviewError


def _predict_task(image_path: str, pack_path: str, out_dir: str, options: dict) -> str:
    """Worker side: load the pack, predict one image, return the store path."""
    from cytoreview.inference.predict import predict
    from cytoreview.models.pack import load_pack

    store = predict(image_path, load_pack(pack_path), out_dir, **options)
    return str(store.path)


def predict_many(
    paths: Iterable[str | Path],
    pack,
    out_dir: str | Path,
    *,
    scheduler: str | None = None,
    client=None,
    n_workers: int = 2,
    processes: bool = True,
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
        The pack (its folder is sent; each worker loads it).
    out_dir : str or Path
        Where the stores go (must be reachable by every worker).
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``).
    client : distributed.Client, optional
        An existing client (takes precedence over ``scheduler``).
    n_workers, processes, threads_per_worker
        Shape of the LocalCluster started when neither ``client`` nor ``scheduler`` is given.
    progress : callable, optional
        ``progress(images_done, images_total)`` as tasks finish.
    **options
        Passed to ``predict`` (batch_size, threads, providers, tissue_threshold, resume, allow_upsample).

    Returns
    -------
    list of Path
        Store paths, in the order of ``paths``.

    Raises
    ------
    CytoreviewError
        The first error of a failed image (the message names it).
    """
    from distributed import Client, LocalCluster, as_completed

    from cytoreview.models.pack import load_pack

    pack = load_pack(pack)
    paths = [str(Path(p)) for p in paths]
    out_dir = str(Path(out_dir).resolve())
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    owned = []
    if client is None:
        if scheduler:
            client = Client(scheduler)
        else:
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                processes=processes,
                dashboard_address=None,
            )
            owned.append(cluster)
            client = Client(cluster)
        owned.insert(0, client)
    try:
        futures = [
            client.submit(
                _predict_task,
                p,
                str(pack.path),
                out_dir,
                options,
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
    finally:
        for obj in owned:
            obj.close()
