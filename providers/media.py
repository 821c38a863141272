"""Rendering media for the local provider: a painted canvas redone as oil, watercolour, pixel art,
a photograph, a pencil sketch or low-poly facets.

Each function takes float colour planes (3, h, w) in 0..1 and returns new planes of the same shape.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

MEDIA = ("oil", "watercolor", "pixel", "photo", "sketch", "lowpoly")


def _image(planes: np.ndarray) -> Image.Image:
    """Float planes (3, h, w) in 0..1 as an 8-bit RGB image."""
    channels = (np.clip(planes, 0, 1) * 255 + 0.5).astype(np.uint8)
    return Image.merge("RGB", [Image.fromarray(channel) for channel in channels])


def _planes(image: Image.Image) -> np.ndarray:
    """An RGB image as float planes (3, h, w) in 0..1."""
    return np.stack([np.asarray(band, np.float32) for band in image.split()]) / 255


def _luma(planes: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of float planes."""
    return 0.299 * planes[0] + 0.587 * planes[1] + 0.114 * planes[2]


def _blur(plane: np.ndarray, radius: float) -> np.ndarray:
    """A 0..1 float plane, Gaussian-blurred (through 8 bits: Pillow blurs only 8-bit images)."""
    image = Image.fromarray((np.clip(plane, 0, 1) * 255 + 0.5).astype(np.uint8))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(radius)), np.float32) / 255


def _field(rng: np.random.Generator, cells: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Smooth random field of about unit variance, ``cells`` (rows, columns) resized to ``size`` (w, h)."""
    grid = rng.standard_normal(cells).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize(size, Image.Resampling.BICUBIC))


def oil(rgb: np.ndarray, subject: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Oil paint: colours flattened into dabs, with raised, lit brush ridges running in strokes."""
    _, h, w = rgb.shape
    image = _image(rgb)
    flat = image.reduce(3).filter(ImageFilter.SMOOTH_MORE).resize((w, h), Image.Resampling.BICUBIC)
    out = _planes(flat)
    angle = rng.uniform(25, 65)
    cells = (max(2, h // 3), max(2, w // 12))
    ridges = Image.fromarray(rng.standard_normal(cells).astype(np.float32))
    side = math.ceil(math.hypot(w, h))
    ridges = ridges.resize((side, side), Image.Resampling.BICUBIC).rotate(angle, Image.Resampling.BILINEAR)
    off = (side - w) // 2, (side - h) // 2
    height = np.asarray(ridges.crop((off[0], off[1], off[0] + w, off[1] + h)), np.float32)
    relief = np.zeros_like(height)
    relief[1:, 1:] = height[1:, 1:] - height[:-1, :-1]  # light from the upper left on the paint's relief
    return out * (1 + 0.1 * np.tanh(height * 0.5)) + 0.09 * np.tanh(relief * 2)


def watercolor(rgb: np.ndarray, subject: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Watercolour: soft bleeding washes, pigment pooling at the edges, white paper showing through."""
    _, h, w = rgb.shape
    washed = _planes(_image(rgb).filter(ImageFilter.GaussianBlur(max(1.0, h / 180))))
    levels = 7
    washed = np.round(washed * levels) / levels * 0.6 + washed * 0.4
    luma = _luma(washed)
    blurred = _blur(luma, max(1.0, h / 120))
    edges = np.clip(np.abs(luma - blurred) * 6, 0, 1)
    bloom = _field(rng, (max(2, h // 40), max(2, w // 40)), (w, h))
    paper = 1 + 0.04 * _field(rng, (max(2, h // 3), max(2, w // 3)), (w, h))
    lightened = washed + (1 - washed) * (0.35 + 0.1 * bloom)
    return (lightened * (1 - 0.45 * edges)) * paper


def pixel(rgb: np.ndarray, subject: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Pixel art: a coarse grid of square pixels from a small palette of flat colours."""
    _, h, w = rgb.shape
    cells = max(1, round(min(w, h) / 64))
    small = _image(rgb).resize((max(1, w // cells), max(1, h // cells)), Image.Resampling.BOX)
    small = small.quantize(24, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).convert("RGB")
    return _planes(small.resize((w, h), Image.Resampling.NEAREST))


def photo(rgb: np.ndarray, subject: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """A photograph: the subject in focus against a soft, out-of-focus background, gentle light falloff."""
    _, h, w = rgb.shape
    small = _image(rgb).reduce(2)
    soft = _planes(
        small.filter(ImageFilter.GaussianBlur(max(1.0, h / 180))).resize((w, h), Image.Resampling.BILINEAR)
    )
    if subject is not None and subject.max() > 0:
        mask = Image.fromarray((subject * 255).astype(np.uint8)).reduce(4).filter(ImageFilter.MaxFilter(3))
        mask = mask.filter(ImageFilter.GaussianBlur(max(1.0, h / 600))).resize(
            (w, h), Image.Resampling.BILINEAR
        )
        focus = np.asarray(mask, np.float32) / 255
    else:  # no subject: focus on the lower middle, where the ground is nearest
        ys = np.linspace(0, 1, h, dtype=np.float32)[:, None]
        focus = np.broadcast_to(np.exp(-(((ys - 0.7) / 0.25) ** 2)), (h, w))
    out = soft + (rgb - soft) * focus
    ys, xs = np.ogrid[0:h, 0:w]
    falloff = 1 - 0.09 * (((xs / w - 0.5) * 2) ** 2 + ((ys / h - 0.45) * 2) ** 2).astype(np.float32)
    return out * falloff + 0.02


def sketch(rgb: np.ndarray, subject: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """A pencil sketch: dark outlines where the picture has edges, hatching in the shadows, on paper."""
    _, h, w = rgb.shape
    luma = _blur(_luma(rgb), 0.8)
    gx = np.zeros_like(luma)
    gy = np.zeros_like(luma)
    gx[:, 1:-1] = luma[:, 2:] - luma[:, :-2]
    gy[1:-1] = luma[2:] - luma[:-2]
    edges = np.clip(np.hypot(gx, gy) * 7, 0, 1)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    period = max(3.0, h / 90)
    hatch = (np.sin((xs + ys) * (2 * np.pi / period)) > 0.55).astype(np.float32)
    cross = (np.sin((xs - ys) * (2 * np.pi / period)) > 0.6).astype(np.float32)
    shadow = np.clip((0.55 - luma) * 3, 0, 1)
    deep = np.clip((0.3 - luma) * 4, 0, 1)
    ink = np.clip(edges + hatch * shadow * 0.45 + cross * deep * 0.45, 0, 1)
    paper = 0.96 + 0.02 * _field(rng, (max(2, h // 4), max(2, w // 4)), (w, h))
    grey = paper * (1 - 0.85 * ink)
    return np.stack([grey * 0.99, grey * 0.97, grey * 0.92])


def lowpoly(rgb: np.ndarray, subject: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Low poly: the picture rebuilt from flat-shaded triangles on a jittered grid."""
    _, h, w = rgb.shape
    step = max(6, round(min(w, h) / 22))
    cols, rows = w // step + 2, h // step + 2
    gx = np.arange(cols, dtype=np.float32) * step + rng.uniform(-0.4, 0.4, (rows, cols)) * step
    gy = np.arange(rows, dtype=np.float32)[:, None] * step + rng.uniform(-0.4, 0.4, (rows, cols)) * step
    gx[:, 0], gy[0, :] = 0, 0
    source = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    image = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(image)
    for i in range(rows - 1):
        for j in range(cols - 1):
            a, b = (gx[i, j], gy[i, j]), (gx[i, j + 1], gy[i, j + 1])
            c, d = (gx[i + 1, j], gy[i + 1, j]), (gx[i + 1, j + 1], gy[i + 1, j + 1])
            for triangle in ((a, b, d), (a, d, c)) if (i + j) % 2 else ((a, b, c), (b, d, c)):
                cx = int(min(w - 1, max(0, sum(p[0] for p in triangle) / 3)))
                cy = int(min(h - 1, max(0, sum(p[1] for p in triangle) / 3)))
                draw.polygon(triangle, fill=tuple(int(v) for v in source[:, cy, cx]))
    return _planes(image)


_RENDER = {
    "oil": oil,
    "watercolor": watercolor,
    "pixel": pixel,
    "photo": photo,
    "sketch": sketch,
    "lowpoly": lowpoly,
}


def render(rgb: np.ndarray, medium: str, subject: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """The canvas redone in ``medium`` (one of MEDIA)."""
    return _RENDER[medium](rgb, subject, rng)
