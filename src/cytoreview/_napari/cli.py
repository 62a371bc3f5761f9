"""``cytoreview demo``: the one CLI command that opens the GUI (napari is imported only when it runs)."""

from __future__ import annotations


def register(subparsers) -> None:
    """Add the ``demo`` subcommand."""
    from cytoreview._napari.demo import CASES

    parser = subparsers.add_parser("demo", help="open napari with cytoreview on a sample case")
    parser.add_argument("--case", choices=sorted(CASES), default="warthin")
    parser.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window and exit")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Start the demo viewer."""
    from cytoreview._napari.demo import run_demo

    run_demo(args.case, screenshot=args.screenshot)
    return 0
