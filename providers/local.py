"""The offline provider: procedural art, real resampling, blending and image analysis on the CPU."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable

from providers import (
    BlendRequest,
    DescribeRequest,
    FaceSwapRequest,
    ImagineRequest,
    JobContext,
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
)
from providers.shorten import shorten as shorten_prompt

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

    name = "local"
    operations = frozenset({"imagine", "variation", "upscale", "blend", "describe", "shorten", "faceswap"})

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
        seed = request.seed if request.seed is not None else secrets.randbits(32)
        tiles = procedural.vary(
            request.image, seed=seed, strength=request.strength, on_tile=self._pacer(ctx).on_tile()
        )
        return Result(tiles=tiles, seed=seed)

    def blend(self, request: BlendRequest, ctx: JobContext) -> Result:
        seed = request.seed if request.seed is not None else secrets.randbits(32)
        tiles = procedural.mix(
            request.images, request.width, request.height, seed=seed, on_tile=self._pacer(ctx).on_tile()
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
