"""Builders of hostile files for the fault suite (each a few hundred bytes to a few KB, made in the test's tmp_path)."""

from __future__ import annotations

import struct
from pathlib import Path


def tiff_bomb(path: Path, width: int = 100_000, height: int = 100_000, rows_per_strip: int | None = None,
              tile_px: int | None = None) -> Path:
    """A ~1 KB classic TIFF whose header claims ``width x height`` 8-bit RGB pixels, with almost no pixel data.

    Stripped by default (one strip of ``rows_per_strip`` rows, all of them unless given), or tiled (``tile_px``).
    """
    rows = height if rows_per_strip is None else rows_per_strip
    payload = b"\x00" * 64
    entries: list[tuple[int, int, int, bytes]] = []  # tag, type, count, value bytes

    def add(tag, typ, values):
        fmt = {3: "H", 4: "I"}[typ]
        entries.append((tag, typ, len(values), struct.pack("<" + fmt * len(values), *values)))

    add(256, 4, [width])
    add(257, 4, [height])
    add(258, 3, [8, 8, 8])
    add(259, 3, [1])
    add(262, 3, [2])
    add(277, 3, [3])
    add(284, 3, [1])
    header = 8
    ifd_size = 2 + 12 * (11 if tile_px is None else 12) + 4
    data_at = header + ifd_size + 64  # after the IFD and room for out-of-line values
    if tile_px is None:
        n = -(-height // rows)
        add(273, 4, [data_at] * n if n <= 1 else [data_at] * n)
        add(278, 4, [rows])
        add(279, 4, [len(payload)] * n)
    else:
        n = (-(-height // tile_px)) * (-(-width // tile_px))
        add(322, 3, [tile_px])
        add(323, 3, [tile_px])
        add(324, 4, [data_at] * n)
        add(325, 4, [len(payload)] * n)
    entries.sort()
    ifd = bytearray(struct.pack("<H", len(entries)))
    extra = bytearray()
    extra_at = header + 2 + 12 * len(entries) + 4
    for tag, typ, count, value in entries:
        if len(value) <= 4:
            ifd += struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\x00")
        else:
            ifd += struct.pack("<HHII", tag, typ, count, extra_at + len(extra))
            extra += value
    ifd += struct.pack("<I", 0)
    body = bytes(ifd) + bytes(extra)
    start = header + len(body)
    # patch the strip/tile offsets to point at the payload placed right after the IFD and its values
    body = body.replace(struct.pack("<I", data_at), struct.pack("<I", start))
    path.write_bytes(b"II*\x00" + struct.pack("<I", header) + body + payload)
    return path
