"""The review dock's Measurements tab: :func:`cytoreview.review.measure.measure` of the session's image, as a table."""

from __future__ import annotations

import math

from qtpy.QtWidgets import QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

#: Columns shown first (the per-class ones follow).
SHOWN = ["field", "region", "area_mm2", "n_cells", "cells_per_mm2", "n_tiles", "reviewed_fraction"]


class MeasurePanel(QWidget):
    """One row per field and per region of the image: area (mm²), cells and tiles per class, density, reviewed."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        lay.addWidget(self.table)
        self.columns: list[str] = []

    def update_from(self, session) -> None:
        """Re-read the measurements of ``session``'s image (the rule lives in the core)."""
        from cytoreview.review.measure import measure

        if session is None:
            self.table.setRowCount(0)
            return
        frame = measure(session.project, [session.image_id])
        import pandas as pd

        frame = frame.assign(region=["" if pd.isna(r) else f"#{int(r)} {c}"
                                     for r, c in zip(frame["region_id"].tolist(), frame["region_class"].tolist())])
        extra = [c for c in frame.columns if c.startswith(("cells:", "tiles:"))]
        self.columns = SHOWN + extra
        self.table.setColumnCount(len(self.columns))
        self.table.setHorizontalHeaderLabels(self.columns)
        self.table.setRowCount(len(frame))
        for i, row in enumerate(frame.to_dict("records")):
            for j, col in enumerate(self.columns):
                value = row.get(col)
                if isinstance(value, float):
                    text = "–" if math.isnan(value) else (f"{value:.5g}" if col == "area_mm2" else f"{value:.2f}")
                else:
                    text = "" if value is None else str(value)
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()

    def cell(self, row: int, column: str) -> str:
        """The text shown at ``row`` in ``column``."""
        item = self.table.item(row, self.columns.index(column))
        return item.text() if item is not None else ""
