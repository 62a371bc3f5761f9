"""``cytoreview import LABELSET --project DIR``: an existing labelled dataset becomes a project to audit."""

from __future__ import annotations


def register(subparsers) -> None:
    """Add the ``import`` subcommand."""
    parser = subparsers.add_parser(
        "import", help="open a labelled dataset (ImageFolder, CSV/Parquet manifest, QuPath GeoJSON) as a project"
    )
    parser.add_argument("labelset", help="folder, .csv, .parquet or .geojson")
    parser.add_argument("--project", required=True, help="project folder (created if missing)")
    parser.add_argument("--mpp", type=float, default=None, help="pixel size when the label set does not give one")
    parser.add_argument("--image", default=None, help="GeoJSON only: the slide the features belong to")
    parser.add_argument("--image-root", default=None, metavar="DIR",
                        help="folder holding the images of a de-identified export (found by their fingerprints in "
                             "export.json) or of a label set made on another machine (found by name)")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Import and print what was added."""
    from cytoreview.export.to_project import import_into_project

    options = {"mpp": args.mpp} if args.mpp is not None else {}
    if args.image:
        options["image_path"] = args.image
    import sys

    warnings: list[str] = []
    project, n_items = import_into_project(args.labelset, args.project, warnings=warnings, image_root=args.image_root,
                                           **options)  # fmt: skip
    with project:
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"imported {n_items} labelled items into {project.folder} ({len(project.images())} images)")
    return 0
