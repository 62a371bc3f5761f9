"""Drawing primitives for synthetic cytology: stains, noise fields, soft shapes and a Beer-Lambert canvas.

Cells are drawn as *stain concentrations* on a :class:`Canvas` (one float plane per stain), and only at the end
turned into transmitted light with the Beer-Lambert law, ``I = I0 * exp(-sum_k c_k * od_k)``. Overlapping cells then
darken each other as real overlapping cells do, colours mix like dyes, and texture (chromatin, granules) is a
modulation of concentration rather than painted colour.

Everything here is deterministic given the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage, ImageFilter
from skimage.filters import gaussian


def stain_od(rgb_at_unit) -> np.ndarray:
    """Optical density vector of a stain from the colour it transmits at unit concentration.

    Parameters
    ----------
    rgb_at_unit : sequence of 3 numbers
        The RGB colour (0-255) seen through unit concentration of the stain on white light.

    Returns
    -------
    numpy.ndarray
        float32 (3,) optical density per channel.
    """
    rgb = np.clip(np.asarray(rgb_at_unit, dtype=np.float64), 1.0, 255.0)
    return (-np.log(rgb / 255.0)).astype(np.float32)


def lowfreq_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Smooth noise with features about ``scale_px`` pixels across, roughly zero mean and unit variance.

    A coarse Gaussian grid is upsampled bicubically (Pillow), so the cost does not grow with ``scale_px``.
    """
    h, w = shape
    gh = max(4, int(np.ceil(h / scale_px)) + 4)
    gw = max(4, int(np.ceil(w / scale_px)) + 4)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    oy = float(rng.uniform(1.0, gh - 2.0 - h / scale_px))
    ox = float(rng.uniform(1.0, gw - 2.0 - w / scale_px))
    box = (ox, oy, ox + w / scale_px, oy + h / scale_px)
    out = np.asarray(PILImage.fromarray(coarse, mode="F").resize((w, h), PILImage.BICUBIC, box=box))
    out = out - out.mean()
    std = float(out.std()) or 1.0
    return (out / std).astype(np.float32)


def fine_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Blurred white noise (grain about ``2 * sigma_px`` across), normalised to zero mean and unit variance.

    Grain up to ``sigma_px`` 1.25 is white noise under a Gaussian filter; coarser grain is a bicubically upsampled
    random grid (:func:`lowfreq_noise` at ``2 * sigma_px``), which costs the same at any scale.
    """
    if sigma_px > 1.25:
        return lowfreq_noise(rng, shape, 2.0 * sigma_px)
    raw = rng.random(shape, dtype=np.float32)
    raw -= 0.5
    out = gaussian(raw, sigma=sigma_px, preserve_range=True).astype(np.float32)
    out -= out.mean()
    std = float(out.std()) or 1.0
    return out / std


def vignette(shape: tuple[int, int], strength: float) -> np.ndarray:
    """Multiplicative illumination falloff: 1 in the centre, ``1 - strength`` in the corners."""
    h, w = shape
    yy = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / (h / 2)
    xx = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / (w / 2)
    r2 = (yy[:, None] ** 2 + xx[None, :] ** 2) / 2.0
    return (1.0 - strength * r2).astype(np.float32)


def radial_profile(rng: np.random.Generator, n_harmonics: int, irregularity: float) -> tuple[np.ndarray, np.ndarray]:
    """Random Fourier amplitudes and phases for an irregular closed outline ``r(theta)``."""
    k = np.arange(2, 2 + n_harmonics, dtype=np.float32)
    amp = (rng.standard_normal(n_harmonics) * irregularity / k).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, n_harmonics).astype(np.float32)
    return amp, phase


def soft_blob(
    rng: np.random.Generator,
    radius_px: float,
    *,
    aspect: float = 1.0,
    irregularity: float = 0.0,
    n_harmonics: int = 4,
    edge_px: float = 1.5,
    angle: float | None = None,
    pad_px: int = 2,
) -> tuple[np.ndarray, int, np.ndarray]:
    """An anti-aliased irregular ellipse in a square patch.

    Parameters
    ----------
    radius_px : float
        Mean radius of the outline, pixels.
    aspect : float
        Ratio of the long to the short axis (>= 1).
    irregularity : float
        Amplitude of the random radial harmonics (0 = a clean ellipse; 0.1-0.3 = lumpy).
    edge_px : float
        Width of the soft edge, pixels.

    Returns
    -------
    alpha : numpy.ndarray
        float32 (n, n) coverage in [0, 1], the blob centred in the patch.
    half : int
        Half-size of the patch; the centre pixel is ``(half, half)``.
    depth : numpy.ndarray
        float32 (n, n) approximate distance inside the outline, pixels (negative outside).
    """
    half = int(np.ceil(radius_px * max(aspect, 1.0) ** 0.5 * (1 + 2.5 * abs(irregularity)) + edge_px * 2 + pad_px))
    step = 4 if half > 96 else 1
    if step > 1:  # evaluate the outline on a coarse grid and interpolate the (smooth) distance
        half = (half // step + 1) * step
    ax = np.arange(-half, half + 1, step, dtype=np.float32)
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    theta0 = rng.uniform(0, np.pi) if angle is None else angle
    c, s = np.cos(theta0), np.sin(theta0)
    u = xx * c + yy * s
    v = -xx * s + yy * c
    sa = np.sqrt(aspect)
    u = u / sa
    v = v * sa
    rho = np.sqrt(u * u + v * v)
    r_edge = np.full_like(rho, radius_px)
    if irregularity > 0:
        theta = np.arctan2(v, u)
        amp, phase = radial_profile(rng, n_harmonics, irregularity)
        pert = np.zeros_like(rho)
        for i in range(n_harmonics):
            pert += amp[i] * np.cos((i + 2) * theta + phase[i])
        r_edge = radius_px * (1.0 + pert)
    depth = (r_edge - rho).astype(np.float32)
    if step > 1:
        n = 2 * half + 1
        x0 = 0.5 - 0.5 / step
        box = (x0, x0, x0 + n / step, x0 + n / step)
        depth = np.asarray(PILImage.fromarray(depth, mode="F").resize((n, n), PILImage.BILINEAR, box=box))
    alpha = np.clip(depth / edge_px + 0.5, 0.0, 1.0)
    return alpha.astype(np.float32), half, depth


def disc(radius_px: float, edge_px: float = 1.0, offset=(0.0, 0.0)) -> tuple[np.ndarray, int]:
    """An anti-aliased disc in a square patch (centre ``(half, half)`` plus ``offset``)."""
    half = int(np.ceil(radius_px + edge_px + 2 + max(abs(offset[0]), abs(offset[1]))))
    ax = np.arange(-half, half + 1, dtype=np.float32)
    rho = np.sqrt((ax[:, None] - offset[0]) ** 2 + (ax[None, :] - offset[1]) ** 2)
    return np.clip((radius_px - rho) / edge_px + 0.5, 0.0, 1.0).astype(np.float32), half


class Canvas:
    """Stain concentration planes that become an RGB image by Beer-Lambert absorption.

    Parameters
    ----------
    shape : (int, int)
        Height and width, pixels.
    stains : dict of str to sequence
        Stain name -> RGB colour at unit concentration (see :func:`stain_od`).
    """

    def __init__(self, shape: tuple[int, int], stains: dict[str, tuple[float, float, float]]):
        self.shape = (int(shape[0]), int(shape[1]))
        self.names = list(stains)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.od = np.stack([stain_od(stains[n]) for n in self.names])  # (n_stains, 3)
        self.conc = np.zeros((len(self.names), *self.shape), dtype=np.float32)

    def plane(self, stain: str) -> np.ndarray:
        """The concentration plane of one stain (a view; add to it in place)."""
        return self.conc[self.index[stain]]

    def clip_box(self, cy: int, cx: int, half: int):
        """Canvas and patch slices for a ``(2 * half + 1)``-square patch centred on ``(cy, cx)``, or None if outside."""
        h, w = self.shape
        y0, x0 = cy - half, cx - half
        y1, x1 = cy + half + 1, cx + half + 1
        cy0, cx0, cy1, cx1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
        if cy0 >= cy1 or cx0 >= cx1:
            return None
        return (slice(cy0, cy1), slice(cx0, cx1)), (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))

    def add(self, stain: str, cy: int, cx: int, patch: np.ndarray, amount: float = 1.0,
            texture: np.ndarray | None = None, texture_gain: float = 0.0) -> None:
        """Add ``amount * patch`` (optionally modulated by ``1 + texture_gain * texture``) centred on ``(cy, cx)``.

        ``texture`` is a full-canvas plane (e.g. :func:`fine_noise`); the part under the patch is used, so
        neighbouring cells get different grain for free.
        """
        half = patch.shape[0] // 2
        boxes = self.clip_box(cy, cx, half)
        if boxes is None:
            return
        dst, src = boxes
        val = patch[src] * amount
        if texture is not None and texture_gain:
            val = val * np.clip(1.0 + texture_gain * texture[dst], 0.0, None)
        self.conc[self.index[stain]][dst] += val

    def to_rgb(self, illumination: np.ndarray | float = 1.0, white_rgb=(246, 245, 241),
               blur_sigma_px: float = 0.0, noise_rng: np.random.Generator | None = None,
               noise_sd: float = 0.0) -> np.ndarray:
        """Render transmitted light: ``white * illumination * exp(-conc @ od)`` plus optional sensor noise.

        Returns
        -------
        numpy.ndarray
            uint8 (h, w, 3).
        """
        conc = self.conc
        white = np.asarray(white_rgb, dtype=np.float32)
        h, w = self.shape
        out = np.empty((h, w, 3), dtype=np.uint8)
        acc = np.empty((h, w), dtype=np.float32)
        tmp = np.empty((h, w), dtype=np.float32)
        for c in range(3):  # channel by channel, in place: a few passes over 2-D float32 planes
            np.multiply(conc[0], -self.od[0, c], out=acc)
            for k in range(1, conc.shape[0]):
                np.multiply(conc[k], -self.od[k, c], out=tmp)
                acc += tmp
            np.exp(acc, out=acc)
            if np.ndim(illumination) == 2:
                acc *= illumination
            elif np.ndim(illumination) == 3:
                acc *= illumination[..., c]
            else:
                acc *= np.float32(illumination)
            acc *= white[c]
            acc += 0.5
            np.clip(acc, 0, 255, out=acc)
            out[..., c] = acc
        if blur_sigma_px > 0:  # optics: a slight defocus blur (3 x 3 binomial, sigma ~0.7 px, when small)
            kernel = (ImageFilter.Kernel((3, 3), [1, 2, 1, 2, 4, 2, 1, 2, 1], scale=16) if blur_sigma_px <= 0.9
                      else ImageFilter.GaussianBlur(blur_sigma_px))
            out = np.asarray(PILImage.fromarray(out, mode="RGB").filter(kernel))
        if noise_rng is not None and noise_sd > 0:
            noise = noise_rng.standard_normal(out.shape[:2], dtype=np.float32) * noise_sd
            out = np.clip(out + noise[..., None], 0, 255).astype(np.uint8)
        return out


def place_circles(rng: np.random.Generator, candidates: np.ndarray, radii: np.ndarray, placed: list,
                  min_gap_px: float = 0.0, allow=None, max_keep: int | None = None) -> np.ndarray:
    """Greedy non-overlapping placement: keep candidates whose circle clears every circle kept so far.

    Parameters
    ----------
    candidates : (n, 2) array of (y, x)
    radii : (n,) array
    placed : list of (y, x, r)
        Circles already on the canvas; kept circles are appended to it.
    allow : callable (y, x) -> bool, optional
        Extra test (e.g. "not on an epithelial sheet").
    max_keep : int, optional
        Stop after this many circles.

    Returns
    -------
    numpy.ndarray
        Indices of the kept candidates.
    """
    keep = []
    arr = np.asarray(placed, dtype=np.float32).reshape(-1, 3)
    py, px, pr = arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy()
    pending_y, pending_x, pending_r = [], [], []
    for i, (y, x) in enumerate(candidates):
        if max_keep is not None and len(keep) >= max_keep:
            break
        r = radii[i]
        if allow is not None and not allow(y, x):
            continue
        if py.size and np.any((py - y) ** 2 + (px - x) ** 2 < (pr + r + min_gap_px) ** 2):
            continue
        if pending_y:
            qy = np.asarray(pending_y)
            qx = np.asarray(pending_x)
            qr = np.asarray(pending_r)
            if np.any((qy - y) ** 2 + (qx - x) ** 2 < (qr + r + min_gap_px) ** 2):
                continue
        pending_y.append(float(y))
        pending_x.append(float(x))
        pending_r.append(float(r))
        if len(pending_y) >= 256:
            py = np.concatenate([py, np.asarray(pending_y, np.float32)])
            px = np.concatenate([px, np.asarray(pending_x, np.float32)])
            pr = np.concatenate([pr, np.asarray(pending_r, np.float32)])
            pending_y, pending_x, pending_r = [], [], []
        keep.append(i)
        placed.append((float(y), float(x), float(r)))
    return np.asarray(keep, dtype=np.int64)


def stamp_label(labelmap: np.ndarray, cy: int, cx: int, alpha: np.ndarray, class_id: int,
                threshold: float = 0.5) -> None:
    """Write ``class_id`` into ``labelmap`` where the centred patch ``alpha`` exceeds ``threshold``."""
    half = alpha.shape[0] // 2
    h, w = labelmap.shape
    y0, x0 = cy - half, cx - half
    cy0, cx0 = max(y0, 0), max(x0, 0)
    cy1, cx1 = min(y0 + alpha.shape[0], h), min(x0 + alpha.shape[1], w)
    if cy0 >= cy1 or cx0 >= cx1:
        return
    sub = alpha[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] > threshold
    labelmap[cy0:cy1, cx0:cx1][sub] = class_id
