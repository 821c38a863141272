"""Procedural, prompt-driven art for the local provider: real images from numpy and Pillow alone.

``paint_tiles`` reads the prompt for colour, scene and mood words, paints four tiles as layered
scenes (sky, sun or moon, terrain silhouettes, water, subjects) at a working resolution, finishes
them (haze, brush texture, bloom, grading) and resizes them to the requested size. ``vary`` and
``mix`` derive new tiles from existing pixels, and ``enrich`` invents finer detail for creative
upscales. Everything is seeded, so the same inputs always give byte-identical images.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from providers import figures, media, subjects

TileCallback = Callable[[int], None]

STYLES = ("raw", "cute", "expressive", "scenic")
MIN_SIDE = 64
MAX_SIDE = 2048
TILE_COUNT = 4
WORK_SIDE = 512  # longest side of the canvas the scenes are painted on before the final resize
_THREADS = max(1, min(TILE_COUNT, os.cpu_count() or 1))  # numpy and Pillow release the GIL
# Every job's tiles are painted on this one pool, as wide as the machine. Painting is CPU-bound, so a
# pool per job (four jobs: four pools) only held more canvases in memory at once, not finished sooner.
_PAINTERS = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="apiframe-paint")

SKY_TOP, SKY_LOW, GROUND, GROUND_DARK, ACCENT, LIGHT = range(6)  # rows of a palette array
_WHITE = np.ones((3, 1, 1), np.float32)
_SAND = np.array([0.86, 0.76, 0.6], np.float32).reshape(3, 1, 1)

# ---------------------------------------------------------------------------------------------
# Prompt vocabulary
# ---------------------------------------------------------------------------------------------

_SCENE_WORDS = {
    "sunset": "sunset sunsets sunrise sunrises dusk dawn twilight sundown",
    "day": "day daytime daylight sunny noon midday morning afternoon",
    "night": "night nights midnight moon moonlight moonlit nighttime nocturnal",
    "space": "space galaxy galaxies stars star starry nebula nebulae cosmos cosmic universe planet planets",
    "mountain": "mountain mountains landscape landscapes peak peaks alps hill hills valley cliffs canyon "
    "volcano",
    "city": "city cities skyline skylines skyscraper skyscrapers futuristic cyberpunk metropolis urban "
    "downtown street streets buildings town",
    "ocean": "ocean oceans sea seas beach beaches wave waves coast coastal shore lake harbor harbour "
    "seascape water",
    "forest": "forest forests tree trees woods woodland jungle pine pines rainforest",
    "desert": "desert deserts dune dunes sand sahara",
    "snow": "snow snowy winter ice icy frozen blizzard snowfall frost",
    "underwater": "underwater reef reefs coral aquarium seabed seafloor undersea",
    "flower": "flower flowers garden gardens bloom blooms blossom blossoms roses tulips meadow floral "
    "petals daisies",
}
_PHRASES = {"golden hour": "sunset", "blue hour": "sunset", "outer space": "space"}
_BACKDROPS = ("mountain", "city", "ocean", "forest", "desert")
_BEACH_WORDS = {"beach", "beaches", "shore", "coast", "coastal", "sand"}
_FUTURE_WORDS = {"futuristic", "cyberpunk", "neon", "scifi", "sci"}

_COLOUR_WORDS = {
    "red": (215, 38, 45), "crimson": (175, 20, 55), "scarlet": (230, 36, 25), "maroon": (120, 20, 35),
    "ruby": (190, 16, 70), "burgundy": (120, 20, 45), "blue": (35, 90, 215), "navy": (20, 30, 95),
    "azure": (40, 130, 240), "cobalt": (0, 71, 171), "sapphire": (20, 60, 180), "indigo": (60, 30, 140),
    "cyan": (0, 200, 230), "teal": (0, 128, 128), "turquoise": (40, 210, 200), "aqua": (60, 220, 220),
    "green": (45, 160, 70), "emerald": (20, 150, 90), "lime": (150, 220, 40), "olive": (120, 130, 40),
    "mint": (150, 230, 190), "jade": (0, 168, 107), "yellow": (245, 215, 50), "golden": (225, 170, 40),
    "gold": (225, 170, 40), "amber": (255, 170, 20), "orange": (245, 125, 30), "coral": (250, 110, 90),
    "peach": (255, 190, 150), "pink": (245, 130, 185), "magenta": (220, 30, 170), "fuchsia": (235, 40, 160),
    "rose": (230, 90, 130), "purple": (125, 50, 170), "violet": (140, 70, 210), "lavender": (180, 160, 230),
    "lilac": (200, 160, 220), "plum": (110, 40, 90), "brown": (125, 80, 45), "chocolate": (95, 55, 30),
    "copper": (185, 100, 50), "bronze": (175, 120, 50), "rust": (170, 70, 30), "beige": (225, 205, 170),
    "tan": (205, 165, 115), "white": (245, 245, 245), "ivory": (250, 245, 225), "cream": (250, 240, 210),
    "silver": (190, 195, 205), "grey": (128, 128, 135), "gray": (128, 128, 135), "black": (15, 15, 20),
}
_MONO_WORDS = {"monochrome", "grayscale", "greyscale", "noir", "monochromatic"}
_DARK_WORDS = {"dark", "gloomy", "moody", "dim", "shadowy", "shadows", "somber", "sombre", "ominous", "grim"}
_BRIGHT_WORDS = {"bright", "sunny", "radiant", "luminous", "glowing", "brilliant", "sunlit", "airy"}
_HAZE_WORDS = {"misty", "mist", "foggy", "fog", "hazy", "haze", "smoky", "smoke", "dreamy", "ethereal"}
_VIVID_WORDS = {"vivid", "vibrant", "colorful", "colourful", "saturated", "psychedelic", "rainbow"}
_MUTED_WORDS = {"muted", "desaturated", "faded", "washed", "dull", "vintage", "subtle"}

_PALETTES = {  # sky top, sky at the horizon, ground, dark ground, accent, light
    "abstract": ((40, 30, 95), (250, 150, 120), (30, 140, 160), (20, 25, 60), (255, 200, 80),
                 (250, 240, 230)),
    "studio": ((55, 65, 95), (225, 195, 165), (85, 70, 85), (25, 20, 32), (255, 160, 110), (255, 235, 210)),
    "day": ((60, 120, 205), (200, 225, 245), (95, 125, 150), (40, 60, 70), (250, 210, 120), (255, 250, 230)),
    "sunset": ((55, 40, 110), (255, 145, 80), (120, 60, 95), (40, 20, 50), (255, 90, 120), (255, 225, 150)),
    "night": ((8, 12, 38), (45, 60, 115), (30, 38, 75), (8, 10, 26), (120, 160, 255), (240, 240, 220)),
    "space": ((5, 5, 22), (40, 22, 85), (65, 35, 115), (10, 6, 28), (225, 80, 200), (150, 220, 255)),
    "futuristic": ((22, 12, 55), (205, 55, 165), (45, 35, 95), (10, 8, 28), (0, 235, 255), (255, 90, 205)),
    "city": ((28, 38, 90), (215, 120, 125), (48, 52, 92), (16, 18, 36), (255, 195, 90), (255, 230, 180)),
    "forest": ((110, 160, 200), (215, 230, 205), (60, 110, 70), (20, 45, 32), (235, 205, 110),
               (255, 245, 210)),
    "ocean": ((35, 105, 185), (175, 215, 235), (30, 90, 140), (10, 40, 72), (240, 250, 255), (255, 245, 220)),
    "desert": ((105, 155, 215), (250, 215, 165), (220, 155, 90), (150, 85, 50), (255, 200, 120),
               (255, 240, 200)),
    "snow": ((130, 160, 205), (232, 238, 248), (212, 222, 240), (115, 135, 170), (180, 210, 255),
             (255, 255, 255)),
    "flower": ((120, 180, 230), (240, 228, 205), (90, 150, 70), (35, 75, 40), (240, 80, 130),
               (255, 225, 120)),
    "underwater": ((20, 110, 150), (10, 45, 80), (200, 180, 130), (20, 60, 75), (110, 230, 220),
                   (215, 255, 250)),
}
_PALETTE_ORDER = ("space", "underwater", "night", "sunset", "futuristic", "snow", "desert", "forest",
                  "flower", "ocean", "day", "city")
# Which named colour (by its order in the prompt) tints which palette row.
_TINT_ROLES = (SKY_TOP, GROUND_DARK, GROUND, SKY_LOW, ACCENT, LIGHT)


@dataclass(frozen=True, eq=False)
class _Spec:
    """What the prompt asks for: scenes, subject, palette and mood."""

    scenes: frozenset[str]
    subject: subjects.Subject | None
    medium: str | None
    sky: str  # "day", "sunset", "night", "space", "studio" or "abstract"
    palette: np.ndarray  # (6, 3) floats in 0..1, rows indexed by SKY_TOP ... LIGHT
    named_colours: bool
    brightness: float
    haze: float
    saturation: float
    mono: bool
    neon: bool
    beach: bool
    futuristic: bool


def _prompt_words(prompt: str) -> tuple[list[str], str]:
    """The lower-case words of a prompt in order, and the prompt as one padded lower-case line."""
    text = " " + " ".join(prompt.lower().split()) + " "
    return re.findall(r"[a-z]+", text), text


def _scenes(words: set[str], text: str) -> frozenset[str]:
    """The scene keys whose words appear in the prompt."""
    found = {scene for scene, vocab in _SCENE_WORDS.items() if words & set(vocab.split())}
    found |= {scene for phrase, scene in _PHRASES.items() if f" {phrase} " in text}
    return frozenset(found)


def _sky_kind(scenes: frozenset[str], subject: subjects.Subject | None) -> str:
    """The backdrop a scene is painted on."""
    for kind in ("space", "underwater", "night", "sunset", "day"):
        if kind in scenes:
            return kind
    if scenes:
        return "day"
    return "studio" if subject else "abstract"


def _palette_key(scenes: frozenset[str], sky: str, futuristic: bool) -> str:
    """The base palette for the scene mix: the first of _PALETTE_ORDER the prompt asks for."""
    if sky in ("studio", "abstract"):
        return sky
    wanted = scenes | ({"futuristic"} if futuristic and "city" in scenes else set())
    return next((key for key in _PALETTE_ORDER if key in wanted), "day")


def _named_colours(words: list[str]) -> list[np.ndarray]:
    """The colours named in the prompt, in order of appearance, without repeats."""
    seen: list[str] = []
    for word in words:
        if word in _COLOUR_WORDS and word not in seen:
            seen.append(word)
    return [np.array(_COLOUR_WORDS[w], np.float32) / 255 for w in seen]


_SCENE_VOCABULARY = {word for vocab in _SCENE_WORDS.values() for word in vocab.split()}
_TIME_WORDS = {"sunset", "day", "night"}


def _with_setting(scenes: frozenset[str], subject: subjects.Subject | None) -> frozenset[str]:
    """The scenes, plus the setting the subject brings when the prompt names no place of its own."""
    if subject is None:
        return scenes
    setting = subjects.SETTINGS.get(subject.family)
    if "helmet" in subject.modifiers:
        setting = "space"
    places = scenes - _TIME_WORDS - {"snow"}
    if setting in (None, "studio", "meadow", "road") or places:
        return scenes
    if setting in ("day", "night") and scenes & _TIME_WORDS:
        return scenes
    return scenes | {setting}


def subject_of(prompt: str) -> tuple[subjects.Subject | None, str]:
    """The subject a prompt names, and a noun phrase for it: "red fox", "bowl of ramen"."""
    ordered, _ = _prompt_words(prompt)
    subject, taken = subjects.find_subject(ordered, _COLOUR_WORDS, _SCENE_VOCABULARY)
    if subject is None:
        return None, ""
    colour = next((word for word in ordered if word in taken), None)
    phrase = f"{colour} {subject.word}" if colour else subject.word
    at = ordered.index(subject.word) if subject.word in ordered else -1
    if 0 <= at < len(ordered) - 2 and ordered[at + 1] == "of":
        phrase += f" of {ordered[at + 2]}"
    return subject, phrase


def _parse_prompt(prompt: str) -> _Spec:
    """Read the colour, scene, subject and mood words of a prompt."""
    ordered, text = _prompt_words(prompt)
    words = set(ordered)
    scenes = _scenes(words, text)
    subject, taken = subjects.find_subject(ordered, _COLOUR_WORDS, _SCENE_VOCABULARY)
    scenes = _with_setting(scenes, subject)
    futuristic = bool(words & _FUTURE_WORDS)
    sky = _sky_kind(scenes, subject)
    palette = np.array(_PALETTES[_palette_key(scenes, sky, futuristic)], np.float32) / 255
    colours = _named_colours([w for w in ordered if w not in taken])
    palette = _tint(palette, colours)
    neon = "neon" in words
    if "pastel" in words:
        palette = _pastel(palette)
    if neon:
        palette = _neon(palette)
    mono = bool(words & _MONO_WORDS) or " black and white " in text or " b&w " in text
    return _Spec(
        scenes=scenes,
        subject=subject,
        medium=subjects.medium(text),
        sky=sky,
        palette=palette,
        named_colours=bool(colours),
        brightness=0.72 if words & _DARK_WORDS else 1.1 if words & _BRIGHT_WORDS else 1.0,
        haze=0.55 if words & _HAZE_WORDS else 0.0,
        saturation=1.3 if words & _VIVID_WORDS else 0.6 if words & _MUTED_WORDS else 1.0,
        mono=mono,
        neon=neon,
        beach=bool(words & _BEACH_WORDS) and "ocean" in scenes,
        futuristic=futuristic,
    )


# ---------------------------------------------------------------------------------------------
# Colour helpers
# ---------------------------------------------------------------------------------------------


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """Convert (..., 3) RGB in 0..1 to HSV with hue in 0..1."""
    mx, mn = rgb.max(-1), rgb.min(-1)
    delta = mx - mn
    safe = np.where(delta > 0, delta, 1)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hue = np.where(mx == r, (g - b) / safe, np.where(mx == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = np.where(delta > 0, (hue / 6) % 1, 0)
    sat = np.where(mx > 0, delta / np.where(mx > 0, mx, 1), 0)
    return np.stack([hue, sat, mx], -1).astype(np.float32)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Convert (..., 3) HSV (hue in 0..1) back to RGB in 0..1."""
    h, s, v = hsv[..., 0] % 1, np.clip(hsv[..., 1], 0, 1), np.clip(hsv[..., 2], 0, 1)
    k = (np.array([5, 3, 1], np.float32) + h[..., None] * 6) % 6
    return (v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)).astype(
        np.float32
    )


def _tint(palette: np.ndarray, colours: list[np.ndarray]) -> np.ndarray:
    """Pull the palette rows towards the named colours (first colour dominates, lights only halfway)."""
    if not colours:
        return palette
    hsv = _rgb_to_hsv(palette)
    tinted = palette.copy()
    for i, role in enumerate(_TINT_ROLES):
        th, ts, tv = _rgb_to_hsv(colours[i % len(colours)])
        h, s, v = hsv[role]
        if ts < 0.12:  # black, white, grey: change lightness and colourfulness only
            target = (h, s * 0.4, v + (tv - v) * 0.55)
        else:
            target = (th, s + (ts - s) * 0.7, v + (tv - v) * 0.3)
        weight = 0.5 if role in (ACCENT, LIGHT) else 1.0
        tinted[role] = _mix(palette[role], _hsv_to_rgb(np.array(target, np.float32)), weight)
    return tinted


def _pastel(palette: np.ndarray, amount: float = 0.55) -> np.ndarray:
    """Soften a palette into light, milky pastel tones."""
    hsv = _rgb_to_hsv(palette)
    hsv[:, 1] *= 1 - amount * 0.9
    hsv[:, 2] += (1 - hsv[:, 2]) * amount
    return _hsv_to_rgb(hsv)


def _neon(palette: np.ndarray) -> np.ndarray:
    """Darken the backdrop and push the accents to glowing, saturated light."""
    hsv = _rgb_to_hsv(palette)
    hsv[:, 1] += (1 - hsv[:, 1]) * 0.6
    hsv[[SKY_TOP, GROUND, GROUND_DARK], 2] *= 0.55
    hsv[[ACCENT, LIGHT], 2] = 1.0
    return _hsv_to_rgb(hsv)


def _shift_hues(palette: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate every palette hue by ``degrees``."""
    hsv = _rgb_to_hsv(palette)
    hsv[:, 0] += degrees / 360
    return _hsv_to_rgb(hsv)


def _mix(a: np.ndarray, b: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    """Linear interpolation from ``a`` to ``b``."""
    return a + (b - a) * t


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at ``edge0`` to 1 at ``edge1``."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0, 1)
    return t * t * (3 - 2 * t)


def _luma(planes: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of float colour planes (3, ...)."""
    return 0.299 * planes[0] + 0.587 * planes[1] + 0.114 * planes[2]


# ---------------------------------------------------------------------------------------------
# Randomness and canvas
# ---------------------------------------------------------------------------------------------


def _key(*parts: object) -> int:
    """A stable 64-bit integer from the parts (unlike ``hash``, the same in every process)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big")


class _Dice:
    """Random draws shared by the four tiles, each pulled towards its own stream by ``spread``."""

    def __init__(self, key: int, tile: int, spread: float) -> None:
        self.shared = np.random.default_rng([key, 0])
        self.own = np.random.default_rng([key, tile + 1])
        self.spread = spread
        self.cos, self.sin = math.cos(spread * math.pi / 2), math.sin(spread * math.pi / 2)

    def uniform(
        self, low: float = 0.0, high: float = 1.0, size: int | tuple[int, ...] | None = None
    ) -> float | np.ndarray:
        """Uniform draw(s) in [low, high)."""
        a = self.shared.uniform(low, high, size)
        return a + (self.own.uniform(low, high, size) - a) * self.spread

    def normal(self, size: int | tuple[int, ...] | None = None) -> float | np.ndarray:
        """Standard normal draw(s); the blend keeps unit variance."""
        a = self.shared.standard_normal(size, dtype=np.float32)
        b = self.own.standard_normal(size, dtype=np.float32)
        return a * self.cos + b * self.sin

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high]."""
        return int(self.uniform(low, high + 0.999))


def _beyond(points: np.ndarray, idx: np.ndarray, octave: int) -> tuple[np.ndarray, np.ndarray]:
    """A profile's control ``points`` carried on past both ends for the indices ``idx`` reach, and ``idx``
    shifted to match: a window wider than the canvas (pan, zoom out) reads before 0 and past the last.

    The points within the canvas stay as drawn, and the dice is not drawn from again (every later draw,
    and so the scene inside the canvas, stays as it was); the points beyond come from a generator of
    their own, seeded by these, the same for every window.
    """
    before, after = max(0, -int(idx.min())), max(0, int(idx.max()) + 2 - len(points))
    if not before and not after:
        return points, idx
    seed = np.frombuffer(points[:4].astype(np.float32).tobytes(), np.uint32).tolist()
    left = np.random.default_rng([octave, 0, *seed]).standard_normal(before, np.float32)  # -1, -2, ...
    right = np.random.default_rng([octave, 1, *seed]).standard_normal(after, np.float32)
    return np.concatenate([left[::-1], points.astype(np.float32), right]), idx + before


class _Canvas:
    """A float RGB canvas (or a window of one) with its coordinate grids, palette, dice and noise."""

    def __init__(self, width: int, height: int, dice: _Dice, palette: np.ndarray,
                 view: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)) -> None:
        self.w, self.h = width, height
        self.view = view  # the part of the frame (left, top, right, bottom; the frame is 0..1) painted
        x0, y0, x1, y1 = view
        self.px = height / (y1 - y0)  # pixels per unit of normalised height, also in windows
        self.aspect = (width / (x1 - x0)) / self.px
        self.ys = (y0 + (y1 - y0) * (np.arange(height, dtype=np.float32) + 0.5) / height)[:, None]
        self.xs = (x0 + (x1 - x0) * (np.arange(width, dtype=np.float32) + 0.5) / width)[None, :]
        self.dice = dice
        self.pal = palette.reshape(-1, 3, 1, 1)  # each row broadcasts over the planes
        self.rgb = np.zeros((3, height, width), np.float32)  # planar: fast to blend
        self.sun: tuple[float, float] | None = None

    def around(self, cx: float, cy: float, radius: float) -> _Canvas:
        """A window onto the square of half-side ``radius`` around (cx, cy); painting it paints here."""
        x0 = int(np.clip(self.col_of(cx - radius / self.aspect), 0, self.w - 1))
        x1 = int(np.clip(self.col_of(cx + radius / self.aspect) + 2, x0 + 1, self.w))
        y0 = int(np.clip(self.row_of(cy - radius), 0, self.h - 1))
        y1 = int(np.clip(self.row_of(cy + radius) + 2, y0 + 1, self.h))
        window = copy.copy(self)
        window.rgb, window.xs, window.ys = self.rgb[:, y0:y1, x0:x1], self.xs[:, x0:x1], self.ys[y0:y1]
        window.h, window.w = y1 - y0, x1 - x0
        return window

    def box(self, x0: int, y0: int, x1: int, y1: int) -> _Canvas:
        """A window onto the pixels [x0, x1) x [y0, y1); painting it paints here."""
        window = copy.copy(self)
        window.rgb, window.xs, window.ys = self.rgb[:, y0:y1, x0:x1], self.xs[:, x0:x1], self.ys[y0:y1]
        window.h, window.w = y1 - y0, x1 - x0
        return window

    def _resize(self, grid: np.ndarray, width: int, height: int) -> np.ndarray:
        """Bicubic resize of a float grid, from a randomly shifted window so cells never line up."""
        gh, gw = grid.shape
        ox, oy = self.dice.own.uniform(0, 0.5, 2) if min(gh, gw) > 2 else (0.0, 0.0)
        box = (ox, oy, gw - 0.5 + ox, gh - 0.5 + oy)
        return np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC, box))

    def noise(self, cells_y: float, cells_x: float) -> np.ndarray:
        """Smooth value noise (about unit variance) with the given number of cells."""
        gy, gx = max(2, min(round(cells_y), self.h)), max(2, min(round(cells_x), self.w))
        return self._resize(self.dice.normal((gy, gx)), self.w, self.h)

    def fbm(self, cells: float, octaves: int = 5, stretch: float = 1.0) -> np.ndarray:
        """Fractal noise with zero mean and unit deviation, built coarse to fine; ``stretch`` widens it."""
        gy, gx = max(2, round(cells)), max(2, round(cells * self.aspect / stretch))
        total = self.dice.normal((gy, gx))
        for octave in range(1, octaves):
            if gy * 2 > self.h / 3:
                break
            gy, gx = gy * 2, gx * 2
            total = self._resize(total, gx, gy) + self.dice.normal((gy, gx)) * 0.5**octave
        total = self._resize(total, self.w, self.h)
        return (total - total.mean()) / (total.std() + 1e-6)

    def curve(self, cells: float, octaves: int = 4, ridged: bool = False) -> np.ndarray:
        """A 1-D profile across the width, normalised to 0..1 (ridged gives sharp peaks)."""
        total = np.zeros(self.w, np.float32)
        for octave in range(octaves):
            k = cells * self.aspect * 2**octave
            points = self.dice.normal(int(k) + 2)
            pos = self.xs[0] * k
            idx = np.floor(pos).astype(np.int64)
            points, idx = _beyond(points, idx, octave)
            t = pos - np.floor(pos)
            t = t * t * (3 - 2 * t)
            value = points[idx] * (1 - t) + points[idx + 1] * t
            total += (1 - np.abs(value) if ridged else value) * 0.5**octave
        total -= total.min()
        return total / (total.max() + 1e-6)

    def dist(self, cx: float, cy: float) -> np.ndarray:
        """Distance of every pixel from (cx, cy), in units of the canvas height."""
        return np.sqrt(((self.xs - cx) * self.aspect) ** 2 + (self.ys - cy) ** 2)

    def paint(self, colour: np.ndarray, alpha: np.ndarray, top: int = 0) -> None:
        """Blend ``colour`` over the rows from ``top`` down with coverage ``alpha`` (for those rows)."""
        region = self.rgb[:, top:]
        region += (colour - region) * alpha

    def add(self, colour: np.ndarray, amount: np.ndarray, top: int = 0) -> None:
        """Add light of ``colour`` scaled by ``amount`` (for those rows) to the rows from ``top`` down."""
        region = self.rgb[:, top:]
        region += colour * amount

    def mask(self, draw: Callable[[ImageDraw.ImageDraw, float], None]) -> np.ndarray:
        """Coverage 0..1 of shapes drawn by ``draw(d, scale)`` at twice the size (for antialiasing)."""
        image = Image.new("L", (self.w * 2, self.h * 2), 0)
        draw(ImageDraw.Draw(image), 2)
        return np.asarray(image.reduce(2), np.float32) / 255

    def row(self, y: float) -> int:
        """The pixel row of a normalised height, clamped to the canvas."""
        _, y0, _, y1 = self.view
        return int(min(max((y - y0) / (y1 - y0), 0), 1) * (self.h - 1))

    def row_of(self, y: float) -> float:
        """The (unclamped, fractional) pixel row of a normalised frame height."""
        return (y - self.view[1]) * self.px

    def col_of(self, x: float) -> float:
        """The (unclamped, fractional) pixel column of a normalised frame width."""
        x0, _, x1, _ = self.view
        return (x - x0) / (x1 - x0) * self.w


def _ridge_alpha(c: _Canvas, ridge: np.ndarray, top: int) -> np.ndarray:
    """Antialiased coverage of everything below a ridge line (normalised heights per column)."""
    return np.clip((c.ys[top:] - ridge[None, :]) * c.px + 0.5, 0, 1)


# ---------------------------------------------------------------------------------------------
# Backdrops
# ---------------------------------------------------------------------------------------------


def _sky(c: _Canvas, horizon: float) -> None:
    """A vertical gradient from the sky colour to the horizon glow, gently mottled."""
    t = np.clip(c.ys / horizon, 0, 1) ** 1.5
    rows = _mix(c.pal[SKY_TOP], c.pal[SKY_LOW], t)
    c.rgb[:] = rows * (1 + 0.05 * c.fbm(1.5, 3))


def _sun(c: _Canvas, horizon: float, kind: str) -> None:
    """A sun (low and large at sunset) or a cratered moon at night, with a wide glow."""
    d = c.dice
    x = d.uniform(0.25, 0.75)
    if kind == "sunset":
        y, radius, glow = horizon - d.uniform(0.02, 0.12), d.uniform(0.06, 0.1), 0.9
    elif kind == "night":
        y, radius, glow = d.uniform(0.15, 0.35), d.uniform(0.04, 0.07), 0.45
    else:
        y, radius, glow = d.uniform(0.12, 0.3), d.uniform(0.04, 0.06), 0.4
    c.sun = (x, y)
    light, accent = c.pal[LIGHT], c.pal[ACCENT]
    near = c.around(x, y, radius * 1.2)
    disc = np.clip((radius - near.dist(x, y)) * c.px * 0.7, 0, 1)
    if kind == "night":
        disc *= 1 - 0.12 * np.clip(near.fbm(3, 3), 0, 2)
    near.paint(_mix(light, _WHITE, 0.4), disc)
    c.add(_mix(light, accent, 0.35), np.exp(-c.dist(x, y) / (radius * 3.5)) * glow)
    c.add(_mix(c.pal[SKY_LOW], light, 0.5), np.exp(-np.abs(c.ys - horizon) / 0.08) * glow * 0.25)


def _clouds(c: _Canvas, horizon: float) -> None:
    """Wide, soft clouds: bright where thin, a little darker in their dense cores."""
    density = _smoothstep(0.6, 1.9, c.fbm(2.5, stretch=4.0)) * _smoothstep(horizon, horizon - 0.25, c.ys)
    lit = _mix(c.pal[SKY_LOW], c.pal[LIGHT], 0.5)
    shade = _mix(c.pal[SKY_TOP], c.pal[SKY_LOW], 0.35)
    colour = _mix(lit, shade, np.clip(density * 1.2, 0, 1))
    c.paint(colour, density * 0.7)


def _rays(c: _Canvas, amount: float) -> None:
    """Crepuscular rays fanning out from the sun."""
    sx, sy = c.sun
    angle = np.arctan2(c.ys - sy, (c.xs - sx) * c.aspect) / (2 * np.pi)
    spokes = c.dice.uniform(0, 1, 40) ** 3
    beams = np.interp(angle, np.linspace(-0.5, 0.5, 40, endpoint=False), spokes, period=1)
    c.add(c.pal[LIGHT], beams * np.exp(-c.dist(sx, sy) / 0.5) * amount * 0.35)


def _stars(c: _Canvas, count: int, fade_below: float) -> None:
    """Sharp star points with soft halos on the brightest, fading out towards the horizon."""
    d = c.dice
    xs = (d.uniform(0, 1, count) * (c.w - 1)).astype(np.int32)
    ys = (d.uniform(0, 1, count) * (c.h - 1)).astype(np.int32)
    level = d.uniform(0, 1, count) ** 4
    field = np.zeros((c.h, c.w), np.float32)
    field[ys, xs] = level
    halo = Image.fromarray((field * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.6))
    light = field + np.asarray(halo, np.float32) / 255 * 3
    c.add(_mix(c.pal[LIGHT], _WHITE, 0.6), light * _smoothstep(fade_below, 0.0, c.ys))


def _nebula(c: _Canvas) -> None:
    """Glowing gas clouds with filaments and dark dust lanes."""
    gas = _smoothstep(-0.4, 1.8, c.fbm(1.5))
    filaments = 1 - np.abs(c.fbm(3))
    tone = _smoothstep(-1.2, 1.2, c.fbm(1))
    colour = _mix(c.pal[ACCENT], c.pal[SKY_LOW] * 1.4, tone)
    c.rgb += colour * (gas * (0.45 + 0.55 * np.clip(filaments, 0, 1)) * 0.9)
    c.rgb *= (1 - 0.45 * _smoothstep(0.6, 1.8, c.fbm(2.5)))


def _planet(c: _Canvas) -> None:
    """A banded planet lit from one side, with a thin glowing atmosphere."""
    d = c.dice
    cx, cy, r = d.uniform(0.15, 0.85), d.uniform(0.2, 0.8), d.uniform(0.1, 0.22)
    light_x, light_y = d.uniform(-0.8, 0.8), d.uniform(-0.8, 0.2)
    w = c.around(cx, cy, r * 1.3)
    dx, dy = (w.xs - cx) * c.aspect / r, (w.ys - cy) / r
    rr = dx * dx + dy * dy
    inside = np.clip((1 - np.sqrt(rr)) * r * c.px, 0, 1)
    nz = np.sqrt(np.clip(1 - rr, 0, 1))
    lambert = np.clip(dx * light_x + dy * light_y + nz * 0.6, 0, 1)
    bands = 0.5 + 0.5 * np.sin(dy * d.uniform(8, 16) + 2 * w.fbm(2, 2))
    surface = _mix(c.pal[GROUND], c.pal[ACCENT], (bands * 0.6)) * (0.08 + lambert)
    w.paint(surface, inside)
    rim = np.exp(-np.abs(np.sqrt(rr) - 1) * r * c.px / 4) * (0.3 + lambert)
    w.add(_mix(c.pal[LIGHT], c.pal[SKY_LOW], 0.4), rim * 0.5)


def _studio(c: _Canvas) -> None:
    """A portrait backdrop: a soft radial light behind the subject and floating bokeh."""
    d = c.dice
    t = np.clip(c.dist(d.uniform(0.4, 0.6), d.uniform(0.3, 0.45)) / 0.9, 0, 1)
    c.rgb[:] = _mix(c.pal[SKY_LOW], c.pal[SKY_TOP], t**0.8)
    c.rgb *= (1 + 0.06 * c.fbm(2, 3))
    _bokeh(c, 12, 0.25)


def _abstract(c: _Canvas) -> None:
    """A flowing mesh gradient of the palette, folded like silk, with fine contours and glossy orbs."""
    d = c.dice
    gh, gw = max(8, c.h // 4), max(8, c.w // 4)
    v, u = np.meshgrid(np.linspace(0, 1, gh), np.linspace(0, c.aspect, gw), indexing="ij")
    warp = [_upsample(d.normal((3, 3)), gw, gh) for _ in "uv"]
    u, v = u + 0.25 * warp[0], v + 0.25 * warp[1]
    total, colour = np.zeros((gh, gw), np.float32), np.zeros((3, gh, gw), np.float32)
    for row in (SKY_TOP, SKY_LOW, GROUND, GROUND_DARK, ACCENT, ACCENT):
        cx, cy, spread = d.uniform(0, c.aspect), d.uniform(0, 1), d.uniform(0.15, 0.35)
        weight = np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / spread**2) + 1e-4
        total += weight
        colour += weight * c.pal[row]
    folds = 1 + 0.18 * np.sin(2 * np.pi * (u * d.uniform(-1, 1) + v * d.uniform(0.8, 1.6) + 0.3 * warp[0]))
    smooth = _to_image(colour / total * folds).resize((c.w, c.h), Image.Resampling.BICUBIC)
    c.rgb[:] = _to_planes(smooth)
    lines = _smoothstep(0.44, 0.5, np.abs((c.fbm(1.2, 3) * 3) % 1 - 0.5))
    c.add(c.pal[LIGHT], lines * 0.15)
    for i in range(d.integer(0, 3)):
        _orb(c, c.pal[(ACCENT, SKY_LOW, GROUND)[i]])


def _orb(c: _Canvas, colour: np.ndarray) -> None:
    """A glossy sphere with a soft shadow."""
    d = c.dice
    cx, cy, r = d.uniform(0.1, 0.9), d.uniform(0.15, 0.85), d.uniform(0.05, 0.16)
    shadow = c.around(cx + 0.02, cy + 0.03, r * 1.8)
    shadow.rgb *= (1 - 0.35 * np.exp(-((shadow.dist(cx + 0.02, cy + 0.03) / (r * 1.15)) ** 4)))
    ball = c.around(cx, cy, r * 1.05)
    inside = np.clip((r - ball.dist(cx, cy)) * c.px * 0.7, 0, 1)
    shade = 0.45 + 0.55 * np.clip(1 - ball.dist(cx - r * 0.35, cy - r * 0.35) / (r * 1.6), 0, 1)
    ball.paint(colour * shade, inside)
    glint = np.exp(-((ball.dist(cx - r * 0.4, cy - r * 0.4) / (r * 0.18)) ** 2)) * 0.5
    ball.add(_WHITE, glint * inside)


def _bokeh(c: _Canvas, count: int, strength: float) -> None:
    """Soft out-of-focus discs of light in palette colours."""
    d = c.dice
    layer = Image.new("RGB", (c.w, c.h))
    draw = ImageDraw.Draw(layer)
    colours = c.pal[[LIGHT, ACCENT, SKY_LOW]].reshape(3, 3)
    for _ in range(count):
        x, y, r = d.uniform(0, c.w), d.uniform(0, c.h * 0.85), d.uniform(0.015, 0.07) * c.h
        tone = colours[d.integer(0, 2)] * d.uniform(0.4, 1.0)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v * 255) for v in tone))
    layer = layer.filter(ImageFilter.GaussianBlur(max(1.0, c.h / 250)))
    c.rgb += _to_planes(layer) * strength


# ---------------------------------------------------------------------------------------------
# Terrain and subjects
# ---------------------------------------------------------------------------------------------


def _mountains(c: _Canvas, horizon: float, layers: int, rounded: bool, snowcaps: bool, haze: float) -> None:
    """Layered ridges receding into the haze, lit from one side, optionally snow-capped."""
    pal, d = c.pal, c.dice
    texture = c.fbm(6, 3)
    for j in range(layers):
        t = j / max(layers - 1, 1)
        base = horizon + 0.04 + 0.3 * t * t
        height = d.uniform(0.16, 0.3) * (1 - 0.45 * t) * (0.55 if rounded else 1)
        profile = c.curve(d.uniform(0.8, 1.6) + t, 3 if rounded else 5, ridged=not rounded)
        ridge = base - height * (profile if rounded else profile**1.4)
        top = c.row(ridge.min() - 0.01)
        alpha = _ridge_alpha(c, ridge, top)
        below = c.ys[top:] - ridge
        depth = np.clip(below / 0.35, 0, 1)
        light = 1 + 0.2 * _facets(c, ridge, below) * (1 - 0.6 * depth)
        shade = (light - 0.25 * depth) * (1 + 0.07 * texture[top:])
        body = _mix(pal[GROUND], pal[GROUND_DARK], t)
        body = _mix(body, pal[SKY_LOW], min(1.0, (0.55 + haze) * (1 - t) ** 1.3))
        colour = body * shade
        if snowcaps and t < 0.6:  # only the far ranges are high enough to hold snow
            snowline = base - height * (0.55 + 0.12 * texture[top:])  # only the high peaks rise above it
            cap = np.clip((snowline - c.ys[top:]) * c.h * 0.5, 0, 1) * (0.6 + 0.4 * light)
            colour = _mix(colour, _mix(pal[LIGHT], pal[SKY_LOW], 0.15 + 0.5 * (1 - t)), cap)
        mist = np.clip((c.ys[top:] - ridge) / 0.12, 0, 1) * (0.25 + haze) * (1 - t)
        colour = _mix(colour, pal[SKY_LOW], mist)
        c.paint(colour, alpha, top)


def _facets(c: _Canvas, ridge: np.ndarray, below: np.ndarray, sharpness: float = 3.0) -> np.ndarray:
    """Sun side (+1) and shadow side (-1) of the slopes under a ridge, split along diagonal creases."""
    kernel = np.ones(max(3, c.w // 60), np.float32)
    slope = np.convolve(np.gradient(ridge) * c.w, kernel / kernel.size, mode="same")
    shift = np.clip(np.arange(c.w)[None, :] + (below * c.h * 0.7).astype(np.int32), 0, c.w - 1)
    return np.tanh(slope * sharpness)[shift]


def _forest(c: _Canvas, horizon: float, rows: int) -> None:
    """Rows of fir trees, smaller and hazier towards the horizon, on a dark forest floor."""
    pal, d = c.pal, c.dice
    for j in range(rows):
        t = j / max(rows - 1, 1)
        base = horizon + 0.03 + 0.33 * t**1.3
        tree_h = (0.1 + 0.22 * t) * d.uniform(0.85, 1.2)
        spacing = tree_h * 0.32 * c.h
        count = int(c.w / spacing) + 3
        xs = (np.arange(count) - 1 + d.uniform(-0.45, 0.45, count)) * spacing
        heights = tree_h * c.h * d.uniform(0.6, 1.25, count)
        bases = c.row_of(base) + d.uniform(-0.02, 0.02, count) * c.h

        alpha = c.mask(lambda canvas, s, row=(xs, heights, bases, base): _firs(canvas, s, c, *row))
        body = _mix(_mix(pal[GROUND], pal[GROUND_DARK], 0.3 + 0.7 * t), pal[SKY_LOW], 0.6 * (1 - t) ** 1.5)
        shade = 1 - 0.25 * np.clip((c.ys - base) / 0.3, 0, 1)
        c.paint(body * shade, alpha)


def _firs(draw: ImageDraw.ImageDraw, s: float, c: _Canvas, xs: np.ndarray, heights: np.ndarray,
          bases: np.ndarray, floor: float) -> None:
    """Draw one row of tiered fir trees standing on a solid forest floor, at scale ``s``."""
    if c.row_of(floor) < c.h:  # the floor may lie below the frame, under a hill
        draw.rectangle((0, c.row_of(floor) * s, c.w * s, c.h * s), fill=255)
    for x, height, base in zip((xs * s).tolist(), (heights * s).tolist(), (bases * s).tolist(), strict=True):
        for tier in range(4):
            top = base - height + tier * height * 0.2
            bottom = base - height * (0.55 - tier * 0.17)
            half = height * (0.12 + tier * 0.05)
            draw.polygon([(x, top), (x - half, bottom), (x + half, bottom)], fill=255)


def _city(c: _Canvas, horizon: float, futuristic: bool, waterfront: bool, lights: bool) -> None:
    """Two layers of buildings: hazy far towers and a near skyline, lit windows after dark."""
    pal, d = c.pal, c.dice
    base = horizon
    for t in (0.0, 1.0):
        base = horizon if waterfront else horizon + 0.02 + d.uniform(0.12, 0.2) * t
        shades = _skyline(c, base, t, futuristic)
        if lights:
            body = _mix(_mix(pal[GROUND], pal[GROUND_DARK], t), pal[SKY_LOW], 0.45 * (1 - t))
        else:
            body = _mix(_mix(pal[GROUND], pal[SKY_LOW], 0.35 - 0.2 * t), pal[SKY_LOW], 0.45 * (1 - t))
        coverage = (shades > 0).astype(np.float32)
        if not waterfront:
            coverage[c.row(base):] = 1
        c.paint(body * (0.75 + 0.35 * shades), coverage)
        windows = _windows(c, shades, t, futuristic)
        if lights:
            c.add(pal[ACCENT] if futuristic else pal[LIGHT], windows)
        else:  # glass reflecting the sky
            c.paint(_mix(pal[SKY_TOP], pal[GROUND_DARK], 0.4), np.minimum(windows, 1) * 0.6)
    if not waterfront:  # a wet street mirroring the buildings and their lights
        top = c.row(base)
        wet = _to_image(_reflect(c, top, 2)).filter(ImageFilter.GaussianBlur(c.h / 150))
        c.rgb[:, top:] = _mix(_to_planes(wet) * 0.7, pal[GROUND_DARK] if lights else pal[GROUND], 0.5)


def _windows(c: _Canvas, shades: np.ndarray, t: float, futuristic: bool) -> np.ndarray:
    """Light from a grid of randomly lit windows on the buildings, with a little glow."""
    cell = max(2.0, c.w * (0.008 + 0.005 * t))
    col = (np.arange(c.w) / cell).astype(np.int32)
    row = (np.arange(c.h) / (cell * 1.6)).astype(np.int32)
    lit = c.dice.uniform(0, 1, (64, 64)) < (0.35 if futuristic else 0.28)
    holes = ((np.arange(c.h) % (cell * 1.6)) < cell * 0.8)[:, None] & ((np.arange(c.w) % cell) < cell * 0.55)
    windows = (holes & lit[row[:, None] % 64, col[None, :] % 64] & (shades > 0.05)).astype(np.float32)
    glow = Image.fromarray((windows * 255).astype(np.uint8)).filter(ImageFilter.BoxBlur(2))
    glow = np.asarray(glow, np.float32)
    return windows * (0.55 + 0.45 * t) + glow * (0.6 * (0.5 + t) / 255)


def _skyline(c: _Canvas, base: float, t: float, futuristic: bool) -> np.ndarray:
    """Building silhouettes along ``base``; each building's value (0..1) shades its facade."""
    d = c.dice
    image = Image.new("L", (c.w, c.h), 0)
    draw = ImageDraw.Draw(image)
    x = -d.uniform(0, 20)
    tall = 1.35 if futuristic else 1.0
    while x < c.w:
        width = d.uniform(0.035, 0.09) * c.h * (1 + 0.5 * t)
        height = d.uniform(0.08, 0.28) * tall * c.h
        if d.uniform() < 0.18:
            height *= 1.6
        top = c.row_of(base) - height
        draw.rectangle((x, top, x + width, c.row_of(base)), fill=int(d.uniform(60, 255)))
        if d.uniform() < (0.45 if futuristic else 0.2):
            draw.rectangle((x + width * 0.45, top - height * 0.18, x + width * 0.55, top), fill=200)
        x += width + d.uniform(-0.2, 0.15) * width
    return np.asarray(image, np.float32) / 255


def _reflect(c: _Canvas, top: int, ripple: float) -> np.ndarray:
    """The canvas above row ``top`` mirrored into the rows below it, rippled sideways."""
    rows = np.arange(top, c.h)
    depth = ((rows - top) / max(c.h - top, 1)).astype(np.float32)[:, None]
    shift = c.noise(c.h / 6, c.w / 60)[top:] * ripple * (0.15 + depth)
    src_y = np.clip(2 * top - rows - 1, 0, top - 1)[:, None]
    src_x = np.clip(np.arange(c.w)[None, :] + shift, 0, c.w - 1).astype(np.int32)
    return c.rgb[:, src_y, src_x]


def _water(c: _Canvas, horizon: float, beach: bool) -> None:
    """Rippled reflections of everything above the horizon, sun glitter and a foamy shore."""
    pal = c.pal
    top = c.row(horizon)
    depth = ((np.arange(top, c.h) - top) / max(c.h - top, 1)).astype(np.float32)[:, None]
    deep = _mix(pal[SKY_TOP], pal[GROUND_DARK], 0.5)
    water = _reflect(c, top, 14) * (0.9 - 0.35 * depth) + deep * (0.12 + 0.45 * depth)
    glints = _smoothstep(1.2, 2.4, c.noise(c.h / 3, c.w / 30)[top:]) * (0.3 + depth)
    column = np.exp(-np.abs(c.xs - c.sun[0]) * c.aspect / (0.05 + 0.2 * depth)) if c.sun else 0.1
    water += pal[LIGHT] * (glints * (0.2 + 0.8 * column))
    c.rgb[:, top:] = water
    c.add(pal[LIGHT], np.exp(-np.abs(c.ys - horizon) * c.h / 2.5) * 0.15)
    if beach:
        _shore(c, c.dice.uniform(0.78, 0.86))


def _shore(c: _Canvas, level: float) -> None:
    """A sandy beach in the foreground with a wavy waterline and lines of foam."""
    pal = c.pal
    line = level + 0.05 * (c.curve(1.2, 3) - 0.5)
    top = c.row(line.min() - 0.06)
    sand = _mix(_mix(pal[GROUND], pal[LIGHT], 0.5), _SAND, 0.75)
    wet = np.clip((c.ys[top:] - line) / 0.05, 0, 1)
    c.paint(sand * (0.75 + 0.25 * wet), _ridge_alpha(c, line, top), top)
    for offset, strength in ((0.0, 0.9), (0.025, 0.45), (0.055, 0.3)):
        edge = line - offset
        broken = _smoothstep(-0.5, 0.8, c.noise(c.h / 20, c.w / 8)[top:])
        foam = np.exp(-(((c.ys[top:] - edge) * c.h / 2.2) ** 2)) * broken
        c.paint(_WHITE * 0.95, foam * strength, top)


def _dunes(c: _Canvas, horizon: float, layers: int, haze: float) -> None:
    """Rolling sand dunes with a sunlit face, a shadowed face and wind ripples."""
    pal, d = c.pal, c.dice
    ripples = c.noise(c.h / 40, c.w / 12)
    for j in range(layers):
        t = j / max(layers - 1, 1)
        base = horizon + 0.04 + 0.34 * t**1.2
        crest = base - d.uniform(0.08, 0.18) * (1 - 0.3 * t) * c.curve(d.uniform(0.6, 1.2), 2)
        top = c.row(crest.min() - 0.01)
        below = c.ys[top:] - crest
        lit = (0.55 + 0.35 * _facets(c, crest, below, 8.0)) * (1 - 0.5 * np.clip(below / 0.25, 0, 1))
        sunny = _mix(pal[GROUND], pal[LIGHT], 0.35)
        shadow = _mix(pal[GROUND_DARK], pal[SKY_TOP], 0.2)
        colour = _mix(shadow, sunny, lit) * (1 + 0.04 * np.sin(below * c.h * 0.5 + 3 * ripples[top:]))
        colour = _mix(colour, pal[SKY_LOW], min(1.0, (0.45 + haze) * (1 - t) ** 1.5))
        c.paint(colour, _ridge_alpha(c, crest, top), top)


def _snowfall(c: _Canvas, count: int) -> None:
    """Falling snowflakes: many small sharp ones and a few large out-of-focus ones."""
    d = c.dice

    xs, ys = d.uniform(0, c.w, count), d.uniform(0, c.h, count)
    radii = d.uniform(0.6, 1.8, count) * np.where(d.uniform(0, 1, count) < 0.06, 4, 1) * c.h / 500
    levels = d.uniform(120, 255, count).astype(int)

    def draw(canvas: ImageDraw.ImageDraw, s: float) -> None:
        for x, y, r, level in zip((xs * s).tolist(), (ys * s).tolist(), (radii * s).tolist(), levels.tolist(),
                                  strict=True):
            canvas.ellipse((x - r, y - r, x + r, y + r), fill=level)

    flakes = c.mask(draw)
    flakes = np.maximum(flakes, np.asarray(Image.fromarray((flakes * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(1.2)), np.float32) / 255)
    c.paint(_WHITE * 0.97, flakes * 0.9)


def _flowers(c: _Canvas) -> None:
    """A meadow in the foreground, dotted with flowers that grow larger towards the viewer."""
    pal, d = c.pal, c.dice
    line = 0.72 + 0.05 * (c.curve(1, 3) - 0.5) + d.uniform(-0.03, 0.03)
    top = c.row(line.min() - 0.01)
    blades = c.noise(c.h / 30, c.w / 3)[top:]
    grass = _mix(pal[GROUND], pal[GROUND_DARK], np.clip((c.ys[top:] - line) / 0.3, 0, 1))
    c.paint(grass * (1 + 0.12 * blades), _ridge_alpha(c, line, top), top)
    layer = Image.new("RGBA", (c.w, c.h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    count = int(45 * c.aspect)
    ys = np.sort(line.mean() + (1.02 - line.mean()) * d.uniform(0, 1, count) ** 0.7)
    hsv = np.repeat(_rgb_to_hsv(pal[ACCENT].ravel())[None], count, 0)
    hsv[:, 0] += d.uniform(-0.07, 0.07, count)
    hues = _hsv_to_rgb(hsv)
    stem = tuple(int(v * 200) for v in pal[GROUND_DARK].ravel())
    for y, hue in zip(ys, hues, strict=True):
        near = (y - line.mean()) / max(1 - line.mean(), 1e-3)
        size = (0.006 + 0.04 * near**1.5) * c.h
        _flower(draw, d.uniform(0, c.w), y * c.h, size, hue, pal[LIGHT].ravel(), stem)
    rgba = _to_planes(layer)
    c.paint(rgba[:3], rgba[3])


def _flower(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, petal: np.ndarray,
            centre: np.ndarray, stem: tuple[int, ...]) -> None:
    """One flower head of round petals on a stem."""
    draw.line((x, y, x + r * 0.3, y + r * 6), fill=(*stem, 255), width=max(1, int(r * 0.18)))
    fill = (*(int(v * 255) for v in petal), 255)
    for k in range(6):
        a = k * math.pi / 3
        px, py = x + math.cos(a) * r * 0.55, y + math.sin(a) * r * 0.55
        draw.ellipse((px - r * 0.48, py - r * 0.48, px + r * 0.48, py + r * 0.48), fill=fill)
    core = (*(int(v * 255) for v in centre), 255)
    draw.ellipse((x - r * 0.3, y - r * 0.3, x + r * 0.3, y + r * 0.3), fill=core)


@dataclass(frozen=True)
class _Framing:
    """Where a tile puts its subject: placement, scale, the way it faces, and the camera height."""

    x: float  # the subject's centre, 0..1 across the frame
    scale: float  # 1: the family's usual size
    facing: int
    horizon: float  # added to the scene's horizon: negative looks up (low camera), positive looks down
    lift: float  # the subject raised (positive) or lowered in the frame, in frame heights


# Four sibling compositions, one per tile: centred, off to the left in close-up, off to the right
# from afar, and a low camera looking up. Chaos pulls each towards a random composition of its own.
_PRESETS = (
    _Framing(0.5, 1.0, 1, 0.0, 0.0),
    _Framing(0.36, 1.25, -1, 0.04, -0.04),
    _Framing(0.66, 0.7, 1, -0.06, 0.05),
    _Framing(0.44, 0.9, -1, 0.1, -0.02),
)


def _framing(key: int, index: int, spread: float) -> _Framing:
    """The composition of tile ``index``: its preset, moved towards a random one as chaos rises."""
    rng = np.random.default_rng([key, index, 0xF4A3])
    preset = _PRESETS[index % len(_PRESETS)]
    wild = _Framing(rng.uniform(0.22, 0.78), rng.uniform(0.45, 1.45), 1 if rng.uniform() < 0.5 else -1,
                    rng.uniform(-0.14, 0.14), rng.uniform(-0.12, 0.12))
    t = spread**0.8
    return _Framing(
        x=preset.x + (wild.x - preset.x) * t,
        scale=preset.scale + (wild.scale - preset.scale) * t,
        facing=wild.facing if spread > 0.5 else preset.facing,
        horizon=preset.horizon + (wild.horizon - preset.horizon) * t,
        lift=preset.lift + (wild.lift - preset.lift) * t,
    )


_STANCE_SIZE = {"ground": 0.5, "float": 0.62, "table": 0.62, "bust": 0.95, "tall": 0.72}


def _figure(c: _Canvas, spec: _Spec, look: _Look, frame: _Framing, horizon: float,
            detail: np.random.Generator, jitter: float) -> np.ndarray:
    """Draw the prompt's subject, shaded, lit and with its modifiers; returns its coverage."""
    subject = spec.subject
    assert subject is not None
    family = subject.family
    stance = figures.STANCE.get(family, "ground")
    size = _STANCE_SIZE[stance] * frame.scale * (1.0 if stance != "ground" else 1.15 - 0.4 * horizon)
    if stance == "ground":
        base = min(0.97, horizon + (1 - horizon) * 0.72) - frame.lift
    elif stance == "tall":
        base = min(0.95, horizon + 0.2) - frame.lift * 0.5
    elif stance == "table":
        base = 0.86 - frame.lift * 0.5
        _table(c, base - 0.03)
    elif stance == "bust":
        base = 1.02
        size = min(size, 1.0)
    else:
        base = 0.5 + size / 2 - frame.lift
    pal = c.pal
    if stance in ("ground", "table", "tall"):  # a soft contact shadow under it
        shadow = c.around(frame.x, base, size * 0.6)
        across, down = (shadow.xs - frame.x) * c.aspect / (size * 0.45), (shadow.ys - base) / (size * 0.05)
        gap = across**2 + down**2
        shadow.rgb *= 1 - 0.45 * np.exp(-gap)
    pen = figures.Pen(width=c.w * 2, height=c.h * 2, x=c.col_of(frame.x) * 2, base=c.row_of(base) * 2,
                      size=size * c.px * 2, facing=frame.facing, rng=detail, jitter=jitter)
    figures.FAMILIES[family](pen)
    figures.modify(pen, subject.modifiers)
    if "ring" in subject.modifiers and "disc" in pen.anchors:
        _ring(pen)
    masks, (x0, y0, x1, y1) = pen.masks(margin=max(2, c.h // 100))
    everything = np.zeros((c.h, c.w), np.float32)
    if not masks:
        return everything
    whole, c = c, c.box(x0, y0, x1, y1)  # paint only the window the figure covers
    body_rgb, second_rgb, accent_rgb = (np.array(v, np.float32).reshape(3, 1, 1) / 255
                                        for v in figures.COLOURS[family])
    if subject.colour is not None:
        body_rgb = np.array(subject.colour, np.float32).reshape(3, 1, 1) / 255
    if "grey" in subject.modifiers:  # old age: grey hair and beard
        second_rgb = np.array([0.78, 0.78, 0.8], np.float32).reshape(3, 1, 1)
    light_dir = (-0.6 if c.sun is None or c.sun[0] < frame.x else 0.6) + detail.normal() * 0.15 * jitter
    span = size * c.aspect
    lit = ((c.xs - frame.x) * c.aspect * light_dir + (base - size * 0.5 - c.ys) * 0.6) / span
    shade = 0.78 + 0.4 * np.clip(0.5 + lit, 0, 1)
    shade = shade * (0.88 + 0.12 * _smoothstep(base, base - size * 0.3, c.ys))
    ornament = look.ornament
    if ornament > 0.05 and "body" in masks:
        pattern = 0.5 + 0.5 * np.sin((c.xs * c.aspect * 3 + c.ys * 2) * 40 / max(size, 0.2))
        shade = shade * (1 - 0.12 * ornament * pattern)
    dark_rgb = _mix(pal[GROUND_DARK], np.zeros((3, 1, 1), np.float32), 0.75)
    light_rgb = _mix(pal[LIGHT], _WHITE, 0.5)
    colours = {"body": body_rgb, "second": second_rgb, "accent": accent_rgb, "dark": dark_rgb}
    covered = everything[y0:y1, x0:x1]
    for layer in ("body", "second", "accent", "dark"):
        if layer in masks:
            c.paint(colours[layer] * (shade if layer != "dark" else 1.0), masks[layer])
            np.maximum(covered, masks[layer], out=covered)
    if "snow" in subject.modifiers or "snow" in spec.scenes:
        below = np.zeros_like(covered)
        off = max(1, int(size * c.px * 0.035))
        below[off:] = covered[:-off]
        c.paint(_WHITE * 0.96, np.clip(covered - below, 0, 1) * 0.95)
    if "light" in masks:
        c.paint(light_rgb, masks["light"])
        np.maximum(covered, masks["light"], out=covered)
    if "glass" in masks:
        glass = masks["glass"]
        sheen = _smoothstep(0.2, 0.0, np.abs(c.ys - (base - size * 0.85)) / max(size, 1e-3))
        c.paint(_mix(pal[SKY_TOP], dark_rgb, 0.5), glass * 0.55)
        c.add(_mix(pal[LIGHT], _WHITE, 0.6), glass * (0.15 + 0.35 * sheen))
        np.maximum(covered, glass, out=covered)
    shifted = np.zeros_like(covered)
    off = max(1, whole.h // 160)
    if light_dir > 0:
        shifted[off:, :-off] = covered[:-off, off:]
    else:
        shifted[off:, off:] = covered[:-off, :-off]
    c.add(_mix(pal[LIGHT], pal[ACCENT], 0.3), np.clip(covered - shifted, 0, 1) * 0.35)
    c = whole
    _figure_lights(c, pen, subject, size, base, frame)
    if ornament > 0.05:
        _sparkles(c, detail, frame, base, size, ornament)
    return everything


def _figure_lights(c: _Canvas, pen: figures.Pen, subject: subjects.Subject, size: float, base: float,
                   frame: _Framing) -> None:
    """Light the figure gives off: a lighthouse beam, glowing robot eyes, steam over hot food."""
    def frame_xy(x: float, y: float) -> tuple[float, float]:
        px, py = pen.p(x, y)
        return frame.x + (px / 2 - c.col_of(frame.x)) / c.w * (c.view[2] - c.view[0]), base - y * size

    if "lamp" in pen.anchors:
        x, y, r = pen.anchors["lamp"]
        lx, ly = frame_xy(x, y)
        c.add(_mix(c.pal[LIGHT], _WHITE, 0.5), np.exp(-c.dist(lx, ly) / (r * size * 2.5)) * 0.9)
        angle = np.arctan2(c.ys - ly, (c.xs - lx) * c.aspect)
        beam = np.exp(-((angle - 0.12 * frame.facing) / 0.06) ** 2) if frame.facing < 0 else 0
        beam = beam + np.exp(-((np.abs(angle) - 0.05) / 0.05) ** 2) * (c.xs > lx)
        c.add(c.pal[LIGHT], beam * np.exp(-c.dist(lx, ly) / 0.6) * 0.35)
    if "eyes" in pen.anchors or "glow" in subject.modifiers:
        x, y, r = pen.anchors.get("eyes", (*pen.anchors.get("head", (0.0, 0.5, 0.1))[:2], 0.03))
        for side in (-1, 1):
            ex, ey = frame_xy(side * x, y)
            near = c.around(ex, ey, r * size * 4)
            glow = np.exp(-((near.dist(ex, ey) / (r * size * 1.6)) ** 2))
            near.add(_mix(c.pal[ACCENT], _WHITE, 0.3), glow * 0.9)
    if "steam" in pen.anchors and "steam" in subject.modifiers:
        x, y, r = pen.anchors["steam"]
        sx, sy = frame_xy(x, y)
        w = c.around(sx, sy - size * 0.25, max(size * 0.3, r * size * 3))
        wisp = np.sin((w.xs - sx) * c.aspect / (r * size) * 9 + (w.ys - sy) / size * 14)
        rising = _smoothstep(sy, sy - size * 0.45, w.ys) * (w.ys < sy)
        near = np.exp(-((((w.xs - sx) * c.aspect) / (r * size * 1.2)) ** 2))
        w.add(_mix(c.pal[LIGHT], _WHITE, 0.7), _smoothstep(0.6, 1.0, wisp) * rising * near * 0.3)


def _ring(pen: figures.Pen) -> None:
    """A planetary ring across the disc, in front of it."""
    x, y, r = pen.anchors["disc"]
    (x0, y0), (x1, y1) = pen.p(x - r * 1.7, y + r * 0.35), pen.p(x + r * 1.7, y - r * 0.35)
    draw = ImageDraw.Draw(pen.layers.setdefault("accent", Image.new("L", (pen.width, pen.height), 0)))
    box = (min(x0, x1), y0, max(x0, x1), y1)
    draw.arc(box, 0, 180, fill=255, width=max(1, round(r * 0.12 * pen.size)))


def _table(c: _Canvas, top: float) -> None:
    """A table top the food stands on, catching the studio light."""
    row = c.row(top)
    depth = np.clip((c.ys[row:] - top) / max(1 - top, 1e-3), 0, 1)
    wood = _mix(_mix(c.pal[GROUND], np.array([0.45, 0.3, 0.2], np.float32).reshape(3, 1, 1), 0.6),
                c.pal[GROUND_DARK], depth * 0.6)
    grain = 1 + 0.05 * np.sin(c.ys[row:] * c.px * 0.8 + 2 * c.noise(c.h / 20, c.w / 4)[row:])
    c.rgb[:, row:] = wood * grain


def _underwater(c: _Canvas) -> None:
    """Beneath the sea: light from above, shafts of light, a sandy floor, weed and rising bubbles."""
    d = c.dice
    t = np.clip(c.ys, 0, 1)
    c.rgb[:] = _mix(c.pal[SKY_TOP] * 1.3, c.pal[SKY_LOW], t**0.8) * (1 + 0.05 * c.fbm(2, 3))
    sx = d.uniform(0.3, 0.7)
    angle = np.arctan2(c.ys + 0.3, (c.xs - sx) * c.aspect)
    shafts = c.dice.uniform(0, 1, 30) ** 3
    beams = np.interp(angle / (2 * np.pi), np.linspace(0, 0.5, 30), shafts)
    c.add(c.pal[LIGHT], beams * _smoothstep(1.0, 0.0, c.ys) * 0.25)
    floor = 0.84 + 0.04 * (c.curve(1.5, 3) - 0.5)
    top = c.row(floor.min() - 0.01)
    sand = c.pal[GROUND] * (0.75 + 0.15 * c.noise(c.h / 25, c.w / 8)[top:])
    c.paint(sand, _ridge_alpha(c, floor, top), top)
    weed = Image.new("L", (c.w, c.h), 0)
    draw = ImageDraw.Draw(weed)
    for _ in range(d.integer(4, 8)):
        x, height = d.uniform(0, c.w), d.uniform(0.15, 0.35) * c.h
        points = [(x + math.sin(k * 0.9 + x) * c.h * 0.02, c.row_of(0.92) - k * height / 8) for k in range(9)]
        draw.line(points, fill=255, width=max(1, c.h // 60), joint="curve")
    c.paint(_mix(c.pal[GROUND_DARK], np.array([0.1, 0.45, 0.25], np.float32).reshape(3, 1, 1), 0.5),
            np.asarray(weed, np.float32) / 255)
    for _ in range(d.integer(10, 25)):
        bx, by, r = d.uniform(0, 1), d.uniform(0.05, 0.8), d.uniform(0.004, 0.014)
        near = c.around(bx, by, r * 1.5)
        ring = np.exp(-((near.dist(bx, by) - r) * c.px / 1.2) ** 2)
        near.add(c.pal[LIGHT], ring * 0.5)


def _sparkles(c: _Canvas, rng: np.random.Generator, frame: _Framing, base: float, size: float,
              amount: float) -> None:
    """Ornament for a high stylize: four-pointed sparkles and motes of light around the subject."""
    count = int(6 + 30 * amount)
    xs = frame.x + rng.normal(0, 0.25, count) / c.aspect
    ys = base - size * 0.5 + rng.normal(0, 0.3, count)
    layer = Image.new("L", (c.w, c.h), 0)
    draw = ImageDraw.Draw(layer)
    for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
        px, py, r = c.col_of(x), c.row_of(y), rng.uniform(0.004, 0.018) * c.px * (0.5 + amount)
        star = [(math.cos(k * math.pi / 4) * r * (2 if k % 2 == 0 else 0.42),
                 math.sin(k * math.pi / 4) * r * (2 if k % 2 == 0 else 0.42)) for k in range(8)]
        draw.polygon([(px + dx, py + dy) for dx, dy in star], fill=int(rng.uniform(120, 255)))
    box = layer.getbbox()
    if box:
        window = c.box(*box)
        window.add(_mix(c.pal[LIGHT], _WHITE, 0.5), np.asarray(layer.crop(box), np.float32) / 255 * amount)


# ---------------------------------------------------------------------------------------------
# Composition
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StyleSettings:
    """Relative effect amounts for one ``--style``."""

    saturation: float = 1.0
    contrast: float = 0.3
    strokes: float = 1.0
    bloom: float = 1.0
    vignette: float = 1.0
    grain: float = 0.0  # film grain in levels; kept for the photographic styles, it costs PNG size
    haze: float = 0.0
    swirl: float = 0.0
    bokeh: int = 0
    rays: float = 0.0


_STYLE_SETTINGS = {
    None: _StyleSettings(),
    "raw": _StyleSettings(saturation=0.75, contrast=0.12, strokes=0.0, bloom=0.2, vignette=0.6, grain=4.0,
                          haze=0.05),
    "cute": _StyleSettings(saturation=1.0, contrast=0.1, strokes=0.3, bloom=1.3, vignette=0.2,
                           bokeh=18),
    "expressive": _StyleSettings(saturation=1.3, contrast=1.6, strokes=2.8, bloom=0.8, vignette=1.4,
                                 grain=2.0, swirl=1.0),
    "scenic": _StyleSettings(saturation=1.05, contrast=0.25, strokes=0.7, haze=0.3, rays=1.0),
}


@dataclass(frozen=True)
class _Look:
    """Finishing amounts for one call, from ``style``, ``stylize`` and ``version``."""

    style: str | None
    sharpen: float
    saturation: float
    contrast: float
    strokes: float
    bloom: float
    vignette: float
    grain: float
    haze: float
    swirl: float
    bokeh: int
    rays: float
    ornament: float  # 0: literal; 1: sparkles and patterned surfaces


def _look(style: str | None, stylize: float, version: str) -> _Look:
    """Turn the style, stylize (0..1000) and model version into finishing amounts."""
    s = _STYLE_SETTINGS[style]
    k = math.sqrt(_clamp(stylize, 0, 1000) / 1000) * (0.4 if style == "raw" else 1.0)
    detail = _version_detail(version)
    return _Look(
        style=style,
        sharpen=(0.0, 0.3, 0.5)[detail] + 0.6 * k,
        saturation=s.saturation * (0.85 + 0.45 * k),
        contrast=min(2.0, s.contrast * (0.4 + 1.2 * k)),
        strokes=s.strokes * 0.08 * k * k,
        bloom=s.bloom * 0.25 * k * k,
        vignette=s.vignette * (0.1 + 0.3 * k),
        grain=s.grain,
        haze=s.haze,
        swirl=s.swirl * (0.4 + 0.6 * k),
        bokeh=s.bokeh,
        rays=s.rays * (0.3 + 0.7 * k),
        ornament=k * k * (0.3 if style == "raw" else 1.0),
    )


def _version_detail(version: str) -> int:
    """Extra detail for newer model versions: 0 for 5.x, 1 for 6.0, 2 for 6.1 and later."""
    match = re.search(r"\d+(\.\d+)?", str(version))
    number = float(match.group()) if match else 6.1
    return 0 if number < 6 else 1 if number < 6.1 else 2


def _clamp(value: float, low: float, high: float) -> float:
    """``value`` limited to [low, high]."""
    return min(max(float(value), low), high)


def _compose(c: _Canvas, spec: _Spec, look: _Look, frame: _Framing, detail: np.random.Generator,
             jitter: float = 0.0) -> tuple[float, np.ndarray | None]:
    """Paint the scene onto the canvas; returns the horizon height used and the subject's coverage."""
    d = c.dice
    horizon = d.uniform(0.62, 0.72) if look.style == "scenic" else d.uniform(0.5, 0.64)
    horizon = _clamp(horizon + frame.horizon, 0.3, 0.85)
    if spec.sky == "abstract":
        _abstract(c)
        return horizon, None
    if spec.sky == "studio":
        _studio(c)
    elif spec.sky == "underwater":
        _underwater(c)
    else:
        _backdrop(c, spec, look, horizon)
    _terrain(c, spec, look, horizon)
    subject = _figure(c, spec, look, frame, horizon, detail, jitter) if spec.subject else None
    if "snow" in spec.scenes:
        _snowfall(c, int(c.w * c.h / 700))
    return horizon, subject


def _backdrop(c: _Canvas, spec: _Spec, look: _Look, horizon: float) -> None:
    """Sky, then a nebula with stars and a planet, or the sun or moon, light rays and clouds."""
    _sky(c, horizon)
    if spec.sky == "space":
        _nebula(c)
        _stars(c, int(c.w * c.h / 350), 1.5)
        if c.dice.uniform() < 0.7:
            _planet(c)
        return
    if spec.sky == "night":
        _stars(c, int(c.w * c.h / 900), horizon)
    _sun(c, horizon, spec.sky)
    if look.rays:
        _rays(c, look.rays)
    if spec.sky != "night" and c.dice.uniform() < 0.75:
        _clouds(c, horizon)


def _terrain(c: _Canvas, spec: _Spec, look: _Look, horizon: float) -> None:
    """Mountains, city, water, dunes, forest and flowers, back to front, as the prompt asks."""
    scenes, d = spec.scenes, c.dice
    rounded = look.style == "cute"
    snow = "snow" in scenes
    haze = spec.haze + look.haze
    ocean = "ocean" in scenes
    if "mountain" in scenes:
        layers = (2 if ocean else 3 + d.integer(0, 1)) + (2 if look.style == "scenic" else 0)
        _mountains(c, horizon - (0.06 if ocean else 0), layers, rounded, snow or d.uniform() < 0.3, haze)
    elif not any(s in scenes for s in _BACKDROPS) and spec.sky in ("day", "sunset", "night"):
        _mountains(c, horizon + 0.05, 3, True, snow, haze)
    if "city" in scenes:
        _city(c, horizon, spec.futuristic, ocean, spec.futuristic or spec.sky in ("night", "sunset", "space"))
    if ocean:
        _water(c, horizon, spec.beach)
    if "desert" in scenes:
        _dunes(c, horizon, 4, haze)
    if "forest" in scenes:
        _forest(c, horizon + (0.1 if "mountain" in scenes else 0), 4 if look.style == "scenic" else 3)
    if "flower" in scenes:
        _flowers(c)


# ---------------------------------------------------------------------------------------------
# Finishing
# ---------------------------------------------------------------------------------------------


def _finish(c: _Canvas, spec: _Spec, look: _Look, horizon: float) -> None:
    """Atmosphere, stylisation and grading, in place."""
    if spec.haze + look.haze > 0:
        _haze(c, spec.haze + look.haze, horizon)
    if look.bokeh:
        _bokeh(c, look.bokeh, 0.3)
    if look.swirl:
        _swirl(c, look.swirl)
    if look.strokes:
        _strokes(c, look.strokes)
    bloom = look.bloom + (0.5 if spec.neon else 0)
    if bloom:
        _bloom(c, bloom)
    c.rgb *= spec.brightness
    rgb = _soft_clip(c.rgb)
    if look.sharpen:
        _sharpen(rgb, look.sharpen)
    lum = _luma(rgb)
    rgb -= lum
    rgb *= look.saturation * spec.saturation
    rgb += lum
    _contrast(rgb, look.contrast)
    corner = math.hypot(0.5 * c.aspect, 0.5)
    rgb *= 1 - look.vignette * (c.dist(0.5, 0.5) / corner) ** 2
    if spec.mono:
        rgb[:] = _luma(rgb)


def _sharpen(rgb: np.ndarray, amount: float) -> None:
    """Unsharp masking against the four-neighbour mean: crisper edges and finer detail (in place)."""
    detail = np.empty_like(rgb)
    detail[:, 1:-1, 1:-1] = rgb[:, :-2, 1:-1] + rgb[:, 2:, 1:-1] + rgb[:, 1:-1, :-2] + rgb[:, 1:-1, 2:]
    detail[:, 1:-1, 1:-1] *= -0.25
    detail[:, 1:-1, 1:-1] += rgb[:, 1:-1, 1:-1]
    detail[:, [0, -1], :] = 0
    detail[:, :, [0, -1]] = 0
    detail *= amount
    rgb += detail


def _contrast(rgb: np.ndarray, amount: float) -> None:
    """Clip to 0..1 and apply an S-curve of strength ``amount`` (0..2; above 1 a second pass), in place."""
    np.clip(rgb, 0, 1, out=rgb)
    curve = np.empty_like(rgb)
    for step in (min(amount, 1.0), amount - 1):
        if step > 0:  # blend towards smoothstep(rgb) = rgb² (3 - 2 rgb)
            np.multiply(rgb, -2, out=curve)
            curve += 3
            curve *= rgb
            curve *= rgb
            curve -= rgb
            curve *= step
            rgb += curve


def _soft_clip(rgb: np.ndarray, knee: float = 0.7) -> np.ndarray:
    """Roll highlights above ``knee`` off smoothly towards 1 instead of clipping them flat (in place)."""
    np.maximum(rgb, 0, out=rgb)
    over = np.maximum(rgb - knee, 0)
    rgb -= over
    over /= 1 - knee
    rgb += over / (1 + over) * (1 - knee)
    return rgb


def _haze(c: _Canvas, amount: float, horizon: float) -> None:
    """Atmospheric haze, thickest around the horizon."""
    veil = amount * (0.3 + 0.6 * np.exp(-np.abs(c.ys - horizon) / 0.2))
    c.paint(_mix(c.pal[SKY_LOW], _WHITE, 0.3), np.minimum(veil, 0.85))


def _strokes(c: _Canvas, amount: float) -> None:
    """Painterly brush texture: slanted dabs of light, shade and warm/cool colour."""
    angle = c.dice.uniform(20, 60) * (1 if c.dice.uniform() < 0.5 else -1)
    half = math.ceil(math.hypot(c.w, c.h) / 2)  # dabs (4 x 16 pixels) are drawn at half size, then rotated
    grid = Image.fromarray(c.dice.normal((max(2, half // 2), max(2, half // 8))))
    dabs = grid.resize((half, half), Image.Resampling.BICUBIC).rotate(angle, Image.Resampling.BILINEAR)
    left, top = (half - c.w / 2) / 2, (half - c.h / 2) / 2
    dabs = np.asarray(dabs.resize((c.w, c.h), Image.Resampling.BICUBIC, (left, top, half - left, half - top)))
    tint = c.noise(c.h / 10, c.w / 10)
    c.rgb *= 1 + amount * dabs
    c.rgb += (amount * 0.3 * tint) * np.array([1.0, 0.1, -0.8], np.float32).reshape(3, 1, 1)


def _bloom(c: _Canvas, amount: float) -> None:
    """Let highlights glow softly into their surroundings."""
    glow = _to_image((c.rgb[:, ::4, ::4] - 0.55) * 2).filter(ImageFilter.GaussianBlur(c.h / 100))
    c.rgb += _to_planes(glow.resize((c.w, c.h), Image.Resampling.BILINEAR)) * amount


def _swirl(c: _Canvas, amount: float) -> None:
    """Twist the canvas around a few vortices, like bold swirling brushwork."""
    d = c.dice
    ny, nx = 24, max(8, round(24 * c.aspect))
    gy, gx = np.meshgrid(np.linspace(0, 1, ny + 1), np.linspace(0, c.aspect, nx + 1), indexing="ij")
    dx, dy = np.zeros_like(gx), np.zeros_like(gy)
    for _ in range(3):
        vx, vy, radius = d.uniform(0, c.aspect), d.uniform(0, 1), d.uniform(0.15, 0.35)
        turn = d.uniform(-0.9, 0.9) * amount * np.exp(-((gx - vx) ** 2 + (gy - vy) ** 2) / radius**2)
        ox, oy = gx - vx, gy - vy
        dx += ox * np.cos(turn) - oy * np.sin(turn) - ox
        dy += ox * np.sin(turn) + oy * np.cos(turn) - oy
    twisted = _warp(_to_image(c.rgb * 0.5), dx * c.h, dy * c.h)  # halved to keep highlights above 1
    c.rgb[:] = _to_planes(twisted) * 2


# ---------------------------------------------------------------------------------------------
# Image helpers shared by paint_tiles, vary and mix
# ---------------------------------------------------------------------------------------------


def _to_image(planes: np.ndarray) -> Image.Image:
    """Float colour planes (3, h, w) in 0..1 as an 8-bit RGB image."""
    channels = (np.clip(planes, 0, 1) * 255 + 0.5).astype(np.uint8)
    return Image.merge("RGB", [Image.fromarray(channel) for channel in channels])


def _to_planes(image: Image.Image) -> np.ndarray:
    """An image's bands as float planes (bands, h, w) in 0..1."""
    return np.stack([np.asarray(band, np.float32) for band in image.split()]) / 255


def _upsample(grid: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resize of a small float grid."""
    return np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC))


def _warp(image: Image.Image, dx: np.ndarray, dy: np.ndarray) -> Image.Image:
    """Piecewise-affine warp: output grid node (i, j) samples the source at its position + (dx, dy)."""
    w, h = image.size
    ny, nx = dx.shape[0] - 1, dx.shape[1] - 1
    gx, gy = np.linspace(0, w, nx + 1), np.linspace(0, h, ny + 1)
    sx = np.clip(gx[None, :] + dx, 0.5, w - 0.5).tolist()  # stay inside: outside samples come out black
    sy = np.clip(gy[:, None] + dy, 0.5, h - 0.5).tolist()
    bx, by = np.round(gx).astype(int).tolist(), np.round(gy).astype(int).tolist()
    mesh = [
        (
            (bx[j], by[i], bx[j + 1], by[i + 1]),
            (sx[i][j], sy[i][j], sx[i + 1][j], sy[i + 1][j],  # corners: top left, bottom left,
             sx[i + 1][j + 1], sy[i + 1][j + 1], sx[i][j + 1], sy[i][j + 1]),  # bottom right, top right
        )
        for i in range(ny)
        for j in range(nx)
        if bx[j] < bx[j + 1] and by[i] < by[i + 1]
    ]
    return image.transform(image.size, Image.Transform.MESH, mesh, Image.Resampling.BILINEAR)


def _colour_matrix(rng: np.random.Generator, amount: float) -> tuple[float, ...]:
    """A random hue rotation, saturation, contrast and exposure change as a 3x4 ``convert`` matrix."""
    angle = math.radians(rng.normal() * (3 + 10 * amount))
    cos, sin = math.cos(angle), math.sin(angle)
    third, side = (1 - cos) / 3, sin / math.sqrt(3)
    diagonal, plus, minus = cos + third, third + side, third - side
    hue = np.array([[diagonal, minus, plus], [plus, diagonal, minus], [minus, plus, diagonal]])
    saturation = 1 + rng.normal() * 0.15 * (0.3 + amount)
    grey = np.tile([0.299, 0.587, 0.114], (3, 1))
    sat = grey + (np.eye(3) - grey) * saturation
    contrast = 1 + rng.normal() * 0.1 * (0.3 + amount)
    matrix = contrast * sat @ hue
    offset = 128 * (1 - contrast) + rng.normal() * 8 * amount
    return tuple(np.hstack([matrix, np.full((3, 1), offset)]).ravel().tolist())


def as_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image as RGB: transparent areas become white, 16-bit and float images are rescaled."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image.convert("F"), np.float32)
        span = float(values.max() - values.min()) or 1.0
        image = Image.fromarray(((values - values.min()) / span * 255).astype(np.uint8))
    return image.convert("RGB")


def _fingerprint(image: Image.Image) -> str:
    """A short digest of an image's look, for seeding."""
    return hashlib.sha256(image.resize((16, 16), Image.Resampling.BOX).tobytes()).hexdigest()[:16]


def _check_size(width: int, height: int) -> tuple[int, int]:
    """The output size as integers; ValueError if a side is outside MIN_SIDE..MAX_SIDE."""
    for name, value in (("width", width), ("height", height)):
        if not MIN_SIDE <= int(value) <= MAX_SIDE:
            raise ValueError(f"{name} must be between {MIN_SIDE} and {MAX_SIDE}, got {value}")
    return int(width), int(height)


def _each_tile(make: Callable[[int], Image.Image], on_tile: TileCallback | None) -> list[Image.Image]:
    """Make the four tiles on the painters' pool, reporting each in order as soon as it is done.

    If ``on_tile`` raises (say, the job was cancelled), tiles not yet started are dropped and the
    exception propagates once the ones in progress have finished.
    """
    futures = [_PAINTERS.submit(make, index) for index in range(TILE_COUNT)]
    tiles = []
    try:
        for index, future in enumerate(futures):
            tiles.append(future.result())
            if on_tile is not None:
                on_tile(index)
    except BaseException:
        for future in futures:
            future.cancel()
        wait(futures)
        raise
    return tiles


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def paint_tiles(
    prompt: str,
    width: int,
    height: int,
    *,
    seed: int,
    style: str | None = None,
    chaos: float = 0,
    stylize: float = 100,
    version: str = "6.1",
    on_tile: TileCallback | None = None,
) -> list[Image.Image]:
    """Paint four distinct width x height RGB tiles for a prompt; the same inputs give the same pixels."""
    width, height = _check_size(width, height)
    spec, look, spread, key = _setup(prompt, seed, style, chaos, stylize, version)
    work = _work_size(width, height)

    def make(index: int) -> Image.Image:
        return _render(spec, look, key, index, spread, work, (width, height))

    return _each_tile(make, on_tile)


def _setup(prompt: str, seed: int, style: str | None, chaos: float, stylize: float,
           version: str) -> tuple[_Spec, _Look, float, int]:
    """What a prompt and its settings ask for: the spec, the finishing look, the chaos spread and the key."""
    if style not in _STYLE_SETTINGS:
        raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")
    spec = _parse_prompt(prompt)
    look = _look(style, stylize, version)
    if spec.medium == "photo":  # a photograph has no brush marks
        look = dataclasses.replace(look, strokes=0.0, swirl=0.0, sharpen=min(look.sharpen, 0.3))
    return spec, look, _clamp(chaos, 0, 100) / 100, _key("imagine", " ".join(prompt.split()), int(seed))


def _work_size(width: int, height: int) -> tuple[int, int]:
    """The canvas a width x height tile is painted on before the final resize."""
    scale = min(1.0, WORK_SIDE / max(width, height))
    return max(16, round(width * scale)), max(16, round(height * scale))


def _render(spec: _Spec, look: _Look, key: int, index: int, spread: float, work: tuple[int, int],
            size: tuple[int, int], *, view: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
            jitter: float = 0.0, variant: int = 0, frame: _Framing | None = None,
            coverage: list[Image.Image] | None = None) -> Image.Image:
    """Paint tile ``index`` of a prompt at ``size`` (via the ``work`` canvas), seen through ``view``.

    ``jitter`` > 0 re-draws its details (a variation): shapes shift a little, the light moves and the
    textures are painted anew, while the scene and the composition stay. The subject's coverage (mode
    L, at ``size``) is appended to ``coverage`` when one is given.
    """
    dice = _Dice(key, index, 0.15 + 0.85 * spread)
    shift = dice.normal() * (5 + 85 * spread) * (0.5 if spec.named_colours else 1.0)
    palette = _shift_hues(spec.palette, shift)
    if look.style == "cute":
        palette = _pastel(palette, 0.3)
    c = _Canvas(*work, dice, palette, view)
    detail = np.random.default_rng([key, index, variant, 0xD7])
    frame = frame or _framing(key, index, spread)
    horizon, subject = _compose(c, spec, look, frame, detail, jitter)
    if coverage is not None:
        found = subject if subject is not None else np.zeros((c.h, c.w), np.float32)
        mask = Image.fromarray((found * 255 + 0.5).astype(np.uint8))
        coverage.append(mask.resize(size, Image.Resampling.BILINEAR))
    if jitter:
        c.rgb *= 1 + jitter * 0.08 * _upsample(detail.normal(size=(4, 4)).astype(np.float32), c.w, c.h)
    _finish(c, spec, look, horizon)
    if spec.medium:
        c.rgb[:] = media.render(c.rgb, spec.medium, subject, detail)
    if look.grain:
        c.rgb += (dice.own.random((c.h, c.w), dtype=np.float32) - 0.5) * (look.grain * 3.4 / 255)
    image = _to_image(c.rgb)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


@dataclass(frozen=True)
class Settings:
    """How an image was painted: enough to paint its scene again (read from its ``parameters``)."""

    prompt: str
    seed: int
    index: int  # 0-3
    style: str | None = None
    chaos: float = 0
    stylize: float = 100
    version: str = "6.1"


def redraw(settings: Settings, width: int, height: int, *, seed: int, strength: float = 0.5,
           on_tile: TileCallback | None = None) -> list[Image.Image]:
    """Four variations of a painted tile: its scene and composition kept, its details drawn anew."""
    width, height = _check_size(width, height)
    spec, look, spread, key = _setup(settings.prompt, settings.seed, settings.style, settings.chaos,
                                     settings.stylize, settings.version)
    work = _work_size(width, height)
    jitter = 0.3 + 1.0 * _clamp(strength, 0, 1)

    def make(index: int) -> Image.Image:
        variant = _key("redraw", int(seed), index) % (1 << 62)
        image = _render(spec, look, key, settings.index, spread, work, (width, height), jitter=jitter,
                        variant=variant)
        rng = np.random.default_rng([variant, 1])
        reach = (0.002 + 0.008 * strength) * min(width, height)
        nodes = max(1, min(12, min(width, height) // 8))
        return _warp(image, *(_smooth_field(rng, nodes) * reach for _ in range(2)))

    return _each_tile(make, on_tile)


def subject_mask(settings: Settings, width: int, height: int) -> Image.Image:
    """Where the subject stands in a tile painted with ``settings`` (mode L, width x height; black: none)."""
    width, height = _check_size(width, height)
    spec, look, spread, key = _setup(settings.prompt, settings.seed, settings.style, settings.chaos,
                                     settings.stylize, settings.version)
    coverage: list[Image.Image] = []
    _render(spec, look, key, settings.index, spread, _work_size(width, height), (width, height),
            coverage=coverage)
    return coverage[0]


def extend(image: Image.Image, pad: tuple[int, int, int, int], settings: Settings | None, *, seed: int,
           prompt: str | None = None) -> list[Image.Image]:
    """Four canvases of ``image`` with ``pad`` (left, top, right, bottom) added and painted in.

    With the ``settings`` the image was painted with, the new area is the same scene seen through a
    wider window; otherwise it continues the image's own edges. The image's pixels stay unchanged in
    place, and the seam is blended so no hard edge shows.
    """
    source = as_rgb(image)
    w, h = source.size
    left, top, right, bottom = (max(0, int(v)) for v in pad)
    size = (w + left + right, h + top + bottom)
    view = (-left / w, -top / h, 1 + right / w, 1 + bottom / h)
    near = _continue_edges(source, (left, top, right, bottom))
    seam = _seam_weight(size, (left, top, left + w, top + h), max(4.0, 0.06 * min(w, h)))

    def make(index: int) -> Image.Image:
        if settings is not None:
            spec, look, spread, key = _setup(prompt or settings.prompt, settings.seed, settings.style,
                                             settings.chaos, settings.stylize, settings.version)
            scale = min(1.0, WORK_SIDE / max(w, h))
            work = (max(16, round(size[0] * scale)), max(16, round(size[1] * scale)))
            far = _render(spec, look, key, settings.index, spread, work, size, view=view,
                          variant=_key("extend", int(seed), index) % (1 << 62))
        else:
            far = _texture_fill(near, np.random.default_rng([_key("extend", int(seed)), index]))
        canvas = Image.composite(near, far, seam)
        canvas.paste(source, (left, top))
        return canvas

    return _each_tile(make, None)


def repaint(image: Image.Image, mask: Image.Image, settings: Settings | None, *, seed: int,
            prompt: str | None = None) -> list[Image.Image]:
    """Four images with the region where ``mask`` is white painted anew from the prompt.

    Outside the mask the pixels stay as they were; inside, the new paint meets them with a feathered
    seam and is graded towards the colours around it.
    """
    source = as_rgb(image)
    w, h = source.size
    region = mask.convert("L").resize((w, h), Image.Resampling.NEAREST)
    cover = np.asarray(region, np.float32) / 255
    if cover.max() == 0:
        return [source.copy() for _ in range(TILE_COUNT)]
    feather = max(1.0, 0.03 * min(w, h))
    soft = np.asarray(region.filter(ImageFilter.GaussianBlur(feather)), np.float32) / 255
    inside = np.minimum(cover, np.clip((soft - 0.5) * 2, 0, 1) * 0.6 + cover * 0.4)
    alpha = Image.fromarray((inside * 255 + 0.5).astype(np.uint8))
    box = Image.fromarray(((cover > 0.5) * 255).astype(np.uint8)).getbbox() or (0, 0, w, h)
    text = prompt or (settings.prompt if settings else None)

    def make(index: int) -> Image.Image:
        variant = _key("repaint", int(seed), index) % (1 << 62)
        rng = np.random.default_rng([variant, 2])
        base = _texture_fill(_context_fill(source, cover), rng)  # what was there, taken out
        if text:
            how = settings or Settings(prompt=text, seed=int(seed), index=index)
            spec, look, spread, key = _setup(text, how.seed, how.style, how.chaos, how.stylize, how.version)
            coverage: list[Image.Image] = []
            new = _render(spec, look, key, index, spread, _work_size(w, h), (w, h), variant=variant,
                          jitter=0.5, coverage=coverage)
            if coverage[0].getbbox():  # the prompt's subject, fitted into the masked region
                base = _place(base, *_cut(new, coverage[0]), box, rng)
            else:  # a prompt with no subject: its scene, graded to the surroundings
                base = _match_colours(new, source, cover)
        return Image.composite(base, source, alpha)

    return _each_tile(make, None)


def _place(canvas: Image.Image, piece: Image.Image, mask: Image.Image, box: tuple[int, int, int, int],
           rng: np.random.Generator) -> Image.Image:
    """``piece`` (with ``mask``) scaled to fit ``box`` and stood on its bottom, somewhere along it."""
    x0, y0, x1, y1 = box
    scale = min((x1 - x0) / piece.width, (y1 - y0) / piece.height) * rng.uniform(0.75, 0.92)
    size = (max(1, round(piece.width * scale)), max(1, round(piece.height * scale)))
    piece, mask = (im.resize(size, Image.Resampling.BICUBIC) for im in (piece, mask))
    x = round(x0 + (x1 - x0 - size[0]) * rng.uniform(0.3, 0.7))
    y = round(y1 - size[1] - (y1 - y0) * 0.04)
    placed = _shadowed(canvas, mask, (x, y))
    placed.paste(piece, (x, y), mask)
    return placed


def _continue_edges(source: Image.Image, pad: tuple[int, int, int, int]) -> Image.Image:
    """The image mirrored out across its edges into the padding, softer the further out."""
    left, top, right, bottom = pad
    planes = np.asarray(source, np.float32)
    while left or top or right or bottom:  # mirroring reaches at most one image size per step
        h, w = planes.shape[:2]
        step = (min(left, w), min(top, h), min(right, w), min(bottom, h))
        planes = np.pad(planes, ((step[1], step[3]), (step[0], step[2]), (0, 0)), mode="symmetric")
        left, top, right, bottom = left - step[0], top - step[1], right - step[2], bottom - step[3]
    mirrored = Image.fromarray(planes.astype(np.uint8))
    blurred = mirrored.filter(ImageFilter.GaussianBlur(max(2.0, min(source.size) / 40)))
    w, h = source.size
    edge = _seam_weight(mirrored.size, (pad[0], pad[1], pad[0] + w, pad[1] + h), max(2.0, min(w, h) / 30))
    return Image.composite(mirrored, blurred, edge)


def _seam_weight(size: tuple[int, int], box: tuple[int, int, int, int], feather: float) -> Image.Image:
    """1 inside ``box`` falling smoothly to 0 over ``feather`` pixels outside it (mode L)."""
    w, h = size
    x0, y0, x1, y1 = box
    xs, ys = np.arange(w, dtype=np.float32) + 0.5, np.arange(h, dtype=np.float32)[:, None] + 0.5
    dx = np.maximum(np.maximum(x0 - xs, xs - x1), 0)
    dy = np.maximum(np.maximum(y0 - ys, ys - y1), 0)
    weight = np.exp(-((np.hypot(dx, dy) / feather) ** 2))
    return Image.fromarray((weight * 255 + 0.5).astype(np.uint8))


def _texture_fill(base: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A broad, blurred version of ``base`` with fresh fine texture, for areas with no scene to paint."""
    w, h = base.size
    soft = _to_planes(base.filter(ImageFilter.GaussianBlur(max(2.0, min(w, h) / 25))))
    grain = _upsample(rng.standard_normal((max(2, h // 6), max(2, w // 6))).astype(np.float32), w, h)
    broad = _upsample(rng.standard_normal((4, 4)).astype(np.float32), w, h)
    return _to_image(soft * (1 + 0.03 * grain + 0.04 * broad))


def _context_fill(source: Image.Image, cover: np.ndarray) -> Image.Image:
    """The masked region filled from its surroundings: a normalised blur of the pixels outside it."""
    keep = 1 - (cover > 0.5).astype(np.float32)
    w, h = source.size
    planes = _to_planes(source)
    radius = max(4.0, min(w, h) / 12)
    weight = Image.fromarray((keep * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius))
    spread = np.asarray(weight, np.float32) / 255 + 1e-4
    kept = _to_image(planes * keep).filter(ImageFilter.GaussianBlur(radius))
    filled = _to_planes(kept) / spread
    return _to_image(planes * keep + filled * (1 - keep))


def _match_colours(new: Image.Image, source: Image.Image, cover: np.ndarray) -> Image.Image:
    """``new`` graded halfway towards the mean and spread of the source's colours around the mask."""
    ring = (np.asarray(Image.fromarray(((cover > 0.5) * 255).astype(np.uint8)).filter(
        ImageFilter.MaxFilter(9)), np.float32) > 0) & (cover <= 0.5)
    if not ring.any():
        return new
    a, b = _to_planes(new), _to_planes(source)
    inside = cover > 0.5
    for k in range(3):
        mean_a, std_a = a[k][inside].mean(), a[k][inside].std() + 1e-3
        mean_b, std_b = b[k][ring].mean(), b[k][ring].std() + 1e-3
        matched = (a[k] - mean_a) * (std_b / std_a) ** 0.5 + mean_b
        a[k] = a[k] + (matched - a[k]) * 0.5
    return _to_image(a)


def vary(
    tile: Image.Image, *, seed: int, strength: float = 0.5, on_tile: TileCallback | None = None
) -> list[Image.Image]:
    """Four new tiles like ``tile``: warped, re-graded and partly re-painted; ``strength`` 0..1 is how far."""
    source = as_rgb(tile)
    amount = _clamp(strength, 0, 1)
    key = _key("vary", int(seed), source.size, _fingerprint(source))
    w, h = source.size

    def make(index: int) -> Image.Image:
        rng = np.random.default_rng([key, index])
        reach = (0.004 + 0.02 * amount) * min(w, h)
        nodes = max(1, min(12, min(w, h) // 8))
        image = _warp(source, *(_smooth_field(rng, nodes) * reach for _ in range(2)))
        image = _redetail(image, rng, amount)
        return image.convert("RGB", _colour_matrix(rng, amount * 0.4))

    return _each_tile(make, on_tile)


def mix(
    images: Sequence[Image.Image], width: int, height: int, *, seed: int, on_tile: TileCallback | None = None,
    masks: Sequence[Image.Image | None] | None = None,
) -> list[Image.Image]:
    """Compose 2-5 images into four tiles: the subjects of some set into the scene of another.

    Each tile takes its setting from one input (in turn) and cuts the subject (the region standing out
    from its own surroundings) out of each of the others, placing them at its own positions and scales
    with a soft edge and a contact shadow. Subjects and setting are graded towards a shared palette.
    ``masks[i]``, where known (the subject's coverage in image i), replaces the guess.
    """
    if not 2 <= len(images) <= 5:
        raise ValueError(f"mix takes 2 to 5 images, got {len(images)}")
    width, height = _check_size(width, height)
    layers = [ImageOps.fit(as_rgb(image), (width, height), Image.Resampling.BICUBIC) for image in images]
    key = _key("mix", int(seed), width, height, *(_fingerprint(layer) for layer in layers))
    known = list(masks or []) + [None] * (len(layers) - len(masks or []))
    cutouts = [
        _cutout(layer) if mask is None or not mask.getbbox()
        else _cut(layer, ImageOps.fit(mask.convert("L"), (width, height), Image.Resampling.BILINEAR))
        for layer, mask in zip(layers, known, strict=True)
    ]
    # Inputs known to show no subject (a landscape) are settings only; the others lend their subjects.
    bare = [i for i, mask in enumerate(known) if mask is not None and not mask.getbbox()]
    settings = bare if 0 < len(bare) < len(layers) else list(range(len(layers)))
    means = np.mean([np.asarray(layer.reduce(8), np.float32).reshape(-1, 3).mean(0) for layer in layers], 0)

    def make(index: int) -> Image.Image:
        rng = np.random.default_rng([key, index])
        count = len(layers)
        if len(bare) == count:  # scenes only: the sky of one over the land of another
            return _skyline_blend(_towards(layers[index % count], means, 0.12),
                                  _towards(layers[(index + 1 + index // count) % count], means, 0.12), rng)
        chosen = settings[index % len(settings)]
        setting = _towards(layers[chosen], means, 0.12)
        others = [(chosen + k) % count for k in range(1, count)]
        guests = [i for i in others if i not in bare] or others
        slots = (np.arange(len(guests)) + 0.5) / len(guests)
        slots = (slots + rng.uniform(-0.12, 0.12) + (0.18 if index // count % 2 else 0)) % 1
        canvas = setting
        for guest, slot in zip(guests, slots.tolist(), strict=True):
            cut, mask = cutouts[guest]
            scale = rng.uniform(0.5, 0.8) / len(guests) ** 0.3
            target_h = max(8, round(height * scale))
            target_w = max(8, round(cut.width * target_h / cut.height))
            if target_w > width * 0.9:
                target_w, target_h = round(width * 0.9), max(8, round(width * 0.9 * cut.height / cut.width))
            flip = rng.uniform() < 0.5 or index >= count
            piece, alpha = (im.resize((target_w, target_h), Image.Resampling.BICUBIC) for im in (cut, mask))
            if flip:
                piece, alpha = ImageOps.mirror(piece), ImageOps.mirror(alpha)
            piece = _towards(piece, means, 0.15)
            x = round(np.clip(slot * width - target_w / 2, 0, width - target_w))
            y = round(np.clip(height * rng.uniform(0.9, 0.98) - target_h, 0, height - target_h))
            canvas = _shadowed(canvas, alpha, (x, y))
            canvas.paste(piece, (x, y), alpha)
        return canvas.convert("RGB", _colour_matrix(rng, 0.1))

    return _each_tile(make, on_tile)


def _skyline_blend(sky: Image.Image, land: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The upper part of ``sky`` over the lower part of ``land``, meeting along a soft, uneven line."""
    w, h = sky.size
    line = rng.uniform(0.42, 0.62) + 0.04 * _upsample(rng.standard_normal((1, 4)).astype(np.float32), w, 1)[0]
    ys = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h
    alpha = _smoothstep(-0.05, 0.05, ys - line[None, :])
    return Image.composite(land, sky, Image.fromarray((alpha * 255 + 0.5).astype(np.uint8)))


def _cutout(image: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The part of an image that stands out from its surroundings (its subject), cropped, with a soft mask.

    The background of each row is the colour at its two ends (so skies and horizons drop out); the
    subject is the largest connected region that differs from it, favouring the middle of the frame.
    """
    w, h = image.size
    gw, gh = max(8, round(64 * w / max(w, h))), max(8, round(64 * h / max(w, h)))
    small = np.asarray(image.resize((gw, gh), Image.Resampling.BOX), np.float32) / 255
    rows = (small[:, :2].mean(1) + small[:, -2:].mean(1)) / 2
    distance = np.linalg.norm(small - rows[:, None], axis=-1)
    v, u = np.mgrid[0:gh, 0:gw].astype(np.float32)
    prior = np.exp(-(((u + 0.5) / gw - 0.5) ** 2 + ((v + 0.5) / gh - 0.5) ** 2) / 0.12)
    score = distance * (0.4 + prior)
    if score.max() < 0.1:  # nothing stands out (a flat or uniform image): its middle is its subject
        chosen = (prior > 0.45).astype(np.uint8)
    else:  # the largest region that stands out, favouring the middle
        level, _ = cv2.threshold((score / score.max() * 255).astype(np.uint8), 0, 255,
                                 cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        chosen = (score / score.max() * 255 > max(level, 40)).astype(np.uint8)
        count, labels, stats, centres = cv2.connectedComponentsWithStats(chosen, connectivity=8)
        weight = [stats[i, cv2.CC_STAT_AREA] * prior[int(centres[i][1]), int(centres[i][0])]
                  for i in range(1, count)]
        best = 1 + int(np.argmax(weight)) if weight else 0
        if best and stats[best, cv2.CC_STAT_AREA] >= 0.04 * gw * gh:
            chosen = (labels == best).astype(np.uint8)
        else:  # only specks stand out (a sun, a star): the middle of the frame is the subject
            chosen = (prior > 0.45).astype(np.uint8)
    mask = Image.fromarray(chosen * 255).filter(ImageFilter.MaxFilter(3))
    mask = mask.filter(ImageFilter.MinFilter(3)).resize((w, h), Image.Resampling.BILINEAR)
    return _cut(image, mask.filter(ImageFilter.GaussianBlur(max(1.0, min(w, h) / 150))))


def _cut(image: Image.Image, mask: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The image and its subject mask, cropped to the box around the subject."""
    box = mask.point(lambda value: 255 if value > 100 else 0).getbbox() or (0, 0, *image.size)
    return image.crop(box), mask.crop(box)


def _towards(image: Image.Image, mean: np.ndarray, amount: float) -> Image.Image:
    """``image`` with its mean colour moved ``amount`` of the way to ``mean`` (0..255): a shared palette."""
    own = np.asarray(image.reduce(max(1, min(image.size) // 32)), np.float32).reshape(-1, 3).mean(0)
    offset = (mean - own) * amount
    matrix = (1, 0, 0, offset[0], 0, 1, 0, offset[1], 0, 0, 1, offset[2])
    return image.convert("RGB", tuple(float(v) for v in matrix))


def _shadowed(canvas: Image.Image, alpha: Image.Image, at: tuple[int, int]) -> Image.Image:
    """``canvas`` darkened softly under and behind a piece about to be pasted at ``at`` with ``alpha``."""
    w, h = canvas.size
    shadow = Image.new("L", (w, h), 0)
    drop = max(1, alpha.height // 30)
    shadow.paste(alpha, (at[0] + drop, at[1] + drop))
    shadow = shadow.filter(ImageFilter.GaussianBlur(max(2.0, alpha.height / 25))).point(lambda v: v * 0.45)
    return Image.composite(Image.new("RGB", (w, h), (0, 0, 0)), canvas, shadow)


def enrich(image: Image.Image) -> Image.Image:
    """Invent finer detail (a creative upscale): deeper texture, crisper edges and grain where it is busy."""
    source = as_rgb(image)
    rgb = _to_planes(source)
    _, h, w = rgb.shape
    luma = _luma(rgb)
    structure = _soften(np.abs(luma - _soften(luma)))
    busy = np.clip(structure / (np.percentile(structure, 95) + 1e-6), 0, 1)
    rgb += (rgb - np.stack([_soften(plane) for plane in rgb])) * (0.6 * busy)
    _sharpen(rgb, 1.0)
    rng = np.random.default_rng(_key("enrich", _fingerprint(source)))
    grain = _upsample(rng.standard_normal((max(2, h // 2), max(2, w // 2)), dtype=np.float32), w, h)
    rgb += grain * (0.003 + 0.03 * busy)
    return _to_image(rgb)


def _soften(plane: np.ndarray, step: int = 8) -> np.ndarray:
    """A float plane blurred by averaging ``step`` x ``step`` blocks and scaling back up."""
    h, w = plane.shape
    small = Image.fromarray(plane).resize((max(1, w // step), max(1, h // step)), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))


# ---------------------------------------------------------------------------------------------
# vary and mix internals
# ---------------------------------------------------------------------------------------------


def _smooth_field(rng: np.random.Generator, nodes: int) -> np.ndarray:
    """A smooth random (nodes+1)² field of about unit size: broad swells plus a little jitter."""
    broad = _upsample(rng.standard_normal((3, 3), dtype=np.float32), nodes + 1, nodes + 1)
    return broad + 0.25 * rng.standard_normal((nodes + 1, nodes + 1))


def _redetail(image: Image.Image, rng: np.random.Generator, amount: float) -> Image.Image:
    """Re-draw an image's fine detail and move its light, keeping its shapes and colours in place."""
    w, h = image.size
    step = max(1, round(min(w, h) / 120))
    pixels = np.asarray(image, np.float32)
    low = np.asarray(image.reduce(step).resize((w, h), Image.Resampling.BILINEAR), np.float32) if step > 1 \
        else pixels
    high = pixels - low
    dy, dx = (int(v) for v in rng.integers(2, 2 + 3 * step, 2))
    moved = np.roll(high, (dy, dx), (0, 1))
    moved[:dy], moved[:, :dx] = high[:dy], high[:, :dx]  # nothing wraps round from the far edges
    light = 1 + (0.04 + 0.1 * amount) * _upsample(rng.standard_normal((3, 3)).astype(np.float32), w, h)
    low *= light[..., None]
    low += high
    low += (moved - high) * (0.5 * amount)
    return Image.fromarray(np.clip(low + 0.5, 0, 255).astype(np.uint8))
