"""``cytoreview predict``: run a model pack over slides / field sets and write prediction stores."""

from __future__ import annotations

import sys
import time


def register(subparsers) -> None:
    """Add the ``predict`` subcommand."""
    parser = subparsers.add_parser(
        "predict",
        help="run a model pack over images and write zarr prediction stores",
        description="Run a model pack over slides or field-set folders; write <out>/<image>__<pack>@<version>.zarr.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="slide file or field-set folder")
    parser.add_argument("--model", required=True, help="pack name, name@version, or pack folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the prediction stores")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N", help="patches per batch (default: auto)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="onnxruntime threads per session (default 1; cores // N pipeline workers run at once)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="execution device (default cpu)")
    parser.add_argument("--tissue-threshold", type=float, default=None,
                        help="min foreground fraction to run a tile (default 0.05 for slides, 0 for field sets)")
    parser.add_argument("--allow-upsample", action="store_true", help="allow a model finer than the image's pixels")
    parser.add_argument("--no-resume", action="store_true", help="start over instead of resuming unfinished stores")
    parser.add_argument("--model-path", action="append", default=[], metavar="DIR", help="another folder of packs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="dask.distributed scheduler address")
    where.add_argument("--workers", type=int, metavar="N", help="start a local dask cluster of N worker processes")
    parser.set_defaults(func=_run)


class ProgressBar:
    """A plain-text progress bar on stderr (redrawn in place on a terminal, a line per 10% otherwise)."""

    def __init__(self, label: str, stream=None, width: int = 30):
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        frac = 1.0 if total == 0 else done / total
        decile = int(frac * 10)
        if not self.tty and decile == self._last_decile and done != total:
            return
        self._last_decile = decile
        filled = int(round(frac * self.width))
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        line = f"{self.label} [{'#' * filled}{'-' * (self.width - filled)}] {done}/{total} tiles {rate:.0f}/s"
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _run(args) -> int:
    from cytoreview.inference.predict import predict
    from cytoreview.models.pack import load_pack

    pack = load_pack(args.model, extra_dirs=args.model_path)
    options = dict(
        batch_size=args.batch_size,
        threads=args.threads,
        providers=args.device,
        tissue_threshold=args.tissue_threshold,
        resume=not args.no_resume,
        allow_upsample=args.allow_upsample,
    )
    if args.scheduler or args.workers:
        from cytoreview.inference.distributed import predict_many

        bar = None if args.quiet else ProgressBar(f"{pack.ref} images")
        paths = predict_many(
            args.paths, pack, args.out, scheduler=args.scheduler, n_workers=args.workers or 2, progress=bar, **options
        )
        if bar:
            bar.close()
        for path in paths:
            print(path)
        return 0
    session = pack.session(providers=args.device, threads=args.threads or 1)  # predict runs cores // threads workers
    incomplete = 0
    for image_path in args.paths:
        bar = None if args.quiet else ProgressBar(f"{image_path}")
        store = predict(image_path, pack, args.out, session=session, progress=bar, **options)
        if bar:
            bar.close()
        incomplete += not store.complete
        print(store.path)
    return 1 if incomplete else 0
