"""Benchmark of the local provider's face swap and shorten: median timings.

Usage: .venv/bin/python bench/bench_local_faceswap_shorten.py [--runs 9]
Face swap runs on scikit-image's astronaut.png (a test dependency) as the target, with the
astronaut mirrored on coffee.png as the swap image, at the photo's own 512x512 and enlarged to
2048x2048. Each figure is the median (and worst) over ``--runs`` calls after one warm-up call.
Not a pass/fail test: it prints numbers.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import skimage.data
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: the repo root
faces = importlib.import_module("providers.faces")
shorten = importlib.import_module("providers.shorten")

PHOTOS = Path(skimage.data.__file__).parent
PROMPT = (
    "a majestic lion standing on a cliff at sunset, oil painting, dramatic lighting, highly detailed, 8k, "
    "trending on artstation --ar 16:9 --v 6.1"
)


def median_ms(call: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and worst wall time in milliseconds of ``call()`` over ``runs`` calls, after a warm-up."""
    call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    runs = parser.parse_args().runs
    target = Image.open(PHOTOS / "astronaut.png").convert("RGB")
    source = Image.open(PHOTOS / "coffee.png").convert("RGB")
    source.paste(ImageOps.mirror(target).resize((360, 360), Image.Resampling.LANCZOS), (200, 20))
    large = target.resize((2048, 2048), Image.Resampling.LANCZOS)
    figures = {
        "find_face astronaut 512x512": lambda: faces.find_face(target),
        "faceswap astronaut 512x512": lambda: faces.swap(target, source),
        "faceswap astronaut 2048x2048": lambda: faces.swap(large, source),
        "shorten (19 words)": lambda: shorten.shorten(PROMPT),
    }
    print(f"median and worst of {runs} runs")
    for name, call in figures.items():
        median, worst = median_ms(call, runs)
        print(f"{name:32} {median:9.2f} ms  (worst {worst:.2f} ms)")


if __name__ == "__main__":
    main()
