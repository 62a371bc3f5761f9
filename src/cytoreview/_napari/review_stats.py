"""The live panel of the review dock: a per-class bar chart (plain Qt painting), corrections vs accepted, pace."""

from __future__ import annotations

import math

from qtpy.QtCore import QRectF, QSize, Qt
from qtpy.QtGui import QColor, QFont, QPainter
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget


class BarChart(QWidget):
    """Horizontal bars, one per class: colour swatch, name, count (drawn in :meth:`paintEvent`)."""

    ROW_PX = 18

    def __init__(self, parent=None):
        super().__init__(parent)
        self.bars: list[tuple[str, str, int]] = []  # (name, "#rrggbb", count)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setMinimumHeight(self.ROW_PX)

    def set_bars(self, bars: list[tuple[str, str, int]]) -> None:
        """Replace the bars and repaint."""
        self.bars = list(bars)
        self.setFixedHeight(max(1, len(self.bars)) * self.ROW_PX + 4)
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(260, max(1, len(self.bars)) * self.ROW_PX + 4)

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        w = self.width()
        label_w = min(150, int(w * 0.45))
        count_w = 52
        bar_w = max(10, w - label_w - count_w - 8)
        top = max((c for _, _, c in self.bars), default=0) or 1
        font = QFont(p.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() - 1))
        p.setFont(font)
        fg = self.palette().color(self.foregroundRole())
        for k, (name, color, count) in enumerate(self.bars):
            y = 2 + k * self.ROW_PX
            p.setPen(fg)
            p.drawText(QRectF(0, y, label_w - 4, self.ROW_PX), Qt.AlignRight | Qt.AlignVCenter,
                       p.fontMetrics().elidedText(name, Qt.ElideRight, label_w - 6))
            length = bar_w * count / top
            p.setPen(Qt.NoPen)
            p.setBrush(QColor(color))
            p.drawRoundedRect(QRectF(label_w, y + 3, max(length, 1.5), self.ROW_PX - 6), 2, 2)
            p.setPen(fg)
            p.drawText(QRectF(label_w + length + 4, y, count_w, self.ROW_PX), Qt.AlignLeft | Qt.AlignVCenter,
                       f"{count:,}")
        p.end()


class StatsPanel(QWidget):
    """Class counts (current labels of this image's items at the session's level), and the reviewer's pace."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.title = QLabel("labels per class")
        self.chart = BarChart(self)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        lay.addWidget(self.title)
        lay.addWidget(self.chart)
        lay.addWidget(self.summary)
        lay.addStretch(1)

    def update_from(self, session, full: bool = False) -> None:
        """Show the session's running counts and the reviewer's totals on this image (``full`` is kept for callers;
        the totals are always read)."""
        if session is None:
            self.chart.set_bars([])
            self.summary.setText("")
            return
        schema = session.project.schema
        counts = session.counts
        bars = [(cls.name, cls.color, max(0, counts.get(cls.id, 0)))
                for cls in list(schema.active_classes) + [schema.get(-1)]]
        self.chart.set_bars(bars)
        self.title.setText(f"{session.level} labels per class ({session.n_total:,} items, "
                           f"{session.n_reviewed:,} reviewed)")
        # the reviewer's totals: review-status's own numbers, read again on every (debounced) refresh so they
        # never go stale beside the session's line
        stats = session.project.progress().per_reviewer
        mine = stats[(stats["reviewer"] == session.reviewer) & (stats["image_id"] == session.image_id)]
        if len(mine) and int(mine.iloc[0]["reviewed"]):
            row = mine.iloc[0]
            pace = row["items_per_min"]
            pace_txt = "–" if math.isnan(pace) else f"{pace:.1f}"
            self._totals = (f"{session.reviewer} on this image: {int(row['reviewed'])} reviewed = "
                            f"{int(row['accepted'])} accepted + {int(row['corrected'])} corrected + "
                            f"{int(row['unsure'])} unsure · {pace_txt} items/min")
        else:
            self._totals = f"{session.reviewer}: nothing reviewed on this image yet"
        self.summary.setText(
            f"{self._totals}\nthis session: {session.n_changed} items = {session.n_accepted} accepted + "
            f"{session.n_corrected} corrected + {session.n_unsure} unsure · {session.items_per_min():.1f} "
            "actions/min")
