"""The offline provider: procedural art, real resampling, blending and image analysis on the CPU."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from PIL import Image

import imagemeta
from providers import (
    DEFAULT_VARIATION_STRENGTH,
    OPERATIONS,
    BlendRequest,
    DescribeRequest,
    FaceSwapRequest,
    ImagineRequest,
    InpaintRequest,
    JobContext,
    OutpaintRequest,
    Provider,
    Result,
    ShortenRequest,
    UpscaleRequest,
    VariationRequest,
    analysis,
    faces,
    procedural,
    register,
    resample,
    seed_or_random,
)
from providers.shorten import shorten as shorten_prompt

NAME = "local"
PROGRESS_BEFORE_SAVING = 95  # the gateway takes the rest to store the images


def imagine_seed(request: ImagineRequest) -> int:
    """The seed for an imagine: the same prompt and parameters always give the same images."""
    key = "|".join(
        str(part)
        for part in (
            " ".join(request.prompt.lower().split()),
            request.aspect_ratio,
            request.version,
            request.quality,
            request.style,
            request.chaos,
            request.stylize,
        )
    )
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")


_REPAINTABLE = {"imagine", "reroll"}  # operations whose tiles the prompt and settings paint again exactly


def painted_with(image: Image.Image) -> procedural.Settings | None:
    """How the local provider painted ``image``, from its ``parameters``; None if it is not such a tile."""
    fields = imagemeta.read(image)
    made_by = fields.get("Source") or fields.get("Operation") if fields else None  # an upscale: its grid's
    if not fields or fields.get("Model") != imagemeta.model(NAME) or made_by not in _REPAINTABLE:
        return None
    if fields.get("Size") != f"{image.width}x{image.height}":
        return None
    try:
        seed, tile = int(fields["Seed"]), int(fields["Tile"])
    except (KeyError, ValueError):
        return None
    if not 1 <= tile <= procedural.TILE_COUNT:
        return None
    style = fields.get("Style")
    return procedural.Settings(
        prompt=fields["prompt"],
        seed=seed,
        index=tile - 1,
        style=style if style in procedural.STYLES else None,
        chaos=imagemeta.number(fields, "Chaos", 0),
        stylize=imagemeta.number(fields, "Stylize", 100),
        version=fields.get("Version", "6.1"),
    )


class Pacer:
    """Spreads a job over APIFRAME_LOCAL_LATENCY seconds, reporting progress as it goes."""

    def __init__(self, ctx: JobContext, latency: float, steps: int) -> None:
        self.ctx = ctx
        self.latency = latency
        self.steps = steps
        self.started = time.monotonic()

    def step(self, done: int) -> None:
        """Mark ``done`` of ``steps`` finished: wait until their share of the latency is up."""
        fraction = done / self.steps
        target = self.started + self.latency * fraction
        while (left := target - time.monotonic()) > 0:
            self.ctx.sleep(min(0.25, left))
            elapsed = (time.monotonic() - self.started) / self.latency
            self.ctx.progress(int(PROGRESS_BEFORE_SAVING * min(elapsed, fraction)))
        self.ctx.progress(int(PROGRESS_BEFORE_SAVING * fraction))

    def on_tile(self) -> Callable[[int], None]:
        """A callback for the art functions: tile i of four is done."""
        return lambda index: self.step(index + 1)


@register
class LocalProvider(Provider):
    """Makes real images offline, so the whole product works on a fresh machine."""

    name = NAME
    operations = frozenset(OPERATIONS)  # every operation a provider can implement

    def check(self) -> str:
        """Nothing to reach: the local provider runs in this process."""
        return "runs in this process; nothing to reach"

    def _pacer(self, ctx: JobContext, steps: int = 4) -> Pacer:
        return Pacer(ctx, float(self.config.get("LOCAL_LATENCY", 0)), steps)

    def imagine(self, request: ImagineRequest, ctx: JobContext) -> Result:
        seed = request.seed if request.seed is not None else imagine_seed(request)
        tiles = procedural.paint_tiles(
            request.prompt,
            request.width,
            request.height,
            seed=seed,
            style=request.style,
            chaos=request.chaos,
            stylize=request.stylize,
            version=request.version,
            on_tile=self._pacer(ctx).on_tile(),
        )
        return Result(tiles=tiles, seed=seed)

    def variation(self, request: VariationRequest, ctx: JobContext) -> Result:
        seed = seed_or_random(request.seed)
        strength = request.strength_or(DEFAULT_VARIATION_STRENGTH)
        settings = painted_with(request.image)
        if settings is not None:  # one of ours: paint its scene again, with its details drawn anew
            tiles = procedural.redraw(settings, *request.image.size, seed=seed, strength=strength,
                                      on_tile=self._pacer(ctx).on_tile())
        else:
            tiles = procedural.vary(
                request.image, seed=seed, strength=strength, on_tile=self._pacer(ctx).on_tile()
            )
        return Result(tiles=tiles, seed=seed)

    def outpaint(self, request: OutpaintRequest, ctx: JobContext) -> Result:
        seed = seed_or_random(request.seed)
        pacer = self._pacer(ctx, steps=2)
        pacer.step(1)
        canvases = procedural.extend(request.image, request.pad, painted_with(request.image), seed=seed,
                                     prompt=request.prompt)
        tiles = [canvas if canvas.size == (request.width, request.height)
                 else canvas.resize((request.width, request.height), Image.Resampling.LANCZOS)
                 for canvas in canvases]
        pacer.step(2)
        return Result(tiles=tiles, seed=seed)

    def inpaint(self, request: InpaintRequest, ctx: JobContext) -> Result:
        seed = seed_or_random(request.seed)
        pacer = self._pacer(ctx, steps=2)
        pacer.step(1)
        tiles = procedural.repaint(request.image, request.mask, painted_with(request.image), seed=seed,
                                   prompt=request.prompt)
        pacer.step(2)
        return Result(tiles=tiles, seed=seed)

    def blend(self, request: BlendRequest, ctx: JobContext) -> Result:
        seed = seed_or_random(request.seed)
        masks = [procedural.subject_mask(settings, *image.size) if (settings := painted_with(image)) else None
                 for image in request.images]  # our own tiles: where their subject stands is known exactly
        tiles = procedural.mix(
            request.images, request.width, request.height, seed=seed, on_tile=self._pacer(ctx).on_tile(),
            masks=masks,
        )
        return Result(tiles=tiles, seed=seed)

    def upscale(self, request: UpscaleRequest, ctx: JobContext) -> Result:
        pacer = self._pacer(ctx, steps=2)
        pacer.step(1)
        image = resample(request)
        pacer.step(2)
        return Result(image=image)

    def describe(self, request: DescribeRequest, ctx: JobContext) -> Result:
        pacer = self._pacer(ctx, steps=2)
        pacer.step(1)
        descriptions = analysis.describe(request.image)
        pacer.step(2)
        return Result(descriptions=descriptions)

    def shorten(self, request: ShortenRequest, ctx: JobContext) -> Result:
        pacer = self._pacer(ctx, steps=2)
        pacer.step(1)
        shortened = shorten_prompt(request.prompt)
        pacer.step(2)
        return Result(descriptions=shortened.prompts, tokens=shortened.tokens)

    def faceswap(self, request: FaceSwapRequest, ctx: JobContext) -> Result:
        pacer = self._pacer(ctx, steps=2)
        pacer.step(1)
        image = faces.swap(request.target, request.swap)
        pacer.step(2)
        return Result(image=image)
