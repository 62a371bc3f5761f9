"""``cytoreview thumbnails PROJECT``: cut every cell's gallery thumbnail into the project's persistent cache."""

from __future__ import annotations

import argparse

HELP = "cut every cell's gallery thumbnail into the project's thumbnail cache (each field decoded once)"


def register(subparsers) -> None:
    """Add the ``thumbnails`` subcommand."""
    p = subparsers.add_parser("thumbnails", help=HELP,
                              description="Cut the thumbnail of every cell (at one physical scale) into the project's "
                                          "persistent cache, field by field, so that the cell gallery shows a page "
                                          "of thumbnails without decoding the fields it spans. Cells already cached "
                                          "at their current place are skipped.")
    p.add_argument("project", help="project folder (holding project.sqlite)")
    p.add_argument("--crop-um", type=float, default=None, metavar="UM", help="crop side in µm (default: the gallery's)")
    p.add_argument("--thumb-px", type=int, default=None, metavar="PX",
                   help="thumbnail side in px (default: the gallery's)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cytoreview.review.cell_crops import CROP_UM, GALLERY_THUMB_PX
    from cytoreview.review.gallery import cache_thumbnails
    from cytoreview.review.store import Project

    with Project.open(args.project) as project:
        cut, total = cache_thumbnails(project, crop_um=args.crop_um or CROP_UM,
                                      thumb_px=args.thumb_px or GALLERY_THUMB_PX)
    print(f"{cut} thumbnails cut, {total - cut} already cached ({total} cells)")
    return 0
