"""Parametric vector figures for the local provider: one recognisable silhouette per subject family.

A figure is drawn with a ``Pen`` in its own units (1 = the figure's height, x to the right in the
direction it faces, y up from its base) onto a few coverage layers: ``body`` (the subject's colour),
``second`` (its second colour), ``accent``, ``dark`` (eyes, wheels, windows), ``light`` (highlights,
lit windows, flames) and ``glass`` (a translucent visor). ``procedural`` paints the layers in that
order, shaded and lit. Each family has default colours; ``anchors`` tell modifiers where the head is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

LAYERS = ("body", "second", "accent", "dark", "light", "glass")
Point = tuple[float, float]


@dataclass
class Pen:
    """Draws a figure's shapes in figure units onto per-layer coverage masks (pixels at ``size``)."""

    width: int
    height: int
    x: float  # the figure's base centre, in pixels
    base: float
    size: float  # the figure's height, in pixels
    facing: int  # 1: faces right, -1: faces left
    rng: np.random.Generator
    jitter: float = 0.0  # how far each dimension may wander (variations re-draw details)
    layers: dict[str, Image.Image] = field(default_factory=dict)
    anchors: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def j(self, value: float, spread: float = 0.04) -> float:
        """``value``, moved a little when the figure is re-drawn for a variation."""
        return value + (self.rng.normal() * spread * self.jitter if self.jitter else 0.0)

    def p(self, x: float, y: float) -> Point:
        """Figure units to pixels."""
        return self.x + self.facing * x * self.size, self.base - y * self.size

    def _draw(self, layer: str) -> ImageDraw.ImageDraw:
        """A drawing context on ``layer``, created blank on first use."""
        if layer not in self.layers:
            self.layers[layer] = Image.new("L", (self.width, self.height), 0)
        return ImageDraw.Draw(self.layers[layer])

    def poly(self, layer: str, points: list[Point], fill: int = 255) -> None:
        """A filled polygon."""
        self._draw(layer).polygon([self.p(x, y) for x, y in points], fill=fill)

    def ellipse(
        self, layer: str, cx: float, cy: float, rx: float, ry: float | None = None, fill: int = 255
    ) -> None:
        """A filled ellipse centred at (cx, cy)."""
        ry = rx if ry is None else ry
        (x0, y0), (x1, y1) = self.p(cx - rx, cy + ry), self.p(cx + rx, cy - ry)
        self._draw(layer).ellipse((min(x0, x1), y0, max(x0, x1), y1), fill=fill)

    def rect(
        self, layer: str, x0: float, y0: float, x1: float, y1: float, fill: int = 255, radius: float = 0.0
    ) -> None:
        """A filled (optionally rounded) rectangle between two corners."""
        (a, b), (c, d) = self.p(x0, y0), self.p(x1, y1)
        box = (min(a, c), min(b, d), max(a, c), max(b, d))
        self._draw(layer).rounded_rectangle(box, radius=radius * self.size, fill=fill)

    def line(self, layer: str, points: list[Point], width: float, fill: int = 255) -> None:
        """A polyline ``width`` figure units thick, with round joints."""
        self._draw(layer).line(
            [self.p(x, y) for x, y in points],
            fill=fill,
            width=max(1, round(width * self.size)),
            joint="curve",
        )

    def tube(self, layer: str, points: list[Point], width: float) -> None:
        """A thick curve with round ends (legs, tails, necks)."""
        self.line(layer, points, width)
        for x, y in (points[0], points[-1]):
            self.ellipse(layer, x, y, width / 2)

    def ring(self, layer: str, cx: float, cy: float, rx: float, ry: float, width: float) -> None:
        """An elliptical ring (a cup's handle) ``width`` figure units thick."""
        (x0, y0), (x1, y1) = self.p(cx - rx, cy + ry), self.p(cx + rx, cy - ry)
        box = (min(x0, x1), y0, max(x0, x1), y1)
        self._draw(layer).ellipse(box, outline=255, width=max(1, round(width * self.size)))

    def head(self, x: float, y: float, r: float) -> None:
        """Record where the head is, for hats, helmets and crowns."""
        self.anchors["head"] = (x, y, r)

    def masks(self, margin: int = 2) -> tuple[dict[str, np.ndarray], tuple[int, int, int, int]]:
        """Each drawn layer's coverage, 0..1, at half the drawing size (the pen draws at 2x), cropped
        to the box (left, top, right, bottom, in half-size pixels) around everything drawn."""
        boxes = [box for image in self.layers.values() if (box := image.getbbox())]
        if not boxes:
            return {}, (0, 0, 0, 0)
        w, h = self.width // 2, self.height // 2
        x0 = max(0, min(b[0] for b in boxes) // 2 - margin)
        y0 = max(0, min(b[1] for b in boxes) // 2 - margin)
        x1 = min(w, max(b[2] for b in boxes) // 2 + 1 + margin)
        y1 = min(h, max(b[3] for b in boxes) // 2 + 1 + margin)
        crop = (x0 * 2, y0 * 2, x1 * 2, y1 * 2)
        masks = {
            name: np.asarray(image.crop(crop).reduce(2), np.float32) / 255
            for name, image in self.layers.items()
        }
        return masks, (x0, y0, x1, y1)


def _curve(a: Point, b: Point, c: Point, steps: int = 12) -> list[Point]:
    """A quadratic Bezier from ``a`` through control ``b`` to ``c``."""
    t = np.linspace(0, 1, steps)
    xs = (1 - t) ** 2 * a[0] + 2 * (1 - t) * t * b[0] + t**2 * c[0]
    ys = (1 - t) ** 2 * a[1] + 2 * (1 - t) * t * b[1] + t**2 * c[1]
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def _legs(p: Pen, xs: list[float], top: float, width: float, layer: str = "body") -> None:
    """Legs from the body line ``top`` down to the ground, at each of ``xs``, a little astride."""
    for i, x in enumerate(xs):
        swing = p.j(0.0, 0.03) + (0.03 if i % 2 else -0.02)
        p.tube(layer, [(x, top), (x + swing, top * 0.45), (x + swing * 0.5, 0.02)], width)


# --- animals -------------------------------------------------------------------------------------


def fox(p: Pen) -> None:
    """A standing fox in profile: pointed ears and snout, thin legs, a bushy white-tipped tail."""
    body_y = p.j(0.4)
    _legs(p, [-0.26, -0.17, 0.12, 0.2], body_y, 0.055)
    p.ellipse("body", -0.05, body_y, 0.33, 0.13)
    p.poly("body", [(0.14, body_y + 0.08), (0.3, body_y + 0.28), (0.42, body_y + 0.2), (0.26, body_y - 0.06)])
    hx, hy = 0.38, body_y + 0.26
    p.ellipse("body", hx, hy, 0.11, 0.09)
    p.poly("body", [(hx + 0.04, hy + 0.05), (hx + p.j(0.25), hy - 0.04), (hx + 0.04, hy - 0.08)])
    p.poly("second", [(hx, hy - 0.08), (hx + 0.22, hy - 0.05), (hx + 0.05, hy - 0.01)])
    for dx in (-0.06, 0.03):
        p.poly(
            "body",
            [(hx + dx - 0.04, hy + 0.05), (hx + dx + p.j(0.01), hy + p.j(0.2)), (hx + dx + 0.05, hy + 0.06)],
        )
        p.poly(
            "dark", [(hx + dx - 0.015, hy + 0.08), (hx + dx + 0.005, hy + 0.16), (hx + dx + 0.025, hy + 0.08)]
        )
    p.ellipse("dark", hx + 0.24, hy - 0.045, 0.018)
    p.ellipse("dark", hx + 0.07, hy + 0.02, 0.016)
    p.poly("second", [(0.2, body_y + 0.02), (0.34, body_y + 0.2), (0.3, body_y - 0.08)])
    tail = _curve((-0.34, body_y + 0.02), (-0.62, body_y + p.j(0.05)), (-0.7, body_y - 0.22))
    for k, (x, y) in enumerate(tail):
        r = 0.05 + 0.07 * math.sin(math.pi * min(1.0, (k + 2) / len(tail)))
        p.ellipse("body", x, y, r)
    tx, ty = tail[-1]
    p.ellipse("second", tx, ty, 0.06)
    for x in (-0.26, -0.17, 0.12, 0.2):
        p.rect("dark", x - 0.03, 0.0, x + 0.03, 0.12)
    p.head(hx, hy, 0.11)


def cat(p: Pen) -> None:
    """A sitting cat facing the viewer: round head, short pointed ears, whiskers and a curled tail."""
    p.ellipse("body", 0.0, 0.26, p.j(0.22), 0.27)
    p.ellipse("body", -0.1, 0.05, 0.1, 0.05)
    p.ellipse("body", 0.1, 0.05, 0.1, 0.05)
    tail = _curve((0.18, 0.05), (0.48, 0.0), (p.j(0.42), 0.3))
    p.tube("body", tail, 0.06)
    hy = p.j(0.62)
    p.ellipse("body", 0.0, hy, 0.19, 0.16)
    for side in (-1, 1):
        p.poly("body", [(side * 0.17, hy + 0.04), (side * p.j(0.15), hy + 0.27), (side * 0.04, hy + 0.13)])
        p.poly("accent", [(side * 0.145, hy + 0.08), (side * 0.135, hy + 0.2), (side * 0.07, hy + 0.13)])
        p.ellipse("accent", side * 0.075, hy + 0.01, 0.045, 0.035)
        p.ellipse("dark", side * 0.075, hy + 0.01, 0.012, 0.032)
        p.ellipse("light", side * 0.065, hy + 0.025, 0.008)
        for k in (-1, 0, 1):
            p.line("light", [(side * 0.06, hy - 0.07), (side * 0.3, hy - 0.06 + k * 0.04)], 0.005)
    p.poly("dark", [(-0.025, hy - 0.05), (0.025, hy - 0.05), (0.0, hy - 0.08)])
    p.ellipse("second", 0.0, 0.3, 0.1, 0.16)
    p.head(0.0, hy, 0.19)


def dog(p: Pen) -> None:
    """A standing dog in profile: deep chest, rounded muzzle, floppy ear, raised tail and a collar."""
    body_y = p.j(0.42)
    _legs(p, [-0.27, -0.17, 0.13, 0.22], body_y, 0.075)
    p.ellipse("body", -0.03, body_y, 0.33, 0.15)
    p.poly("body", [(0.14, body_y + 0.1), (0.26, body_y + 0.3), (0.38, body_y + 0.22), (0.3, body_y - 0.08)])
    hx, hy = 0.34, body_y + 0.3
    p.ellipse("body", hx, hy, 0.12, 0.11)
    p.rect("body", hx, hy - 0.09, hx + p.j(0.2), hy + 0.02, radius=0.04)
    p.ellipse("dark", hx + 0.19, hy, 0.03)
    p.ellipse("dark", hx + 0.06, hy + 0.04, 0.018)
    p.poly(
        "second",
        [(hx - 0.06, hy + 0.08), (hx - 0.14, hy - 0.14), (hx - 0.02, hy - 0.1), (hx + 0.02, hy + 0.08)],
    )
    p.tube("accent", [(hx - 0.09, hy - 0.14), (hx + 0.03, hy - 0.12)], 0.04)
    p.tube("body", _curve((-0.34, body_y + 0.06), (-0.46, body_y + 0.12), (-0.44, body_y + p.j(0.3))), 0.05)
    p.head(hx, hy, 0.12)


def bird(p: Pen) -> None:
    """A songbird perched on a branch, in profile: beak, wing, forked tail."""
    p.tube("second", [(-0.55, 0.18), (0.0, 0.2), (0.55, p.j(0.15))], 0.04)
    p.line("second", [(0.2, 0.19), (0.35, 0.3)], 0.02)
    by = p.j(0.42)
    p.ellipse("body", 0.0, by, 0.2, 0.15)
    p.poly(
        "body",
        [(-0.15, by - 0.02), (-0.48, by - 0.2), (-0.42, by - 0.1), (-0.5, by - 0.12), (-0.12, by + 0.06)],
    )
    hx, hy = 0.17, by + 0.15
    p.ellipse("body", hx, hy, 0.1)
    p.poly("accent", [(hx + 0.08, hy + 0.03), (hx + p.j(0.22), hy - 0.01), (hx + 0.08, hy - 0.04)])
    p.ellipse("dark", hx + 0.04, hy + 0.02, 0.02)
    p.ellipse("light", hx + 0.047, hy + 0.027, 0.006)
    p.poly("second", [(0.08, by + 0.06), (-0.14, by + 0.08), (-0.32, by - 0.08), (0.02, by - 0.06)])
    p.ellipse("light", 0.06, by - 0.06, 0.1, 0.06)
    for x in (-0.02, 0.05):
        p.line("dark", [(x, by - 0.14), (x, 0.2)], 0.015)
    p.head(hx, hy, 0.1)


def owl(p: Pen) -> None:
    """An owl facing the viewer on a branch: ear tufts, huge round eyes, a hooked beak."""
    p.tube("second", [(-0.55, 0.1), (0.55, p.j(0.12))], 0.05)
    p.ellipse("body", 0.0, 0.42, p.j(0.25), 0.33)
    p.ellipse("light", 0.0, 0.34, 0.15, 0.2)
    for side in (-1, 1):
        p.poly("body", [(side * 0.1, 0.66), (side * p.j(0.26), 0.86), (side * 0.24, 0.6)])
        p.ellipse("second", side * 0.23, 0.4, 0.07, 0.22)
        p.ellipse("accent", side * 0.1, 0.58, 0.085)
        p.ellipse("dark", side * 0.1, 0.58, 0.045)
        p.ellipse("light", side * 0.085, 0.6, 0.012)
    p.poly("accent", [(-0.03, 0.54), (0.03, 0.54), (0.0, 0.46)])
    p.head(0.0, 0.58, 0.22)


def horse(p: Pen) -> None:
    """A standing horse in profile: long legs, arched neck, long head, mane and tail."""
    body_y = p.j(0.52)
    _legs(p, [-0.3, -0.2, 0.16, 0.25], body_y, 0.055)
    for x in (-0.3, -0.2, 0.16, 0.25):
        p.rect("dark", x - 0.035, 0.0, x + 0.035, 0.04)
    p.ellipse("body", -0.03, body_y, 0.36, 0.14)
    p.poly(
        "body", [(0.18, body_y + 0.08), (0.32, body_y + 0.38), (0.42, body_y + 0.36), (0.34, body_y - 0.06)]
    )
    hx, hy = 0.4, body_y + 0.36
    p.poly(
        "body",
        [
            (hx - 0.06, hy + 0.04),
            (hx + 0.04, hy + 0.06),
            (hx + p.j(0.26), hy - 0.12),
            (hx + 0.22, hy - 0.17),
            (hx - 0.03, hy - 0.06),
        ],
    )
    p.poly("body", [(hx - 0.02, hy + 0.04), (hx + 0.0, hy + 0.13), (hx + 0.04, hy + 0.05)])
    p.ellipse("dark", hx + 0.05, hy - 0.0, 0.017)
    p.poly(
        "second",
        [
            (hx - 0.05, hy + 0.05),
            (0.3, body_y + 0.36),
            (0.15, body_y + 0.1),
            (0.2, body_y + 0.07),
            (0.34, body_y + 0.26),
        ],
    )
    p.poly(
        "second",
        [(-0.37, body_y + 0.06), (-0.5, body_y - 0.1), (-0.46, body_y - p.j(0.4)), (-0.4, body_y - 0.12)],
    )
    p.head(hx + 0.03, hy + 0.02, 0.08)


def fish(p: Pen) -> None:
    """A fish in profile: oval body, forked tail, fins, stripes and a round eye."""
    cy = 0.5
    p.ellipse("body", 0.0, cy, 0.4, p.j(0.2))
    p.poly("body", [(-0.34, cy), (-0.62, cy + p.j(0.2)), (-0.55, cy), (-0.62, cy - 0.2)])
    p.poly("second", [(-0.1, cy + 0.17), (0.05, cy + 0.32), (0.14, cy + 0.16)])
    p.poly("second", [(-0.05, cy - 0.16), (0.05, cy - 0.28), (0.1, cy - 0.15)])
    for x in (-0.15, 0.05):
        p.rect("second", x, cy - 0.17, x + 0.06, cy + 0.17)
    p.ellipse("light", 0.24, cy + 0.05, 0.05)
    p.ellipse("dark", 0.25, cy + 0.05, 0.028)
    p.line("dark", [(0.3, cy - 0.06), (0.38, cy - 0.04)], 0.012)
    p.head(0.25, cy + 0.05, 0.12)


def whale(p: Pen) -> None:
    """A whale in profile: long tapering body, pale belly, flipper and a wide fluke."""
    cy = 0.45
    p.ellipse("body", 0.05, cy, 0.48, p.j(0.17))
    p.poly("body", [(-0.35, cy + 0.1), (-0.7, cy + 0.02), (-0.7, cy - 0.04), (-0.35, cy - 0.1)])
    p.poly("body", [(-0.68, cy), (-0.82, cy + p.j(0.16)), (-0.74, cy), (-0.82, cy - 0.14)])
    p.ellipse("second", 0.1, cy - 0.09, 0.36, 0.07)
    p.poly("body", [(0.1, cy - 0.08), (-0.05, cy - 0.3), (0.02, cy - 0.08)])
    p.ellipse("dark", 0.36, cy + 0.02, 0.02)
    p.head(0.35, cy + 0.03, 0.14)


def dragon(p: Pen) -> None:
    """A dragon in profile: S-shaped neck, horned head, spread bat wings, spiked tail."""
    body_y = p.j(0.38)
    wing_top = p.j(1.0)
    p.poly(
        "second",
        [
            (-0.05, body_y + 0.1),
            (-0.3, wing_top),
            (-0.4, wing_top - 0.18),
            (-0.5, body_y + 0.5),
            (-0.62, body_y + 0.35),
            (-0.65, body_y + 0.15),
            (-0.2, body_y + 0.05),
        ],
    )
    for x, y in ((-0.3, wing_top), (-0.5, body_y + 0.5), (-0.62, body_y + 0.35)):
        p.line("body", [(-0.08, body_y + 0.12), (x, y)], 0.02)
    _legs(p, [-0.2, 0.14], body_y, 0.08)
    p.ellipse("body", -0.03, body_y, 0.3, 0.13)
    neck = _curve((0.18, body_y + 0.05), (0.42, body_y + 0.15), (0.34, body_y + 0.45))
    p.tube("body", neck, 0.11)
    hx, hy = neck[-1]
    p.ellipse("body", hx + 0.04, hy, 0.09, 0.07)
    p.poly("body", [(hx + 0.08, hy + 0.05), (hx + p.j(0.26), hy - 0.02), (hx + 0.08, hy - 0.06)])
    for dx in (-0.03, 0.02):
        p.poly(
            "accent", [(hx + dx - 0.02, hy + 0.04), (hx + dx - 0.1, hy + 0.2), (hx + dx + 0.02, hy + 0.06)]
        )
    p.ellipse("light", hx + 0.07, hy + 0.02, 0.018)
    tail = _curve((-0.3, body_y), (-0.6, body_y - 0.3), (-0.85, body_y - 0.1))
    p.tube("body", tail, 0.07)
    tx, ty = tail[-1]
    p.poly("accent", [(tx, ty + 0.07), (tx - 0.12, ty), (tx, ty - 0.07), (tx + 0.02, ty)])
    for x, y in [*neck[::3], (0.0, body_y + 0.13), (-0.15, body_y + 0.12)]:
        p.poly("accent", [(x - 0.03, y + 0.04), (x - 0.01, y + 0.1), (x + 0.03, y + 0.04)])
    p.head(hx + 0.04, hy, 0.08)


def rabbit(p: Pen) -> None:
    """A sitting rabbit in profile: round body, tall ears, a cotton tail."""
    p.ellipse("body", -0.05, 0.22, 0.26, 0.22)
    p.ellipse("body", 0.14, 0.05, 0.14, 0.05)
    hx, hy = 0.2, p.j(0.48)
    p.ellipse("body", hx, hy, 0.13, 0.11)
    for dx in (-0.06, 0.0):
        p.ellipse("body", hx + dx, hy + 0.25, 0.045, p.j(0.17))
        p.ellipse("accent", hx + dx, hy + 0.25, 0.02, 0.12)
    p.ellipse("light", -0.3, 0.24, 0.07)
    p.ellipse("dark", hx + 0.06, hy + 0.02, 0.02)
    p.ellipse("accent", hx + 0.13, hy - 0.02, 0.015)
    p.head(hx, hy, 0.13)


def bear(p: Pen) -> None:
    """A bear on all fours in profile: heavy body, shoulder hump, round ears, short thick legs."""
    body_y = p.j(0.4)
    _legs(p, [-0.28, -0.16, 0.12, 0.24], body_y, 0.11)
    p.ellipse("body", -0.03, body_y + 0.02, 0.38, 0.2)
    p.ellipse("body", 0.14, body_y + 0.1, 0.18, 0.16)
    hx, hy = 0.38, body_y + 0.06
    p.ellipse("body", hx, hy, 0.12, 0.11)
    p.rect("body", hx, hy - 0.07, hx + p.j(0.18), hy + 0.02, radius=0.04)
    p.ellipse("dark", hx + 0.18, hy - 0.01, 0.025)
    p.ellipse("dark", hx + 0.06, hy + 0.04, 0.016)
    p.ellipse("body", hx - 0.05, hy + 0.11, 0.04)
    p.ellipse("second", hx + 0.1, hy - 0.04, 0.07, 0.04)
    p.head(hx, hy, 0.12)


def butterfly(p: Pen) -> None:
    """A butterfly seen from above: two pairs of patterned wings, a slim body, antennae."""
    cy = 0.5
    for side in (-1, 1):
        p.ellipse("body", side * 0.22, cy + 0.14, p.j(0.24), 0.2)
        p.ellipse("body", side * 0.16, cy - 0.16, 0.15, 0.15)
        p.ellipse("accent", side * 0.26, cy + 0.16, 0.08)
        p.ellipse("dark", side * 0.26, cy + 0.16, 0.035)
        p.ellipse("second", side * 0.18, cy - 0.18, 0.06)
        p.line("dark", [(side * 0.02, cy + 0.2), (side * 0.12, cy + 0.42)], 0.012)
    p.ellipse("dark", 0.0, cy, 0.035, 0.24)


# --- buildings -----------------------------------------------------------------------------------


def lighthouse(p: Pen) -> None:
    """A striped lighthouse on a rock: tapered tower, gallery, glowing lantern room and a dome."""
    p.poly("second", [(-0.45, 0.0), (-0.35, 0.1), (-0.12, 0.16), (0.15, 0.15), (0.38, 0.08), (0.48, 0.0)])
    top, bottom = 0.74, 0.14
    half_b, half_t = p.j(0.12, 0.02), 0.075
    p.poly("body", [(-half_b, bottom), (-half_t, top), (half_t, top), (half_b, bottom)])
    for k in range(3):
        y0 = bottom + (top - bottom) * (0.2 + k * 0.28)
        y1 = y0 + (top - bottom) * 0.13
        w0 = half_b + (half_t - half_b) * (y0 - bottom) / (top - bottom)
        w1 = half_b + (half_t - half_b) * (y1 - bottom) / (top - bottom)
        p.poly("accent", [(-w0, y0), (-w1, y1), (w1, y1), (w0, y0)])
    p.rect("dark", -0.1, top, 0.1, top + 0.025)
    p.rect("light", -0.055, top + 0.025, 0.055, top + 0.11)
    p.line("dark", [(0.0, top + 0.025), (0.0, top + 0.11)], 0.01)
    p.poly("accent", [(-0.07, top + 0.11), (0.0, top + 0.18), (0.07, top + 0.11)])
    p.rect("dark", -0.02, bottom, 0.02, bottom + 0.08)
    p.anchors["lamp"] = (0.0, top + 0.07, 0.06)


def castle(p: Pen) -> None:
    """A castle: crenellated curtain wall, a tall keep, round towers with cone roofs, a gate."""

    def crenels(x0: float, x1: float, y: float, step: float = 0.05) -> None:
        x = x0
        while x < x1 - 1e-6:
            p.rect("body", x, y, min(x + step * 0.55, x1), y + step * 0.7)
            x += step

    p.rect("body", -0.45, 0.0, 0.45, 0.3)
    crenels(-0.45, 0.45, 0.3)
    keep = p.j(0.68, 0.05)
    p.rect("body", -0.14, 0.0, 0.14, keep)
    crenels(-0.14, 0.14, keep, 0.056)
    for side in (-1, 1):
        x = side * 0.42
        p.rect("body", x - 0.08, 0.0, x + 0.08, 0.5)
        p.poly("accent", [(x - 0.1, 0.5), (x, p.j(0.72)), (x + 0.1, 0.5)])
        p.line("dark", [(x, 0.72), (x, 0.8)], 0.008)
        p.poly("accent", [(x, 0.8), (x + 0.07, 0.775), (x, 0.75)])
        p.rect("dark", x - 0.015, 0.3, x + 0.015, 0.38)
    p.ellipse("dark", 0.0, 0.14, 0.07)
    p.rect("dark", -0.07, 0.0, 0.07, 0.14)
    for x in (-0.06, 0.06):
        p.rect("light", x - 0.017, keep - 0.2, x + 0.017, keep - 0.12)
    p.rect("second", -0.45, 0.0, 0.45, 0.04)


def house(p: Pen) -> None:
    """A cottage: walls, a pitched roof with a chimney, a door and lit windows."""
    wall = p.j(0.42, 0.03)
    p.rect("body", -0.36, 0.0, 0.36, wall)
    p.poly("accent", [(-0.44, wall), (0.0, wall + p.j(0.34)), (0.44, wall)])
    p.rect("accent", 0.18, wall + 0.05, 0.27, wall + 0.3)
    p.rect("second", -0.06, 0.0, 0.08, 0.26)
    p.ellipse("dark", 0.05, 0.13, 0.012)
    for x in (-0.24, 0.22):
        p.rect("light", x - 0.07, 0.18, x + 0.07, 0.32)
        p.line("second", [(x, 0.18), (x, 0.32)], 0.012)
        p.line("second", [(x - 0.07, 0.25), (x + 0.07, 0.25)], 0.012)
    p.ellipse("light", 0.0, wall + 0.12, 0.04)


def tower(p: Pen) -> None:
    """A tall round tower: slender shaft, windows in a spiral, a crenellated top and a spire."""
    top = p.j(0.78, 0.04)
    p.rect("body", -0.1, 0.0, 0.1, top)
    p.rect("body", -0.13, top - 0.04, 0.13, top)
    for k in range(4):
        x = -0.12 + k * 0.08
        p.rect("body", x, top, x + 0.045, top + 0.035)
    p.poly("accent", [(-0.11, top + 0.035), (0.0, top + p.j(0.2)), (0.11, top + 0.035)])
    for k in range(5):
        y = 0.12 + k * (top - 0.2) / 5
        x = 0.05 * math.sin(k * 1.7)
        p.rect("light", x - 0.02, y, x + 0.02, y + 0.05, radius=0.02)
    p.rect("dark", -0.035, 0.0, 0.035, 0.09, radius=0.03)


# --- vehicles ------------------------------------------------------------------------------------


def car(p: Pen) -> None:
    """A car in profile: long body, cabin with windows, two wheels and headlights."""
    p.rect("body", -0.5, 0.08, 0.5, 0.28, radius=0.07)
    cab = p.j(0.46, 0.03)
    p.poly("body", [(-0.3, 0.27), (-0.18, cab), (0.14, cab), (0.3, 0.27)])
    p.poly("glass", [(-0.26, 0.28), (-0.16, cab - 0.03), (-0.03, cab - 0.03), (-0.03, 0.28)])
    p.poly("glass", [(0.0, 0.28), (0.0, cab - 0.03), (0.12, cab - 0.03), (0.25, 0.28)])
    for x in (-0.3, 0.3):
        p.ellipse("dark", x, 0.1, 0.11)
        p.ellipse("second", x, 0.1, 0.05)
    p.ellipse("light", 0.47, 0.2, 0.03, 0.025)
    p.rect("accent", -0.51, 0.17, -0.47, 0.22)
    p.line("second", [(-0.45, 0.2), (0.4, 0.2)], 0.008)


def ship(p: Pen) -> None:
    """A sailing ship: a curved hull, two masts with full sails and a pennant."""
    p.poly("second", [(-0.5, 0.16), (0.56, 0.18), (0.42, 0.0), (-0.4, 0.0)])
    p.rect("accent", -0.46, 0.12, 0.52, 0.15)
    for x, h in ((-0.15, p.j(0.85)), (0.2, p.j(0.72))):
        p.line("dark", [(x, 0.16), (x, h)], 0.018)
        for k, y in enumerate((0.24, 0.24 + (h - 0.24) * 0.45)):
            width = 0.2 - 0.05 * k
            y1 = y + (h - 0.24) * 0.38
            p.poly(
                "body",
                [(x - width, y), (x - width * 0.9, y1), (x + width * 0.9, y1), (x + width, y), (x, y - 0.03)],
            )
        p.poly("accent", [(x, h), (x + 0.12, h - 0.03), (x, h - 0.06)])
    p.poly("body", [(0.22, 0.2), (0.52, 0.2), (0.22, 0.6)])


def rocket(p: Pen) -> None:
    """A rocket standing on its flame: a long fuselage, red nose and fins, a porthole, exhaust."""
    half = p.j(0.1, 0.01)
    p.rect("body", -half, 0.18, half, 0.72)
    p.poly("body", [(-half, 0.72), (-half * 0.6, 0.86), (0.0, p.j(0.95)), (half * 0.6, 0.86), (half, 0.72)])
    p.poly("accent", [(-half * 0.72, 0.84), (0.0, 0.95), (half * 0.72, 0.84)])
    for side in (-1, 1):
        p.poly(
            "accent",
            [
                (side * half, 0.34),
                (side * (half + 0.12), 0.14),
                (side * (half + 0.12), 0.06),
                (side * half, 0.18),
            ],
        )
    p.ellipse("second", 0.0, 0.58, 0.055)
    p.ellipse("glass", 0.0, 0.58, 0.04)
    p.rect("second", -half, 0.3, half, 0.33)
    p.poly("light", [(-half * 0.8, 0.18), (0.0, 0.18 - p.j(0.22)), (half * 0.8, 0.18)])
    p.poly("accent", [(-half * 0.45, 0.18), (0.0, 0.06), (half * 0.45, 0.18)])


# --- nature --------------------------------------------------------------------------------------


def tree(p: Pen) -> None:
    """A broad tree: a trunk forking into branches under a crown of leafy clumps."""
    p.poly("second", [(-0.06, 0.0), (-0.04, 0.4), (0.04, 0.4), (0.07, 0.0)])
    for x, y in ((-0.25, 0.62), (0.22, 0.66), (0.02, 0.75)):
        p.tube("second", [(0.0, 0.3), (x * 0.6, y * 0.8), (x, y)], 0.035)
    for _ in range(14):
        angle = p.rng.uniform(0, 2 * math.pi)
        reach = p.rng.uniform(0.05, 0.3)
        x, y = math.cos(angle) * reach * 1.2, 0.66 + math.sin(angle) * reach * 0.7
        p.ellipse("body", x, y, p.rng.uniform(0.1, 0.17))
    for _ in range(6):
        p.ellipse("accent", p.rng.uniform(-0.3, 0.3), p.rng.uniform(0.5, 0.85), 0.02)


def flower(p: Pen) -> None:
    """One large flower head on a stem with two leaves."""
    cy = p.j(0.72, 0.03)
    p.tube("second", _curve((0.0, 0.0), (0.08, 0.35), (0.0, cy)), 0.03)
    for side in (-1, 1):
        p.poly(
            "second",
            [(0.02, 0.22 + 0.08 * side), (side * 0.22, 0.34 + 0.06 * side), (0.03, 0.3 + 0.08 * side)],
        )
    petals = 8
    for k in range(petals):
        a = k * 2 * math.pi / petals + p.j(0.0, 0.1)
        p.ellipse("body", math.cos(a) * 0.13, cy + math.sin(a) * 0.13, 0.085)
    p.ellipse("accent", 0.0, cy, 0.075)
    p.ellipse("dark", 0.0, cy, 0.03)


def planet(p: Pen) -> None:
    """A planet: a disc (banded by procedural) with an optional ring drawn by the ``ring`` modifier."""
    p.ellipse("body", 0.0, 0.5, 0.4)
    for k in range(4):
        y = 0.28 + k * 0.13
        half = math.sqrt(max(0.0, 0.4**2 - (y + 0.03 - 0.5) ** 2))
        p.rect("second", -half, y, half, y + 0.05)
    p.anchors["disc"] = (0.0, 0.5, 0.4)


# --- food ----------------------------------------------------------------------------------------


def bowl(p: Pen) -> None:
    """A bowl of noodle soup seen from the side: broth, noodles, egg, greens and chopsticks."""
    rim = 0.38
    p.ellipse("dark", 0.0, 0.0, 0.36, 0.04)
    p.poly("body", [(-0.46, rim), (-0.36, 0.14), (-0.16, 0.02), (0.16, 0.02), (0.36, 0.14), (0.46, rim)])
    p.rect("second", -0.15, 0.0, 0.15, 0.04)
    p.line("accent", [(-0.44, rim - 0.06), (0.44, rim - 0.06)], 0.02)
    p.ellipse("accent", 0.0, rim, 0.46, 0.08)
    for k in range(6):
        x = -0.34 + k * 0.12
        p.line("light", _curve((x, rim - 0.03), (x + 0.06, rim + 0.08), (x + 0.1, rim + p.j(0.02))), 0.014)
    p.ellipse("light", 0.16, rim + 0.03, 0.09, 0.05)
    p.ellipse("accent", 0.16, rim + 0.03, 0.04, 0.025)
    for x in (-0.22, -0.12, -0.28):
        p.ellipse("second", x, rim + 0.04, 0.025, 0.012)
    p.line("dark", [(0.05, rim + 0.02), (0.55, rim + p.j(0.4))], 0.022)
    p.line("dark", [(0.1, rim + 0.01), (0.6, rim + 0.34)], 0.022)
    p.anchors["steam"] = (0.0, rim + 0.1, 0.3)


def cup(p: Pen) -> None:
    """A cup of coffee on a saucer: tapered cup, ring handle, dark coffee."""
    p.ellipse("second", 0.0, 0.03, 0.42, 0.05)
    top = p.j(0.5, 0.02)
    p.poly("body", [(-0.27, top), (-0.22, 0.12), (-0.15, 0.06), (0.15, 0.06), (0.22, 0.12), (0.27, top)])
    p.ring("body", 0.29, 0.305, 0.11, 0.125, 0.045)
    p.ellipse("accent", 0.0, top, 0.27, 0.045)
    p.ellipse("dark", 0.0, top, 0.24, 0.035)
    p.line("accent", [(-0.25, top - 0.1), (0.25, top - 0.1)], 0.015)
    p.anchors["steam"] = (0.0, top + 0.05, 0.2)


def cake(p: Pen) -> None:
    """A layered cake on a plate: tiers, dripping icing, candles with flames and a cherry."""
    p.ellipse("second", 0.0, 0.03, 0.5, 0.05)
    y = 0.05
    for half, tier in ((0.4, 0.2), (0.28, 0.17)):
        p.rect("body", -half, y, half, y + tier)
        p.ellipse("body", 0.0, y + tier, half, 0.04)
        p.ellipse("accent", 0.0, y + tier, half, 0.04)
        for k in range(9):
            x = -half + (k + 0.5) * 2 * half / 9
            p.ellipse("accent", x, y + tier - 0.05, 0.03, 0.05)
        p.rect("accent", -half, y + tier - 0.05, half, y + tier)
        y += tier
    for x in (-0.12, 0.0, 0.12):
        p.rect("light", x - 0.013, y + 0.02, x + 0.013, y + 0.13)
        p.ellipse("accent", x, y + 0.17, 0.022, p.j(0.035, 0.01))
        p.ellipse("light", x, y + 0.165, 0.01, 0.018)
    p.ellipse("accent", 0.22, y + 0.03, 0.04)


# --- people and machines --------------------------------------------------------------------------


def portrait(p: Pen) -> None:
    """Head and shoulders facing the viewer: hair, eyes, brows, nose, mouth, neck and clothes."""
    hy, hw, hh = 0.64, p.j(0.15, 0.01), 0.2
    p.ellipse("second", 0.0, hy + 0.05, hw * 1.18, hh * 1.05)
    p.poly("accent", [(-0.42, 0.0), (-0.4, 0.2), (-0.12, 0.32), (0.12, 0.32), (0.4, 0.2), (0.42, 0.0)])
    p.rect("body", -0.07, 0.3, 0.07, hy - 0.1)
    p.poly("body", [(-0.1, 0.33), (0.0, 0.22), (0.1, 0.33)])
    p.ellipse("body", 0.0, hy, hw, hh)
    p.ellipse("second", 0.0, hy + hh * 0.72, hw * 1.02, hh * 0.4)
    for side in (-1, 1):
        ex = side * hw * 0.42
        p.ellipse("dark", ex, hy + 0.03, 0.034, 0.02)
        p.ellipse("light", ex - 0.01 * side, hy + 0.032, 0.008)
        p.line("second", [(ex - 0.04, hy + 0.075), (ex + 0.04, hy + 0.08 - 0.01 * side)], 0.016)
        p.ellipse("body", side * hw, hy + 0.01, 0.025, 0.045)
    p.line("dark", [(0.0, hy + 0.02), (0.02, hy - 0.06), (-0.01, hy - 0.07)], 0.012)
    p.ellipse("accent", 0.0, hy - 0.12, 0.05, 0.016)
    p.head(0.0, hy, hw)


def figure(p: Pen) -> None:
    """A standing person, full length: head, torso, arms, legs, a cloak."""
    hy = 0.88
    p.poly("second", [(-0.1, 0.78), (-0.26, 0.04), (0.22, 0.04), (0.1, 0.78)])
    p.tube("body", [(-0.05, 0.46), (-0.07, 0.02)], 0.07)
    p.tube("body", [(0.05, 0.46), (0.08, 0.02)], 0.07)
    p.rect("accent", -0.11, 0.42, 0.11, 0.78, radius=0.04)
    p.tube("body", [(-0.11, 0.74), (-0.17, 0.56), (-0.15, p.j(0.42))], 0.055)
    p.tube("body", [(0.11, 0.74), (0.2, 0.6), (p.j(0.26), 0.48)], 0.055)
    p.ellipse("body", 0.0, hy, 0.075, 0.09)
    p.rect("dark", -0.11, 0.5, 0.11, 0.54)
    p.head(0.0, hy, 0.075)


def astronaut(p: Pen) -> None:
    """An astronaut in a suit: round helmet with a dark visor, backpack, bulky arms and boots."""
    p.rect("second", -0.2, 0.35, 0.2, 0.68, radius=0.04)
    p.rect("body", -0.16, 0.3, 0.16, 0.7, radius=0.07)
    p.tube("body", [(-0.08, 0.34), (-0.1, 0.06)], 0.11)
    p.tube("body", [(0.08, 0.34), (0.11, 0.06)], 0.11)
    p.tube("body", [(-0.15, 0.64), (-0.25, 0.48), (-0.22, p.j(0.36))], 0.09)
    p.tube("body", [(0.15, 0.64), (0.27, 0.56), (p.j(0.32), 0.66)], 0.09)
    p.rect("second", -0.15, 0.0, -0.04, 0.06, radius=0.02)
    p.rect("second", 0.05, 0.0, 0.17, 0.06, radius=0.02)
    p.rect("accent", -0.07, 0.5, 0.07, 0.6, radius=0.01)
    p.ellipse("accent", -0.035, 0.55, 0.012)
    p.head(0.0, 0.82, 0.12)


def robot(p: Pen) -> None:
    """A boxy robot: square head with antenna and round glowing eyes, a chest panel, jointed limbs."""
    head_w = p.j(0.15, 0.02)
    hy = 0.78
    p.rect("body", -head_w, hy - 0.1, head_w, hy + 0.1, radius=0.03)
    p.line("second", [(0.0, hy + 0.1), (0.0, hy + 0.2)], 0.015)
    p.ellipse("accent", 0.0, hy + 0.21, 0.025)
    p.rect("second", -0.04, hy - 0.16, 0.04, hy - 0.1)
    p.rect("body", -0.22, 0.3, 0.22, hy - 0.16, radius=0.04)
    p.rect("second", -0.12, 0.38, 0.12, 0.52, radius=0.02)
    for k in range(3):
        p.ellipse("accent", -0.06 + k * 0.06, 0.45, 0.018)
    for side in (-1, 1):
        p.ellipse("light", side * head_w * 0.45, hy + 0.01, 0.035)
        p.tube("second", [(side * 0.24, hy - 0.2), (side * 0.32, 0.46), (side * 0.3, 0.3)], 0.06)
        p.rect("second", side * 0.1 - 0.05, 0.0, side * 0.1 + 0.05, 0.3)
        p.rect("body", side * 0.1 - 0.08, 0.0, side * 0.1 + 0.08, 0.05, radius=0.02)
    p.rect("dark", -head_w * 0.6, hy - 0.07, head_w * 0.6, hy - 0.05)
    p.anchors["eyes"] = (head_w * 0.45, hy + 0.01, 0.035)
    p.head(0.0, hy, head_w)


# --- modifiers -----------------------------------------------------------------------------------


def modify(p: Pen, modifiers: frozenset[str]) -> None:
    """Add what the prompt asks for to a drawn figure: a helmet, crown, hat, wings, horn, antlers, beard."""
    x, y, r = p.anchors.get("head", (0.0, 0.0, 0.0))
    if not r:
        return
    if "wings" in modifiers:
        for side in (-0.3, -0.1):
            p.poly(
                "light",
                [
                    (side, y - r * 2),
                    (side - 0.35, y + r * 1.5),
                    (side - 0.2, y - r),
                    (side - 0.4, y),
                    (side - 0.1, y - r * 3),
                ],
            )
    if "helmet" in modifiers:
        p.ellipse("glass", x, y, r * 1.55, r * 1.5)
        p.ellipse("second", x, y - r * 1.5, r * 1.2, r * 0.3)
    if "crown" in modifiers and "helmet" not in modifiers:
        top = y + r * 0.9
        p.poly(
            "accent",
            [
                (x - r * 0.7, top),
                (x - r * 0.75, top + r * 0.7),
                (x - r * 0.35, top + r * 0.35),
                (x, top + r * 0.8),
                (x + r * 0.35, top + r * 0.35),
                (x + r * 0.75, top + r * 0.7),
                (x + r * 0.7, top),
            ],
        )
    elif "hat" in modifiers and "helmet" not in modifiers:
        top = y + r * 0.75
        p.ellipse("dark", x, top, r * 1.5, r * 0.25)
        p.poly("dark", [(x - r * 0.8, top), (x + r * 0.15, top + r * 2.2), (x + r * 0.8, top)])
    elif "cap" in modifiers and "helmet" not in modifiers:
        top = y + r * 0.8
        p.ellipse("dark", x, top, r * 1.35, r * 0.22)
        p.rect("dark", x - r * 0.95, top, x + r * 0.95, top + r * 0.55, radius=r * 0.1)
        p.rect("light", x - r * 0.95, top + r * 0.1, x + r * 0.95, top + r * 0.22)
    if "horn" in modifiers:
        p.poly("light", [(x + r * 0.1, y + r * 0.6), (x + r * 0.7, y + r * 2.4), (x + r * 0.5, y + r * 0.5)])
    if "antlers" in modifiers:
        for dx in (-0.3, 0.2):
            base = (x + r * dx, y + r * 0.7)
            p.line("second", [base, (base[0] - r * 0.6, base[1] + r * 1.6)], r * 0.2)
            p.line(
                "second",
                [(base[0] - r * 0.3, base[1] + r * 0.8), (base[0] + r * 0.3, base[1] + r * 1.4)],
                r * 0.15,
            )
    if "beard" in modifiers and p.anchors.get("head") and "helmet" not in modifiers:
        p.poly(
            "second",
            [
                (x - r * 0.9, y - r * 0.2),
                (x, y - r * 1.7),
                (x + r * 0.9, y - r * 0.2),
                (x + r * 0.4, y - r * 0.55),
                (x - r * 0.4, y - r * 0.55),
            ],
        )


Draw = Callable[[Pen], None]
FAMILIES: dict[str, Draw] = {
    "fox": fox,
    "cat": cat,
    "dog": dog,
    "bird": bird,
    "owl": owl,
    "horse": horse,
    "fish": fish,
    "whale": whale,
    "dragon": dragon,
    "rabbit": rabbit,
    "bear": bear,
    "butterfly": butterfly,
    "lighthouse": lighthouse,
    "castle": castle,
    "house": house,
    "tower": tower,
    "car": car,
    "ship": ship,
    "rocket": rocket,
    "tree": tree,
    "flower": flower,
    "planet": planet,
    "bowl": bowl,
    "cup": cup,
    "cake": cake,
    "portrait": portrait,
    "figure": figure,
    "astronaut": astronaut,
    "robot": robot,
}
# Each family's colours (body, second, accent) in 0..255, and how it stands in a scene:
# "ground" stands on the ground, "float" hangs in the frame, "table" sits on a surface.
COLOURS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]] = {
    "fox": ((215, 105, 35), (245, 238, 225), (40, 30, 30)),
    "cat": ((120, 112, 105), (200, 195, 185), (150, 200, 80)),
    "dog": ((150, 100, 55), (95, 60, 35), (200, 40, 45)),
    "bird": ((55, 110, 200), (35, 70, 140), (245, 170, 40)),
    "owl": ((140, 105, 70), (95, 70, 45), (245, 190, 50)),
    "horse": ((130, 80, 45), (45, 30, 25), (30, 30, 30)),
    "fish": ((245, 130, 40), (250, 245, 240), (250, 200, 60)),
    "whale": ((70, 90, 120), (215, 220, 225), (40, 40, 40)),
    "dragon": ((50, 130, 80), (150, 50, 45), (235, 200, 80)),
    "rabbit": ((205, 200, 195), (170, 160, 150), (240, 160, 170)),
    "bear": ((110, 72, 42), (160, 120, 90), (40, 30, 30)),
    "butterfly": ((60, 120, 230), (250, 220, 80), (250, 140, 40)),
    "lighthouse": ((242, 240, 235), (80, 75, 70), (200, 35, 40)),
    "castle": ((160, 155, 150), (110, 105, 100), (70, 80, 160)),
    "house": ((230, 215, 185), (120, 75, 45), (175, 55, 45)),
    "tower": ((175, 165, 150), (110, 100, 90), (80, 60, 120)),
    "car": ((205, 35, 40), (200, 200, 205), (245, 180, 40)),
    "ship": ((245, 240, 225), (95, 60, 35), (190, 40, 40)),
    "rocket": ((235, 235, 240), (150, 155, 165), (215, 45, 40)),
    "tree": ((60, 140, 60), (100, 70, 45), (240, 120, 150)),
    "flower": ((235, 70, 110), (60, 130, 60), (250, 205, 60)),
    "planet": ((210, 130, 70), (170, 95, 60), (235, 205, 150)),
    "bowl": ((240, 238, 232), (185, 60, 50), (225, 150, 70)),
    "cup": ((245, 243, 238), (220, 215, 205), (60, 120, 170)),
    "cake": ((250, 235, 215), (240, 240, 245), (235, 100, 140)),
    "portrait": ((225, 180, 150), (70, 50, 40), (60, 80, 120)),
    "figure": ((70, 60, 60), (50, 40, 70), (120, 40, 50)),
    "astronaut": ((240, 240, 245), (190, 190, 200), (210, 60, 50)),
    "robot": ((175, 185, 195), (95, 105, 120), (60, 210, 240)),
}
STANCE = {
    "fish": "float",
    "whale": "float",
    "planet": "float",
    "butterfly": "float",
    "bowl": "table",
    "cup": "table",
    "cake": "table",
    "portrait": "bust",
    "lighthouse": "tall",
    "castle": "tall",
    "tower": "tall",
    "house": "tall",
    "tree": "tall",
    "rocket": "tall",
}
