"""What people run end to end: the one place the CLI commands and the napari docks both call.

* :func:`project_folder_for` -- the one rule for where an image's project folder goes; :func:`next_pack_folder`.
* :func:`init_project`, :func:`add_images`, :func:`open_project` -- projects from the shell.
* :func:`predict_into_project` -- predict an image, register it, import the finished predictions.
* :func:`compare_packs` / :func:`compare_image` -- the tiles whose class changed between two packs.
"""

from cytoreview.workflows.comparing import Cancelled, Comparison, ImageComparison, compare_image, compare_packs
from cytoreview.workflows.folders import PROJECT_SUFFIX, next_pack_folder, project_folder_for
from cytoreview.workflows.predicting import (
    PredictionRun,
    import_store,
    predict_images_into_project,
    predict_into_project,
)
from cytoreview.workflows.projects import (
    AddedImage,
    WorkflowError,
    add_images,
    find_image,
    guessed_mpp_note,
    init_project,
    mpp_is_guessed,
    ood_note,
    open_project,
    register_image,
)

__all__ = [
    "PROJECT_SUFFIX",
    "AddedImage",
    "Cancelled",
    "Comparison",
    "ImageComparison",
    "PredictionRun",
    "WorkflowError",
    "add_images",
    "compare_image",
    "compare_packs",
    "find_image",
    "guessed_mpp_note",
    "import_store",
    "init_project",
    "mpp_is_guessed",
    "ood_note",
    "next_pack_folder",
    "open_project",
    "predict_images_into_project",
    "predict_into_project",
    "project_folder_for",
    "register_image",
]
