"""cytoreview: review and correct AI predictions on cytology slides, and turn the corrections into training data.

The public function API is re-exported here lazily, so that ``import cytoreview`` (which napari does to read the
plugin manifest) stays cheap and never imports napari, Qt or onnxruntime by itself.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "open_image": "cytoreview.io",
    "Image": "cytoreview.io",
    "load_pack": "cytoreview.models",
    "find_packs": "cytoreview.models",
    "predict": "cytoreview.inference",
    "Project": "cytoreview.review",
    "export_labels": "cytoreview.export",
    "refit": "cytoreview.train",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cytoreview' has no attribute {name!r}")
    return getattr(import_module(module), name)
