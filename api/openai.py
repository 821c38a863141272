"""The OpenAI Images API: /v1/images/generations, /edits and /variations, and /v1/models.

Every OpenAI client and chat UI (the ``openai`` SDKs, Open WebUI, LibreChat) can use the service as
its image backend. Each endpoint maps onto the operation whose registry entry declares it (``openai``
on the entry); this module translates the fields, accepts ordinary jobs through ``jobs.create`` (so
credits, the ledger, limits, GET /v1/jobs and the console see them), waits for them as OpenAI's API
does (waits.py), and answers with their images in OpenAI's shape. Errors on these routes are
rendered as OpenAI's ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request, stream_with_context
from marshmallow import ValidationError, fields, validate
from PIL import Image

import credits
import errors
import imaging
import jobs
import operations
import ratelimit
import schemas
import storage
import uploads
from api.body import json_body
from errors import ApiError, validation_error
from events import sse
from idempotency import current as current_claim
from idempotency import idempotent, streamed
from models import Job, unavailable
from operations import Operation
from providers import configured as configured_providers
from waits import Busy, waits
from waits import init_app as waits_init

log = logging.getLogger(__name__)

FAMILY = jobs.REFERENCE  # the jobs are the reference's: no webhook, shown as /v1 jobs
bp = Blueprint("openai", __name__)

IMAGES_PER_JOB = 4  # a job makes a grid of four
MAX_IMAGES = 10
BUSY_RETRY_AFTER = 5  # seconds a client is told to wait when every waiting slot is taken, or the server stops

# OpenAI's size -> our aspect ratio and quality (a tile's long side: 1024 px at 1, 512 at 0.25).
SIZES: dict[str, tuple[str, float]] = {
    "256x256": ("1:1", 0.25),
    "512x512": ("1:1", 0.25),
    "1024x1024": ("1:1", 1),
    "1792x1024": ("16:9", 1),
    "1024x1792": ("9:16", 1),
    "1536x1024": ("4:3", 1),
    "1024x1536": ("3:4", 1),
}
AUTO = "auto"  # generations: 1024x1024; edits and variations: the aspect ratio nearest the image's
# OpenAI's quality: low and medium make smaller images; the others keep the size's.
# xhigh and max (newer GPT image models) are high here: 1 is this service's highest quality.
QUALITIES = {
    "low": 0.25,
    "medium": 0.5,
    "standard": None,
    "hd": None,
    "high": None,
    "xhigh": None,
    "max": None,
    AUTO: None,
}
# The quality a stream's events say the images were made at (OpenAI's words for this service's).
QUALITY_MADE = {0.25: "low", 0.5: "medium", 1: "high"}
STYLES = {"natural": "raw", "vivid": None}  # OpenAI's style -> ours (vivid: the default look)
RESPONSE_FORMATS = ("url", "b64_json")
OUTPUT_FORMATS = tuple(imaging.FORMATS)  # png, webp, jpeg: what the images can be encoded as
# OpenAI's values that this service cannot honour, and why: a 400 says so.
NO_TRANSPARENCY = {"transparent": "cannot be transparent: these images are opaque."}
STILLS_ONLY = {
    kind: f"cannot be {kind}: the images are stills, in png, webp or jpeg." for kind in ("gif", "svg")
}
# OpenAI's own image models: a client that names one gets the configured providers. Those listed are
# named in errors and /openapi.json; any GPT image model's name (gpt-image-2.5-flare, chatgpt-image-latest)
# is taken too, so OpenAI's next ones work.
OPENAI_MODELS = ("dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2")
GPT_IMAGE_MODEL = re.compile(r"(chat)?gpt-image-[a-z0-9][a-z0-9.-]{0,60}")
# A stream's completed events carry OpenAI's token usage; this service counts credits, not tokens.
NO_TOKENS = {
    "input_tokens": 0,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
    "output_tokens": 0,
    "total_tokens": 0,
}
EDIT_WITHOUT_OPERATION = "Edits with a mask need an operation that repaints a region; this server has none."


# ---- requests --------------------------------------------------------------------------------------


_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,18}")  # longer is out of every range, and int() refuses 4,300 digits


class FormInteger(fields.Integer):
    """A whole number, as JSON sends it or as a multipart form's text."""

    default_error_messages = {**schemas.MESSAGES, "invalid": "must be a whole number."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, str):  # ASCII digits only: int() also reads "1_0" and other scripts' digits
            if not _WHOLE_NUMBER.fullmatch(value.strip()):
                raise self.make_error("invalid")
            return int(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise self.make_error("invalid")
        return int(value)


def _choice(choices: tuple[str, ...], default: str | None) -> schemas.Choice:
    return schemas.Choice(load_default=default, validate=schemas.one_of(choices))


def _response_format() -> schemas.Choice:
    """None when not given: GPT image models answer base64, as OpenAI's always do (a URL if asked for)."""
    default = {"description": "Default: b64_json with a GPT image model, else url."}
    return schemas.Choice(load_default=None, validate=schemas.one_of(RESPONSE_FORMATS), metadata=default)


class Supported(validate.OneOf):
    """One of ``choices``; a value OpenAI defines that this service cannot honour gets the reason why."""

    def __init__(self, choices: tuple[Any, ...], refused: Mapping[Any, str]) -> None:
        super().__init__(choices, error=schemas.one_of(choices).error)
        self.refused = refused

    def __call__(self, value: Any) -> Any:
        if value in self.refused:
            raise ValidationError(self.refused[value])
        return super().__call__(value)


class FormBoolean(fields.Boolean):
    """true or false: a JSON boolean, or a multipart form's text "true" or "false"."""

    default_error_messages = {**schemas.MESSAGES, "invalid": "must be true or false."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if isinstance(value, bool):  # not 0 or 1, which a bare Boolean takes
            return value
        if getattr(self.parent, "multipart_files", None) is not None and value in ("true", "false"):
            return value == "true"
        raise self.make_error("invalid")


_FILE = {"type": "string", "format": "binary"}
_NOT_USED = {"description": "Accepted, not used."}


class GptImageOptions:
    """The fields OpenAI's GPT image models take on generations and edits."""

    background = schemas.Choice(load_default=AUTO, validate=Supported(("opaque", AUTO), NO_TRANSPARENCY))
    output_format = schemas.Choice(
        load_default=None,
        validate=Supported(OUTPUT_FORMATS, STILLS_ONLY),
        metadata={"description": "Default: the format the images are stored in (APIFRAME_IMAGE_FORMAT)."},
    )
    output_compression = FormInteger(
        load_default=None,
        validate=schemas.between(0, 100),
        metadata={"description": "The quality of a webp or jpeg image."},
    )
    partial_images = FormInteger(
        load_default=0,
        validate=schemas.between(0, 3),
        metadata={"description": "Accepted; none are sent: the backends make no partial images."},
    )
    stream = FormBoolean(
        load_default=False,
        metadata={"description": "Answer as server-sent events, as OpenAI's streaming does: see the route."},
    )
    safety_identifier = schemas.Choice(
        load_default=None, metadata={"description": "Accepted; a stream's events carry it back."}
    )


class VariationForm(schemas.RequestSchema):
    """POST /v1/images/variations (multipart/form-data)."""

    multipart_files = ("image",)  # required files, read from the request's files (not this schema)

    image = fields.Raw(load_default=None, metadata={**_FILE, "description": "The image (PNG, JPEG, WebP)."})
    model = schemas.Choice(load_default=None, metadata={"description": "A model of GET /v1/models."})
    n = FormInteger(load_default=1, validate=schemas.between(1, MAX_IMAGES))
    size = _choice((AUTO, *SIZES), AUTO)
    response_format = _response_format()
    user = schemas.Choice(load_default=None, metadata=_NOT_USED)


class EditForm(GptImageOptions, VariationForm):
    """POST /v1/images/edits (multipart/form-data)."""

    mask = fields.Raw(load_default=None, metadata={**_FILE, "description": "PNG: transparent = change."})
    prompt = schemas.Text(required=True, max_length=schemas.MAX_PROMPT_LENGTH)
    quality = _choice(tuple(QUALITIES), AUTO)
    input_fidelity = schemas.Choice(
        load_default=None, validate=schemas.one_of(("high", "low")), metadata=_NOT_USED
    )


class GenerationRequest(GptImageOptions, schemas.RequestSchema):
    """POST /v1/images/generations (JSON)."""

    prompt = schemas.Text(required=True, max_length=schemas.MAX_PROMPT_LENGTH)
    model = schemas.Choice(load_default=None, metadata={"description": "A model of GET /v1/models."})
    n = FormInteger(load_default=1, validate=schemas.between(1, MAX_IMAGES))
    size = _choice((AUTO, *SIZES), AUTO)
    quality = _choice(tuple(QUALITIES), AUTO)
    style = _choice(tuple(STYLES), None)
    response_format = _response_format()
    user = schemas.Choice(load_default=None, metadata=_NOT_USED)
    moderation = _choice(("low", AUTO), AUTO)


class ImageObject(schemas.ResponseSchema):
    """One image of an answer: its URL or its bytes, and the prompt it was made from."""

    url = fields.String(metadata={"format": "uri"})
    b64_json = fields.String(metadata={"description": "The image file, base64-encoded."})
    revised_prompt = fields.String(allow_none=True)


class ErrorDetail(schemas.ResponseSchema):
    """What went wrong, as OpenAI's API says it."""

    message = fields.String()
    type = fields.String()
    param = fields.String(allow_none=True)
    code = fields.String(allow_none=True)


class ErrorEnvelope(schemas.ResponseSchema):
    """Every failure on these routes: ``{"error": {"message", "type", "param", "code"}}``."""

    error = fields.Nested(ErrorDetail)


class ImagesResponse(schemas.ResponseSchema):
    """What the images endpoints answer."""

    created = fields.Integer(metadata={"description": "Unix seconds."})
    data = fields.List(fields.Nested(ImageObject))


class ModelObject(schemas.ResponseSchema):
    """A model: one of the configured providers."""

    id = fields.String()
    object = fields.String(metadata={"enum": ["model"]})
    created = fields.Integer()
    owned_by = fields.String()


class ModelList(schemas.ResponseSchema):
    """GET /v1/models."""

    object = fields.String(metadata={"enum": ["list"]})
    data = fields.List(fields.Nested(ModelObject))


_generation, _edit, _variation = GenerationRequest(), EditForm(), VariationForm()


def _load(schema: schemas.RequestSchema, body: Any) -> dict[str, Any]:
    data = schemas.load(schema, body)
    model = data.pop("model")
    data["provider"] = _provider(model)
    if data.get("stream"):
        if data["response_format"] == "url":
            raise validation_error(
                "The 'response_format' field cannot be url with stream: the events carry the images "
                "base64-encoded.",
                {"response_format": []},
            )
        data["response_format"] = "b64_json"
    elif data["response_format"] is None:
        gpt_image = model is not None and GPT_IMAGE_MODEL.fullmatch(model)
        data["response_format"] = "b64_json" if gpt_image else "url"
    # A URL serves the stored file: a new quality in its own format needs another file (or b64_json).
    stored = current_app.config["IMAGE_FORMAT"]
    recompressed = data.get("output_compression") is not None and data.get("output_format") in (None, stored)
    if data["response_format"] == "url" and recompressed and stored != "png":
        raise validation_error(
            f"The 'output_compression' field needs response_format b64_json here: the URLs serve the images "
            f"as they are stored, in {stored}.",
            {"output_compression": []},
        )
    return data


def _provider(model: str | None) -> str | None:
    """The configured provider a model names (None: the configured one for each operation), else 400."""
    if model is None or model in OPENAI_MODELS or GPT_IMAGE_MODEL.fullmatch(model):
        return None
    if model in model_ids():
        return model
    raise validation_error(
        f"The 'model' field must be one of: {', '.join(model_ids() + OPENAI_MODELS)}, or another GPT image "
        "model (gpt-image-*, chatgpt-image-*).",
        {"model": [model]},
    )


def _form() -> dict[str, Any]:
    """A multipart request's text fields (each given once)."""
    if request.mimetype != "multipart/form-data":
        raise validation_error(
            "The request must be multipart/form-data, with the image as a file.", {"image": []}
        )
    return {key: request.form.get(key) for key in request.form}


def _files(field: str) -> list[Any]:
    """The files sent as ``field`` or ``field[]`` (the SDK's spelling for several)."""
    return [file for name in (field, f"{field}[]") for file in request.files.getlist(name)]


def _upload(field: str, size: str, quality: str = AUTO) -> dict[str, Any]:
    """Store the one image sent as ``field``, fitted to ``size``: what its jobs keep of it."""
    sent = _files(field)
    if not sent:
        raise validation_error(f"The '{field}' field is required: send the image as a file.", {field: []})
    if len(sent) > 1:
        raise validation_error(
            f"The '{field}' field takes one image here; {len(sent)} were sent.", {field: []}
        )
    try:
        image = uploads.decode(sent[0].read())
    except uploads.UploadError as exc:
        raise validation_error(f"The '{field}' file is not usable: {exc}.", {field: []}) from None
    aspect_ratio, scale = _shape(size, image, quality)
    fitted = imaging.fit(image, *imaging.dimensions(aspect_ratio, scale))
    return {"upload": uploads.save(fitted), "aspect_ratio": aspect_ratio, "sent_size": image.size}


def _mask(upload: str, sent_size: tuple[int, int]) -> str:
    """The ``mask`` file (transparent: change), fitted like ``upload``: a base64 PNG, white = repaint."""
    sent = _files("mask")
    if len(sent) > 1:
        raise validation_error(f"The 'mask' field takes one image; {len(sent)} were sent.", {"mask": []})
    try:
        image = imaging.open_image(sent[0].read(), current_app.config["MAX_IMAGE_PIXELS"])
    except imaging.ImageError as exc:
        raise validation_error(f"The 'mask' file is not usable: {exc}.", {"mask": []}) from None
    if image.format != "PNG":
        raise validation_error("The 'mask' file must be a PNG image.", {"mask": []})
    if image.size != sent_size:
        width, height = sent_size
        raise validation_error(
            f"The 'mask' file must be the image's size, {width}x{height}; it is "
            f"{image.width}x{image.height}.",
            {"mask": []},
        )
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        raise validation_error(
            "The 'mask' file must have transparency: its transparent pixels mark what to change.",
            {"mask": []},
        )
    change = np.asarray(image.convert("RGBA").getchannel("A")) < 128
    if not change.any():
        raise validation_error(
            "The 'mask' file has no transparent pixels: make transparent what to change.", {"mask": []}
        )
    if change.all():
        raise validation_error(
            "The 'mask' file is transparent everywhere: keep opaque what should stay.", {"mask": []}
        )
    region = Image.fromarray((change * 255).astype(np.uint8), "L")
    return imaging.png_base64(imaging.fit(region, *uploads.load(upload).size))


def _shape(size: str, image: Image.Image | None, quality: str) -> tuple[str, float]:
    """Our aspect ratio and quality for an OpenAI size and quality."""
    if size == AUTO:
        aspect_ratio = "1:1" if image is None else imaging.nearest_aspect_ratio(image)
        scale = 1.0
    else:
        aspect_ratio, scale = SIZES[size]
    lower = QUALITIES[quality]
    return aspect_ratio, min(scale, lower) if lower else scale


def size_table() -> list[tuple[str, str, float, str]]:
    """Each OpenAI size: our aspect ratio, quality and the pixel size made (for /docs and the README)."""
    rows = []
    for size in (AUTO, *SIZES):
        aspect_ratio, quality = _shape(size, None, AUTO)
        width, height = imaging.dimensions(aspect_ratio, quality)
        rows.append((size, aspect_ratio, quality, f"{width}x{height}"))
    return rows


# ---- views -----------------------------------------------------------------------------------------


@bp.post("/v1/images/generations")
@ratelimit.creates
@idempotent
def generations() -> Response:
    """Create images from a prompt (OpenAI's images.generate)."""
    data = _load(_generation, json_body())
    operation = _operation("generations")
    aspect_ratio, quality = _shape(data["size"], None, data["quality"])
    body = {"prompt": data["prompt"], "aspectRatio": aspect_ratio, "quality": quality}
    if data["style"] and STYLES[data["style"]]:
        body["style"] = STYLES[data["style"]]
    translated = schemas.load(operation.request(), body)
    requests = [{**translated, "fresh_seed": i > 0} for i in range(_jobs(data["n"]))]
    with _slot() as held:
        return _answer(operation, requests, data, held, events="image_generation")


@bp.post("/v1/images/edits")
@ratelimit.creates
@idempotent
def edits() -> Response:
    """Edit an image from a prompt, where a mask is transparent if one is sent (OpenAI's images.edit)."""
    data = _load(_edit, _form())
    masked = bool(_files("mask"))
    operation = operations.for_openai("edits", mask=masked)
    if operation is None:
        raise validation_error(EDIT_WITHOUT_OPERATION, {"mask": []})
    with _slot() as held:
        upload = _upload("image", data["size"], data["quality"])
        sent_size = upload.pop("sent_size")
        if masked:
            upload["mask"] = _mask(upload["upload"], sent_size)
        requests = [{**upload, "prompt": data["prompt"]}] * _jobs(data["n"])
        return _answer(operation, requests, data, held, events="image_edit")


@bp.post("/v1/images/variations")
@ratelimit.creates
@idempotent
def variations() -> Response:
    """Make variations of an image (OpenAI's images.create_variation)."""
    data = _load(_variation, _form())
    operation = _operation("variations")
    with _slot() as held:
        upload = _upload("image", data["size"])
        upload.pop("sent_size")
        return _answer(operation, [upload] * _jobs(data["n"]), data, held)


@bp.get("/v1/models")
def list_models() -> Response:
    """The models a request may name: each configured provider (OpenAI's models.list)."""
    return jsonify(object="list", data=[_model(name) for name in model_ids()])


@bp.get("/v1/models/<model_id>")
def get_model(model_id: str) -> Response:
    """One model (OpenAI's models.retrieve)."""
    if model_id not in model_ids():
        raise ApiError(404, "MODEL_NOT_FOUND", f"The model '{model_id}' does not exist.")
    return jsonify(_model(model_id))


def model_ids() -> tuple[str, ...]:
    """The configured providers that can run an operation of this API, default first."""
    providers = configured_providers()
    wanted = {op.provider for op in operations.OPERATIONS if op.openai and op.provider}
    found = [providers.default, *providers.by_operation.values()]
    names = [p.name for p in found if any(p.supports(operation) for operation in wanted)]
    return tuple(dict.fromkeys(names))


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "apiframe"}


def _operation(endpoint: str) -> Operation:
    operation = operations.for_openai(endpoint)
    if operation is None:  # the registry maps every endpoint; a missing one is a bug, not bad input
        raise RuntimeError(f"no operation answers OpenAI's {endpoint}")
    return operation


def _jobs(images: int) -> int:
    return math.ceil(images / IMAGES_PER_JOB)


# ---- accepting, waiting and answering ---------------------------------------------------------------


@contextmanager
def _slot() -> Iterator[ExitStack]:
    """Hold one of this process's waiting slots for the block, or, once moved out of the stack it gives
    (``pop_all``), for as long as a streamed answer runs. 503 at once if every one is taken, or the
    server stops."""
    if waits().stopping:  # no job is made for a request that could not wait for it
        raise _stopping("This server is stopping (a restart or deploy). Send the request again.")
    with ExitStack() as held:
        try:
            held.enter_context(waits().slot())
        except Busy:
            raise ApiError(
                503,
                "SERVER_BUSY",
                f"All {waits().slots} waiting slots of this server are taken; retry in a few seconds.",
                headers={"Retry-After": str(BUSY_RETRY_AFTER)},
            ) from None
        yield held


def _stopping(message: str) -> ApiError:
    """503 for a restart or deploy, which OpenAI's SDKs send again (to this node restarted, or another)."""
    return ApiError(
        503,
        "SERVER_STOPPING",
        message,
        headers={"Retry-After": str(BUSY_RETRY_AFTER), "X-Should-Retry": "true"},
    )


def _answer(
    operation: Operation,
    requests: list[dict[str, Any]],
    data: Mapping[str, Any],
    held: ExitStack,
    events: str | None = None,
) -> Response:
    """Accept a job per request, wait for them all, and answer with ``n`` of their images; streamed as
    OpenAI's ``events`` (image_generation, image_edit) if the request asks for a stream, with the
    waiting slot ``held`` until the stream ends."""
    sent = {data["upload"] for data in requests if data.get("upload")}
    accepted: list[Job] = []
    try:
        accepted = _accept(operation, requests, data["provider"])
    finally:
        # an upload is kept only for a job that uses it: not if the request is refused, nor if it is
        # a retry under an Idempotency-Key given its first request's jobs (which use that one's upload)
        for reference in sent - {job.params.get("upload") for job in accepted}:
            uploads.discard(reference)
    if events and data["stream"]:
        return _stream(accepted, data, events, held)
    ended = waits().wait(accepted, current_app.config["SYNC_WAIT"])
    images = [_image(job, name, data) for job, name in _chosen(ended, data)]
    return jsonify(created=int(time.time()), data=images)


def _stream(accepted: list[Job], data: Mapping[str, Any], events: str, held: ExitStack) -> Response:
    """The answer as OpenAI's streaming sends it: once the jobs have ended, an ``{events}.completed``
    event for each image, or else an ``error`` event (after the same cancels and refunds as an answer
    given at once). Until then, a comment line every EVENT_HEARTBEAT seconds keeps the connection open
    through proxies. The waiting slot ``held`` is given back once the jobs have ended, or the client goes."""
    config = current_app.config
    claimed, slot = current_claim(), held.pop_all()

    def stream() -> Iterator[str]:
        yield ": waiting for the images\n\n"  # the answer's head goes now, not with the first event
        try:
            with streamed(claimed):
                for found in waits().watch(accepted, config["SYNC_WAIT"], config["EVENT_HEARTBEAT"]):
                    if found is None:
                        yield ": keep-alive\n\n"
                    else:
                        ended = found
                completed = f"{events}.completed"
                answer = [
                    sse(completed, _completed(job, name, data, completed))
                    for job, name in _chosen(ended, data)
                ]
        except Exception as exc:
            answer = [sse("error", {"type": "error", **error_body(errors.failure(exc))})]
        slot.close()  # what is left is writing the answer out, as for one given at once
        yield from answer

    response = Response(stream_with_context(stream()), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx and the like pass events on at once
    response.call_on_close(slot.close)
    return response


def _accept(operation: Operation, requests: list[dict[str, Any]], provider: str | None) -> list[Job]:
    """One job per request, all or none: if one cannot be accepted (not paid for, not stored), the
    jobs made are undone with their transaction, and those an earlier try under the same
    Idempotency-Key made (given back to this one, and so made before it) are cancelled."""
    accepted: list[Job] = []
    made: list[Job] = []
    try:
        with jobs.all_or_none() as made:
            for data in requests:
                accepted.append(
                    jobs.create(g.account, operation, {**data, "provider": provider}, origin=FAMILY)
                )
    except Exception as exc:
        why = "another job of its request was not accepted"
        undone = {job.id for job in made}
        accepted = [job for job in accepted if job.id not in undone]
        for job in accepted:
            jobs.finish(job.id, jobs.CANCELLED, error=f"Cancelled: {why}.")
        # one made by an earlier try under the same Idempotency-Key may have succeeded: all or nothing
        _refund_succeeded(accepted, why)
        if isinstance(exc, ApiError) and exc.code == "INSUFFICIENT_CREDITS":  # OpenAI's exhausted quota: 429
            images = len(requests) * IMAGES_PER_JOB
            balance = credits.balance(g.account.id)  # as it is again: the request's debits were undone
            raise ApiError(
                429,
                "INSUFFICIENT_CREDITS",
                f"This request needs {len(requests)} {operation.name} job(s) ({operation.cost} credits each, "
                f"{images} images) and your balance is {balance}.",
            ) from None
        raise
    return accepted


def _chosen(ended: list[Job], data: Mapping[str, Any]) -> list[tuple[Job, str]]:
    """``n`` images of the ended jobs (each job and its image's name), or the error that says why there
    are none.

    All or nothing: with no images to answer, the jobs still running are cancelled, and those that
    succeeded refunded; if the database cannot be used to do that, the answer says that they may still
    make their images.
    """
    unfinished = [job for job in ended if job.status not in jobs.TERMINAL]
    cancelled = [job for job in ended if job.status == jobs.CANCELLED]
    failed = [job for job in ended if job.status in jobs.TERMINAL and job.status != jobs.SUCCEEDED]
    if not (unfinished or failed):
        return [(job, name) for job in ended for name in job.tiles][: data["n"]]
    stopping = waits().stopping
    if cancelled:  # by its owner, while this request waited (through the other APIs or the console)
        why = "another job of its request was cancelled"
    elif failed:
        why = "another job of its request failed"
    elif stopping:
        why = "its server stopped before it ended"
    else:
        why = "the synchronous request ran out of time"
    ended_now: set[uuid.UUID] = set()
    try:
        for job in unfinished:
            jobs.finish(job.id, jobs.CANCELLED, error=f"Cancelled: {why}.")
            ended_now.add(job.id)
        _refund_succeeded(ended, why)
    except Exception as exc:
        if not unavailable(exc):
            raise
        raise _not_cancelled([job for job in ended if job.id not in ended_now], exc) from None
    if cancelled:
        raise ApiError(
            409,
            "JOB_CANCELLED",
            f"Job {cancelled[0].id} was cancelled while this request waited for it; the request's credits "
            "were refunded.",
            headers={"X-Should-Retry": "false"},  # a cancel is meant: the SDK would make new jobs
        )
    if failed:
        job = failed[0]
        raise ApiError(500, "PROVIDER_ERROR", f"Job {job.id} ended {job.status}: {job.error or 'no images'}")
    if stopping:
        raise _stopping(
            "This server is stopping (a restart or deploy) and could not wait for the images; the "
            "unfinished jobs were cancelled, and the request's credits refunded. Send it again."
        )
    limit = current_app.config["SYNC_WAIT"]
    raise ApiError(
        504,
        "TIMEOUT",
        f"The images were not ready within {limit:g} seconds (APIFRAME_SYNC_WAIT); the unfinished "
        "jobs were cancelled, and the request's credits refunded.",
        headers={"X-Should-Retry": "false"},  # OpenAI's SDKs retry a 5xx, to wait as long again
    )


def _not_cancelled(ended: Iterable[Job], exc: Exception) -> ApiError:
    """503 for jobs that an outage of the database kept from being cancelled: they may still make their
    images, and stay paid for unless they fail. Not to be retried: OpenAI's SDKs send a 5xx again, which
    would make and charge a second set of jobs."""
    why = str(exc).strip()
    log.warning("a synchronous request's jobs were not cancelled: database unavailable (%s)", why)
    claimed = current_claim()
    if claimed is not None:  # its key stays in flight: a retry that takes it over gets these jobs back
        claimed.held = True
    ids = ", ".join(str(job.id) for job in ended)
    return ApiError(
        503,
        "DATABASE_UNAVAILABLE",
        "The database could not be used while this request waited for its images, so its jobs could not be "
        "cancelled: they may still make the images, which GET /v1/jobs/<id> shows, and they stay paid for "
        f"unless they fail. Its jobs: {ids}.",
        headers={"X-Should-Retry": "false"},
    )


def _refund_succeeded(ended: Iterable[Job], why: str) -> None:
    """All or nothing: an answer without images pays for none, so the jobs that succeeded are refunded.

    Their statuses are read again: one may have ended since ``ended`` was read. One refunded already
    (by an earlier try under the same Idempotency-Key, whose process died before it answered, or by
    one still running) is not refunded again: credits.refund gives a job's cost back once.
    """
    ids = [job.id for job in ended]
    for job in Job.select().where(Job.id.in_(ids) & (Job.status == jobs.SUCCEEDED)):
        credits.refund(job, f"{job.type} job refunded: {why}")


def _image(job: Job, name: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """One image, as its bytes or a URL, in the output format asked for (re-encoded if stored in another)."""
    stem, _, stored = name.rpartition(".")
    if data["response_format"] == "url" and _format(name, data) == stored:
        return {"url": storage.image_url(job.id, name), "revised_prompt": job.prompt}
    encoded, wanted = _as_asked(job, name, data)
    if data["response_format"] == "b64_json":
        return {"b64_json": base64.b64encode(encoded).decode("ascii"), "revised_prompt": job.prompt}
    copy = f"{stem}.{wanted}"  # kept beside the job's images, where their URLs serve it
    storage.current().put(f"{job.id}/{copy}", encoded)
    return {"url": storage.image_url(job.id, copy), "revised_prompt": job.prompt}


def _completed(job: Job, name: str, data: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """An image's ``completed`` event of a stream (``kind``): its bytes, and what it was made as."""
    encoded, wanted = _as_asked(job, name, data)
    with Image.open(io.BytesIO(encoded)) as image:
        size = f"{image.width}x{image.height}"
    event = {
        "type": kind,
        "b64_json": base64.b64encode(encoded).decode("ascii"),
        "background": data["background"],
        "created_at": int(time.time()),
        "output_format": wanted,
        "quality": QUALITY_MADE[_shape(data["size"], None, data["quality"])[1]],
        "size": size,
        "usage": NO_TOKENS,
    }
    identifier = data.get("safety_identifier") or data.get("user")  # as OpenAI's: the deprecated user's too
    if identifier:
        event["safety_identifier"] = identifier
    return event


def _format(name: str, data: Mapping[str, Any]) -> str:
    """The format an image is answered in: the one asked for, else the one it is stored in."""
    return data.get("output_format") or name.rpartition(".")[2]


def _as_asked(job: Job, name: str, data: Mapping[str, Any]) -> tuple[bytes, str]:
    """An image's bytes in the format and quality the request asks for, and that format."""
    wanted = _format(name, data)
    stored = name.rpartition(".")[2]
    return _encoded(storage.image_bytes(job.id, name), stored, wanted, data.get("output_compression")), wanted


def _encoded(data: bytes, stored: str, wanted: str, compression: int | None) -> bytes:
    """An image stored as ``stored``, as ``wanted``: re-encoded only for another format or a lossy quality."""
    if wanted == stored and (compression is None or wanted == "png"):
        return data
    with Image.open(io.BytesIO(data)) as image:
        flat = imaging.flatten(image)  # jpeg has no alpha; the images are opaque anyway
        if compression is None or wanted == "png":  # png is lossless: its compression changes no pixel
            return imaging.encode(flat, wanted)
        buffer = io.BytesIO()
        flat.save(buffer, imaging.FORMATS[wanted][0], quality=compression)
        return buffer.getvalue()


# ---- errors --------------------------------------------------------------------------------------

# Our error code -> OpenAI's error type and code.
ERROR_KINDS: dict[str, tuple[str, str | None]] = {
    "VALIDATION_ERROR": ("invalid_request_error", None),
    "UNAUTHORIZED": ("invalid_request_error", "invalid_api_key"),
    "INSUFFICIENT_CREDITS": ("insufficient_quota", "insufficient_quota"),
    "RATE_LIMITED": ("requests", "rate_limit_exceeded"),
    "MODEL_NOT_FOUND": ("invalid_request_error", "model_not_found"),
    "NOT_FOUND": ("invalid_request_error", "not_found"),
    "SERVER_BUSY": ("server_error", "server_busy"),
    "TIMEOUT": ("server_error", "timeout"),
}


def error_body(error: ApiError) -> dict[str, Any]:
    """An error as OpenAI's API reports one."""
    kind, code = ERROR_KINDS.get(error.code) or (
        "server_error" if error.status >= 500 else "invalid_request_error",
        error.code.lower(),
    )
    param = next(iter(error.fields)) if error.fields and len(error.fields) == 1 else None
    return {"error": {"message": error.message, "type": kind, "param": param, "code": code}}


def _allow_uploads() -> None:
    """Multipart requests with images may be larger than the JSON API's 1 MiB: up to UPLOAD_MAX_BYTES."""
    if request.mimetype == "multipart/form-data":
        limit = current_app.config["UPLOAD_MAX_BYTES"]
        # Under a server that ends the body itself (gunicorn), Werkzeug caps its stream at the limit and
        # refuses a body that reaches it, unable to tell whether more follows. A body within the limit by
        # its Content-Length ends there: a cap one byte higher then refuses nothing the limit allows.
        length = request.content_length
        request.max_content_length = limit + 1 if length is not None and length <= limit else limit


bp.before_request(_allow_uploads)


def init_app(app: Flask, blueprint: str) -> None:
    """Render errors on ``blueprint`` (this family's, as registered) as OpenAI's API does; set up waiting."""
    errors.render_for(app, blueprint, error_body)
    waits_init(app)
