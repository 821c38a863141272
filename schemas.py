"""Marshmallow schemas: every request body and response object of the API.

They validate input and render output, and the OpenAPI document is generated from them.
Field messages are phrased to follow "The 'field' field ...", so every error names its field.
"""

from __future__ import annotations

import base64
import datetime
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

from marshmallow import (
    EXCLUDE,
    INCLUDE,
    Schema,
    ValidationError,
    fields,
    missing,
    pre_load,
    validate,
    validates_schema,
)

import fetch
import storage
from config import PLANS
from errors import ERROR_CODES, validation_error
from imaging import ASPECT_RATIOS, MIDJOURNEY_ASPECT_RATIOS
from jobs import STATUSES, WEBHOOK_STATUSES, queue_position
from models import Account, Job

VERSIONS = ("5.2", "6.0", "6.1")
QUALITIES = (0.25, 0.5, 1)
STYLES = ("raw", "cute", "expressive", "scenic")
# What POST /v1/imagine takes for the fields a request leaves out; the console's imagine form starts there.
IMAGINE_DEFAULTS = {"aspect_ratio": "1:1", "version": "6.1", "quality": 1, "chaos": 0, "stylize": 100}
MAX_PROMPT_LENGTH = 4000
MAX_URL_LENGTH = 2048
MAX_WEBHOOK_SECRET_LENGTH = 256
BLEND_DIMENSIONS = {"square": "1:1", "portrait": "2:3", "landscape": "3:2"}
UPSCALE_ALT_TYPES = ("subtle", "creative")
HIGHRES_FACTORS = {"2x": 2, "4x": 4}
VARY_STRENGTHS = ("subtle", "strong")  # variations of an upscaled image, on the original API's routes
PROCESS_MODES = ("fast", "turbo", "relax")  # the original API's speeds: accepted and recorded

MESSAGES = {
    "required": "is required.",
    "null": "must not be null.",
    "validator_failed": "is invalid.",
}


def one_of(choices: tuple[Any, ...]) -> validate.OneOf:
    """A choice validator whose message lists the choices."""
    return validate.OneOf(choices, error="must be one of: " + ", ".join(str(c) for c in choices) + ".")


class OperationName(validate.OneOf):
    """One of the registered operations' names (read from the registry when used, so it is never stale)."""

    def __init__(self) -> None:  # OneOf's own would read the registry while it is being built
        self.labels, self.labels_text, self.error = [], "", "must be one of: {choices}."

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        import operations  # the registry imports this module for its request schemas

        return operations.names()

    @choices.setter
    def choices(self, value: Any) -> None:
        pass

    @property
    def choices_text(self) -> str:  # type: ignore[override]
        return ", ".join(self.choices)

    @choices_text.setter
    def choices_text(self, value: Any) -> None:
        pass


def between(low: float, high: float | None = None) -> validate.Range:
    """A range validator whose message states the range."""
    if high is None:
        return validate.Range(min=low, error=f"must be at least {low:g}.")
    return validate.Range(min=low, max=high, error=f"must be between {low:g} and {high:g}.")


MAX_OFFSET = 1_000_000_000
UNICODE_MESSAGE = (
    "must be text a database can store (it holds a NUL character or a lone surrogate such as \\ud800)."
)


def unstorable(text: str) -> bool:
    """Whether ``text`` holds a NUL character (PostgreSQL cannot store one) or a lone surrogate."""
    return "\x00" in text or has_lone_surrogate(text)


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a UTF-16 surrogate on its own, which no UTF-8 page or database can store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class Text(fields.String):
    """A string; blank strings are refused, surrounding whitespace is dropped."""

    default_error_messages = {**MESSAGES, "invalid": "must be a string."}

    def __init__(self, *, max_length: int, **kwargs: Any) -> None:
        # \S: not blank, as Python's re (and str.strip) reads whitespace
        kwargs["metadata"] = {
            "minLength": 1,
            "maxLength": max_length,
            "pattern": r"\S",
            **kwargs.get("metadata", {}),
        }
        super().__init__(**kwargs)
        self.max_length = max_length

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if unstorable(text):
            raise ValidationError(UNICODE_MESSAGE)
        if not text:
            raise ValidationError("must not be empty.")
        if len(text) > self.max_length:
            raise ValidationError(f"must be at most {self.max_length} characters.")
        return text


class Choice(fields.String):
    """A string from a fixed list."""

    default_error_messages = {**MESSAGES, "invalid": "must be a string."}


class Number(fields.Float):
    """A JSON number (strings and booleans are refused)."""

    default_error_messages = {
        **MESSAGES,
        "invalid": "must be a number.",
        "special": "must be a finite number.",
        "too_large": "is too large.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class WholeNumber(fields.Integer):
    """A JSON integer (2.0 is accepted as 2; strings, booleans and fractions are refused)."""

    default_error_messages = {**MESSAGES, "invalid": "must be a whole number."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        if isinstance(value, float) and not math.isfinite(value) or value != int(value):
            raise self.make_error("invalid")
        return int(value)


class QueryInteger(fields.Integer):
    """An integer from a query string."""

    default_error_messages = {**MESSAGES, "invalid": "must be a whole number."}


class HttpUrl(fields.Url):
    """An absolute http(s) URL."""

    default_error_messages = {**MESSAGES, "invalid": "must be an http or https URL."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs["metadata"] = {"format": "uri", **kwargs.get("metadata", {})}
        super().__init__(schemes={"http", "https"}, require_tld=False, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        value = value.strip()
        if unstorable(value):
            raise ValidationError(UNICODE_MESSAGE)
        if len(value) > MAX_URL_LENGTH:
            raise ValidationError(f"must be at most {MAX_URL_LENGTH} characters.")
        if not fetch.has_valid_port(value):
            raise ValidationError("must be an http or https URL whose port is a number from 1 to 65535.")
        return super()._deserialize(value, attr, data, **kwargs)


class HeaderValue(fields.String):
    """A string sent back verbatim in an HTTP header: printable ASCII, no spaces at either end."""

    default_error_messages = {**MESSAGES, "invalid": "must be a string."}

    def __init__(self, *, max_length: int, **kwargs: Any) -> None:
        rules = {"minLength": 1, "maxLength": max_length, "pattern": r"^[!-~]([ -~]*[!-~])?$"}
        kwargs["metadata"] = {**rules, **kwargs.get("metadata", {})}
        super().__init__(**kwargs)
        self.max_length = max_length

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if unstorable(text):
            raise ValidationError(UNICODE_MESSAGE)
        if not text:
            raise ValidationError("must not be empty.")
        if len(text) > self.max_length:
            raise ValidationError(f"must be at most {self.max_length} characters.")
        if not text.isascii() or not text.isprintable() or text != text.strip():
            raise ValidationError("must be printable ASCII characters, without spaces at either end.")
        return text


class JobId(fields.UUID):
    """A job ID."""

    default_error_messages = {**MESSAGES, "invalid_uuid": "must be a job ID (a UUID)."}


class RequestSchema(Schema):
    """Base for request bodies: unknown fields are refused; null means "not given".

    ``exclusive``: fields of which exactly one must be given (the OpenAPI document says so too).
    """

    exclusive: tuple[str, ...] = ()
    multipart_files: tuple[str, ...] | None = None  # a multipart form's required files (not JSON)

    def on_bind_field(self, field_name: str, field_obj: fields.Field) -> None:
        """An optional JSON field may be null (it counts as not given): the OpenAPI document says nullable."""
        if not field_obj.required and self.multipart_files is None:
            field_obj.allow_none = True

    @pre_load
    def drop_nulls(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if value is not None}
        return data


def _webhook_url() -> HttpUrl:
    return HttpUrl(
        data_key="webhookUrl",
        load_default=None,
        metadata={"description": "URL to receive a webhook when the job completes."},
    )


def _webhook_secret() -> HeaderValue:
    return HeaderValue(
        data_key="webhookSecret",
        max_length=MAX_WEBHOOK_SECRET_LENGTH,
        load_default=None,
        metadata={
            "description": "Sent back verbatim in the webhook's X-Webhook-Secret header "
            "(unused without webhookUrl)."
        },
    )


class ImagineRequest(RequestSchema):
    """POST /v1/imagine."""

    prompt = Text(
        required=True,
        max_length=MAX_PROMPT_LENGTH,
        metadata={"description": "The text prompt to generate an image from."},
    )
    aspect_ratio = Choice(
        data_key="aspectRatio",
        load_default=IMAGINE_DEFAULTS["aspect_ratio"],
        validate=one_of(ASPECT_RATIOS),
        metadata={"description": "Aspect ratio of each image."},
    )
    version = Choice(
        load_default=IMAGINE_DEFAULTS["version"],
        validate=one_of(VERSIONS),
        metadata={"description": "Model version."},
    )
    quality = Number(
        load_default=IMAGINE_DEFAULTS["quality"],
        validate=one_of(QUALITIES),
        metadata={"description": "Quality: a tile's long side is 1024 px at 1, 728 at 0.5, 512 at 0.25."},
    )
    style = Choice(load_default=None, validate=one_of(STYLES), metadata={"description": "Style preset."})
    chaos = Number(
        load_default=IMAGINE_DEFAULTS["chaos"],
        validate=between(0, 100),
        metadata={"description": "How different the four images are."},
    )
    stylize = Number(
        load_default=IMAGINE_DEFAULTS["stylize"],
        validate=between(0, 1000),
        metadata={"description": "Stylization strength."},
    )
    webhook_url = _webhook_url()
    webhook_secret = _webhook_secret()


class DescribeRequest(RequestSchema):
    """POST /v1/describe."""

    image_url = HttpUrl(
        data_key="imageUrl", required=True, metadata={"description": "URL of the image to describe."}
    )
    webhook_url = _webhook_url()
    webhook_secret = _webhook_secret()


class PickRequest(RequestSchema):
    """POST /v1/upscale and /v1/variation: one of the four images of a finished job."""

    job_id = JobId(data_key="jobId", required=True, metadata={"description": "The ID of the succeeded job."})
    index = WholeNumber(
        required=True, validate=one_of((1, 2, 3, 4)), metadata={"description": "Which image: 1-4."}
    )
    webhook_url = _webhook_url()
    webhook_secret = _webhook_secret()


class BlendRequest(RequestSchema):
    """POST /v1/blend."""

    image_urls = fields.List(
        HttpUrl(),
        data_key="imageUrls",
        required=True,
        validate=validate.Length(min=2, max=5, error="must hold 2 to 5 image URLs."),
        error_messages={**MESSAGES, "invalid": "must be an array of image URLs."},
        metadata={"description": "Two to five URLs of the images to blend."},
    )
    dimension = Choice(
        load_default="square",
        validate=one_of(tuple(BLEND_DIMENSIONS)),
        metadata={"description": "Shape of the blended images: square 1:1, portrait 2:3, landscape 3:2."},
    )
    webhook_url = _webhook_url()
    webhook_secret = _webhook_secret()


def _parent_id(description: str, **kwargs: Any) -> JobId:
    return JobId(data_key="jobId", metadata={"description": description}, **kwargs)


class RerollRequest(RequestSchema):
    """POST /v1/reroll: a succeeded imagine or reroll job drawn again, with a new seed."""

    job_id = _parent_id("The ID of the succeeded imagine or reroll job.", required=True)
    prompt = Text(
        load_default=None,
        max_length=MAX_PROMPT_LENGTH,
        metadata={"description": "A new prompt; default: the parent's."},
    )
    aspect_ratio = Choice(
        data_key="aspectRatio",
        load_default=None,
        validate=one_of(ASPECT_RATIOS),
        metadata={"description": "A new aspect ratio; default: the parent's."},
    )
    webhook_url = _webhook_url()
    webhook_secret = _webhook_secret()


class UpscaleAltRequest(RequestSchema):
    """POST /v1/upscale-alt: an upscaled image at twice its size, subtle or creative."""

    job_id = _parent_id("The ID of the succeeded upscale job.", required=True)
    type = Choice(
        required=True,
        validate=one_of(UPSCALE_ALT_TYPES),
        metadata={"description": "subtle keeps the details; creative invents finer ones."},
    )
    webhook_url = _webhook_url()
    webhook_secret = _webhook_secret()


class UpscaleHighresRequest(RequestSchema):
    """POST /v1/upscale-highres: an image of a job, or at a URL, at 2 or 4 times its size."""

    exclusive = ("job_id", "image_url")

    job_id = _parent_id(
        "The ID of a succeeded upscale job, or of a job with four images (with index).", load_default=None
    )
    image_url = HttpUrl(
        data_key="imageUrl",
        load_default=None,
        metadata={"description": "URL of an image of at most 2048x2048 (instead of jobId)."},
    )
    type = Choice(
        required=True, validate=one_of(tuple(HIGHRES_FACTORS)), metadata={"description": "2x or 4x."}
    )
    index = WholeNumber(
        load_default=None,
        validate=one_of((1, 2, 3, 4)),
        metadata={"description": "Which image of a job with four: 1-4."},
    )
    webhook_url = _webhook_url()
    webhook_secret = _webhook_secret()

    @validates_schema
    def one_source(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Exactly one of the job and the image URL."""
        if data["job_id"] is None and data["image_url"] is None:
            raise ValidationError("is required unless an image URL is given.", "jobId")
        if data["job_id"] is not None and data["image_url"] is not None:
            raise ValidationError("must not be given with a job ID: upscale one or the other.", "imageUrl")


class SeedRequest(RequestSchema):
    """POST /v1/seed: the seed a job's images were made with (free)."""

    job_id = _parent_id("The ID of the job.", required=True)
    webhook_url = _webhook_url()
    webhook_secret = _webhook_secret()


PAN_DIRECTIONS = ("up", "down", "left", "right")
ZOOM_RATIOS = (1.0, 2.0)  # zoom out: 1.5 and 2 are the buttons, 1 makes the image square
RATIO_STRING = re.compile(r"^(1(\.[0-9]*)?|2(\.0*)?)$")  # the same range as a numeric string: "1.5", "2"
MAX_MASK_LENGTH = 4 * 1024 * 1024  # characters of a base64 mask (the body limit refuses bigger bodies first)


class Ratio(fields.Field):
    """A zoom-out ratio from 1 to 2: a JSON number, or (``strings``) a numeric string as well."""

    default_error_messages = MESSAGES

    def __init__(self, *, strings: bool = False, **kwargs: Any) -> None:
        low, high = ZOOM_RATIOS
        kinds = [{"type": "number", "minimum": low, "maximum": high}]
        if strings:
            kinds.append({"type": "string", "pattern": RATIO_STRING.pattern})
        kwargs["metadata"] = {"oneOf": kinds, **kwargs.get("metadata", {})} if strings else {
            **kinds[0], **kwargs.get("metadata", {})}
        super().__init__(**kwargs)
        self.strings = strings

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        low, high = ZOOM_RATIOS
        kind = "a number or a numeric string" if self.strings else "a number"
        if self.strings and isinstance(value, str) and RATIO_STRING.fullmatch(value):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValidationError(f"must be {kind} from {low:g} to {high:g}.")
        return float(value)


def _new_prompt(description: str) -> Text:
    return Text(load_default=None, max_length=MAX_PROMPT_LENGTH, metadata={"description": description})


class PanRequest(RequestSchema):
    """POST /v1/pan: an upscaled image's canvas extended by half in one direction."""

    job_id = _parent_id("The ID of the succeeded upscale (one image) to extend.", required=True)
    direction = Choice(
        required=True, validate=one_of(PAN_DIRECTIONS), metadata={"description": "Where to extend it."}
    )
    prompt = _new_prompt("What to paint in the new area; default: the parent's prompt.")
    webhook_url = _webhook_url()
    webhook_secret = _webhook_secret()


class ZoomRequest(RequestSchema):
    """POST /v1/zoom: zoom out of an upscaled image."""

    job_id = _parent_id("The ID of the succeeded upscale (one image) to zoom out of.", required=True)
    zoom_ratio = Ratio(
        data_key="zoomRatio",
        required=True,
        metadata={"description": "1 to 2: how far to zoom out (the buttons: 1.5 and 2); 1 makes it square."},
    )
    aspect_ratio = Choice(
        data_key="aspectRatio",
        load_default=None,
        validate=one_of(ASPECT_RATIOS),
        metadata={"description": "The new image's shape; default: the parent's (square for zoomRatio 1)."},
    )
    prompt = _new_prompt("What to paint around it; default: the parent's prompt.")
    webhook_url = _webhook_url()
    webhook_secret = _webhook_secret()


class InpaintRequest(RequestSchema):
    """POST /v1/inpaint: vary a region of an upscaled image."""

    job_id = _parent_id("The ID of the succeeded upscale (one image) to repaint.", required=True)
    mask = fields.String(
        required=True,
        validate=validate.Length(max=MAX_MASK_LENGTH, error=f"must be at most {MAX_MASK_LENGTH} characters."),
        error_messages={**MESSAGES, "invalid": "must be a base64 PNG (a string)."},
        metadata={
            "description": "A base64 PNG the image's size (a data:image/png;base64, prefix is allowed): "
            "white where to repaint, black where to keep."
        },
    )
    prompt = _new_prompt("What to paint in the region; default: the parent's prompt.")
    webhook_url = _webhook_url()
    webhook_secret = _webhook_secret()


class ShortenRequest(RequestSchema):
    """POST /v1/shorten: five shorter versions of a prompt."""

    prompt = Text(
        required=True, max_length=MAX_PROMPT_LENGTH, metadata={"description": "The prompt to shorten."}
    )
    webhook_url = _webhook_url()
    webhook_secret = _webhook_secret()


class FaceSwapRequest(RequestSchema):
    """POST /v1/faceswap: the face of one image put on the face in another."""

    target_image_url = HttpUrl(
        data_key="targetImageUrl", required=True, metadata={"description": "URL of the image to change."}
    )
    swap_image_url = HttpUrl(
        data_key="swapImageUrl", required=True, metadata={"description": "URL of the image with the face."}
    )
    webhook_url = _webhook_url()
    webhook_secret = _webhook_secret()


# ---- the original apiframe.ai API's bodies: its own fields, in the reference's spelling ----------------
# (api/original.py renames a body's original snake_case fields before these validate it)


class TileIndex(fields.Field):
    """Which image, as the original API takes it: 1-4 as a number or a string, or one of ``words``."""

    default_error_messages = MESSAGES

    def __init__(self, *, words: tuple[str, ...] = (), **kwargs: Any) -> None:
        kinds = [
            {"type": "integer", "enum": [1, 2, 3, 4]},
            {"type": "string", "enum": ["1", "2", "3", "4", *words]},
        ]
        also = f", or {' or '.join(words)} (of an upscaled image)" if words else ""
        description = f"Which image: 1-4, as a number or a string{also}."
        super().__init__(metadata={"oneOf": kinds, "description": description}, **kwargs)
        self.words = words

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int | str:
        if isinstance(value, str):
            value = value.strip()
            if value in self.words:
                return value
            if value.isascii() and value.isdigit():
                value = int(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (1, 2, 3, 4):
            raise ValidationError("must be one of: " + ", ".join(map(str, (1, 2, 3, 4, *self.words))) + ".")
        return int(value)


def _process_mode() -> Choice:
    return Choice(
        data_key="processMode",
        load_default=None,
        validate=one_of(PROCESS_MODES),
        metadata={"description": "The original API's speed: recorded; every job runs as fast as it can."},
    )


def _midjourney_aspect_ratio(description: str, default: str | None = None) -> Choice:
    return Choice(
        data_key="aspectRatio",
        load_default=default,
        validate=one_of(MIDJOURNEY_ASPECT_RATIOS),
        metadata={"description": description},
    )


class ImagineBody(ImagineRequest):
    """POST /imagine: Midjourney's common aspect ratios too."""

    aspect_ratio = _midjourney_aspect_ratio("Aspect ratio of each image.", "1:1")
    process_mode = _process_mode()


class DescribeBody(DescribeRequest):
    """POST /describe."""

    process_mode = _process_mode()


class BlendBody(BlendRequest):
    """POST /blend."""

    process_mode = _process_mode()


class UpscaleBody(PickRequest):
    """POST /upscale and /upscale-1x."""

    index = TileIndex(required=True)


class VariationBody(PickRequest):
    """POST /variation and /variations: a tile of a grid (1-4), or an upscaled image (strong or subtle)."""

    index = TileIndex(words=VARY_STRENGTHS, required=True)
    prompt = Text(
        load_default=None,
        max_length=MAX_PROMPT_LENGTH,
        metadata={"description": "A prompt for the variations; default: the parent's."},
    )
    aspect_ratio = _midjourney_aspect_ratio("Reframe the image to this aspect ratio first.")


class RerollBody(RerollRequest):
    """POST /reroll: Midjourney's common aspect ratios too."""

    aspect_ratio = _midjourney_aspect_ratio("A new aspect ratio; default: the parent's.")


class UpscaleHighresBody(UpscaleHighresRequest):
    """POST /upscale-highres."""

    index = TileIndex(load_default=None)


class ZoomBody(ZoomRequest):
    """POST /outpaint: zoom_ratio may be a numeric string."""

    zoom_ratio = Ratio(
        data_key="zoomRatio",
        strings=True,
        required=True,
        metadata={"description": "1 to 2, a number or a numeric string; 1 makes it square."},
    )
    aspect_ratio = _midjourney_aspect_ratio(
        "The new image's shape; default: the parent's (square for zoom_ratio 1)."
    )


class LegacyUpscaleBody(UpscaleBody):
    """POST /midjourney/upscale: the SDK's legacy upscale (taskId, index)."""


class LegacyVaryBody(PickRequest):
    """POST /midjourney/vary: the SDK's legacy variations (taskId, index, strength)."""

    index = TileIndex(words=VARY_STRENGTHS, required=True)
    strength = WholeNumber(
        load_default=None,
        validate=between(0, 100),
        metadata={"description": "How far the variations stray, 0 to 100 (default: 50 for a tile)."},
    )


class LegacyZoomBody(RequestSchema):
    """POST /midjourney/zoom: the SDK's legacy zoom out (taskId, zoom)."""

    job_id = _parent_id("The ID of the succeeded upscale to zoom out of.", required=True)
    zoom_ratio = Ratio(
        data_key="zoomRatio", strings=True, load_default=2.0, metadata={"description": "1 to 2; default 2."}
    )
    webhook_url = _webhook_url()
    webhook_secret = _webhook_secret()


class FetchBody(RequestSchema):
    """POST /fetch."""

    task_id = JobId(required=True)


class FetchManyBody(RequestSchema):
    """POST /fetch-many."""

    task_ids = fields.List(
        JobId(),
        required=True,
        validate=validate.Length(min=2, max=20, error="must hold 2 to 20 task IDs."),
        error_messages={**MESSAGES, "invalid": "must be an array of task IDs."},
    )


class PageCursor(fields.String):
    """Where a page of jobs starts: just after the last job of the page before (opaque to clients)."""

    default_error_messages = {**MESSAGES, "invalid": "must be the nextCursor of a page of jobs."}

    @staticmethod
    def after(job: Job) -> str:
        """The cursor of the page that follows ``job``."""
        position = f"{job.created_at.isoformat()}|{job.id}"
        return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[Any, uuid.UUID]:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            position = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            created_at, _, job_id = position.partition("|")
            after = datetime.datetime.fromisoformat(created_at), uuid.UUID(job_id)
        except (ValueError, UnicodeError):
            raise self.make_error("invalid") from None
        # ``after`` writes UTC with no offset: a time with one is no cursor of ours (PostgreSQL refuses some)
        if after[0].tzinfo is not None:
            raise self.make_error("invalid")
        return after


class JobListQuery(Schema):
    """GET /v1/jobs query string."""

    class Meta:
        unknown = EXCLUDE

    limit = QueryInteger(
        load_default=20, validate=between(1, 100), metadata={"description": "How many jobs to return."}
    )
    offset = QueryInteger(
        load_default=0, validate=between(0, MAX_OFFSET), metadata={"description": "How many to skip."}
    )
    cursor = PageCursor(
        metadata={
            "description": "The page after the one whose nextCursor this is (instead of offset); "
            "as fast at any depth."
        }
    )
    status = Choice(validate=one_of(STATUSES), metadata={"description": "Only jobs with this status."})
    type = Choice(validate=OperationName(), metadata={"description": "Only jobs of this type."})

    @validates_schema
    def cursor_or_offset(self, data: dict[str, Any], **kwargs: Any) -> None:
        """A page is found by its cursor or by its offset, not both."""
        if data.get("cursor") and data["offset"]:
            raise ValidationError("must not be given with an offset: page by one or the other.", "cursor")


def _field_message(field: str, errors: Any) -> str:
    """Turn one field's marshmallow errors into a sentence naming the field."""
    if isinstance(errors, Mapping):  # errors of list items, by position
        position, item_errors = next(iter(errors.items()))
        if isinstance(position, int):
            return f"Item {position + 1} of the '{field}' field {_first(item_errors)}"
        return _field_message(f"{field}.{position}", item_errors)
    text = _first(errors)
    if text == "Unknown field.":
        return f"'{field}' is not a known field."
    return f"The '{field}' field {text}"


def _first(errors: Any) -> str:
    if isinstance(errors, list):
        return str(errors[0])
    if isinstance(errors, Mapping):
        return _first(next(iter(errors.values())))
    return str(errors)


def load(schema: Schema, data: Any, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Validate ``data`` with ``schema``, or raise a 400 naming each bad field (as ``names`` renames it)."""
    if not isinstance(data, Mapping):
        raise validation_error("The request body must be a JSON object.")
    try:
        return schema.load(data)
    except ValidationError as exc:
        names = names or {}
        messages = {names.get(field, field): errors for field, errors in exc.normalized_messages().items()}
        sentences = [_field_message(field, errors) for field, errors in messages.items()]
        raise validation_error(" ".join(sentences), fields=messages) from None


# ---- responses -------------------------------------------------------------------------------


class Timestamp(fields.Field):
    """A UTC time as ISO 8601 with milliseconds: 2026-05-14T10:30:00.000Z."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(metadata={"type": "string", "format": "date-time"}, **kwargs)

    def _serialize(self, value: datetime.datetime | None, attr: Any, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return value.isoformat(timespec="milliseconds") + "Z"  # naive, as every stored time (UTC)


def image_urls(job: Job) -> list[str] | None:
    """The public URLs of a job's images (its four tiles, or its one image), or None."""
    if not job.tiles:
        return None
    return [storage.image_url(job.id, name) for name in job.tiles]


def _image_url(job: Job) -> str | None:
    if job.grid:
        return storage.image_url(job.id, job.grid)
    urls = image_urls(job)
    return urls[0] if urls else None


_UUID = {"type": "string", "format": "uuid"}
_URL = {"type": "string", "format": "uri"}
TOKENS = {  # shorten's [word, importance] pairs
    "type": "array",
    "items": {
        "type": "array",
        "items": {"oneOf": [{"type": "string"}, {"type": "number"}]},
        "minItems": 2,
        "maxItems": 2,
    },
}


class ResponseSchema(Schema):
    """Base for response objects: clients must accept fields added later."""

    class Meta:
        unknown = INCLUDE


class JobSchema(ResponseSchema):
    """The job object."""

    id = fields.Function(lambda job: str(job.id), metadata=_UUID)
    type = fields.String(validate=OperationName())
    status = fields.String(validate=one_of(STATUSES))
    prompt = fields.String(allow_none=True, metadata={"description": "The prompt (imagine only)."})
    progress = fields.Integer(metadata={"minimum": 0, "maximum": 100})
    imageUrl = fields.Function(
        _image_url,
        allow_none=True,
        metadata={**_URL, "description": "The 2x2 grid (imagine, variation, blend) or the upscaled image."},
    )
    imageUrls = fields.Function(
        image_urls,
        allow_none=True,
        metadata={"type": "array", "items": _URL, "description": "The four tiles ([imageUrl] for upscale)."},
    )
    error = fields.String(allow_none=True, metadata={"description": "Why the job failed or timed out."})
    createdAt = Timestamp(attribute="created_at")
    completedAt = Timestamp(attribute="completed_at", allow_none=True)
    descriptions = fields.List(
        fields.String(),
        allow_none=True,
        metadata={"description": "Describe: four prompts; shorten: five shorter prompts."},
    )
    tokens = fields.Raw(
        allow_none=True, metadata={**TOKENS, "description": "Shorten: each word and its importance, 0-1."}
    )
    parentJobId = fields.Function(
        lambda job: str(job.parent_id) if job.parent_id else None,
        allow_none=True,
        metadata={**_UUID, "description": "Jobs made from another job's image (upscale, pan ...): that job."},
    )
    direction = fields.Function(
        lambda job: (job.params or {}).get("direction"),
        allow_none=True,
        metadata={"type": "string", "enum": list(PAN_DIRECTIONS), "description": "Pan only: the direction."},
    )
    zoomRatio = fields.Function(
        lambda job: (job.params or {}).get("zoom_ratio"),
        allow_none=True,
        metadata={"type": "number", "description": "Zoom only: how far it zoomed out (1: made square)."},
    )
    index = fields.Integer(allow_none=True, metadata={"description": "Upscale and variation: image 1-4."})
    seed = fields.Integer(
        allow_none=True, metadata={"description": "The seed the images were made with (grids and seed jobs)."}
    )
    webhookStatus = fields.String(
        attribute="webhook_status",
        allow_none=True,
        validate=one_of(WEBHOOK_STATUSES),
        metadata={"description": "Where the job's webhook delivery stands; null without webhookUrl."},
    )
    webhookAttempts = fields.Integer(
        attribute="webhook_attempts", metadata={"description": "How many deliveries were tried."}
    )
    queuePosition = fields.Function(
        queue_position,
        allow_none=True,
        metadata={"type": "integer", "minimum": 1, "description": "Waiting jobs: 1 runs next; else null."},
    )


class WebhookAttemptSchema(ResponseSchema):
    """One attempt at delivering a job's webhook."""

    attempt = fields.Integer(attribute="number")
    at = Timestamp()
    statusCode = fields.Integer(attribute="status_code", allow_none=True)
    error = fields.String(allow_none=True)
    durationMs = fields.Integer(attribute="duration_ms")


class WebhookReportSchema(ResponseSchema):
    """GET /v1/jobs/:id/webhooks: a job's webhook delivery and its attempts, oldest first."""

    url = fields.String(allow_none=True)
    status = fields.String(allow_none=True, validate=one_of(WEBHOOK_STATUSES))
    webhookId = fields.String(attribute="webhook_id", allow_none=True)
    event = fields.String(
        allow_none=True,
        metadata={"description": "The event sent, e.g. job.succeeded; null for jobs of the original API."},
    )
    attempts = fields.List(fields.Nested(WebhookAttemptSchema))
    nextAttemptAt = Timestamp(attribute="next_attempt_at", allow_none=True)


class CreditsSchema(ResponseSchema):
    """An account's credits: what is left, and all ever granted."""

    remaining = fields.Integer(attribute="balance")
    total = fields.Integer(attribute="granted")


class AccountSchema(ResponseSchema):
    """The account object."""

    name = fields.String()
    email = fields.String()
    plan = fields.String(validate=one_of(tuple(PLANS)))
    credits = fields.Nested(CreditsSchema)

    def get_attribute(self, obj: Any, attr: str, default: Any) -> Any:
        if attr == "credits":  # the credits object is made of the account's own columns
            return obj
        return super().get_attribute(obj, attr, default)


# ---- envelopes: what each endpoint answers (used by the OpenAPI document) ----------------------


class JobEnvelope(ResponseSchema):
    """A job, under ``job``."""

    success = fields.Boolean(metadata={"enum": [True]})
    job = fields.Nested(JobSchema)


class FetchEnvelope(ResponseSchema):
    """A job, under ``data`` (the /fetch compatibility aliases)."""

    success = fields.Boolean(metadata={"enum": [True]})
    data = fields.Nested(JobSchema)


class Pagination(ResponseSchema):
    """Where a page of jobs sits in the whole list."""

    limit = fields.Integer()
    offset = fields.Integer()
    hasMore = fields.Boolean(metadata={"description": "Whether more jobs follow this page."})


class JobListEnvelope(ResponseSchema):
    """A page of jobs, newest first."""

    success = fields.Boolean(metadata={"enum": [True]})
    jobs = fields.List(fields.Nested(JobSchema))
    pagination = fields.Nested(Pagination)
    nextCursor = fields.String(
        allow_none=True,
        metadata={"description": "Pass as cursor for the next page (fast at any depth); null on the last."},
    )


class WebhookReportEnvelope(ResponseSchema):
    """A job's webhook report, under ``webhooks``."""

    success = fields.Boolean(metadata={"enum": [True]})
    webhooks = fields.Nested(WebhookReportSchema)


class AccountEnvelope(ResponseSchema):
    """The account, under ``account``."""

    success = fields.Boolean(metadata={"enum": [True]})
    account = fields.Nested(AccountSchema)


class ErrorSchema(ResponseSchema):
    """What went wrong: a machine-readable code and a sentence for people."""

    code = fields.String(validate=one_of(tuple(ERROR_CODES)))
    message = fields.String()
    field_errors = fields.Dict(
        data_key="fields",
        keys=fields.String(),
        metadata={"description": "VALIDATION_ERROR only: each bad field and its messages."},
    )


class ErrorEnvelope(ResponseSchema):
    """Every failure: ``{"success": false, "error": {...}}``."""

    success = fields.Boolean(metadata={"enum": [False]})
    error = fields.Nested(ErrorSchema)


class ModelDump:
    """``schema.dump`` of a model, with each field's reader worked out once.

    marshmallow reads each field's value through its generic accessor (mappings, dotted names, defaults)
    on every dump, and the job object is on the path of every create and in every list page. A model's
    fields are its attributes, so here the reader is ``getattr``; each field's formatting is still the
    field's own. For schemas with no hooks, no dump defaults and no dotted attributes, dumping objects
    that have every attribute they name (tests/test_jobs.py compares it with marshmallow's dump).
    """

    def __init__(self, schema: Schema) -> None:
        if any(schema._hooks.values()):
            raise TypeError(f"{type(schema).__name__} has hooks, which ModelDump would not run")
        self.plan = []
        for name, field in schema.dump_fields.items():
            attribute = (field.attribute or name) if field._CHECK_ATTRIBUTE else None
            if field.dump_default is not missing or "." in (attribute or ""):
                raise TypeError(f"{type(schema).__name__}.{name}: a default or a dotted name")
            self.plan.append((field.data_key or name, attribute, field._serialize))

    def __call__(self, model: Any) -> dict[str, Any]:
        return {
            key: serialize(None if attribute is None else getattr(model, attribute), attribute, model)
            for key, attribute, serialize in self.plan
        }


_job_dump = ModelDump(JobSchema())
_account_schema = AccountSchema()
_webhook_report_schema = WebhookReportSchema()


def dump_job(job: Job) -> dict[str, Any]:
    """The job object for ``job``."""
    return _job_dump(job)


def dump_jobs(jobs: list[Job]) -> list[dict[str, Any]]:
    """Job objects for ``jobs``."""
    return [_job_dump(job) for job in jobs]


def dump_account(account: Account) -> dict[str, Any]:
    """The account object for ``account``."""
    return _account_schema.dump(account)


def dump_webhook_report(report: Any) -> dict[str, Any]:
    """The webhooks object for a job's ``webhooks.Report``."""
    return _webhook_report_schema.dump(report)
