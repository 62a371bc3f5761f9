"""A plain summary of an opened image, shared by ``cytoreview info`` and the napari layer metadata."""

from __future__ import annotations

from cytoreview.io.image import Image


def describe(image: Image) -> dict:
    """Return a JSON-serialisable summary: kind, reader, levels (h, w), mpp and where it came from, fields, warnings."""
    return {
        "path": str(image.path),
        "kind": image.kind,
        "reader": image.reader,
        "levels": [list(image.level_shape(i)) for i in range(len(image.levels))],
        "level_mpp": [round(image.level_mpp(i), 6) for i in range(len(image.levels))],
        "mpp": image.mpp,
        "mpp_source": image.mpp_source,
        "n_fields": image.n_fields,
        "n_z": image.n_z,
        "field_names": list(image.field_names),
        "warnings": list(image.warnings),
        "metadata": {k: v for k, v in image.metadata.items() if isinstance(v, (str, int, float, bool, list))},
    }
