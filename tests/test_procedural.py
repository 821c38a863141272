"""Behaviour of the procedural art: determinism, prompt-driven palettes and scenes, styles and knobs."""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from providers.procedural import STYLES, mix, paint_tiles, vary

SIZE = 160


def pixels(image: Image.Image) -> np.ndarray:
    """Float RGB pixels in 0..1."""
    return np.asarray(image.convert("RGB"), np.float64) / 255


def luma(a: np.ndarray) -> np.ndarray:
    """Rec. 601 luma."""
    return a @ np.array([0.299, 0.587, 0.114])


def saturation(a: np.ndarray) -> float:
    """Mean chroma (max - min channel)."""
    return float((a.max(-1) - a.min(-1)).mean())


def texture(a: np.ndarray) -> float:
    """Mean absolute difference between the luma and its 5x5 local mean: brush and fine detail energy."""
    y = luma(a)
    padded = np.pad(y, [(0, 0)] * (y.ndim - 2) + [(2, 2), (2, 2)], mode="edge")
    h, w = y.shape[-2:]
    local = np.mean([padded[..., dy:dy + h, dx:dx + w] for dy in range(5) for dx in range(5)], 0)
    return float(np.abs(y - local).mean())


def spread(tiles: list[Image.Image]) -> float:
    """Mean absolute difference between every pair of tiles."""
    arrays = [pixels(t) for t in tiles]
    return float(np.mean([np.abs(a - b).mean() for a, b in itertools.combinations(arrays, 2)]))


def paint(prompt: str, seed: int = 7, size: tuple[int, int] = (SIZE, SIZE), **knobs) -> list[Image.Image]:
    """Four small tiles for a prompt."""
    return paint_tiles(prompt, *size, seed=seed, **knobs)


def stacked(prompt: str, seeds: tuple[int, ...] = (1, 2), **knobs) -> np.ndarray:
    """All tiles for a prompt over a few seeds, stacked into one (n, h, w, 3) array."""
    return np.stack([pixels(t) for seed in seeds for t in paint(prompt, seed, **knobs)])


def channels(prompt: str, **knobs) -> np.ndarray:
    """Mean R, G and B over the tiles of a few seeds."""
    return stacked(prompt, **knobs).mean((0, 1, 2))


# --- the basic contract -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 64), (SIZE, 90), (90, SIZE), (1024, 576), (2048, 64), (64, 2048)])
def test_four_rgb_tiles_of_the_requested_size(size):
    tiles = paint("a lighthouse on a cliff", size=size)
    assert len(tiles) == 4
    assert all(t.mode == "RGB" and t.size == size for t in tiles)


def test_same_inputs_give_byte_identical_pixels():
    knobs = {"style": "expressive", "chaos": 40, "stylize": 600, "version": "6.0"}
    first = paint("a red fox in a snowy forest", 123, **knobs)
    second = paint("a red fox in a snowy forest", 123, **knobs)
    assert [t.tobytes() for t in first] == [t.tobytes() for t in second]


def test_a_different_seed_or_prompt_gives_different_pixels():
    base = paint("mountains at dawn", 1)
    assert spread([base[0], paint("mountains at dawn", 2)[0]]) > 0.02
    assert spread([base[0], paint("mountains at dusk", 1)[0]]) > 0.02


def test_the_four_tiles_are_distinct():
    tiles = paint("a quiet harbour")
    for a, b in itertools.combinations(tiles, 2):
        assert np.abs(pixels(a) - pixels(b)).mean() > 0.01


@pytest.mark.parametrize(
    "prompt", ["", "   \n\t", "🌅🐉✨ 夕焼けの山", "ü" * 4000, "x" * 4000, "bad \ud800 surrogate"]
)
def test_any_prompt_string_works(prompt):
    tiles = paint(prompt, size=(96, 64))
    assert [t.size for t in tiles] == [(96, 64)] * 4
    assert tiles[0].tobytes() == paint(prompt, size=(96, 64))[0].tobytes()


@pytest.mark.parametrize("bad", [{"width": 63}, {"height": 2049}, {"style": "baroque"}])
def test_out_of_range_sizes_and_unknown_styles_are_rejected(bad):
    args = {"width": SIZE, "height": SIZE, "style": None} | bad
    with pytest.raises(ValueError):
        paint_tiles("a cat", args["width"], args["height"], seed=1, style=args["style"])


def test_on_tile_reports_each_tile_in_order():
    seen = []
    paint("a cat", on_tile=seen.append)
    assert seen == [0, 1, 2, 3]


def test_an_exception_from_on_tile_stops_the_job():
    seen = []

    def cancel(index):
        seen.append(index)
        if index == 1:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        paint("a cat", on_tile=cancel)
    assert seen == [0, 1]


def test_concurrent_jobs_paint_on_one_pool_no_wider_than_the_machine():
    """Painting is CPU-bound: four jobs at once still paint on at most as many threads as cores."""
    with ThreadPoolExecutor(4) as jobs:
        grids = list(jobs.map(lambda n: paint(f"a cat number {n}"), range(4)))
    assert all(len(tiles) == 4 for tiles in grids)
    painters = [thread for thread in threading.enumerate() if thread.name.startswith("apiframe-paint")]
    assert 1 <= len(painters) <= min(4, os.cpu_count() or 1)


# --- the prompt shapes the picture --------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "check"),
    [
        ("a red mountain landscape", lambda r, g, b: r > b + 0.1 and r > g + 0.05),
        ("crimson roses in a garden", lambda r, g, b: r > b + 0.05 and r > g + 0.05),
        ("deep blue ocean", lambda r, g, b: b > r + 0.15),
        ("a teal lake", lambda r, g, b: g > r + 0.08 and b > r + 0.08),
        ("a green city skyline", lambda r, g, b: g > r and g > b),
        ("purple mountains", lambda r, g, b: r > g and b > g),
        ("an orange desert", lambda r, g, b: r > g > b),
        ("golden fields of wheat", lambda r, g, b: r > b + 0.15 and g > b + 0.05),
    ],
)
def test_colour_words_pick_the_palette(prompt, check):
    r, g, b = channels(prompt)
    assert check(r, g, b), (prompt, r, g, b)


@pytest.mark.parametrize("prompt", ["a black and white photo of a harbour", "monochrome city street"])
def test_monochrome_prompts_have_no_colour(prompt):
    a = stacked(prompt, seeds=(3,))
    assert (a.max(-1) - a.min(-1)).max() <= 2 / 255


def test_pastel_is_lighter_and_softer_and_neon_is_more_saturated():
    plain, pastel, neon = (stacked(p) for p in ("flowers in a vase", "pastel flowers in a vase",
                                                 "neon flowers in a vase"))
    assert luma(pastel).mean() > luma(plain).mean() + 0.1
    assert saturation(pastel) < saturation(plain)
    assert saturation(neon) > saturation(plain) + 0.05


def test_night_is_darker_than_a_bright_day_and_dark_is_darker():
    assert luma(stacked("a city at night")).mean() < luma(stacked("a city on a bright day")).mean() - 0.15
    assert luma(stacked("a dark forest")).mean() < luma(stacked("a forest")).mean() - 0.05


def test_mist_lowers_the_contrast():
    assert luma(stacked("a misty mountain valley")).std() < luma(stacked("a mountain valley")).std() - 0.02


def tall_vertical_edges(a: np.ndarray) -> float:
    """Share of rows crossed by the strongest few vertical edges (building sides run the full height)."""
    crossings = (np.abs(np.diff(luma(a), axis=-1)) > 0.05).mean(-2)
    return float(np.sort(crossings, -1)[..., -8:].mean())


def test_a_city_is_structurally_different_from_an_ocean():
    assert tall_vertical_edges(stacked("a city skyline")) > 2 * tall_vertical_edges(stacked("the ocean"))


def test_sunsets_are_warm_and_glow_at_the_horizon():
    a = stacked("sunset")
    r, _, b = a.mean((0, 1, 2))
    assert r > b + 0.1
    brightest_row = luma(a).mean((0, 2)).argmax() / a.shape[1]
    assert 0.25 < brightest_row < 0.75


@pytest.mark.parametrize(
    ("prompt", "check"),
    [
        ("a forest of pine trees", lambda r, g, b: g > r and g > b),
        ("desert dunes", lambda r, g, b: r > g > b),
        ("a snowy winter field", lambda r, g, b: min(r, g, b) > 0.55 and max(r, g, b) - min(r, g, b) < 0.2),
    ],
)
def test_scene_words_pick_the_scene_colours(prompt, check):
    r, g, b = channels(prompt)
    assert check(r, g, b), (prompt, r, g, b)


def test_space_is_dark_and_full_of_stars():
    a = stacked("a galaxy in deep space")
    y = luma(a)
    assert y.mean() < 0.3
    surround = (np.roll(y, 2, -1) + np.roll(y, -2, -1) + np.roll(y, 2, -2) + np.roll(y, -2, -2)) / 4
    assert ((y - surround) > 0.2).mean() > 0.0005


def test_mountains_put_a_bright_sky_above_dark_ridges():
    y = luma(stacked("a mountain landscape"))
    assert y[:, : SIZE // 5].mean() > y[:, -SIZE // 5:].mean() + 0.1


def test_flowers_dot_the_foreground_with_colour():
    a = stacked("a flower meadow")
    vivid = (a[..., 0] - a[..., 1]) > 0.25
    assert vivid[:, -SIZE // 3:].mean() > 0.03
    assert vivid[:, : SIZE // 3].mean() < vivid[:, -SIZE // 3:].mean() / 3


@pytest.mark.parametrize("prompt", ["portrait of a woman", "a cat", "a friendly dog", "a robot"])
def test_subjects_stand_out_in_the_centre_of_the_first_tile(prompt):
    a = np.stack([pixels(paint(prompt, seed)[0]) for seed in (1, 2)])  # tile 1 puts its subject in the middle
    rows = slice(int(SIZE * 0.6), int(SIZE * 0.85))
    centre = a[:, rows, int(SIZE * 0.45): int(SIZE * 0.55)].mean((0, 1, 2))
    sides = a[:, rows, : int(SIZE * 0.1)].mean((0, 1, 2))
    assert np.abs(centre - sides).sum() > 0.15, (centre, sides)


# --- style, chaos, stylize and version ------------------------------------------------------------


def test_raw_is_muted_cute_is_light_and_soft_expressive_is_contrasty():
    prompt = "a village by a lake at sunset"
    default, raw, cute, expressive = (stacked(prompt, style=s) for s in (None, "raw", "cute", "expressive"))
    assert saturation(raw) < saturation(default) * 0.9
    assert luma(cute).mean() > luma(default).mean() + 0.05
    assert saturation(cute) < saturation(default)
    assert luma(expressive).std() > luma(default).std() * 1.1
    assert texture(expressive) > texture(default)


def test_scenic_adds_atmospheric_haze():
    prompt = "mountains above a valley"
    default, scenic = stacked(prompt), stacked(prompt, style="scenic")
    assert luma(scenic).std() < luma(default).std()


@pytest.mark.parametrize("style", [None, *STYLES])
def test_every_style_renders(style):
    assert len(paint("a castle", style=style, size=(96, 96))) == 4


def test_chaos_spreads_the_four_tiles_apart():
    prompts = ("a mountain landscape", "a city at night", "an abstract dream")
    spreads = [np.mean([spread(paint(p, chaos=chaos)) for p in prompts]) for chaos in (0, 50, 100)]
    assert spreads[0] < spreads[1] < spreads[2]
    assert spreads[2] > spreads[0] * 1.5


def test_stylize_raises_saturation_and_texture_monotonically():
    prompts = ("a mountain landscape", "a city at night", "a harbour at dusk")
    levels = [[stacked(p, seeds=(4,), stylize=s) for p in prompts] for s in (0, 500, 1000)]
    sats = [np.mean([saturation(a) for a in level]) for level in levels]
    textures = [np.mean([texture(a) for a in level]) for level in levels]
    assert sats[0] < sats[1] < sats[2]
    assert textures[0] < textures[1] < textures[2]


def test_newer_versions_paint_finer_detail():
    old, new = (stacked("rolling hills", seeds=(5,), version=v) for v in ("5.2", "6.1"))
    assert texture(new) > texture(old)


# --- vary -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source() -> Image.Image:
    return paint_tiles("a sunset over the mountains", 200, 150, seed=11)[0]


def correlation(a: Image.Image, b: Image.Image) -> float:
    """Correlation of the luma of two images, compared at the same small size."""
    x, y = (luma(pixels(im.resize((50, 50)))).ravel() for im in (a, b))
    return float(np.corrcoef(x, y)[0, 1])


def test_vary_gives_four_distinct_tiles_like_the_source(source):
    tiles = vary(source, seed=3)
    other = paint_tiles("a city skyline at night", 200, 150, seed=12)[0]
    assert [t.size for t in tiles] == [source.size] * 4 and all(t.mode == "RGB" for t in tiles)
    for tile in tiles:
        assert np.abs(pixels(tile) - pixels(source)).mean() > 0.01
        assert correlation(tile, source) > 0.7
        assert correlation(tile, source) > correlation(tile, other) + 0.2
    assert spread(tiles) > 0.01


def test_vary_is_deterministic_and_strength_moves_further(source):
    assert [t.tobytes() for t in vary(source, seed=3)] == [t.tobytes() for t in vary(source, seed=3)]
    assert vary(source, seed=3)[0].tobytes() != vary(source, seed=4)[0].tobytes()
    distance = {
        s: np.mean([np.abs(pixels(t) - pixels(source)).mean() for t in vary(source, seed=3, strength=s)])
        for s in (0.1, 0.9)
    }
    assert distance[0.9] > distance[0.1] * 1.3


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "CMYK", "LA", "I;16"])
def test_vary_accepts_any_image_mode(source, mode):
    tiles = vary(source.convert(mode) if mode != "I;16" else source.convert("L").convert("I;16"), seed=1)
    assert [t.mode for t in tiles] == ["RGB"] * 4
    assert all(t.size == source.size for t in tiles)


@pytest.mark.parametrize("size", [(1, 1), (8, 8), (30, 20), (2048, 64)])
def test_vary_handles_tiny_and_extreme_sizes(size):
    assert [t.size for t in vary(Image.new("RGB", size, (90, 120, 200)), seed=2)] == [size] * 4


# --- mix ------------------------------------------------------------------------------------------


def solid_inputs() -> list[Image.Image]:
    """Three flat colours of different sizes and modes."""
    return [
        Image.new("RGB", (300, 200), (220, 30, 30)),
        Image.new("RGBA", (120, 240), (30, 200, 40, 255)),
        Image.new("RGB", (500, 500), (30, 40, 220)).convert("P", palette=Image.Palette.ADAPTIVE),
    ]


def test_mix_blends_every_input_into_four_different_tiles():
    tiles = mix(solid_inputs(), 192, 128, seed=5)
    assert [t.size for t in tiles] == [(192, 128)] * 4 and all(t.mode == "RGB" for t in tiles)
    targets = np.array([(220, 30, 30), (30, 200, 40), (30, 40, 220)]) / 255
    for tile in tiles:
        a = pixels(tile)
        for target in targets:
            assert (np.abs(a - target).max(-1) < 0.15).mean() > 0.03
    assert spread(tiles) > 0.03


def test_mix_keeps_the_look_of_real_images_and_is_deterministic():
    a = paint_tiles("deep blue ocean", 128, 128, seed=1)[0]
    b = paint_tiles("a red desert", 200, 100, seed=2)[0]
    tiles = mix([a, b], 128, 128, seed=9)
    assert [t.tobytes() for t in tiles] == [t.tobytes() for t in mix([a, b], 128, 128, seed=9)]
    for tile in tiles:
        blue_minus_red = pixels(tile)[..., 2] - pixels(tile)[..., 0]
        assert (blue_minus_red > 0.15).mean() > 0.05 and (blue_minus_red < -0.15).mean() > 0.05


@pytest.mark.parametrize("count", [1, 6])
def test_mix_needs_two_to_five_images(count):
    with pytest.raises(ValueError):
        mix([Image.new("RGB", (8, 8))] * count, 128, 128, seed=1)


SUBJECTS = ("", "castle", "cat", "robot", "person")


def test_every_pair_of_scenes_paints_at_every_aspect():
    """No combination of scene words (with or without a subject) may fail to paint."""
    from providers.procedural import _SCENE_WORDS

    scenes = [vocab.split()[0] for vocab in _SCENE_WORDS.values()]
    shapes = [(96, 96), (128, 72), (72, 128)]
    combinations = [(a, b) for i, a in enumerate(scenes) for b in scenes[i:]]
    for n, (first, second) in enumerate(combinations):
        subject = SUBJECTS[n % len(SUBJECTS)]
        prompt = f"a {subject} {first} on a hill, {second}"
        width, height = shapes[n % len(shapes)]
        for seed in (n, n + 1000):
            style = (None, *STYLES)[n % (len(STYLES) + 1)]
            tiles = paint_tiles(prompt, width, height, seed=seed, style=style, chaos=(n * 7) % 101)
            assert [tile.size for tile in tiles] == [(width, height)] * 4, prompt
