"""Refit a model pack from reviewed labels, and compare the old and new pack's predictions.

``refit(labels, base_pack, out_dir)`` fits a new softmax head on the base pack's embedding from a project's
corrections or an exported label set and writes a new, versioned pack; ``flips(base_store, new_store)`` lists the
tiles whose class changed between two prediction stores of one image.
"""

from cytoreview._lazy import lazy_exports

#: Public name -> the module defining it; imported on first use, so one command imports only what it uses.
_EXPORTS = {
    "LinearHead": "cytoreview.train.logistic",
    "RefitResult": "cytoreview.train.refit",
    "TrainingSet": "cytoreview.train.dataset",
    "fit_logistic": "cytoreview.train.logistic",
    "flips": "cytoreview.train.flips",
    "from_labelset": "cytoreview.train.dataset",
    "from_project": "cytoreview.train.dataset",
    "next_version": "cytoreview.train.refit",
    "refit": "cytoreview.train.refit",
    "refit_detailed": "cytoreview.train.refit",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
