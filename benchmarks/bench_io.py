"""Reader benchmarks, each a ratio against a reference measured in the same run.

1. level-0 tile reads/s, our reader ÷ openslide ``read_region`` (same file, same tiles), with both decoded-tile
   caches on (goal >= 3) and both off (goal >= 2): neither reader gets a cache the other lacks
2. ms per level-0 tile on a 100k² pyramid ÷ on a 16k² pyramid                              goal <= 1.2
3. field-set decode rate ÷ raw Pillow decode of the same files                              goal >= 0.8
4. first view of a 100k² slide (open + thumbnail) ÷ openslide open + get_thumbnail         goal <= 1.0
5. peak RSS after open + 2,000 level-0 tiles: 100k² slide ÷ 16k² slide (separate processes) goal <= 1.2

Run: ``python benchmarks/bench_io.py [--json out.json]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Ratio, best_of, print_table, write_json  # noqa: E402

from cytoreview.io import open_image  # noqa: E402

TILE = 256


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ph = rng.uniform(0, 6.28, 3)
    img = np.stack([150 + 80 * np.sin(xx / (9 + 4 * k) + ph[k]) * np.cos(yy / (13 + 3 * k)) for k in range(3)], -1)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_slide(path: Path, size_px: int, dense_px: int, seed: int = 0, layout: str = "ifd-chain") -> tuple[int, int]:
    """A factor-4 JPEG pyramid of ``size_px``² whose central ``dense_px``² block holds real tiles (rest sparse).

    ``layout`` "ifd-chain" (levels as successive IFDs, which openslide's generic TIFF reader also understands) or
    "subifd" (levels as SubIFDs of the first page, which openslide ignores).

    Returns the (row, col) of the dense block's top-left in level 0 (tile aligned).
    """
    texture = _texture(TILE * 4, TILE * 4, seed)
    tiles_per_side = -(-size_px // TILE)
    start = (tiles_per_side - dense_px // TILE) // 2
    stop = start + dense_px // TILE

    def tiles(n_side, lo, hi):
        for r in range(n_side):
            for c in range(n_side):
                if (lo <= r < hi and lo <= c < hi) or r == c == 0:  # tifffile needs a first tile to see the dtype
                    y, x = (r % 4) * TILE, (c % 4) * TILE
                    yield texture[y:y + TILE, x:x + TILE]
                else:
                    yield None

    options = dict(dtype="uint8", tile=(TILE, TILE), compression="jpeg", compressionargs={"level": 85},
                   photometric="rgb", metadata=None)
    sizes = [size_px]
    while sizes[-1] // 4 >= 1024:
        sizes.append(sizes[-1] // 4)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for i, size in enumerate(sizes):
            n_side = -(-size // TILE)
            factor = size_px // size
            lo, hi = start // factor, max(start // factor + 1, stop // factor)
            if i == 0:
                extra = {"resolution": (1e4 / 0.25, 1e4 / 0.25), "resolutionunit": "CENTIMETER"}
                if layout == "subifd":
                    extra["subifds"] = len(sizes) - 1
            else:
                extra = {"subfiletype": 1}
            tw.write(tiles(n_side, lo, hi), shape=(size, size, 3), **extra, **options)
    return start * TILE, start * TILE


def tile_positions(origin: tuple[int, int], dense_px: int, n: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    per_side = dense_px // TILE
    picks = rng.choice(per_side * per_side, size=min(n, per_side * per_side), replace=False)
    return [(origin[0] + (p // per_side) * TILE, origin[1] + (p % per_side) * TILE) for p in picks]


def time_ours(path: Path, positions, cache: bool = True, with_cpu: bool = False):
    """Seconds to read ``positions`` through our reader; ``cache=False`` turns its decoded-tile cache off.
    ``with_cpu``: ``(wall_s, cpu_s)``, the process's CPU time of the reads too."""
    image = open_image(path)
    if not cache:
        for level in image.levels:
            if hasattr(level, "cache_bytes"):
                level.cache_bytes = 0
    start, cpu = time.perf_counter(), time.process_time()
    for row, col in positions:
        image.read_region(row, col, TILE, TILE)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    image.close()
    return (elapsed, cpu) if with_cpu else elapsed


def time_openslide(path: Path, positions, cache: bool = True, with_cpu: bool = False):
    """Seconds to read ``positions`` with openslide ``read_region``; its own tile cache (the library's default size)
    on, or set to 0 bytes. The RGB pixels are a view of its RGBA array (cheaper than ``.convert("RGB")``; the
    tiles are opaque, so the same values). ``with_cpu`` as in :func:`time_ours`."""
    import openslide

    slide = openslide.OpenSlide(str(path))
    if not cache:
        slide.set_cache(openslide.OpenSlideCache(0))
    start, cpu = time.perf_counter(), time.process_time()
    for row, col in positions:
        np.asarray(slide.read_region((col, row), 0, (TILE, TILE)))[..., :3]  # RGB without a PIL conversion
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    slide.close()
    return (elapsed, cpu) if with_cpu else elapsed


def time_decode_only(path: Path, positions) -> float:
    """Seconds to only JPEG-decode the level-0 tiles that reads of ``positions`` touch (each read's tiles, once per
    read, as a reader without a tile cache must), with the bytes read beforehand and one reused output buffer: the
    floor any reader of these tiles through libjpeg-turbo (imagecodecs; openslide links the same library) pays, so
    openslide's time over it bounds the both-caches-off ratio."""
    import imagecodecs

    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        tile_h, tile_w, across = page.tilelength, page.tilewidth, -(-page.imagewidth // page.tilewidth)
        colorspace = 2 if page.photometric == 2 and not page.is_jfif else None  # Aperio: RGB JPEG, no JFIF
        touched = [[(a, b) for a in range(r // tile_h, (r + TILE - 1) // tile_h + 1)
                    for b in range(c // tile_w, (c + TILE - 1) // tile_w + 1)] for r, c in positions]
        fh = tif.filehandle
        data = {}
        for key in {t for read in touched for t in read}:
            index = key[0] * across + key[1]
            fh.seek(page.dataoffsets[index])
            data[key] = fh.read(page.databytecounts[index])
        tables = page.jpegtables
    out = np.empty((tile_h, tile_w, 3), dtype=np.uint8)
    start = time.perf_counter()
    for read in touched:
        for key in read:
            imagecodecs.jpeg_decode(data[key], tables=tables, colorspace=colorspace, outcolorspace=2,
                                    shape=(tile_h, tile_w), out=out)
    return time.perf_counter() - start


#: CPU-time ratios (reference CPU ÷ ours) of the last :func:`_both_ways`, for the rows' notes.
CPU_RATIOS: dict[str, float] = {}


def _both_ways(path: Path, positions, repeats: int = 5) -> dict[str, tuple[float, float]]:
    """``{"on": (ours_s, openslide_s), "off": (...)}``: both caches on, both off (fresh slide objects each time).

    The two readers alternate, best of ``repeats`` each, so a burst of load from other processes hits both alike;
    the CPU-time ratio of the same runs goes to :data:`CPU_RATIOS`.
    """
    out = {}
    for mode, cache in (("on", True), ("off", False)):
        ours, theirs = [], []
        for _ in range(repeats):
            ours.append(time_ours(path, positions, cache, with_cpu=True))
            theirs.append(time_openslide(path, positions, cache, with_cpu=True))
        out[mode] = (min(w for w, _ in ours), min(w for w, _ in theirs))
        CPU_RATIOS[mode] = min(c for _, c in theirs) / min(c for _, c in ours)
    return out


def bench_tile_reads(workdir: Path, rows: list[Ratio]) -> None:
    path = workdir / "slide16k.tif"
    origin = write_slide(path, 16384, 8192, seed=1)
    positions = tile_positions(origin, 8192, 600, seed=2)
    n = len(positions)
    for mode, (ours, theirs) in _both_ways(path, positions).items():
        rows.append(Ratio(f"level-0 tile reads/s: ours ÷ openslide (16k² JPEG pyramid), both caches {mode}", n / ours,
                          n / theirs, "tiles/s", ">= 3.0" if mode == "on" else ">= 2.0",
                          f"aligned, each tile read once; CPU-time ratio {CPU_RATIOS[mode]:.2f}"))
    try:
        from cytoreview.samples.aperio_cc0 import cmu_small_region

        svs = cmu_small_region()
        with tifffile.TiffFile(svs) as tif:
            height, width = tif.pages.first.shape[:2]
        rng = np.random.default_rng(3)
        svs_pos = [(int(r), int(c)) for r, c in zip(rng.integers(0, height - TILE, 300), rng.integers(0, width - TILE, 300))]
        timed = _both_ways(svs, svs_pos)
        for mode, (ours, theirs) in timed.items():
            rows.append(Ratio(f"level-0 256² reads/s: ours ÷ openslide (CMU-1-Small-Region.svs), both caches {mode}",
                              300 / ours, 300 / theirs, "tiles/s", ">= 3.0" if mode == "on" else ">= 2.0",
                              f"unaligned reads, 4.3 240² tiles each on average; CPU-time ratio {CPU_RATIOS[mode]:.2f}"))
        # the same run's ceiling of the caches-off ratio: a reader that did nothing but decode the touched tiles
        decode_only = min(time_decode_only(svs, svs_pos) for _ in range(5))
        rows.append(Ratio("ceiling of the row above: decode of the touched tiles only ÷ openslide, both caches off",
                          300 / decode_only, 300 / timed["off"][1], "tiles/s", "",
                          f"ours reaches {decode_only / timed['off'][0]:.2f} of this decode-only rate"))
    except Exception as exc:  # noqa: BLE001 - the public slide needs pip access; report, do not hide
        print(f"(skipped the SVS comparison: {exc})")


def bench_scaling(workdir: Path, rows: list[Ratio]) -> None:
    small, big = workdir / "p16k.tif", workdir / "p100k.tif"
    o_small = write_slide(small, 16384, 4096, seed=4, layout="subifd")
    o_big = write_slide(big, 100_000, 4096, seed=4, layout="subifd")
    pos_small = tile_positions(o_small, 4096, 256, seed=5)
    pos_big = tile_positions(o_big, 4096, 256, seed=5)
    t_small = min(time_ours(small, pos_small) for _ in range(5)) / len(pos_small)
    t_big = min(time_ours(big, pos_big) for _ in range(5)) / len(pos_big)
    rows.append(Ratio("ms per level-0 tile: 100k² pyramid ÷ 16k² pyramid", t_big * 1e3, t_small * 1e3, "ms", "<= 1.2"))


def bench_fields(workdir: Path, rows: list[Ratio]) -> None:
    folder = workdir / "fields"
    folder.mkdir()
    for i in range(16):
        PILImage.fromarray(_texture(1208, 1928, seed=10 + i)).save(folder / f"field_{i:03d}.jpg", quality=85)
    files = sorted(folder.glob("*.jpg"))
    image = open_image(folder)
    # Interleave the two per field and keep each one's best of 3 rounds: the machine is shared, so a burst of
    # load hits both sides alike instead of skewing one.
    raw_best = [float("inf")] * len(files)
    ours_best = [float("inf")] * len(files)
    for _ in range(3):
        for i, path in enumerate(files):
            start = time.perf_counter()
            with PILImage.open(path) as im:
                np.asarray(im.convert("RGB"))
            raw_best[i] = min(raw_best[i], time.perf_counter() - start)
            start = time.perf_counter()
            image.read_plane(field=i)
            ours_best[i] = min(ours_best[i], time.perf_counter() - start)
    rows.append(Ratio("field-set decode fields/s: ours ÷ raw Pillow decode", len(files) / sum(ours_best),
                      len(files) / sum(raw_best), "fields/s", ">= 0.8"))


def bench_first_view(workdir: Path, rows: list[Ratio]) -> None:
    import openslide

    path = workdir / "first_view_100k.tif"
    write_slide(path, 100_000, 2048, seed=6, layout="ifd-chain")

    def ours():
        with open_image(path) as image:
            image.thumbnail(1024)

    def theirs():
        slide = openslide.OpenSlide(str(path))
        slide.get_thumbnail((1024, 1024))
        slide.close()

    rows.append(Ratio("first view of a 100k² slide (open+thumbnail): ours ÷ openslide", best_of(ours, 3) * 1e3,
                      best_of(theirs, 3) * 1e3, "ms", "<= 1.0"))


def rss_probe(path: str, n_tiles: int = 2000) -> int:
    """Open ``path``, read ``n_tiles`` level-0 tiles spread over the dense block, return peak RSS in KiB."""
    import resource

    image = open_image(path)
    height, width = image.plane_shape
    dense = 8192
    origin = ((height - dense) // 2 // TILE * TILE, (width - dense) // 2 // TILE * TILE)
    for row, col in tile_positions(origin, dense, n_tiles, seed=7):
        image.read_region(row, col, TILE, TILE)
    image.thumbnail(1024)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def bench_memory(workdir: Path, rows: list[Ratio]) -> None:
    import subprocess

    peaks = {}
    for size in (16384, 100_000):
        path = workdir / f"rss_{size}.tif"
        write_slide(path, size, 8192, seed=8, layout="subifd")
        out = subprocess.run([sys.executable, __file__, "--rss-probe", str(path)], capture_output=True, text=True,
                             check=True)
        peaks[size] = int(out.stdout.strip().splitlines()[-1])
    rows.append(Ratio("peak RSS after open + 2,000 tiles: 100k² ÷ 16k² slide", peaks[100_000] / 1024,
                      peaks[16384] / 1024, "MiB", "<= 1.2"))


def run() -> list[Ratio]:
    """Run the reader benchmarks and return their ratios."""
    rows: list[Ratio] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bench_tile_reads(workdir, rows)
        bench_scaling(workdir, rows)
        bench_fields(workdir, rows)
        bench_first_view(workdir, rows)
        bench_memory(workdir, rows)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--rss-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_probe:
        print(rss_probe(args.rss_probe))
        sys.exit(0)
    results = run()
    print_table(results)
    if args.json:
        write_json(results, args.json)
