"""Write a pack's ``reference`` statistics (colour and embedding of its tiles) into its card, without retraining.

Usage: ``PYTHONPATH=src python plugins/reference_statistics.py PACK_DIR CASE [CASE ...] [--source TEXT]``

Each CASE (a field set or slide made by the pack's training generator, e.g. ``python -m cytoreview.samples``) is run
through ``cytoreview.inference.predict``; the embeddings of every predicted tile and the mean colour of its model
patch (read through the pack's own patch grid) become the card's ``reference`` block
(:func:`cytoreview.inference.ood.reference_statistics`), which the out-of-distribution check compares images with.
The rest of the card is left as it is (the block is replaced at the end of the file).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml


def collect(pack, cases, work: Path):
    """Patch colours and embeddings of every predicted tile of ``cases``."""
    from cytoreview.inference import predict
    from cytoreview.inference.grid import make_grid
    from cytoreview.inference.ood import tile_colours
    from cytoreview.io import open_image

    colours, embeddings = [], []
    for case in cases:
        with open_image(case) as image:
            store = predict(image, pack, work / Path(case).name, threads=1)
            cls = np.asarray(store.tile_class[...])
            tiles = np.argwhere(cls >= 0)
            emb = np.asarray(store.embedding[...])
            embeddings.append(emb[tiles[:, 0], tiles[:, 1], tiles[:, 2]])
            grid = make_grid(image, pack)
            for start in range(0, len(tiles), 256):
                part = tiles[start : start + 256]
                colours.append(tile_colours(np.stack([grid.read_tile(image, int(f), int(r), int(c))
                                                      for f, r, c in part])))
        print(f"{case}: {len(tiles)} tiles", file=sys.stderr)
    return np.concatenate(colours), np.concatenate(embeddings)


def write_reference(card_path: Path, reference: dict) -> None:
    """Replace (or add) the top-level ``reference:`` block at the end of the card."""
    text = card_path.read_text()
    text = re.sub(r"\nreference:\n(?:[ -].*\n?)*", "\n", text).rstrip("\n") + "\n"
    block = yaml.safe_dump({"reference": reference}, sort_keys=False, default_flow_style=None, width=120)
    card_path.write_text(text + block)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pack", type=Path)
    parser.add_argument("cases", type=Path, nargs="+")
    parser.add_argument("--source", default=None, help="what the cases are (written into the card)")
    args = parser.parse_args(argv)

    from cytoreview.inference.ood import reference_statistics
    from cytoreview.models import load_pack

    pack = load_pack(args.pack)
    with tempfile.TemporaryDirectory(prefix="cytoreview-reference-") as tmp:
        colours, embeddings = collect(pack, args.cases, Path(tmp))
    source = args.source or ", ".join(p.name for p in args.cases)
    write_reference(args.pack / "cytoreview.yaml", reference_statistics(colours, embeddings, source))
    load_pack(args.pack)  # the card still validates
    print(f"{args.pack / 'cytoreview.yaml'}: reference of {len(colours)} tiles written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
