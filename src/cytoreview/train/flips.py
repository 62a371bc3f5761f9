"""Flips: the tiles whose predicted class changed between two prediction stores of the same image.

After a refit, the reviewer checks where the new pack disagrees with the old one. Classes are compared by name
(the refit may have added, dropped or renumbered classes). Only tiles predicted by both stores are compared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cytoreview.class_names import name_key
from cytoreview.errors import CytoreviewError
from cytoreview.inference.store import PredictionStore, StoreError

#: Columns of the flips table, in order.
FLIP_COLUMNS = ("field", "row", "col", "y0", "x0", "y1", "x1", "old_class", "old", "old_prob", "new_class", "new",
                "new_prob", "new_prob_of_old", "new_uncertainty")  # fmt: skip


def _open(store) -> PredictionStore:
    return store if isinstance(store, PredictionStore) else PredictionStore(Path(store))


def flips(base_store, new_store, *, sort: str = "confidence") -> pd.DataFrame:
    """Tiles whose class differs between ``base_store`` and ``new_store``.

    Parameters
    ----------
    base_store, new_store : PredictionStore or path
        Two tile-classification stores of the same image with the same tile grid.
    sort : {"confidence", "position"}
        ``"confidence"``: the new pack's most confident changes first (ties by position); ``"position"``: by
        field, row, col.

    Returns
    -------
    pandas.DataFrame
        One row per flipped tile with :data:`FLIP_COLUMNS`: field, row, col, the tile's level-0 box (y0, x0, y1, x1),
        old class id and name with the old pack's probability of it, new class id and name with the new pack's
        probability of it, the new pack's probability of the old class (NaN when it has no such class) and the new
        uncertainty.

    Raises
    ------
    CytoreviewError
        When a store cannot be opened, the stores are of different images or grids, or not tile classifiers.
    """
    a, b = _open(base_store), _open(new_store)
    for s in (a, b):
        if s.task != "tile-classification":
            raise StoreError(f"{s.path}: flips compare tile-classification stores, this one is {s.task!r}")
    ia, ib = a.attrs.get("image_path"), b.attrs.get("image_path")
    if ia and ib and Path(ia).resolve() != Path(ib).resolve():
        raise CytoreviewError(f"the stores are of different images: {ia} ({a.path.name}) vs {ib} ({b.path.name})")
    if a.grid_shape != b.grid_shape or a.tile_px_level0 != b.tile_px_level0:
        raise CytoreviewError(
            f"the stores have different tile grids: {a.grid_shape} x {a.tile_px_level0} px ({a.path.name}) vs "
            f"{b.grid_shape} x {b.tile_px_level0} px ({b.path.name}); compare packs with the same input size and mpp"
        )
    ca, cb = np.asarray(a.tile_class[:]), np.asarray(b.tile_class[:])
    names_a, names_b = a.class_names, b.class_names
    key = name_key
    ids_a = {int(c["id"]): k for k, c in enumerate(a.classes)}
    ids_b = {int(c["id"]): k for k, c in enumerate(b.classes)}
    b_index_by_name = {key(c["name"]): k for k, c in enumerate(b.classes)}
    # class names as comparable codes: the same name gets the same code in both stores
    codes: dict[str, int] = {}
    code_a = {i: codes.setdefault(key(n), len(codes)) for i, n in names_a.items()}
    code_b = {i: codes.setdefault(key(n), len(codes)) for i, n in names_b.items()}
    both = (ca >= 0) & (cb >= 0)
    f, r, c = np.nonzero(both)
    old, new = ca[f, r, c].astype(int), cb[f, r, c].astype(int)
    changed = np.array([code_a[o] != code_b[n] for o, n in zip(old, new)], dtype=bool)
    f, r, c, old, new = f[changed], r[changed], c[changed], old[changed], new[changed]
    pa, pb = np.asarray(a.tile_prob[:]), np.asarray(b.tile_prob[:])
    ub = np.asarray(b.tile_uncertainty[:])
    t = a.tile_px_level0
    old_prob = np.array([pa[fi, ri, ci, ids_a[o]] for fi, ri, ci, o in zip(f, r, c, old)], dtype=np.float32)
    new_prob = np.array([pb[fi, ri, ci, ids_b[n]] for fi, ri, ci, n in zip(f, r, c, new)], dtype=np.float32)
    new_of_old = []
    for fi, ri, ci, o in zip(f, r, c, old):
        k = b_index_by_name.get(key(names_a[o]))
        new_of_old.append(np.nan if k is None else pb[fi, ri, ci, k])
    df = pd.DataFrame({
        "field": f.astype(np.int64), "row": r.astype(np.int64), "col": c.astype(np.int64),
        "y0": (r * t).astype(np.int64), "x0": (c * t).astype(np.int64),
        "y1": ((r + 1) * t).astype(np.int64), "x1": ((c + 1) * t).astype(np.int64),
        "old_class": old.astype(np.int64), "old": [names_a[o] for o in old], "old_prob": old_prob,
        "new_class": new.astype(np.int64), "new": [names_b[n] for n in new], "new_prob": new_prob,
        "new_prob_of_old": np.asarray(new_of_old, dtype=np.float32), "new_uncertainty": ub[f, r, c].astype(np.float32),
    }, columns=list(FLIP_COLUMNS))  # fmt: skip
    if sort == "confidence":
        df = df.sort_values(["new_prob", "field", "row", "col"], ascending=[False, True, True, True], kind="stable")
    elif sort != "position":
        raise CytoreviewError(f"sort must be 'confidence' or 'position', got {sort!r}")
    return df.reset_index(drop=True)
