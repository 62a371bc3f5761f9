"""The "cytoreview: predict" dock widget: run a model pack over an open image, show the overlays, fill the project.

The run is :func:`cytoreview.workflows.predict_into_project` -- the function ``cytoreview predict --project`` calls
-- executed in a napari worker thread (:func:`run_prediction`); progress arrives as yielded ``(done, total)`` values, Cancel sets a
``threading.Event`` that ``predict`` checks before every batch (finished rows are kept; Run resumes). When the store
is complete, the image is registered in the review project and the predictions imported, and
:attr:`PredictWidget.predictions_ready` is emitted with ``(store path, project folder)``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from cytoreview._napari.hub import hub
from cytoreview._napari.layer_meta import LayerMeta
from cytoreview._napari.layers import refill_combo, show_scale_bar
from cytoreview._napari.overlays import (
    add_prediction_layers,
    image_info,
    is_image_layer,
    load_existing_predictions,
)
from cytoreview._napari.workers import progress_generator
from cytoreview.errors import CytoreviewError
from cytoreview.workflows import project_folder_for

log = logging.getLogger(__name__)

#: Seconds between overlay refreshes while a run is going.
PROGRESSIVE_REFRESH_S = 2.0
#: Grids larger than this (tiles) are not redrawn during the run, only at the end.
PROGRESSIVE_MAX_TILES = 250_000


@dataclass
class RunResult:
    """What a prediction run produced (sent from the worker thread to the GUI)."""

    store_path: str | None = None
    project_folder: str | None = None
    complete: bool = False
    n_items: int = 0
    done_tiles: int = 0
    total_tiles: int = 0
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    ood_warning: str | None = None
    cell_store_path: str | None = None


def run_prediction(
    image_path: str,
    pack,
    project_folder: str | Path,
    *,
    mpp: float | None = None,
    case_id: str | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    providers=None,
    progress=None,
    cancel=None,
    focus=None,
    then=None,
) -> RunResult:
    """:func:`cytoreview.workflows.predict_into_project` (creating the project), errors as ``RunResult.error`` text.

    This is what the widget runs in its worker thread; it touches no GUI object. ``focus`` is the layer's focus
    choice (see :mod:`cytoreview.io.focus`). ``then`` is a cell-classification pack chained after a detector.
    """
    from cytoreview.workflows import predict_into_project

    result = RunResult(project_folder=str(project_folder))
    counts = [0, 0]

    def report(done: int, total: int) -> None:
        counts[:] = [done, total]
        if progress is not None:
            progress(done, total)

    try:
        run = predict_into_project(image_path, pack, project_folder, create=True, mpp=mpp, case_id=case_id,
                                   batch_size=batch_size, threads=threads, providers=providers, progress=report,
                                   cancel=cancel, focus=focus, then=then)  # fmt: skip
        result.store_path, result.complete, result.n_items = str(run.store_path), run.complete, run.n_items
        result.cell_store_path = str(run.cell_store_path) if run.cell_store_path else None
        result.notes = list(run.notes)
        result.ood_warning = run.ood_warning
    except CytoreviewError as exc:
        result.error = str(exc)
    except (OSError, ValueError) as exc:  # a folder that cannot be written, an unreadable file
        result.error = f"{type(exc).__name__}: {exc}"
    result.done_tiles, result.total_tiles = counts
    return result


def available_devices() -> list[str]:
    """``["cpu"]``, plus ``"cuda"`` when onnxruntime offers the CUDA provider."""
    import onnxruntime as ort

    devices = ["cpu"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        devices.append("cuda")
    return devices


class PredictWidget(QWidget):
    """Dock widget: image, model pack, device, batch size, threads, project folder; Run / Cancel; progress.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    pack_dirs : iterable of path, optional
        Extra folders searched for model packs (besides ``plugins/`` and ``$CYTOREVIEW_MODEL_PATH``).

    Attributes
    ----------
    predictions_ready : Signal(str, str)
        Emitted with ``(store path, project folder)`` after a complete run was imported into the project.
    """

    predictions_ready = Signal(str, str)

    def __init__(self, napari_viewer, pack_dirs=(), parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        show_scale_bar(napari_viewer)  # µm scale bar whenever a case is open in this viewer
        self._pack_dirs: list[Path] = [Path(p) for p in pack_dirs]
        self._packs: list = []
        self._worker = None
        self._cancel: threading.Event | None = None
        self._run_layer = None
        self._store_path: Path | None = None
        self._last_refresh = 0.0
        self._output_edited = False
        self.last_result: RunResult | None = None

        self.image_combo = QComboBox()
        self.image_combo.setToolTip("cytoreview image layers (slides and field sets opened with cytoreview)")
        self.pack_combo = QComboBox()
        self.pack_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.pack_combo.setMinimumContentsLength(18)
        self.image_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.image_combo.setMinimumContentsLength(18)
        self.pack_combo.setToolTip("model packs: bundled plugins/, $CYTOREVIEW_MODEL_PATH and folders you added")
        self.then_combo = QComboBox()
        self.then_combo.setToolTip("a cell-classification pack run on every cell the chosen detector finds")
        self.browse_pack_button = QPushButton("Browse…")
        self.browse_pack_button.setToolTip("add a model pack folder (one with cytoreview.yaml and model.onnx)")
        self.device_combo = QComboBox()
        self.device_combo.addItems(available_devices())
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(0, 1024)
        self.batch_spin.setSpecialValueText("auto")
        self.batch_spin.setToolTip("patches per onnxruntime call (auto: about 1 Mpixel of model input)")
        self.threads_spin = QSpinBox()
        self.threads_spin.setRange(1, max(1, os.cpu_count() or 1))
        self.threads_spin.setValue(min(2, self.threads_spin.maximum()))
        self.threads_spin.setToolTip("onnxruntime intra-op threads")
        self.output_edit = QLineEdit()
        self.output_edit.setToolTip("review project folder; prediction stores go to its predictions/ folder")
        self.browse_output_button = QPushButton("…")
        self.load_stored_check = QCheckBox("show stored predictions of opened images")
        self.load_stored_check.setChecked(True)
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("%v / %m tiles")
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        pack_row = QHBoxLayout()
        pack_row.addWidget(self.pack_combo, 1)
        pack_row.addWidget(self.browse_pack_button)
        form.addRow("model pack", pack_row)
        form.addRow("then classify cells", self.then_combo)
        form.addRow("device", self.device_combo)
        form.addRow("batch size", self.batch_spin)
        form.addRow("threads", self.threads_spin)
        out_row = QHBoxLayout()
        out_row.addWidget(self.output_edit, 1)
        out_row.addWidget(self.browse_output_button)
        form.addRow("project", out_row)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.load_stored_check)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        self.ood_label = QLabel("")  # the out-of-distribution warning of the last run, until the next one
        self.ood_label.setWordWrap(True)
        self.ood_label.setStyleSheet("color: #ffb000; font-weight: bold")
        self.ood_label.hide()
        layout.addWidget(self.ood_label)
        layout.addStretch(1)
        self.setMaximumWidth(460)

        self.browse_pack_button.clicked.connect(self._browse_pack)
        self.browse_output_button.clicked.connect(self._browse_output)
        self.output_edit.textEdited.connect(self._on_output_edited)
        self.output_edit.editingFinished.connect(lambda: self._announce_project(self.output_edit.text()))
        hub().project_chosen.connect(self._on_project_chosen)
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.pack_combo.currentIndexChanged.connect(self._refresh_then)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._on_layers_changed)

        self.refresh_packs()
        self.refresh_images()

    # ------------------------------------------------------------------------------------------------ choices
    def refresh_images(self) -> None:
        """List the cytoreview image layers (keeping the current choice when it is still there)."""
        refill_combo(self.image_combo, [layer.name for layer in self.viewer.layers if is_image_layer(layer)])
        self._on_image_changed()

    def refresh_packs(self, select=None) -> None:
        """Find the model packs again; invalid ones are skipped with a warning naming them."""
        from cytoreview.models import find_packs

        current = select or self.pack_combo.currentData()
        errors: list[str] = []
        self._packs = find_packs(self._pack_dirs, errors=errors)
        self.pack_combo.clear()
        for pack in self._packs:
            self.pack_combo.addItem(f"{pack.ref} · {pack.task} · {pack.mpp:g} µm/px", str(pack.path))
            index = self.pack_combo.count() - 1
            self.pack_combo.setItemData(index, f"{pack.card.get('description', '')}\n{pack.path}", Qt.ToolTipRole)
        if current is not None:
            index = self.pack_combo.findData(str(current))
            if index >= 0:
                self.pack_combo.setCurrentIndex(index)
        self._refresh_then()
        if errors:
            self._warn("skipped invalid model pack(s): " + "; ".join(errors))
        elif not self._packs:
            self._set_status("no model packs found: add a pack folder with Browse…")

    def add_pack_folder(self, folder: str | Path):
        """Add a pack folder (or a folder of packs) to the search and select it.

        Returns the pack added (the first one of a folder of packs), or None after showing why the folder holds no
        valid pack.
        """
        from cytoreview.models import find_packs, load_pack

        folder = Path(folder)
        try:
            found = [load_pack(folder)]
        except CytoreviewError as exc:
            errors: list[str] = []
            found = find_packs([folder], errors=errors) if folder.is_dir() else []
            found = [p for p in found if Path(p.path).parent == folder.resolve()]
            if not found:
                self._error("; ".join(errors) or str(exc))
                return None
        if folder not in self._pack_dirs:
            self._pack_dirs.append(folder)
        self.refresh_packs(select=found[0].path)
        self._set_status(f"added model pack {', '.join(p.ref for p in found)} from {folder}")
        return found[0]

    def image_layer(self):
        """The chosen image layer, or None."""
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _refresh_then(self, *args) -> None:
        """Offer the cell classifiers when the chosen pack is a detector (segmentation); else only "none"."""
        current = self.then_combo.currentData()
        self.then_combo.clear()
        self.then_combo.addItem("none", None)
        pack = self.pack()
        if pack is not None and pack.task == "segmentation":
            for p in self._packs:
                if p.task == "cell-classification":
                    self.then_combo.addItem(p.ref, str(p.path))
        index = self.then_combo.findData(current) if current is not None else -1
        self.then_combo.setCurrentIndex(max(0, index))
        self.then_combo.setEnabled(self.then_combo.count() > 1)

    def then_pack(self):
        """The cell classifier chained after the detector, or None."""
        path = self.then_combo.currentData()
        return next((p for p in self._packs if str(p.path) == path), None) if path else None

    def select_then(self, name: str) -> bool:
        """Choose the chained cell classifier by pack name (``name`` or ``name@version``); False if not offered."""
        for i in range(self.then_combo.count()):
            text = self.then_combo.itemText(i)
            if text == name or text.startswith(f"{name}@"):
                self.then_combo.setCurrentIndex(i)
                return True
        return False

    def pack(self):
        """The chosen :class:`~cytoreview.models.ModelPack`, or None."""
        path = self.pack_combo.currentData()
        return next((p for p in self._packs if str(p.path) == path), None)

    def output_folder(self) -> Path | None:
        """The project folder the run writes to."""
        text = self.output_edit.text().strip()
        return Path(text).expanduser() if text else None

    @property
    def running(self) -> bool:
        """True while a run is going."""
        return self._worker is not None

    # ------------------------------------------------------------------------------------------------ run
    def run(self):
        """Start a run of the chosen pack on the chosen image; returns the napari worker (None if it did not start)."""
        from napari.qt.threading import create_worker

        if self.running:
            return None
        layer, pack, folder = self.image_layer(), self.pack(), self.output_folder()
        if layer is None:
            self._error("open a slide or field set with cytoreview first (no cytoreview image layer)")
            return None
        if pack is None:
            self._error("choose a model pack (none found: add one with Browse…)")
            return None
        if folder is None:
            self._error("choose a project folder for the predictions")
            return None
        info = image_info(layer)
        from cytoreview.inference import store_path_for

        self._run_layer = layer
        self._store_path = store_path_for(info["path"], pack.name, pack.version, folder / "predictions")
        self._cancel = threading.Event()
        self._last_refresh = time.monotonic()
        self._worker = create_worker(
            progress_generator, run_prediction, info["path"], pack, folder,
            mpp=float(info["mpp"]) if info.get("mpp_source") == "given" else None,  # else the file's, as the layer
            case_id=(info.get("metadata") or {}).get("case_id"),
            batch_size=self.batch_spin.value() or None, threads=self.threads_spin.value(),
            providers=self.device_combo.currentText(), cancel=self._cancel, focus=info.get("focus"),
            then=self.then_pack(), _start_thread=False, _connect={"errored": self._on_error},
        )  # fmt: skip
        self._worker.yielded.connect(self._on_progress)
        self._worker.returned.connect(self._on_returned)
        self._worker.finished.connect(self._on_finished)
        self._set_running(True)
        self._set_status(f"running {pack.ref} on {layer.name} …")
        self._worker.start()
        return self._worker

    def cancel(self) -> None:
        """Ask the run to stop after the current batch (finished rows are kept; Run resumes)."""
        if self._cancel is not None:
            self._cancel.set()
            self._set_status("cancelling after the current batch …")

    def _on_progress(self, value) -> None:
        done, total = value
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        now = time.monotonic()
        if now - self._last_refresh >= PROGRESSIVE_REFRESH_S and 0 < done < total:
            self._last_refresh = now
            self._show_partial()

    def _show_partial(self) -> None:
        """Redraw the overlays from the store being written (skipped for big grids or while rows are written)."""
        layer = self._run_layer
        if layer is None or layer not in self.viewer.layers or not (self._store_path / "zarr.json").is_file():
            return
        try:
            from cytoreview.inference import PredictionStore

            store = PredictionStore(self._store_path)
            n_tiles = 1
            for size in store.grid_shape:
                n_tiles *= size
            if n_tiles <= PROGRESSIVE_MAX_TILES:
                add_prediction_layers(self.viewer, store, layer)
        except Exception as exc:  # noqa: BLE001 - a store caught mid-write is simply shown at the next refresh
            log.debug("partial overlays of %s not shown yet: %s", self._store_path, exc)

    def _on_returned(self, result: RunResult) -> None:
        self.last_result = result
        if result.error:
            self._error(result.error)
            return
        self.progress_bar.setRange(0, max(result.total_tiles, 1))
        self.progress_bar.setValue(result.done_tiles)
        layer = self._run_layer
        if layer is not None and layer in self.viewer.layers and result.store_path:
            try:
                layers = add_prediction_layers(self.viewer, result.store_path, layer)
                if result.cell_store_path:
                    layers = add_prediction_layers(self.viewer, result.cell_store_path, layer)
                active = layers.get("tile_classes") or layers.get("cells")
                if active is not None:
                    self.viewer.layers.selection.active = active  # its controls: opacity, colours
            except Exception as exc:  # noqa: BLE001 - the run itself succeeded; say what failed to show
                self._error(f"predictions written to {result.store_path} but not shown: {exc}")
                return
        if not result.complete:
            self._set_status(f"cancelled at {result.done_tiles} / {result.total_tiles} tiles; finished rows are "
                             f"kept in {result.store_path} -- Run resumes")  # fmt: skip
            return
        self._set_status(f"done: {result.total_tiles} tiles predicted, {result.n_items} items in project "
                         f"{result.project_folder}" + "".join(f"; {note}" for note in result.notes))  # fmt: skip
        if result.ood_warning:
            self.ood_label.setText(f"⚠ {result.ood_warning}")
            self.ood_label.show()
            from napari.utils.notifications import show_warning

            show_warning(result.ood_warning)
        else:
            self.ood_label.hide()
        self.predictions_ready.emit(result.store_path, result.project_folder)
        hub().predictions_ready.emit(result.store_path, result.project_folder)

    def _on_error(self, exc) -> None:
        """An unexpected failure in the worker (a bug): say so without freezing the widget."""
        self.last_result = RunResult(error=f"{type(exc).__name__}: {exc}")
        self._error(f"prediction failed: {type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self._worker = None
        self._cancel = None
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        for widget in (self.image_combo, self.pack_combo, self.then_combo, self.browse_pack_button, self.device_combo,
                       self.batch_spin, self.threads_spin, self.output_edit, self.browse_output_button):  # fmt: skip
            widget.setEnabled(not running)

    # ------------------------------------------------------------------------------------------------ events
    def _on_layer_inserted(self, event) -> None:
        layer = event.value
        layer.events.name.connect(self._on_layers_changed)
        self.refresh_images()
        if self.load_stored_check.isChecked() and is_image_layer(layer):
            QTimer.singleShot(0, lambda: self._load_stored(layer))

    def _on_layers_changed(self, event=None) -> None:
        self.refresh_images()

    def _load_stored(self, layer) -> None:
        if layer not in self.viewer.layers:
            return
        try:
            loaded = load_existing_predictions(self.viewer, layer)
        except Exception as exc:  # noqa: BLE001 - a broken store must not stop the image from opening
            self._warn(f"stored predictions of {layer.name} not shown: {exc}")
            return
        if loaded:
            refs = ", ".join(sorted({LayerMeta.of(d["tile_classes"]).pack for d in loaded}))
            self._set_status(f"showing stored predictions of {layer.name}: {refs}")

    def _on_image_changed(self, *args) -> None:
        layer = self.image_layer()
        if layer is not None and not self._output_edited:
            self.output_edit.setText(str(project_folder_for(image_info(layer)["path"])))

    def _on_output_edited(self, text: str) -> None:
        self._output_edited = bool(text.strip())

    def _browse_pack(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model pack folder")
        if folder:
            self.add_pack_folder(folder)

    def _browse_output(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Project folder", self.output_edit.text())
        if folder:
            self.set_project_folder(folder)

    def set_project_folder(self, folder) -> None:
        """Use ``folder`` as the review project, here and in every other cytoreview dock."""
        self.output_edit.setText(str(folder))
        self._output_edited = True
        self._announce_project(str(folder))

    def _announce_project(self, text: str) -> None:
        if text.strip():
            hub().project_chosen.emit(text.strip())

    def _on_project_chosen(self, folder: str) -> None:
        if self.output_edit.text().strip() != folder:
            self.output_edit.setText(folder)
            self._output_edited = True

    # ------------------------------------------------------------------------------------------------ messages
    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _error(self, text: str) -> None:
        from napari.utils.notifications import show_error

        self._set_status(f"error: {text}")
        show_error(text)

    def _warn(self, text: str) -> None:
        from napari.utils.notifications import show_warning

        self._set_status(text)
        show_warning(text)

    def closeEvent(self, event) -> None:
        """Stop a running prediction when the widget goes away."""
        self.cancel()
        super().closeEvent(event)
