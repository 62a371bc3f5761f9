"""Synthetic serous (pleural / peritoneal) effusion: mesothelial cells, macrophages, lymphocytes, rare atypia.

Benign content on a thin proteinaceous background: mesothelial cells single and in small flat groups (15-25 um,
round central nuclei, dense two-tone cyanophilic cytoplasm, clear "windows" between neighbours), macrophages (foamy
vacuolated pale cytoplasm, eccentric bean-shaped nuclei) and lymphocytes. Only a few fields (field 2 and field 5 of
every 8) carry a three-dimensional cluster of atypical cells (large hyperchromatic irregular nuclei with prominent
nucleoli, high N:C ratio, overlapping), as metastatic adenocarcinoma would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .cells import PAP_STAINS, cell_body, lymphocyte, nucleus
from .fieldset import FIELD_COLS, FIELD_ROWS, RenderedField, field_labels, make_fields
from .fieldset import um_to_px as _um
from .render import Canvas, fine_noise, lowfreq_noise, place_circles, stamp_label, vignette

CLASSES = [
    {"id": 0, "name": "background", "color": "#ece8e0"},
    {"id": 1, "name": "mesothelial", "color": "#4fa3a5"},
    {"id": 2, "name": "macrophage", "color": "#c9a66b"},
    {"id": 3, "name": "lymphocyte", "color": "#3b3f9e"},
    {"id": 4, "name": "atypical", "color": "#d62728"},
]
BACKGROUND, MESOTHELIAL, MACROPHAGE, LYMPHOCYTE, ATYPICAL = 0, 1, 2, 3, 4

#: Per-field mixes, cycled over the fields: singles / groups of mesothelial cells, macrophages, lymphocytes,
#: atypical clusters (only two of every eight fields).
PROFILES = [
    dict(kind="mesothelial-rich", meso_single=18, meso_groups=5, macro=10, lymph=60, atypical=0),
    dict(kind="macrophage-rich", meso_single=8, meso_groups=2, macro=30, lymph=50, atypical=0),
    dict(kind="atypical cluster", meso_single=10, meso_groups=2, macro=12, lymph=60, atypical=1),
    dict(kind="lymphocyte-rich", meso_single=6, meso_groups=1, macro=8, lymph=350, atypical=0),
    dict(kind="mixed", meso_single=14, meso_groups=3, macro=18, lymph=120, atypical=0),
    dict(kind="atypical clusters", meso_single=8, meso_groups=2, macro=10, lymph=80, atypical=2),
    dict(kind="mesothelial groups", meso_single=10, meso_groups=7, macro=8, lymph=40, atypical=0),
    dict(kind="sparse", meso_single=8, meso_groups=1, macro=10, lymph=30, atypical=0),
]


def _halfplane_clip(half: int, offset_yx: np.ndarray, gap_px: float) -> np.ndarray:
    """Coverage of the half-plane nearer the patch centre than a neighbour at ``offset_yx``, minus ``gap_px / 2``."""
    ax = np.arange(-half, half + 1, dtype=np.float32)
    dist = float(np.hypot(*offset_yx)) or 1.0
    u = offset_yx / dist
    signed = dist / 2 - (ax[:, None] * u[0] + ax[None, :] * u[1])  # > 0 on our side of the bisector
    return np.clip((signed - gap_px / 2) / 1.2 + 0.5, 0.0, 1.0).astype(np.float32)


def _mesothelial(canvas: Canvas, rng, labelmap, cy: int, cx: int, r: float, cells: list,
                 neighbours: list | None = None) -> None:
    """One mesothelial cell; ``neighbours`` (list of (dy, dx)) clips it against adjacent cells, leaving windows."""
    aspect = rng.uniform(1.0, 1.25)
    clip = None
    if neighbours:
        gaps = rng.uniform(3, 7, len(neighbours))

        def clip(half):
            out = np.ones((2 * half + 1,) * 2, dtype=np.float32)
            for off, gap in zip(neighbours, gaps):
                out *= _halfplane_clip(half, np.asarray(off, dtype=np.float32), gap)
            return out
    dens = rng.uniform(0.9, 1.25)
    alpha = cell_body(canvas, rng, cy, cx, r, {"green": 0.48 * dens, "eosin": 0.16 * dens, "hema": 0.05},
                      aspect=aspect, irregularity=0.05, edge_px=3.0, texture="fine", texture_gain=0.25,
                      center_boost=0.9, clip=clip)
    stamp_label(labelmap, cy, cx, alpha, MESOTHELIAL)
    rn = float(np.clip(rng.normal(_um(4.0), _um(0.35)), _um(3.2), _um(4.8)))
    if rng.random() < 0.1:  # binucleate
        off = rn * 0.95
        for sgn in (-1, 1):
            nucleus(canvas, rng, int(cy + sgn * off * 0.3), int(cx + sgn * off), rn * 0.9,
                    density=rng.uniform(0.7, 0.85), aspect=1.1, chromatin_gain=0.4, rim=0.3,
                    nucleolus_px=rng.uniform(1.2, 2.0))
    else:
        nucleus(canvas, rng, cy, cx, rn, density=rng.uniform(0.7, 0.9), aspect=rng.uniform(1.0, 1.2),
                irregularity=0.03, chromatin_gain=0.4, rim=0.3, nucleolus_px=rng.uniform(1.2, 2.0))
    cells.append((cy, cx, MESOTHELIAL))


def _macrophage(canvas: Canvas, rng, labelmap, cy: int, cx: int, r: float, cells: list) -> None:
    """A foamy macrophage: pale vacuolated cytoplasm with ragged edges and an eccentric bean-shaped nucleus."""
    n_vac = int(rng.integers(25, 55))
    alpha = None
    # cytoplasm body first (to know the patch), then carve vacuoles out of it
    from .render import soft_blob

    body, half, depth = soft_blob(rng, r, aspect=rng.uniform(1.0, 1.35), irregularity=0.12, edge_px=2.5)
    ax = np.arange(-half, half + 1, dtype=np.float32)
    vy = rng.uniform(-0.85, 0.85, n_vac) * r
    vx = rng.uniform(-0.85, 0.85, n_vac) * r
    vr = rng.uniform(2.0, 6.0, n_vac).astype(np.float32)
    d = np.sqrt((ax[None, :, None] - vy[:, None, None]) ** 2 + (ax[None, None, :] - vx[:, None, None]) ** 2)
    vac = np.clip((vr[:, None, None] - d) / 1.0 + 0.5, 0.0, 1.0).max(axis=0)
    ring = np.clip(1.0 - np.abs(vr[:, None, None] - d) / 1.2, 0.0, 1.0).max(axis=0)
    foam = body * (1.0 - 0.85 * vac) + 0.5 * body * ring
    canvas.add("green", cy, cx, foam, amount=0.26, texture=canvas.grain_fine, texture_gain=0.3)
    canvas.add("eosin", cy, cx, foam, amount=0.18, texture=canvas.grain_fine, texture_gain=0.3)
    canvas.add("hema", cy, cx, foam, amount=0.06)
    alpha = body
    stamp_label(labelmap, cy, cx, alpha, MACROPHAGE)
    ang = rng.uniform(0, 2 * np.pi)
    ecc = r * rng.uniform(0.35, 0.5)
    rn = float(np.clip(rng.normal(_um(3.8), _um(0.4)), _um(3.0), _um(4.8)))
    nucleus(canvas, rng, int(cy + ecc * np.sin(ang)), int(cx + ecc * np.cos(ang)), rn,
            density=rng.uniform(0.65, 0.85), aspect=rng.uniform(1.3, 1.6), irregularity=0.04,
            chromatin_gain=0.35, rim=0.3, indent=rng.uniform(0.25, 0.45))
    cells.append((cy, cx, MACROPHAGE))


def _atypical_cluster(canvas: Canvas, rng, labelmap, cy: int, cx: int, n_cells: int, cells: list) -> float:
    """A three-dimensional cluster of malignant cells; returns the cluster radius in pixels."""
    r_cell = _um(rng.uniform(9.0, 11.0))
    radius = r_cell * np.sqrt(n_cells) * 0.85
    # denser packing (more overlap) in the middle: the cluster is a ball seen from above
    rho = radius * np.sqrt(rng.random(n_cells)) * 0.85
    th = rng.uniform(0, 2 * np.pi, n_cells)
    pos = np.column_stack([cy + rho * np.sin(th), cx + rho * np.cos(th)])
    order = np.argsort(-rho)  # periphery first, the middle on top
    for i in order:
        y, x = int(pos[i, 0]), int(pos[i, 1])
        rc = r_cell * rng.uniform(0.85, 1.15)
        alpha = cell_body(canvas, rng, y, x, rc, {"green": 0.32, "eosin": 0.22, "hema": 0.06},
                          aspect=rng.uniform(1, 1.4), irregularity=0.1, edge_px=2.0, texture="fine",
                          texture_gain=0.3, center_boost=0.3)
        stamp_label(labelmap, y, x, alpha, ATYPICAL)
        rn = rc * rng.uniform(0.55, 0.7)  # high N:C ratio
        nucleus(canvas, rng, y, x, rn, density=rng.uniform(0.85, 1.15), aspect=rng.uniform(1.0, 1.4),
                irregularity=0.14, chromatin_gain=0.4, coarse=True, rim=0.5, nucleolus_px=rng.uniform(2.5, 4.0))
    for i in order:
        y, x = int(pos[i, 0]), int(pos[i, 1])
        if 0 <= y < labelmap.shape[0] and 0 <= x < labelmap.shape[1]:
            cells.append((y, x, ATYPICAL))
    return radius + r_cell * 1.3


def render_effusion_field(rng: np.random.Generator, profile: dict) -> RenderedField:
    """Render one serous effusion field with its labelmap and cell list.

    Parameters
    ----------
    rng : numpy.random.Generator
    profile : dict
        One of :data:`PROFILES`.

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

    # thin proteinaceous background: a faint uneven pink wash with a little fine granularity
    prot = np.clip(0.6 + 0.5 * lowfreq_noise(rng, shape, _um(120)), 0.0, None)
    canvas.plane("eosin")[:] += 0.05 * prot * (1.0 + 0.15 * canvas.grain_coarse)
    canvas.plane("green")[:] += 0.015 * (1 + lowfreq_noise(rng, shape, _um(200)))

    placed: list = []
    inside = lambda y, x: 0 <= y < FIELD_ROWS and 0 <= x < FIELD_COLS  # noqa: E731

    for _ in range(profile["atypical"]):
        n_cells = int(rng.integers(18, 36))
        for _try in range(30):
            cy = int(rng.uniform(0.2, 0.8) * FIELD_ROWS)
            cx = int(rng.uniform(0.15, 0.85) * FIELD_COLS)
            est = _um(10) * np.sqrt(n_cells) * 0.62 + _um(14)
            if len(place_circles(rng, np.array([[cy, cx]]), np.array([est]), placed)):
                _atypical_cluster(canvas, rng, labelmap, cy, cx, n_cells, cells)
                break

    # mesothelial groups (2-6 cells in a flat row / cluster, windows between them)
    for _ in range(rng.poisson(profile["meso_groups"])):
        k = int(rng.integers(2, 7))
        r = np.clip(rng.normal(_um(9.5), _um(1.2), k), _um(7.5), _um(12.5))
        pos = [np.zeros(2)]
        for j in range(1, k):
            base = pos[int(rng.integers(0, j))]
            for _t in range(10):
                ang = rng.uniform(0, 2 * np.pi)
                cand = base + (r[j] + r[j - 1]) * 0.93 * np.array([np.sin(ang), np.cos(ang)])
                if all(np.hypot(*(cand - p)) > 0.9 * (r[j] + r[i]) for i, p in enumerate(pos)):
                    break
            pos.append(cand)
        pos = np.asarray(pos)
        centre = pos.mean(axis=0)
        extent = float(np.max(np.hypot(*(pos - centre).T)) + r.max() * 1.2)
        for _try in range(20):
            c = np.array([rng.uniform(0, FIELD_ROWS), rng.uniform(0, FIELD_COLS)])
            if len(place_circles(rng, c[None], np.array([extent]), placed, allow=inside)):
                for j in range(k):
                    p = c + pos[j] - centre
                    nb = [pos[i] - pos[j] for i in range(k) if i != j and np.hypot(*(pos[i] - pos[j])) < 2.2 * r.max()]
                    _mesothelial(canvas, rng, labelmap, int(p[0]), int(p[1]), float(r[j]), cells, nb)
                break

    def singles(n, r_um, r_sd_um, draw, gap):
        pts = np.column_stack([rng.uniform(0, FIELD_ROWS, n * 3), rng.uniform(0, FIELD_COLS, n * 3)])
        radii = np.clip(rng.normal(_um(r_um), _um(r_sd_um), len(pts)), _um(r_um - 2.5 * r_sd_um), _um(r_um + 2.5 * r_sd_um))
        keep = place_circles(rng, pts, radii * 1.25, placed, min_gap_px=gap, allow=inside, max_keep=n)
        for i in keep:
            draw(int(pts[i, 0]), int(pts[i, 1]), float(radii[i]))

    singles(rng.poisson(profile["meso_single"]), 9.5, 1.3,
            lambda y, x, r: _mesothelial(canvas, rng, labelmap, y, x, r, cells), 4.0)
    singles(rng.poisson(profile["macro"]), 11.0, 1.8,
            lambda y, x, r: _macrophage(canvas, rng, labelmap, y, x, r, cells), 2.0)

    def lymph(y, x, r):
        cyto = lymphocyte(canvas, rng, y, x, r / 1.2, darkness=rng.uniform(0.9, 1.1))
        stamp_label(labelmap, y, x, cyto, LYMPHOCYTE)
        cells.append((y, x, LYMPHOCYTE))

    singles(rng.poisson(profile["lymph"]), 3.25 * 1.2, 0.3, lymph, 0.0)

    illum = vignette(shape, 0.09) * (1.0 + 0.012 * lowfreq_noise(rng, shape, _um(200)))
    rgb = canvas.to_rgb(illumination=illum, white_rgb=(247, 245, 240), blur_sigma_px=0.8, noise_rng=rng,
                        noise_sd=0.5)
    cells = [c for c in cells
             if 0 <= c[0] < FIELD_ROWS and 0 <= c[1] < FIELD_COLS and labelmap[c[0], c[1]] == c[2]]
    return RenderedField(rgb=rgb, labelmap=labelmap, cells=cells, labels=field_labels(labelmap, cells, CLASSES))


def make_effusion_fields(out_dir, n_fields: int = 8, seed: int = 0) -> Path:
    """Render a synthetic serous effusion field set with ground truth into ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Destination folder (created; existing files of the same name are overwritten).
    n_fields : int
        Number of 1208 x 1928 fields; atypical clusters appear only in fields 2 and 5 (of every 8).
    seed : int
        Random seed; the same seed gives byte-identical files.

    Returns
    -------
    Path
        ``out_dir``.
    """
    from . import GENERATOR

    meta = {"case_id": f"synthetic-effusion-{seed}", "specimen": "serous effusion (pleural fluid), cytospin",
            "stain": "Papanicolaou", "generator": GENERATOR}
    return make_fields(out_dir, n_fields, seed, stream=0xEFF, profiles=PROFILES, render=render_effusion_field,
                       classes=CLASSES, meta=meta)
