"""The review queue: in which order a reviewer sees the items still to review.

Strategies:

``"uncertainty"``
    highest model uncertainty first (items without one last), ties by id.
``"disagreement"``
    items whose existing labels disagree -- reviewers with the model or with each other -- first (most distinct
    answers first), then by uncertainty. Always judged against the asking reviewer's *own* reviews, so it serves
    second reads and adjudication.
``"rare"``
    the rarest model-predicted class first (counted over the filtered items), then by uncertainty -- rare classes
    are what a refit needs most.
``"random"``
    a seeded pseudo-random order for an unbiased audit; an item's place depends only on (seed, item id), so adding
    items does not reshuffle the others.
``"suspicion"``
    the most suspicious fields first (:func:`field_suspicion`: the share of a field's tiles the model calls the
    image's rarest class -- what a cytologist must not miss), then by uncertainty. Every item of a field (its field
    item, its tiles, its cells) shares the field's suspicion; a slide is one field, so there it is "uncertainty".

An item is *pending* when nobody has reviewed it, or, with ``own_only=True`` (second reader), when ``reviewer`` has not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cytoreview.errors import ProjectError
from cytoreview.review import items as store_items
from cytoreview.review import journal

STRATEGIES = ("uncertainty", "disagreement", "rare", "random", "suspicion")


@dataclass(frozen=True)
class FieldSuspicion:
    """How suspicious one field of a field set looks from its tile predictions.

    Attributes
    ----------
    field : int
    item_id : int or None
        Its field item (None when the project has none for it).
    rare_share : float
        Share of its tiles the model calls the image's rarest class (0 when no tile has a model class).
    uncertainty : float
        The field item's uncertainty, else its tiles' mean uncertainty (0 when unknown).
    reviewed : bool
        Whether its field item is reviewed.
    label : list of int or None
        Its field item's current label.
    """

    field: int
    item_id: int | None
    rare_share: float
    uncertainty: float
    reviewed: bool
    label: list | None

    @property
    def suspicion(self) -> float:
        """One number to show: ``rare_share + uncertainty``."""
        return self.rare_share + self.uncertainty


def _rare_shares(tiles) -> dict[tuple[int, int], float]:
    """``{(image_id, field): share of its tiles predicted as the image's rarest class}`` from tile rows
    ``(image_id, field, model_class, uncertainty)``; the rarest class is the least predicted one (lowest id on
    a tie)."""
    by_image: dict[int, list] = {}
    for image_id, fld, mclass, _unc in tiles:
        by_image.setdefault(int(image_id), []).append((int(fld), mclass))
    out = {}
    for image_id, rows in by_image.items():
        known = [m for _, m in rows if m is not None]
        rare = None
        if known:
            ids, counts = np.unique(np.asarray(known, dtype=np.int64), return_counts=True)
            rare = int(ids[np.argmin(counts)])
        per_field: dict[int, list[int]] = {}
        for fld, m in rows:
            per_field.setdefault(fld, []).append(int(m == rare) if rare is not None and m is not None else 0)
        for fld, hits in per_field.items():
            out[(image_id, fld)] = float(np.mean(hits)) if rare is not None else 0.0
    return out


def field_suspicion(project, image_id: int) -> list[FieldSuspicion]:
    """Every field of image ``image_id`` that has a field item or predicted tiles, most suspicious first
    (rare share, then uncertainty, then field index)."""
    tiles = store_items.tile_predictions(project.db, image_id)
    shares = _rare_shares(tiles)
    out: dict[int, FieldSuspicion] = {}
    for it in store_items.read_items(project.db, image_id=image_id, level="field"):
        out[it.field] = FieldSuspicion(field=it.field, item_id=it.item_id, rare_share=shares.get((image_id, it.field),
                                       0.0), uncertainty=0.0 if it.uncertainty is None else float(it.uncertainty),
                                       reviewed=it.reviewed, label=it.label)
    unc_of: dict[int, list[float]] = {}
    for _img, fld, _m, unc in tiles:
        unc_of.setdefault(int(fld), []).append(np.nan if unc is None else float(unc))
    for fld, uncs in unc_of.items():
        if fld not in out:
            u = np.asarray(uncs)
            out[fld] = FieldSuspicion(field=fld, item_id=None, rare_share=shares.get((image_id, fld), 0.0),
                                      uncertainty=float(np.nanmean(u)) if np.isfinite(u).any() else 0.0,
                                      reviewed=False, label=None)
    return sorted(out.values(), key=lambda d: (-d.rare_share, -d.uncertainty, d.field))


def _splitmix64(values: np.ndarray, seed: int) -> np.ndarray:
    """Stateless 64-bit hash of each value (the SplitMix64 finaliser), used as a random sort key."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64((int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % (1 << 64))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _ordered(project, strategy, reviewer, image_id, level, field, own_only, seed):
    """All filtered item ids in ``strategy`` order, with a bool array saying which are pending."""
    if strategy not in STRATEGIES:
        raise ProjectError(f"queue strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if (own_only or strategy == "disagreement") and reviewer is None:
        raise ProjectError(f"queue strategy {strategy!r}{' with own_only' if own_only else ''} needs a reviewer")
    own = strategy == "disagreement" or own_only
    rows = store_items.queue_rows(project.db, reviewer=reviewer, own=own, image_id=image_id, level=level, field=field)
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    mclass = np.array([-(10**9) if r[1] is None else r[1] for r in rows], dtype=np.int64)
    if strategy == "suspicion":
        shares = _rare_shares(store_items.tile_predictions(project.db, image_id))
        suspicion = np.array([-shares.get((r[4], r[5]), 0.0) for r in rows], dtype=np.float64)
    unc = np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=np.float64)
    pending = np.array([not r[3] for r in rows], dtype=bool)
    neg_unc = np.where(np.isnan(unc), np.inf, -unc)  # highest first, missing last
    if strategy == "uncertainty":
        order = np.lexsort((ids, neg_unc))
    elif strategy == "random":
        order = np.lexsort((ids, _splitmix64(ids, seed)))
    elif strategy == "suspicion":
        order = np.lexsort((ids, neg_unc, suspicion))
    elif strategy == "rare":
        classes, counts = np.unique(mclass, return_counts=True)
        count_of = dict(zip(classes.tolist(), counts.tolist()))
        rarity = np.array([np.inf if c == -(10**9) else count_of[c] for c in mclass.tolist()])
        order = np.lexsort((ids, neg_unc, rarity))
    else:
        score = _disagreement(project, ids, reviewer)
        order = np.lexsort((ids, neg_unc, -score))
    return ids[order], pending[order]


def _disagreement(project, ids: np.ndarray, reviewer: str) -> np.ndarray:
    """Per item: number of distinct answers (model + other reviewers) minus one; 0 when all agree or nobody read it."""
    answers: dict[int, set] = {}
    for iid, label, model_labels in journal.other_answers(project.db, reviewer):
        s = answers.setdefault(iid, set())
        s.add(tuple(label))
        if model_labels is not None:
            s.add(tuple(model_labels))
    return np.array([max(len(answers.get(int(i), ())) - 1, 0) for i in ids], dtype=np.int64)


def queue(project, strategy: str = "uncertainty", *, reviewer: str | None = None, image_id: int | None = None,
          level: str | None = None, field: int | None = None, own_only: bool = False, seed: int = 0,
          limit: int | None = None) -> list[int]:
    """Pending item ids in review order.

    Parameters
    ----------
    strategy : {"uncertainty", "disagreement", "rare", "random"}
    reviewer : str, optional
        Needed for ``"disagreement"`` and ``own_only``.
    image_id, level, field : optional
        Restrict to one image / item level / field.
    own_only : bool
        Pending means "not reviewed by ``reviewer``" instead of "not reviewed by anybody".
    seed : int
        Seed of the ``"random"`` order.
    limit : int, optional
        Return at most this many ids.
    """
    if strategy == "uncertainty" and limit is not None and int(limit) >= 0:  # the first few: SQLite sorts with LIMIT, nothing else read
        if own_only and reviewer is None:
            raise ProjectError("queue strategy 'uncertainty' with own_only needs a reviewer")
        return store_items.top_by_uncertainty(project.db, int(limit), reviewer=reviewer, own=own_only,
                                              image_id=image_id, level=level, field=field)
    ids, pending = _ordered(project, strategy, reviewer, image_id, level, field, own_only, seed)
    out = ids[pending].tolist()
    return out if limit is None else out[: int(limit)]


def next_item(project, reviewer: str, strategy: str | None = None, *, image_id: int | None = None,
              level: str | None = None, field: int | None = None, own_only: bool = False,
              seed: int = 0) -> int | None:
    """Return the next pending item for ``reviewer`` after their cursor, and move the cursor there.

    The search starts just after the cursor's item in the strategy's order (so an item skipped without a label
    comes back only after the rest, wrapping round); with no cursor, or after a change of strategy, it starts at
    the top. ``strategy=None`` keeps the reviewer's last strategy ("uncertainty" for a new reviewer). Returns None
    when nothing is pending.
    """
    cursor_item, cursor_strategy = project.cursor(reviewer)
    strategy = strategy or cursor_strategy or "uncertainty"
    if strategy == "uncertainty":  # the GUI's default: answered by two indexed queries instead of a full sort
        chosen = store_items.next_by_uncertainty(
            project.db, reviewer=reviewer, cursor_item=cursor_item if cursor_strategy == strategy else None,
            own=own_only, image_id=image_id, level=level, field=field)
        project.set_cursor(reviewer, chosen if chosen is not None else cursor_item, strategy)
        return chosen
    ids, pending = _ordered(project, strategy, reviewer, image_id, level, field, own_only, seed)
    start = 0
    if cursor_item is not None and strategy == cursor_strategy:
        hit = np.nonzero(ids == cursor_item)[0]
        if hit.size:
            start = int(hit[0]) + 1
    rolled = np.roll(pending, -start)
    candidates = np.nonzero(rolled)[0]
    if candidates.size == 0:
        project.set_cursor(reviewer, cursor_item, strategy)
        return None
    chosen = int(ids[(start + int(candidates[0])) % len(ids)])
    project.set_cursor(reviewer, chosen, strategy)
    return chosen
