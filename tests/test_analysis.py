"""Behaviour of the image analysis behind /describe: real measurements, named colours, four prompts."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from providers.analysis import analyse, aspect_ratio, colour_name, describe
from providers.procedural import paint_tiles


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (300, 200)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def split(top: tuple[int, int, int], bottom: tuple[int, int, int], at: float = 0.5) -> Image.Image:
    """An image with one colour above a horizontal line and another below it."""
    a = np.zeros((200, 300, 3), np.uint8)
    a[: int(200 * at)] = top
    a[int(200 * at):] = bottom
    return Image.fromarray(a)


@pytest.mark.parametrize(
    ("size", "ratio"),
    [((1024, 1024), "1:1"), ((1024, 576), "16:9"), ((576, 1024), "9:16"), ((300, 200), "3:2"),
     ((768, 1024), "3:4"), ((1000, 667), "3:2"), ((1456, 816), "16:9"), ((1001, 1000), "1:1"),
     ((2048, 64), "21:9")],
)
def test_aspect_ratio_is_reduced_or_snapped_to_a_standard_one(size, ratio):
    assert aspect_ratio(*size) == ratio


@pytest.mark.parametrize(
    ("rgb", "names"),
    [((212, 36, 40), {"red"}), ((20, 30, 90), {"navy"}), ((0, 128, 128), {"teal"}),
     ((240, 196, 52), {"golden yellow"}), ((250, 250, 250), {"white"}), ((10, 10, 10), {"black"}),
     ((130, 50, 170), {"purple", "violet"})],
)
def test_colours_get_their_names(rgb, names):
    assert colour_name(rgb) in names


def test_a_red_image_is_red_warm_vivid_and_landscape():
    f = analyse(solid((200, 20, 30)))
    assert f["colours"][0]["name"] in {"red", "crimson"} and f["colours"][0]["share"] > 0.95
    assert f["orientation"] == "landscape" and f["aspect_ratio"] == "3:2"
    assert f["saturation"] > 0.6 and f["labels"]["saturation"] == "vivid"
    assert f["warmth"] > 0.5 and f["labels"]["temperature"] == "warm"


def test_blue_is_cool_and_grey_is_monochrome():
    assert analyse(solid((30, 60, 200)))["labels"]["temperature"] == "cool"
    grey = analyse(Image.linear_gradient("L").resize((200, 300)))
    assert grey["labels"]["saturation"] == "monochrome" and grey["orientation"] == "portrait"


@pytest.mark.parametrize(
    ("rgb", "word"),
    [((15, 15, 25), "dark"), ((70, 70, 70), "low-key"), ((140, 140, 140), "balanced"),
     ((250, 250, 240), "luminous high-key")],
)
def test_brightness_words_follow_the_measured_luma(rgb, word):
    assert analyse(solid(rgb))["labels"]["brightness"] == word


def test_edge_density_separates_busy_from_minimal():
    checks = (np.indices((256, 256)).sum(0) // 4 % 2 * 255).astype(np.uint8)
    busy, flat = analyse(Image.fromarray(checks)), analyse(solid((120, 130, 140), (256, 256)))
    assert busy["edge_density"] > 0.3 > flat["edge_density"]
    assert busy["labels"]["detail"] == "intricate, busy" and flat["labels"]["detail"] == "minimal"
    assert busy["contrast"] > 0.3 > flat["contrast"]


def test_a_bright_sky_over_dark_ground_is_found_with_its_horizon():
    f = analyse(split((120, 180, 240), (40, 60, 30), at=0.3))
    assert f["top_minus_bottom"] > 0.3
    assert f["horizon"] == pytest.approx(0.3, abs=0.05)
    assert "backlit" in f["labels"]["light"] and f["labels"]["scene"] == "an open daylight sky"
    assert "high horizon" in f["labels"]["layout"]


def test_stars_on_a_dark_sky_read_as_night():
    a = np.full((128, 128, 3), 10, np.uint8)
    rng = np.random.default_rng(1)
    a[rng.integers(0, 128, 60), rng.integers(0, 128, 60)] = 255
    assert analyse(Image.fromarray(a))["labels"]["scene"] == "a starry night sky"


def test_describe_gives_four_different_prompts_ending_in_parameters():
    image = split((240, 130, 40), (20, 30, 90))
    prompts = describe(image)
    assert len(prompts) == 4 and len(set(prompts)) == 4
    for prompt in prompts:
        assert "--ar 3:2" in prompt
        assert re.search(r"(--[a-z]+ [\w.:]+)+$", prompt)
        assert not re.search(r"--ar \d+:\d+.*--ar", prompt)
        assert "orange" in prompt or "navy" in prompt


def test_describe_is_deterministic_and_reads_real_pixels():
    ocean = paint_tiles("deep blue ocean", 256, 144, seed=3)[0]
    desert = paint_tiles("a red desert at noon", 256, 144, seed=3)[0]
    assert describe(ocean) == describe(ocean.copy())
    assert describe(ocean) != describe(desert)
    assert all("--ar 16:9" in p for p in describe(ocean))
    assert analyse(ocean)["labels"]["temperature"] == "cool"
    assert analyse(desert)["labels"]["temperature"] == "warm"


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "CMYK", "LA", "I;16", "1"])
def test_any_image_mode_can_be_described(mode):
    image = split((200, 50, 50), (30, 30, 160))
    converted = image.convert("L").convert("I;16") if mode == "I;16" else image.convert(mode)
    prompts = describe(converted)
    assert len(prompts) == 4 and all("--ar 3:2" in p for p in prompts)


def test_transparent_areas_count_as_white():
    clear = Image.new("RGBA", (100, 100), (255, 0, 0, 0))
    assert analyse(clear)["colours"][0]["name"] == "white"


@pytest.mark.parametrize("size", [(1, 1), (3, 500), (2048, 64)])
def test_tiny_and_extreme_images_work(size):
    f = analyse(solid((90, 160, 90), size))
    assert (f["width"], f["height"]) == size
    assert len(describe(solid((90, 160, 90), size))) == 4


def test_figures_are_plain_python_values():
    f = analyse(split((200, 120, 80), (30, 40, 50)))
    expected = {"width", "height", "aspect_ratio", "orientation", "brightness", "contrast", "saturation",
                "warmth", "edge_density", "light_centre", "top_minus_bottom", "centre_minus_surround",
                "symmetry", "horizon", "stars", "colours", "sky", "labels"}
    assert expected <= set(f)
    measured = ("brightness", "contrast", "saturation", "warmth", "edge_density")
    assert all(isinstance(f[k], float) for k in measured)
    assert {"name", "rgb", "hex", "share"} <= set(f["colours"][0])
    assert sum(c["share"] for c in f["colours"]) == pytest.approx(1, abs=0.01)
