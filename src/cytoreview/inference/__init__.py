"""Tiled inference: tissue mask, patch grid, batched onnxruntime prediction and the zarr prediction store.

``predict(image_or_path, pack, out_dir)`` runs one image and returns a :class:`PredictionStore`;
``predict_many`` (in :mod:`cytoreview.inference.distributed`) spreads many images over dask.distributed workers.
"""

from cytoreview.inference.predict import choose_batch_size, predict
from cytoreview.inference.store import PredictionStore, list_stores, store_path_for

__all__ = ["PredictionStore", "choose_batch_size", "list_stores", "predict", "predict_many", "store_path_for"]


def __getattr__(name):
    if name == "predict_many":  # keeps `import cytoreview.inference` from importing dask.distributed
        from cytoreview.inference.distributed import predict_many

        return predict_many
    raise AttributeError(f"module 'cytoreview.inference' has no attribute {name!r}")
