"""The OpenAPI 3 document of the API: paths from the app's URL map, schemas from schemas.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema

import api
import idempotency
import operations
import schemas
from api import openai, original, reference
from errors import ERROR_CODES

API_BLUEPRINT = api.bp.name
EXTENSION = "apiframe.openapi"
SECURITY_SCHEME = "ApiKeyAuth"
# The key may also come as the original apiframe.ai API's clients send it: any one of these will do.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    SECURITY_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "Your key: ak_live_…",
    },
    "BearerAuth": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer ak_live_…"},
    "AuthorizationKey": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "Authorization: ak_live_… (the original apiframe.ai API's form)",
    },
}
SECURITY = [{name: []} for name in SECURITY_SCHEMES]
IGNORED_METHODS = {"HEAD", "OPTIONS"}
ORIGINAL_TAG = "apiframe.ai API"

CREATE_ERRORS = (400, 401, 402, 409, 413, 422, 429, 500)  # 409, 422: an Idempotency-Key in use or reused
PICK_ERRORS = (400, 401, 402, 404, 409, 413, 422, 429, 500)
IDEMPOTENCY_KEY = {
    "name": idempotency.HEADER,
    "in": "header",
    "required": False,
    "description": "Retry safely: the same key and request within 24 hours gets the first answer again "
    "(marked Idempotent-Replayed: true), with no second job and no second charge.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        "pattern": "^[ -~]+$",
    },
}
JOB_ERRORS = (400, 401, 404, 429, 500)
READ_ERRORS = (401, 429, 500)


@dataclass(frozen=True)
class Operation:
    """How one API endpoint is documented: its words, what it takes and what it answers."""

    summary: str
    description: str
    tag: str
    response: type[Schema] | None
    status: int = 200
    request: type[Schema] | None = None
    query: type[Schema] | None = None
    errors: tuple[int, ...] = READ_ERRORS
    content: str = "application/json"  # the request body's media type
    error_format: str = "Error"  # the components its error responses use: ErrorNNN, or OpenAIErrorNNN
    media_type: str = "application/json"  # what a success answers with
    streams: bool = False  # with "stream": true, a success answers text/event-stream (described in the text)


def _costs(operation: operations.Operation) -> str:
    if not operation.cost:
        return "Free."
    return f"Costs {operation.cost} credits, taken when the job is accepted, refunded if it does not succeed."


def _creates(operation: operations.Operation) -> Operation:
    """How the /v1 route (and the aliases) of a registry operation is documented."""
    return Operation(
        operation.summary,
        f"{operation.description} {_costs(operation)}",
        "Jobs",
        schemas.JobEnvelope,
        status=202,
        request=operation.request,
        errors=PICK_ERRORS if operation.parents else CREATE_ERRORS,
    )


def _original(operation: operations.Operation) -> Operation:
    """The original API's own route of an operation: its field names, answering with the task_id."""
    return replace(
        _creates(operation),
        summary=f"{operation.original.summary or operation.summary} (the original apiframe.ai API)",
        tag=ORIGINAL_TAG,
        response=original.TaskCreated,
        status=200,
        request=original.original_spelling(operation),
    )


def _route(operation: operations.Operation, route: operations.Route) -> Operation:
    """One of an operation's other original routes (the SDK's legacy ones): its own body and spellings."""
    return replace(
        _original(operation),
        summary=f"{route.summary or operation.summary} (the original apiframe.ai API)",
        request=original.original_spelling(operation, route),
    )


def _shared(operation: operations.Operation) -> Operation:
    """A path of both APIs: the reference's body and answer, plus the original's spelling and task_id."""
    return replace(
        _creates(operation),
        description=_creates(operation).description + SHARED_NOTE,
        response=original.SharedJobEnvelope,
    )


SHARED_NOTE = (
    " This path is also the original apiframe.ai API's: it takes that API's snake_case field names too "
    "(aspect_ratio, parent_task_id, image_url(s), webhook_url, webhook_secret, process_mode; an index as "
    '"1"-"4"), and adds its task_id to the answer.'
)

EVENTS_DESCRIPTION = (
    "text/event-stream: a `status` event {status} on every change of status; `progress` events {progress} "
    "while the job waits or runs (queue position and seconds left when known); then one `done` event with "
    "{done}, and the stream closes. A job that has ended gets `done` at once. A comment line every 15 s "
    "keeps the connection open. Every event has an id: reconnect with Last-Event-ID to get only what changed "
    "since. Counts once against the key's reads; by default a key holds at most 8 streams at once and a "
    "server process 32 (429 RATE_LIMITED with Retry-After beyond that)."
)

REFERENCE = f"{api.bp.name}.{reference.bp.name}."  # endpoint prefixes of the families
ORIGINAL = f"{api.bp.name}.{original.bp.name}."
OPENAI = f"{api.bp.name}.{openai.bp.name}."
OPENAI_TAG = "OpenAI Images API"
OPENAI_NOTE = (
    " Answers when the images are ready (at most APIFRAME_SYNC_WAIT seconds, else 504); n images take "
    "ceil(n/4) jobs, billed as such; 503 when every waiting slot is taken. Errors come in OpenAI's shape, "
    '{"error": {"message", "type", "param", "code"}}; too few credits is 429 insufficient_quota.'
)
# Generations and edits: with "stream": true, the answer is server-sent events (``{events}``: image_generation
# or image_edit).
OPENAI_STREAM_NOTE = (
    ' With "stream": true, the answer is text/event-stream, as OpenAI\'s streaming: a comment line now and '
    "every APIFRAME_EVENT_HEARTBEAT seconds while the jobs run, then an event {events}.completed for each "
    "image, {{type, b64_json, background, created_at, output_format, quality, size, usage}} (usage's token "
    "counts are 0: credits are billed, not tokens); no partial images. An error once the stream has begun "
    'is an event error, {{"type": "error", "error": {{...}}}}, after the same cancels and refunds.'
)
OPENAI_ERRORS = (400, 401, 409, 413, 422, 429, 500, 503, 504)

# Every endpoint of the ``api`` blueprint, by endpoint name. A route without an entry is still listed (from
# its view's docstring, without schemas), and fails the tests until it gets one.
OPERATIONS: dict[str, Operation] = {
    **{REFERENCE + op.endpoint: _creates(op) for op in operations.OPERATIONS},
    **{
        ORIGINAL + op.endpoint: _original(op)
        for op in operations.OPERATIONS
        if op.original and op.original.paths
    },
    **{
        ORIGINAL + original.shared_endpoint(op): _shared(op)
        for op in operations.OPERATIONS
        if op.original and op.original.shared
    },
    **{
        ORIGINAL + original.route_endpoint(op, route): _route(op, route)
        for op in operations.OPERATIONS
        if op.original
        for route in op.original.routes
    },
    REFERENCE + "get_job": Operation(
        "Get a job's status and result",
        "Poll this until the status is succeeded, failed, timed_out or cancelled.",
        "Jobs",
        schemas.JobEnvelope,
        errors=JOB_ERRORS,
    ),
    REFERENCE + "fetch": Operation(
        "Get a job (apiframe.ai compatibility)",
        "The same job as GET /v1/jobs/{job_id}, answered under `data` instead of `job`.",
        "Compatibility aliases",
        schemas.FetchEnvelope,
        errors=JOB_ERRORS,
    ),
    REFERENCE + "list_jobs": Operation(
        "List your jobs, newest first",
        "Paginated with limit and offset; filter by status and type.",
        "Jobs",
        schemas.JobListEnvelope,
        query=schemas.JobListQuery,
        errors=(400, *READ_ERRORS),
    ),
    REFERENCE + "job_webhooks": Operation(
        "Get a job's webhook delivery and every attempt",
        "status is null without a webhookUrl; webhookId and event are null until the job ends.",
        "Jobs",
        schemas.WebhookReportEnvelope,
        errors=JOB_ERRORS,
    ),
    REFERENCE + "job_events": Operation(
        "Follow a job as server-sent events",
        EVENTS_DESCRIPTION.format(
            status='{"id", "status"}',
            progress='{"id", "progress", "queuePosition"?, "etaSeconds"?}',
            done="the job object",
        ),
        "Jobs",
        None,
        errors=JOB_ERRORS,
        media_type="text/event-stream",
    ),
    REFERENCE + "cancel_job": Operation(
        "Cancel a job that has not ended",
        "Its credits are refunded. A job that has already ended answers 400.",
        "Jobs",
        schemas.JobEnvelope,
        errors=JOB_ERRORS,
    ),
    REFERENCE + "account": Operation(
        "Get your account: name, email, plan and credits",
        "credits.remaining is the balance; credits.total is every credit ever granted.",
        "Account",
        schemas.AccountEnvelope,
    ),
    ORIGINAL + "fetch_task": Operation(
        "Get a task (the original apiframe.ai API)",
        "Any of your jobs, as the original API's task object.",
        ORIGINAL_TAG,
        original.TaskSchema,
        request=schemas.FetchBody,
        errors=JOB_ERRORS,
    ),
    ORIGINAL + "fetch_tasks": Operation(
        "Get 2 to 20 tasks (the original apiframe.ai API)",
        "In the order asked; an id you have no job with gets task_id, error NOT_FOUND and message.",
        ORIGINAL_TAG,
        original.TaskList,
        request=schemas.FetchManyBody,
        errors=(400, *READ_ERRORS),
    ),
    OPENAI + "generations": Operation(
        "Create images from a prompt (OpenAI's images.generate)",
        "Runs as imagine jobs." + OPENAI_NOTE + OPENAI_STREAM_NOTE.format(events="image_generation"),
        OPENAI_TAG,
        openai.ImagesResponse,
        error_format="OpenAIError",
        request=openai.GenerationRequest,
        errors=OPENAI_ERRORS,
        streams=True,
    ),
    OPENAI + "edits": Operation(
        "Edit an image from a prompt (OpenAI's images.edit)",
        "Without a mask: prompted variation jobs of the uploaded image; with a mask (a PNG of its size, "
        "transparent where to change): inpaint jobs."
        + OPENAI_NOTE
        + OPENAI_STREAM_NOTE.format(events="image_edit"),
        OPENAI_TAG,
        openai.ImagesResponse,
        error_format="OpenAIError",
        request=openai.EditForm,
        errors=OPENAI_ERRORS,
        content="multipart/form-data",
        streams=True,
    ),
    OPENAI + "variations": Operation(
        "Make variations of an image (OpenAI's images.create_variation)",
        "Variation jobs of the uploaded image." + OPENAI_NOTE,
        OPENAI_TAG,
        openai.ImagesResponse,
        error_format="OpenAIError",
        request=openai.VariationForm,
        errors=OPENAI_ERRORS,
        content="multipart/form-data",
    ),
    OPENAI + "list_models": Operation(
        "List the models (OpenAI's models.list)",
        "Each configured provider that can make images; a request's model may name one.",
        OPENAI_TAG,
        openai.ModelList,
        error_format="OpenAIError",
    ),
    OPENAI + "get_model": Operation(
        "Get a model (OpenAI's models.retrieve)",
        "404 for a model that is not listed.",
        OPENAI_TAG,
        openai.ModelObject,
        errors=(404, *READ_ERRORS),
        error_format="OpenAIError",
    ),
    ORIGINAL + "task_events": Operation(
        "Follow a task as server-sent events (an addition to the original apiframe.ai API)",
        EVENTS_DESCRIPTION.format(
            status='{"task_id", "status"} (pending, staged, processing, finished, failed)',
            progress='{"task_id", "percentage", "queue_position"?, "eta_seconds"?}',
            done="the task object of POST /fetch",
        ),
        ORIGINAL_TAG,
        None,
        errors=JOB_ERRORS,
        media_type="text/event-stream",
    ),
    ORIGINAL + "account_info": Operation(
        "Get your account (the original apiframe.ai API)",
        "Email, credits left, plan, total_images and next_billing_date (always null here).",
        ORIGINAL_TAG,
        original.AccountInfo,
    ),
}
# A shared path's endpoint -> the reference endpoint it is an alias of.
SHARED_ALIASES = {
    ORIGINAL + original.shared_endpoint(op): REFERENCE + op.endpoint
    for op in operations.OPERATIONS
    if op.original and op.original.shared
}

PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "job_id": {"description": "The job ID.", "schema": {"type": "string", "format": "uuid"}},
    "task_id": {"description": "The task ID (a job ID).", "schema": {"type": "string", "format": "uuid"}},
}

RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": (
        "The requests allowed per minute in the bucket this one counted against: creates (the plan's rate) "
        "or reads (ten times it, at least 120).",
        "integer",
    ),
    "X-RateLimit-Remaining": ("The requests of that bucket left in the current minute.", "integer"),
    "X-RateLimit-Reset": ("When the current window ends (unix seconds).", "integer"),
    "Retry-After": ("429 only: seconds to wait before retrying.", "integer"),
}


@dataclass(frozen=True)
class Route:
    """One method of one URL rule of the API."""

    path: str  # OpenAPI form: /v1/jobs/{job_id}
    method: str
    endpoint: str
    arguments: tuple[str, ...]
    idempotent: bool  # its view honours Idempotency-Key

    @property
    def is_v1(self) -> bool:
        """Whether this is the /v1 route of its endpoint."""
        return self.path.startswith("/v1/")

    @property
    def is_shared(self) -> bool:
        """Whether this path belongs to both APIs (an alias of the reference's, on the original's routes)."""
        return self.endpoint in SHARED_ALIASES

    @property
    def is_alias(self) -> bool:
        """Whether this is a compatibility alias of a /v1 route."""
        return (self.endpoint.startswith(REFERENCE) and not self.is_v1) or self.is_shared

    @property
    def is_original(self) -> bool:
        """Whether this is a route of the original apiframe.ai API (the paths both APIs have included)."""
        return self.endpoint.startswith(ORIGINAL)

    @property
    def operation_id(self) -> str:
        """A unique id: the view's name for /v1 routes, plus the path for the others."""
        name = self.endpoint.rsplit(".", 1)[1].removesuffix("_shared")
        if self.is_v1:
            return name
        return name + "_via_" + re.sub(r"[^a-z0-9]+", "_", self.path.lower()).strip("_")


def api_routes(app: Flask) -> Iterator[Route]:
    """Every method of every rule of the ``api`` blueprint, in path order."""
    rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith(API_BLUEPRINT + ".")]
    for rule in sorted(rules, key=lambda rule: rule.rule):
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted(set(rule.methods or ()) - IGNORED_METHODS):
            idempotent = idempotency.takes_key(app.view_functions.get(rule.endpoint))
            yield Route(path, method.lower(), rule.endpoint, tuple(sorted(rule.arguments)), idempotent)


def canonical_routes(app: Flask) -> dict[str, Route]:
    """The /v1 route of each endpoint that has one (and of each shared path's), by endpoint name."""
    found: dict[str, Route] = {}
    for route in api_routes(app):
        if route.is_v1:
            found.setdefault(route.endpoint, route)
    for shared, same in SHARED_ALIASES.items():
        if same in found:
            found[shared] = found[same]
    return found


def _register_components(spec: APISpec) -> None:
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    for name, (description, kind) in RATE_LIMIT_HEADERS.items():
        spec.components.header(name, {"description": description, "schema": {"type": kind}})
    spec.components.schema("ErrorEnvelope", schema=schemas.ErrorEnvelope)
    for status in sorted({status for status, _ in ERROR_CODES.values()}):
        codes = [
            f"{code}: {when}" for code, (code_status, when) in ERROR_CODES.items() if code_status == status
        ]
        response: dict[str, Any] = {
            "description": " ".join(codes),
            "content": {"application/json": {"schema": "ErrorEnvelope"}},
        }
        if status == 429:
            response["headers"] = {name: name for name in RATE_LIMIT_HEADERS}
        spec.components.response(f"Error{status}", response)
    spec.components.schema("OpenAIErrorEnvelope", schema=openai.ErrorEnvelope)
    for status in sorted(set(OPENAI_ERRORS) | set(READ_ERRORS) | {404}):
        spec.components.response(
            f"OpenAIError{status}",
            {
                "description": "An error in OpenAI's shape (too few credits: 429 insufficient_quota).",
                "content": {"application/json": {"schema": "OpenAIErrorEnvelope"}},
            },
        )


def _operation(route: Route, operation: Operation, canonical: dict[str, Route]) -> dict[str, Any]:
    """The OpenAPI operation object for one route."""
    description = operation.description
    same = canonical.get(route.endpoint)
    if route.is_alias and same is not None:
        description = f"Alias of {same.method.upper()} {same.path}; behaves identically. {description}"
    success: dict[str, Any] = {
        "description": "Accepted: the new job." if operation.status == 202 else "OK",
        "headers": {name: name for name in RATE_LIMIT_HEADERS if name != "Retry-After"},
    }
    if operation.media_type != "application/json":
        success["content"] = {operation.media_type: {"schema": {}}}  # events: described in the text
    elif operation.response is not None:
        success["content"] = {"application/json": {"schema": operation.response}}
    if operation.streams:
        success["content"]["text/event-stream"] = {"schema": {}}
    responses: dict[str, Any] = {str(operation.status): success}
    for status in operation.errors:
        responses[str(status)] = f"{operation.error_format}{status}"
    result: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": operation.summary,
        "description": description,
        "tags": ["Compatibility aliases" if route.is_alias else operation.tag],
        "security": SECURITY,
        "responses": responses,
    }
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            **PATH_PARAMETERS.get(name, {"schema": {"type": "string"}}),
        }
        for name in route.arguments
    ]
    if route.idempotent:
        parameters.append(IDEMPOTENCY_KEY)
    if operation.query is not None:
        parameters.append({"in": "query", "schema": operation.query})
    if parameters:
        result["parameters"] = parameters
    if operation.request is not None:
        result["requestBody"] = {
            "required": True,
            "content": {operation.content: {"schema": operation.request}},
        }
    return result


def _undocumented(app: Flask, endpoint: str) -> Operation:
    """A bare operation for an endpoint missing from OPERATIONS: its view's docstring, no schemas."""
    summary = (app.view_functions[endpoint].__doc__ or endpoint).strip().splitlines()[0]
    return Operation(summary, "", "Other", None, errors=READ_ERRORS)


class RequestRules(MarshmallowPlugin):
    """The marshmallow plugin, plus what a field list cannot say: fields of which exactly one is given."""

    def schema_helper(self, name: str, _: Any, schema: Any = None, **kwargs: Any) -> dict[str, Any] | None:
        document = super().schema_helper(name, _, schema=schema, **kwargs)
        instance = schema() if isinstance(schema, type) else schema
        files = getattr(instance, "multipart_files", None)
        if document is not None and files is not None:  # a form: files required, no field nullable
            document["required"] = sorted({*document.get("required", ()), *files})
            for prop in document["properties"].values():
                prop.pop("nullable", None)
                if prop.get("default", 0) is None:
                    del prop["default"]
        exclusive = getattr(instance, "exclusive", ())
        if document is not None and exclusive:
            keys = [instance.fields[name].data_key or name for name in exclusive]
            # each branch: that field given, not null (its type without "nullable"); the others absent or null
            document["oneOf"] = [
                {"required": [key], "properties": {key: {"type": document["properties"][key]["type"]}}}
                for key in keys
            ]
        return document


def build(app: Flask) -> dict[str, Any]:
    """The OpenAPI document for ``app``'s API."""
    spec = APISpec(
        title="APIFrame",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[RequestRules()],
        info={
            "description": (
                "A self-hosted, Midjourney-style image generation API. Authenticate with the X-API-Key "
                "header (or Authorization, as the original apiframe.ai API's clients do); rate limits are "
                "per key, per minute, by plan. The full reference is at /docs."
            )
        },
        servers=[{"url": app.config["PUBLIC_URL"]}],
        security=SECURITY,
        tags=[
            {"name": "Jobs", "description": "Create jobs and follow them to their result."},
            {"name": "Account", "description": "Your plan and credits."},
            {"name": "Compatibility aliases", "description": "Other paths to the /v1 endpoints."},
            {
                "name": ORIGINAL_TAG,
                "description": "The original apiframe.ai API's own routes: snake_case bodies, task objects.",
            },
            {"name": OPENAI_TAG, "description": "OpenAI's Images API, for OpenAI clients and chat UIs."},
        ],
    )
    _register_components(spec)
    canonical = canonical_routes(app)
    operations: dict[str, dict[str, Any]] = {}
    for route in api_routes(app):
        operation = OPERATIONS.get(route.endpoint) or _undocumented(app, route.endpoint)
        operations.setdefault(route.path, {})[route.method] = _operation(route, operation, canonical)
    for path, methods in operations.items():
        spec.path(path=path, operations=methods)
    document = spec.to_dict()
    with app.app_context():  # the models a request may name are the providers this server configures
        models = [*openai.model_ids(), *openai.OPENAI_MODELS]
    gpt_image = {"pattern": f"^{openai.GPT_IMAGE_MODEL.pattern}$"}  # and any GPT image model's name
    for form in ("GenerationRequest", "EditForm", "VariationForm"):
        model = document["components"]["schemas"][form]["properties"]["model"]
        named = [*models, None] if model.get("nullable") else models  # JSON's null: not given
        model["anyOf"] = [{"enum": named}, gpt_image]
    return document


def document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document for ``app``, built once (the URL map does not change after start-up)."""
    if EXTENSION not in app.extensions:
        app.extensions[EXTENSION] = build(app)
    return app.extensions[EXTENSION]
