"""The operation registry: one declarative entry per operation (imagine, upscale, seed ...).

An entry says what an operation is: its cost, its request schema, the parents it takes, what it
stores from a validated request, the provider operation it runs as and how the worker builds that
provider's request, and its result. The API families' routes, the OpenAPI document, /docs, the
console's actions and the worker's dispatch all read this table; none of them names an operation.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import current_app
from marshmallow import Schema

import imaging
import jobs
import masks
import schemas
import storage
import uploads
from errors import validation_error
from inputs import InputError, fetch_image, made_by, parent_of, parent_tile
from models import Account, Job
from providers import (
    BlendRequest,
    DescribeRequest,
    FaceSwapRequest,
    ImagineRequest,
    InpaintRequest,
    JobContext,
    OutpaintRequest,
    ShortenRequest,
    UpscaleRequest,
    VariationRequest,
)
from providers.canvas import shape_of

# What an operation's job ends with: four tiles and their 2x2 grid, one image, text, or a value.
GRID, IMAGE, TEXT, VALUE = "grid", "image", "text", "value"

Stored = dict[str, Any]  # what a job stores from its request: prompt, params, parent, index


@dataclass(frozen=True)
class Parents:
    """The jobs an operation takes as its parent: by result kind, or by type."""

    kinds: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    images: bool = True  # the job reads the parent's images (not only its prompt and settings)

    def accepted(self) -> tuple[str, ...]:
        """The job types accepted, in registry order."""
        return self.types or tuple(op.name for op in REGISTRY.values() if op.result in self.kinds)

    def find(self, account: Account, job_id: uuid.UUID, label: str) -> Job:
        """The account's job ``job_id``, checked as a parent for ``label`` (400 or 404 if it is not one)."""
        return self.check(jobs.find(account, job_id), label)

    def check(self, parent: Job, label: str) -> Job:
        """``parent`` if it is a succeeded job of an accepted type with its images, else 400 (410 if the
        retention deleted the images it needs)."""
        accepted = self.accepted()
        if parent.type not in accepted:
            raise validation_error(
                f"Job {parent.id} is {_a(parent.type)} job; {label} needs {_a(_either(accepted))} job."
            )
        if parent.status != jobs.SUCCEEDED:
            raise validation_error(f"Job {parent.id} is {parent.status}; {label} needs a succeeded job.")
        if len(parent.tiles or ()) != (4 if result_of(parent.type) == GRID else 1):
            raise validation_error(f"Job {parent.id} has no images to {label}.")
        if self.images and parent.images_deleted_at is not None:
            raise storage.expired(parent.id)
        return parent


@dataclass(frozen=True)
class Route:
    """One more route of the original API for an operation, with a body and spellings of its own."""

    path: str
    body: type[Schema]
    spellings: Mapping[str, str]
    summary: str = ""

    @property
    def endpoint(self) -> str:
        """Its views' name suffix (``/midjourney/upscale`` -> ``midjourney_upscale``)."""
        return self.path.strip("/").replace("/", "_").replace("-", "_")


@dataclass(frozen=True)
class Original:
    """An operation in the original apiframe.ai API: its routes, body and field spellings."""

    body: type[Schema]
    spellings: Mapping[str, str]  # original (snake_case) field name -> the reference's
    summary: str = ""  # on its own routes, where the reference's summary does not fit
    paths: tuple[str, ...] = ()  # routes of the original API only
    shared: tuple[str, ...] = ()  # routes of both APIs: either spelling, answered in both shapes
    task_type: Callable[[Job], str] | None = None  # the task's name for a job, when not the operation's
    routes: tuple[Route, ...] = ()  # other routes (the official SDK's legacy ones), each with its own body


@dataclass(frozen=True)
class Button:
    """One button of an action on a single image: its text, its title and the request fields it sends."""

    text: str
    title: str
    fields: Mapping[str, Any]
    symbol: bool = False  # the text is a symbol alone (an arrow): screen readers say the title instead


@dataclass(frozen=True)
class OpenAIImages:
    """Where an operation answers in the OpenAI Images API (api/openai.py) and what it makes there."""

    endpoints: tuple[str, ...]  # "generations", "edits", "variations"
    mask: bool = False  # the edits that send a mask (else those without one)


@dataclass(frozen=True)
class ConsoleAction:
    """A row of console buttons: one per image under a grid (U1-U4), or its ``buttons`` under one image."""

    letter: str
    label: str
    hint: str  # what it makes
    tile_title: str = ""  # under a grid: a button's title, with {n} for the image's number
    on: str = GRID  # the result kind it works on
    buttons: tuple[Button, ...] = ()
    painted: bool = False  # the user paints a mask on the image first (sent as ``mask``)


@dataclass(frozen=True)
class Operation:
    """One operation: what it costs, takes, stores, runs as and makes."""

    name: str
    summary: str
    description: str
    cost: int
    request: type[Schema]
    stored: Callable[[Operation, Account, dict[str, Any]], Stored]
    result: str
    example: dict[str, Any]  # a request body, for the docs
    provider: str | None = None  # the provider operation it runs as; None: the gateway computes it
    build: Callable[[Job, JobContext], Any] | None = None  # the provider request, from the stored job
    compute: Callable[[Job], dict[str, Any]] | None = None  # without a provider: the job's fields
    parents: Parents | None = None
    aliases: tuple[str, ...] = ()  # the reference's compatibility aliases of /v1/<name>
    original: Original | None = None
    openai: OpenAIImages | None = None
    action: ConsoleAction | None = None
    title: str = ""  # how the console names a job without a prompt
    texts: int = 4  # TEXT results: how many texts the job ends with

    @property
    def endpoint(self) -> str:
        """The name of its views (``upscale_highres``)."""
        return self.name.replace("-", "_")

    @property
    def label(self) -> str:
        """How people call it: the title, or the capitalised name."""
        return self.title or self.name.capitalize()

    def accept(self, account: Account, data: dict[str, Any]) -> Stored:
        """What a job of this operation stores, from a validated request (400/404 on a bad parent)."""
        return self.stored(self, account, data)


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _either(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def new_seed(avoid: int | None = None) -> int:
    """A random 32-bit seed other than ``avoid``."""
    seed = secrets.randbits(32)
    return seed ^ 1 if seed == avoid else seed


def _with_process_mode(params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Record the original API's process_mode, when given (it cannot change the speed here)."""
    if data.get("process_mode"):
        params["process_mode"] = data["process_mode"]
    return params


# ---- imagine and reroll --------------------------------------------------------------------------

IMAGINE_SETTINGS = ("aspect_ratio", "version", "quality", "style", "chaos", "stylize")


def _imagine(op: Operation, account: Account, data: dict[str, Any]) -> Stored:
    params = {name: data[name] for name in IMAGINE_SETTINGS}
    if data.get("fresh_seed"):  # one of several jobs of one OpenAI request: images of its own
        params["seed"] = new_seed()
    return {"prompt": data["prompt"], "params": _with_process_mode(params, data)}


def _reroll(op: Operation, account: Account, data: dict[str, Any]) -> Stored:
    """The parent's prompt and settings (or the ones given) with a new seed, so the images differ."""
    parent = op.parents.find(account, data["job_id"], op.name)
    params = {**parent.params, "seed": new_seed(avoid=parent.seed)}
    if data.get("aspect_ratio"):
        params["aspect_ratio"] = data["aspect_ratio"]
    return {"prompt": data.get("prompt") or parent.prompt, "params": params, "parent": parent}


def _imagine_request(job: Job, ctx: JobContext) -> ImagineRequest:
    params = job.params
    width, height = imaging.dimensions(params["aspect_ratio"], params["quality"])
    return ImagineRequest(
        prompt=job.prompt,
        width=width,
        height=height,
        aspect_ratio=params["aspect_ratio"],
        version=params["version"],
        quality=params["quality"],
        style=params.get("style"),
        chaos=params["chaos"],
        stylize=params["stylize"],
        seed=params.get("seed"),
    )


# ---- describe and blend ----------------------------------------------------------------------------


def _describe(op: Operation, account: Account, data: dict[str, Any]) -> Stored:
    storage.refuse_expired(data["image_url"])
    return {"params": _with_process_mode({"image_url": data["image_url"]}, data)}


def _describe_request(job: Job, ctx: JobContext) -> DescribeRequest:
    url = job.params["image_url"]
    return DescribeRequest(image=fetch_image(url, "imageUrl", ctx), url=url)


def _blend(op: Operation, account: Account, data: dict[str, Any]) -> Stored:
    for url in data["image_urls"]:
        storage.refuse_expired(url)
    params = {"image_urls": data["image_urls"], "dimension": data["dimension"]}
    return {"params": _with_process_mode(params, data)}


def _blend_request(job: Job, ctx: JobContext) -> BlendRequest:
    urls = job.params["image_urls"]
    shape = schemas.BLEND_DIMENSIONS[job.params.get("dimension", "square")]
    width, height = imaging.dimensions(shape)
    # Up to five inputs are held at once, each only as large as a blend can use: the blend's long side on
    # both of its sides, since some backends take the inputs as they are, or mix them in a square (dall-e-2).
    side = max(width, height)
    fetched = (fetch_image(url, f"imageUrls[{n}]", ctx) for n, url in enumerate(urls, 1))
    images = [imaging.cover(image, side, side) for image in fetched]
    return BlendRequest(images=images, urls=list(urls), width=width, height=height)


# ---- upscales ---------------------------------------------------------------------------------------


def _upscale(op: Operation, account: Account, data: dict[str, Any]) -> Stored:
    return {"parent": op.parents.find(account, data["job_id"], op.name), "index": data["index"]}


def _upscale_request(job: Job, ctx: JobContext) -> UpscaleRequest:
    parent = parent_of(job)
    return UpscaleRequest(image=parent_tile(parent, job.index), index=job.index, **made_by(parent))


def _upscale_alt(op: Operation, account: Account, data: dict[str, Any]) -> Stored:
    return {"parent": op.parents.find(account, data["job_id"], op.name), "params": {"type": data["type"]}}


def _upscale_alt_request(job: Job, ctx: JobContext) -> UpscaleRequest:
    parent = parent_of(job)
    return UpscaleRequest(
        image=parent_tile(parent, 1), index=parent.index or 1, mode=job.params["type"], **made_by(parent)
    )


MAX_HIGHRES_SIDE = 2048  # upscale-highres refuses larger inputs, as the original API does


def _upscale_highres(op: Operation, account: Account, data: dict[str, Any]) -> Stored:
    """An image at a URL, an upscaled image, or one tile (``index``) of a grid, enlarged 2x or 4x."""
    params = {"type": data["type"]}
    if data.get("image_url"):
        storage.refuse_expired(data["image_url"])
        return {"params": {**params, "image_url": data["image_url"]}}
    parent, index = jobs.find(account, data["job_id"]), data.get("index")
    if result_of(parent.type) == GRID:
        Parents(kinds=(GRID,)).check(parent, op.name)
        if index is None:
            raise validation_error(
                f"The 'index' field is required: job {parent.id} has four images; say which one (1-4)."
            )
        return {"parent": parent, "index": index, "params": params}
    Parents(kinds=(IMAGE,)).check(parent, op.name)
    if index is not None:
        raise validation_error(
            f"The 'index' field is only for jobs with four images; job {parent.id} has one."
        )
    return {"parent": parent, "params": params}


def _upscale_highres_request(job: Job, ctx: JobContext) -> UpscaleRequest:
    """An image at a URL, or of the parent job (the tile ``index`` of a grid), of at most 2048x2048."""
    if job.params.get("image_url"):
        image, index, source = fetch_image(job.params["image_url"], "imageUrl", ctx), 1, {}
    else:
        parent = parent_of(job)
        image, index, source = parent_tile(parent, job.index or 1), job.index or 1, made_by(parent)
    if image.width > MAX_HIGHRES_SIDE or image.height > MAX_HIGHRES_SIDE:
        raise InputError(
            f"The image is {image.width}x{image.height}; upscale-highres takes images of at most "
            f"{MAX_HIGHRES_SIDE}x{MAX_HIGHRES_SIDE}."
        )
    factor = schemas.HIGHRES_FACTORS[job.params["type"]]
    return UpscaleRequest(image=image, index=index, factor=factor, mode="highres", **source)


# ---- variation --------------------------------------------------------------------------------------

VARY_STRENGTHS = dict(zip(schemas.VARY_STRENGTHS, (0.25, 0.75), strict=True))  # of an upscaled image


def _variation(op: Operation, account: Account, data: dict[str, Any]) -> Stored:
    """Four images like one tile of a grid (index 1-4), an upscaled image (strong or subtle), or an upload."""
    if data.get("upload"):  # an image the client uploaded (the OpenAI Images API), kept in storage
        params = {"upload": data["upload"], "strength": "strong", "aspect_ratio": data.get("aspect_ratio")}
        return {"params": {k: v for k, v in params.items() if v}, "prompt": data.get("prompt")}
    index, params = data["index"], {}
    if index in VARY_STRENGTHS:
        parent = Parents(kinds=(IMAGE,)).find(account, data["job_id"], f"a {index} {op.name}")
        index, params["strength"] = None, data["index"]
    else:
        parent = Parents(kinds=(GRID,)).find(account, data["job_id"], op.name)
    if data.get("aspect_ratio"):
        params["aspect_ratio"] = data["aspect_ratio"]
    if data.get("strength") is not None:  # the SDK's legacy route: 0-100
        params["amount"] = data["strength"]
    return {"parent": parent, "index": index, "params": params, "prompt": data.get("prompt")}


def _variation_request(job: Job, ctx: JobContext) -> VariationRequest:
    """A tile of a grid, an upscaled image (``strength`` strong or subtle) or an upload; reframed if asked."""
    params = job.params
    if params.get("upload"):
        image, index, prompt, source = uploads.load(params["upload"]), 1, job.prompt, {}
    else:
        parent = parent_of(job)
        image, index = parent_tile(parent, job.index or 1), job.index or parent.index or 1
        prompt, source = job.prompt or prompt_of(parent), made_by(parent)
    shape = params.get("aspect_ratio") or None  # a new one: the tile's own shape asked again is no change
    if shape and shape_of(image.width, image.height) == shape:
        shape = None
    if shape:
        image = imaging.reframe(image, shape)
    strength = {"strength": VARY_STRENGTHS[params["strength"]]} if params.get("strength") else {}
    if "amount" in params:
        strength = {"strength": params["amount"] / 100}
    return VariationRequest(
        image=image, index=index, prompt=prompt, own_prompt=bool(job.prompt), mode=params.get("strength"),
        aspect_ratio=shape, **strength, **source,
    )  # fmt: skip


# ---- seed -------------------------------------------------------------------------------------------


def _seed(op: Operation, account: Account, data: dict[str, Any]) -> Stored:
    return {"parent": jobs.find(account, data["job_id"])}


def _parent_seed(job: Job) -> dict[str, Any]:
    """The seed of a seed job's parent, or InputError saying why it has none."""
    parent = parent_of(job)
    if parent.seed is not None:
        return {"seed": parent.seed}
    if parent.status != jobs.SUCCEEDED:
        raise InputError(f"Job {parent.id} is {parent.status}; only a succeeded job has a seed.")
    raise InputError(f"Job {parent.id} ({parent.type}) has no seed; only jobs with four images have one.")


# ---- pan, zoom out, vary region (of an upscaled image) ---------------------------------------------


def prompt_of(job: Job) -> str | None:
    """A job's prompt, or the nearest ancestor's (an upscale has none of its own)."""
    seen = 0
    while job is not None and seen < 16:
        if job.prompt:
            return job.prompt
        job, seen = job.parent, seen + 1
    return None


def image_size(job: Job) -> tuple[int, int]:
    """The size of a one-image job's image, read from storage (400 if it is gone)."""
    try:
        return storage.load_image(job.id, job.tiles[0]).size
    except (OSError, LookupError, TypeError):  # storage.MissingImage is a LookupError
        raise validation_error(f"The image of job {job.id} is no longer available.") from None


def _fits(parent: Job, pad: tuple[int, int, int, int], label: str) -> None:
    """400 if the canvas ``parent``'s image padded by ``pad`` would be larger than an image may be."""
    width, height = image_size(parent)
    canvas = (width + pad[0] + pad[2]) * (height + pad[1] + pad[3])
    limit = current_app.config["MAX_IMAGE_PIXELS"]
    if canvas > limit:
        raise validation_error(
            f"Job {parent.id}'s image is {width}x{height}; to {label} it would take a canvas of {canvas} "
            f"pixels, more than the {limit} an image may have."
        )


def _pan(op: Operation, account: Account, data: dict[str, Any]) -> Stored:
    parent = op.parents.find(account, data["job_id"], op.name)
    _fits(parent, pan_pad(image_size(parent), data["direction"]), op.name)
    return {"parent": parent, "prompt": data.get("prompt"), "params": {"direction": data["direction"]}}


def pan_pad(size: tuple[int, int], direction: str) -> tuple[int, int, int, int]:
    """The padding (left, top, right, bottom) that extends an image of ``size`` by half to ``direction``."""
    width, height = size
    half_w, half_h = (width + 1) // 2, (height + 1) // 2
    return {
        "left": (half_w, 0, 0, 0),
        "up": (0, half_h, 0, 0),
        "right": (0, 0, half_w, 0),
        "down": (0, 0, 0, half_h),
    }[direction]


def _pan_request(job: Job, ctx: JobContext) -> OutpaintRequest:
    """The parent on a canvas half again as large towards the direction; the results keep its size."""
    parent = parent_of(job)
    image = parent_tile(parent, 1)
    pad = pan_pad(image.size, job.params["direction"])
    return OutpaintRequest(
        image=image,
        pad=pad,
        width=image.width + pad[0] + pad[2],
        height=image.height + pad[1] + pad[3],
        prompt=job.prompt or prompt_of(parent),
        own_prompt=bool(job.prompt),
        direction=job.params["direction"],
        **made_by(parent),
    )


def _zoom(op: Operation, account: Account, data: dict[str, Any]) -> Stored:
    parent = op.parents.find(account, data["job_id"], op.name)
    pad, _ = zoom_geometry(image_size(parent), data["zoom_ratio"], data.get("aspect_ratio"))
    _fits(parent, pad, "zoom out of")
    params: dict[str, Any] = {"zoom_ratio": data["zoom_ratio"]}
    if data.get("aspect_ratio"):
        params["aspect_ratio"] = data["aspect_ratio"]
    return {"parent": parent, "prompt": data.get("prompt"), "params": params}


def zoom_geometry(
    size: tuple[int, int], ratio: float, aspect_ratio: str | None = None
) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """The padding around an image of ``size`` that zooms out by ``ratio``, and the result's size.

    The canvas holds the image ``ratio`` times over, in the shape ``aspect_ratio`` (default: the
    image's own, or square for ratio 1, which extends the short side); the result is that canvas at
    the image's long side.
    """
    width, height = size
    if aspect_ratio:
        shape_w, shape_h = imaging.ratio(aspect_ratio)
        shape = shape_w / shape_h
    else:
        shape = 1.0 if ratio == 1 else width / height
    canvas_w = max(width * ratio, height * ratio * shape)
    canvas_w, canvas_h = max(width, round(canvas_w)), max(height, round(canvas_w / shape))
    left, top = (canvas_w - width) // 2, (canvas_h - height) // 2
    pad = (left, top, canvas_w - width - left, canvas_h - height - top)
    long_side = max(width, height)
    out = (long_side, round(long_side / shape)) if shape >= 1 else (round(long_side * shape), long_side)
    return pad, out


def _zoom_request(job: Job, ctx: JobContext) -> OutpaintRequest:
    """The parent in the middle of a canvas ``zoom_ratio`` times its size, shrunk back to its resolution."""
    parent = parent_of(job)
    image = parent_tile(parent, 1)
    ratio = job.params["zoom_ratio"]
    pad, (width, height) = zoom_geometry(image.size, ratio, job.params.get("aspect_ratio"))
    return OutpaintRequest(
        image=image,
        pad=pad,
        width=width,
        height=height,
        prompt=job.prompt or prompt_of(parent),
        own_prompt=bool(job.prompt),
        zoom=ratio,
        **made_by(parent),
    )


def _inpaint(op: Operation, account: Account, data: dict[str, Any]) -> Stored:
    """The parent (or an upload) and the mask, checked now (it must be the image's size), kept as a file."""
    if data.get("upload"):  # an image the client uploaded (the OpenAI Images API), kept in storage
        mask = masks.decode(data["mask"], uploads.load(data["upload"]).size)
        params = {"upload": data["upload"], "mask": masks.file_name()}
        if data.get("aspect_ratio"):
            params["aspect_ratio"] = data["aspect_ratio"]
        return {"prompt": data.get("prompt"), "params": params, "inputs": {masks.STEM: mask}}
    parent = op.parents.find(account, data["job_id"], op.name)
    mask = masks.decode(data["mask"], image_size(parent))
    return {
        "parent": parent,
        "prompt": data.get("prompt"),
        "params": {"mask": masks.file_name()},
        "inputs": {masks.STEM: mask},
    }


def _inpaint_request(job: Job, ctx: JobContext) -> InpaintRequest:
    if job.params.get("upload"):
        image, prompt = uploads.load(job.params["upload"]), job.prompt
        return InpaintRequest(image=image, mask=masks.load(job), prompt=prompt, own_prompt=bool(prompt))
    parent = parent_of(job)
    return InpaintRequest(
        image=parent_tile(parent, 1),
        mask=masks.load(job),
        prompt=job.prompt or prompt_of(parent),
        own_prompt=bool(job.prompt),
        **made_by(parent),
    )


# ---- shorten and face swap --------------------------------------------------------------------------


def _shorten(op: Operation, account: Account, data: dict[str, Any]) -> Stored:
    return {"prompt": data["prompt"]}


def _shorten_request(job: Job, ctx: JobContext) -> ShortenRequest:
    return ShortenRequest(prompt=job.prompt)


def _faceswap(op: Operation, account: Account, data: dict[str, Any]) -> Stored:
    urls = ("target_image_url", "swap_image_url")
    for name in urls:
        storage.refuse_expired(data[name])
    return {"params": {name: data[name] for name in urls}}


def _faceswap_request(job: Job, ctx: JobContext) -> FaceSwapRequest:
    target, swap = job.params["target_image_url"], job.params["swap_image_url"]
    return FaceSwapRequest(
        target=fetch_image(target, "targetImageUrl", ctx),
        swap=fetch_image(swap, "swapImageUrl", ctx),
        target_url=target,
        swap_url=swap,
    )


# ---- the table --------------------------------------------------------------------------------------

_WEBHOOK = {"webhook_url": "webhookUrl", "webhook_secret": "webhookSecret"}
_PARENT = {"parent_task_id": "jobId"}
_ASPECT = {"aspect_ratio": "aspectRatio"}
_MODE = {"process_mode": "processMode"}
_JOB = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"  # the job id the docs' examples use
_LEGACY = {"taskId": "jobId", **_WEBHOOK}  # the official SDK's legacy /midjourney/ routes
_UPSCALED = Parents(kinds=(IMAGE,))


def _named_type(job: Job) -> str:
    return f"{job.type}-{job.params['type']}"


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        name="imagine",
        summary="Generate four images from a text prompt",
        description="Returns a pending job; poll it until it ends.",
        cost=16,
        request=schemas.ImagineRequest,
        stored=_imagine,
        result=GRID,
        example={"prompt": "a futuristic city at sunset", "aspectRatio": "16:9", "stylize": 250},
        provider="imagine",
        build=_imagine_request,
        aliases=("/api/v1/imagine",),
        openai=OpenAIImages(("generations",)),
        original=Original(
            schemas.ImagineBody,
            {**_ASPECT, **_MODE, **_WEBHOOK},
            shared=("/imagine",),
        ),
    ),
    Operation(
        name="describe",
        summary="Describe an image with four prompts",
        description="The image at imageUrl is fetched by the service.",
        cost=4,
        request=schemas.DescribeRequest,
        stored=_describe,
        result=TEXT,
        example={"imageUrl": "https://example.com/photo.jpg"},
        provider="describe",
        build=_describe_request,
        aliases=("/api/v1/describe",),
        original=Original(
            schemas.DescribeBody,
            {"image_url": "imageUrl", **_MODE, **_WEBHOOK},
            shared=("/describe",),
        ),
    ),
    Operation(
        name="upscale",
        summary="Upscale one of the four images of a succeeded job",
        description="The parent must be a succeeded imagine, variation or blend job.",
        cost=4,
        request=schemas.PickRequest,
        stored=_upscale,
        result=IMAGE,
        example={"jobId": _JOB, "index": 2},
        provider="upscale",
        build=_upscale_request,
        parents=Parents(kinds=(GRID,)),
        aliases=("/api/v1/upscale",),
        original=Original(
            schemas.UpscaleBody,
            {**_PARENT, **_WEBHOOK},
            summary="Upscale one of the four images of a task",
            paths=("/upscale-1x",),
            shared=("/upscale",),
            task_type=lambda job: f"{job.type}#{job.index}",
            routes=(Route("/midjourney/upscale", schemas.LegacyUpscaleBody, _LEGACY, "Upscale (legacy)"),),
        ),
        action=ConsoleAction("U", "Upscale", "one image at twice the size", "Upscale image {n}"),
    ),
    Operation(
        name="variation",
        summary="Make four variations of one image of a succeeded job",
        description="The parent must be a succeeded imagine, variation or blend job.",
        cost=16,
        request=schemas.PickRequest,
        stored=_variation,
        result=GRID,
        example={"jobId": _JOB, "index": 3},
        provider="variation",
        build=_variation_request,
        parents=Parents(kinds=(GRID, IMAGE)),
        aliases=("/api/v1/variation",),
        original=Original(
            schemas.VariationBody,
            {**_PARENT, **_ASPECT, **_WEBHOOK},
            summary="Four variations of a tile, or of an upscaled image (strong, subtle)",
            paths=("/variations",),
            shared=("/variation",),
            routes=(Route("/midjourney/vary", schemas.LegacyVaryBody, _LEGACY, "Variations (SDK legacy)"),),
        ),
        openai=OpenAIImages(("edits", "variations")),
        action=ConsoleAction("V", "Vary", "four new images like this one", "Four variations of image {n}"),
        title="Variations",
    ),
    Operation(
        name="blend",
        summary="Blend two to five images into four new ones",
        description="The images are fetched by the service.",
        cost=16,
        request=schemas.BlendRequest,
        stored=_blend,
        result=GRID,
        example={"imageUrls": ["https://example.com/one.jpg", "https://example.com/two.jpg"]},
        provider="blend",
        build=_blend_request,
        aliases=("/api/v1/blend",),
        original=Original(
            schemas.BlendBody,
            {"image_urls": "imageUrls", **_MODE, **_WEBHOOK},
            shared=("/blend",),
        ),
    ),
    Operation(
        name="reroll",
        summary="Draw a succeeded imagine or reroll job again, with a new seed",
        description="The parent's prompt and settings (or the prompt and aspectRatio given), so four "
        "different images.",
        cost=16,
        request=schemas.RerollRequest,
        stored=_reroll,
        result=GRID,
        example={"jobId": _JOB},
        provider="imagine",
        build=_imagine_request,
        parents=Parents(types=("imagine", "reroll"), images=False),
        original=Original(
            schemas.RerollBody,
            {**_PARENT, **_ASPECT, **_WEBHOOK},
            summary="Draw a task's prompt again with a new seed",
            paths=("/reroll",),
        ),
    ),
    Operation(
        name="upscale-alt",
        summary="Upscale an upscaled image again, subtle or creative",
        description="One image at twice the size of a succeeded upscale job's; creative invents finer "
        "detail.",
        cost=4,
        request=schemas.UpscaleAltRequest,
        stored=_upscale_alt,
        result=IMAGE,
        example={"jobId": _JOB, "type": "creative"},
        provider="upscale",
        build=_upscale_alt_request,
        parents=Parents(types=("upscale",)),
        original=Original(
            schemas.UpscaleAltRequest,
            {**_PARENT, **_WEBHOOK},
            summary="Upscale an upscaled image again",
            paths=("/upscale-alt",),
            task_type=lambda job: f"upscale-{job.params['type']}",
        ),
    ),
    Operation(
        name="upscale-highres",
        summary="Enlarge an image of a job, or at a URL, 2x or 4x",
        description="Of a succeeded upscale job, tile index of a job with four images, or imageUrl. Inputs "
        f"over {MAX_HIGHRES_SIDE}x{MAX_HIGHRES_SIDE} end the job failed.",
        cost=4,
        request=schemas.UpscaleHighresRequest,
        stored=_upscale_highres,
        result=IMAGE,
        example={"imageUrl": "https://example.com/photo.jpg", "type": "4x"},
        provider="upscale",
        build=_upscale_highres_request,
        parents=Parents(kinds=(GRID, IMAGE)),
        original=Original(
            schemas.UpscaleHighresBody,
            {**_PARENT, "image_url": "imageUrl", **_WEBHOOK},
            summary="Enlarge an image 2x or 4x",
            paths=("/upscale-highres",),
        ),
    ),
    Operation(
        name="pan",
        summary="Extend an upscaled image by half in one direction",
        description="Four images: the parent's pixels unchanged in place, and the scene continued up, down, "
        "left or right.",
        cost=16,
        request=schemas.PanRequest,
        stored=_pan,
        result=GRID,
        example={"jobId": _JOB, "direction": "left"},
        provider="outpaint",
        build=_pan_request,
        parents=_UPSCALED,
        action=ConsoleAction(
            "P",
            "Pan",
            "four images with the canvas extended by half",
            on=IMAGE,
            buttons=tuple(
                Button(arrow, f"Pan {direction}", {"direction": direction}, symbol=True)
                for arrow, direction in (("⬅", "left"), ("➡", "right"), ("⬆", "up"), ("⬇", "down"))
            ),
        ),
        original=Original(
            schemas.PanRequest,
            {**_PARENT, **_WEBHOOK},
            paths=("/pan",),
            task_type=lambda job: f"{job.type}-{job.params['direction']}",
        ),
    ),
    Operation(
        name="zoom",
        summary="Zoom out of an upscaled image",
        description="Four images at the parent's resolution (or aspectRatio) with the parent shrunk by "
        "zoomRatio (1 to 2) in the middle; zoomRatio 1 makes it square instead.",
        cost=16,
        request=schemas.ZoomRequest,
        stored=_zoom,
        result=GRID,
        example={"jobId": _JOB, "zoomRatio": 2},
        provider="outpaint",
        build=_zoom_request,
        parents=_UPSCALED,
        original=Original(
            schemas.ZoomBody,
            {**_PARENT, "zoom_ratio": "zoomRatio", **_ASPECT, **_WEBHOOK},
            summary="Zoom out of an upscaled image (outpaint)",
            paths=("/outpaint",),
            task_type=lambda job: f"outpaint-{job.params['zoom_ratio']:g}",
            routes=(
                Route(
                    "/midjourney/zoom",
                    schemas.LegacyZoomBody,
                    {**_LEGACY, "zoom": "zoomRatio"},
                    "Zoom out (SDK legacy)",
                ),
            ),
        ),
        action=ConsoleAction(
            "Z",
            "Zoom",
            "four images with the scene around it",
            on=IMAGE,
            buttons=(
                Button("Zoom Out 1.5×", "Zoom out 1.5 times", {"zoomRatio": 1.5}),
                Button("Zoom Out 2×", "Zoom out 2 times", {"zoomRatio": 2}),
                Button("Make Square", "Extend the short side to make it square", {"zoomRatio": 1}),
            ),
        ),
        title="Zoom out",
    ),
    Operation(
        name="inpaint",
        summary="Vary a region of an upscaled image",
        description="Four images that repaint where mask (a PNG of the parent's size) is white and keep the "
        "rest.",
        cost=16,
        request=schemas.InpaintRequest,
        stored=_inpaint,
        result=GRID,
        example={"jobId": _JOB, "mask": "iVBORw0KGgoAAAANSUhEUgAA...", "prompt": "a red kite"},
        provider="inpaint",
        build=_inpaint_request,
        parents=_UPSCALED,
        original=Original(schemas.InpaintRequest, {**_PARENT, **_WEBHOOK}, paths=("/inpaint",)),
        openai=OpenAIImages(("edits",), mask=True),
        action=ConsoleAction(
            "R",
            "Region",
            "four images with the region you paint redrawn",
            on=IMAGE,
            buttons=(Button("Vary Region", "Paint the region to redraw, then submit", {}),),
            painted=True,
        ),
        title="Vary region",
    ),
    Operation(
        name="shorten",
        summary="Five shorter versions of a prompt",
        description="Keeps the most important words; the job's tokens say how important each word is.",
        cost=4,
        request=schemas.ShortenRequest,
        stored=_shorten,
        result=TEXT,
        example={"prompt": "a very beautiful and highly detailed painting of a lighthouse at dusk"},
        provider="shorten",
        build=_shorten_request,
        original=Original(schemas.ShortenRequest, dict(_WEBHOOK), paths=("/shorten",)),
        texts=5,
    ),
    Operation(
        name="faceswap",
        summary="Put the face of one image on the face in another",
        description="Both images are fetched by the service; if either has no face, the job fails and is "
        "refunded.",
        cost=4,
        request=schemas.FaceSwapRequest,
        stored=_faceswap,
        result=IMAGE,
        example={
            "targetImageUrl": "https://example.com/portrait.jpg",
            "swapImageUrl": "https://example.com/face.jpg",
        },
        provider="faceswap",
        build=_faceswap_request,
        original=Original(
            schemas.FaceSwapRequest,
            {"target_image_url": "targetImageUrl", "swap_image_url": "swapImageUrl", **_WEBHOOK},
            paths=("/faceswap",),
        ),
        title="Face swap",
    ),
    Operation(
        name="seed",
        summary="Get the seed a job's images were made with",
        description="A job of its own, which ends succeeded with the seed (or failed if the job has none).",
        cost=0,
        request=schemas.SeedRequest,
        stored=_seed,
        result=VALUE,
        example={"jobId": _JOB},
        compute=_parent_seed,
        parents=Parents(kinds=(GRID, IMAGE, TEXT, VALUE)),
        original=Original(
            schemas.SeedRequest,
            {"task_id": "jobId", **_WEBHOOK},
            summary="Get the seed of a task",
            paths=("/seed",),
        ),
    ),
)

REGISTRY: dict[str, Operation] = {op.name: op for op in OPERATIONS}


def get(name: str) -> Operation:
    """The operation called ``name`` (KeyError if there is none)."""
    return REGISTRY[name]


def names() -> tuple[str, ...]:
    """Every operation's name, in registry order."""
    return tuple(REGISTRY)


def result_of(job_type: str) -> str | None:
    """What a job of ``job_type`` ends with (GRID, IMAGE, TEXT or VALUE)."""
    op = REGISTRY.get(job_type)
    return op.result if op else None


def with_result(*kinds: str) -> tuple[str, ...]:
    """The names of the operations whose result is one of ``kinds``."""
    return tuple(op.name for op in OPERATIONS if op.result in kinds)


def costs() -> dict[str, int]:
    """Each operation's cost in credits."""
    return {op.name: op.cost for op in OPERATIONS}


def for_openai(endpoint: str, *, mask: bool = False) -> Operation | None:
    """The operation an OpenAI Images API endpoint maps onto (edits: with a mask or without), if any."""
    for op in OPERATIONS:
        if op.openai and endpoint in op.openai.endpoints and op.openai.mask == mask:
            return op
    return None


def actions(kind: str = GRID) -> tuple[Operation, ...]:
    """The operations the console offers under a finished job of ``kind``: each image of a grid, or one."""
    return tuple(op for op in OPERATIONS if op.action is not None and op.action.on == kind)
