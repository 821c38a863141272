"""The OpenAPI 3 document of the API: paths from the app's URL map, schemas from schemas.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema

import schemas
from config import COSTS
from errors import ERROR_CODES

API_BLUEPRINT = "api"
SECURITY_SCHEME = "ApiKeyAuth"
IGNORED_METHODS = {"HEAD", "OPTIONS"}

CREATE_ERRORS = (400, 401, 402, 413, 429, 500)
PICK_ERRORS = (400, 401, 402, 404, 413, 429, 500)
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


def _costs(operation: str) -> str:
    return (
        f"Costs {COSTS[operation]} credits, taken when the job is accepted, refunded if it does not succeed."
    )


# Every endpoint of the ``api`` blueprint, by endpoint name. A route without an entry is still listed (from
# its view's docstring, without schemas), and fails the tests until it gets one.
OPERATIONS: dict[str, Operation] = {
    "api.imagine": Operation(
        "Generate four images from a text prompt",
        "Returns a pending job; poll it until it ends. " + _costs("imagine"),
        "Jobs",
        schemas.JobEnvelope,
        status=202,
        request=schemas.ImagineRequest,
        errors=CREATE_ERRORS,
    ),
    "api.describe": Operation(
        "Describe an image with four prompts",
        "The image at imageUrl is fetched by the service. " + _costs("describe"),
        "Jobs",
        schemas.JobEnvelope,
        status=202,
        request=schemas.DescribeRequest,
        errors=CREATE_ERRORS,
    ),
    "api.upscale": Operation(
        "Upscale one of the four images of a succeeded job",
        "The parent must be a succeeded imagine, variation or blend job. " + _costs("upscale"),
        "Jobs",
        schemas.JobEnvelope,
        status=202,
        request=schemas.PickRequest,
        errors=PICK_ERRORS,
    ),
    "api.variation": Operation(
        "Make four variations of one image of a succeeded job",
        "The parent must be a succeeded imagine, variation or blend job. " + _costs("variation"),
        "Jobs",
        schemas.JobEnvelope,
        status=202,
        request=schemas.PickRequest,
        errors=PICK_ERRORS,
    ),
    "api.blend": Operation(
        "Blend two to five images into four new ones",
        "The images are fetched by the service. " + _costs("blend"),
        "Jobs",
        schemas.JobEnvelope,
        status=202,
        request=schemas.BlendRequest,
        errors=CREATE_ERRORS,
    ),
    "api.get_job": Operation(
        "Get a job's status and result",
        "Poll this until the status is succeeded, failed, timed_out or cancelled.",
        "Jobs",
        schemas.JobEnvelope,
        errors=JOB_ERRORS,
    ),
    "api.fetch": Operation(
        "Get a job (apiframe.ai compatibility)",
        "The same job as GET /v1/jobs/{job_id}, answered under `data` instead of `job`.",
        "Compatibility aliases",
        schemas.FetchEnvelope,
        errors=JOB_ERRORS,
    ),
    "api.list_jobs": Operation(
        "List your jobs, newest first",
        "Paginated with limit and offset; filter by status and type.",
        "Jobs",
        schemas.JobListEnvelope,
        query=schemas.JobListQuery,
        errors=(400, *READ_ERRORS),
    ),
    "api.job_webhooks": Operation(
        "Get a job's webhook delivery and every attempt",
        "status is null without a webhookUrl; webhookId and event are null until the job ends.",
        "Jobs",
        schemas.WebhookReportEnvelope,
        errors=JOB_ERRORS,
    ),
    "api.cancel_job": Operation(
        "Cancel a job that has not ended",
        "Its credits are refunded. A job that has already ended answers 400.",
        "Jobs",
        schemas.JobEnvelope,
        errors=JOB_ERRORS,
    ),
    "api.account": Operation(
        "Get your account: name, email, plan and credits",
        "credits.remaining is the balance; credits.total is every credit ever granted.",
        "Account",
        schemas.AccountEnvelope,
    ),
}

PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "job_id": {"description": "The job ID.", "schema": {"type": "string", "format": "uuid"}},
}

RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": ("The requests allowed per minute on the key's plan.", "integer"),
    "X-RateLimit-Remaining": ("The requests left in the current minute.", "integer"),
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

    @property
    def is_alias(self) -> bool:
        """Whether this is a compatibility alias rather than the /v1 route."""
        return not self.path.startswith("/v1/")

    @property
    def operation_id(self) -> str:
        """A unique id: the view's name for /v1 routes, plus the path for aliases."""
        name = self.endpoint.split(".", 1)[1]
        if not self.is_alias:
            return name
        return name + "_via_" + re.sub(r"[^a-z0-9]+", "_", self.path.lower()).strip("_")


def api_routes(app: Flask) -> Iterator[Route]:
    """Every method of every rule of the ``api`` blueprint, in path order."""
    rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith(API_BLUEPRINT + ".")]
    for rule in sorted(rules, key=lambda rule: rule.rule):
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted(set(rule.methods or ()) - IGNORED_METHODS):
            yield Route(path, method.lower(), rule.endpoint, tuple(sorted(rule.arguments)))


def canonical_routes(app: Flask) -> dict[str, Route]:
    """The /v1 route of each endpoint that has one, by endpoint name."""
    found: dict[str, Route] = {}
    for route in api_routes(app):
        if not route.is_alias:
            found.setdefault(route.endpoint, route)
    return found


def _register_components(spec: APISpec) -> None:
    spec.components.security_scheme(
        SECURITY_SCHEME,
        {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "Your key: ak_live_…"},
    )
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


def _operation(route: Route, operation: Operation, canonical: dict[str, Route]) -> dict[str, Any]:
    """The OpenAPI operation object for one route."""
    description = operation.description
    if route.is_alias and route.endpoint in canonical:
        same = canonical[route.endpoint]
        description = f"Alias of {same.method.upper()} {same.path}; behaves identically. {description}"
    success: dict[str, Any] = {
        "description": "Accepted: the new job." if operation.status == 202 else "OK",
        "headers": {name: name for name in RATE_LIMIT_HEADERS if name != "Retry-After"},
    }
    if operation.response is not None:
        success["content"] = {"application/json": {"schema": operation.response}}
    responses: dict[str, Any] = {str(operation.status): success}
    for status in operation.errors:
        responses[str(status)] = f"Error{status}"
    result: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": operation.summary,
        "description": description,
        "tags": ["Compatibility aliases" if route.is_alias else operation.tag],
        "security": [{SECURITY_SCHEME: []}],
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
    if operation.query is not None:
        parameters.append({"in": "query", "schema": operation.query})
    if parameters:
        result["parameters"] = parameters
    if operation.request is not None:
        result["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": operation.request}},
        }
    return result


def _undocumented(app: Flask, endpoint: str) -> Operation:
    """A bare operation for an endpoint missing from OPERATIONS: its view's docstring, no schemas."""
    summary = (app.view_functions[endpoint].__doc__ or endpoint).strip().splitlines()[0]
    return Operation(summary, "", "Other", None, errors=READ_ERRORS)


def build(app: Flask) -> dict[str, Any]:
    """The OpenAPI document for ``app``'s API."""
    spec = APISpec(
        title="APIFrame",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={
            "description": (
                "A self-hosted, Midjourney-style image generation API. Authenticate with the X-API-Key "
                "header; rate limits are per key, per minute, by plan. The full reference is at /docs."
            )
        },
        servers=[{"url": app.config["PUBLIC_URL"]}],
        security=[{SECURITY_SCHEME: []}],
        tags=[
            {"name": "Jobs", "description": "Create jobs and follow them to their result."},
            {"name": "Account", "description": "Your plan and credits."},
            {"name": "Compatibility aliases", "description": "The paths of the original apiframe.ai API."},
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
    return spec.to_dict()


def document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document for ``app``, built once (the URL map does not change after start-up)."""
    if "apiframe.openapi" not in app.extensions:
        app.extensions["apiframe.openapi"] = build(app)
    return app.extensions["apiframe.openapi"]
