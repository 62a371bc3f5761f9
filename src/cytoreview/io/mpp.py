"""Find the physical pixel size (micrometres per pixel) a slide file declares."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only annotations here: a field set of JPEGs never needs tifffile
    import tifffile

#: Plausible range for a microscope image, micrometres per pixel; values outside are treated as missing.
MPP_RANGE = (0.02, 100.0)

#: ``Image.mpp_source`` values (first word) that mean the pixel size was assumed, not read from the image or given.
GUESSED_MPP_SOURCES = ("assumed", "default")


def mpp_is_guessed(mpp_source: str) -> bool:
    """True when a reader's ``mpp_source`` says the pixel size was assumed rather than read or given."""
    return str(mpp_source).split(" ")[0] in GUESSED_MPP_SOURCES


_UNIT_TO_UM = {"m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "μm": 1.0, "nm": 1e-3, "Å": 1e-4}


def _plausible(mpp: float | None) -> float | None:
    if mpp is None or not (MPP_RANGE[0] <= mpp <= MPP_RANGE[1]):
        return None
    return float(mpp)


def svs_mpp(description: str) -> float | None:
    """Read ``MPP = 0.499`` from an Aperio ImageDescription."""
    match = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", description or "")
    return _plausible(float(match.group(1))) if match else None


def ome_mpp(ome_xml: str) -> float | None:
    """Read PhysicalSizeX (converted to µm) of the first OME Pixels element."""
    match = re.search(r"<Pixels\b[^>]*>", ome_xml or "")
    if not match:
        return None
    element = match.group(0)
    size = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', element)
    if not size:
        return None
    unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', element)
    factor = _UNIT_TO_UM.get(unit.group(1) if unit else "µm")
    return _plausible(float(size.group(1)) * factor) if factor else None


def resolution_mpp(page: tifffile.TiffPage) -> float | None:
    """Read XResolution/ResolutionUnit tags (pixels per inch or centimetre) as µm per pixel."""
    tags = page.tags
    if "XResolution" not in tags:
        return None
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    unit_um = {2: 25400.0, 3: 10000.0}.get(unit)
    num, den = tags["XResolution"].value
    if unit_um is None or not num or not den:
        return None
    return _plausible(unit_um / (num / den))


def tiff_mpp(tif: tifffile.TiffFile) -> tuple[float | None, str]:
    """Return ``(mpp, source)`` for a TIFF-family slide; ``(None, "missing")`` when nothing plausible is declared."""
    page = tif.pages.first
    if tif.is_svs:
        mpp = svs_mpp(page.description)
        if mpp:
            return mpp, "svs-description"
    if tif.is_ome:
        mpp = ome_mpp(tif.ome_metadata or "")
        if mpp:
            return mpp, "ome-xml"
    mpp = resolution_mpp(page)
    if mpp:
        return mpp, "tiff-resolution"
    return None, "missing"
