"""Model packs: the card (schema + validation), discovery, and the onnxruntime session wrapper.

``load_pack(name_or_path)`` and ``find_packs()`` return :class:`ModelPack` objects; ``pack.session()`` opens an
onnxruntime session checked against the card. onnxruntime is imported only when a session is opened.
"""

from cytoreview.models.card import CARD_SCHEMA, load_card, validate_card
from cytoreview.models.pack import ModelPack, find_packs, load_pack

__all__ = ["CARD_SCHEMA", "ModelPack", "find_packs", "load_card", "load_pack", "validate_card"]
