"""Field-level review of a CytoScan field set: a mosaic of field thumbnails, most suspicious first, and the
current field's labels as checkboxes (multi-label: "dirty background present", ...).

The order is the project's (:meth:`cytoreview.review.Project.field_suspicion`, the ``"suspicion"`` queue): the
share of a field's tiles predicted as the image's rarest class, then the field's uncertainty.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QSize, Qt, Signal
from qtpy.QtGui import QColor, QIcon, QImage, QPainter, QPen, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QGroupBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

THUMB_W = 150


def thumbnail(image_layer, field: int, width_px: int = THUMB_W) -> np.ndarray:
    """An RGB uint8 thumbnail of one field from the image layer's smallest pyramid level."""
    data = image_layer.data[-1] if image_layer.multiscale else image_layer.data
    _h, w = data.shape[-3], data.shape[-2]
    step = max(1, int(w // width_px))
    plane = np.asarray(data[field, ::step, ::step] if data.ndim == 4 else data[field, 0, ::step, ::step])
    return np.ascontiguousarray(plane[..., :3].astype(np.uint8))


def _icon(rgb: np.ndarray, reviewed: bool, share: float) -> QIcon:
    h, w = rgb.shape[:2]
    img = QImage(rgb.data, w, h, 3 * w, QImage.Format_RGB888).copy()
    pix = QPixmap.fromImage(img)
    p = QPainter(pix)
    if share > 0:
        p.fillRect(0, h - 6, int(w * min(1.0, share)), 6, QColor("#d55e00"))
    if reviewed:
        p.setPen(QPen(QColor("#009e73"), 5))
        p.drawRect(2, 2, w - 5, h - 5)
    p.end()
    return QIcon(pix)


class FieldGallery(QWidget):
    """Thumbnails of the fields, most suspicious first; clicking one emits :attr:`field_clicked`."""

    field_clicked = Signal(int)  # field index
    labels_edited = Signal(list)  # class ids of the current field

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.hint = QLabel("most suspicious first (orange bar: share of the rarest class; green frame: reviewed)")
        self.hint.setWordWrap(True)
        self.list = QListWidget(self)
        self.list.setViewMode(QListWidget.IconMode)
        self.list.setIconSize(QSize(THUMB_W, int(THUMB_W * 1208 / 1928)))
        self.list.setResizeMode(QListWidget.Adjust)
        self.list.setMovement(QListWidget.Static)
        self.list.setSpacing(4)
        self.list.setMinimumHeight(220)
        self.list.itemClicked.connect(lambda it: self.field_clicked.emit(int(it.data(Qt.UserRole))))
        self.box = QGroupBox("labels of the current field")
        self.box_lay = QGridLayout(self.box)
        self.checks: dict[int, QCheckBox] = {}
        lay.addWidget(self.hint)
        lay.addWidget(self.list, 1)
        lay.addWidget(self.box)
        self._thumbs: dict[int, np.ndarray] = {}

    def populate(self, session) -> None:
        """Fill the mosaic from the session's project and image layer."""
        self.list.clear()
        if session is None or session.kind != "fields":
            self.hint.setText("field review needs a CytoScan field set")
            return
        for d in session.project.field_suspicion(session.image_id):
            f = d.field
            if f not in self._thumbs:
                self._thumbs[f] = thumbnail(session.image_layer, f)
            text = f"field {f}\nrare {d.rare_share:.0%} · unc {d.uncertainty:.2f}"
            it = QListWidgetItem(_icon(self._thumbs[f], d.reviewed, d.rare_share), text)
            it.setData(Qt.UserRole, f)
            it.setToolTip(f"field {f}: suspicion {d.suspicion:.2f}{' (reviewed)' if d.reviewed else ''}")
            self.list.addItem(it)

    def set_classes(self, classes) -> None:
        """One checkbox per class (``LabelClass`` list)."""
        for cb in self.checks.values():
            cb.setParent(None)
        self.checks = {}
        for k, cls in enumerate(classes):
            cb = QCheckBox(f"{cls.name} present")
            cb.setStyleSheet(f"QCheckBox::indicator:checked {{ background-color: {cls.color}; }}")
            cb.toggled.connect(self._edited)
            self.box_lay.addWidget(cb, k // 2, k % 2)
            self.checks[cls.id] = cb

    def show_labels(self, label) -> None:
        """Tick the checkboxes of the current field's label set (without emitting)."""
        ids = set(label or [])
        for cid, cb in self.checks.items():
            cb.blockSignals(True)
            cb.setChecked(cid in ids)
            cb.blockSignals(False)

    def _edited(self) -> None:
        self.labels_edited.emit(sorted(cid for cid, cb in self.checks.items() if cb.isChecked()))
