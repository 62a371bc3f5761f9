"""Where the bundled model packs and sample data live, installed or in a source checkout."""

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def bundled_dir(name: str) -> Path:
    """Return the folder of the bundled ``plugins`` or ``sample_data``.

    A wheel carries them under ``cytoreview/_bundled/`` (hatchling force-include); a source checkout or an editable
    install has them at the repository's top level.
    """
    if name not in ("plugins", "sample_data"):
        raise ValueError(f"unknown bundled folder {name!r}")
    installed = _PACKAGE_DIR / "_bundled" / name
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent.parent / name


def cache_dir() -> Path:
    """Return (and create) the per-user cache folder for generated sample cases (``$CYTOREVIEW_CACHE`` overrides)."""
    import os

    root = os.environ.get("CYTOREVIEW_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cytoreview"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
