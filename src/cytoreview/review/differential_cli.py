"""``cytoreview differential PROJECT``: cell counts and rates per class, per case or image."""

from __future__ import annotations

import argparse

HELP = "cell differential counts per case or image (counts, percentages, rate per 100 counted cells)"


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def register(subparsers) -> None:
    """Add the ``differential`` subcommand."""
    p = subparsers.add_parser("differential", help=HELP,
                              description="Count a project's cells per class, per case (or image): counts, the share "
                                          "of the counted cells, and the rate per N counted cells. 'unsure', 'not "
                                          "classed' and 'not a cell' are never counted.")
    p.add_argument("project", help="project folder (holding project.sqlite)")
    p.add_argument("--case", default=None, metavar="ID", help="only this case")
    p.add_argument("--by", choices=("case", "image", "project"), default="case", help="one table per (default case)")
    p.add_argument("--count", default=None, metavar="CLASS,...",
                   help="classes of the denominator, e.g. the white cells (default: every class not excluded)")
    p.add_argument("--exclude", default=None, metavar="CLASS,...",
                   help="more classes to leave out (added to unsure, not classed, not a cell)")
    p.add_argument("--per", type=float, default=100.0, metavar="N", help="rate per N counted cells (default 100)")
    p.add_argument("--reviewed-only", action="store_true", help="count reviewed cells only")
    p.add_argument("--unidentified-below", type=float, default=None, metavar="P",
                   help="unreviewed model calls below this confidence count as 'unidentified' (excluded)")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cytoreview.review.differential import EXCLUDED_BY_DEFAULT, differential, format_differential
    from cytoreview.review.store import Project

    excluded = list(EXCLUDED_BY_DEFAULT) + (_names(args.exclude) or [])
    with Project.open(args.project) as project:
        table = differential(project, by=args.by, case_id=args.case, counted=_names(args.count), excluded=excluded,
                             per=args.per, only_reviewed=args.reviewed_only,
                             unidentified_below=args.unidentified_below)
    if args.csv:
        print(table.to_csv(index=False), end="")
    else:
        print(format_differential(table, per=args.per))
    return 0
