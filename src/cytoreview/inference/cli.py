"""The progress bar of long command-line runs (``cytoreview predict``; the command itself is in
:mod:`cytoreview.workflows.cli`, because it also fills projects)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """A plain-text progress bar on stderr (redrawn in place on a terminal, a line per 10% otherwise)."""

    def __init__(self, label: str, stream=None, width: int = 30, unit: str = "tiles"):
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        frac = 1.0 if total == 0 else done / total
        decile = int(frac * 10)
        if not self.tty and decile == self._last_decile and done != total:
            return
        self._last_decile = decile
        filled = int(round(frac * self.width))
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        line = f"{self.label} [{'#' * filled}{'-' * (self.width - filled)}] {done}/{total} {self.unit} {rate:.0f}/s"
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
