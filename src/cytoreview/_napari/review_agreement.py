"""Agreement view of the review dock: Cohen's kappa (overall and per class) and the confusion matrix between two
readers (reviewers, or ``model``), and the adjudication queue of their disagreements."""

from __future__ import annotations

import math

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)


def _fmt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def _short(name: str, n: int = 10) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


class AgreementPanel(QWidget):
    """Pick two readers, see kappa + confusion matrix, start an adjudication of the items they disagree on."""

    adjudicate = Signal(list)  # item ids

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        row = QHBoxLayout()
        self.reader_a = QComboBox()
        self.reader_b = QComboBox()
        self.compute_btn = QPushButton("Compare")
        self.compute_btn.clicked.connect(self.compute)
        row.addWidget(self.reader_a)
        row.addWidget(QLabel("vs"))
        row.addWidget(self.reader_b)
        row.addWidget(self.compute_btn)
        lay.addLayout(row)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        lay.addWidget(self.summary)
        self.per_class = QTableWidget(0, 2)
        self.per_class.setHorizontalHeaderLabels(["class", "kappa"])
        self.per_class.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.per_class.verticalHeader().hide()
        self.per_class.setMaximumHeight(150)
        lay.addWidget(self.per_class)
        lay.addWidget(QLabel("confusion (rows: first reader, columns: second)"))
        self.confusion = QTableWidget(0, 0)
        self.confusion.setMinimumHeight(120)
        lay.addWidget(self.confusion, 1)
        self.adjudicate_btn = QPushButton("Adjudicate disagreements")
        self.adjudicate_btn.setToolTip("review the items the two readers labelled differently, most uncertain first")
        self.adjudicate_btn.clicked.connect(self._adjudicate)
        lay.addWidget(self.adjudicate_btn)
        self.report = None

    def set_session(self, session) -> None:
        """Refill the reader lists from the session's project."""
        self.session = session
        readers = [] if session is None else ["model", *session.project.reviewers()]
        if session is not None and session.reviewer not in readers:
            readers.append(session.reviewer)
        for combo, default in ((self.reader_a, readers[1] if len(readers) > 1 else "model"),
                               (self.reader_b, session.reviewer if session else "")):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(readers)
            combo.setCurrentText(current if current in readers else default)
            combo.blockSignals(False)
        if self.reader_a.currentText() == self.reader_b.currentText() and len(readers) > 1:
            self.reader_a.setCurrentText("model")

    def compute(self):
        """Compute and show the agreement of the two chosen readers; returns the report (or None)."""
        if self.session is None:
            return None
        a, b = self.reader_a.currentText(), self.reader_b.currentText()
        if not a or not b or a == b:
            self.summary.setText("choose two different readers")
            return None
        rep = self.session.project.agreement(a, b)
        self.report = rep
        self.summary.setText(
            f"{rep.n_items} items read by both ({rep.n_single} single-label) · kappa {_fmt(rep.kappa)} · "
            f"identical {_fmt(rep.percent_agreement * 100 if rep.percent_agreement == rep.percent_agreement else float('nan'))}%")
        self.per_class.setRowCount(len(rep.per_class))
        for k, (name, kappa) in enumerate(rep.per_class.items()):
            self.per_class.setItem(k, 0, QTableWidgetItem(name))
            self.per_class.setItem(k, 1, QTableWidgetItem(_fmt(kappa)))
        m = rep.confusion
        self.confusion.setRowCount(m.shape[0])
        self.confusion.setColumnCount(m.shape[1])
        self.confusion.setVerticalHeaderLabels([str(x) for x in m.index])
        self.confusion.setHorizontalHeaderLabels([_short(str(x)) for x in m.columns])
        for j, name in enumerate(m.columns):
            self.confusion.horizontalHeaderItem(j).setToolTip(str(name))
        top = max(1, int(m.to_numpy().max()) if m.size else 1)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                v = int(m.iat[i, j])
                cell = QTableWidgetItem(str(v))
                cell.setTextAlignment(Qt.AlignCenter)
                shade = int(255 - 150 * v / top)
                cell.setBackground(QColor(shade, shade, 255) if m.index[i] == m.columns[j]
                                   else QColor(255, shade, shade))
                cell.setForeground(QColor("black"))
                self.confusion.setItem(i, j, cell)
        self.confusion.resizeColumnsToContents()
        return rep

    def _adjudicate(self) -> None:
        if self.session is None:
            return
        a, b = self.reader_a.currentText(), self.reader_b.currentText()
        if not a or not b or a == b:
            return
        ids = self.session.project.adjudication_queue(a, b)
        self.summary.setText(f"{len(ids)} disagreement(s) to adjudicate")
        self.adjudicate.emit(ids)
