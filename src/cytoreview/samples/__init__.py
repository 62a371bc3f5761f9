"""Synthetic cytology sample cases with exact ground truth (no patient data).

Two CytoScan-like field sets (Warthin tumour FNA, serous effusion; 1208 x 1928 RGB JPEG fields at 0.293 um/px) and
a pyramidal lymph node whole-slide image (0.5 um/px) with a tumour mask, all rendered deterministically from a seed.

Generators write a case wherever asked::

    make_warthin_fields(out_dir, n_fields=8, seed=0) -> Path
    make_effusion_fields(out_dir, n_fields=8, seed=0) -> Path
    make_lymph_node_slide(out_path, size_px=16384, seed=0) -> Path

and the case accessors return the bundled copy (``sample_data/``) or one generated once into the cache::

    warthin_case() / effusion_case() -> Path (folder);  lymph_node_slide() -> Path (.tif)

Ground truth reads back with ``read_ground_truth(case_dir)``; ``tile_fractions`` / ``tile_labels`` turn a per-pixel
labelmap into per-tile class fractions and one label per tile (for training tile classifiers).

``python -m cytoreview.samples`` regenerates the committed copies.
"""

from importlib import import_module

from .. import __version__

#: Written into every case's metadata; bump ``__version__`` when the rendering changes (it keys the cache).
GENERATOR = f"cytoreview.samples {__version__}"

_LAZY = {
    "make_warthin_fields": ".warthin",
    "make_effusion_fields": ".effusion",
    "make_lymph_node_slide": ".lymph_node",
    "warthin_case": ".cases",
    "effusion_case": ".cases",
    "lymph_node_slide": ".cases",
    "read_ground_truth": ".truth",
    "tile_fractions": ".truth",
    "tile_labels": ".truth",
}

__all__ = ["GENERATOR", *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cytoreview.samples' has no attribute {name!r}")
    return getattr(import_module(module, __name__), name)
