"""``cytoreview models``: list the model packs that can be found."""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    """Add the ``models`` subcommand."""
    parser = subparsers.add_parser(
        "models",
        help="list model packs (bundled plugins/, $CYTOREVIEW_MODEL_PATH, --path)",
        description="List model packs: name, version, task, classes, um/px and patch size.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--path", action="append", default=[], metavar="DIR", help="another folder to search")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from cytoreview.models.pack import find_packs

    errors: list[str] = []
    packs = find_packs(args.path, errors=errors)
    for message in errors:
        print(f"cytoreview models: skipped invalid pack: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps([p.summary() for p in packs], indent=2, ensure_ascii=False))
        return 0
    if not packs:
        print("no model packs found", file=sys.stderr)
        return 0
    rows = [
        (p.name, p.version, p.task, f"{p.mpp:g}", str(p.size_px), ", ".join(c["name"] for c in p.classes))
        for p in packs
    ]
    header = ("NAME", "VERSION", "TASK", "MPP", "SIZE_PX", "CLASSES")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1])
    return 0
