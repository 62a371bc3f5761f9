"""Cell classification: a ``cell-classification`` pack run on a crop centred on each cell a detector found.

The crop is the classifier's field of view, ``input.size_px`` pixels at ``input.mpp`` (``size_px * mpp`` µm a
side), read around the cell's centroid and resampled as prediction resamples (:func:`crop_at`, the one crop that
refit embeddings use too). Results go to a prediction store of their own (``<image>__<classifier>@<v>.zarr``) with
a ``cells`` group: the detector's cells (position, outline, area, detection probability as ``detection_prob``) plus
``class``, ``score`` (probability of that class), ``uncertainty`` (normalised entropy), ``probs`` (n, C) and
``embedding`` (n, D). Importing the detector's store and then this one into a project gives each cell item the
classifier's call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from cytoreview import __version__
from cytoreview.errors import CytoreviewError, PackError
from cytoreview.inference.grid import resize_patch
from cytoreview.inference.store import PredictionStore, store_path_for, write_cells
from cytoreview.models.pack import ModelPack, load_pack
from cytoreview.models.session import normalised_entropy

#: Cells classified per ``session.run``.
CELL_BATCH = 64


def crop_side_px(pack, image_mpp: float) -> int:
    """Side of a cell crop in level-0 pixels: the classifier's field of view (``size_px * mpp`` µm)."""
    return max(1, round(pack.size_px * float(pack.card["input"]["mpp"]) / float(image_mpp)))


def crop_at(image, y_px: float, x_px: float, side_px: int, size_px: int, field: int = 0, z: int = 0) -> np.ndarray:
    """uint8 ``(size_px, size_px, 3)``: the ``side_px`` square of level 0 centred on ``(y_px, x_px)``, resampled.

    Outside the image is white (glass), as in tiled prediction.
    """
    y0 = round(float(y_px) - side_px / 2)
    x0 = round(float(x_px) - side_px / 2)
    region = image.read_region(int(y0), int(x0), int(side_px), int(side_px), 0, int(field), int(z))
    return resize_patch(region, size_px)


def classify_cells(
    image_or_path,
    detector_store: PredictionStore | str | Path,
    pack: ModelPack | str | Path,
    out_dir: str | Path,
    *,
    threads: int | None = None,
    providers=None,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
    session=None,
    z: int = 0,
) -> PredictionStore:
    """Classify every cell of a detector's store with a ``cell-classification`` pack; write its store.

    Parameters
    ----------
    image_or_path : Image or str or Path
        The image the detector ran on.
    detector_store : PredictionStore or path
        A segmentation store with a ``cells`` group.
    pack : ModelPack or str or Path
        The cell classifier.
    out_dir : str or Path
        Folder of the classifier's store.
    progress : callable, optional
        ``progress(done_cells, total_cells)``.
    cancel : threading.Event-like, optional
        Checked between batches; a cancelled run leaves a store with ``complete == False``.

    Raises
    ------
    PackError
        The pack is not a cell classifier, or it fails on a batch.
    CytoreviewError
        The detector store has no cells, or was made for another image.
    """
    from cytoreview.inference.predict import _open

    pack = load_pack(pack)
    if pack.task != "cell-classification":
        raise PackError(f"{pack.ref} is a {pack.task} pack; --then / classify_cells needs a cell-classification pack")
    det = detector_store if isinstance(detector_store, PredictionStore) else PredictionStore(detector_store)
    cells = det.cells()
    if not cells:
        raise CytoreviewError(f"{det.path}: no cells to classify (run a segmentation pack first)")
    image, opened_here = _open(image_or_path)
    try:
        stored_image = det.attrs.get("image_path")
        if stored_image and Path(stored_image).name != Path(image.path).name:
            raise CytoreviewError(f"{det.path} was made for {stored_image}, not for {image.path}")
        sess = session if session is not None else pack.session(providers=providers, threads=threads)
        side = crop_side_px(pack, image.mpp)
        n = len(cells["field"])
        n_classes = len(pack.classes)
        probs = np.full((n, n_classes), np.nan, dtype=np.float32)
        emb = None
        done = 0
        cancelled = False
        if progress:
            progress(0, n)
        for start in range(0, n, CELL_BATCH):
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            sl = slice(start, min(n, start + CELL_BATCH))
            patches = np.stack([crop_at(image, y, x, side, pack.size_px, f, z)
                                for f, y, x in zip(cells["field"][sl], cells["y_px"][sl], cells["x_px"][sl])])
            out = sess.run(patches)
            probs[sl] = out["probs"]
            if out["embedding"] is not None:
                if emb is None:
                    emb = np.full((n, out["embedding"].shape[1]), np.nan, dtype=np.float32)
                emb[sl] = out["embedding"]
            done = sl.stop
            if progress:
                progress(done, n)
    finally:
        if opened_here:
            image.close()
    ids = np.array([int(c["id"]) for c in pack.classes], dtype=np.int16)
    activation = pack.card["outputs"]["probabilities"]["activation"]
    ran = np.isfinite(probs).all(axis=1)
    best = np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1)
    table = {
        "field": cells["field"][ran], "y_px": cells["y_px"][ran], "x_px": cells["x_px"][ran],
        "class": ids[best][ran], "score": probs[np.arange(n), best][ran].astype(np.float32),
        "uncertainty": normalised_entropy(probs[ran], activation) if ran.any() else np.zeros(0, np.float32),
        "probs": probs[ran],
    }
    if emb is not None:
        table["embedding"] = emb[ran]
    for key in ("area_px", "area_um2"):
        if key in cells:
            table[key] = cells[key][ran]
    if "prob_mean" in cells:
        table["detection_prob"] = cells["prob_mean"][ran]
    if "outline_offset" in cells:
        off = cells["outline_offset"]
        keep = np.nonzero(ran)[0]
        polys = [cells["outline_yx"][off[i] : off[i + 1]] for i in keep]
        table["outline_yx"] = np.concatenate(polys).astype(np.float32) if polys else np.zeros((0, 2), np.float32)
        table["outline_offset"] = np.concatenate([[0], np.cumsum([len(p) for p in polys])]).astype(np.int64)
    return _write_store(image, det, pack, out_dir, table, complete=not cancelled and done == n, side=side,
                        providers=getattr(sess, "providers", []))


def _write_store(image, det: PredictionStore, pack, out_dir, table: dict, *, complete: bool, side: int,
                 providers) -> PredictionStore:
    import zarr

    path = store_path_for(image.path, pack.name, pack.version, out_dir)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    try:
        group = zarr.open_group(str(path), mode="w", zarr_format=3)
        write_cells(group, table)
        group.attrs.update({
            "pack": pack.name, "pack_version": pack.version, "pack_sha256": pack.sha256,
            "task": "cell-classification", "image_path": str(Path(image.path).resolve()),
            "image_mpp": float(image.mpp), "model_mpp": float(pack.card["input"]["mpp"]),
            "n_fields": int(image.n_fields), "tile_px_level0": int(side), "size_px": pack.size_px,
            "classes": pack.classes, "activation": pack.card["outputs"]["probabilities"]["activation"],
            "detector": det.pack_ref, "detector_store": str(Path(det.path).absolute()), "providers": list(providers),
            "cytoreview_version": __version__, "complete": bool(complete),
        })
    except OSError as exc:
        raise CytoreviewError(f"{path}: cannot write the prediction store ({exc.strerror or exc})") from exc
    return PredictionStore(path)


def classifier_stores_for(detector: PredictionStore) -> list[PredictionStore]:
    """The cell-classification stores beside ``detector`` that classify its cells, sorted by path.

    A classifier's store lies in the detector's folder (:func:`predict_cells`, ``predict --then``) and names the
    detector's store in attribute ``detector_store``; it is matched on that store's folder name and pack, so a
    project folder that was moved still finds its chain. Empty for a store that is not a segmentation store.
    """
    from cytoreview.inference.store import list_stores

    image_path = detector.attrs.get("image_path")
    if detector.attrs.get("task") != "segmentation" or not image_path:
        return []
    found = []
    for store in list_stores(detector.path.parent, image_path):
        attrs = store.attrs
        if (attrs.get("task") == "cell-classification" and attrs.get("detector") == detector.pack_ref
                and Path(str(attrs.get("detector_store", ""))).name == detector.path.name):
            found.append(store)
    return found


def check_chain(detector, classifier) -> None:
    """Refuse a chain that is not a segmentation pack followed by a cell-classification pack."""
    if detector.task != "segmentation":
        raise PackError(f"{detector.ref} is a {detector.task} pack; a cell classifier runs after a segmentation pack")
    if classifier.task != "cell-classification":
        raise PackError(f"{classifier.ref} is a {classifier.task} pack; --then needs a cell-classification pack")


def predict_cells(image_or_path, detector, classifier, out_dir, **kwargs) -> tuple[PredictionStore, PredictionStore]:
    """``predict`` with a segmentation pack, then :func:`classify_cells` on its cells: ``(detector, classifier)``
    stores. ``kwargs`` go to ``predict`` (``threads``, ``providers``, ``progress``, ``cancel`` also to the classifier).
    """
    from cytoreview.inference.predict import _open, predict

    detector = load_pack(detector)
    classifier = load_pack(classifier)
    check_chain(detector, classifier)
    image, opened_here = _open(image_or_path)
    try:
        det = predict(image, detector, out_dir, **kwargs)
        if not det.complete:
            return det, None
        keep = {k: kwargs[k] for k in ("threads", "providers", "progress", "cancel", "z") if k in kwargs}
        return det, classify_cells(image, det, classifier, out_dir, **keep)
    finally:
        if opened_here:
            image.close()
