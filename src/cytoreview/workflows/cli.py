"""``cytoreview project init|add``, ``cytoreview predict`` (into a project or bare stores), ``cytoreview compare``.

Thin: parse the arguments, call :mod:`cytoreview.workflows`, print what happened. Notes the user should know (a
guessed pixel size) go to stderr, one line each.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``project``, ``predict`` and ``compare`` subcommands."""
    _register_project(subparsers)
    _register_predict(subparsers)
    _register_compare(subparsers)


def _note(command: str, text: str) -> None:
    print(f"cytoreview {command}: note: {text}", file=sys.stderr)


def _image_problems(store_path) -> None:
    """Print the image problems a run met (unreadable fields or tiles, conversions) as notes after its line."""
    from cytoreview.inference.predict import image_problems

    for line in image_problems(store_path):
        _note("predict", line)


def _positive_float(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of µm per pixel")
    return value


# ------------------------------------------------------------------------------------------------ project
def _register_project(subparsers) -> None:
    parser = subparsers.add_parser("project", help="make a review project and register images in it",
                                   description="Make a review project folder and register slides / field sets.")
    commands = parser.add_subparsers(dest="project_command", metavar="ACTION", required=True)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)  # replaced by the action's own func
    init = commands.add_parser("init", help="make an empty project in DIR (an existing one is left as it is)")
    init.add_argument("folder", metavar="DIR", help="project folder (created)")
    init.set_defaults(func=_project_init)
    add = commands.add_parser("add", help="register slides / field-set folders in the project in DIR")
    add.add_argument("folder", metavar="DIR", help="an existing project folder")
    add.add_argument("paths", nargs="+", metavar="PATH", help="slide file or field-set folder")
    add.add_argument("--mpp", type=_positive_float, metavar="UM", help="pixel size (µm/px) instead of the file's")
    add.add_argument("--case-id", metavar="ID", help="case of the images (default: a field set's cytoscan.json)")
    add.set_defaults(func=_project_add)
    verify = commands.add_parser("verify", help="check the store and the journal's hash chain (exit 2 naming the "
                                                "first bad row)")
    verify.add_argument("folder", metavar="DIR", help="an existing project folder")
    verify.set_defaults(func=_project_verify)


def _project_verify(args) -> int:
    from cytoreview.workflows import open_project

    with open_project(args.folder) as project:
        project.check()  # a ProjectError naming the first bad row: one line, exit 2
        result = project.verify_journal()
        mode = " (opened read-only)" if project.read_only else ""
        print(f"project {project.folder}{mode}: store intact; journal of {result.n_rows} rows, hash chain intact")
    return 0


def _project_init(args) -> int:
    from cytoreview.workflows import init_project

    with init_project(args.folder) as project:
        n = len(project.images())
        print(f"project {project.folder}: {n} image(s)")
    return 0


def _project_add(args) -> int:
    from cytoreview.workflows import add_images

    for added in add_images(args.folder, args.paths, mpp=args.mpp, case_id=args.case_id):
        for note in added.notes:
            _note("project add", note)
        print(f"image {added.image_id}: {added.path} ({added.kind}, {added.mpp:g} µm/px)")
    return 0


# ------------------------------------------------------------------------------------------------ predict
def _register_predict(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="run a model pack over images into a project (or bare zarr prediction stores)",
        description="Run a model pack over slides or field-set folders. With --project DIR the images are registered "
        "in that project and the predictions imported as review items (stores in DIR/predictions); with --out DIR "
        "only the stores <out>/<image>__<pack>@<version>.zarr are written.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="slide file or field-set folder")
    parser.add_argument("--model", required=True, help="pack name, name@version, or pack folder")
    parser.add_argument("--then", metavar="CLASSIFIER", default=None,
                        help="a cell-classification pack run on every cell the --model detector finds")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--project", metavar="DIR", help="an existing project (see `cytoreview project init`)")
    where.add_argument("--out", metavar="DIR", help="folder for bare prediction stores (no project)")
    parser.add_argument("--mpp", type=_positive_float, metavar="UM", help="pixel size (µm/px) instead of the file's")
    parser.add_argument("--case-id", metavar="ID", help="with --project: case of the images")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N", help="patches per batch (default: auto)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="onnxruntime threads per session (default 1; cores // N pipeline workers run at once)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="execution device (default cpu)")
    parser.add_argument("--tissue-threshold", type=float, default=None,
                        help="min foreground fraction to run a tile (default 0.05 for slides, 0 for field sets)")
    parser.add_argument("--focus", default=None, metavar="edf|best|K",
                        help="focus-stack field sets: predict on the all-in-focus plane (edf), each field's sharpest "
                             "plane (best) or plane K (default: plane 0)")
    parser.add_argument("--allow-upsample", action="store_true", help="allow a model finer than the image's pixels")
    parser.add_argument("--no-resume", action="store_true", help="start over instead of resuming unfinished stores")
    parser.add_argument("--model-path", action="append", default=[], metavar="DIR", help="another folder of packs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--scheduler", metavar="ADDRESS", help="dask.distributed scheduler address")
    scale.add_argument("--workers", type=int, metavar="N",
                       help="start a local dask cluster of N workers (threads of this process; see --processes)")
    parser.add_argument("--processes", action="store_true",
                        help="with --workers: worker processes instead of threads (each starts its own interpreter "
                             "and session, about 1.5 s of CPU; on one host threads lose nothing)")
    parser.set_defaults(func=_predict)


def _predict(args) -> int:
    from cytoreview.errors import CytoreviewError
    from cytoreview.inference.cli import ProgressBar
    from cytoreview.models.pack import load_pack

    pack = load_pack(args.model, extra_dirs=args.model_path)
    then = None
    if args.then:
        from cytoreview.inference.classify import check_chain

        then = load_pack(args.then, extra_dirs=args.model_path)
        check_chain(pack, then)
        if args.scheduler or args.workers:
            raise CytoreviewError("--then runs in this process; leave out --workers / --scheduler")
    if args.case_id and not args.project:
        raise CytoreviewError("--case-id needs --project (bare stores do not hold cases)")
    if args.processes and not args.workers:
        raise CytoreviewError("--processes needs --workers N (the workers of a --scheduler cluster are its own)")
    if args.mpp is not None and (args.scheduler or args.workers):
        raise CytoreviewError("--mpp cannot be sent to dask workers; run without --workers/--scheduler")
    options = dict(batch_size=args.batch_size, threads=args.threads, providers=args.device,
                   tissue_threshold=args.tissue_threshold, resume=not args.no_resume,
                   allow_upsample=args.allow_upsample)  # fmt: skip
    if args.focus is not None:
        from cytoreview.io.focus import parse_focus

        options["focus"] = parse_focus(args.focus)  # refused here, once, before any image is opened
    if args.scheduler or args.workers:
        return _predict_distributed(args, pack, options)
    if args.project:
        from cytoreview.workflows import predict_images_into_project

        def bar_for(path):
            return None if args.quiet else ProgressBar(str(path))

        if then is not None:
            options["then"] = then
        runs = predict_images_into_project(args.paths, pack, args.project, mpp=args.mpp, case_id=args.case_id,
                                           progress_for=_closing(bar_for), **options)  # fmt: skip
        for run in runs:
            for note in run.notes:
                _note("predict", note)
            if run.complete:
                print(f"{run.store_path}\timage {run.image_id}: {run.n_items} items")
                if run.cell_store_path is not None:
                    print(f"{run.cell_store_path}\timage {run.image_id}: cells classified")
            else:
                print(f"{run.store_path}\tunfinished (run again to resume)")
        return 0 if all(run.complete for run in runs) else 1
    return _predict_bare(args, pack, options, ProgressBar, then)


def _closing(bar_for):
    """Progress callables that end their bar's line when the run reaches its total."""

    def make(path):
        bar = bar_for(path)
        if bar is None:
            return None

        def progress(done, total):
            bar(done, total)
            if done >= total:
                bar.close()

        return progress

    return make


def _predict_bare(args, pack, options, ProgressBar, then=None) -> int:
    from cytoreview.inference.predict import predict
    from cytoreview.io import open_image
    from cytoreview.workflows import guessed_mpp_note, ood_note

    focus = options.pop("focus", None)  # the image is opened here, collapsed once
    session = pack.session(providers=args.device, threads=args.threads)
    incomplete = 0
    for image_path in args.paths:
        bar = None if args.quiet else ProgressBar(f"{image_path}")
        with open_image(image_path, mpp=args.mpp, focus=focus) as image:
            note = guessed_mpp_note(image)
            if note:
                _note("predict", note)
            store = predict(image, pack, args.out, session=session, progress=bar, **options)
            if bar:
                bar.close()
            incomplete += not store.complete
            print(store.path)
            _image_problems(store.path)
            far = ood_note(image, pack, store)
            if far:
                _note("predict", far)
            if then is not None and store.complete:
                from cytoreview.inference.classify import classify_cells

                cbar = None if args.quiet else ProgressBar(f"{image_path} cells ({then.ref})", unit="cells")
                cells = classify_cells(image, store, then, args.out, threads=args.threads, providers=args.device,
                                       progress=cbar)
                if cbar:
                    cbar.close()
                incomplete += not cells.complete
                print(cells.path)
    return 1 if incomplete else 0


def _predict_distributed(args, pack, options) -> int:
    from cytoreview.inference.cli import ProgressBar
    from cytoreview.inference.distributed import predict_many
    from cytoreview.workflows import import_store, open_project
    from cytoreview.workflows.projects import check_spelling

    out = args.out
    if args.project:
        with open_project(args.project) as project:
            for path in args.paths:
                check_spelling(project, path)
            out = project.predictions_dir
    bar = None if args.quiet else ProgressBar(f"{pack.ref} images")
    paths = predict_many(args.paths, pack, out, scheduler=args.scheduler, n_workers=args.workers or 2,
                         processes=args.processes, progress=bar, **options)  # fmt: skip
    if bar:
        bar.close()
    for image_path, store_path in zip(args.paths, paths):
        if args.project:
            image_id, n_items = import_store(args.project, image_path, store_path, case_id=args.case_id)
            print(f"{store_path}\timage {image_id}: {n_items} items")
        else:
            print(store_path)
        _image_problems(store_path)
    return 0


# ------------------------------------------------------------------------------------------------ compare
def _register_compare(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="list the tiles whose class changed between two packs on a project's images",
        description="Run both packs on every image of the project (stores in PROJECT/predictions; complete ones "
        "are reused) and list the tiles whose predicted class changed (the flips).",
    )
    parser.add_argument("project", help="an existing project folder")
    parser.add_argument("--base", required=True, help="the pack to compare against: name, name@version or folder")
    parser.add_argument("--new", required=True, help="the new pack (e.g. a refit in PROJECT/packs)")
    parser.add_argument("--out", metavar="CSV", help="write every flip to this CSV file")
    parser.add_argument("--image", type=int, action="append", metavar="ID", help="only this image id (repeatable)")
    parser.add_argument("--import", dest="import_new", action="store_true",
                        help="also import the new pack's predictions into the project")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="onnxruntime threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model-path", action="append", default=[], metavar="DIR", help="another folder of packs")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=_compare)


def _compare(args) -> int:
    from cytoreview.errors import CytoreviewError
    from cytoreview.workflows import compare_packs

    out = Path(args.out).expanduser().absolute() if args.out else None
    if out is not None:
        if out.is_dir():
            raise CytoreviewError(f"--out {out} is a folder; give a .csv file name")
        if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
            raise CytoreviewError(f"cannot write {out}: folder {out.parent} is missing or not writable")

    from cytoreview.inference.cli import StageProgress

    progress = StageProgress(unit="tiles", quiet=args.quiet)

    result = compare_packs(args.project, args.base, args.new, image_ids=args.image, import_new=args.import_new,
                           threads=args.threads, providers=args.device, progress=progress,
                           extra_dirs=args.model_path)  # fmt: skip
    for image in result.images:
        print(f"{image.image_path}: {len(image.flips)} tile(s) changed class")
        for note in image.notes:
            _note("compare", note)
    print(f"{len(result.flips)} of {result.n_tiles} tiles changed class between {result.base} and {result.new}")
    if out is not None:
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        try:
            result.flips.to_csv(tmp, index=False)
            os.replace(tmp, out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CytoreviewError(f"cannot write {out}: {exc.strerror or exc}") from exc
        print(f"wrote {out}")
    return 0
