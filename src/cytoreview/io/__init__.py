"""Lazy image readers: CytoScan field sets and whole-slide images, as one :class:`Image` type."""

from cytoreview.io.image import CYTOSCAN_MPP, Image
from cytoreview.io.open import can_open, open_image

__all__ = ["CYTOSCAN_MPP", "Image", "can_open", "open_image"]
