"""``cytoreview export PROJECT --format csv,coco --out DIR``: export a project's labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from cytoreview.errors import ExportError


def _fractions(text: str):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--split wants fractions like 0.7,0.15,0.15, got {text!r}") from exc
    return values


def register(subparsers) -> None:
    """Add the ``export`` subcommand."""
    p = subparsers.add_parser(
        "export",
        help="export a project's labels (CSV, Parquet, ImageFolder crops, COCO, QuPath GeoJSON, masks)",
        description="Export the labels of a cytoreview project as training data.",
    )
    p.add_argument("project", type=Path, help="project folder (holds project.sqlite)")
    p.add_argument("--format", "-f", default="csv", help="comma-separated: csv,parquet,imagefolder,coco,geojson,mask "
                   "or all (default csv)")
    p.add_argument("--out", "-o", type=Path, required=True, help="output folder")
    p.add_argument("--select", default="reviewed", choices=("reviewed", "all", "corrected", "trusted"),
                   help="which items: reviewed (default), all, corrected, trusted (corrected + accepted with "
                   "confidence >= --min-confidence)")
    p.add_argument("--min-confidence", type=float, default=0.9, help="for --select trusted (default 0.9)")
    p.add_argument("--include-unsure", action="store_true", help="also export items marked unsure")
    p.add_argument("--split", type=_fractions, default=None, metavar="TRAIN,VAL[,TEST]",
                   help="make case-grouped splits with these fractions, e.g. 0.7,0.15,0.15")
    p.add_argument("--balance", choices=("oversample", "undersample"), help="balance classes of the training split")
    p.add_argument("--balance-target", type=int, help="items per class after balancing")
    p.add_argument("--crop-um", type=float, default=32.0, help="cell crop side in micrometres (default 32)")
    p.add_argument("--crop-px", type=int, help="cell crop side in level-0 pixels (overrides --crop-um)")
    p.add_argument("--crop-mpp", type=float, help="pixel size of saved crops in um/px (default: level 0)")
    p.add_argument("--image-format", choices=("png", "jpg"), default="png")
    p.add_argument("--cell-diameter-um", type=float, default=10.0, help="cell size for COCO, discs, masks")
    p.add_argument("--cell-shape", choices=("point", "disc"), default="point", help="GeoJSON cells")
    p.add_argument("--mask-classes", help="comma-separated classes to paint (value = position + 1)")
    p.add_argument("--mask-downsample", type=float, help="mask pixel size in level-0 pixels (default: auto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--include-paths", action="store_true", help="write original image paths (default: de-identified)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    """Handler of ``cytoreview export``; returns the exit status."""
    from cytoreview.export.api import export_project, parse_formats

    formats = parse_formats(args.format)
    if not args.project.exists():
        raise ExportError(f"project folder {args.project} does not exist")

    from cytoreview.inference.cli import StageProgress

    progress = StageProgress(quiet=args.quiet)

    result = export_project(
        args.project,
        args.out,
        formats,
        select=args.select,
        min_confidence=args.min_confidence,
        include_unsure=args.include_unsure,
        split=args.split,
        balance=args.balance,
        balance_target=args.balance_target,
        crop_um=args.crop_um,
        crop_px=args.crop_px,
        crop_mpp=args.crop_mpp,
        image_format=args.image_format,
        cell_diameter_um=args.cell_diameter_um,
        cell_shape=args.cell_shape,
        mask_classes=[c.strip() for c in args.mask_classes.split(",")] if args.mask_classes else None,
        mask_downsample=args.mask_downsample,
        seed=args.seed,
        progress=progress,
        include_paths=args.include_paths,
    )
    for fmt, path in result.items():
        print(f"{fmt}\t{path}")
    return 0
