"""The cell gallery dock: a project's cells as thumbnails at one physical scale, grouped by class, keyboard first.

Only translation lives here: which thumbnails are selected or shown becomes a call of :mod:`cytoreview.review.gallery`
(reclassify, accept, not classed, undo), whose rules and journal are the project's. Thumbnails are read lazily, a page
of :data:`PAGE_CELLS` at a time, from the project's persistent thumbnail cache (cut once per cell by the core's
background fill, :meth:`cytoreview.review.cell_crops.CropReader.fill_in_background`; a cell it has not reached yet is
cut with one decode per field) and kept in a bounded in-memory cache; the list view only asks for what it shows, so
10⁵ cells scroll.

Keys (on the gallery): ``1``–``9`` the class with that hotkey for the selected cells, ``0`` "not classed", ``Enter``
accept the model's calls of the cells in view (and show the next screenful), ``Ctrl+Z`` undo the last key press,
``Ctrl+Shift+Z`` / ``Ctrl+Y`` redo it. Click, Shift/Ctrl-click and
dragging select; clicking a cell centres the viewer on it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from qtpy.QtCore import QAbstractListModel, QModelIndex, QPoint, QRect, QSize, Qt, Signal
from qtpy.QtGui import QColor, QFont, QImage, QPainter, QPen
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QVBoxLayout,
    QWidget,
)

from cytoreview.errors import CytoreviewError
from cytoreview.review import gallery as core
from cytoreview.review.cell_crops import CROP_UM, GALLERY_THUMB_PX, CropReader

#: Thumbnails read at once (the view's unit of loading).
PAGE_CELLS = 100
#: Thumbnails kept decoded.
CACHE_THUMBS = 4000
#: Thumbnail side on screen, px (the size the project's thumbnail cache is cut at).
THUMB_PX = GALLERY_THUMB_PX
HEADER_ROLE = Qt.UserRole + 1
ITEM_ROLE = Qt.UserRole + 2


class GalleryRows:
    """The view's rows -- a header per group, then its cells -- worked out on demand from the group boundaries, so
    laying out 10⁵ cells builds no per-row Python objects. ``rows[r]`` is ``("header", (name, count))`` or
    ``("cell", position in the cells)``."""

    def __init__(self, groups: np.ndarray, item_ids: np.ndarray):
        n = len(groups)
        self._starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]]) if n else np.zeros(0, np.int64)
        self._names = [str(groups[k]) for k in self._starts]
        self._counts = np.diff(np.r_[self._starts, n]).astype(int)
        self._header_rows = self._starts + np.arange(len(self._starts))
        self._len = n + len(self._starts)
        self._position = np.full(int(item_ids.max()) + 1 if n else 0, -1, dtype=np.int64)  # item id -> position
        self._position[item_ids] = np.arange(n)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, row: int):
        if not 0 <= row < self._len:
            raise IndexError(row)
        j = int(np.searchsorted(self._header_rows, row, side="right")) - 1
        if self._header_rows[j] == row:
            return "header", (self._names[j], int(self._counts[j]))
        return "cell", int(row - j - 1)

    def row_of(self, item_id: int) -> int | None:
        """Row of the cell ``item_id`` (None when it is not shown)."""
        if not 0 <= item_id < len(self._position) or self._position[item_id] < 0:
            return None
        k = int(self._position[item_id])
        return k + int(np.searchsorted(self._starts, k, side="right"))


class GalleryModel(QAbstractListModel):
    """Rows: a header per group, then its cells; thumbnails come from a :class:`CropReader`, a page at a time."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.cells = None
        self.rows = GalleryRows(np.zeros(0, object), np.zeros(0, np.int64))
        self.reader: CropReader | None = None
        self.colours: dict[str, str] = {}
        self._thumbs: OrderedDict[int, tuple[QImage, bool]] = OrderedDict()
        self.page_loads: list[float] = []  # seconds per page read (for the status line and the benchmark)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cytoreview-gallery")
        self._pending: dict[int, Future] = {}  # page -> thumbnails being read ahead
        self._lock = threading.Lock()
        self.prefetch = True

    # -------------------------------------------------------------- content
    def reset(self, cells, reader: CropReader | None, colours: dict[str, str]) -> None:
        """Show ``cells`` (rows of :func:`cytoreview.review.gallery.gallery_cells`, in order)."""
        self.beginResetModel()
        for future in self._pending.values():
            future.cancel()
        for future in list(self._pending.values()):
            if not future.cancelled():
                future.result()
        self._pending.clear()
        self.cells = cells.reset_index(drop=True)
        if reader is not self.reader:  # the same reader (a regroup) keeps the thumbnails already read
            with self._lock:
                self._thumbs.clear()
        self.reader, self.colours = reader, colours
        self.rows = GalleryRows(self.cells["group"].to_numpy(object), self.cells["item_id"].to_numpy(np.int64))
        self.endResetModel()

    def update_cells(self, items) -> None:
        """New labels for some cells (rows of ``Project.items``): their badge changes, they keep their place."""
        for item in items.to_dict("records"):
            row = self.rows.row_of(int(item["item_id"]))
            if row is None:
                continue
            k = self.rows[row][1]
            label = item["label"]
            self.cells.at[k, "label_id"] = label[0] if label else None
            self.cells.at[k, "reviewed"] = bool(item["reviewed"])
            idx = self.index(row)
            self.dataChanged.emit(idx, idx)

    def item_id(self, row: int) -> int | None:
        kind, k = self.rows[row]
        return None if kind == "header" else int(self.cells.at[k, "item_id"])

    def cell(self, row: int) -> dict | None:
        kind, k = self.rows[row]
        return None if kind == "header" else self.cells.iloc[k].to_dict()

    def row_of(self, item_id: int) -> int | None:
        return self.rows.row_of(int(item_id))

    # -------------------------------------------------------------- Qt model
    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(self.rows)

    def flags(self, index):
        if not index.isValid():
            return Qt.NoItemFlags
        if self.rows[index.row()][0] == "header":
            return Qt.ItemIsEnabled
        return Qt.ItemIsEnabled | Qt.ItemIsSelectable

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid():
            return None
        kind, value = self.rows[index.row()]
        if role == HEADER_ROLE:
            return kind == "header"
        if kind == "header":
            if role == Qt.DisplayRole:
                name, count = value
                return f"{name}  ({count})"
            return None
        if role == ITEM_ROLE:
            return int(self.cells.at[value, "item_id"])
        if role == Qt.DecorationRole:
            return self.thumbnail(index.row())
        if role == Qt.ToolTipRole:
            c = self.cells.iloc[value]
            conf = "–" if np.isnan(c["confidence"]) else f"{c['confidence']:.2f}"
            return f"cell {c['item_id']} · model: {c['model_label'] or '–'} ({conf})" \
                   f"{' · reviewed' if c['reviewed'] else ''}"
        return None

    def thumbnail(self, row: int) -> tuple[QImage, bool] | None:
        """``(image, padded)`` of the cell in ``row``, reading its page when it is not cached."""
        iid = self.item_id(row)
        if iid is None or self.reader is None:
            return None
        with self._lock:
            if iid in self._thumbs:
                self._thumbs.move_to_end(iid)
                return self._thumbs[iid]
        self.load_page(self.rows[row][1] // PAGE_CELLS)
        with self._lock:
            return self._thumbs.get(iid)

    def load_page(self, page: int) -> None:
        """Make sure the thumbnails of cells ``[page * PAGE_CELLS, (page + 1) * PAGE_CELLS)`` are read (waiting for
        a read-ahead of that page), then read the next page ahead in a worker thread."""
        start = time.perf_counter()
        pending = self._pending.pop(page, None)
        if pending is not None:
            pending.result()
        else:
            self._read_page(page)
        self.page_loads.append(time.perf_counter() - start)
        nxt = page + 1
        if self.prefetch and nxt * PAGE_CELLS < len(self.cells) and nxt not in self._pending:
            self._pending[nxt] = self._pool.submit(self._read_page, nxt)

    def _read_page(self, page: int) -> None:
        lo, hi = page * PAGE_CELLS, min((page + 1) * PAGE_CELLS, len(self.cells))
        with self._lock:
            todo = [k for k in range(lo, hi) if int(self.cells.at[k, "item_id"]) not in self._thumbs]
        if not todo:
            return
        records = self.cells.iloc[todo].to_dict("records")
        made = []
        for record, crop in zip(records, self.reader.crops(records)):
            rgb = np.ascontiguousarray(crop.rgb)
            h, w = rgb.shape[:2]
            image = QImage(rgb.data, w, h, 3 * w, QImage.Format_RGB888).copy()  # QImage is safe off the GUI thread
            made.append((int(record["item_id"]), (image, crop.padded)))
        with self._lock:
            for iid, thumb in made:
                self._thumbs[iid] = thumb
            while len(self._thumbs) > CACHE_THUMBS:
                self._thumbs.popitem(last=False)

    def shutdown(self) -> None:
        """Stop reading ahead (the dock is closing)."""
        for future in self._pending.values():
            future.cancel()
        self._pool.shutdown(wait=True)


class GalleryDelegate(QStyledItemDelegate):
    """Paints a header across the view, or a thumbnail with its class colour, reviewed tick and padding mark."""

    def __init__(self, view: QListView, model: GalleryModel, class_name):
        super().__init__(view)
        self.view, self.model, self.class_name = view, model, class_name

    def sizeHint(self, option, index):  # noqa: N802 - Qt API
        return QSize(THUMB_PX + 6, THUMB_PX + 6)  # one size for every row: the view lays out 10^5 rows at once

    def paint(self, painter: QPainter, option, index):
        rect: QRect = option.rect
        if index.data(HEADER_ROLE):  # a tile that opens its group: the class name, colour and count
            name, count = self.model.rows[index.row()][1]
            painter.save()
            inner = rect.adjusted(3, 3, -3, -3)
            painter.fillRect(inner, QColor("#3a3f4b"))
            painter.fillRect(QRect(inner.left(), inner.top(), 6, inner.height()),
                             QColor(self.model.colours.get(name, "#888888")))
            font = QFont(painter.font())
            font.setBold(True)
            painter.setFont(font)
            painter.setPen(QColor("#eeeeee"))
            painter.drawText(inner.adjusted(10, 4, -2, -2), Qt.AlignTop | Qt.AlignLeft | Qt.TextWordWrap, name)
            font.setBold(False)
            painter.setFont(font)
            painter.drawText(inner.adjusted(10, 4, -2, -4), Qt.AlignBottom | Qt.AlignLeft, f"{count} cells")
            painter.restore()
            return
        thumb = index.data(Qt.DecorationRole)
        painter.save()
        inner = rect.adjusted(3, 3, -3, -3)
        if thumb is not None:
            image, padded = thumb
            painter.drawImage(inner, image)
            if padded:
                pen = QPen(QColor("#c83c3c"), 2, Qt.DashLine)
                painter.setPen(pen)
                painter.drawRect(inner.adjusted(1, 1, -1, -1))
        cell = self.model.cell(index.row())
        if cell is not None:
            name = self.class_name(cell["label_id"])
            colour = self.model.colours.get(name, "#888888")
            painter.fillRect(QRect(inner.left(), inner.bottom() - 5, inner.width(), 6), QColor(colour))
            if cell["reviewed"]:
                painter.setPen(QPen(QColor("#00c060"), 3))
                painter.drawLine(inner.right() - 14, inner.top() + 8, inner.right() - 9, inner.top() + 13)
                painter.drawLine(inner.right() - 9, inner.top() + 13, inner.right() - 2, inner.top() + 3)
        if option.state & QStyle.State_Selected:
            painter.setPen(QPen(QColor("#ffd400"), 3))
            painter.drawRect(rect.adjusted(1, 1, -2, -2))
        painter.restore()


class GalleryView(QListView):
    """The thumbnail grid; keys go to the dock (``key_pressed``)."""

    key_pressed = Signal(int, int)  # key, modifiers

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setViewMode(QListView.ListMode)
        self.setFlow(QListView.LeftToRight)
        self.setWrapping(True)
        self.setResizeMode(QListView.Adjust)
        self.setSpacing(1)
        self.setUniformItemSizes(True)
        self.setVerticalScrollMode(QAbstractItemView.ScrollPerPixel)  # a page step is one screenful
        self.setAutoScroll(False)  # a new current cell never scrolls the screenful away (Enter moves on)
        self.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.setSelectionRectVisible(True)
        self.setMouseTracking(False)
        self.setStyleSheet("QListView { background: #262930; }")

    def keyPressEvent(self, event):  # noqa: N802 - Qt API
        key = event.key()
        if (Qt.Key_0 <= key <= Qt.Key_9) or key in (Qt.Key_Return, Qt.Key_Enter) or \
                (key in (Qt.Key_Z, Qt.Key_Y) and event.modifiers() & Qt.ControlModifier):
            self.key_pressed.emit(int(key), int(event.modifiers()))
            event.accept()
            return
        super().keyPressEvent(event)


class CellGalleryWidget(QWidget):
    """Dock: the project's cells grouped by class; keys reclassify the selection; live differential.

    Parameters
    ----------
    viewer : napari.Viewer
    project : Project, optional
        Shown at once (else pick a folder in the dock).
    reviewer : str
    """

    changed = Signal(list)  # item ids whose label changed

    def __init__(self, viewer=None, project=None, reviewer: str = "reviewer", parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.project = None
        self.state: core.GalleryCells | None = None  # the cells, read once and kept current
        self._owns_project = False
        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("project folder")
        self.open_button = QPushButton("Open")
        self.open_button.clicked.connect(self._open_folder)
        top.addWidget(self.folder_edit, 1)
        top.addWidget(self.open_button)
        lay.addLayout(top)
        row = QHBoxLayout()
        self.reviewer_edit = QLineEdit(reviewer)
        self.reviewer_edit.setMinimumWidth(80)
        self.reviewer_edit.setMaximumWidth(110)
        self.sort_combo = QComboBox()
        self.sort_combo.addItems(list(core.SORTS))
        self.sort_combo.currentTextChanged.connect(lambda _t: self.regroup())
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setValue(core.UNIDENTIFIED_BELOW)
        self.threshold_spin.setToolTip("unreviewed calls below this confidence are 'unidentified'")
        self.threshold_spin.editingFinished.connect(self.regroup)
        self.crop_spin = QDoubleSpinBox()
        self.crop_spin.setRange(4.0, 200.0)
        self.crop_spin.setValue(CROP_UM)
        self.crop_spin.setSuffix(" µm")
        self.crop_spin.editingFinished.connect(self._crop_changed)
        for label, w in (("reviewer", self.reviewer_edit), ("sort", self.sort_combo),
                         ("unidentified <", self.threshold_spin), ("crop", self.crop_spin)):
            row.addWidget(QLabel(label))
            row.addWidget(w)
        lay.addLayout(row)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        lay.addWidget(self.message)
        self.model = GalleryModel(self)
        self.view = GalleryView(self)
        self.view.setModel(self.model)
        self.view.setItemDelegate(GalleryDelegate(self.view, self.model, self._class_name))
        self.view.key_pressed.connect(self.handle_key)
        self.view.clicked.connect(self._on_clicked)
        lay.addWidget(self.view, 1)
        self.counts = QLabel("")
        self.counts.setWordWrap(True)
        lay.addWidget(self.counts)
        bottom = QHBoxLayout()
        self.refresh_button = QPushButton("Regroup")
        self.refresh_button.setToolTip("sort the cells into their current classes again (this dock's changes)")
        self.refresh_button.clicked.connect(self.regroup)
        self.reload_button = QPushButton("Reload")
        self.reload_button.setToolTip("read every cell from the project again (changes made in other docks; "
                                      "seconds at 10⁵ cells)")
        self.reload_button.clicked.connect(self.refresh)
        self.report_button = QPushButton("Case report…")
        self.report_button.clicked.connect(self._report_clicked)
        bottom.addWidget(self.refresh_button)
        bottom.addWidget(self.reload_button)
        bottom.addWidget(self.report_button)
        lay.addLayout(bottom)
        from cytoreview._napari.hub import hub

        hub().project_chosen.connect(self._on_project_chosen)  # one project for every dock
        hub().predictions_ready.connect(self._on_predictions_ready)
        if project is not None:
            self.set_project(project, reviewer)
        else:
            self.message.setText("Open a project folder to see its cells.")

    # -------------------------------------------------------------- project
    @property
    def reviewer(self) -> str:
        return self.reviewer_edit.text().strip() or "reviewer"

    def set_project(self, project, reviewer: str | None = None) -> None:
        """Show ``project``'s cells (the dock does not close a project it was given)."""
        self._close_own()
        self.project = project
        self.folder_edit.setText(str(project.folder))
        if reviewer:
            self.reviewer_edit.setText(reviewer)
        self.refresh()

    def _open_folder(self) -> None:
        if self.open_folder(self.folder_edit.text().strip()):
            from cytoreview._napari.hub import hub

            hub().project_chosen.emit(str(self.project.folder))

    def open_folder(self, folder) -> bool:
        """Show the project in ``folder`` (a clear message in the dock when there is none)."""
        from cytoreview.review import Project

        if not folder:
            return False
        if self.project is not None and Path(folder).absolute() == Path(self.project.folder).absolute():
            self.refresh()
            return True
        try:
            project = Project.open(folder)
        except CytoreviewError as exc:
            self.message.setText(str(exc))
            return False
        self.set_project(project)
        self._owns_project = True
        return True

    def _on_project_chosen(self, folder: str) -> None:
        if Path(folder, "project.sqlite").is_file():
            self.open_folder(folder)

    def _on_predictions_ready(self, _store: str, folder: str) -> None:
        self.open_folder(folder)  # new cells: show them

    def _close_own(self) -> None:
        if self.project is not None and self._owns_project:
            self.project.close()
        self._owns_project = False

    def closeEvent(self, event):  # noqa: N802 - Qt API
        self.model.shutdown()
        if self.model.reader is not None:
            self.model.reader.close()
        self._close_own()
        super().closeEvent(event)

    def _class_name(self, class_id) -> str:
        if class_id is None or self.project is None:
            return ""
        try:
            return self.project.schema.get(int(class_id)).name
        except CytoreviewError:
            return ""

    def refresh(self) -> None:
        """Read the cells from the project and show them grouped and sorted (their thumbnails are read again as they
        come into view, from the project's thumbnail cache)."""
        if self.project is None:
            return
        try:
            self.state = core.GalleryCells(self.project, sort=self.sort_combo.currentText(),
                                           unidentified_below=self.threshold_spin.value() or None)
        except CytoreviewError as exc:
            self.message.setText(str(exc))
            return
        self._show(new_reader=True)

    def regroup(self) -> None:
        """Sort the cells into their current classes and the chosen order again (no project read)."""
        if self.state is None:
            return self.refresh()
        try:
            self.state.set_order(self.sort_combo.currentText(), self.threshold_spin.value() or None)
        except CytoreviewError as exc:
            self.message.setText(str(exc))
            return
        self._show(new_reader=False)

    def _crop_changed(self) -> None:
        if self.model.reader is not None and self.model.reader.crop_um != self.crop_spin.value():
            self._show(new_reader=True)

    def _show(self, new_reader: bool) -> None:
        cells = self.state.cells()
        old = self.model.reader
        reader = old
        if new_reader or old is None:
            reader = CropReader(self.project, crop_um=self.crop_spin.value(), thumb_px=THUMB_PX, cache=True)
        colours = {c.name: c.color for c in self.project.schema.classes}
        colours.setdefault(core.NOT_CLASSED, core.NOT_CLASSED_COLOR)
        self.model.reset(cells, reader, colours)  # waits for a read-ahead of the old cells
        if old is not None and old is not reader:
            old.close()
        if reader is not old and not cells.empty:  # cut what the cache lacks, field by field, while the reviewer works
            reader.fill_in_background(cells[["item_id", "image_id", "field", "z", "geometry"]])
        if cells.empty:
            self.message.setText("This project has no cells yet: run a cell pack (cytoreview predict, or the predict "
                                 "dock) and import its predictions, then open the project again.")
        else:
            keys = ", ".join(f"{c.hotkey} {c.name}" for c in self.project.schema.classes
                             if c.hotkey and c.hotkey.isdigit() and c.active)
            gone = core.missing_images(self.project, cells)
            self.message.setText(f"{len(cells)} cells · keys: {keys}, 0 not classed, Enter accept the calls in "
                                 "view, Ctrl+Z undo, Ctrl+Shift+Z redo"
                                 + (f" · image not found, its cells hatched grey: {', '.join(gone)} (add it at its "
                                    "new path to relink it)" if gone else ""))
        self.update_counts()

    def update_counts(self) -> None:
        """The live differential of the project (counted classes, % of the counted cells)."""
        if self.state is None:
            return
        table = self.state.differential(by="project")
        if table.empty:
            self.counts.setText("")
            return
        counted = table[table["in_denominator"]]
        parts = [f"{r['class']} {r['count']} ({r['percent']:.0f}%)" for r in counted.to_dict("records")]
        aside = table[~table["in_denominator"]]
        extra = ", ".join(f"{r['class']} {r['count']}" for r in aside.to_dict("records"))
        self.counts.setText(f"differential of {int(table['denominator'].iloc[0])} cells: " + " · ".join(parts)
                            + (f"   (not counted: {extra})" if extra else ""))

    # -------------------------------------------------------------- selection
    def selected_item_ids(self) -> list[int]:
        rows = sorted(i.row() for i in self.view.selectionModel().selectedIndexes())
        return [iid for iid in (self.model.item_id(r) for r in rows) if iid is not None]

    def visible_item_ids(self) -> list[int]:
        """Cells whose thumbnail is wholly in view now (the "page" Enter accepts)."""
        viewport = self.view.viewport().rect()
        first = self.view.indexAt(QPoint(4, 4))
        start = first.row() if first.isValid() else 0
        out = []
        for row in range(max(start - 1, 0), self.model.rowCount()):
            rect = self.view.visualRect(self.model.index(row))
            if rect.top() > viewport.bottom():
                break
            if viewport.contains(rect):  # wholly in view: the reviewer has seen all of it
                iid = self.model.item_id(row)
                if iid is not None:
                    out.append(iid)
        return out

    def select_items(self, item_ids: list[int], scroll: bool = True) -> None:
        """Select these cells (and scroll to the first when ``scroll``)."""
        from qtpy.QtCore import QItemSelection, QItemSelectionModel

        selection = QItemSelection()
        for iid in item_ids:
            row = self.model.row_of(iid)
            if row is not None:
                idx = self.model.index(row)
                selection.select(idx, idx)
        sm = self.view.selectionModel()
        sm.select(selection, QItemSelectionModel.ClearAndSelect)
        if item_ids and self.model.row_of(item_ids[0]) is not None:
            idx = self.model.index(self.model.row_of(item_ids[0]))
            sm.setCurrentIndex(idx, QItemSelectionModel.NoUpdate)
            if scroll:
                self.view.scrollTo(idx)

    def _advance_after(self, item_ids: list[int]) -> None:
        """After a key press on one cell, select the next cell of the gallery (review without the mouse)."""
        if len(item_ids) != 1:
            return
        row = self.model.row_of(item_ids[0])
        for nxt in range((row or 0) + 1, self.model.rowCount()):
            iid = self.model.item_id(nxt)
            if iid is not None:
                self.select_items([iid], scroll=False)  # the screenful stays put until Enter moves on
                return

    # -------------------------------------------------------------- keys -> core
    def handle_key(self, key: int, modifiers: int = 0) -> None:
        """Translate a key into a gallery edit (see the module docstring)."""
        if self.project is None:
            return
        try:
            if modifiers & int(Qt.ControlModifier) and (key == Qt.Key_Y or (key == Qt.Key_Z
                                                                            and modifiers & int(Qt.ShiftModifier))):
                self.redo()
                return
            if key == Qt.Key_Z and modifiers & int(Qt.ControlModifier):
                self.undo()
                return
            if key in (Qt.Key_Return, Qt.Key_Enter):
                shown = self.visible_item_ids()
                ids = core.accept_calls(self.project, shown, self.reviewer)
                self._after_change(ids, advance=False)
                if shown:  # on to the next screenful (an analyser's "next page"): the first cell not yet shown on top
                    from qtpy.QtWidgets import QAbstractItemView as View

                    nxt = self.model.row_of(shown[-1]) + 1
                    if nxt < self.model.rowCount():
                        self.view.scrollTo(self.model.index(nxt), View.PositionAtTop)
                return
            if Qt.Key_0 <= key <= Qt.Key_9:
                ids = self.selected_item_ids()
                if not ids:
                    self.message.setText("select one or more cells first (click, Shift/Ctrl-click or drag)")
                    return
                digit = chr(key)
                if digit == "0":
                    core.mark_not_classed(self.project, ids, self.reviewer)
                    self.model.colours.setdefault(core.NOT_CLASSED, core.NOT_CLASSED_COLOR)
                else:
                    cls = self.project.schema.by_hotkey(digit)
                    if cls is None:
                        self.message.setText(f"no class has the key {digit}")
                        return
                    core.reclassify(self.project, ids, cls.id, self.reviewer)
                self._after_change(ids, advance=True)
        except CytoreviewError as exc:
            self.message.setText(str(exc))

    def _after_change(self, ids: list[int], advance: bool) -> None:
        if not ids:
            return
        self.state.update(ids)
        self.model.update_cells(self.project.items(ids=ids))
        self.update_counts()
        self.changed.emit(list(ids))
        if advance:
            self._advance_after(ids)

    def undo(self) -> None:
        """Take back the reviewer's last change: a whole key press (the core keeps the key press as one group)."""
        ids = core.undo_key_press(self.project, self.reviewer)
        if not ids:
            self.message.setText("nothing to undo")
            return
        self._show_changed(ids)

    def redo(self) -> None:
        """Re-apply the last change taken back by an undo (all the cells of its key press)."""
        ids = core.redo_key_press(self.project, self.reviewer)
        if not ids:
            self.message.setText("nothing to redo")
            return
        self._show_changed(ids)

    def _show_changed(self, ids: list[int]) -> None:
        self.state.update(ids)
        self.model.update_cells(self.project.items(ids=ids))
        self.update_counts()
        self.changed.emit(ids)

    # -------------------------------------------------------------- viewer
    def _on_clicked(self, index) -> None:
        cell = self.model.cell(index.row())
        if cell is not None:
            self.centre_on(cell)

    def centre_on(self, cell: dict) -> bool:
        """Centre the viewer on a cell (its image's layer, field and plane); False when its image is not open."""
        if self.viewer is None or self.project is None:
            return False
        from cytoreview.review.cell_crops import cell_centre

        path = Path(self.project.image(int(cell["image_id"])).path).resolve()
        layer = None
        for candidate in self.viewer.layers:
            info = candidate.metadata.get("cytoreview") if isinstance(candidate.metadata, dict) else None
            if info and "path" in info and "role" not in info and Path(info["path"]).resolve() == path:
                layer = candidate
        if layer is None:
            self.message.setText(f"open {path.name} in the viewer to see the cell in place")
            return False
        y, x = cell_centre(cell)
        n_lead = layer.ndim - 2
        lead = [int(cell["field"]), int(cell.get("z") or 0)][:n_lead]
        world = layer.data_to_world([*lead, y, x])
        for axis in range(n_lead):
            self.viewer.dims.set_point(axis, world[axis])
        scene = getattr(self.viewer, "scene", None)  # napari >= 0.9 moved the camera onto the scene
        camera = scene.camera if scene is not None and hasattr(scene, "camera") else self.viewer.camera
        camera.center = tuple(float(v) for v in world[-2:])
        return True

    # -------------------------------------------------------------- report
    def _report_clicked(self) -> None:
        if self.project is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Write the case report", str(self.project.folder / "report.html"),
                                              "HTML (*.html)")
        if path:
            self.write_report(path)

    def write_report(self, path) -> list[Path]:
        """Write the case report(s) (:func:`cytoreview.review.report.write_case_report`); errors go to the dock."""
        from cytoreview.review.report import write_case_report

        try:
            pages = write_case_report(self.project, path, crop_um=self.crop_spin.value(),
                                      unidentified_below=self.threshold_spin.value() or None)
        except CytoreviewError as exc:
            self.message.setText(str(exc))
            return []
        self.message.setText("report written: " + ", ".join(str(p) for p in pages))
        return pages


def make_cell_gallery(napari_viewer=None):
    """npe2 widget factory (napari passes the viewer)."""
    return CellGalleryWidget(napari_viewer)
