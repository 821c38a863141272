"""The OpenAI Images API (and servers compatible with it), registered as ``openai``.

imagine -> /images/generations (n=4, or four calls for models that make one image per call);
variation and blend -> /images/edits, or /images/variations for dall-e-2; pan, zoom out and vary
region -> /images/edits with a mask (transparent where to paint: the padded canvas's new area, or the
user's region), the parent's pixels put back unchanged afterwards; describe -> a chat
completion with the image as an ``image_url`` part; upscale -> done here with real resampling,
since the API has no upscale endpoint. Both ``b64_json`` and ``url`` answers are handled.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import date
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

import imaging
from config import DEFAULTS
from imaging import png_bytes
from providers import (
    DEFAULT_VARIATION_STRENGTH,
    BlendRequest,
    DescribeRequest,
    ImagineRequest,
    InpaintRequest,
    JobContext,
    OutpaintRequest,
    Provider,
    ProviderError,
    Result,
    UpscaleRequest,
    VariationRequest,
    register,
    resample,
)
from providers.analysis import aspect_ratio
from providers.canvas import keep_original, padded
from providers.http import Backend, HttpSettings, HttpStatusError, data_url
from providers.prompts import split_prompts

log = logging.getLogger(__name__)

TILES = 4
OPENAI_HOST = "api.openai.com"
# Image models OpenAI has taken, or will take, out of its API (its deprecations page), and when.
RETIREMENTS = {
    "dall-e-2": date(2026, 5, 12),
    "dall-e-3": date(2026, 5, 12),
    "gpt-image-1": date(2026, 10, 23),
    "gpt-image-1-mini": date(2026, 12, 1),
    "gpt-image-1.5": date(2026, 12, 1),
    "chatgpt-image-latest": date(2026, 12, 1),
}
MODERATION_CODES = ("content_policy_violation", "moderation_blocked")
# Sizes each model accepts, by the shape of the tile asked for.
SIZES = {
    "gpt-image": {"square": "1024x1024", "landscape": "1536x1024", "portrait": "1024x1536"},
    "dall-e-3": {"square": "1024x1024", "landscape": "1792x1024", "portrait": "1024x1792"},
}
DALL_E_2_SIZES = {1: "1024x1024", 0.5: "512x512", 0.25: "256x256"}
# The qualities each model takes; a compatible server's model takes its own, unchecked.
QUALITIES = {
    "gpt-image": ("low", "medium", "high", "auto"),
    "dall-e-3": ("standard", "hd"),
    "dall-e-2": ("standard",),
}
# The edits route has no strength: a variation's is said in words (subtle 0.25, strong 0.75, a tile's 0.5).
VARIATION_PROMPT = "A close variation of this image: the same subject, composition, palette and style."
SUBTLE_VARIATION_PROMPT = (
    "A very close variation of this image: the same subject, composition, palette and style, with only "
    "small details changed."
)
STRONG_VARIATION_PROMPT = (
    "A free variation of this image: the same subject and style, with a new composition, pose and details."
)
BLEND_PROMPT = (
    "Blend these images into one new, coherent image that combines their subjects, shapes, colours "
    "and styles."
)
OUTPAINT_PROMPT = "Continue the scene beyond the frame, matching its subject, light, palette and style."
INPAINT_PROMPT = "Redraw this region so it fits the rest of the image."
DESCRIBE_PROMPT = (
    "Write four different text-to-image prompts that could have produced this image. Each is one line "
    "of comma-separated phrases: subject, setting, medium, style, lighting, colours and composition. "
    'Answer with only a JSON array of the four strings, like ["...", "...", "...", "..."].'
)


def _family(model: str) -> str:
    """The model's family: ``gpt-image`` for OpenAI's GPT image models (gpt-image-1, gpt-image-1.5,
    chatgpt-image-latest ...), else its own name (dall-e-2, dall-e-3, or a compatible server's model,
    which is sent the exact size and asked for base64 as DALL-E is)."""
    return "gpt-image" if model.startswith(("gpt-image-", "chatgpt-image-")) else model


def _shape(width: int, height: int) -> str:
    if width > height * 1.1:
        return "landscape"
    if height > width * 1.1:
        return "portrait"
    return "square"


@register
class OpenAIImagesProvider(Provider):
    """Images from the OpenAI Images API or a compatible server."""

    name = "openai"
    operations = frozenset({"imagine", "variation", "upscale", "blend", "describe", "outpaint", "inpaint"})
    required_settings = ("OPENAI_BASE_URL", "OPENAI_API_KEY")

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        key = config["OPENAI_API_KEY"]
        self.http = Backend(
            self.name,
            config["OPENAI_BASE_URL"],
            HttpSettings.from_config(config, "OPENAI_TIMEOUT"),
            headers={"Authorization": f"Bearer {key}"},
            secrets=[key],
        )
        self.model = config["OPENAI_IMAGE_MODEL"]
        self.quality = config.get("OPENAI_IMAGE_QUALITY")
        allowed = QUALITIES.get(_family(self.model))
        if self.quality and allowed and self.quality not in allowed:
            raise ValueError(
                f"APIFRAME_OPENAI_IMAGE_QUALITY must be one of {', '.join(allowed)} for {self.model}, "
                f"got {self.quality!r}"
            )
        self.per_call = int(
            config.get("OPENAI_IMAGES_PER_CALL") or (1 if self.model == "dall-e-3" else TILES)
        )
        retired = RETIREMENTS.get(self.model)
        if retired and urlsplit(config["OPENAI_BASE_URL"]).hostname == OPENAI_HOST:
            log.warning(
                "APIFRAME_OPENAI_IMAGE_MODEL is %s, which OpenAI %s from its API on %s: its jobs fail from "
                "then on; choose %s",
                self.model,
                "removed" if retired <= date.today() else "removes",
                retired.isoformat(),
                DEFAULTS["OPENAI_IMAGE_MODEL"],
            )

    def supports(self, operation: str) -> bool:
        """dall-e-3 has neither edits nor variations, so it cannot vary, blend, pan, zoom or inpaint."""
        if operation in ("variation", "blend", "outpaint", "inpaint") and self.model == "dall-e-3":
            return False
        return super().supports(operation)

    # ---- operations --------------------------------------------------------------------------

    def imagine(self, request: ImagineRequest, ctx: JobContext) -> Result:
        """Four generations, fitted to the tile size."""
        prompt = request.prompt if not request.style else f"{request.prompt}, {request.style} style"
        fields: dict[str, Any] = {"model": self.model, "prompt": prompt, "size": self._size(request)}
        if self.quality:
            fields["quality"] = self.quality
        fields.update(self._format())
        images = self._in_batches(
            ctx, lambda n: self._post("/images/generations", ctx, json={**fields, "n": n})
        )
        return Result(tiles=[imaging.fit(image, request.width, request.height) for image in images])

    def variation(self, request: VariationRequest, ctx: JobContext) -> Result:
        """Four edits (or dall-e-2 variations) of the chosen tile."""
        width, height = request.image.size
        if self.model == "dall-e-2":
            images = self._variations(request.image, ctx)
        else:
            prompt = _variation_prompt(request.strength) + (f" {request.prompt}" if request.prompt else "")
            images = self._edits([request.image], prompt, self._shape_size(width, height), ctx)
        return Result(tiles=[imaging.fit(image, width, height) for image in images])

    def blend(self, request: BlendRequest, ctx: JobContext) -> Result:
        """Four edits of all the inputs together (dall-e-2: variations of their mix)."""
        width, height = request.width, request.height
        if self.model == "dall-e-2":
            images = self._variations(imaging.average(request.images, 1024, 1024), ctx)
        else:
            images = self._edits(request.images, BLEND_PROMPT, self._shape_size(width, height), ctx)
        return Result(tiles=[imaging.fit(image, width, height) for image in images])

    def outpaint(self, request: OutpaintRequest, ctx: JobContext) -> Result:
        """Masked edits of the padded canvas; the parent's pixels are put back in place."""
        canvas, mask = padded(request.image, request.pad)
        images = self._masked_edits(canvas, mask, request.prompt or OUTPAINT_PROMPT, ctx)
        size = (request.width, request.height)
        tiles = [keep_original(image, request.image, request.pad) for image in images]
        return Result(
            tiles=[
                tile if tile.size == size else tile.resize(size, Image.Resampling.LANCZOS) for tile in tiles
            ]
        )

    def inpaint(self, request: InpaintRequest, ctx: JobContext) -> Result:
        """Masked edits of the image; outside the mask the pixels stay as they were."""
        image, mask = request.image.convert("RGB"), request.mask.convert("L")
        images = self._masked_edits(image, mask, request.prompt or INPAINT_PROMPT, ctx)
        return Result(tiles=[Image.composite(edit.resize(image.size), image, mask) for edit in images])

    def upscale(self, request: UpscaleRequest, ctx: JobContext) -> Result:
        """Real resampling here: the Images API has no upscale."""
        ctx.progress(10)
        return Result(image=resample(request))

    def describe(self, request: DescribeRequest, ctx: JobContext) -> Result:
        """Four prompts from the vision model."""
        content = [
            {"type": "text", "text": DESCRIBE_PROMPT},
            {"type": "image_url", "image_url": {"url": data_url(request.image)}},
        ]
        body = self._post(
            "/chat/completions",
            ctx,
            json={
                "model": self.config["OPENAI_VISION_MODEL"],
                "messages": [{"role": "user", "content": content}],
            },
        )
        answer = self.http.field(body, "choices", 0, "message", "content")
        prompts = split_prompts(answer) if isinstance(answer, str) else []
        if len(prompts) < TILES:
            raise ProviderError(
                f"The openai provider described the image with {len(prompts)} prompt(s), not four."
            )
        ratio = f"--ar {aspect_ratio(*request.image.size)}"
        return Result(descriptions=[p if "--ar" in p else f"{p} {ratio}" for p in prompts[:TILES]])

    def check(self) -> str:
        """List the models the key can use."""
        body = self.http.json("GET", "/models", self.http.check_context(), retries=0)
        models = body.get("data") if isinstance(body, dict) else None
        if not isinstance(models, list):
            raise ProviderError("The openai provider sent an unexpected answer to /models.")
        return f"{len(models)} model(s) available; images with {self.model}"

    # ---- helpers -----------------------------------------------------------------------------

    def _post(self, path: str, ctx: JobContext, **kwargs: Any) -> Any:
        """POST, turning a moderation refusal into a clear error."""
        try:
            return self.http.json("POST", path, ctx, **kwargs)
        except HttpStatusError as exc:
            error = exc.body.get("error") if isinstance(exc.body, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            if exc.status == 400 and code in MODERATION_CODES:
                raise ProviderError(
                    "The openai provider refused the request under its content policy; "
                    "change the prompt or the image."
                ) from None
            raise

    def _format(self) -> dict[str, str]:
        """Ask for base64 where the model lets us choose (gpt-image models always answer base64)."""
        return {} if _family(self.model) == "gpt-image" else {"response_format": "b64_json"}

    def _edit_fields(self, prompt: str, size: str) -> dict[str, str]:
        """An edit's form fields, with the quality for GPT image models (dall-e-2 has one, its default)."""
        fields = {"model": self.model, "prompt": prompt, "size": size, **self._format()}
        if self.quality and _family(self.model) == "gpt-image":
            fields["quality"] = self.quality
        return fields

    def _size(self, request: ImagineRequest) -> str:
        if self.model == "dall-e-2":
            return DALL_E_2_SIZES.get(request.quality, "1024x1024")
        return self._shape_size(request.width, request.height)

    def _shape_size(self, width: int, height: int) -> str:
        sizes = SIZES.get(_family(self.model))
        if self.model == "dall-e-2":
            return "1024x1024"
        return sizes[_shape(width, height)] if sizes else f"{width}x{height}"

    def _in_batches(self, ctx: JobContext, call: Any) -> list[Image.Image]:
        """Four images, in as many calls as the model needs; progress after each."""
        images: list[Image.Image] = []
        calls = math.ceil(TILES / self.per_call)
        for number in range(calls):
            wanted = min(self.per_call, TILES - len(images))
            images.extend(self._images(call(wanted), ctx)[:wanted])
            ctx.progress(85 * (number + 1) // calls)
        if len(images) < TILES:
            raise ProviderError(f"The openai provider returned {len(images)} image(s) instead of four.")
        return images

    def _images(self, body: Any, ctx: JobContext) -> list[Image.Image]:
        """The images in an Images API answer, from ``b64_json`` or ``url``."""
        data = self.http.field(body, "data")
        if not isinstance(data, list):
            raise ProviderError("The openai provider sent an answer whose 'data' is not a list.")
        images = []
        for item in data:
            if isinstance(item, dict) and item.get("b64_json"):
                images.append(self.http.image_from_base64(item["b64_json"]))
            elif isinstance(item, dict) and item.get("url"):
                images.append(self.http.download_image(item["url"], ctx))
            else:
                raise ProviderError("The openai provider sent an image with neither 'b64_json' nor 'url'.")
        return images

    def _edits(
        self, sources: list[Image.Image], prompt: str, size: str, ctx: JobContext
    ) -> list[Image.Image]:
        field = "image" if len(sources) == 1 else "image[]"
        files = [
            (field, (f"image{i + 1}.png", png_bytes(image), "image/png")) for i, image in enumerate(sources)
        ]
        fields = self._edit_fields(prompt, size)
        return self._in_batches(
            ctx, lambda n: self._post("/images/edits", ctx, data={**fields, "n": str(n)}, files=files)
        )

    def _masked_edits(
        self, image: Image.Image, mask: Image.Image, prompt: str, ctx: JobContext
    ) -> list[Image.Image]:
        """Four edits of ``image`` where ``mask`` is white, at the model's size, back at the image's size."""
        width, height = (int(side) for side in self._shape_size(*image.size).split("x"))
        alpha = Image.eval(
            mask.convert("L").resize((width, height), Image.Resampling.NEAREST), lambda v: 255 - v
        )
        stencil = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS).convert("RGBA")
        stencil.putalpha(alpha)  # the API paints where the mask is transparent
        files = [
            ("image", ("image.png", png_bytes(image.convert("RGB").resize((width, height))), "image/png")),
            ("mask", ("mask.png", png_bytes(stencil), "image/png")),
        ]
        fields = self._edit_fields(prompt, f"{width}x{height}")
        images = self._in_batches(
            ctx, lambda n: self._post("/images/edits", ctx, data={**fields, "n": str(n)}, files=files)
        )
        return [edit.convert("RGB").resize(image.size, Image.Resampling.LANCZOS) for edit in images]

    def _variations(self, source: Image.Image, ctx: JobContext) -> list[Image.Image]:
        square = imaging.fit(source, 1024, 1024)
        files = [("image", ("image.png", png_bytes(square), "image/png"))]
        fields = {"model": self.model, "size": "1024x1024", "response_format": "b64_json"}
        return self._in_batches(
            ctx, lambda n: self._post("/images/variations", ctx, data={**fields, "n": str(n)}, files=files)
        )


def _variation_prompt(strength: float | None) -> str:
    """What an edit is asked for a variation of ``strength`` (None: a tile's ordinary variation)."""
    if strength is None or strength == DEFAULT_VARIATION_STRENGTH:
        return VARIATION_PROMPT
    return SUBTLE_VARIATION_PROMPT if strength < DEFAULT_VARIATION_STRENGTH else STRONG_VARIATION_PROMPT
