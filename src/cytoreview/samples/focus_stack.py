"""A synthetic focus stack: each region of a field is sharp in a different focus plane.

A volumetric scan of a thick smear sees some cells sharp at one depth and others at another. This module imitates
that from one sharp field: the field is cut into regions, each region gets the plane it is in focus in, and plane
``z`` of the stack shows each region blurred by a Gaussian whose sigma grows with its distance (in planes) from the
region's own plane. The sharp field is the ground truth an all-in-focus plane should get back to.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

#: Gaussian sigma, px, added per plane of distance from a region's in-focus plane.
BLUR_PX_PER_PLANE = 1.6


def region_plane_map(shape: tuple[int, int], n_z: int, rows: int = 3, cols: int = 4, seed: int = 0) -> np.ndarray:
    """An ``(h, w)`` int map: a ``rows`` x ``cols`` grid of regions, each sharp in one plane.

    Every plane is the sharp one of at least one region when there are enough regions (the planes are dealt out in a
    shuffled cycle), so no single plane is sharp everywhere.
    """
    rng = np.random.default_rng(seed)
    deal = np.resize(np.arange(n_z), rows * cols)
    rng.shuffle(deal)
    h, w = shape
    ry = np.minimum(np.arange(h) * rows // h, rows - 1)
    rx = np.minimum(np.arange(w) * cols // w, cols - 1)
    return deal.reshape(rows, cols)[ry[:, None], rx[None, :]].astype(np.int16)


def defocus_stack(sharp_rgb: np.ndarray, plane_map: np.ndarray, n_z: int,
                  blur_px_per_plane: float = BLUR_PX_PER_PLANE) -> list[np.ndarray]:
    """The ``n_z`` uint8 planes of ``sharp_rgb`` where the pixels of ``plane_map == k`` are in focus in plane ``k``."""
    from scipy.ndimage import gaussian_filter

    sharp = np.asarray(sharp_rgb, dtype=np.float32)
    blurred = {0: sharp}
    for d in range(1, n_z):
        sigma = blur_px_per_plane * d
        blurred[d] = gaussian_filter(sharp, sigma=(sigma, sigma, 0), mode="reflect")
    planes = []
    for z in range(n_z):
        distance = np.abs(plane_map.astype(np.int32) - z)
        plane = np.empty_like(sharp)
        for d, image in blurred.items():
            mask = distance == d
            plane[mask] = image[mask]
        planes.append(np.clip(plane + 0.5, 0, 255).astype(np.uint8))
    return planes


def make_focus_fields(out_dir, n_fields: int = 2, n_z: int = 5, seed: int = 0, *, quality: int = 90) -> Path:
    """Write a focus-stack field set: ``field_<i>_z<k>.jpg`` per field and plane, from rendered Warthin fields.

    ``ground_truth/sharp_<i>.png`` is the sharp field and ``ground_truth/planes_<i>.png`` the in-focus plane of
    every pixel; ``cytoscan.json`` carries the pixel size. Returns ``out_dir``.
    """
    from cytoreview.samples.fieldset import FIELD_MPP
    from cytoreview.samples.warthin import PROFILES, render_warthin_field

    out = Path(out_dir)
    truth = out / "ground_truth"
    truth.mkdir(parents=True, exist_ok=True)
    for i in range(n_fields):
        rng = np.random.default_rng([int(seed), 0xF0C, i])
        sharp = render_warthin_field(rng, PROFILES[i % len(PROFILES)]).rgb
        plane_map = region_plane_map(sharp.shape[:2], n_z, seed=seed * 1000 + i)
        for z, plane in enumerate(defocus_stack(sharp, plane_map, n_z)):
            PILImage.fromarray(plane).save(out / f"field_{i:03d}_z{z}.jpg", quality=quality)
        PILImage.fromarray(sharp).save(truth / f"sharp_{i:03d}.png")
        PILImage.fromarray(plane_map.astype(np.uint8)).save(truth / f"planes_{i:03d}.png")
    (out / "cytoscan.json").write_text(json.dumps({"mpp": FIELD_MPP, "synthetic": True, "n_z": n_z,
                                                   "seed": int(seed)}, indent=2) + "\n")
    return out
