"""The API reference of this service: /docs (a page) and /openapi.json (generated from schemas.py)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, render_template

import openapi
import schemas
from config import COSTS, PLANS
from errors import ERROR_CODES
from imaging import ASPECT_RATIOS
from jobs import STATUSES, TYPES

bp = Blueprint("docs", __name__)


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
    )


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI 3 document of the API."""
    response = jsonify(openapi.document(current_app))
    response.headers["Access-Control-Allow-Origin"] = "*"  # so API tools in a browser can load it
    return response
