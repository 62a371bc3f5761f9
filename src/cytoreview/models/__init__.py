"""Model packs: the card (schema + validation), discovery, and the onnxruntime session wrapper.

``load_pack(name_or_path)`` and ``find_packs()`` return :class:`ModelPack` objects; ``pack.session()`` opens an
onnxruntime session checked against the card. onnxruntime is imported only when a session is opened.
"""

from cytoreview._lazy import lazy_exports

#: Public name -> the module defining it; imported on first use, so one command imports only what it uses.
_EXPORTS = {
    "CARD_SCHEMA": "cytoreview.models.card",
    "ModelPack": "cytoreview.models.pack",
    "find_packs": "cytoreview.models.pack",
    "load_card": "cytoreview.models.card",
    "load_pack": "cytoreview.models.pack",
    "validate_card": "cytoreview.models.card",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
