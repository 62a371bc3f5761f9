"""``cytoreview measure PROJECT --out table.csv``: area, cells and tiles per class, density, per field and region."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "measurement table: per field and region, area (mm²), cells and tiles per class, density, reviewed fraction"


def register(subparsers) -> None:
    """Add the ``measure`` subcommand."""
    p = subparsers.add_parser("measure", help=HELP, description=HELP + " (see cytoreview.review.measure).")
    p.add_argument("project", help="project folder (holding project.sqlite)")
    p.add_argument("--out", type=Path, default=None, help="CSV file to write (default: print the table)")
    p.add_argument("--image", type=int, action="append", default=None, metavar="ID", help="only this image (repeat)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import os

    from cytoreview.errors import CytoreviewError
    from cytoreview.review.measure import measure
    from cytoreview.review.store import Project

    if args.out is not None:
        out = args.out
        if out.is_dir():
            raise CytoreviewError(f"--out {out} is a folder; give a .csv file name")
        if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
            raise CytoreviewError(f"cannot write {out}: folder {out.parent} is missing or not writable")
    with Project.open(args.project) as project:
        table = measure(project, args.image)
    if args.out is None:
        print(table.to_string(index=False))
    else:
        table.to_csv(args.out, index=False)
        print(f"{args.out}: {len(table)} rows ({int(table['region_id'].notna().sum())} regions)")
    return 0
