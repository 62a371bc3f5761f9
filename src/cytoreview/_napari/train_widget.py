"""The "cytoreview: export and retrain" dock widget.

Export: the project's labels in the chosen formats (:func:`cytoreview.export.export_project`) with the usual filters,
splits, balancing and crop size. Retrain: refit a base pack's head from the project's corrections
(:func:`cytoreview.train.refit`) into ``<project>/packs/<name>-<version>``; then "Run new pack" runs
:func:`cytoreview.workflows.compare_image` (the new pack, and the base pack when its store is missing), lists the
tiles whose class changed in a table, and a click on a row centres the view on that tile. Every long step runs off the GUI thread with progress and
a Cancel button.
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
from pathlib import Path

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cytoreview._napari.hub import hub
from cytoreview._napari.layer_meta import LayerMeta
from cytoreview._napari.layers import refill_combo, show_scale_bar
from cytoreview._napari.overlays import is_image_layer
from cytoreview.errors import CytoreviewError
from cytoreview.workflows import ImageComparison, compare_image, next_pack_folder, project_folder_for

#: Export formats offered, in display order.
EXPORT_FORMATS = ("csv", "parquet", "imagefolder", "coco", "geojson", "mask")
#: Item selections offered: (label, export ``select`` value).
SELECTIONS = (
    ("only reviewed (accepted or corrected)", "reviewed"),
    ("only corrections", "corrected"),
    ("corrections + confident accepted", "trusted"),
    ("every labelled item (model calls too)", "all"),
)
#: Columns of the flips table: (header, DataFrame column).
FLIP_TABLE_COLUMNS = (("field", "field"), ("row", "row"), ("col", "col"), ("old", "old"), ("new", "new"),
                      ("p(new)", "new_prob"))  # fmt: skip


# ------------------------------------------------------------------------------------------------ plain functions
def _project_pack_refs(project_folder) -> list[str]:
    """``pack@version`` of the prediction stores imported into a project, oldest first ([] when there is none)."""
    if project_folder is None or not (Path(project_folder) / "project.sqlite").is_file():
        return []
    from cytoreview.review import Project

    try:
        project = Project.open(project_folder)
    except CytoreviewError:
        return []
    try:
        return [f"{s.pack}@{s.pack_version}" for s in project.prediction_stores()]
    finally:
        project.close()


class _Relay(QObject):
    """Carries progress reports from a worker thread to the GUI thread (queued signal)."""

    progressed = Signal(str, int, int)


# ------------------------------------------------------------------------------------------------ the widget
class TrainWidget(QWidget):
    """Dock widget: export the project's labels, refit a pack from them, run the new pack and list the flips.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    pack_dirs : iterable of path, optional
        Extra folders searched for base packs (besides ``plugins/``, ``$CYTOREVIEW_MODEL_PATH`` and
        ``<project>/packs``).

    Attributes
    ----------
    exported : Signal(str)
        Emitted with the export folder after an export finished.
    retrained : Signal(str)
        Emitted with the new pack folder after a refit finished.
    flips_ready : Signal(int)
        Emitted with the number of flipped tiles after "Run new pack".
    """

    exported = Signal(str)
    retrained = Signal(str)
    flips_ready = Signal(int)

    def __init__(self, napari_viewer, pack_dirs=(), parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        show_scale_bar(napari_viewer)  # µm scale bar whenever a case is open in this viewer
        self._pack_dirs = [Path(p) for p in pack_dirs]
        self._packs: list = []
        self._worker = None
        self._cancel: threading.Event | None = None
        self._relay = _Relay()
        self._relay.progressed.connect(self._on_progress)
        self.new_pack = None
        self.base_pack_used = None
        self.last_result = None
        self.flips = None
        self._flip_image_layer = None
        self._flip_tile_px = None

        # ---- image and project
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("cytoreview image layers (slides and field sets opened with cytoreview)")
        self.project_edit = QLineEdit()
        self.project_edit.setToolTip("review project folder (holds project.sqlite)")
        self.project_button = QPushButton("…")
        top = QFormLayout()
        top.addRow("image", self.image_combo)
        row = QHBoxLayout()
        row.addWidget(self.project_edit, 1)
        row.addWidget(self.project_button)
        top.addRow("project", row)

        # ---- export
        export_box = QGroupBox("Export labels")
        self.format_checks = {f: QCheckBox(f) for f in EXPORT_FORMATS}
        self.format_checks["csv"].setChecked(True)
        self.format_checks["imagefolder"].setChecked(True)
        grid = QGridLayout()
        for i, f in enumerate(EXPORT_FORMATS):
            grid.addWidget(self.format_checks[f], i // 2, i % 2)
        self.select_combo = QComboBox()
        for label, value in SELECTIONS:
            self.select_combo.addItem(label, value)
        self.exclude_unsure_check = QCheckBox("exclude unsure")
        self.exclude_unsure_check.setChecked(True)
        self.confidence_spin = QDoubleSpinBox()
        self.confidence_spin.setRange(0.0, 1.0)
        self.confidence_spin.setSingleStep(0.05)
        self.confidence_spin.setValue(0.9)
        self.confidence_spin.setButtonSymbols(QDoubleSpinBox.NoButtons)
        self.confidence_spin.setMaximumWidth(56)
        self.confidence_spin.setToolTip("least model confidence of an accepted item (for 'confident accepted')")
        self.split_check = QCheckBox("by case")
        self.split_check.setToolTip("train / validation / test fractions; no case is in two splits")
        self.split_check.setChecked(True)
        self.split_spins = []
        split_row = QHBoxLayout()
        split_row.addWidget(self.split_check)
        for value, tip in ((0.7, "train"), (0.15, "validation"), (0.15, "test")):
            spin = QDoubleSpinBox()
            spin.setRange(0.0, 1.0)
            spin.setSingleStep(0.05)
            spin.setValue(value)
            spin.setToolTip(f"{tip} fraction")
            spin.setButtonSymbols(QDoubleSpinBox.NoButtons)
            spin.setMaximumWidth(56)
            self.split_spins.append(spin)
            split_row.addWidget(spin)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.balance_combo = QComboBox()
        self.balance_combo.addItems(["none", "oversample", "undersample"])
        self.crop_spin = QDoubleSpinBox()
        self.crop_spin.setRange(1.0, 1000.0)
        self.crop_spin.setValue(32.0)
        self.crop_spin.setSuffix(" µm")
        self.crop_spin.setToolTip("side of cell crops (tiles and fields are cropped to their own box)")
        self.export_edit = QLineEdit()
        self.export_edit.setToolTip("export folder (default <project>/exports/<date-time>)")
        self.export_button = QPushButton("Export")
        form = QFormLayout()
        form.addRow("formats", grid)
        form.addRow("items", self.select_combo)
        form.addRow("", self.exclude_unsure_check)
        form.addRow("confidence ≥", self.confidence_spin)
        form.addRow("split", split_row)
        form.addRow("seed", self.seed_spin)
        form.addRow("balance", self.balance_combo)
        form.addRow("crop size", self.crop_spin)
        form.addRow("output", self.export_edit)
        form.addRow("", self.export_button)
        export_box.setLayout(form)

        # ---- retrain
        train_box = QGroupBox("Retrain")
        self.base_combo = QComboBox()
        self.base_combo.setToolTip("tile-classification packs with an embedding output")
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("same as the base pack")
        self.pack_out_edit = QLineEdit()
        self.pack_out_edit.setToolTip("new pack folder (default <project>/packs/<name>-<version>)")
        self.confident_check = QCheckBox("+ model's confident calls")
        self.confident_check.setToolTip(
            "also learn from unreviewed tiles whose model confidence reaches the 'confidence ≥' threshold above, with "
            "the model's label: helps with "
            "few corrections, but also re-learns confident mistakes nobody corrected"
        )
        # On by default: measured in benchmarks/bench_refit.py, 50 uncertainty-queue corrections alone refit to 0.832
        # accuracy (base 0.928) because the most uncertain tiles are an unbalanced sample; with the confident calls
        # added, 0.948.
        self.confident_check.setChecked(True)
        self.retrain_button = QPushButton("Retrain")
        self.run_new_button = QPushButton("Run new pack")
        self.run_new_button.setEnabled(False)
        self.run_new_button.setToolTip("predict the image with the new pack and list the tiles whose class changed")
        tform = QFormLayout()
        tform.addRow("base pack", self.base_combo)
        tform.addRow("new name", self.name_edit)
        tform.addRow("output", self.pack_out_edit)
        tform.addRow("", self.confident_check)
        buttons = QHBoxLayout()
        buttons.addWidget(self.retrain_button)
        buttons.addWidget(self.run_new_button)
        tform.addRow("", buttons)
        train_box.setLayout(tform)

        # ---- progress, status, flips
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        # long paths must not widen the dock: the label takes the width it is given and wraps (also after "/")
        self.status_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.flips_label = QLabel("flips (tiles whose class changed)")
        self.flips_table = QTableWidget(0, len(FLIP_TABLE_COLUMNS))
        self.flips_table.setHorizontalHeaderLabels([h for h, _ in FLIP_TABLE_COLUMNS])
        self.flips_table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.flips_table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.flips_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.flips_table.verticalHeader().setVisible(False)
        self.flips_table.horizontalHeader().setStretchLastSection(True)
        self.flips_table.setMinimumHeight(180)

        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addLayout(top)
        layout.addWidget(export_box)
        layout.addWidget(train_box)
        prow = QHBoxLayout()
        prow.addWidget(self.progress_bar, 1)
        prow.addWidget(self.cancel_button)
        layout.addLayout(prow)
        layout.addWidget(self.status_label)
        layout.addWidget(self.flips_label)
        layout.addWidget(self.flips_table, 1)
        scroll = QScrollArea()  # never squash the controls: scroll when the dock is short
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setWidget(content)
        for combo in (self.image_combo, self.select_combo, self.base_combo, self.balance_combo):
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)  # long entries may shrink
            combo.setMinimumContentsLength(8)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self._content = content
        self._scroll = scroll

        self.project_button.clicked.connect(self._browse_project)
        self.project_edit.editingFinished.connect(self._on_project_changed)
        self.project_edit.editingFinished.connect(self._announce_project)
        hub().project_chosen.connect(self._on_project_chosen)
        hub().predictions_ready.connect(self._on_predictions_ready)
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.base_combo.currentIndexChanged.connect(self._update_pack_out)
        self.name_edit.editingFinished.connect(self._update_pack_out)
        self.export_button.clicked.connect(self.export)
        self.retrain_button.clicked.connect(self.retrain)
        self.run_new_button.clicked.connect(self.run_new_pack)
        self.cancel_button.clicked.connect(self.cancel)
        self.flips_table.cellClicked.connect(self._on_flip_clicked)
        self.viewer.layers.events.inserted.connect(self.refresh_images)
        self.viewer.layers.events.removed.connect(self.refresh_images)
        self.refresh_images()

    def showEvent(self, event):  # Qt override
        """Once styled, ask for the width the controls need, so that the dock never clips them."""
        super().showEvent(event)
        need = self._content.minimumSizeHint().width() + self._scroll.verticalScrollBar().sizeHint().width() + 2
        if self.minimumWidth() < need:
            self.setMinimumWidth(need)

    # ------------------------------------------------------------------------------------------------ choices
    def refresh_images(self, *_) -> None:
        """List the cytoreview image layers (keeping the current choice)."""
        if refill_combo(self.image_combo, [layer.name for layer in self.viewer.layers if is_image_layer(layer)]):
            self._on_image_changed()

    def image_layer(self):
        """The chosen image layer, or None."""
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def project_folder(self) -> Path | None:
        text = self.project_edit.text().strip()
        return Path(text).expanduser() if text else None

    def _on_image_changed(self, *_) -> None:
        layer = self.image_layer()
        if layer is not None and not self.project_edit.text().strip():
            self.project_edit.setText(str(project_folder_for(LayerMeta.of(layer).image_path)))
        self._on_project_changed()

    def _on_project_changed(self) -> None:
        self.refresh_packs()

    def _announce_project(self) -> None:
        text = self.project_edit.text().strip()
        if text:
            hub().project_chosen.emit(text)

    def _on_project_chosen(self, folder: str) -> None:
        """Another dock chose the project: work on it here too."""
        if self.project_edit.text().strip() != folder:
            self.project_edit.setText(folder)
            self._on_project_changed()

    def _on_predictions_ready(self, store_path: str, project_folder: str) -> None:
        """Point at the project a prediction run just filled, with the pack that made it as the base to refit."""
        from cytoreview.inference import PredictionStore

        self.project_edit.setText(project_folder)
        self._on_project_changed()
        index = self.base_combo.findText(PredictionStore(store_path).pack_ref)
        if index >= 0:
            self.base_combo.setCurrentIndex(index)
            self._update_pack_out()

    def _browse_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Review project folder", self.project_edit.text())
        if folder:
            self.project_edit.setText(folder)
            self._on_project_changed()
            self._announce_project()

    def refresh_packs(self, select=None) -> None:
        """Find the packs that can be refit: tile classifiers with an embedding output."""
        from cytoreview.models import find_packs

        current = select or self.base_combo.currentData()
        dirs = list(self._pack_dirs)
        project = self.project_folder()
        if project is not None and (project / "packs").is_dir():
            dirs.append(project / "packs")
        self._packs = [p for p in find_packs(dirs, errors=[])
                       if p.task == "tile-classification" and p.card["outputs"].get("embedding")]  # fmt: skip
        self.base_combo.blockSignals(True)
        self.base_combo.clear()
        for p in self._packs:
            self.base_combo.addItem(p.ref, str(p.path))
        i = self.base_combo.findData(str(current)) if current is not None else -1
        if i < 0:  # default: the pack whose predictions the project holds (the newest import)
            used = _project_pack_refs(project)
            i = next((self.base_combo.findText(ref) for ref in reversed(used) if self.base_combo.findText(ref) >= 0),
                     -1)  # fmt: skip
        if i >= 0:
            self.base_combo.setCurrentIndex(i)
        self.base_combo.blockSignals(False)
        self._update_pack_out()

    def base_pack(self):
        path = self.base_combo.currentData()
        return next((p for p in self._packs if str(p.path) == path), None)

    def _update_pack_out(self, *_) -> None:
        base, project = self.base_pack(), self.project_folder()
        if base is None or project is None:
            return
        name = self.name_edit.text().strip() or None
        try:
            self.pack_out_edit.setText(str(next_pack_folder(project, base, name)))
        except CytoreviewError:
            pass

    # ------------------------------------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        return self._worker is not None

    def _start(self, fn, on_done, *args, **kwargs):
        from napari.qt.threading import create_worker

        if self.running:
            self._set_status("busy: wait for the current step or cancel it")
            return None
        self._cancel = threading.Event()
        relay = self._relay

        def progress(stage, done, total):
            relay.progressed.emit(str(stage), int(done), int(total))

        worker = create_worker(fn, *args, progress=progress, cancel=self._cancel, _start_thread=False,
                               _ignore_errors=True, **kwargs)  # fmt: skip
        worker.returned.connect(on_done)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        for b in (self.export_button, self.retrain_button, self.run_new_button):
            b.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setRange(0, 0)
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running step to stop."""
        if self._cancel is not None:
            self._cancel.set()
            self._set_status("cancelling…")

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        self.progress_bar.setRange(0, max(1, total))
        self.progress_bar.setValue(min(done, max(1, total)))
        self.progress_bar.setFormat(f"{stage}: %v / %m")

    def _on_error(self, exc) -> None:
        text = str(exc) if isinstance(exc, CytoreviewError) else f"{type(exc).__name__}: {exc}"
        self._set_status(f"error: {text}")
        try:
            from napari.utils.notifications import show_error

            show_error(f"cytoreview: {text}")
        except Exception as note_exc:  # noqa: BLE001 - a notification failing must not hide the status line
            self._set_status(f"error: {text} (notification failed: {note_exc})")

    def _on_finished(self) -> None:
        self._worker = None
        self._cancel = None
        self.cancel_button.setEnabled(False)
        self.export_button.setEnabled(True)
        self.retrain_button.setEnabled(True)
        self.run_new_button.setEnabled(self.new_pack is not None)
        if self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, 1)

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text.replace("/", "/\u200b"))  # a zero-width space lets paths wrap

    def status_text(self) -> str:
        """The status line as plain text."""
        return self.status_label.text().replace("\u200b", "")

    def _need_project(self) -> Path | None:
        project = self.project_folder()
        if project is None or not (project / "project.sqlite").is_file():
            self._on_error(CytoreviewError(f"no review project at {project} (run a pack and review first)"))
            return None
        return project

    # ---- export
    def export_options(self) -> dict:
        """The export keyword arguments the widget's controls describe."""
        split = None
        if self.split_check.isChecked():
            split = [s.value() for s in self.split_spins]
        balance = self.balance_combo.currentText()
        return {
            "select": self.select_combo.currentData(),
            "min_confidence": float(self.confidence_spin.value()),
            "include_unsure": not self.exclude_unsure_check.isChecked(),
            "split": split,
            "balance": None if balance == "none" else balance,
            "seed": int(self.seed_spin.value()),
            "crop_um": float(self.crop_spin.value()),
        }

    def export(self):
        """Export the project's labels off the GUI thread; returns the worker (None if it did not start)."""
        from cytoreview.export import export_project

        project = self._need_project()
        if project is None:
            return None
        formats = [f for f, c in self.format_checks.items() if c.isChecked()]
        if not formats:
            self._on_error(CytoreviewError("choose at least one export format"))
            return None
        out = self.export_edit.text().strip()
        if not out:
            out = str(project / "exports" / _dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
            self.export_edit.setText(out)
        options = self.export_options()

        def job(progress, cancel):
            return export_project(project, out, formats, progress=progress, **options)

        self._set_status(f"exporting {', '.join(formats)} to {out}…")
        return self._start(job, self._on_exported)

    def _on_exported(self, result) -> None:
        out = Path(result["summary"]).parent
        self.last_result = result
        self._set_status(f"exported {', '.join(k for k in result if k != 'summary')} to {out}")
        self.export_edit.clear()  # the next export gets a fresh folder
        self.exported.emit(str(out))

    # ---- retrain
    def retrain(self):
        """Refit the chosen base pack from the project's reviewed items off the GUI thread."""
        from cytoreview.train import refit_detailed

        project = self._need_project()
        base = self.base_pack()
        if project is None:
            return None
        if base is None:
            self._on_error(CytoreviewError("no base pack: a tile-classification pack with an embedding output"))
            return None
        out = Path(self.pack_out_edit.text().strip() or next_pack_folder(project, base))
        name = self.name_edit.text().strip() or None
        seed = int(self.seed_spin.value())
        select = "reviewed+confident" if self.confident_check.isChecked() else "reviewed"
        min_confidence = float(self.confidence_spin.value())
        self.base_pack_used = base

        def job(progress, cancel):
            return refit_detailed(project, base, out, name=name, seed=seed, select=select,
                                  min_confidence=min_confidence, progress=progress, cancel=cancel)  # fmt: skip

        self._set_status(f"refitting {base.ref} from {project}…")
        return self._start(job, self._on_retrained)

    def _on_retrained(self, result) -> None:
        self.new_pack = result.pack
        self.last_result = result
        m = result.metrics

        def f(v):
            return "n/a" if v is None else f"{v:.3f}"

        text = f"wrote {result.pack.ref} to {result.pack.path} ({result.training.n_items} items)."
        if m.get("n"):
            text += (f" Held-out ({m['holdout']}, {m['n']} items): accuracy {f(m['accuracy'])} "
                     f"(base {f(m.get('base_accuracy'))}), kappa {f(m['kappa'])}.")  # fmt: skip
        if m.get("warning"):
            text += f" WARNING: {m['warning']}."
        self._set_status(text)
        self.refresh_packs()
        self._update_pack_out()
        self.run_new_button.setEnabled(True)
        self.retrained.emit(str(result.pack.path))

    # ---- run the new pack
    def run_new_pack(self):
        """Predict the image with the new pack off the GUI thread, then show the flips."""
        layer = self.image_layer()
        project = self._need_project()
        if project is None:
            return None
        if layer is None:
            self._on_error(CytoreviewError("open the image with cytoreview first (no cytoreview image layer)"))
            return None
        if self.new_pack is None:
            self._on_error(CytoreviewError("retrain first: there is no new pack yet"))
            return None
        image_path = LayerMeta.of(layer).image_path
        new, base = self.new_pack, self.base_pack_used or self.base_pack()
        self._flip_image_layer = layer

        def job(progress, cancel):
            return compare_image(image_path, base, new, project, import_new=True, progress=progress, cancel=cancel,
                                 threads=max(1, min(2, os.cpu_count() or 1)))  # fmt: skip

        self._set_status(f"running {new.ref} on {Path(image_path).name}…")
        return self._start(job, self._on_new_pack_ran)

    def _on_new_pack_ran(self, result: ImageComparison) -> None:
        from cytoreview.inference import PredictionStore

        self.last_result = result
        store = PredictionStore(result.new_store)
        self._flip_tile_px = store.tile_px_level0
        try:  # the overlays of the new pack, when the predict dock's module is installed
            from cytoreview._napari.overlays import add_prediction_layers

            if self._flip_image_layer is not None:
                add_prediction_layers(self.viewer, store, self._flip_image_layer)
        except ImportError:
            pass
        except Exception as exc:  # noqa: BLE001 - overlays are a convenience; the flips table still shows
            result.notes.append(f"overlays not shown: {exc}")
        self.show_flips(result.flips)
        self._set_status(f"{len(result.flips)} tile(s) changed class between {PredictionStore(result.base_store).pack_ref}"
                         f" and {store.pack_ref}. " + " ".join(result.notes))  # fmt: skip
        self.flips_ready.emit(len(result.flips))

    def show_flips(self, df) -> None:
        """Fill the flips table from a :func:`cytoreview.train.flips` DataFrame."""
        self.flips = df.reset_index(drop=True)
        table = self.flips_table
        table.setRowCount(len(self.flips))
        for i, rec in enumerate(self.flips.itertuples(index=False)):
            values = rec._asdict()
            for j, (_, col) in enumerate(FLIP_TABLE_COLUMNS):
                v = values[col]
                item = QTableWidgetItem(f"{v:.2f}" if isinstance(v, float) else str(v))
                table.setItem(i, j, item)
        table.resizeColumnsToContents()
        self.flips_label.setText(f"flips: {len(self.flips)} tile(s) whose class changed (click to centre)")

    def _on_flip_clicked(self, row: int, _col: int = 0) -> None:
        self.centre_on_flip(row)

    def centre_on_flip(self, row: int) -> None:
        """Centre the view on flipped tile ``row`` of the table (and go to its field)."""
        if self.flips is None or not 0 <= row < len(self.flips):
            return
        layer = self._flip_image_layer or self.image_layer()
        if layer is None:
            return
        rec = self.flips.iloc[row]
        cy = (float(rec["y0"]) + float(rec["y1"])) / 2 - 0.5  # level-0 pixel index of the tile centre
        cx = (float(rec["x0"]) + float(rec["x1"])) / 2 - 0.5
        sy, sx = (float(v) for v in layer.scale[-2:])
        ty, tx = (float(v) for v in layer.translate[-2:])
        world_y, world_x = ty + cy * sy, tx + cx * sx
        ndim = self.viewer.dims.ndim
        if LayerMeta.of(layer).kind == "fields" and ndim >= 3:
            lead = len(layer.scale) - 2
            axis = ndim - 2 - lead  # the layer's field axis in world coordinates
            self.viewer.dims.set_point(axis, float(layer.translate[0]) + int(rec["field"]) * float(layer.scale[0]))
        camera = _camera(self.viewer)
        camera.center = (world_y, world_x)
        tile_um = float(rec["y1"] - rec["y0"]) * sy
        camera.zoom = max(camera.zoom, 48.0 / max(tile_um, 1e-6))  # the tile at least 48 screen pixels wide


def _camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera
