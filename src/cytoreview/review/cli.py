"""``cytoreview review-status PROJECT [--json]``: how far the review of a project has come."""

from __future__ import annotations

import argparse
import json
import math


def register(subparsers) -> None:
    """Add the ``review-status`` subcommand."""
    p = subparsers.add_parser("review-status", help="show review progress per image and reviewer",
                              description="Show review progress of a project: reviewed/total per image, and per "
                                          "reviewer accepted vs corrected items and items per minute; images that "
                                          "are missing or hold other content than when they were added are "
                                          "named.")
    p.add_argument("project", help="project folder (holding project.sqlite)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--verify", action="store_true",
                   help="check the store and the journal's hash chain; exit 2 naming the first bad row if it fails")
    p.set_defaults(func=_status)


def _fmt(value, digits=1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _status(args: argparse.Namespace) -> int:
    from cytoreview.review.store import Project

    with Project.open(args.project) as project:
        if args.verify:
            project.check()  # a ProjectError naming the first bad row: one line, exit 2
            result = project.verify_journal()
            print(f"project {args.project}: store intact; journal of {result.n_rows} rows, hash chain intact")
            return 0
        prog = project.progress()
        problems = project.image_problems()
    if args.json:
        print(json.dumps({**prog.to_dict(), "image_problems": {str(k): v for k, v in problems.items()}}, indent=2,
                         ensure_ascii=False))
        return 0
    print(f"project {args.project}")
    if prog.per_image.empty:
        print("  no images yet")
    for row in prog.per_image.itertuples():
        pct = 100.0 * row.fraction_reviewed
        print(f"  image {row.image_id}: {row.reviewed}/{row.total} reviewed ({pct:.1f}%), {row.remaining} to go"
              f"  {row.image_path}")
        if row.image_id in problems:
            print(f"    ! {problems[row.image_id]}")
        mine = prog.per_reviewer[prog.per_reviewer["image_id"] == row.image_id]
        for r in mine.itertuples():
            print(f"      {r.reviewer}: {r.reviewed} items = {r.accepted} accepted + {r.corrected} corrected + "
                  f"{r.unsure} unsure, {_fmt(r.items_per_min)} items/min over {_fmt(r.active_min)} min")
    return 0
