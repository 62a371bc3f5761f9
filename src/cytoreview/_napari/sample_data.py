"""npe2 sample-data contribution: the synthetic demo cases (File > Open Sample > cytoreview)."""

from __future__ import annotations


def _layers(path, name: str) -> list[tuple]:
    from cytoreview._napari.layers import bound_dask_cache, image_layer_data, show_scale_bar_in_current_viewer
    from cytoreview.io import open_image

    bound_dask_cache()
    show_scale_bar_in_current_viewer()
    return [image_layer_data(open_image(path), name=name)]


def warthin_fna() -> list[tuple]:
    """Warthin tumour, salivary-gland FNA: 8 CytoScan fields (synthetic)."""
    from cytoreview.samples import warthin_case

    return _layers(warthin_case(), "Warthin FNA (synthetic)")


def serous_effusion() -> list[tuple]:
    """Serous effusion: 8 CytoScan fields with rare atypical clusters (synthetic)."""
    from cytoreview.samples import effusion_case

    return _layers(effusion_case(), "Serous effusion (synthetic)")


def lymph_node() -> list[tuple]:
    """Lymph node whole-slide image with metastatic tumour (synthetic, generated on first use)."""
    from cytoreview.samples import lymph_node_slide

    return _layers(lymph_node_slide(), "Lymph node WSI (synthetic)")
