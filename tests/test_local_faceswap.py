"""The local provider's face swap, on real photographs: the face changes, the rest of the target does not."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw, ImageOps

import providers
from fakes import Ctx, provider_settings
from providers import FaceSwapRequest, JobCancelled, ProviderError
from providers.faces import find_face, swap

PHOTOS = Path(skimage.data.__file__).parent
MARK = (0.3, 0.62)  # where the swap face has a dark spot, as a share of its face box: the left cheek


def photo(name: str) -> Image.Image:
    """One of the photographs that ship inside scikit-image."""
    with Image.open(PHOTOS / name) as image:
        return image.convert("RGB")


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return photo("astronaut.png")


@pytest.fixture(scope="module")
def marked_face(astronaut) -> Image.Image:
    """The astronaut mirrored, with a dark spot on one cheek: a face that differs from the target's."""
    face = ImageOps.mirror(astronaut)
    box = find_face(face)
    x, y = box.x + MARK[0] * box.width, box.y + MARK[1] * box.height
    r = 0.04 * box.width
    ImageDraw.Draw(face).ellipse((x - r, y - r, x + r, y + r), fill=(60, 20, 90))
    return face


def on_coffee(face: Image.Image, side: int, at: tuple[int, int]) -> Image.Image:
    """A swap image: the face photo at ``side`` pixels, pasted onto another photograph at ``at``."""
    scene = photo("coffee.png")
    scene.paste(face.resize((side, side), Image.Resampling.LANCZOS), at)
    return scene


def grey(image: Image.Image) -> np.ndarray:
    """The image's lightness as floats."""
    return np.asarray(image.convert("L"), np.float64)


def window(x: float, y: float, face_width: int) -> tuple[slice, slice]:
    """A square around (x, y), a sixth of ``face_width`` across."""
    r = round(face_width / 12)
    return slice(round(y) - r, round(y) + r + 1), slice(round(x) - r, round(x) + r + 1)


def test_the_cascade_finds_the_astronauts_face_and_none_in_the_coffee_or_the_cat(astronaut):
    face = find_face(astronaut)
    assert face is not None
    assert 150 < face.x < 210 and 40 < face.y < 100 and 70 < face.width < 120  # her face (~177, 67, 93)
    assert find_face(photo("coffee.png")) is None
    assert find_face(photo("chelsea.png")) is None


def test_a_larger_stray_match_does_not_beat_the_real_face(astronaut):
    # At this size the cascade also matches a patch of the spacesuit, bigger than her face but with few votes.
    face = find_face(on_coffee(astronaut, 600, (40, 0)))
    expected_x, expected_y = 40 + 177 * 600 / 512, 67 * 600 / 512
    assert abs(face.x - expected_x) < 25 and abs(face.y - expected_y) < 25 and face.width < 140


@pytest.mark.parametrize(("side", "at"), [(360, (200, 20)), (250, (30, 120)), (520, (40, -60))])
def test_the_swap_face_lands_on_the_targets_face_and_nothing_else_changes(astronaut, marked_face, side, at):
    result = swap(astronaut, on_coffee(marked_face, side, at))
    assert result.size == astronaut.size and result.mode == "RGB"
    target = find_face(astronaut)
    changed = np.abs(np.asarray(result, int) - np.asarray(astronaut, int)).max(-1) > 0
    ys, xs = np.nonzero(changed)
    # Only pixels in the target's face box change; the far corners are untouched.
    assert target.x <= xs.min() and xs.max() < target.x + target.width
    assert target.y <= ys.min() and ys.max() < target.y + target.height + target.height // 4
    for corner in (changed[:128, :128], changed[:128, -128:], changed[-128:, :128], changed[-128:, -128:]):
        assert not corner.any()
    inner = window(target.x + target.width / 2, target.y + target.height / 2, target.width * 3)
    assert np.abs(grey(result)[inner] - grey(astronaut)[inner]).mean() > 10
    # The swap face's dark spot is on the target's cheek now, and not on the other cheek.
    y = target.y + MARK[1] * target.height
    spot = window(target.x + MARK[0] * target.width, y, target.width)
    other_cheek = window(target.x + (1 - MARK[0]) * target.width, y, target.width)
    assert grey(result)[spot].min() < grey(astronaut)[spot].min() - 30
    assert grey(result)[other_cheek].min() > grey(astronaut)[spot].min() - 20

def test_a_dim_blue_cast_swap_photo_still_gives_a_face_in_the_targets_colour_and_contrast(astronaut):
    dim_blue = np.asarray(ImageOps.mirror(astronaut), np.float64) * (0.5, 0.6, 0.9)
    source = on_coffee(Image.fromarray(dim_blue.astype(np.uint8)), 360, (200, 20))
    target = find_face(astronaut)
    inner = window(target.x + target.width / 2, target.y + target.height / 2 + 5, target.width * 3)

    def lab(image: Image.Image) -> np.ndarray:
        return cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2LAB)[inner].reshape(-1, 3).astype(np.float64)

    before, after = lab(astronaut), lab(swap(astronaut, source))
    assert np.abs(after.mean(0) - before.mean(0)).max() < 6
    # The spread of lightness (shading) and of blue-yellow stay the target's: not flat, not blotched.
    assert abs(after[:, 0].std() / before[:, 0].std() - 1) < 0.2
    assert abs(after[:, 2].std() / before[:, 2].std() - 1) < 0.5


@pytest.mark.parametrize("faceless", ["coffee.png", "chelsea.png"])
def test_an_image_with_no_face_fails_naming_which_image(astronaut, faceless):
    with pytest.raises(ProviderError, match="^No face was found in the target image$"):
        swap(photo(faceless), astronaut)
    with pytest.raises(ProviderError, match="^No face was found in the swap image$"):
        swap(astronaut, photo(faceless))


def test_any_image_mode_works_and_the_same_inputs_give_the_same_image(astronaut, marked_face):
    source = on_coffee(marked_face, 360, (200, 20))
    first = swap(astronaut, source)
    again = swap(astronaut.convert("RGBA"), source.convert("L").convert("RGB"))
    assert again.mode == "RGB" and again.size == astronaut.size
    assert np.array_equal(np.asarray(swap(astronaut, source)), np.asarray(first))


def test_threads_swapping_at_once_get_what_one_thread_gets(astronaut, marked_face):
    source = on_coffee(marked_face, 360, (200, 20))
    alone = np.asarray(swap(astronaut, source))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: np.asarray(swap(astronaut, source)), range(4)))
    assert all(np.array_equal(result, alone) for result in results)


def test_the_local_provider_swaps_faces_reporting_progress(astronaut, marked_face):
    provider = providers.create("local", provider_settings())
    assert provider.supports("faceswap")
    ctx = Ctx()
    source = on_coffee(marked_face, 360, (200, 20))
    result = provider.run("faceswap", FaceSwapRequest(target=astronaut, swap=source), ctx)
    assert result.image is not None and result.tiles is None and result.grid is None
    assert np.array_equal(np.asarray(result.image), np.asarray(swap(astronaut, source)))
    assert ctx.reported and ctx.reported == sorted(ctx.reported) and max(ctx.reported) < 100

    with pytest.raises(ProviderError, match="swap image"):
        provider.run("faceswap", FaceSwapRequest(target=astronaut, swap=photo("chelsea.png")), Ctx())
    cancelled = Ctx()
    cancelled.stop.set()
    with pytest.raises(JobCancelled):
        provider.run("faceswap", FaceSwapRequest(target=astronaut, swap=source), cancelled)
