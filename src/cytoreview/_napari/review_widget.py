"""The "cytoreview: review" dock: a cytologist's labelling session on the selected image layer.

Layout, top to bottom: image layer + project folder + reviewer, progress, queue strategy / level / blinded /
keys, the current item, the class palette (swatch, name, hotkey, count; click = set class), action buttons, and
tabs: live stats, field gallery, agreement.

Every change goes project first (committed), then the overlay layer, then the next queue item; see
:mod:`cytoreview._napari.review_session`. Keys are in :mod:`cytoreview._napari.review_keys`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from qtpy.QtCore import QSettings, Qt, QTimer
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from cytoreview._napari.hub import hub
from cytoreview._napari.layer_meta import LayerMeta
from cytoreview._napari.layers import show_scale_bar
from cytoreview._napari.overlays import is_image_layer
from cytoreview._napari.review_agreement import AgreementPanel
from cytoreview._napari.review_gallery import FieldGallery
from cytoreview._napari.review_keys import ReviewKeys, key_line, key_map
from cytoreview._napari.review_session import SESSION_LEVELS, ReviewSession
from cytoreview._napari.review_stats import StatsPanel
from cytoreview.errors import CytoreviewError
from cytoreview.review import STRATEGIES, UNSURE
from cytoreview.workflows import project_folder_for

log = logging.getLogger(__name__)

SETTINGS_ORG = "cytoreview"
SETTINGS_APP = "review"
#: Stats/progress are recomputed this long after the last change (ms); they scan the whole image's items.
STATS_DEBOUNCE_MS = 800


def _swatch(color: str, size: int = 14) -> QIcon:
    pix = QPixmap(size, size)
    pix.fill(QColor(color))
    return QIcon(pix)


class ReviewWidget(QWidget):
    """Dock widget "cytoreview: review" (npe2 widget contribution; takes ``napari_viewer``)."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        show_scale_bar(napari_viewer)  # µm scale bar whenever a case is open in this viewer
        self.session: ReviewSession | None = None
        self.settings = QSettings(SETTINGS_ORG, SETTINGS_APP)
        self.keys = ReviewKeys(napari_viewer, self.on_action, qt_window=self.window)
        self._palette_rows: list[int] = []
        self._stats_timer = QTimer(self)
        self._stats_timer.setSingleShot(True)
        self._stats_timer.setInterval(STATS_DEBOUNCE_MS)
        self._stats_timer.timeout.connect(self.refresh_stats)
        self._build()
        self._refresh_layers()
        napari_viewer.layers.events.inserted.connect(self._refresh_layers)
        napari_viewer.layers.events.removed.connect(self._refresh_layers)
        hub().predictions_ready.connect(self.on_predictions_ready)
        hub().project_chosen.connect(self._on_project_chosen)
        self.folder_edit.editingFinished.connect(self._announce_project)

    def on_predictions_ready(self, store_path: str, project_folder: str) -> None:
        """A prediction run finished: (re)open the session on its project when a reviewer name is known."""
        if not self.reviewer_edit.text().strip():
            self.folder_edit.setText(project_folder)
            return
        if self.session is not None and str(self.session.project.folder) != str(Path(project_folder)):
            return  # the reviewer is busy with another project: do not pull the rug
        self.folder_edit.setText(project_folder)
        self.open_session()

    # ================================================================== layout
    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(4, 4, 4, 4)
        form = QFormLayout()
        self.layer_combo = QComboBox()
        self.layer_combo.currentTextChanged.connect(self._layer_chosen)
        form.addRow("image", self.layer_combo)
        folder_row = QHBoxLayout()
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("default: beside / inside the image")
        choose = QPushButton("…")
        choose.setFixedWidth(28)
        choose.setToolTip("choose a project folder")
        choose.clicked.connect(self._choose_folder)
        folder_row.addWidget(self.folder_edit)
        folder_row.addWidget(choose)
        form.addRow("project", folder_row)
        reviewer_row = QHBoxLayout()
        self.reviewer_edit = QLineEdit(str(self.settings.value("reviewer", "") or ""))
        self.reviewer_edit.setPlaceholderText("your name (journalled with every label)")
        self.open_btn = QPushButton("Open")
        self.open_btn.clicked.connect(self.open_session)
        reviewer_row.addWidget(self.reviewer_edit)
        reviewer_row.addWidget(self.open_btn)
        form.addRow("reviewer", reviewer_row)
        root.addLayout(form)

        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m reviewed")
        self.progress.setValue(0)
        root.addWidget(self.progress)

        opts = QHBoxLayout()
        self.strategy_combo = QComboBox()
        self.strategy_combo.addItems(list(STRATEGIES))
        self.strategy_combo.setToolTip("queue order")
        self.strategy_combo.currentTextChanged.connect(self._strategy_changed)
        self.level_combo = QComboBox()
        self.level_combo.addItems(list(SESSION_LEVELS))
        self.level_combo.setToolTip("what to review: tiles, cells or whole fields")
        self.level_combo.currentTextChanged.connect(self._level_changed)
        self.blind_check = QCheckBox("blinded")
        self.blind_check.setToolTip("second read: hide the model's overlays and earlier readers' labels")
        self.blind_check.toggled.connect(self._blinded_changed)
        self.keys_check = QCheckBox("keys")
        self.keys_check.setChecked(True)
        self.keys_check.setToolTip("review keys on the viewer (the key map is below; ? or F1 shows it on the "
                                   "canvas)")
        self.keys_check.toggled.connect(self._keys_changed)
        for w in (QLabel("queue"), self.strategy_combo, self.level_combo, self.blind_check, self.keys_check):
            opts.addWidget(w)
        root.addLayout(opts)

        self.item_label = QLabel("no project open")
        self.item_label.setWordWrap(True)
        self.item_label.setTextFormat(Qt.RichText)
        self.item_label.setMinimumHeight(40)
        root.addWidget(self.item_label)
        #: What is wrong with the session's image (missing, or other content than when it was added).
        self.warning_label = QLabel("")
        self.warning_label.setWordWrap(True)
        self.warning_label.setTextFormat(Qt.RichText)
        self.warning_label.setVisible(False)
        root.addWidget(self.warning_label)

        self.palette_table = QTableWidget(0, 3)
        self.palette_table.setHorizontalHeaderLabels(["class", "key", "count"])
        self.palette_table.verticalHeader().hide()
        self.palette_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        self.palette_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.palette_table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeToContents)
        self.palette_table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.palette_table.setSelectionBehavior(QTableWidget.SelectRows)
        self.palette_table.setFocusPolicy(Qt.NoFocus)
        self.palette_table.cellClicked.connect(self._palette_clicked)
        root.addWidget(self.palette_table)

        self.keymap_label = QLabel(_keymap_html(key_map({})))
        self.keymap_label.setWordWrap(True)
        self.keymap_label.setTextFormat(Qt.RichText)
        self.keymap_label.setToolTip("? or F1 shows this key map over the image")
        root.addWidget(self.keymap_label)

        buttons = QHBoxLayout()
        self.buttons = {}
        for action, text, tip in (("previous", "◀", "previous item (←)"), ("accept", "Accept", "model's class (Enter)"),
                                  ("unsure", "Unsure", "cannot tell (0)"), ("next", "Skip ▶", "next item (Space, →)"),
                                  ("undo", "Undo", "Ctrl+Z"), ("redo", "Redo", "Ctrl+Shift+Z")):
            b = QPushButton(text)
            b.setToolTip(tip)
            b.setFocusPolicy(Qt.NoFocus)
            b.clicked.connect(lambda _=False, a=action: self.on_action(a))
            buttons.addWidget(b)
            self.buttons[action] = b
        root.addLayout(buttons)

        self.tabs = QTabWidget()
        self.stats = StatsPanel()
        self.gallery = FieldGallery()
        self.gallery.field_clicked.connect(self.go_to_field)
        self.gallery.labels_edited.connect(self._field_labels_edited)
        self.agreement = AgreementPanel()
        self.agreement.adjudicate.connect(self._start_adjudication)
        self.tabs.addTab(self.stats, "Stats")
        self.tabs.addTab(self.gallery, "Fields")
        self.tabs.addTab(self.agreement, "Agreement")
        from cytoreview._napari.review_measure import MeasurePanel

        self.measure = MeasurePanel()
        self.tabs.addTab(self.measure, "Measurements")
        self.tabs.currentChanged.connect(lambda _i: self.refresh_stats(full=True))
        root.addWidget(self.tabs, 1)
        self._set_enabled(False)

    def _set_enabled(self, on: bool) -> None:
        for w in (self.strategy_combo, self.level_combo, self.blind_check, self.palette_table, *self.buttons.values(),
                  self.tabs):
            w.setEnabled(on)

    # ================================================================== image layer / project
    def _image_layers(self) -> list:
        return [lay for lay in self.viewer.layers if is_image_layer(lay)]

    def _refresh_layers(self, event=None) -> None:
        layers = self._image_layers()
        for lay in layers:  # a renamed image layer keeps its place in the list (napari connects a callback once)
            lay.events.name.connect(self._refresh_layers)
        names = [lay.name for lay in layers]
        current = self.layer_combo.currentText()
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        active = self.viewer.layers.selection.active
        preferred = current if current in names else (active.name if active is not None and active.name in names
                                                      else (names[0] if names else ""))
        self.layer_combo.setCurrentText(preferred)
        self.layer_combo.blockSignals(False)
        self._layer_chosen(self.layer_combo.currentText())

    def _layer_chosen(self, name: str) -> None:
        if not name or name not in self.viewer.layers:
            return
        meta = LayerMeta.of(self.viewer.layers[name])
        if meta is not None and meta.is_image:
            self.folder_edit.setPlaceholderText(str(project_folder_for(meta.image_path)))

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Project folder", self.folder_edit.text() or str(Path.home()))
        if folder:
            self.folder_edit.setText(folder)
            self._announce_project()

    def _announce_project(self) -> None:
        text = self.folder_edit.text().strip()
        if text:
            hub().project_chosen.emit(text)

    def _on_project_chosen(self, folder: str) -> None:
        """Another dock chose the project: show it here (an open session stays on its project until reopened)."""
        if self.folder_edit.text().strip() != folder:
            self.folder_edit.setText(folder)

    def open_session(self) -> ReviewSession | None:
        """Open the project of the chosen image layer and show the reviewer's place (or the first queue item)."""
        name = self.layer_combo.currentText()
        reviewer = self.reviewer_edit.text().strip()
        if not name:
            self._error("open an image with cytoreview first")
            return None
        if not reviewer:
            self._error("enter your name as reviewer: every label is journalled with it")
            return None
        self.close_session()
        try:
            session = ReviewSession.open(self.viewer, self.viewer.layers[name], reviewer,
                                         folder=self.folder_edit.text().strip() or None,
                                         level=self.level_combo.currentText(),
                                         strategy=self.strategy_combo.currentText())
        except CytoreviewError as exc:
            self._error(str(exc))
            return None
        self.session = session
        self.settings.setValue("reviewer", reviewer)
        session.project.set_setting("last_reviewer", reviewer)
        session.listeners.append(self._session_event)
        if session.kind != "fields" and self.level_combo.currentText() == "field":
            self.level_combo.setCurrentText("tile")
        self._build_palette()
        self.gallery.set_classes(session.project.schema.active_classes)
        self.agreement.set_session(session)
        self._set_enabled(True)
        self.tabs.setTabEnabled(1, session.kind == "fields")
        if self.keys_check.isChecked():
            self.keys.bind()
        from cytoreview._napari.review_regions import RegionLayerSync

        self.regions = RegionLayerSync(self.viewer, session, on_change=lambda *_: self._stats_timer.start())
        self.folder_edit.setText(str(session.project.folder))
        session.resume()
        self.strategy_combo.blockSignals(True)
        self.strategy_combo.setCurrentText(session.strategy)
        self.strategy_combo.blockSignals(False)
        self.refresh_stats(full=True)
        if session.kind == "fields":
            self.gallery.populate(session)
        problem = session.project.image_problems([session.image_id]).get(session.image_id)
        if problem:
            self._warn(f"image {session.image_id}: {problem}")
        return session

    def close_session(self) -> None:
        """Unbind keys and close the project."""
        self.keys.unbind()
        self.warning_label.clear()
        self.warning_label.setVisible(False)
        if self.key_help_shown():
            self.toggle_key_help(False)
        if getattr(self, "regions", None) is not None:
            self.regions.close()
            self.regions = None
        if self.session is not None:
            self.session.close()
            self.session = None
        self._set_enabled(False)

    def closeEvent(self, event) -> None:
        self.close_session()
        super().closeEvent(event)

    def _error(self, message: str) -> None:
        self.item_label.setText(f"<span style='color:#ff6060'>{message}</span>")
        try:
            from napari.utils.notifications import show_error

            show_error(message)
        except Exception:  # noqa: BLE001 - notifications are best effort
            log.error(message)

    def _warn(self, message: str) -> None:
        """A warning that does not stop the session (the status line under the item keeps it)."""
        self.warning_label.setText(f"<span style='color:#ffb000'>{message}</span>")
        self.warning_label.setVisible(True)
        try:
            from napari.utils.notifications import show_warning

            show_warning(message)
        except Exception:  # noqa: BLE001 - notifications are best effort
            log.warning(message)

    # ================================================================== palette
    def _build_palette(self) -> None:
        s = self.session
        classes = list(s.project.schema.active_classes) + [s.project.schema.get(UNSURE)]
        self._palette_rows = [c.id for c in classes]
        self._hotkeys = self._hotkey_map(classes)
        self.palette_table.setRowCount(len(classes))
        for k, cls in enumerate(classes):
            name = QTableWidgetItem(_swatch(cls.color), cls.name)
            key = QTableWidgetItem(next((h for h, cid in self._hotkeys.items() if cid == cls.id), ""))
            key.setTextAlignment(Qt.AlignCenter)
            count = QTableWidgetItem("")
            count.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            for col, it in enumerate((name, key, count)):
                self.palette_table.setItem(k, col, it)
        names = {cid: cls.name for cls in classes for cid in [cls.id]}
        class_keys = {k: names.get(cid, str(cid)) for k, cid in self._hotkeys.items()}
        self._key_map = key_map(class_keys)
        self.keymap_label.setText(_keymap_html(self._key_map))
        self.keys.set_help_text(key_line(class_keys) if len(key_line(class_keys)) < 160
                                else "review keys on: 1-9 class · 0 unsure · Enter accept · ? key map")
        if self.key_help_shown():
            self._canvas_text().text = _keymap_text(self._key_map)
        self.palette_table.resizeRowsToContents()
        row_px = self.palette_table.verticalHeader().defaultSectionSize()
        self.palette_table.setFixedHeight(min(10, len(classes)) * row_px + self.palette_table.horizontalHeader().height() + 6)

    @staticmethod
    def _hotkey_map(classes) -> dict[str, int]:
        """Digit -> class id: the schema's hotkeys, then free digits in class order for classes without one."""
        out = {c.hotkey: c.id for c in classes if c.hotkey and c.hotkey.isdigit()}
        out["0"] = UNSURE
        free = [str(d) for d in range(1, 10) if str(d) not in out]
        for cls in classes:
            if cls.id != UNSURE and cls.id not in out.values() and free:
                out[free.pop(0)] = cls.id
        return out

    def _palette_clicked(self, row: int, col: int) -> None:
        if self.session is None or row >= len(self._palette_rows):
            return
        cid = self._palette_rows[row]
        if cid != UNSURE:
            self.session.new_cell_class_id = cid
            if getattr(self, "regions", None) is not None:
                self.regions.brush.set_class(cid)  # the region brush paints with the chosen class
        self._guard(lambda: self.session.set_class(cid))

    # ================================================================== actions (keys and buttons)
    def on_action(self, action: str) -> None:
        """Run a review action: ``class:<digit>``, unsure, accept, next, previous, undo, redo."""
        s = self.session
        if s is None:
            return
        if action.startswith("class:"):
            cid = self._hotkeys.get(action.split(":", 1)[1])
            if cid is not None:
                self._guard(lambda: s.set_class(cid))
        elif action == "unsure":
            self._guard(lambda: s.set_class(UNSURE))
        elif action == "accept":
            self._guard(s.accept)
        elif action == "next":
            self._guard(s.next)
        elif action == "previous":
            self._guard(s.previous)
        elif action == "undo":
            self._guard(s.undo)
        elif action == "redo":
            self._guard(s.redo)
        elif action == "help":
            self.toggle_key_help()

    # ================================================================== key help over the canvas
    def _canvas_text(self):
        """napari's canvas text overlay (``viewer.canvas.overlays.text`` since 0.9)."""
        overlays = getattr(getattr(self.viewer, "canvas", None), "overlays", None)
        text = getattr(overlays, "text", None)
        return text if text is not None else self.viewer.text_overlay

    def key_help_shown(self) -> bool:
        """True while the key map is shown over the canvas (by this dock)."""
        return bool(getattr(self, "_key_help_on", False))

    def toggle_key_help(self, show: bool | None = None) -> None:
        """Show / hide every review key and class over the canvas (``?`` / F1)."""
        show = not self.key_help_shown() if show is None else bool(show)
        overlay = self._canvas_text()
        if show:
            overlay.text = _keymap_text(getattr(self, "_key_map", key_map({})))
            overlay.position = "top_left"
            overlay.font_size = 12
            overlay.color = "white"
            overlay.box = True
        overlay.visible = show
        self._key_help_on = show

    def _guard(self, fn) -> None:
        try:
            fn()
        except CytoreviewError as exc:
            self._error(str(exc))

    # ================================================================== session events
    def _session_event(self, what: str, item_ids: list[int]) -> None:
        if what == "show" or what in ("undo", "redo", "label", "blinded"):
            self._show_current()
        if what == "done":
            self.item_label.setText("<b>queue done</b>: nothing left to review at this level "
                                    f"({self.session.strategy}{', blinded' if self.session.blinded else ''})")
        if what != "show":
            self._stats_timer.start()

    def _show_current(self) -> None:
        s = self.session
        item = s.current if s else None
        if item is None:
            return
        schema = s.project.schema
        g = item.geometry
        where = {"tile": lambda: f"tile r{g['row']} c{g['col']}", "point": lambda: f"cell y{g['y']:.0f} x{g['x']:.0f}",
                 "field": lambda: "whole field"}.get(g["type"], lambda: g["type"])()
        if s.kind == "fields":
            where = f"field {item.field} · {where}"

        def names(ids):
            return ", ".join(schema.get(i).name for i in ids) if ids else "none"

        parts = [f"<b>{where}</b> (item {item.item_id})"]
        if not s.blinded and item.model_labels is not None:
            prob = item.model_prob
            unc = item.uncertainty
            parts.append(f"model: <b>{names(item.model_labels)}</b>"
                         f"{'' if prob is None else f' p={prob:.2f}'}{'' if unc is None else f' · unc {unc:.2f}'}")
        if item.reviewed:
            parts.append(f"label: <b>{names(item.label)}</b> ({item.reviewer})")
        elif s.blinded:
            parts.append("blinded: not read by you yet")
        if s.explicit_queue is not None:
            parts.append(f"adjudication: {len(s.explicit_queue)} left")
        self.item_label.setText("<br>".join(parts))
        if item.level == "field":
            self.gallery.show_labels(item.label if (item.reviewed or not s.blinded) else [])

    def refresh_stats(self, full: bool = False) -> None:
        """Progress bar, palette counts and live panel, from the session's running counts (no project scan);
        ``full`` also recomputes the reviewer's project totals (a scan of reviews and journal)."""
        s = self.session
        if s is None:
            return
        total, done = s.n_total, s.n_reviewed
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat(f"{done:,} / {total:,} {s.level}s reviewed"
                                f"{' by ' + s.reviewer if s.blinded else ''}")
        for row, cid in enumerate(self._palette_rows):
            it = self.palette_table.item(row, 2)
            if it is not None:
                it.setText(f"{max(0, s.counts.get(cid, 0)):,}")
        self.stats.update_from(s, full=full)
        if full:
            self.agreement.set_session(s)
        if self.tabs.currentWidget() is self.measure:
            self.measure.update_from(s)
        if s.kind == "fields" and self.tabs.currentWidget() is self.gallery and full:
            self.gallery.populate(s)

    # ================================================================== option changes
    def _strategy_changed(self, strategy: str) -> None:
        if self.session is not None:
            self.session.strategy = strategy
            self.session.explicit_queue = None
            self._guard(self.session.next)

    def _level_changed(self, level: str) -> None:
        if self.session is not None:
            self.session.set_level(level)
            self._guard(self.session.next)
            self.refresh_stats(full=True)

    def _blinded_changed(self, on: bool) -> None:
        if self.session is not None:
            self.session.set_blinded(on)
            self.session.explicit_queue = None
            self._guard(self.session.next)
            self.refresh_stats(full=True)

    def _keys_changed(self, on: bool) -> None:
        if on and self.session is not None:
            self.keys.bind()
        else:
            self.keys.unbind()

    # ================================================================== fields and adjudication
    def go_to_field(self, field: int) -> None:
        """Jump to a field (the gallery's click): show its field item, or frame the field when it has none."""
        s = self.session
        if s is None:
            return
        items = s.project.items(image_id=s.image_id, level="field", field=int(field))
        if len(items):
            if s.level != "field":
                self.level_combo.blockSignals(True)
                self.level_combo.setCurrentText("field")
                self.level_combo.blockSignals(False)
                s.set_level("field")
            s.show(int(items["item_id"].iloc[0]))
        else:
            self.viewer.dims.set_point(0, int(field))

    def _field_labels_edited(self, class_ids: list) -> None:
        if self.session is not None and self.session.current is not None \
                and self.session.current.level == "field":
            self._guard(lambda: self.session.set_field_labels(class_ids))

    def _start_adjudication(self, item_ids: list) -> None:
        s = self.session
        if s is None:
            return
        df = s.project.items(ids=item_ids) if item_ids else None
        mine = set() if df is None else set(df.loc[df["image_id"] == s.image_id, "item_id"].astype(int))
        s.explicit_queue = [i for i in item_ids if i in mine]
        self._guard(s.next)


def _keymap_html(rows: list[tuple[str, str]]) -> str:
    """The key map as one wrapped line of ``<b>key</b> meaning`` pairs (the dock's visible legend)."""
    from html import escape

    return "<small>" + " · ".join(f"<b>{escape(k)}</b> {escape(v)}" for k, v in rows) + "</small>"


def _keymap_text(rows: list[tuple[str, str]]) -> str:
    """The key map as aligned plain-text lines (the canvas overlay)."""
    width = max((len(k) for k, _ in rows), default=0)
    return "cytoreview review keys\n" + "\n".join(f"{k.rjust(width)}   {v}" for k, v in rows)
