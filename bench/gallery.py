"""Contact sheet of the local provider's art: a fixed list of prompts, painted and laid out in one PNG.

Usage: .venv/bin/python bench/gallery.py [--out data/gallery.png] [--side 256] [--tiles 1]
Each row of the sheet shows one prompt's first tile (or all four with ``--tiles 4``), labelled.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: the repo root
procedural = importlib.import_module("providers.procedural")

PROMPTS = (
    "a red fox in a snowy forest, photorealistic",
    "a bowl of ramen, studio lighting",
    "cute cat astronaut",
    "a lighthouse on a cliff at dusk",
    "portrait of an old sailor, oil painting",
    "a black cat",
    "a golden retriever dog in a meadow",
    "a bird on a branch, watercolor",
    "an owl at night",
    "a white horse on a beach at sunset",
    "a koi fish underwater",
    "a whale in the deep ocean",
    "a green dragon over the mountains",
    "a rabbit in a flower garden",
    "a polar bear on the ice",
    "a blue butterfly",
    "a medieval castle, pixel art",
    "a cosy cottage in the woods",
    "a tall stone tower",
    "a red sports car in the city at night",
    "a pirate ship on the ocean",
    "a rocket launching into space",
    "an old oak tree, sketch",
    "a sunflower, low poly",
    "the planet saturn",
    "a cup of coffee",
    "a birthday cake with candles",
    "a knight standing in the desert",
    "a robot in a neon city",
    "a kitty",
    "a sailboat at dawn",
    "a sunset over the mountains",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/gallery.png")
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--tiles", type=int, default=1, choices=(1, 4))
    parser.add_argument("--chaos", type=float, default=0)
    args = parser.parse_args()
    side, per_row = args.side, 4 if args.tiles == 4 else 6
    label = 18
    cells = [(prompt, i) for prompt in PROMPTS for i in range(args.tiles)]
    rows = -(-len(cells) // per_row)
    sheet = Image.new("RGB", (per_row * side, rows * (side + label)), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    started = time.perf_counter()
    for prompt in PROMPTS:
        tiles = procedural.paint_tiles(prompt, side, side, seed=11, chaos=args.chaos)
        for i in range(args.tiles):
            n = cells.index((prompt, i))
            x, y = (n % per_row) * side, (n // per_row) * (side + label)
            sheet.paste(tiles[i], (x, y + label))
            draw.text((x + 3, y + 3), prompt[: side // 6], fill=(235, 235, 235))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"{len(PROMPTS)} prompts painted in {time.perf_counter() - started:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
