"""Refit a tile classifier's head from reviewed labels and write the result as a new, versioned model pack.

``refit(labels, base_pack, out_dir)``:

1. builds the training set (:mod:`cytoreview.train.dataset`): the base pack's embedding and the corrected class of
   every usable item of a project or an exported label set;
2. holds out ~20 % (grouped by case when there are several; :mod:`cytoreview.train.evaluate`), fits a class-weighted
   multinomial logistic regression on the rest and measures it on the held-out items, then fits again on all items
   (the head that ships);
3. writes a new pack folder: the base ONNX graph with the new head appended on its embedding output
   (:mod:`cytoreview.train.onnx_head`), a card with the version bumped and the provenance (parent, training-set hash,
   metrics, created), and a README with the metrics table;
4. loads it back with :func:`cytoreview.models.load_pack`, runs it and checks it against the numpy head.

The base pack is never modified; the output folder must not exist or be empty. Everything is written into a
temporary sibling folder and renamed into place at the end, so a failed refit leaves nothing half-written.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cytoreview.errors import ExportError, PackError
from cytoreview.models import load_pack
from cytoreview.models.card import CARD_FILENAME, validate_card
from cytoreview.models.pack import ModelPack
from cytoreview.train.dataset import (
    TrainingSet,
    _check_cancel,
    from_labelset,
    from_project,
)
from cytoreview.train.evaluate import SmallHoldoutWarning, holdout_split, metrics, small_holdout_warning
from cytoreview.train.logistic import LinearHead, fit_logistic
from cytoreview.train.onnx_head import (
    append_head,
    classes_metadata,
    extract_linear_head,
)

_NAME_RE = re.compile(r"^[a-z0-9-]+$")
#: Largest difference tolerated between the ONNX head and the numpy head on the self-check patch.
SELF_CHECK_ATOL = 1e-3


@dataclass
class RefitResult:
    """What :func:`refit_detailed` made: the new pack, the training set and the fitted head."""

    pack: ModelPack
    training: TrainingSet
    head: LinearHead
    metrics: dict
    holdout: str


def _is_project(path: Path) -> bool:
    return path.is_dir() and (path / "project.sqlite").is_file()


def next_version(base_version: str, taken: set[str] = frozenset()) -> str:
    """``1.0.0 -> 1.1.0`` (then ``1.2.0`` ... while taken); non-numeric versions get ``-refit<n>``."""
    m = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", base_version)
    n = 1
    while True:
        if m:
            cand = f"{m.group(1)}.{int(m.group(2)) + n}.0"
        else:
            cand = f"{base_version}-refit{n}"
        if cand not in taken:
            return cand
        n += 1


def _taken_versions(name: str, out_dir: Path) -> set[str]:
    """Versions of pack ``name`` already present beside ``out_dir`` or on the pack search path."""
    from cytoreview.models import find_packs

    taken = set()
    try:
        for p in find_packs([out_dir.parent], errors=[]):
            if p.name == name:
                taken.add(p.version)
    except OSError:
        pass
    return taken


def _check_out_dir(out_dir: Path, base: ModelPack) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise PackError(f"output {out_dir} exists and is not a folder")
        if any(out_dir.iterdir()):
            raise PackError(f"output folder {out_dir} is not empty; refit writes a new pack and never overwrites")
    if out_dir.resolve() == base.path.resolve():
        raise PackError(f"output folder {out_dir} is the base pack itself")


def _readme(card: dict, training: TrainingSet, result_metrics: dict, holdout: str, head: LinearHead,
            base: ModelPack) -> str:  # fmt: skip
    prov = card["provenance"]
    lines = [
        f"# {card['name']} {card['version']}",
        "",
        (f"Refit of `{base.ref}`: the base network up to its `{card['outputs']['embedding']['name']}` output, with a "
         "new softmax head (multinomial logistic regression, class-weighted, L2) fitted on reviewed labels by "
         "`cytoreview train`."),
        "",
        f"- parent: `{prov['parent']}`",
        f"- created: {prov['created']}",
        f"- training set: {training.n_items} items from `{training.source}` (sha256 `{training.digest()}`)",
        f"- holdout: {holdout} ({result_metrics.get('n', 0)} items); the shipped head is then fitted on all items",
        f"- solver: {head.solver}, {head.n_iter} iterations",
        "",
        "## Held-out metrics",
        "",
    ]
    if result_metrics.get("warning"):
        lines += [f"**Warning: {result_metrics['warning']}.**", ""]
    if result_metrics.get("n"):
        def fmt(v):
            return "n/a" if v is None else f"{v:.3f}"

        lines += [
            "| metric | refit | base |",
            "|---|---|---|",
            f"| accuracy | {fmt(result_metrics['accuracy'])} | {fmt(result_metrics.get('base_accuracy'))} |",
            f"| Cohen's kappa vs reviewers | {fmt(result_metrics['kappa'])} | {fmt(result_metrics.get('base_kappa'))} |",
            f"| balanced accuracy | {fmt(result_metrics['balanced_accuracy'])} | |",
            "",
            "| class | training items | held-out items | held-out recall |",
            "|---|---|---|---|",
        ]
        counts = training.class_counts()
        for name in training.class_names:
            lines.append(f"| {name} | {counts[name]} | {result_metrics['support'][name]} | "
                         f"{fmt(result_metrics['recall'][name])} |")  # fmt: skip
    else:
        lines += ["Too few items for a holdout: no metrics.", ""]
        lines += ["| class | training items |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in training.class_counts().items()]
    if training.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in training.notes]
    lines += ["", "## Classes", "", "| id | name | colour | hotkey |", "|---|---|---|---|"]
    lines += [f"| {c['id']} | {c['name']} | {c.get('color', '')} | {c.get('hotkey', '')} |" for c in card["classes"]]
    return "\n".join(lines) + "\n"


def _self_check(pack: ModelPack, base: ModelPack, head: LinearHead) -> None:
    """Run the new pack on two test patches; its probabilities must match the numpy head on the base embedding."""
    rng = np.random.default_rng(0)
    s = pack.size_px
    patches = np.stack([np.full((s, s, 3), 255, np.uint8), rng.integers(0, 256, (s, s, 3), dtype=np.uint8)])
    try:
        new = pack.session(threads=1).run(patches)
        old = base.session(threads=1).run(patches)
    except Exception as exc:  # noqa: BLE001 - anything here means the written pack is unusable
        raise PackError(f"the refit pack {pack.path} does not run: {exc}") from None
    expected = head.predict_proba(old["embedding"])
    if new["probs"].shape != expected.shape or not np.allclose(new["probs"], expected, atol=SELF_CHECK_ATOL):
        raise PackError(f"the refit pack {pack.path} disagrees with the fitted head (self-check failed)")
    if new["embedding"] is None or not np.allclose(new["embedding"], old["embedding"], atol=1e-5):
        raise PackError(f"the refit pack {pack.path} changed the base embedding (self-check failed)")


def base_prior(base: ModelPack, training: TrainingSet):
    """The base pack's own head mapped onto the training set's classes (zero columns for new classes), or None."""
    card = base.card
    if card["outputs"]["probabilities"].get("activation") not in ("softmax", "none"):
        return None
    found = extract_linear_head(base.onnx_path, card["outputs"]["embedding"]["name"],
                                card["outputs"]["probabilities"]["name"])  # fmt: skip
    if found is None:
        return None
    w0, b0 = found
    if w0.shape[0] != training.embeddings.shape[1] or w0.shape[1] != len(base.classes):
        return None
    from cytoreview.class_names import name_key

    index = {name_key(c["name"]): i for i, c in enumerate(base.classes)}
    w = np.zeros((w0.shape[0], len(training.classes)), np.float32)
    b = np.zeros(len(training.classes), np.float32)
    for j, c in enumerate(training.classes):
        i = index.get(name_key(c["name"]))
        if i is not None:
            w[:, j], b[j] = w0[:, i], b0[i]
    return w, b


def refit_detailed(
    labels: Any,
    base_pack: ModelPack | str | Path,
    out_dir: str | Path,
    *,
    name: str | None = None,
    version: str | None = None,
    reg: float = 1e-3,
    class_weight: str | Mapping[int, float] | None = "balanced",
    seed: int = 0,
    holdout: float = 0.2,
    select: str = "reviewed",
    min_confidence: float = 0.9,
    classes=None,
    embed_missing: bool = True,
    prior: str | None = None,
    threads: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    cancel=None,
) -> RefitResult:
    """:func:`refit`, returning the training set, head and metrics as well (see :func:`refit` for parameters)."""
    base = load_pack(base_pack)
    out_dir = Path(out_dir).expanduser()
    if base.task not in ("tile-classification", "cell-classification"):
        raise PackError(f"pack {base.ref} is a {base.task} pack; refit fits tile- and cell-classification heads")
    if not base.card["outputs"].get("embedding"):
        raise PackError(f"pack {base.ref} has no embedding output (outputs.embedding in {base.card_path}); "
                        "a refit needs one")  # fmt: skip
    new_name = name or base.name
    if not _NAME_RE.match(new_name):
        raise PackError(f"pack name {new_name!r} must use lower-case letters, digits and '-'")
    if not 0.0 <= float(holdout) < 0.9:
        raise ExportError(f"holdout must be in [0, 0.9), got {holdout}")
    _check_out_dir(out_dir, base)

    if isinstance(labels, TrainingSet):
        training = labels
    elif hasattr(labels, "label_table") or (isinstance(labels, (str, Path)) and _is_project(Path(labels))):
        training = from_project(labels, base, select=select, min_confidence=min_confidence,
                                embed_missing=embed_missing, threads=threads, progress=progress, cancel=cancel)  # fmt: skip
    elif isinstance(labels, (str, Path)):
        if classes is not None and hasattr(classes, "schema"):  # a Project: its active classes
            classes = [{"name": c.name, "color": c.color[:7], "hotkey": c.hotkey, "level": c.level}
                       for c in classes.schema.active_classes]  # fmt: skip
        training = from_labelset(labels, base, classes=classes, threads=threads, progress=progress, cancel=cancel)
    else:
        raise ExportError(f"labels must be a project, a label-set path or a TrainingSet, not {type(labels).__name__}")
    _check_cancel(cancel)

    k = len(training.classes)
    if training.embeddings.shape[1] == 0:
        raise ExportError(f"{training.source}: empty embeddings")
    prior_head = None
    if prior == "base":
        prior_head = base_prior(base, training)
        if prior_head is None:
            training.notes.append(f"{base.ref}'s head is not linear on its embedding: fitted from zero instead")
    elif prior is not None:
        raise ExportError(f"prior must be 'base' or None, got {prior!r}")
    if progress:
        progress("fit", 0, 2)
    eligible = np.ones(training.n_items, bool) if training.reviewed is None else training.reviewed.astype(bool)
    sub_mask, how = holdout_split(training.labels[eligible], training.groups[eligible], float(holdout), seed,
                                  None if training.split is None else training.split[eligible])  # fmt: skip
    mask = np.zeros(training.n_items, bool)
    mask[np.flatnonzero(eligible)[sub_mask]] = True  # only labels a person gave are held out
    train_mask = ~mask
    if how.startswith("grouped"):  # no item of a held-out case (model calls included) trains the evaluated head
        train_mask &= ~np.isin(training.groups, np.unique(training.groups[mask]))
    result_metrics: dict = {"n": 0}
    if mask.any():
        head_eval = fit_logistic(training.embeddings[train_mask], training.labels[train_mask], k, reg=reg,
                                 class_weight=class_weight, prior=prior_head)  # fmt: skip
        pred = head_eval.predict(training.embeddings[mask])
        result_metrics = metrics(training.labels[mask], pred, training.class_names, training.base_pred[mask])
    result_metrics.update(holdout=how, n_train=int(train_mask.sum()))
    too_small = small_holdout_warning(result_metrics)
    if too_small:  # said in the card, the README, the CLI and the dock, never a bare "accuracy 1.000"
        result_metrics["warning"] = too_small
        warnings.warn(too_small, SmallHoldoutWarning, stacklevel=2)
    if progress:
        progress("fit", 1, 2)
    _check_cancel(cancel)
    head = fit_logistic(training.embeddings, training.labels, k, reg=reg, class_weight=class_weight, prior=prior_head)
    train_pred = head.predict(training.embeddings)
    result_metrics["train_accuracy"] = float((train_pred == training.labels).mean())
    if progress:
        progress("fit", 2, 2)

    # ---------------------------------------------------------------- the new pack
    taken = _taken_versions(new_name, out_dir)
    if new_name == base.name:
        taken.add(base.version)
        new_version = version or next_version(base.version, taken)
    else:
        new_version = version or ("1.0.0" if "1.0.0" not in taken else next_version("1.0.0", taken))
    new_classes = []
    for i, c in enumerate(training.classes):
        entry = {"id": i, "name": c["name"]}
        for key in ("color", "hotkey", "level"):
            if c.get(key):
                entry[key] = c[key]
        new_classes.append(entry)
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    digest = training.digest()
    card = copy.deepcopy(base.card)
    card.pop("model_file", None)
    card["name"] = new_name
    card["version"] = new_version
    parent_text = base.card.get("description", "").strip().rstrip(".")
    card["description"] = (f"{parent_text + '. ' if parent_text else ''}Refit of {base.ref}: new head on the "
                           f"embedding, fitted on {training.n_items} labelled items.")  # fmt: skip
    probs_name = base.card["outputs"]["probabilities"]["name"]
    card["outputs"]["probabilities"] = {"name": probs_name, "activation": "none"}  # softmax is in the graph
    card["classes"] = new_classes
    card["provenance"] = {
        "parent": base.ref,
        # the card schema types training_set as a string: its hash here, the details in training_data
        "training_set": f"sha256:{digest}",
        "training_data": {
            "hash": digest,
            "n_items": training.n_items,
            "class_counts": training.class_counts(),
            "source": training.source,
            "notes": list(training.notes),
        },
        "metrics": _jsonable(result_metrics),
        "method": {
            "head": "multinomial logistic regression",
            "reg": float(reg),
            "class_weight": class_weight if isinstance(class_weight, (str, type(None))) else dict(class_weight),
            "seed": int(seed),
            "holdout": float(holdout),
            "solver": head.solver,
            "prior": "base head" if prior_head is not None else None,
        },
        "created": created,
    }
    from cytoreview.inference.ood import update_reference

    # the out-of-distribution check of the new pack: what it was trained on now includes the refit's items
    card["reference"] = update_reference(base.card.get("reference"), training.embeddings,
                                         f"{training.n_items} items of {training.source}")
    card = validate_card(card, out_dir / CARD_FILENAME)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        if progress:
            progress("write", 0, 1)
        append_head(base.onnx_path, tmp / "model.onnx", embedding_name=card["outputs"]["embedding"]["name"],
                    probs_name=probs_name, weights=head.weights, bias=head.bias,
                    metadata={"classes": classes_metadata(new_classes), "cytoreview_parent": base.ref,
                              "cytoreview_version": new_version})  # fmt: skip
        (tmp / CARD_FILENAME).write_text(yaml.safe_dump(card, allow_unicode=True, sort_keys=False), "utf-8")
        (tmp / "README.md").write_text(_readme(card, training, result_metrics, how, head, base), "utf-8")
        pack = load_pack(tmp)
        _self_check(pack, base, head)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pack = load_pack(out_dir)
    if progress:
        progress("write", 1, 1)
    return RefitResult(pack=pack, training=training, head=head, metrics=result_metrics, holdout=how)


def refit(
    labels: Any,
    base_pack: ModelPack | str | Path,
    out_dir: str | Path,
    *,
    name: str | None = None,
    reg: float = 1e-3,
    class_weight: str | Mapping[int, float] | None = "balanced",
    seed: int = 0,
    holdout: float = 0.2,
    progress: Callable[[str, int, int], None] | None = None,
    **kwargs,
) -> ModelPack:
    """Refit ``base_pack``'s head on corrected labels and write a new pack to ``out_dir``.

    Parameters
    ----------
    labels : Project, str or Path
        A project (object or folder with ``project.sqlite``): its reviewed tile items, embedded from the base
        pack's prediction stores. Or an exported label set: an ImageFolder, a CSV / Parquet manifest whose images
        are reachable, or an export folder. A :class:`~cytoreview.train.dataset.TrainingSet` is used as is.
    base_pack : ModelPack, str or Path
        A tile-classification pack with an embedding output (anything :func:`load_pack` accepts).
    out_dir : str or Path
        The new pack folder; must not exist or be empty.
    name : str, optional
        Name of the new pack (default: the base's name, version bumped: 1.0.0 -> 1.1.0, or the next free minor).
    reg : float
        L2 strength on standardised weights.
    class_weight : {"balanced", None} or mapping
        ``"balanced"`` weighs every class equally in total; a mapping ``{class index: weight}``.
    seed : int
        Seed of the holdout split.
    holdout : float
        Share of items held out for the metrics (0 for none).
    progress : callable, optional
        ``progress(stage, done, total)``, stage in ``embeddings``, ``fit``, ``write``.
    **kwargs
        ``version``, ``select`` ("reviewed" | "reviewed+confident" | "corrected" | "trusted" | "all"),
        ``min_confidence``, ``classes`` (allowed class names, or a Project, for a label set), ``embed_missing``,
        ``prior`` ("base": start from the base pack's own head and shrink towards it instead of towards zero, when
        that head is linear on the embedding), ``threads``, ``cancel`` (``threading.Event``).

    Returns
    -------
    ModelPack
        The new pack, loaded from ``out_dir``.

    Raises
    ------
    ExportError
        No usable labels, one class only, classes unknown to the project, unreadable label set, missing embeddings.
    PackError
        Base pack without an embedding output or not a tile classifier, output folder not empty, bad name, or the
        written pack failing its self-check.
    """
    return refit_detailed(labels, base_pack, out_dir, name=name, reg=reg, class_weight=class_weight, seed=seed,
                          holdout=holdout, progress=progress, **kwargs).pack  # fmt: skip


def _jsonable(value):
    """Plain Python types (for YAML)."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
