"""Safe folder and file names from class names and case ids, and de-identified image keys.

Class names are chosen by people ("Tumour / atypical", "n.o.s.", "核", "🦠") and end up as folder names of an
ImageFolder export, which must work on Linux, macOS and Windows file systems and in zip files. The rules:

* Unicode letters, digits and combining marks are kept (NFC-normalised), so "épithélium" and "核" stay readable.
* Symbols such as emoji become their Unicode name in lower case ("🦠" -> "microbe"), so they stay distinct.
* Path separators, control and format characters, and characters Windows forbids become ``_``; runs of ``_``
  collapse; leading/trailing dots, spaces and underscores are stripped, so "." / ".." / ".hidden" cannot appear.
* Windows reserved device names (CON, NUL, COM1, ...) get a trailing ``_``; names are cut to 80 UTF-8 bytes.
* Names that collide after this (also when they differ only in case, as on macOS/Windows) are disambiguated
  deterministically with a short hash of the original name: a name that was already safe keeps its form, the others
  get ``~<6 hex>``. The same set of names always maps to the same folders.

De-identification: outputs name an image by :func:`image_key` (case id and project image id) instead of its path.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from typing import Iterable

_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
_SAFE_PUNCT = set("-_.,+()[]&'@=~ ")
_MAX_BYTES = 80
_FALLBACK = "unnamed"


def _char_to_safe(ch: str) -> str:
    cat = unicodedata.category(ch)
    if ch in ("\u200d", "\ufe0e", "\ufe0f"):  # ZWJ and variation selectors: part of an emoji, no meaning alone
        return ""
    if cat[0] in ("L", "N") or cat in ("Mn", "Mc", "Me"):
        return ch
    if ch in _SAFE_PUNCT:
        return ch
    if cat == "So":  # emoji and pictographs: spell them out so they stay distinct
        name = unicodedata.name(ch, "")
        if name:
            return "_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") + "_"
    return "_"


@functools.lru_cache(maxsize=65536)
def safe_name(name: str) -> str:
    """Return a file-system-safe form of ``name`` (see the module docstring for the rules).

    Parameters
    ----------
    name : str
        A class name, case id or any label text.

    Returns
    -------
    str
        A non-empty name with no path separators, control characters, leading dots or reserved device names. Two
        different inputs can map to the same output; use :func:`safe_names` to get distinct names for a set.
    """
    text = unicodedata.normalize("NFC", str(name))
    out = "".join(_char_to_safe(ch) for ch in text)
    out = re.sub(r"\s+", " ", out)
    out = re.sub(r"_+", "_", out)
    out = re.sub(r"\.{2,}", ".", out)
    out = out.strip(" ._")
    if out.split(".")[0].strip().lower() in _RESERVED:
        out = out + "_"
    encoded = out.encode("utf-8")
    if len(encoded) > _MAX_BYTES:
        out = encoded[:_MAX_BYTES].decode("utf-8", errors="ignore").rstrip(" ._")
    return out or _FALLBACK


def _short_hash(name: str) -> str:
    return hashlib.sha1(unicodedata.normalize("NFC", name).encode("utf-8")).hexdigest()[:6]


def safe_names(names: Iterable[str]) -> dict[str, str]:
    """Map each distinct name to a safe name, distinct from the others even on case-insensitive file systems.

    Parameters
    ----------
    names : iterable of str
        Class names (duplicates are fine).

    Returns
    -------
    dict
        ``{original: safe}``; the values are pairwise distinct after case folding. The mapping depends only on the
        set of names, not on their order.
    """
    unique = sorted(set(str(n) for n in names))
    base = {n: safe_name(n) for n in unique}
    groups: dict[str, list[str]] = {}
    for n in unique:
        groups.setdefault(base[n].casefold(), []).append(n)
    result: dict[str, str] = {}
    for members in groups.values():
        if len(members) == 1:
            result[members[0]] = base[members[0]]
            continue
        keeper = next((n for n in members if n == base[n]), None)
        for n in members:
            result[n] = base[n] if n == keeper else f"{base[n]}~{_short_hash(n)}"
    taken: set[str] = set()
    for n in unique:  # a hashed name could in theory equal another safe name; resolve deterministically
        candidate = result[n]
        while candidate.casefold() in taken:
            candidate = f"{candidate}~{_short_hash(candidate)}"
        result[n] = candidate
        taken.add(candidate.casefold())
    return result


def image_key(image_id: int, case_id: str | None) -> str:
    """Return the de-identified name of an image in outputs: ``<case>_img<id>`` or ``img<id>``.

    Parameters
    ----------
    image_id : int
        The project's image id (an integer with no meaning outside the project).
    case_id : str or None
        The case id the user gave, made safe with :func:`safe_name`.
    """
    if case_id is None or (isinstance(case_id, float) and case_id != case_id) or str(case_id) == "":
        return f"img{int(image_id)}"
    return f"{safe_name(str(case_id))}_img{int(image_id)}"


def plane_key(image_id: int, case_id: str | None, field: int, kind: str) -> str:
    """Return the de-identified name of one plane: the image key, plus ``_f<field>`` for field sets."""
    key = image_key(image_id, case_id)
    return f"{key}_f{int(field):03d}" if kind == "fields" else key
