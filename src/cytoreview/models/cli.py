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
    parser.add_argument("--no-check", action="store_true",
                        help="do not run each pack once on a white patch to find packs that cannot run")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from cytoreview.models.pack import find_packs

    from cytoreview.models.check import pack_problem

    errors: list[str] = []
    packs = find_packs(args.path, errors=errors)
    for message in errors:
        print(f"cytoreview models: skipped invalid pack: {message}", file=sys.stderr)
    problems = {} if args.no_check else {p.path: pack_problem(p) for p in packs}
    broken = [(p, problems[p.path]) for p in packs if problems.get(p.path)]
    for pack, reason in broken:
        print(f"cytoreview models: broken pack {pack.ref}: {reason}", file=sys.stderr)
    if args.json:
        rows = [{**p.summary(), "broken": problems.get(p.path)} for p in packs]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not packs:
        print("no model packs found", file=sys.stderr)
        return 0
    rows = [
        (p.name, p.version, p.task, f"{p.mpp:g}", str(p.size_px), "BROKEN" if problems.get(p.path) else "ok",
         _class_text(p.classes))
        for p in packs
    ]
    header = ("NAME", "VERSION", "TASK", "MPP", "SIZE_PX", "STATUS", "CLASSES")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1])
    return 0


def _class_text(classes: list[dict], limit: int = 12) -> str:
    names = [c["name"] for c in classes]
    text = ", ".join(names[:limit])
    return text + (f", ... ({len(names)} classes)" if len(names) > limit else "")
