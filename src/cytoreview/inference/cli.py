"""The progress bars of long command-line runs (``cytoreview predict``, ``export``, ``train``, ``compare``; the
commands themselves live with their parts).

On a terminal a bar is redrawn in place; written to a pipe or a file each update is its own line (a line per 10 %),
so stages never run together as ``parquet: 0/1parquet: 1/1``."""

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


class StageProgress:
    """``progress(stage, done, total)`` for runs with several stages: one :class:`ProgressBar` per stage, each
    closed when it reaches its total (so the next stage starts on its own line)."""

    def __init__(self, stream=None, unit: str = "", quiet: bool = False):
        self.stream, self.unit, self.quiet = stream, unit, quiet
        self._bars: dict[str, ProgressBar] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = ProgressBar(str(stage), stream=self.stream, unit=self.unit)
        bar(done, total)
        if done >= total:
            bar.close()
            del self._bars[stage]
