"""The ``cytoreview`` command: thin argument parsing over the function API.

Every subcommand is one row of :data:`COMMANDS`: its name, the module whose ``register(subparsers)`` adds its
parser, and the help line ``cytoreview --help`` shows. The parser is built lazily: ``cytoreview --help`` imports
none of the command modules (it lists the rows), and ``cytoreview NAME ...`` imports only NAME's module, so start-up
costs only what the command uses. A :class:`~cytoreview.errors.CytoreviewError` is printed as one line and exits
with status 2.

To add a command: write ``register(subparsers)`` in the area's ``cli.py`` (it calls
``subparsers.add_parser(NAME, help=HELP, ...)`` with the same HELP as its row) and add the row below. A module may
register several commands (give it one row per command, rows next to each other).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from importlib import import_module

from cytoreview import __version__
from cytoreview.errors import CytoreviewError

#: ``(command, module that registers it, help line)``, in the order ``cytoreview --help`` lists them.
COMMANDS: list[tuple[str, str, str]] = [
    ("info", "cytoreview.io.cli", "show kind, levels, pixel size and reader of a slide or field set"),
    ("models", "cytoreview.models.cli", "list model packs (bundled plugins/, $CYTOREVIEW_MODEL_PATH, --path)"),
    ("project", "cytoreview.workflows.cli", "make a review project and register images in it"),
    ("predict", "cytoreview.workflows.cli",
     "run a model pack over images into a project (or bare zarr prediction stores)"),
    ("compare", "cytoreview.workflows.cli",
     "list the tiles whose class changed between two packs on a project's images"),
    ("review-status", "cytoreview.review.cli", "show review progress per image and reviewer"),
    ("measure", "cytoreview.review.measure_cli",
     "measurement table: per field and region, area (mm²), cells and tiles per class, density, reviewed fraction"),
    ("differential", "cytoreview.review.differential_cli",
     "cell differential counts per case or image (counts, percentages, rate per 100 counted cells)"),
    ("report", "cytoreview.review.report_cli",
     "write a self-contained HTML case report (differential, class plot, cell thumbnails, packs, reviewers)"),
    ("thumbnails", "cytoreview.review.thumbnails_cli",
     "cut every cell's gallery thumbnail into the project's thumbnail cache (each field decoded once)"),
    ("export", "cytoreview.export.cli",
     "export a project's labels (CSV, Parquet, ImageFolder crops, COCO, QuPath GeoJSON, masks)"),
    ("import", "cytoreview.export.import_cli",
     "open a labelled dataset (ImageFolder, CSV/Parquet manifest, QuPath GeoJSON) as a project"),
    ("train", "cytoreview.train.cli",
     "refit a model pack's head from a project's corrections or an exported label set"),
    ("demo", "cytoreview._napari.cli", "open napari with cytoreview on a sample case"),
    ("open", "cytoreview._napari.cli", "open slides or CytoScan field sets in napari with cytoreview (no reader dialog)"),
]


def build_parser(commands: list[str] | None = None) -> argparse.ArgumentParser:
    """Return the ``cytoreview`` argument parser.

    Parameters
    ----------
    commands : list of str, optional
        Commands whose modules are imported and whose full parsers are registered; every other command is listed
        with its help line only (enough for ``cytoreview --help``). ``None`` registers every command.

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog="cytoreview", description="Review and correct AI predictions on cytology slides and field sets."
    )
    parser.add_argument("--version", action="version", version=f"cytoreview {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = {module for name, module, _ in COMMANDS if commands is None or name in commands}
    registered: set[str] = set()
    for name, module, help_line in COMMANDS:
        if module not in wanted:
            subparsers.add_parser(name, help=help_line)
        elif module not in registered:
            import_module(module).register(subparsers)
            registered.add(module)
    return parser


def _command_name(argv: list[str]) -> str | None:
    """Return the subcommand named in ``argv`` (the first word that is not an option), or None."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser([name] if (name := _command_name(argv)) else [])
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning(args.command)
        return _run(args)


def _one_line_warning(command: str):
    """``warnings.showwarning`` that prints ``cytoreview COMMAND: warning: message`` (one line, no source line)."""

    def show(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        print(f"cytoreview {command}: warning: {text}", file=file or sys.stderr)

    return show


def _run(args) -> int:
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
