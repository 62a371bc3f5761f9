"""``cytoreview demo``: napari with the plugin on a sample case."""

from __future__ import annotations

#: Sample keys of the npe2 manifest, by the short names the CLI accepts.
CASES = {"warthin": "warthin_fna", "effusion": "serous_effusion", "lymph-node": "lymph_node"}


def run_demo(case: str = "warthin", screenshot: str | None = None) -> None:
    """Open ``case`` in a napari viewer; with ``screenshot``, save the window to that PNG and close instead of running.

    Parameters
    ----------
    case : {"warthin", "effusion", "lymph-node"}
        Which sample case to open.
    screenshot : str, optional
        Write a screenshot of the whole window there and return (used for the README and smoke tests).
    """
    import napari

    viewer = napari.Viewer(title=f"cytoreview demo: {case}")
    viewer.open_sample("cytoreview", CASES[case])
    viewer.reset_view()
    if screenshot:
        from qtpy.QtWidgets import QApplication

        for _ in range(5):
            QApplication.processEvents()
        viewer.screenshot(screenshot, canvas_only=False)
        viewer.close()
        return
    napari.run()
