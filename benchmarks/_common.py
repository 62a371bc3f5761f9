"""Helpers shared by the ratio benchmarks: timing, result rows and the table printer."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass


@dataclass
class Ratio:
    """One benchmark figure: ours ÷ reference, both measured in the same run."""

    name: str
    ours: float
    reference: float
    unit: str
    goal: str  # e.g. ">= 2.0" or "<= 1.2"; "" when the issues set none (reported only)
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.reference if self.reference else float("nan")

    @property
    def meets_goal(self) -> bool | None:
        if not self.goal:
            return None
        op, value = self.goal.split()
        return self.ratio >= float(value) if op == ">=" else self.ratio <= float(value)

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "meets_goal": self.meets_goal}


def best_of(fn, repeats: int = 3) -> float:
    """Best wall time in seconds of ``repeats`` calls of ``fn``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def print_table(rows: list[Ratio]) -> None:
    """Print the ratios as an aligned table."""
    print(f"{'benchmark':58s} {'ours':>12s} {'reference':>12s} {'unit':>10s} {'ratio':>8s} {'goal':>8s}  ok")
    for r in rows:
        print(f"{r.name:58s} {r.ours:12.4g} {r.reference:12.4g} {r.unit:>10s} {r.ratio:8.3f} {r.goal:>8s}  "
              f"{ {True: 'yes', False: 'NO', None: '-'}[r.meets_goal] }{('  ' + r.note) if r.note else ''}")


def write_json(rows: list[Ratio], path) -> None:
    """Write the rows as JSON."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump([r.as_dict() for r in rows], fh, indent=2)


@dataclass
class Difference(Ratio):
    """A figure whose goal is a difference (ours − reference, same run), e.g. start-up cost over a bare interpreter.

    ``ratio`` (the column the table and the JSON show) is then ``ours - reference``, in ``unit``.
    """

    @property
    def ratio(self) -> float:
        return self.ours - self.reference
