"""Single cells and nuclei drawn on a :class:`~cytoreview.samples.render.Canvas` (Papanicolaou-like stains).

Sizes are in pixels; callers convert from micrometres with the field's mpp. Every function returns the coverage
patch (``alpha``) of the whole cell so the caller can write it into the ground-truth labelmap.

The canvas must carry two texture planes, ``canvas.grain_fine`` (granules ~1-2 px) and ``canvas.grain_coarse``
(chromatin clumps ~3-5 px); the part of the plane under a cell gives that cell its own texture.
"""

from __future__ import annotations

import numpy as np

from .render import Canvas, disc, soft_blob

#: Pap-like stains: RGB colour transmitted at unit concentration.
PAP_STAINS = {
    "hema": (92, 82, 150),  # haematoxylin: nuclei, blue-purple
    "eosin": (240, 150, 190),  # eosin: pink cytoplasm, nucleoli, protein
    "orange": (250, 192, 118),  # orange G: orangeophilic / oncocytic cytoplasm
    "green": (150, 200, 198),  # light green SF: cyanophilic cytoplasm
}


def nucleus(canvas: Canvas, rng: np.random.Generator, cy: int, cx: int, radius_px: float, *,
            density: float, aspect: float = 1.1, irregularity: float = 0.04, chromatin_gain: float = 0.35,
            coarse: bool = False, rim: float = 0.3, nucleolus_px: float = 0.0, edge_px: float = 1.3,
            indent: float = 0.0) -> np.ndarray:
    """Draw a nucleus: haematoxylin body with chromatin texture, a darker membrane rim, optional nucleolus.

    Parameters
    ----------
    density : float
        Haematoxylin concentration of the nuclear body (0.6 pale/vesicular ... 2.2 hyperchromatic).
    chromatin_gain : float
        Strength of the chromatin texture modulation.
    coarse : bool
        Clumped (coarse) instead of fine granular chromatin.
    rim : float
        Extra concentration along the nuclear membrane.
    nucleolus_px : float
        Nucleolus radius, pixels (0 = none).
    indent : float
        Depth of a notch on one side relative to the radius (0 = none; 0.3-0.5 = bean / kidney shape).

    Returns
    -------
    numpy.ndarray
        The nuclear coverage patch (centred on ``(cy, cx)``).
    """
    alpha, half, depth = soft_blob(rng, radius_px, aspect=aspect, irregularity=irregularity, edge_px=edge_px)
    if indent > 0:
        ang = rng.uniform(0, 2 * np.pi)
        notch_r = radius_px * 0.7
        d = radius_px * (1.0 - indent) + notch_r
        ax = np.arange(-half, half + 1, dtype=np.float32)
        dist = np.sqrt((ax[:, None] - d * np.sin(ang)) ** 2 + (ax[None, :] - d * np.cos(ang)) ** 2)
        outside_notch = np.clip((dist - notch_r) / edge_px + 0.5, 0.0, 1.0)
        alpha = alpha * outside_notch
        depth = np.minimum(depth, dist - notch_r)
    body = alpha * density
    if rim:
        body = body + rim * alpha * np.exp(-np.clip(depth, 0, None) / 1.6)
    texture = canvas.grain_coarse if coarse else canvas.grain_fine
    canvas.add("hema", cy, cx, body.astype(np.float32), texture=texture, texture_gain=chromatin_gain)
    if nucleolus_px > 0:
        off = rng.uniform(-0.35, 0.35, 2) * radius_px
        nuc, _ = disc(nucleolus_px, edge_px=1.0, offset=(off[0], off[1]))
        nhalf = nuc.shape[0] // 2
        pad = np.zeros_like(alpha)
        s = half - nhalf
        if s >= 0:
            pad[s : s + nuc.shape[0], s : s + nuc.shape[1]] = nuc
            canvas.add("eosin", cy, cx, pad, amount=1.4)
            canvas.add("hema", cy, cx, pad, amount=0.25 * density)
    return alpha


def lymphocyte(canvas: Canvas, rng: np.random.Generator, cy: int, cx: int, nucleus_radius_px: float,
               *, darkness: float = 1.0) -> np.ndarray:
    """Draw a mature lymphocyte: dark round nucleus, coarse chromatin, a thin rim of pale blue cytoplasm.

    Returns
    -------
    numpy.ndarray
        Coverage patch of the whole cell (nucleus plus cytoplasm rim).
    """
    rim_px = nucleus_radius_px * rng.uniform(0.15, 0.35)
    ang = rng.uniform(0, 2 * np.pi)
    off = 0.7 * rim_px * np.array([np.sin(ang), np.cos(ang)])  # scant cytoplasm, often a crescent on one side
    cyto, _ = disc(nucleus_radius_px + rim_px, edge_px=1.6, offset=(off[0], off[1]))
    canvas.add("green", cy, cx, cyto, amount=0.55, texture=canvas.grain_fine, texture_gain=0.2)
    canvas.add("hema", cy, cx, cyto, amount=0.22)
    nucleus(canvas, rng, cy, cx, nucleus_radius_px, density=rng.uniform(1.3, 1.65) * darkness,
            aspect=rng.uniform(1.0, 1.15), irregularity=0.03, chromatin_gain=0.4, coarse=True, rim=0.25,
            edge_px=1.1)
    return cyto


def cell_body(canvas: Canvas, rng: np.random.Generator, cy: int, cx: int, radius_px: float, stains: dict,
              *, aspect: float = 1.2, irregularity: float = 0.08, edge_px: float = 2.5, texture: str = "fine",
              texture_gain: float = 0.3, center_boost: float = 0.0, clip=None) -> np.ndarray:
    """Draw a cytoplasm body: an irregular soft blob filled with a mix of stains.

    Parameters
    ----------
    stains : dict of str to float
        Stain name -> concentration.
    center_boost : float
        Extra relative density towards the centre (dense endoplasm, pale ectoplasm).
    clip : callable, optional
        ``clip(half) -> (2 * half + 1, 2 * half + 1)`` coverage patch to multiply with (e.g. the cell's side of the
        borders with its neighbours in a group).

    Returns
    -------
    numpy.ndarray
        Coverage patch of the body.
    """
    alpha, half, depth = soft_blob(rng, radius_px, aspect=aspect, irregularity=irregularity, edge_px=edge_px)
    if clip is not None:
        alpha = alpha * clip(half)
    weight = alpha
    if center_boost:
        weight = alpha * (1.0 + center_boost * np.clip(depth / (0.6 * radius_px), 0, 1))
    tex = canvas.grain_coarse if texture == "coarse" else canvas.grain_fine
    for name, amount in stains.items():
        canvas.add(name, cy, cx, weight, amount=amount, texture=tex, texture_gain=texture_gain)
    return alpha


def red_cell(canvas: Canvas, rng: np.random.Generator, cy: int, cx: int, radius_px: float) -> np.ndarray:
    """Draw an erythrocyte: an orange-pink disc with a paler centre."""
    outer, _ = disc(radius_px, edge_px=1.2)
    half = outer.shape[0] // 2
    inner, ih = disc(radius_px * 0.45, edge_px=3.0)
    pad = np.zeros_like(outer)
    s = half - ih
    pad[s : s + inner.shape[0], s : s + inner.shape[1]] = inner
    body = np.clip(outer - 0.5 * pad, 0, None)
    canvas.add("eosin", cy, cx, body, amount=0.75)
    canvas.add("orange", cy, cx, body, amount=0.35)
    return outer
