"""The one rule for when two class names mean the same class.

Pack cards, project label schemas, overlay colour maps and training label sets all match class names with
:func:`name_key`, so "Oncocytic epithelium" in a pack, "oncocytic  epithelium" typed by a reviewer and
"ONCOCYTIC EPITHELIUM" in an imported CSV are one class everywhere.
"""

from __future__ import annotations

import unicodedata


def name_key(name: object) -> str:
    """Matching key of a class name: NFC, white space runs collapsed to one space and trimmed, case-folded.

    >>> name_key("  Oncocytic\\tEpithelium ") == name_key("oncocytic epithelium")
    True
    """
    return " ".join(unicodedata.normalize("NFC", str(name)).split()).casefold()
