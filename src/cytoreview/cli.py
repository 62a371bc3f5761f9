"""The ``cytoreview`` command: thin argument parsing over the function API.

Each area registers its own subcommands (``register(subparsers)`` in ``cytoreview/<area>/cli.py``) so this file
stays a dispatcher. A :class:`~cytoreview.errors.CytoreviewError` is printed as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from cytoreview import __version__
from cytoreview.errors import CytoreviewError

#: Modules that add subcommands, in the order ``cytoreview --help`` lists them.
COMMAND_MODULES = [
    "cytoreview.io.cli",
    "cytoreview.models.cli",
    "cytoreview.workflows.cli",
    "cytoreview.review.cli",
    "cytoreview.export.cli",
    "cytoreview.export.import_cli",
    "cytoreview.train.cli",
    "cytoreview._napari.cli",
]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every area's subcommands registered."""
    parser = argparse.ArgumentParser(
        prog="cytoreview", description="Review and correct AI predictions on cytology slides and field sets."
    )
    parser.add_argument("--version", action="version", version=f"cytoreview {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CytoreviewError as exc:
        print(f"cytoreview {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cytoreview {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
