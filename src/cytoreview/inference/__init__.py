"""Tiled inference: tissue mask, patch grid, batched onnxruntime prediction and the zarr prediction store.

``predict(image_or_path, pack, out_dir)`` runs one image and returns a :class:`PredictionStore`;
``predict_many`` (in :mod:`cytoreview.inference.distributed`) spreads many images over dask.distributed workers.
"""

from cytoreview._lazy import lazy_exports

#: Public name -> the module defining it; imported on first use, so one command imports only what it uses.
_EXPORTS = {
    "PredictionStore": "cytoreview.inference.store",
    "choose_batch_size": "cytoreview.inference.predict",
    "list_stores": "cytoreview.inference.store",
    "predict": "cytoreview.inference.predict",
    "predict_many": "cytoreview.inference.distributed",
    "store_path_for": "cytoreview.inference.store",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
