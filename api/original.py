"""The original apiframe.ai API: its routes, request bodies, task objects and errors.

Its clients authenticate with ``Authorization`` (auth.py reads it), send snake_case bodies, get
``{"task_id"}`` back and poll with ``POST /fetch``. Each operation whose registry entry has an
``original`` part gets its routes here; this module renames the body's original spellings to the
reference's and validates it with the entry's body schema, so both APIs share one path from request
to job, and renders jobs as the original's task objects. The shared paths belong to both APIs: they
take either spelling and answer in both shapes at once.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, request
from marshmallow import Schema, fields, post_dump

import auth
import errors
import events
import jobs
import operations
import ratelimit
import schemas
import storage
import webhooks
from api import answers
from api.body import json_body
from errors import ApiError, validation_error
from idempotency import idempotent
from imaging import ASPECT_RATIOS
from jobs import (
    ACTIVE,
    CANCELLED,
    FAILED,
    ORIGINAL,
    PENDING,
    PROCESSING,
    QUEUED,
    REFERENCE,
    REFUNDED,
    SUCCEEDED,
    TIMED_OUT,
)
from models import Account, Job
from operations import GRID, IMAGE, TEXT, Operation, Route

FAMILY = ORIGINAL
bp = Blueprint("original", __name__)

# Where this service's other parts live. A path outside them that no route has is one the original API may
# have (its video endpoints, other models', newer ones), so its 404 comes in this family's error shape.
OTHER_PATHS = ("/v1/", "/console", "/images/", "/static/")

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


# ---- requests --------------------------------------------------------------------------------


def _originals(spellings: Mapping[str, str]) -> dict[str, str]:
    """The original spelling of each field, by its reference name."""
    return {camel: snake for snake, camel in spellings.items()}


def original_spelling(operation: Operation, route: Route | None = None) -> type[Schema]:
    """The body schema (``route``'s, if given) with the field names original clients send (for the docs)."""
    spelled = route or operation.original
    body, original = spelled.body, _originals(spelled.spellings)
    respelled = {}
    for name, field in body._declared_fields.items():
        respelled[name] = copy.copy(field)
        respelled[name].data_key = original.get(field.data_key or name, field.data_key)
    return type(f"Original{body.__name__}", (body,), respelled)


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


_bodies: dict[type[Schema], Schema] = {}


def load(operation: Operation, body: Any, route: Route | None = None) -> tuple[dict[str, Any], str]:
    """Validate an original route's body (or ``route``'s): the data ``jobs.create`` takes, and the origin."""
    shared = request.endpoint == f"{request.blueprint}.{shared_endpoint(operation)}"
    spelled = route or operation.original
    schema, spellings = _bodies.setdefault(spelled.body, spelled.body()), spelled.spellings
    if not isinstance(body, Mapping):
        return schemas.load(schema, body), ORIGINAL  # schemas.load refuses anything but a JSON object
    # On the shared paths a body with any original spelling comes from an original client, and its
    # job sends the original API's webhook; a body with none is the reference's.
    original = not shared or any(key in spellings and value is not None for key, value in body.items())
    unified, names = unify(body, spellings, original)
    data = schemas.load(schema, unified, names=names)
    if not original:
        _reference_aspect_ratio(data)
    return data, ORIGINAL if original else REFERENCE


def _reference_aspect_ratio(data: Mapping[str, Any]) -> None:
    """A reference body on a shared path takes the reference's aspect ratios, as on /v1 (the original
    API's bodies take Midjourney's wider choice)."""
    ratio = data.get("aspect_ratio")
    if ratio is not None and ratio not in ASPECT_RATIOS:
        error = schemas.one_of(ASPECT_RATIOS).error
        raise validation_error(f"The 'aspectRatio' field {error}", {"aspectRatio": [error]})


def create_view(
    operation: Operation, *, shared: bool, route: Route | None = None
) -> Callable[[], tuple[Response, int]]:
    """``operation``'s view on original routes (``shared``: paths of both APIs; ``route``: another one)."""

    def create() -> tuple[Response, int]:
        data, origin = load(operation, json_body(), route)
        job = jobs.create(g.account, operation, data, origin=origin)
        if shared:
            return jsonify(success=True, job=schemas.dump_job(job), task_id=str(job.id)), 202
        return jsonify(task_id=str(job.id)), 200

    if route is not None:
        create.__name__ = route_endpoint(operation, route)
        create.__doc__ = (route.summary or operation.summary) + "."
    else:
        create.__name__ = shared_endpoint(operation) if shared else operation.endpoint
        create.__doc__ = (operation.original.summary or operation.summary) + "."
    return ratelimit.creates(idempotent(create))


def route_endpoint(operation: Operation, route: Route) -> str:
    """The endpoint of one of ``operation``'s other original routes."""
    return f"{operation.endpoint}_{route.endpoint}"


def shared_endpoint(operation: Operation) -> str:
    """The endpoint of ``operation`` on the paths both APIs have."""
    return f"{operation.endpoint}_shared"


for _operation in operations.OPERATIONS:
    if _operation.original is None:
        continue
    for _shared, _paths in ((False, _operation.original.paths), (True, _operation.original.shared)):
        if _paths:
            _view = create_view(_operation, shared=_shared)
            for _path in _paths:
                bp.add_url_rule(_path, _view.__name__, _view, methods=["POST"])
    for _route in _operation.original.routes:
        _view = create_view(_operation, shared=False, route=_route)
        bp.add_url_rule(_route.path, _view.__name__, _view, methods=["POST"])


@bp.post("/fetch")
def fetch_task() -> Response:
    """A task as the original API shows it."""
    task_id = schemas.load(FETCH, json_body())["task_id"]
    return answers.job(g.account, task_id, task_object)


@bp.post("/fetch-many")
def fetch_tasks() -> Response:
    """2 to 20 tasks as the original API shows them."""
    task_ids = schemas.load(FETCH_MANY, json_body())["task_ids"]
    return jsonify(tasks=tasks(g.account, task_ids))


@bp.get("/tasks/<task_id>/events")
def task_events(task_id: str) -> Response:
    """A task's status and percentage as server-sent events, then the finished task object."""
    job = jobs.find(g.account, jobs.parse_id(task_id, "task_id"))
    key, last_event_id = ratelimit.api_key_identity(), request.headers.get("Last-Event-ID")
    return events.respond(key, [job], EVENTS, last_event_id, allowed=auth.liveness(g.api_key))


@bp.get("/account")
def account_info() -> Response:
    """The caller's account as the original API shows it."""
    return jsonify(account_object(auth.current_account()))


FETCH = schemas.FetchBody()
FETCH_MANY = schemas.FetchManyBody()


# ---- task objects ----------------------------------------------------------------------------


def task_type(job: Job) -> str:
    """The original API's name for a job's type: ``upscale#2``, ``upscale-creative``, ``imagine``..."""
    operation = operations.REGISTRY.get(job.type)
    if operation and operation.original and operation.original.task_type:
        return operation.original.task_type(job)
    return job.type


def _made(job: Job, kind: str) -> bool:
    return job.status == SUCCEEDED and operations.result_of(job.type) == kind


def _grid_url(job: Job) -> str | None:
    return storage.image_url(job.id, job.grid) if _made(job, GRID) else None


def _tile_urls(job: Job) -> list[str] | None:
    return schemas.image_urls(job) if _made(job, GRID) else None


def _image_url(job: Job) -> str | None:
    if _made(job, IMAGE):
        return schemas.image_urls(job)[0]
    return (job.params or {}).get("image_url") if _made(job, TEXT) else None


def _content(job: Job) -> list[str] | None:
    """Describe's or shorten's prompts as apiframe.ai numbers them: "1️⃣ a red fox …", "2️⃣ …"."""
    if not _made(job, TEXT) or job.descriptions is None:
        return None
    return [f"{number}\ufe0f\u20e3 {text}" for number, text in enumerate(job.descriptions, 1)]


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
            "upscale-subtle, upscale-creative, upscale-highres, pan-up (-down, -left, -right), "
            "outpaint-<zoom ratio>, inpaint, shorten or faceswap.",
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
    queue_position = fields.Function(
        jobs.queue_position,
        metadata={"type": "integer", "minimum": 1, "description": "While the task waits: 1 runs next."},
    )
    original_image_url = fields.Function(_grid_url, metadata={**_URL, "description": "The 2x2 grid."})
    image_urls = fields.Function(
        _tile_urls, metadata={"type": "array", "items": _URL, "description": "The grid's four images."}
    )
    image_url = fields.Function(
        _image_url, metadata={**_URL, "description": "An upscale's image; for describe, the image described."}
    )
    content = fields.Function(
        _content,
        metadata={
            "type": "array",
            "items": {"type": "string"},
            "description": "Describe's four prompts, or shorten's five shorter prompts, each numbered "
            '"1️⃣ ", "2️⃣ " and so on.',
        },
    )
    tokens = fields.Function(
        lambda job: job.tokens if _made(job, TEXT) else None,
        metadata={**schemas.TOKENS, "description": "Shorten: each word of the prompt and its importance."},
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
    total_images = fields.Integer(
        attribute="images",
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


def _progress_event(job_id: uuid.UUID, state: events.State) -> dict[str, Any]:
    data: dict[str, Any] = {"task_id": str(job_id), "percentage": str(state.progress)}
    if state.queue_position is not None:
        data["queue_position"] = state.queue_position
    if state.eta_seconds is not None:
        data["eta_seconds"] = state.eta_seconds
    return data


EVENTS = events.Renderer(
    status=lambda job_id, state: {"task_id": str(job_id), "status": TASK_STATUSES[state.status]},
    progress=_progress_event,
    done=task_object,
)


def account_object(account: Account) -> dict[str, Any]:
    """The account as the original API's GET /account shows it."""
    return _account_info.dump(account)


# ---- errors and webhooks --------------------------------------------------------------------------


def error_body(error: ApiError) -> dict[str, Any]:
    """An error as original clients read it: the reference's body, plus ``message``, ``code``, ``errors``."""
    return {**error.body(), "message": error.message, "code": error.code, "errors": [{"msg": error.message}]}


def webhook_body(job: Job) -> tuple[None, dict[str, Any]]:
    """An original job's webhook: the task object of POST /fetch, which names no event."""
    return None, task_object(job)


def init_app(app: Flask, blueprint: str) -> None:
    """Render errors on ``blueprint`` (this family's, as registered) and on the original API's unknown paths,
    and webhooks, as this API does."""
    errors.render_for(app, blueprint, error_body)
    errors.render_unrouted(app, lambda path: not path.startswith(OTHER_PATHS), error_body)
    webhooks.render_for(app, FAMILY, webhook_body)
