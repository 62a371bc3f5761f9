"""A project holding cell items on real field images, as a cell pack's import leaves it (for the differential,
the report and the gallery tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from cytoreview.review import Project

#: Classes of the fixture's cell pack: (name, colour, hotkey).
CELL_CLASSES = [("neutrophil", "#e69f00", "1"), ("lymphocyte", "#0072b2", "2"), ("macrophage", "#009e73", "3"),
                ("mesothelial", "#cc79a7", "4"), ("atypical", "#d55e00", "5")]
#: How often the fixture's model calls each class (atypical is rare).
CLASS_WEIGHTS = [0.35, 0.35, 0.15, 0.13, 0.02]
FIELD_SHAPE = (300, 400)
MPP = 0.293
MODEL = "toy-cells@1.0.0"


def write_cell_fields(folder: Path, n_fields: int, cells: list[tuple[int, int, int, int]], seed: int = 0) -> Path:
    """Fields with a coloured disc per cell ``(field, y, x, class index)`` on pale glass (PNG, lossless)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:FIELD_SHAPE[0], 0:FIELD_SHAPE[1]]
    for f in range(n_fields):
        rgb = np.full((*FIELD_SHAPE, 3), 236, np.uint8) + rng.integers(0, 6, (*FIELD_SHAPE, 3), dtype=np.uint8)
        for cf, y, x, k in cells:
            if cf == f:
                colour = np.array([int(CELL_CLASSES[k][1][i:i + 2], 16) for i in (1, 3, 5)], np.uint8)
                rgb[(yy - y) ** 2 + (xx - x) ** 2 <= 36] = colour
        PILImage.fromarray(rgb).save(folder / f"field_{f:03d}.png")
    return folder


def make_cell_project(root: Path, n_cells: tuple[int, ...] = (60, 40), seed: int = 0) -> Project:
    """A project with one image per case (``case-1``, ``case-2``, ...), ``n_cells[i]`` cells in image ``i``.

    Every cell has a model call (class drawn with :data:`CLASS_WEIGHTS`, probability 0.3-1.0); the returned project
    is open (close it). Cells lie anywhere in the field, a few within 5 px of its edge.
    """
    rng = np.random.default_rng(seed)
    project = Project.open(root / "project", create=True)
    ids = [project.schema.add(name, color=color, hotkey=key, level="cell").id for name, color, key in CELL_CLASSES]
    for i, n in enumerate(n_cells):
        n_fields = 2
        cells = []
        for c in range(n):
            f = c % n_fields
            if c < 2:  # two cells at the border: their crops fall off the field
                y, x = (3, 5) if c == 0 else (FIELD_SHAPE[0] - 4, FIELD_SHAPE[1] - 2)
            else:
                y, x = int(rng.integers(10, FIELD_SHAPE[0] - 10)), int(rng.integers(10, FIELD_SHAPE[1] - 10))
            k = int(rng.choice(len(CELL_CLASSES), p=CLASS_WEIGHTS))
            cells.append((f, y, x, k))
        folder = write_cell_fields(root / f"case-{i + 1}", n_fields, cells, seed=seed + i)
        image_id = project.add_image(folder, kind="fields", mpp=MPP, case_id=f"case-{i + 1}",
                                     plane_shape=FIELD_SHAPE)
        items = []
        for f, y, x, k in cells:
            prob = float(rng.uniform(0.3, 1.0))
            items.append({"level": "cell", "field": f, "geometry": {"type": "point", "y": y, "x": x},
                          "model": MODEL, "model_class": ids[k], "model_prob": prob, "uncertainty": 1.0 - prob})
        project.add_items(image_id, items)
    return project
