"""The API reference of this service: /docs (a page) and /openapi.json (generated from schemas.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, current_app, jsonify, render_template
from marshmallow import Schema

import openapi
import operations
from api import openai, original
from config import PLANS
from errors import ERROR_CODES
from jobs import STATUSES, WEBHOOK_STATUSES
from ratelimit import reads_per_minute
from webhooks import nominal_retry_delay

bp = Blueprint("docs", __name__)

_plugin = MarshmallowPlugin()  # turns marshmallow schemas into JSON Schema, as for /openapi.json
APISpec("docs", "1", "3.0.3", plugins=[_plugin])


@dataclass(frozen=True)
class FieldRow:
    """One field of a request body, as the docs' tables show it."""

    name: str
    kind: str
    required: bool
    description: str
    choices: tuple[Any, ...]
    default: Any


def _kind(prop: dict[str, Any]) -> str:
    if "oneOf" in prop:
        return " or ".join(dict.fromkeys(_kind(option) for option in prop["oneOf"]))
    if prop.get("type") == "array":
        return f"array of {_kind(prop.get('items', {}))}s"
    formats = {"uri": "URL", "uuid": "UUID"}
    kind = prop.get("type", "string")
    return f"{kind} ({formats[prop['format']]})" if prop.get("format") in formats else kind


def _limits(prop: dict[str, Any]) -> str:
    if "minimum" in prop and "maximum" in prop:
        return f"{prop['minimum']:g} to {prop['maximum']:g}."
    if "minItems" in prop and "maxItems" in prop:
        return f"{prop['minItems']} to {prop['maxItems']} of them."
    if "maxLength" in prop:
        return f"At most {prop['maxLength']} characters."
    return ""


def field_rows(schema: type[Schema]) -> list[FieldRow]:
    """The fields of a request body, from the same JSON Schema /openapi.json shows."""
    document = _plugin.converter.schema2jsonschema(schema)
    required = set(document.get("required", ()))
    rows = []
    for name, prop in document["properties"].items():
        description = " ".join(part for part in (prop.get("description", ""), _limits(prop)) if part)
        options = [value for option in prop.get("oneOf", ()) for value in option.get("enum", ())]
        choices = tuple(prop.get("enum", ())) or tuple(value for value in options if isinstance(value, str))
        default = prop.get("default")
        if isinstance(default, float):
            default = f"{default:g}"
        rows.append(FieldRow(name, _kind(prop), name in required, description, choices, default))
    return rows


def span(seconds: float) -> str:
    """A duration for people: '0', '2 min 50 s', '1 h 31 min'."""
    if seconds >= 3600:
        hours, minutes = divmod(round(seconds / 60), 60)
        return f"{hours} h {minutes} min"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    return f"{seconds} s" if seconds else "0"


def retry_schedule(attempts: int, base: float) -> list[tuple[int, str, str]]:
    """Each webhook attempt with its nominal wait after the previous one and after the job ended."""
    schedule, elapsed = [(1, "– (when the job ends)", "0")], 0.0
    for number in range(2, attempts + 1):
        wait = nominal_retry_delay(number - 1, base)
        elapsed += wait
        schedule.append((number, span(wait), span(elapsed)))
    return schedule


@bp.get("/docs")
def reference() -> str:
    """The API reference, with curl examples for this server."""
    return render_template(
        "docs.html",
        base_url=current_app.config["PUBLIC_URL"],
        routes=list(openapi.api_routes(current_app)),
        canonical=openapi.canonical_routes(current_app),
        summaries={endpoint: operation.summary for endpoint, operation in openapi.OPERATIONS.items()},
        plans=PLANS.values(),
        reads_per_minute=reads_per_minute,
        operations=operations.OPERATIONS,
        field_rows=field_rows,
        as_json=json.dumps,
        original_spelling=original.original_spelling,
        openai_sizes=openai.size_table(),
        sync_wait=current_app.config["SYNC_WAIT"],
        error_codes=ERROR_CODES,
        statuses=STATUSES,
        types=operations.names(),
        webhook_statuses=WEBHOOK_STATUSES,
        task_statuses=original.TASK_STATUSES,
        webhook_timeout=current_app.config["WEBHOOK_TIMEOUT"],
        retry_schedule=retry_schedule(
            current_app.config["WEBHOOK_MAX_ATTEMPTS"], current_app.config["WEBHOOK_RETRY_BASE"]
        ),
    )


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI 3 document of the API."""
    response = jsonify(openapi.document(current_app))
    response.headers["Access-Control-Allow-Origin"] = "*"  # so API tools in a browser can load it
    return response
