"""``cytoreview info PATH [--json]``."""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    """Add the ``info`` subcommand."""
    parser = subparsers.add_parser("info", help="show kind, levels, pixel size and reader of a slide or field set")
    parser.add_argument("path", nargs="+", help="slide file, field folder, or field files")
    parser.add_argument("--mpp", type=float, default=None, help="override the pixel size (µm/px)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run_info)


def run_info(args) -> int:
    """Print the summary of the image at ``args.path``."""
    from cytoreview.io import open_image
    from cytoreview.io.info import describe

    target = args.path[0] if len(args.path) == 1 else args.path
    from cytoreview.io.mpp import mpp_is_guessed

    with open_image(target, mpp=args.mpp) as image:
        summary = describe(image)
    if mpp_is_guessed(summary["mpp_source"]):  # said on stderr too, as every command that guesses does
        print(f"cytoreview info: note: no pixel size in the image; assuming {summary['mpp']:g} µm/px "
              f"({summary['mpp_source']}) -- pass --mpp to set it", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0
    print(f"path:     {summary['path']}")
    print(f"kind:     {summary['kind']}  (reader: {summary['reader']})")
    print(f"mpp:      {summary['mpp']:.4g} µm/px  ({summary['mpp_source']})")
    if summary["kind"] == "fields":
        print(f"fields:   {summary['n_fields']}" + (f" x {summary['n_z']} focus planes" if summary["n_z"] > 1 else ""))
    for i, ((h, w), mpp) in enumerate(zip(summary["levels"], summary["level_mpp"])):
        print(f"level {i}:  {h} x {w} px  ({mpp:.4g} µm/px)")
    for warning in summary["warnings"]:
        print(f"warning:  {warning}")
    return 0
