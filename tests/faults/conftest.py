"""Shared helpers for the fault suite: subprocess environment, tiny slides and packs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
ROOT = HERE.parents[1]


def child_env() -> dict:
    """Environment for helper processes: this worktree's src and tests importable, one thread each."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


#: A helper process still running after this long is killed by a watchdog (its pipe then ends and the test fails).
WATCHDOG_S = 120


def spawn(script: str, *args) -> subprocess.Popen:
    """Start ``tests/faults/<script>`` with ``args`` (stdout/stderr piped, text), with a watchdog."""
    import signal
    import threading

    proc = subprocess.Popen([sys.executable, str(HERE / script), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())

    def overdue():
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)

    proc.watchdog = threading.Timer(WATCHDOG_S, overdue)
    proc.watchdog.daemon = True
    proc.watchdog.start()
    return proc


def read_until(proc: subprocess.Popen, predicate, limit: int = 100_000) -> list[str]:
    """Read stdout lines until ``predicate(line)`` is true; fail (with the child's stderr) if it exits first."""
    lines = []
    for _ in range(limit):
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=30)
            pytest.fail(f"helper exited (rc {proc.returncode}) before the expected output: {proc.stderr.read()}")
        lines.append(line.rstrip("\n"))
        if predicate(lines[-1]):
            return lines
    pytest.fail("expected output never came")


def kill9(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` (by its pid) and reap it."""
    import signal

    if getattr(proc, "watchdog", None) is not None:
        proc.watchdog.cancel()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
