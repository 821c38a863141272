"""The original apiframe.ai API on this service: its request bodies, answers, task objects and errors.

Its clients authenticate with ``Authorization`` (auth.py reads it), send snake_case bodies, get
``{"task_id"}`` back and poll with ``POST /fetch``. Its routes live on the api blueprint beside the
reference's (so keys, rate limits and their headers apply alike); this module translates their
bodies into the validated data ``jobs.create`` takes, so both APIs share one path from request to
job, and renders jobs as the original's task objects. Five paths belong to both APIs: they take
either spelling and answer in both shapes at once.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, has_request_context, jsonify, request
from marshmallow import Schema, ValidationError, fields, post_dump, validate
from peewee import Case, fn

import errors
import schemas
import storage
from errors import ApiError, validation_error
from imaging import ASPECT_RATIOS
from jobs import (
    ACTIVE,
    CANCELLED,
    FAILED,
    GRID_TYPES,
    ORIGINAL,
    PENDING,
    PROCESS_MODES,
    PROCESSING,
    QUEUED,
    REFERENCE,
    REFUNDED,
    SUCCEEDED,
    TIMED_OUT,
    UPSCALE_TYPES,
    VARY_STRENGTHS,
)
from models import Account, Job

# Paths of both APIs: the reference's compatibility aliases that are also original endpoints.
SHARED_PATHS = frozenset({"/imagine", "/describe", "/upscale", "/blend", "/variation"})
ORIGINAL_ONLY_PATHS = frozenset(
    {
        "/upscale-1x",
        "/variations",
        "/reroll",
        "/upscale-alt",
        "/upscale-highres",
        "/seed",
        "/fetch",
        "/fetch-many",
        "/account",
    }
)
ORIGINAL_PATHS = SHARED_PATHS | ORIGINAL_ONLY_PATHS

# A job's status as the original API names it; every unsuccessful end is "failed", with a message.
TASK_STATUSES = {
    PENDING: "pending",
    QUEUED: "staged",
    PROCESSING: "processing",
    SUCCEEDED: "finished",
    FAILED: "failed",
    TIMED_OUT: "failed",
    CANCELLED: "failed",
}
FAILURE_MESSAGES = {
    FAILED: "The job failed.",
    TIMED_OUT: "The job timed out.",
    CANCELLED: "The job was cancelled.",
}

_UUID = {"type": "string", "format": "uuid"}  # OpenAPI formats of response fields
_URL = {"type": "string", "format": "uri"}


def is_original_route() -> bool:
    """Whether the request came in on a route of the original API (the shared paths included)."""
    return has_request_context() and request.path in ORIGINAL_PATHS


# ---- requests --------------------------------------------------------------------------------


class TileIndex(fields.Field):
    """Which image, as the original API takes it: 1-4 as a number or a string, or one of ``words``."""

    default_error_messages = schemas.MESSAGES

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


def _process_mode() -> schemas.Choice:
    return schemas.Choice(
        data_key="processMode",
        load_default=None,
        validate=schemas.one_of(PROCESS_MODES),
        metadata={"description": "The original API's speed: recorded; every job runs as fast as it can."},
    )


class ImagineBody(schemas.ImagineRequest):
    """POST /imagine."""

    process_mode = _process_mode()


class DescribeBody(schemas.DescribeRequest):
    """POST /describe."""

    process_mode = _process_mode()


class BlendBody(schemas.BlendRequest):
    """POST /blend."""

    process_mode = _process_mode()


class UpscaleBody(schemas.PickRequest):
    """POST /upscale and /upscale-1x."""

    index = TileIndex(required=True)


class VariationBody(schemas.PickRequest):
    """POST /variation and /variations: a tile of a grid (1-4), or an upscaled image (strong or subtle)."""

    index = TileIndex(words=tuple(VARY_STRENGTHS), required=True)
    prompt = schemas.Text(
        load_default=None,
        max_length=schemas.MAX_PROMPT_LENGTH,
        metadata={"description": "A prompt for the variations; default: the parent's."},
    )
    aspect_ratio = schemas.Choice(
        data_key="aspectRatio",
        load_default=None,
        validate=schemas.one_of(ASPECT_RATIOS),
        metadata={"description": "Reframe the image to this aspect ratio first."},
    )


class UpscaleHighresBody(schemas.UpscaleHighresRequest):
    """POST /upscale-highres."""

    index = TileIndex(load_default=None)


class FetchBody(schemas.RequestSchema):
    """POST /fetch."""

    task_id = schemas.JobId(required=True)


class FetchManyBody(schemas.RequestSchema):
    """POST /fetch-many."""

    task_ids = fields.List(
        schemas.JobId(),
        required=True,
        validate=validate.Length(min=2, max=20, error="must hold 2 to 20 task IDs."),
        error_messages={**schemas.MESSAGES, "invalid": "must be an array of task IDs."},
    )


_WEBHOOK = {"webhook_url": "webhookUrl", "webhook_secret": "webhookSecret"}
_PARENT = {"parent_task_id": "jobId"}
_ASPECT = {"aspect_ratio": "aspectRatio"}
_MODE = {"process_mode": "processMode"}

# Each operation's body on the original routes, and its fields' original (snake_case) spellings
# mapped to the reference's, which the schemas use.
BODIES: dict[str, tuple[Schema, dict[str, str]]] = {
    "imagine": (ImagineBody(), {**_ASPECT, **_MODE, **_WEBHOOK}),
    "describe": (DescribeBody(), {"image_url": "imageUrl", **_MODE, **_WEBHOOK}),
    "blend": (BlendBody(), {"image_urls": "imageUrls", **_MODE, **_WEBHOOK}),
    "upscale": (UpscaleBody(), {**_PARENT, **_WEBHOOK}),
    "variation": (VariationBody(), {**_PARENT, **_ASPECT, **_WEBHOOK}),
    "reroll": (schemas.RerollRequest(), {**_PARENT, **_ASPECT, **_WEBHOOK}),
    "upscale-alt": (schemas.UpscaleAltRequest(), {**_PARENT, **_WEBHOOK}),
    "upscale-highres": (UpscaleHighresBody(), {**_PARENT, "image_url": "imageUrl", **_WEBHOOK}),
    "seed": (schemas.SeedRequest(), {"task_id": "jobId", **_WEBHOOK}),
}
FETCH = FetchBody()
FETCH_MANY = FetchManyBody()


def _originals(spellings: Mapping[str, str]) -> dict[str, str]:
    """The original spelling of each field, by its reference name."""
    return {camel: snake for snake, camel in spellings.items()}


def original_spelling(operation: str) -> type[Schema]:
    """``operation``'s body schema with the field names original clients send (for the OpenAPI document)."""
    schema, spellings = BODIES[operation]
    original = _originals(spellings)
    respelled = {}
    for name, field in schema.fields.items():
        respelled[name] = copy.copy(field)
        respelled[name].data_key = original.get(field.data_key or name, field.data_key)
    return type(f"Original{type(schema).__name__}", (type(schema),), respelled)


def unify(
    body: Mapping[str, Any], spellings: Mapping[str, str], original: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """The body with original spellings renamed to the reference's, and the field names to use in errors."""
    # Nulls count as not given; both spellings of one field with different values are a 400. Errors
    # name a field as the client spelled it, or, if it was not sent, as ``original`` clients spell it.
    unified: dict[str, Any] = {}
    names = _originals(spellings) if original else {}
    for key, value in body.items():
        if value is None:
            continue
        field = spellings.get(key, key)
        if field in unified and unified[field] != value:
            raise validation_error(
                f"The '{names[field]}' and '{key}' fields are two spellings of one field, "
                "with different values; give one."
            )
        unified[field], names[field] = value, key
    return unified, names


def load(operation: str, body: Any) -> tuple[dict[str, Any], str]:
    """Validate an original route's body: the data ``jobs.create`` takes, and the job's origin."""
    schema, spellings = BODIES[operation]
    if not isinstance(body, Mapping):
        return schemas.load(schema, body), ORIGINAL  # schemas.load refuses anything but a JSON object
    # On the shared paths a body with any original spelling comes from an original client, and its
    # job sends the original API's webhook; a body with none is the reference's.
    original = request.path not in SHARED_PATHS or any(
        key in spellings and value is not None for key, value in body.items()
    )
    unified, names = unify(body, spellings, original)
    return schemas.load(schema, unified, names=names), ORIGINAL if original else REFERENCE


def accepted(job: Job) -> tuple[Response, int]:
    """The answer to an original route that made ``job``: its task_id (shared paths: and the reference's)."""
    if request.path in SHARED_PATHS:
        return jsonify(success=True, job=schemas.dump_job(job), task_id=str(job.id)), 202
    return jsonify(task_id=str(job.id)), 200


# ---- task objects ----------------------------------------------------------------------------


def task_type(job: Job) -> str:
    """The original API's name for a job's type: ``upscale#2``, ``upscale-creative``, ``imagine``..."""
    if job.type == "upscale":
        return f"upscale#{job.index}"
    if job.type == "upscale-alt":
        return f"upscale-{job.params['type']}"
    return job.type


def _made(job: Job, types: tuple[str, ...]) -> bool:
    return job.status == SUCCEEDED and job.type in types


def _grid_url(job: Job) -> str | None:
    return storage.image_url(job.id, job.grid) if _made(job, GRID_TYPES) else None


def _tile_urls(job: Job) -> list[str] | None:
    return schemas.image_urls(job) if _made(job, GRID_TYPES) else None


def _image_url(job: Job) -> str | None:
    if _made(job, UPSCALE_TYPES):
        return schemas.image_urls(job)[0]
    return job.params["imageUrl"] if _made(job, ("describe",)) else None


def _message(job: Job) -> str | None:
    return (job.error or FAILURE_MESSAGES[job.status]) if job.status in REFUNDED else None


class TaskSchema(schemas.ResponseSchema):
    """The task object: a job as the original API shows it. What a task lacks is left out, not null."""

    task_id = fields.Function(lambda job: str(job.id), metadata=_UUID)
    task_type = fields.Function(
        task_type,
        metadata={
            "type": "string",
            "description": "imagine, reroll, variation, blend, describe, seed, upscale#1 to upscale#4, "
            "upscale-subtle, upscale-creative or upscale-highres.",
        },
    )
    status = fields.Function(
        lambda job: TASK_STATUSES[job.status],
        metadata={"type": "string", "enum": list(dict.fromkeys(TASK_STATUSES.values()))},
    )
    percentage = fields.Function(
        lambda job: str(job.progress) if job.status in ACTIVE else None,
        metadata={"type": "string", "description": 'Progress, "0" to "99", until the task ends.'},
    )
    original_image_url = fields.Function(_grid_url, metadata={**_URL, "description": "The 2x2 grid."})
    image_urls = fields.Function(
        _tile_urls, metadata={"type": "array", "items": _URL, "description": "The grid's four images."}
    )
    image_url = fields.Function(
        _image_url, metadata={**_URL, "description": "An upscale's image; for describe, the image described."}
    )
    content = fields.Function(
        lambda job: job.descriptions if _made(job, ("describe",)) else None,
        metadata={"type": "array", "items": {"type": "string"}, "description": "Describe's four prompts."},
    )
    seed = fields.Function(
        lambda job: None if job.seed is None else str(job.seed),
        metadata={"type": "string", "description": "The seed the images were made with, when known."},
    )
    message = fields.Function(_message, metadata={"type": "string", "description": "Why the task failed."})

    @post_dump
    def leave_out_nulls(self, task: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Drop the fields this task does not have."""
        return {key: value for key, value in task.items() if value is not None}


class TaskCreated(schemas.ResponseSchema):
    """What an original route answers when it accepts a job."""

    task_id = fields.String(metadata=_UUID)


class SharedJobEnvelope(schemas.JobEnvelope):
    """What the paths of both APIs answer: the reference's job envelope, plus the original's task_id."""

    task_id = fields.String(metadata=_UUID)


class TaskList(schemas.ResponseSchema):
    """POST /fetch-many: tasks in the order asked (an id without a task: task_id, error, message)."""

    tasks = fields.List(fields.Nested(TaskSchema))


class AccountInfo(schemas.ResponseSchema):
    """GET /account: the account as the original API shows it (a self-hosted service bills nobody)."""

    email = fields.String()
    credits = fields.Integer(attribute="balance", metadata={"description": "The credits left."})
    plan = fields.String()
    total_images = fields.Function(
        lambda account: total_images(account),
        metadata={"type": "integer", "description": "Images of succeeded jobs: 4 per grid, 1 per upscale."},
    )
    next_billing_date = fields.Constant(None, metadata={"type": "string", "nullable": True})


_task_schema = TaskSchema()
_account_info = AccountInfo()


def task_object(job: Job) -> dict[str, Any]:
    """A job as the original API shows a task: from POST /fetch, /fetch-many and its webhooks."""
    return _task_schema.dump(job)


def tasks(account: Account, task_ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    """The account's tasks in the order asked; an id it has no task for gets an entry saying so."""
    found = {job.id: job for job in Job.select().where((Job.account == account.id) & Job.id.in_(task_ids))}
    return [task_object(found[task_id]) if task_id in found else _missing(task_id) for task_id in task_ids]


def _missing(task_id: uuid.UUID) -> dict[str, Any]:
    return {"task_id": str(task_id), "error": "NOT_FOUND", "message": f"Task {task_id} was not found."}


def account_object(account: Account) -> dict[str, Any]:
    """The account as the original API's GET /account shows it."""
    return _account_info.dump(account)


def total_images(account: Account) -> int:
    """Images the account's succeeded jobs made: four per grid, one per upscale."""
    images = Case(None, ((Job.type.in_(GRID_TYPES), 4), (Job.type.in_(UPSCALE_TYPES), 1)), 0)
    query = Job.select(fn.COALESCE(fn.SUM(images), 0)).where(
        (Job.account == account.id) & (Job.status == SUCCEEDED)
    )
    return int(query.scalar())


# ---- errors ----------------------------------------------------------------------------------


def add_original_error_fields(body: dict[str, Any], error: ApiError) -> None:
    """On original routes, add what its clients read to an error: ``message``, ``code`` and ``errors``."""
    if is_original_route():
        body.update(message=error.message, code=error.code, errors=[{"msg": error.message}])


def init_app(app: Flask) -> None:
    """Give the original routes' errors the fields their clients read."""
    if add_original_error_fields not in errors.body_hooks:
        errors.body_hooks.append(add_original_error_fields)
