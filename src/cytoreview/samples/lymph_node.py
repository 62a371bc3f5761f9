"""Synthetic H&E whole-slide image of a lymph node with metastatic carcinoma, and its tumour mask.

The slide is mostly white glass with one or two irregular node sections. Node tissue is dense lymphoid tissue
(small dark round nuclei on a pale pink stroma, a fibrous capsule, paler germinal centres with larger nuclei); one
to three irregular areas inside are metastatic carcinoma (cohesive nests of larger cells: pale vesicular nuclei with
nucleoli, pink cytoplasm).

Geometry is defined once on a coarse grid (smooth signed distances to the section and tumour outlines), nuclei are
placed globally (jittered grids, deterministic from the seed), and the level-0 image is rendered tile by tile, only
where a tile touches tissue; glass tiles are one flat colour that JPEG stores in a few hundred bytes. The lower
pyramid levels are block means of level 0, written as SubIFDs of one tiled JPEG TIFF with resolution tags in
pixels per centimetre.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image as PILImage
from skimage.filters import gaussian

from ..errors import CytoreviewError
from .render import lowfreq_noise, radial_profile, soft_blob, stain_od

#: Level-0 pixel size, micrometres.
WSI_MPP = 0.5
TILE_PX = 256
#: Downsample of the ground-truth mask relative to level 0.
MASK_DOWNSAMPLE = 32
#: Downsample of the coarse geometry grid relative to level 0.
GRID_DOWNSAMPLE = 16
JPEG_QUALITY = 80
GLASS_RGB = (244, 243, 240)

#: H&E stains: RGB colour transmitted at unit concentration.
HE_STAINS = {"hema": (128, 118, 192), "eosin": (240, 128, 178)}

MASK_CLASSES = [{"id": 0, "name": "background"}, {"id": 1, "name": "node tissue"}, {"id": 2, "name": "tumour"}]


# --------------------------------------------------------------------------------------------------- geometry


def _blob_depth(yy, xx, cy, cx, radius, aspect, angle, amp, phase):
    """Approximate signed distance (px, > 0 inside) to an irregular ellipse, evaluated at points ``(yy, xx)``."""
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / np.sqrt(aspect)
    v = (-(xx - cx) * s + (yy - cy) * c) * np.sqrt(aspect)
    rho = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    pert = np.zeros_like(rho)
    for k in range(len(amp)):
        pert += amp[k] * np.cos((k + 2) * theta + phase[k])
    return radius * (1.0 + pert) - rho


class _Geometry:
    """Coarse-grid fields of one slide: tissue depth, tumour depth, follicle weight, tumour nest field."""

    def __init__(self, size_px: int, rng: np.random.Generator):
        self.size_px = size_px
        g = GRID_DOWNSAMPLE
        n = size_px // g
        self.n = n
        coords = (np.arange(n, dtype=np.float32) + 0.5) * g
        yy, xx = np.meshgrid(coords, coords, indexing="ij")
        S = float(size_px)
        n_sections = 1 if rng.random() < 0.4 else 2
        if n_sections == 1:
            centres = [(0.5 * S, 0.5 * S)]
            radii = [S * rng.uniform(0.2, 0.24)]
        else:
            centres = [(S * rng.uniform(0.42, 0.58), S * 0.28), (S * rng.uniform(0.42, 0.58), S * 0.72)]
            radii = [S * rng.uniform(0.13, 0.16), S * rng.uniform(0.11, 0.14)]
        tissue = np.full((n, n), -1e9, dtype=np.float32)
        sections = []
        for (cy, cx), r in zip(centres, radii):
            aspect = rng.uniform(1.3, 1.8)
            angle = rng.uniform(0, np.pi)
            amp, phase = radial_profile(rng, 5, 0.12)
            d = _blob_depth(yy, xx, cy, cx, r / np.sqrt(aspect) * 1.1, aspect, angle, amp, phase)
            tissue = np.maximum(tissue, d)
            sections.append((cy, cx, r))
        # ragged, torn edges
        tissue += lowfreq_noise(rng, (n, n), 48) * (0.012 * S) + lowfreq_noise(rng, (n, n), 8) * (0.0012 * S)
        self.tissue = tissue.astype(np.float32)

        # tumour deposits inside the sections
        tumour = np.full((n, n), -1e9, dtype=np.float32)
        n_tumours = int(rng.integers(1, 4))
        for _ in range(n_tumours):
            for _try in range(50):
                i = int(rng.integers(0, n)), int(rng.integers(0, n))
                r = S * rng.uniform(0.035, 0.08)
                if self.tissue[i] > 0.6 * r:
                    amp, phase = radial_profile(rng, 6, 0.3)
                    d = _blob_depth(yy, xx, coords[i[0]], coords[i[1]], r, rng.uniform(1.0, 1.8),
                                    rng.uniform(0, np.pi), amp, phase)
                    tumour = np.maximum(tumour, d)
                    break
        tumour += lowfreq_noise(rng, (n, n), 6) * (0.006 * S)
        self.tumour = np.minimum(tumour, self.tissue).astype(np.float32)

        # germinal centres in the cortex (near the capsule), outside tumour
        follicle = np.zeros((n, n), dtype=np.float32)
        n_foll = int(rng.integers(8, 18)) * n_sections
        for _ in range(n_foll):
            for _try in range(30):
                i = int(rng.integers(0, n)), int(rng.integers(0, n))
                r = S * rng.uniform(0.012, 0.022)
                if 1.5 * r < self.tissue[i] < 0.07 * S + 2 * r and self.tumour[i] < -r:
                    d = np.sqrt((yy - coords[i[0]]) ** 2 + (xx - coords[i[1]]) ** 2)
                    follicle = np.maximum(follicle, np.clip((r - d) / (0.35 * r), 0, 1))
                    break
        self.follicle = follicle
        # cohesive nests within tumour: positive = carcinoma cells, negative = thin stroma between nests
        self.nest = (lowfreq_noise(rng, (n, n), 3.5) + 0.9).astype(np.float32)
        self.eosin_var = lowfreq_noise(rng, (n, n), 20).astype(np.float32)

    def sample(self, field: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Bilinear value of a grid field at level-0 positions ``(ys, xs)`` (any matching shapes)."""
        g = GRID_DOWNSAMPLE
        fy = np.clip(ys / g - 0.5, 0, self.n - 1.001)
        fx = np.clip(xs / g - 0.5, 0, self.n - 1.001)
        y0 = fy.astype(np.int32)
        x0 = fx.astype(np.int32)
        wy = (fy - y0).astype(np.float32)
        wx = (fx - x0).astype(np.float32)
        a = field[y0, x0]
        b = field[y0, x0 + 1]
        c = field[y0 + 1, x0]
        d = field[y0 + 1, x0 + 1]
        return (a * (1 - wy) * (1 - wx) + b * (1 - wy) * wx + c * wy * (1 - wx) + d * wy * wx).astype(np.float32)

    def tile_fields(self, y0: int, x0: int, h: int, w: int):
        """Tissue depth, tumour depth, follicle weight, nest field and eosin variation over one tile.

        The grid cells around the tile are upsampled bilinearly by Pillow (same interpolation as :meth:`sample`,
        grid values at level-0 positions ``(i + 0.5) * GRID_DOWNSAMPLE``).
        """
        g = GRID_DOWNSAMPLE
        i0 = int(np.floor(y0 / g)) - 2
        j0 = int(np.floor(x0 / g)) - 2
        rows = np.clip(np.arange(i0, int(np.ceil((y0 + h) / g)) + 2), 0, self.n - 1)  # clamp at the slide edge
        cols = np.clip(np.arange(j0, int(np.ceil((x0 + w) / g)) + 2), 0, self.n - 1)
        box = (x0 / g - j0, y0 / g - i0, (x0 + w) / g - j0, (y0 + h) / g - i0)
        out = []
        for f in (self.tissue, self.tumour, self.follicle, self.nest, self.eosin_var):
            sub = np.ascontiguousarray(f[np.ix_(rows, cols)], dtype=np.float32)
            out.append(np.asarray(PILImage.fromarray(sub, mode="F").resize((w, h), PILImage.BILINEAR, box=box)))
        return tuple(out)

    def mask(self, downsample: int) -> np.ndarray:
        """Ground truth at ``downsample``: 0 glass, 1 node tissue, 2 tumour (sampled at the pixel centres)."""
        m = self.size_px // downsample
        c = (np.arange(m, dtype=np.float32) + 0.5) * downsample
        ys, xs = np.meshgrid(c, c, indexing="ij")
        tissue = self.sample(self.tissue, ys, xs) > 0
        tumour = self.sample(self.tumour, ys, xs) > 0
        out = np.zeros((m, m), dtype=np.uint8)
        out[tissue] = 1
        out[tissue & tumour] = 2
        return out


# --------------------------------------------------------------------------------------------------- nuclei


def _stamp_bank(rng, n, radius_px, density, chromatin_gain, grain_sigma, irregularity, nucleolus_px, aspect,
                rim=0.3):
    """``n`` pre-rendered nuclei: list of (hema patch, eosin patch), each centred in a square patch."""
    bank = []
    for _ in range(n):
        r = rng.uniform(*radius_px)
        alpha, half, depth = soft_blob(rng, r, aspect=rng.uniform(*aspect), irregularity=irregularity, edge_px=1.1)
        tex = gaussian(rng.random(alpha.shape, dtype=np.float32) - 0.5, sigma=grain_sigma, preserve_range=True)
        tex = tex / (tex.std() or 1.0)
        dens = rng.uniform(*density)
        hema = alpha * dens * np.clip(1 + chromatin_gain * tex, 0, None) + rim * alpha * np.exp(-np.clip(depth, 0, None) / 1.5)
        eos = None
        if nucleolus_px:
            eos = np.zeros_like(alpha)
            ax = np.arange(-half, half + 1, dtype=np.float32)
            oy, ox = rng.uniform(-0.3, 0.3, 2) * r
            d = np.sqrt((ax[:, None] - oy) ** 2 + (ax[None, :] - ox) ** 2)
            nuc = np.clip((rng.uniform(*nucleolus_px) - d) + 0.5, 0, 1)
            eos += 1.3 * nuc
            hema += 0.5 * nuc
        bank.append((hema.astype(np.float32), None if eos is None else eos.astype(np.float32)))
    return bank


class _Nuclei:
    """All nuclei of the slide, bucketed by the level-0 tile their centre falls in."""

    LYMPH, BLAST, TUMOUR = 0, 1, 2

    def __init__(self, geom: _Geometry, rng: np.random.Generator):
        S = geom.size_px
        um = 1.0 / WSI_MPP
        ys_all, xs_all, kinds = [], [], []
        # lymphoid nuclei on a jittered grid (~8.5 um apart)
        sp = 8.0 * um
        g = np.arange(sp / 2, S, sp, dtype=np.float32)
        yy, xx = np.meshgrid(g, g, indexing="ij")
        yy = (yy + rng.uniform(-0.38, 0.38, yy.shape).astype(np.float32) * sp).ravel()
        xx = (xx + rng.uniform(-0.38, 0.38, xx.shape).astype(np.float32) * sp).ravel()
        t = geom.sample(geom.tissue, yy, xx)
        tu = geom.sample(geom.tumour, yy, xx)
        fo = geom.sample(geom.follicle, yy, xx)
        ne = geom.sample(geom.nest, yy, xx)
        u = rng.random(yy.shape)
        capsule = t < 30 * um
        keep = (t > 2) & (tu <= 0) & (u < np.where(capsule, 0.25, 0.93 - 0.4 * fo))
        keep |= (t > 2) & (tu > 0) & (ne <= 0) & (u < 0.35)  # lymphocytes in the stroma between nests
        blast = rng.random(yy.shape) < 0.6 * fo
        ys_all.append(yy[keep])
        xs_all.append(xx[keep])
        kinds.append(np.where(blast[keep], self.BLAST, self.LYMPH).astype(np.int8))
        # carcinoma nuclei in cohesive nests (~13 um apart)
        sp = 14.5 * um
        g = np.arange(sp / 2, S, sp, dtype=np.float32)
        yy, xx = np.meshgrid(g, g, indexing="ij")
        yy = (yy + rng.uniform(-0.25, 0.25, yy.shape).astype(np.float32) * sp).ravel()
        xx = (xx + rng.uniform(-0.25, 0.25, xx.shape).astype(np.float32) * sp).ravel()
        tu = geom.sample(geom.tumour, yy, xx)
        ne = geom.sample(geom.nest, yy, xx)
        keep = (tu > 2) & (ne > 0.15) & (rng.random(yy.shape) < 0.92)
        ys_all.append(yy[keep])
        xs_all.append(xx[keep])
        kinds.append(np.full(int(keep.sum()), self.TUMOUR, dtype=np.int8))

        self.y = np.concatenate(ys_all).astype(np.int32)
        self.x = np.concatenate(xs_all).astype(np.int32)
        self.kind = np.concatenate(kinds)
        self.variant = rng.integers(0, 48, self.y.size).astype(np.int16)
        self.n_tiles_x = -(-S // TILE_PX)
        tile = (self.y // TILE_PX) * self.n_tiles_x + (self.x // TILE_PX)
        order = np.argsort(tile, kind="stable")
        self.y, self.x, self.kind, self.variant = self.y[order], self.x[order], self.kind[order], self.variant[order]
        self.tile = tile[order]
        self.banks = {
            self.LYMPH: _stamp_bank(rng, 48, (3.2 * um, 3.7 * um), (1.25, 1.6), 0.45, 1.2, 0.04, None, (1.0, 1.15)),
            self.BLAST: _stamp_bank(rng, 48, (4.5 * um, 5.5 * um), (0.75, 0.95), 0.4, 1.4, 0.08, (1.0, 1.6),
                                    (1.0, 1.3)),
            self.TUMOUR: _stamp_bank(rng, 48, (5.0 * um, 6.5 * um), (0.3, 0.45), 0.5, 1.6, 0.12, (2.0, 3.2),
                                     (1.0, 1.5), rim=0.7),
        }

    def around_tile(self, ty: int, tx: int) -> np.ndarray:
        """Indices of the nuclei whose centre lies in tile ``(ty, tx)`` or one of its eight neighbours."""
        out = []
        for dy in (-1, 0, 1):
            row = ty + dy
            if row < 0 or row >= self.n_tiles_x:
                continue
            lo = row * self.n_tiles_x + max(tx - 1, 0)
            hi = row * self.n_tiles_x + min(tx + 1, self.n_tiles_x - 1)
            a, b = np.searchsorted(self.tile, [lo, hi + 1])
            out.append(np.arange(a, b))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------------------------------- rendering


def _hash_noise(y0: int, x0: int, h: int, w: int, seed: int) -> np.ndarray:
    """White noise in [-0.5, 0.5) that is a pure function of the global pixel position (seamless across tiles)."""
    ys = np.arange(y0, y0 + h, dtype=np.int64).astype(np.uint32)[:, None]
    xs = np.arange(x0, x0 + w, dtype=np.int64).astype(np.uint32)[None, :]
    v = (ys * np.uint32(0x9E3779B1)) ^ (xs * np.uint32(0x85EBCA77)) ^ np.uint32((seed * 0x27D4EB2F) & 0xFFFFFFFF)
    v ^= v >> np.uint32(15)
    v *= np.uint32(0x2C1B3C6D)
    v ^= v >> np.uint32(12)
    v *= np.uint32(0x297A2D39)
    v ^= v >> np.uint32(15)
    return (v.astype(np.float32) * np.float32(1.0 / 4294967296.0) - np.float32(0.5))



class _TileRenderer:
    def __init__(self, geom: _Geometry, nuclei: _Nuclei, seed: int):
        self.geom = geom
        self.nuclei = nuclei
        self.seed = seed
        self.od = np.stack([stain_od(HE_STAINS["hema"]), stain_od(HE_STAINS["eosin"])])
        self.glass = np.empty((TILE_PX, TILE_PX, 3), dtype=np.uint8)
        self.glass[:] = GLASS_RGB

    def touches_tissue(self, ty: int, tx: int) -> bool:
        g = GRID_DOWNSAMPLE
        k = TILE_PX // g
        sub = self.geom.tissue[max(ty * k - 1, 0) : (ty + 1) * k + 1, max(tx * k - 1, 0) : (tx + 1) * k + 1]
        return bool(sub.size) and float(sub.max()) > -2 * g

    def render(self, ty: int, tx: int) -> np.ndarray:
        """Level-0 tile ``(ty, tx)`` as uint8 (256, 256, 3)."""
        if not self.touches_tissue(ty, tx):
            return self.glass
        T = TILE_PX
        M = 4  # margin rendered around the tile so the texture blur has no tile-edge artefacts
        P = T + 2 * M
        y0, x0 = ty * T - M, tx * T - M
        tissue, tumour, follicle, nest, eos_var = self.geom.tile_fields(y0, x0, P, P)
        t_alpha = np.clip(tissue / 2.0 + 0.5, 0, 1)
        tu_alpha = np.clip(tumour / 3.0 + 0.5, 0, 1) * t_alpha
        nest_a = np.clip((nest - 0.15) / 0.1 + 0.5, 0, 1) * tu_alpha
        um = 1.0 / WSI_MPP
        capsule = np.clip(1.0 - tissue / (30 * um), 0, 1) * t_alpha
        fib = gaussian(_hash_noise(y0, x0, P, P, self.seed), sigma=1.3, preserve_range=True)
        fib *= np.float32(1.0 / 0.085)  # ~unit variance for sigma 1.3
        eosin = t_alpha * (0.3 + 0.06 * eos_var) * (1 + 0.35 * fib)
        eosin += 0.55 * capsule * (1 + 0.5 * fib) + 0.38 * nest_a * (1 + 0.25 * fib)
        eosin -= 0.1 * follicle * t_alpha
        hema = t_alpha * (0.06 + 0.03 * fib) + 0.03 * nest_a
        conc_h = np.ascontiguousarray(hema, dtype=np.float32)
        conc_e = np.ascontiguousarray(eosin, dtype=np.float32)
        n = self.nuclei
        idx = n.around_tile(ty, tx)
        reach = 24  # larger than any stamp's half-size
        ly, lx = n.y[idx] - y0, n.x[idx] - x0
        idx = idx[(ly > -reach) & (ly < P + reach) & (lx > -reach) & (lx < P + reach)]
        banks = n.banks
        for k, v, yy, xx in zip(n.kind[idx].tolist(), n.variant[idx].tolist(), (n.y[idx] - y0).tolist(),
                                (n.x[idx] - x0).tolist()):
            ph, pe = banks[k][v]
            half = ph.shape[0] // 2
            a0, b0 = yy - half, xx - half
            a1, b1 = a0 + ph.shape[0], b0 + ph.shape[1]
            if a1 <= 0 or b1 <= 0 or a0 >= P or b0 >= P:
                continue
            ca0, cb0, ca1, cb1 = max(a0, 0), max(b0, 0), min(a1, P), min(b1, P)
            sy, sx = slice(ca0 - a0, ca1 - a0), slice(cb0 - b0, cb1 - b0)
            conc_h[ca0:ca1, cb0:cb1] += ph[sy, sx]
            if pe is not None:
                conc_e[ca0:ca1, cb0:cb1] += pe[sy, sx]
        conc_h *= t_alpha  # nothing outside the section edge
        conc_e *= t_alpha
        od = conc_h[..., None] * self.od[0] + conc_e[..., None] * self.od[1]
        rgb = np.exp(-od) * np.asarray(GLASS_RGB, dtype=np.float32)
        out = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(out[M : M + T, M : M + T])


def _pyramid_downsamples(size_px: int) -> list[int]:
    out = [1]
    while size_px // (out[-1] * 4) >= TILE_PX and len(out) < 4:
        out.append(out[-1] * 4)
    return out


def make_lymph_node_slide(out_path, size_px: int = 16384, seed: int = 0) -> Path:
    """Render a synthetic H&E lymph node WSI with metastatic carcinoma, plus its mask and metadata.

    Parameters
    ----------
    out_path : str or Path
        The ``.tif`` to write. ``<stem>_tumor_mask.tif`` and ``<stem>.json`` are written beside it.
    size_px : int
        Side of the square level-0 image, pixels (a multiple of 1024, at least 1024); 0.5 um/px.
    seed : int
        Random seed; the same seed gives identical pixels.

    Returns
    -------
    Path
        ``out_path``.

    Notes
    -----
    Pyramid: tiled (256 px) JPEG, levels at downsample 1, 4, 16, 64 (as far as the image is at least 256 px), the
    reduced levels stored as SubIFDs of level 0; resolution tags in pixels per centimetre (20000 at level 0).
    The mask is uint8 at downsample 32: 0 glass, 1 node tissue, 2 tumour.
    """
    from . import GENERATOR

    size_px = int(size_px)
    if size_px < 1024 or size_px % 1024:
        raise CytoreviewError(f"lymph node slide size_px must be a multiple of 1024 and >= 1024, got {size_px}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([int(seed), 0x1D])
    geom = _Geometry(size_px, rng)
    nuclei = _Nuclei(geom, rng)
    renderer = _TileRenderer(geom, nuclei, int(seed))
    downs = _pyramid_downsamples(size_px)
    n_t = size_px // TILE_PX
    level1 = np.empty((size_px // 4, size_px // 4, 3), dtype=np.uint8) if len(downs) > 1 else None
    q = TILE_PX // 4

    def tiles():
        for ty in range(n_t):
            for tx in range(n_t):
                tile = renderer.render(ty, tx)
                if level1 is not None:
                    small = PILImage.fromarray(tile, mode="RGB").reduce(4)  # 4 x 4 box mean
                    level1[ty * q : (ty + 1) * q, tx * q : (tx + 1) * q] = np.asarray(small)
                yield tile

    px_per_cm = 1e4 / WSI_MPP
    common = dict(tile=(TILE_PX, TILE_PX), compression="jpeg", compressionargs={"level": JPEG_QUALITY},
                  photometric="rgb", resolutionunit="CENTIMETER", metadata=None)
    with tifffile.TiffWriter(out_path, bigtiff=False) as tif:
        tif.write(tiles(), shape=(size_px, size_px, 3), dtype=np.uint8, subifds=len(downs) - 1,
                  resolution=(px_per_cm, px_per_cm), description=f"synthetic lymph node H&E; {GENERATOR}",
                  software=GENERATOR, **common)
        level = level1
        for k, d in enumerate(downs[1:]):
            if k > 0:
                m = level.shape[0] // 4
                level = np.round(level.reshape(m, 4, m, 4, 3).mean(axis=(1, 3))).astype(np.uint8)
            tif.write(level, subfiletype=1, resolution=(px_per_cm / d, px_per_cm / d), **common)

    mask = geom.mask(MASK_DOWNSAMPLE)
    stem = out_path.stem
    mask_path = out_path.with_name(f"{stem}_tumor_mask.tif")
    tifffile.imwrite(mask_path, mask, compression="zlib", photometric="minisblack",
                     resolution=(px_per_cm / MASK_DOWNSAMPLE, px_per_cm / MASK_DOWNSAMPLE),
                     resolutionunit="CENTIMETER", metadata=None)
    counts = np.bincount(mask.ravel(), minlength=3)
    info = {"case_id": f"synthetic-lymph-node-{seed}", "specimen": "lymph node, metastatic carcinoma",
            "stain": "H&E", "mpp": WSI_MPP, "size_px": size_px, "tile_px": TILE_PX,
            "level_downsamples": downs, "mask": mask_path.name, "mask_downsample": MASK_DOWNSAMPLE,
            "mask_classes": MASK_CLASSES, "mask_pixel_counts": [int(c) for c in counts],
            "generator": GENERATOR, "seed": int(seed), "synthetic": True}
    out_path.with_name(f"{stem}.json").write_text(json.dumps(info, indent=2) + "\n")
    return out_path
