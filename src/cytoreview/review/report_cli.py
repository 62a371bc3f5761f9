"""``cytoreview report PROJECT [--case ID] --out report.html``: the HTML case report."""

from __future__ import annotations

import argparse

HELP = "write a self-contained HTML case report (differential, class plot, cell thumbnails, packs, reviewers)"


def register(subparsers) -> None:
    """Add the ``report`` subcommand."""
    p = subparsers.add_parser("report", help=HELP,
                              description="Write one self-contained HTML page per case: the differential, the class "
                                          "distribution, thumbnails of the rarest, most doubtful and corrected cells, "
                                          "the model packs (name, version, hash), reviewers and review progress.")
    p.add_argument("project", help="project folder (holding project.sqlite)")
    p.add_argument("--case", default=None, metavar="ID", help="only this case (default: one page per case)")
    p.add_argument("--out", required=True, metavar="FILE", help="the HTML file (other cases get -<case> added)")
    p.add_argument("--crop-um", type=float, default=None, metavar="UM", help="thumbnail width in µm (default 24)")
    p.add_argument("--count", default=None, metavar="CLASS,...", help="classes of the differential's denominator")
    p.add_argument("--per", type=float, default=100.0, metavar="N", help="rate per N counted cells (default 100)")
    p.add_argument("--unidentified-below", type=float, default=None, metavar="P",
                   help="unreviewed model calls below this confidence count as 'unidentified'")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cytoreview.review.cell_crops import CROP_UM
    from cytoreview.review.report import write_case_report
    from cytoreview.review.store import Project

    counted = None if args.count is None else [c.strip() for c in args.count.split(",") if c.strip()]
    with Project.open(args.project) as project:
        pages = write_case_report(project, args.out, case_id=args.case, crop_um=args.crop_um or CROP_UM,
                                  counted=counted, per=args.per, unidentified_below=args.unidentified_below)
    for page in pages:
        print(page)
    return 0
