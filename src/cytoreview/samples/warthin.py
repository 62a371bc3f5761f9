"""Synthetic Warthin tumour salivary-gland FNA: oncocytic sheets, lymphocytes, dirty cystic background.

Each field mixes three ingredients in proportions that vary from field to field (sheet-rich, lymphocyte-rich,
dirty): cohesive flat honeycomb sheets of oncocytes (polygonal cells 20-26 um with granular pink-orange cytoplasm
and round central nuclei ~9 um with a small nucleolus), mature lymphocytes (dark round nuclei ~6.5 um, scant
cytoplasm) scattered and in clusters, and granular proteinaceous debris with mucoid strands on part of the glass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.segmentation import expand_labels
from skimage.filters import gaussian

from .cells import PAP_STAINS, lymphocyte, nucleus
from .fieldset import FIELD_COLS, FIELD_MPP, FIELD_ROWS, RenderedField, field_labels, make_fields
from .fieldset import um_to_px as _um
from .render import Canvas, fine_noise, lowfreq_noise, place_circles, soft_blob, stamp_label, vignette

CLASSES = [
    {"id": 0, "name": "clean background", "color": "#ece8e0"},
    {"id": 1, "name": "dirty background", "color": "#8e7d9c"},
    {"id": 2, "name": "oncocytic epithelium", "color": "#e8825a"},
    {"id": 3, "name": "lymphocytes", "color": "#3b3f9e"},
]
CLEAN, DIRTY, ONCOCYTIC, LYMPHOCYTE = 0, 1, 2, 3

#: Per-field mixes, cycled over the fields: (n_sheets, sheet radius um, scattered lymphocytes per mm^2,
#: lymphocyte clusters, dirty-background fraction).
PROFILES = [
    dict(kind="mixed", n_sheets=2, sheet_um=(55, 95), lymph_per_mm2=900, n_clusters=1, dirty=0.3),
    dict(kind="sheet-rich", n_sheets=4, sheet_um=(70, 130), lymph_per_mm2=150, n_clusters=0, dirty=0.0),
    dict(kind="lymphocyte-rich", n_sheets=1, sheet_um=(30, 50), lymph_per_mm2=1200, n_clusters=4, dirty=0.2),
    dict(kind="dirty", n_sheets=1, sheet_um=(35, 60), lymph_per_mm2=500, n_clusters=0, dirty=0.65),
    dict(kind="sheet-rich dirty", n_sheets=3, sheet_um=(60, 110), lymph_per_mm2=400, n_clusters=1, dirty=0.35),
    dict(kind="lymphocyte-rich", n_sheets=0, sheet_um=(40, 60), lymph_per_mm2=1500, n_clusters=6, dirty=0.0),
    dict(kind="mixed dirty", n_sheets=2, sheet_um=(45, 80), lymph_per_mm2=1500, n_clusters=2, dirty=0.45),
    dict(kind="sheet-rich", n_sheets=3, sheet_um=(80, 140), lymph_per_mm2=700, n_clusters=1, dirty=0.1),
]


def _dirty_background(canvas: Canvas, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Granular proteinaceous debris with mucoid strands over ``fraction`` of the field; returns its coverage."""
    shape = canvas.shape
    if fraction <= 0:
        return np.zeros(shape, dtype=np.float32)
    field = lowfreq_noise(rng, shape, _um(110))
    thr = float(np.quantile(field, 1.0 - fraction))
    cover = np.clip((field - thr) / 0.35, 0.0, 1.0).astype(np.float32)
    wash = cover * np.clip(1.0 + 0.8 * lowfreq_noise(rng, shape, _um(15)), 0.1, None)
    canvas.plane("eosin")[:] += 0.08 * wash
    canvas.plane("hema")[:] += 0.05 * wash
    # fine granular speckle: sparse granules of partly degenerated protein / cell debris
    grains = fine_noise(rng, shape, 0.8)
    speck = np.clip(grains - 1.3, 0.0, None) * cover
    canvas.plane("hema")[:] += 0.55 * speck
    canvas.plane("eosin")[:] += 0.35 * speck
    # coarser debris clumps
    clumps = np.clip(canvas.grain_coarse - 2.0, 0.0, None) * cover
    canvas.plane("hema")[:] += 0.45 * clumps
    canvas.plane("eosin")[:] += 0.25 * clumps
    # mucoid / cystic strands: near-zero contours of a smooth field, thin and wavy
    strand_field = lowfreq_noise(rng, shape, _um(45))
    strands = np.exp(-(strand_field / 0.16) ** 2) * np.clip(cover * 1.4, 0, 1)
    strands *= np.clip(lowfreq_noise(rng, shape, _um(60)) + 0.3, 0, 1)
    canvas.plane("hema")[:] += 0.09 * strands
    canvas.plane("green")[:] += 0.08 * strands
    canvas.plane("eosin")[:] += 0.04 * strands
    return cover


def _oncocytic_sheet(canvas: Canvas, rng: np.random.Generator, labelmap: np.ndarray, cy: int, cx: int,
                     radius_px: float, cells: list) -> None:
    """A cohesive flat honeycomb sheet of oncocytes centred on ``(cy, cx)``; appends nuclei to ``cells``."""
    alpha, half, depth = soft_blob(rng, radius_px, aspect=rng.uniform(1.0, 2.2), irregularity=0.22,
                                   n_harmonics=5, edge_px=3.0)
    spacing = rng.uniform(_um(20.5), _um(25.0))
    n = alpha.shape[0]
    rows = np.arange(0, n, spacing * np.sqrt(3) / 2)
    seeds = []
    for i, y in enumerate(rows):
        xs = np.arange((i % 2) * spacing / 2, n, spacing)
        for x in xs:
            seeds.append((y, x))
    seeds = np.asarray(seeds, dtype=np.float32)
    seeds += rng.uniform(-0.2, 0.2, seeds.shape).astype(np.float32) * spacing
    iy = np.clip(np.round(seeds[:, 0]).astype(int), 0, n - 1)
    ix = np.clip(np.round(seeds[:, 1]).astype(int), 0, n - 1)
    inside = depth[iy, ix] > 0.15 * spacing
    iy, ix = iy[inside], ix[inside]
    if iy.size == 0:
        return
    # Voronoi cells (the polygonal cell outlines) on a half-resolution grid, then back to full resolution; the
    # growth limit rounds off the outer cells, so the sheet edge follows the cell outlines (scalloped)
    m = (n + 1) // 2
    seed_img = np.zeros((m, m), dtype=np.int32)
    seed_img[iy // 2, ix // 2] = np.arange(1, iy.size + 1)
    lab = expand_labels(seed_img, distance=0.34 * spacing)
    lab = np.repeat(np.repeat(lab, 2, axis=0), 2, axis=1)[:n, :n]
    alpha = gaussian((lab > 0).astype(np.float32), sigma=1.2, preserve_range=True).astype(np.float32)
    # per-cell variation of cytoplasm density and hue, and the cell borders of the honeycomb
    dens = np.concatenate([[0.0], rng.uniform(0.8, 1.2, iy.size)]).astype(np.float32)
    hue = np.concatenate([[0.0], rng.uniform(-0.15, 0.15, iy.size)]).astype(np.float32)
    edge = np.zeros((n, n), dtype=np.float32)
    edge[:-1, :][lab[:-1, :] != lab[1:, :]] = 1.0
    edge[:, :-1][lab[:, :-1] != lab[:, 1:]] = 1.0
    borders = gaussian(edge, sigma=1.0, preserve_range=True) * 1.6
    # cytoplasm slightly paler at the edge of each cell, denser around the nucleus
    per = dens[lab] * alpha
    cyto = per * (1.0 + 1.1 * borders)
    canvas.add("eosin", cy, cx, cyto * (1.0 + hue[lab]), amount=0.3, texture=canvas.grain_fine, texture_gain=0.32)
    canvas.add("orange", cy, cx, cyto * (1.0 - hue[lab]), amount=0.36, texture=canvas.grain_fine, texture_gain=0.32)
    canvas.add("hema", cy, cx, alpha * borders, amount=0.1)
    stamp_label(labelmap, cy, cx, alpha, ONCOCYTIC)
    h, w = labelmap.shape
    for y, x in zip(iy, ix):
        dy, dx = rng.uniform(-0.1, 0.1, 2) * spacing
        ny = int(round(cy - half + y + dy))
        nx = int(round(cx - half + x + dx))
        r = float(np.clip(rng.normal(_um(4.4), _um(0.35)), _um(3.6), _um(5.2)))
        nucleus(canvas, rng, ny, nx, r, density=rng.uniform(0.5, 0.68), aspect=rng.uniform(1.0, 1.15),
                irregularity=0.03, chromatin_gain=0.45, rim=0.3, nucleolus_px=rng.uniform(1.6, 2.4))
        if 0 <= ny < h and 0 <= nx < w and labelmap[ny, nx] == ONCOCYTIC:
            cells.append((ny, nx, ONCOCYTIC))


def render_warthin_field(rng: np.random.Generator, profile: dict) -> RenderedField:
    """Render one Warthin tumour FNA field with its labelmap and cell list.

    Parameters
    ----------
    rng : numpy.random.Generator
    profile : dict
        One of :data:`PROFILES` (how many sheets, lymphocytes, how much dirty background).

    Returns
    -------
    RenderedField
    """
    shape = (FIELD_ROWS, FIELD_COLS)
    canvas = Canvas(shape, PAP_STAINS)
    canvas.grain_fine = fine_noise(rng, shape, 0.9)
    canvas.grain_coarse = fine_noise(rng, shape, 2.0)
    labelmap = np.zeros(shape, dtype=np.uint8)
    cells: list = []

    # faint uneven mounting medium on clean glass
    glass = lowfreq_noise(rng, shape, _um(150))
    canvas.plane("eosin")[:] += 0.012 * (1 + glass)
    canvas.plane("green")[:] += 0.01 * (1 - glass)

    dirty = _dirty_background(canvas, rng, profile["dirty"] * rng.uniform(0.8, 1.2))
    labelmap[dirty > 0.5] = DIRTY

    # oncocytic sheets, kept apart from each other
    sheets: list = []
    lo, hi = profile["sheet_um"]
    for _ in range(profile["n_sheets"]):
        for _try in range(20):
            r = _um(rng.uniform(lo, hi))
            cy = int(rng.uniform(-0.1, 1.1) * FIELD_ROWS)
            cx = int(rng.uniform(-0.05, 1.05) * FIELD_COLS)
            if all((cy - y) ** 2 + (cx - x) ** 2 > (1.25 * (r + rr)) ** 2 for y, x, rr in sheets):
                sheets.append((cy, cx, r))
                _oncocytic_sheet(canvas, rng, labelmap, cy, cx, r, cells)
                break
    sheet_mask = labelmap == ONCOCYTIC

    # lymphocytes: scattered plus dense clusters, never on a sheet
    area_mm2 = FIELD_ROWS * FIELD_COLS * (FIELD_MPP / 1000) ** 2
    n_scatter = rng.poisson(profile["lymph_per_mm2"] * area_mm2)
    pts = [np.column_stack([rng.uniform(0, FIELD_ROWS, n_scatter), rng.uniform(0, FIELD_COLS, n_scatter)])]
    for _ in range(profile["n_clusters"]):
        c = np.array([rng.uniform(0.1, 0.9) * FIELD_ROWS, rng.uniform(0.1, 0.9) * FIELD_COLS])
        spread = _um(rng.uniform(22, 45))
        k = int(rng.integers(150, 400))
        pts.append(c + rng.standard_normal((k, 2)) * spread * np.array([1.0, rng.uniform(0.7, 1.6)]))
    pts = np.concatenate(pts)
    pts = pts[rng.permutation(len(pts))]
    r_nuc = np.clip(rng.normal(_um(3.25), _um(0.25), len(pts)), _um(2.7), _um(3.8))
    margin = int(_um(5))

    def allow(y, x):
        yi, xi = int(y), int(x)
        if not (0 <= yi < FIELD_ROWS and 0 <= xi < FIELD_COLS):
            return False
        y0, y1 = max(yi - margin, 0), min(yi + margin + 1, FIELD_ROWS)
        x0, x1 = max(xi - margin, 0), min(xi + margin + 1, FIELD_COLS)
        return not sheet_mask[y0:y1, x0:x1].any()

    placed: list = []
    keep = place_circles(rng, pts, r_nuc * 1.2, placed, min_gap_px=-3.0, allow=allow)
    for i in keep:
        y, x = int(pts[i, 0]), int(pts[i, 1])
        cyto = lymphocyte(canvas, rng, y, x, float(r_nuc[i]), darkness=rng.uniform(0.9, 1.1))
        stamp_label(labelmap, y, x, cyto, LYMPHOCYTE)
    for i in keep:
        y, x = int(pts[i, 0]), int(pts[i, 1])
        if labelmap[y, x] == LYMPHOCYTE:
            cells.append((y, x, LYMPHOCYTE))

    illum = vignette(shape, 0.09) * (1.0 + 0.012 * lowfreq_noise(rng, shape, _um(200)))
    rgb = canvas.to_rgb(illumination=illum, white_rgb=(247, 245, 240), blur_sigma_px=0.8, noise_rng=rng,
                        noise_sd=0.5)
    return RenderedField(rgb=rgb, labelmap=labelmap, cells=cells, labels=field_labels(labelmap, cells, CLASSES))


def make_warthin_fields(out_dir, n_fields: int = 8, seed: int = 0) -> Path:
    """Render a synthetic Warthin tumour FNA field set with ground truth into ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Destination folder (created; existing files of the same name are overwritten).
    n_fields : int
        Number of 1208 x 1928 fields; the field mixes (sheet-rich, lymphocyte-rich, dirty) cycle over them.
    seed : int
        Random seed; the same seed gives byte-identical files.

    Returns
    -------
    Path
        ``out_dir``.
    """
    from . import GENERATOR

    meta = {"case_id": f"synthetic-warthin-{seed}", "specimen": "salivary gland FNA (parotid), Warthin tumour",
            "stain": "Papanicolaou", "generator": GENERATOR}
    return make_fields(out_dir, n_fields, seed, stream=0x3A7, profiles=PROFILES, render=render_warthin_field,
                       classes=CLASSES, meta=meta)
