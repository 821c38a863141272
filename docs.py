"""The API reference of this service: /docs (a page) and /openapi.json (generated from schemas.py)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, render_template

import compat
import openapi
import schemas
from config import COSTS, PLANS
from errors import ERROR_CODES
from imaging import ASPECT_RATIOS
from jobs import STATUSES, TYPES, WEBHOOK_STATUSES
from webhooks import nominal_retry_delay

bp = Blueprint("docs", __name__)


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
        costs=COSTS,
        error_codes=ERROR_CODES,
        statuses=STATUSES,
        types=TYPES,
        aspect_ratios=ASPECT_RATIOS,
        versions=schemas.VERSIONS,
        qualities=schemas.QUALITIES,
        styles=schemas.STYLES,
        max_prompt=schemas.MAX_PROMPT_LENGTH,
        max_webhook_secret=schemas.MAX_WEBHOOK_SECRET_LENGTH,
        webhook_statuses=WEBHOOK_STATUSES,
        task_statuses=compat.TASK_STATUSES,
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
