"""``cytoreview demo``: napari with the plugin's three docks on a sample case, its model pack already running."""

from __future__ import annotations

#: Sample keys of the npe2 manifest and the pack made for each, by the short names the CLI accepts.
CASES = {
    "warthin": ("warthin_fna", "warthin-tiles"),
    "effusion": ("serous_effusion", "cell-detector"),
    "lymph-node": ("lymph_node", "node-tumor"),
}
#: Cell classifier chained after the case's detector, and the review level the demo opens on.
THEN = {"effusion": "effusion-cells"}
LEVEL = {"effusion": "cell"}
#: Dock titles, as napari.yaml names the widget contributions.
DOCKS = ("cytoreview: predict", "cytoreview: review", "cytoreview: export and retrain")
#: Title of the cell gallery dock, opened too on the cases whose pack finds cells.
GALLERY_DOCK = "cytoreview: cell gallery"
#: Width the gallery dock asks for (five columns of thumbnails).
GALLERY_WIDTH_PX = 540


def open_demo(viewer, case: str = "warthin", project_folder=None, reviewer: str | None = None):
    """Open ``case`` in ``viewer`` with the three docks and the case's pack chosen (and, on a cell case, the cell
    gallery, which shows the cells when the predictions are ready; :func:`gallery_dock` returns it).

    Parameters
    ----------
    viewer : napari.Viewer
    case : {"warthin", "effusion", "lymph-node"}
    project_folder : path, optional
        Where the review project goes (default: the predict dock's default, beside the case).
    reviewer : str, optional
        Fill in the reviewer name (the review session then opens by itself when predictions are ready).

    Returns
    -------
    tuple
        ``(image_layer, predict_dock, review_dock, train_dock)``.
    """
    sample, pack_name = CASES[case]
    layers = viewer.open_sample("cytoreview", sample)
    image_layer = layers[0]
    if viewer.dims.ndim > 2:
        viewer.dims.set_point(0, 0)  # first field
    docks = [viewer.window.add_plugin_dock_widget("cytoreview", title, tabify=True)[1] for title in DOCKS]
    predict_dock, review_dock, train_dock = docks
    for i in range(predict_dock.pack_combo.count()):
        if predict_dock.pack_combo.itemText(i).startswith(f"{pack_name}@"):
            predict_dock.pack_combo.setCurrentIndex(i)
    if case in THEN:
        predict_dock.select_then(THEN[case])
    if case in LEVEL and hasattr(review_dock, "level_combo"):
        review_dock.level_combo.setCurrentText(LEVEL[case])  # the session opens on the most uncertain cell
    if LEVEL.get(case) == "cell":
        gallery_dock(viewer)
    if project_folder is not None:
        predict_dock.set_project_folder(project_folder)  # and so every dock's
    if reviewer:
        review_dock.reviewer_edit.setText(reviewer)
    viewer.reset_view()
    return image_layer, predict_dock, review_dock, train_dock


def gallery_dock(viewer):
    """The cell gallery dock of ``viewer``, added (tabified with the others) on first use."""
    widget = viewer.window.add_plugin_dock_widget("cytoreview", GALLERY_DOCK, tabify=True)[1]
    widget.setMinimumWidth(GALLERY_WIDTH_PX)
    return widget


def _raise_dock(widget) -> None:
    """Bring the tab of a tabified dock to the front."""
    parent = widget.parent()
    while parent is not None and not hasattr(parent, "raise_"):
        parent = parent.parent()
    dock = widget
    while dock is not None and type(dock).__name__ not in ("QtViewerDockWidget",):
        dock = dock.parent()
    if dock is not None:
        dock.show()
        dock.raise_()


def prepare_case(case: str, out=None) -> None:
    """Render a sample that is made on first use (the lymph-node slide, about 20 s) before the viewer opens,
    saying so on the terminal; the field-set samples are committed and need nothing."""
    import sys

    if case != "lymph-node":
        return
    from cytoreview.samples import lymph_node_slide

    print("cytoreview demo: preparing the lymph-node sample slide (rendered on first use only: about 20 s)...",
          file=out or sys.stderr, flush=True)
    lymph_node_slide()


def run_demo(case: str = "warthin", screenshot: str | None = None) -> None:
    """Open the demo and start the case's pack; with ``screenshot``, wait for the predictions, save the window there
    and close instead of running the event loop."""
    import napari
    from qtpy.QtWidgets import QApplication

    from cytoreview._paths import cache_dir

    prepare_case(case)  # before any window: no black window while a sample is rendered
    viewer = napari.Viewer(title=f"cytoreview demo: {case}")
    viewer.window._qt_window.resize(1600, 1000)
    # the demo's project lives in the user cache, never inside the (possibly read-only) bundled sample data
    _, predict_dock, review_dock, _ = open_demo(viewer, case, project_folder=cache_dir() / "demo-projects" / case)
    _raise_dock(review_dock)
    if not review_dock.reviewer_edit.text().strip():
        review_dock.reviewer_edit.setText("demo")
    if LEVEL.get(case) == "cell":  # the cells come up in the gallery, in front, once they are predicted
        from cytoreview._napari.hub import hub

        gallery = gallery_dock(viewer)
        gallery.reviewer_edit.setText(review_dock.reviewer_edit.text())
        hub().predictions_ready.connect(lambda *_: _raise_dock(gallery))
    worker = predict_dock.run()
    if not screenshot:
        napari.run()
        return
    import time

    deadline = time.monotonic() + 600
    while (worker is not None and predict_dock.running) and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.05)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    _close_notices(viewer)
    viewer.screenshot(screenshot, canvas_only=False)
    viewer.close()


def _close_notices(viewer) -> None:
    """Close napari's notification pop-ups (the PyQt5 deprecation notice) before a screenshot."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from qtpy.QtWidgets import QApplication

    for notice in viewer.window._qt_window.findChildren(NapariQtNotification):
        notice.close()
    QApplication.processEvents()
