"""Benchmark of the local provider's art: median timings of paint_tiles, vary, mix and describe.

Usage: .venv/bin/python bench/bench_local_art.py [--runs 7]
Each figure is the median over ``--runs`` calls (after one warm-up call), cycling through a few
prompts so that different scenes are covered. The budget line paints a quality-1 imagine (four
1024x1024 tiles) and PNG-encodes the same four tiles as the gateway does, alternately, so both see
the same machine load; it prints the median of the per-prompt ratios. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: the repo root
procedural = importlib.import_module("providers.procedural")
imaging = importlib.import_module("imaging")
analysis = importlib.import_module("providers.analysis")

PROMPTS = (
    "a red fox in a snowy forest, photorealistic",
    "a bowl of ramen, studio lighting",
    "cute cat astronaut",
    "a lighthouse on a cliff at dusk",
    "portrait of an old sailor, oil painting",
    "a medieval castle, pixel art",
    "an old oak tree, sketch",
    "a sunflower, low poly",
    "a bird on a branch, watercolor",
    "a sunset over the mountains",
    "a futuristic city skyline at night",
    "deep blue ocean waves",
    "a cat in a snowy forest",
    "an abstract dream in pastel colours",
    "a flower garden on a sunny day",
    "a nebula in deep space",
)


def median_ms(call: Callable[[int], object], runs: int) -> tuple[float, float]:
    """Median and worst wall time in milliseconds of ``call(i)`` for i in 0..runs-1, after a warm-up."""
    call(runs)
    times = []
    for i in range(runs):
        start = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


def png_ms(tiles: list, runs: int) -> tuple[float, float]:
    """Time to PNG-encode the four tiles as the gateway does (compress_level=1), for context."""
    return median_ms(lambda i: [tile.save(io.BytesIO(), "PNG", compress_level=1) for tile in tiles], runs)


def stored_images(runs: int) -> tuple[float, float]:
    """What the gateway stores for a quality-1 imagine, four tiles and their grid (half of the bytes):
    median wall time to encode them one after another, and through storage.save_images (side by side)."""
    app = importlib.import_module("app").create_app({"DATA_DIR": tempfile.mkdtemp(), "START_WORKERS": False})
    storage = importlib.import_module("storage")
    tiles = procedural.paint_tiles(PROMPTS[0], 1024, 1024, seed=5)
    images = {"grid": imaging.compose_grid(tiles), **{str(n): tile for n, tile in enumerate(tiles, 1)}}
    one_by_one = median_ms(lambda i: [imaging.encode(image, "png") for image in images.values()], runs)[0]
    with app.app_context():
        side_by_side = median_ms(lambda i: storage.save_images(uuid.uuid4(), images), runs)[0]
    return one_by_one, side_by_side


def budget(runs: int) -> dict[str, float]:
    """Paint and encode times for quality-1 imagines, measured side by side (medians over the prompts).

    Wall-clock figures are what a user waits; CPU-time figures (all threads) do not depend on what
    else the machine is running, so ``cpu_ratio / cores`` estimates the ratio on an idle machine.
    """
    wall, cpu = {"paint": [], "encode": [], "ratio": []}, {"paint": [], "encode": [], "ratio": []}
    procedural.paint_tiles(PROMPTS[0], 1024, 1024, seed=0)  # warm-up
    for i in range(runs * len(PROMPTS)):
        prompt = PROMPTS[i % len(PROMPTS)]
        start, start_cpu = time.perf_counter(), time.process_time()
        tiles = procedural.paint_tiles(prompt, 1024, 1024, seed=i)
        painted, painted_cpu = time.perf_counter(), time.process_time()
        for tile in tiles:
            imaging.encode(tile, "png")
        encoded, encoded_cpu = time.perf_counter(), time.process_time()
        for figures, (a, b, c) in (
            (wall, (start, painted, encoded)),
            (cpu, (start_cpu, painted_cpu, encoded_cpu)),
        ):
            figures["paint"].append((b - a) * 1000)
            figures["encode"].append((c - b) * 1000)
            figures["ratio"].append((b - a) / (c - b))
    result = {f"wall_{k}": statistics.median(v) for k, v in wall.items()}
    result.update({f"cpu_{k}": statistics.median(v) for k, v in cpu.items()})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs

    def imagine(width: int, height: int) -> Callable[[int], object]:
        return lambda i: procedural.paint_tiles(PROMPTS[i % len(PROMPTS)], width, height, seed=i)

    square = procedural.paint_tiles(PROMPTS[0], 1024, 1024, seed=1)
    wide = procedural.paint_tiles(PROMPTS[1], 1024, 576, seed=2)[0]
    tall = procedural.paint_tiles(PROMPTS[2], 512, 768, seed=3)[0]
    sources = [square[0], wide, tall]
    cases = [
        ("paint_tiles 1024x1024 (4 tiles)", imagine(1024, 1024)),
        ("paint_tiles 1024x576 16:9 (4 tiles)", imagine(1024, 576)),
        ("paint_tiles 512x512 (4 tiles)", imagine(512, 512)),
        ("vary 1024x1024 (4 tiles)", lambda i: procedural.vary(square[i % 4], seed=i)),
        ("mix of 3 at 1024x1024 (4 tiles)", lambda i: procedural.mix(sources, 1024, 1024, seed=i)),
        ("describe 1024x1024", lambda i: analysis.describe(square[i % 4])),
    ]
    print(f"median of {runs} runs (worst in brackets); tiles rendered on {procedural._THREADS} thread(s)")
    for label, call in cases:
        median, worst = median_ms(call, runs)
        print(f"  {label:38s} {median:7.1f} ms  ({worst:.1f})")
    median, worst = png_ms(square, runs)
    print(f"  {'for context: PNG-encode 4 x 1024x1024':38s} {median:7.1f} ms  ({worst:.1f})")
    one_by_one, side_by_side = stored_images(runs)
    print(
        f"  {'store 4 tiles + grid, one by one':38s} {one_by_one:7.1f} ms\n"
        f"  {'store 4 tiles + grid (save_images)':38s} {side_by_side:7.1f} ms  (encoded side by side)"
    )
    b = budget(max(1, runs // 3))
    cores = procedural._THREADS
    print(
        f"budget (quality-1 imagine vs Pillow's PNG encode of its 4 tiles, side by side, medians over "
        f"{len(PROMPTS)} prompts; budget: ratio <= 1.0)"
    )
    print(
        f"  wall clock: imagine {b['wall_paint']:.1f} ms, encode {b['wall_encode']:.1f} ms, "
        f"ratio {b['wall_ratio']:.2f}"
    )
    print(
        f"  CPU time:   imagine {b['cpu_paint']:.1f} ms, encode {b['cpu_encode']:.1f} ms, ratio "
        f"{b['cpu_ratio']:.2f}; on {cores} idle core(s): about {b['cpu_ratio'] / cores:.2f}"
    )


if __name__ == "__main__":
    main()
