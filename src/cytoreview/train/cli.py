"""``cytoreview train LABELSET_OR_PROJECT --base PACK --out DIR``: refit a pack's head from reviewed labels."""

from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="refit a model pack's head from a project's corrections or an exported label set",
        description="Fit a new softmax head on the base pack's embedding from reviewed labels and write a new, "
        "versioned model pack (the base pack is never changed).",
    )
    p.add_argument("labels", type=Path, help="project folder (holds project.sqlite), export folder, ImageFolder, or "
                   "CSV / Parquet manifest")  # fmt: skip
    p.add_argument("--base", required=True, help="base pack: folder, name or name@version")
    p.add_argument("--out", "-o", type=Path, required=True, help="new pack folder (must not exist or be empty)")
    p.add_argument("--name", help="name of the new pack (default: the base's name with the version bumped)")
    p.add_argument("--version", help="version of the new pack (default: next minor version)")
    p.add_argument("--reg", type=float, default=1e-3, help="L2 strength on standardised weights (default 1e-3)")
    p.add_argument("--no-class-weight", action="store_true", help="do not balance classes by weight")
    p.add_argument("--holdout", type=float, default=0.2, help="share of items held out for metrics (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--select", default="reviewed",
                   choices=("reviewed", "reviewed+confident", "corrected", "trusted", "all"),
                   help="project items to use (default: every item a reviewer labelled or accepted; "
                   "reviewed+confident adds unreviewed items the model called with confidence >= --min-confidence)")  # fmt: skip
    p.add_argument("--min-confidence", type=float, default=0.9,
                   help="for --select trusted / reviewed+confident (default 0.9)")
    p.add_argument("--prior", choices=("none", "base"), default="none",
                   help="base: start from the base pack's own head and shrink towards it (few corrections)")
    p.add_argument("--project", type=Path, help="for a label set: check its classes against this project's schema")
    p.add_argument("--threads", type=int, help="onnxruntime threads when embedding pixels")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    """Handler of ``cytoreview train``; returns the exit status."""
    from cytoreview.train.refit import refit_detailed

    from cytoreview.inference.cli import StageProgress

    progress = StageProgress(quiet=args.quiet)

    classes = None
    if args.project is not None:
        from cytoreview.review import Project

        project = Project.open(args.project)
        try:
            classes = [{"name": c.name, "color": c.color[:7], "hotkey": c.hotkey, "level": c.level}
                       for c in project.schema.active_classes]  # fmt: skip
        finally:
            project.close()
    result = refit_detailed(
        args.labels, args.base, args.out, name=args.name, version=args.version, reg=args.reg,
        class_weight=None if args.no_class_weight else "balanced", seed=args.seed, holdout=args.holdout,
        select=args.select, min_confidence=args.min_confidence, classes=classes, threads=args.threads,
        prior=None if args.prior == "none" else args.prior,
        progress=progress,
    )  # fmt: skip
    m = result.metrics
    if args.json:
        print(json.dumps({"pack": result.pack.ref, "path": str(result.pack.path), "metrics": m,
                          "training_set": result.pack.card["provenance"]["training_data"]}, indent=1, default=str))
        return 0
    t = result.training
    print(f"wrote {result.pack.ref} to {result.pack.path} (parent {result.pack.card['provenance']['parent']})")
    print(f"training set: {t.n_items} items, " + ", ".join(f"{k}: {v}" for k, v in t.class_counts().items()))
    for note in t.notes:
        print(f"  note: {note}")
    if m.get("warning"):
        print(f"WARNING: {m['warning']}")
    if m.get("n"):
        def f(v):
            return "n/a" if v is None else f"{v:.3f}"

        print(("held-out figures below are NOT meaningful: " if m.get("warning") else "")
              + f"held-out ({m['holdout']}, {m['n']} items): accuracy {f(m['accuracy'])} (base {f(m.get('base_accuracy'))}),"
              f" kappa {f(m['kappa'])} (base {f(m.get('base_kappa'))}), balanced accuracy {f(m['balanced_accuracy'])}")
        print("recall: " + ", ".join(f"{k} {f(v)}" for k, v in m["recall"].items()))
    else:
        print("no held-out items: no metrics")
    return 0
