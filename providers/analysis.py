"""Real pixel analysis of an image, and Midjourney-style ``/describe`` prompts built from it.

``analyse`` measures a downsampled copy with numpy: aspect ratio, dominant colours (k-means in
CIELAB, named from a table), brightness, contrast, saturation, colour temperature, edge density
and where the light sits. ``describe`` turns those figures into four different prompts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from providers import detect
from providers.procedural import as_rgb

SAMPLE_SIDE = 128  # the analysis runs on a copy no larger than this
CLUSTERS = 6
STANDARD_RATIOS = ((1, 1), (5, 4), (4, 5), (4, 3), (3, 4), (3, 2), (2, 3), (7, 4), (4, 7), (16, 9), (9, 16),
                   (2, 1), (1, 2), (21, 9), (9, 21))

NAMED_COLOURS = {
    "black": (12, 12, 14), "charcoal": (54, 54, 58), "slate grey": (112, 122, 138), "grey": (128, 128, 128),
    "silver": (192, 192, 196), "white": (246, 246, 246), "ivory": (250, 246, 228), "cream": (245, 234, 204),
    "beige": (222, 203, 168), "sand": (212, 180, 130), "tan": (190, 150, 105), "brown": (120, 75, 42),
    "chocolate": (72, 42, 24), "rust": (172, 78, 36), "maroon": (110, 22, 36), "crimson": (178, 20, 52),
    "red": (212, 36, 40), "scarlet": (238, 52, 30), "coral": (246, 122, 96), "salmon": (244, 154, 132),
    "peach": (252, 198, 162), "orange": (242, 130, 30), "amber": (246, 172, 28),
    "golden yellow": (240, 196, 52), "yellow": (246, 230, 64), "mustard": (198, 166, 48),
    "olive": (118, 122, 44), "lime green": (150, 212, 60), "green": (52, 150, 62), "emerald": (20, 140, 92),
    "forest green": (30, 76, 42), "mint": (162, 226, 192), "sage": (150, 170, 132), "teal": (0, 120, 122),
    "turquoise": (52, 202, 196), "cyan": (40, 202, 232), "sky blue": (132, 192, 236), "azure": (40, 130, 230),
    "blue": (36, 76, 200), "navy": (20, 30, 86), "midnight blue": (20, 24, 54), "indigo": (66, 36, 130),
    "violet": (142, 82, 202), "purple": (116, 46, 150), "plum": (98, 44, 84), "lavender": (186, 166, 226),
    "mauve": (180, 130, 160), "magenta": (210, 40, 170),
    "hot pink": (240, 80, 160), "pink": (240, 162, 192), "rose": (214, 96, 126), "blush": (236, 192, 196),
}

_D65 = np.array([0.95047, 1.0, 1.08883])
_RGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


def _sample(image: Image.Image) -> np.ndarray:
    """The image shrunk to at most SAMPLE_SIDE (and at least 8 pixels a side), as floats (h, w, 3) in 0..1."""
    rgb = as_rgb(image)
    scale = min(1.0, SAMPLE_SIDE / max(rgb.size))
    size = (max(8, round(rgb.width * scale)), max(8, round(rgb.height * scale)))
    return np.asarray(rgb.resize(size, Image.Resampling.BOX, reducing_gap=2.0), np.float64) / 255


def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) in 0..1 to CIELAB (D65)."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ _RGB_TO_XYZ.T / _D65
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


_NAMES = list(NAMED_COLOURS)
_NAMED_LAB = _lab(np.array(list(NAMED_COLOURS.values()), np.float64) / 255)


def colour_name(rgb: tuple[float, float, float] | np.ndarray) -> str:
    """The nearest named colour (in CIELAB) to an RGB triple in 0..255."""
    lab = _lab(np.asarray(rgb, np.float64) / 255)
    return _NAMES[int(np.argmin(((_NAMED_LAB - lab) ** 2).sum(-1)))]


def _kmeans(points: np.ndarray, k: int, iterations: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic k-means (k-means++ start, fixed seed): centres and each point's cluster."""
    rng = np.random.default_rng(0)
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        gaps = np.min([((points - c) ** 2).sum(-1) for c in centres], 0)
        if gaps.sum() == 0:
            break
        centres.append(points[rng.choice(len(points), p=gaps / gaps.sum())])
    centres = np.array(centres)
    for _ in range(iterations):
        labels = ((points[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        centres = np.array([points[labels == i].mean(0) if (labels == i).any() else centres[i]
                            for i in range(len(centres))])
    return centres, ((points[:, None] - centres[None]) ** 2).sum(-1).argmin(1)


def _palette(rgb: np.ndarray) -> list[dict[str, Any]]:
    """Dominant colours by share of the image, clusters with the same name merged."""
    points = rgb.reshape(-1, 3)
    if len(points) > 4096:
        points = points[np.linspace(0, len(points) - 1, 4096).astype(int)]
    lab = _lab(points)
    centres, labels = _kmeans(lab, CLUSTERS)
    merged: dict[str, dict[str, Any]] = {}
    for i in range(len(centres)):
        members = labels == i
        if not members.any():
            continue
        mean = points[members].mean(0) * 255
        name = colour_name(mean)
        entry = merged.setdefault(name, {"name": name, "count": 0, "sum": np.zeros(3)})
        entry["count"] += int(members.sum())
        entry["sum"] += mean * members.sum()
    colours = []
    for entry in sorted(merged.values(), key=lambda e: -e["count"]):
        rgb_mean = tuple(int(v) for v in np.rint(entry["sum"] / entry["count"]))
        colours.append({"name": entry["name"], "rgb": rgb_mean, "hex": "#" + bytes(rgb_mean).hex(),
                        "share": round(entry["count"] / len(points), 3)})
    return colours


def aspect_ratio(width: int, height: int) -> str:
    """The reduced ratio W:H of a size, or the nearest standard ratio when that would be unwieldy."""
    divisor = math.gcd(width, height)
    w, h = width // divisor, height // divisor
    if max(w, h) <= 21:
        return f"{w}:{h}"
    target = math.log(width / height)
    w, h = min(STANDARD_RATIOS, key=lambda r: abs(math.log(r[0] / r[1]) - target))
    return f"{w}:{h}"


def _orientation(width: int, height: int) -> str:
    """Landscape, portrait or (within 5%) square."""
    return "landscape" if width > height * 1.05 else "portrait" if height > width * 1.05 else "square"


def _horizon(lab: np.ndarray) -> float | None:
    """Height (0..1) of the strongest horizontal colour boundary, if there is a clear one."""
    rows = lab.mean(1)
    h = len(rows)
    band = max(2, h // 16)
    best, where = 0.0, None
    for y in range(max(band, h // 10), min(h - band, h - h // 10)):
        jump = float(np.linalg.norm(rows[y - band:y].mean(0) - rows[y:y + band].mean(0)))
        if jump > best:
            best, where = jump, y
    return where / h if where is not None and best > 12 else None


def _stars(luma: np.ndarray) -> float:
    """Fraction of pixels that are isolated bright points (stars, sparkles) on a darker surround."""
    padded = np.pad(luma, 2, mode="edge")
    h, w = luma.shape
    surround = np.mean([padded[2 + dy:2 + dy + h, 2 + dx:2 + dx + w] for dy in (-2, 2) for dx in (-2, 2)], 0)
    return float(((luma - surround) > 0.25).mean())


def analyse(image: Image.Image) -> dict[str, Any]:
    """Measure an image: size, aspect, colours, light, contrast, saturation, warmth, detail and layout."""
    width, height = image.size
    rgb = _sample(image)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    chroma = rgb.max(-1) - rgb.min(-1)
    h, w = luma.shape
    gy, gx = np.abs(np.diff(luma, axis=0))[:, :-1], np.abs(np.diff(luma, axis=1))[:-1, :]
    edges = np.hypot(gx, gy)
    bright = luma >= np.quantile(luma, 0.9)
    ys, xs = np.nonzero(bright)
    thirds = max(1, h // 3)
    centre = luma[h // 4:h - h // 4, w // 4:w - w // 4]
    surround = (luma.sum() - centre.sum()) / max(1, luma.size - centre.size)
    figures = {
        "width": width,
        "height": height,
        "aspect_ratio": aspect_ratio(width, height),
        "orientation": _orientation(width, height),
        "brightness": float(luma.mean()),
        "contrast": float(luma.std()),
        "saturation": float(chroma.mean()),
        "warmth": float((rgb[..., 0] - rgb[..., 2]).mean()),
        "edge_density": float((edges > 0.08).mean()),
        "light_centre": (float(xs.mean() / w), float(ys.mean() / h)),
        "top_minus_bottom": float(luma[:thirds].mean() - luma[-thirds:].mean()),
        "centre_minus_surround": float(centre.mean() - surround),
        "symmetry": float(1 - np.abs(luma - luma[:, ::-1]).mean() * 4),
        "horizon": _horizon(_lab(rgb)),
        "stars": _stars(luma),
        "colours": _palette(rgb),
        "sky": colour_name(rgb[: max(1, h // 5)].reshape(-1, 3).mean(0) * 255),
    }
    figures["labels"] = _labels(figures)
    return figures


# ---------------------------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------------------------


def _grade(value: float, steps: tuple[tuple[float, str], ...], last: str) -> str:
    """The word for the first step whose limit ``value`` is below."""
    return next((word for limit, word in steps if value < limit), last)


def _labels(f: dict[str, Any]) -> dict[str, str]:
    """Words for the measured figures."""
    light_x, light_y = f["light_centre"]
    if f["top_minus_bottom"] > 0.12:
        light = "backlit, with a bright sky over a darker foreground"
    elif f["top_minus_bottom"] < -0.12:
        light = "dark overhead, light gathering in the foreground"
    elif f["centre_minus_surround"] > 0.1:
        light = "a glowing centre framed by shadow"
    else:
        side = "left" if light_x < 0.4 else "right" if light_x > 0.6 else "centre"
        height = "upper" if light_y < 0.4 else "lower" if light_y > 0.6 else "middle"
        light = f"light falling from the {height} {side}".replace("middle centre", "centre")
    horizon = f["horizon"]
    layout = ("a high horizon" if horizon is not None and horizon < 0.38 else
              "a low horizon and a wide sky" if horizon is not None and horizon > 0.62 else
              "a centred horizon line" if horizon is not None else
              "a symmetrical composition" if f["symmetry"] > 0.85 else "an open, free composition")
    if f["centre_minus_surround"] < -0.12:
        layout += " around a dark central silhouette"
    return {
        "brightness": _grade(f["brightness"], ((0.18, "dark"), (0.35, "low-key"), (0.62, "balanced")),
                             "bright" if f["brightness"] < 0.8 else "luminous high-key"),
        "contrast": _grade(f["contrast"], ((0.08, "soft low contrast"), (0.16, "gentle contrast"),
                                           (0.25, "punchy contrast")), "dramatic high contrast"),
        "saturation": _grade(f["saturation"], ((0.05, "monochrome"), (0.15, "muted"), (0.3, "natural"),
                                               (0.45, "rich")), "vivid"),
        "temperature": "warm" if f["warmth"] > 0.06 else "cool" if f["warmth"] < -0.06 else "neutral",
        "detail": _grade(f["edge_density"], ((0.03, "minimal"), (0.1, "clean"), (0.22, "detailed")),
                         "intricate, busy"),
        "light": light,
        "layout": layout,
        "scene": _scene(f),
    }


_SKY_FAMILIES = (
    ({"sky blue", "azure", "blue", "cyan", "turquoise", "teal", "cobalt"}, "an open daylight sky"),
    ({"orange", "amber", "peach", "coral", "salmon", "golden yellow", "yellow", "pink", "rose", "hot pink",
      "scarlet", "red"}, "a glowing sunset sky"),
    ({"plum", "purple", "violet", "indigo", "mauve", "lavender", "magenta"}, "a dusky twilight sky"),
    ({"green", "forest green", "emerald", "olive", "sage", "lime green", "mint"}, "a lush green setting"),
    ({"grey", "silver", "white", "ivory", "cream", "beige", "blush", "slate grey"},
     "a hazy, overcast atmosphere"),
)


def _scene(f: dict[str, Any]) -> str:
    """A guess at the setting from the colour of the top of the frame, stars and brightness."""
    if f["stars"] > 0.002 and f["brightness"] < 0.3:
        return "a starry night sky"
    if f["brightness"] < 0.22:
        return "a nocturnal scene"
    return next((scene for names, scene in _SKY_FAMILIES if f["sky"] in names), "an atmospheric scene")


def _style_reference(f: dict[str, Any], labels: dict[str, str]) -> str:
    """An art-direction phrase that fits the measurements."""
    if labels["saturation"] == "monochrome":
        return "black and white film photography"
    if f["brightness"] < 0.3 and f["contrast"] > 0.18:
        return "chiaroscuro lighting"
    if labels["saturation"] in ("rich", "vivid") and f["edge_density"] > 0.15:
        return "maximalist pop art"
    if labels["saturation"] in ("rich", "vivid"):
        return "bold poster art with flat shapes"
    if f["brightness"] > 0.6 and labels["saturation"] == "muted":
        return "airy scandinavian minimalism"
    return "soft atmospheric matte painting"


def _colour_phrase(colours: list[dict[str, Any]], count: int) -> str:
    """'a, b and c' for the leading colour names."""
    names = [c["name"] for c in colours if c["share"] >= 0.04][:count] or [colours[0]["name"]]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def describe(image: Image.Image) -> list[str]:
    """Four different Midjourney-style prompts describing the image, from real pixel analysis.

    They name the image's subject when one is known: from the prompt it carries in its ``parameters``
    (images this service made), or from OpenCV's face detectors; else they describe its composition.
    """
    f = analyse(image)
    words = f["labels"]
    ar = f"--ar {f['aspect_ratio']}"
    colours = f["colours"]
    lead = colours[0]["name"]
    accents = _colour_phrase(colours[1:], 2) if len(colours) > 1 else lead
    found = detect.subject(image)
    of = f" of {found.phrase}" if found else ""
    return [
        (
            f"{f['orientation']} photograph{of}{' in' if found else ' of'} {words['scene']}, "
            f"{_colour_phrase(colours, 3)} tones, "
            f"{words['temperature']} light, {words['light']}, {words['contrast']} {ar} --style raw"
        ),
        (
            f"{words['brightness']} digital painting{of}{',' if found else ''} dominated by {lead}, "
            f"with accents of {accents}, "
            f"{words['saturation']} colours, {words['detail']} brushwork, {words['layout']} {ar} --v 6.1"
        ),
        (
            f"{found.phrase + ', ' if found else ''}"
            f"{words['detail']} {'' if found else 'abstract '}composition in {_colour_phrase(colours, 3)}, "
            f"{words['contrast']}, {words['temperature']} {words['saturation']} palette {ar} --stylize 250"
        ),
        (
            f"cinematic {f['orientation']} still{of}, {words['scene']}, {words['temperature']} {lead} colour "
            f"grading, {words['brightness']} exposure, in the style of {_style_reference(f, words)} "
            f"{ar} --v 6.1"
        ),
    ]
