"""Refit a model pack from reviewed labels, and compare the old and new pack's predictions.

``refit(labels, base_pack, out_dir)`` fits a new softmax head on the base pack's embedding from a project's
corrections or an exported label set and writes a new, versioned pack; ``flips(base_store, new_store)`` lists the
tiles whose class changed between two prediction stores of one image.
"""

from cytoreview.train.dataset import TrainingSet, from_labelset, from_project
from cytoreview.train.flips import flips
from cytoreview.train.logistic import LinearHead, fit_logistic
from cytoreview.train.refit import RefitResult, next_version, refit, refit_detailed

__all__ = [
    "LinearHead",
    "RefitResult",
    "TrainingSet",
    "fit_logistic",
    "flips",
    "from_labelset",
    "from_project",
    "next_version",
    "refit",
    "refit_detailed",
]
