"""Import a prediction store (zarr v3 group written by :func:`cytoreview.inference.predict`) into a project.

What becomes an item:

* every predicted tile (``tile_class >= 0``) -> a ``tile`` item with the model's class, its probability and the
  tile's normalised entropy as uncertainty;
* every detected cell of a ``cells`` group -> a ``cell`` point item (probability = ``score``, uncertainty =
  ``1 - score`` unless the group has an ``uncertainty`` array);
* for a field set with tile predictions, one ``field`` item per field that has predicted tiles: its model labels
  are its model class plus the classes with probability > 0.5 in at least one of its tiles (never empty); its model
  class is the class of most tiles,
  with that class's highest tile probability; its uncertainty is the mean tile uncertainty.

Which of a store's parts become items is decided in one place, :func:`store_yield`:

* a segmentation store's tile arrays (its per-tile class summary) are never items -- a segmenter's items are its
  cells;
* a segmentation store whose cells a chained ``cell-classification`` pack classified (its store lies beside the
  detector's and names it, :func:`cytoreview.inference.classify.classifier_stores_for`) adds neither classes nor
  items of its own: it is recorded and the classifier's store is imported in its stead, so each cell comes in with
  its real class and the detector's generic foreground class ("cell") never enters the schema ahead of (and takes
  the hotkeys of) the classifier's classes. Importing the detector's store, the classifier's, or both in any order
  ends with the same items and classes.

Pack classes are matched to the project's classes by name (ignoring case; a class merged away maps to its merge
target); unknown ones are added. Importing the same store again changes nothing (items are upserted on their
geometry), and a reviewer's label is never overwritten by a model. An unfinished store (``complete`` not true) is
refused unless ``allow_partial=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cytoreview.errors import ProjectError
from cytoreview.review.images import record_prediction_store
from cytoreview.review.items import upsert
from cytoreview.review.schema import map_pack_classes

#: A class is "present" in a field when one of its tiles gives it more than this probability.
FIELD_PRESENCE_PROB = 0.5


class StoreYield(NamedTuple):
    """What importing one prediction store brings into a project (see :func:`store_yield`)."""

    tiles: bool  # its predicted tiles (if any) become tile items (and, for a field set, field items)
    cells: bool  # its cells (if any) become cell items
    classified_by: tuple  # PredictionStores of the chained classifiers imported in its stead (cells classified)

    @property
    def classes(self) -> bool:
        """Its classes enter the schema (only when some of its own items do)."""
        return self.tiles or self.cells


def store_yield(store) -> StoreYield:
    """The one rule of which parts of ``store`` (a :class:`cytoreview.inference.store.PredictionStore`) are items.

    A tile pack's store yields its tiles and any cells; a segmentation store never its tile summaries, and its own
    cells only while no chained cell classifier classified them; a cell-classification store yields its cells.
    """
    from cytoreview.inference.classify import classifier_stores_for

    if store.attrs.get("task") != "segmentation":
        return StoreYield(tiles=True, cells=True, classified_by=())
    chained = tuple(classifier_stores_for(store))
    return StoreYield(tiles=False, cells=not chained, classified_by=chained)


def import_predictions(project, image_id: int, store_path: str | os.PathLike, *, allow_partial: bool = False) -> int:
    """Import the prediction store at ``store_path`` as items of image ``image_id``.

    Parameters
    ----------
    allow_partial : bool
        An unfinished store (attribute ``complete`` false or missing: the run was cancelled, crashed or is still
        going) is refused by default, because its untouched tiles would silently look like background. Pass true
        to import the tiles/cells predicted so far anyway (importing the finished store later fills in the rest).

    Returns
    -------
    int
        The number of items the store describes (created or already present), with those of the chained
        classifier stores imported in its stead (:func:`store_yield`).

    Raises
    ------
    ProjectError
        The store is missing, not a zarr group, lacks a required attribute or array, its arrays disagree in
        shape -- the message names the store and the key -- or it is unfinished and ``allow_partial`` is false.
    """
    from cytoreview.inference.store import PredictionStore, StoreError

    path = Path(store_path).expanduser().absolute()
    try:  # the one prediction-store reader: it checks the attributes and arrays every reader relies on
        store = PredictionStore(path)
        attrs = store.attrs
        if attrs.get("complete") is not True and not allow_partial:
            raise ProjectError(f"prediction store {path} is unfinished (attribute 'complete' is "
                               f"{attrs.get('complete', 'missing')!r}): finish or resume the prediction run, or "
                               "import what is done with allow_partial=True")
        image = project.image(image_id)
        stored_image = attrs.get("image_path")
        if stored_image and Path(stored_image).name != image.path.name:
            raise ProjectError(f"prediction store {path} was made for {stored_image}, not for image {image_id} "
                               f"({image.path})")
        model = store.pack_ref
        tile_px = store.tile_px_level0
        yields = store_yield(store)
        pack_classes = store.classes if yields.classes else []
        tile_items = store.tile_calls() if yields.tiles else None
        cell_items = store.cell_calls() if yields.cells else None
        for chained in yields.classified_by:  # refused before anything is written, as this store would be
            if not chained.complete and not allow_partial:
                raise ProjectError(f"the cells of prediction store {path} are classified by {chained.path}, which "
                                   "is unfinished: finish or resume the prediction run, or import what is done "
                                   "with allow_partial=True")
    except StoreError as exc:
        raise ProjectError(str(exc)) from None

    items = []
    with project.db.write() as con:
        mapping = map_pack_classes(con, pack_classes, f"prediction store {path}")
        index_to_id = [mapping[int(c["id"])] for c in pack_classes]
        pack_id_to_id = mapping
        if tile_items is not None:
            f, r, c, cls, unc, probs = tile_items
            id_to_index = {int(pc["id"]): k for k, pc in enumerate(pack_classes)}
            unknown = set(np.unique(cls).tolist()) - set(id_to_index)
            if unknown:
                raise ProjectError(f"prediction store {path}: tile_class holds id(s) {sorted(unknown)} that are not "
                                   "in attribute 'classes'")
            prob = probs[np.arange(len(cls)), [id_to_index[int(k)] for k in cls]] if len(cls) else []
            for i in range(len(f)):
                items.append({"level": "tile", "field": int(f[i]),
                              "geometry": {"type": "tile", "row": int(r[i]), "col": int(c[i]), "size_px": tile_px},
                              "model": model, "model_class": pack_id_to_id[int(cls[i])],
                              "model_prob": _f(prob[i]), "uncertainty": _f(unc[i])})
            if image.kind == "fields":
                items.extend(_field_items(f, cls, unc, probs, pack_classes, index_to_id, pack_id_to_id, model))
        if cell_items is not None:
            f, y, x, cls, score, unc = cell_items
            unknown = set(np.unique(cls).astype(int).tolist()) - set(pack_id_to_id)
            if unknown:
                raise ProjectError(f"prediction store {path}: cells/class holds id(s) {sorted(unknown)} that are not "
                                   "in attribute 'classes'")
            for i in range(len(f)):
                items.append({"level": "cell", "field": int(f[i]),
                              "geometry": {"type": "point", "y": float(y[i]), "x": float(x[i])},
                              "model": model, "model_class": pack_id_to_id[int(cls[i])],
                              "model_prob": _f(score[i]), "uncertainty": _f(unc[i])})
        upsert(con, image_id, items)
        record_prediction_store(con, image_id, path, attrs["pack"], attrs["pack_version"], len(items))
    project.schema.refresh()  # classes may have been added through this connection
    n_chained = sum(import_predictions(project, image_id, chained.path, allow_partial=allow_partial)
                    for chained in yields.classified_by)
    return len(items) + n_chained


# ---------------------------------------------------------------------- items from the calls
def _f(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def _field_items(f, cls, unc, probs, pack_classes, index_to_id, pack_id_to_id, model):
    out = []
    for field in np.unique(f):
        sel = f == field
        present = np.nonzero((probs[sel] > FIELD_PRESENCE_PROB).any(axis=0))[0]
        ids, counts = np.unique(cls[sel], return_counts=True)
        top = int(ids[np.argmax(counts)])
        top_index = next(k for k, c in enumerate(pack_classes) if int(c["id"]) == top)
        field_unc = unc[sel]
        out.append({"level": "field", "field": int(field), "geometry": {"type": "field"}, "model": model,
                    "model_class": pack_id_to_id[top],
                    "model_labels": sorted({index_to_id[k] for k in present} | {pack_id_to_id[top]}),
                    "model_prob": _f(np.nanmax(probs[sel][:, top_index])),
                    "uncertainty": None if np.all(np.isnan(field_unc)) else float(np.nanmean(field_unc))})
    return out
