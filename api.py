"""The /v1 API and its compatibility aliases: one view per operation, several URL rules each."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

import jobs
import schemas
import webhooks
from errors import validation_error

bp = Blueprint("api", __name__)

_imagine = schemas.ImagineRequest()
_describe = schemas.DescribeRequest()
_pick = schemas.PickRequest()
_blend = schemas.BlendRequest()
_list_query = schemas.JobListQuery()


def json_body() -> Any:
    """The request body as JSON; an empty body counts as ``{}``."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        if request.mimetype and not request.is_json:
            raise validation_error(
                "The request body must be JSON, sent with Content-Type: application/json."
            ) from None
        detail = (
            f": {exc.msg} at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise validation_error(f"The request body is not valid JSON{detail}.") from None


def accepted(job: Any) -> tuple[Response, int]:
    """202 with the new job."""
    return jsonify(success=True, job=schemas.dump_job(job)), 202


def create(operation: str, schema: Any) -> tuple[Response, int]:
    """Validate the body with ``schema`` and accept the job."""
    return accepted(jobs.create(g.account, operation, schemas.load(schema, json_body())))


@bp.post("/v1/imagine")
@bp.post("/imagine")
@bp.post("/api/v1/imagine")
def imagine() -> tuple[Response, int]:
    """Generate four images from a text prompt."""
    return create("imagine", _imagine)


@bp.post("/v1/describe")
@bp.post("/describe")
@bp.post("/api/v1/describe")
def describe() -> tuple[Response, int]:
    """Describe an image with four prompts."""
    return create("describe", _describe)


@bp.post("/v1/upscale")
@bp.post("/upscale")
@bp.post("/api/v1/upscale")
def upscale() -> tuple[Response, int]:
    """Upscale one of the four images of a succeeded job."""
    return create("upscale", _pick)


@bp.post("/v1/variation")
@bp.post("/variation")
@bp.post("/api/v1/variation")
def variation() -> tuple[Response, int]:
    """Make four variations of one of the four images of a succeeded job."""
    return create("variation", _pick)


@bp.post("/v1/blend")
@bp.post("/blend")
@bp.post("/api/v1/blend")
def blend() -> tuple[Response, int]:
    """Blend two to five images into four new ones."""
    return create("blend", _blend)


@bp.get("/v1/jobs/<job_id>")
@bp.get("/fetch/<job_id>", endpoint="fetch")
@bp.get("/api/v1/fetch/<job_id>", endpoint="fetch")
def get_job(job_id: str) -> Response:
    """A job's status and result; the /fetch aliases answer under ``data`` instead of ``job``."""
    job = jobs.find(g.account, jobs.parse_id(job_id))
    key = "data" if request.endpoint == "api.fetch" else "job"
    return jsonify({"success": True, key: schemas.dump_job(job)})


@bp.get("/v1/jobs")
def list_jobs() -> Response:
    """The caller's jobs, newest first."""
    query = schemas.load(_list_query, request.args.to_dict())
    found = jobs.list_for(
        g.account,
        limit=query["limit"] + 1,
        offset=query["offset"],
        status=query.get("status"),
        job_type=query.get("type"),
    )
    page = found[: query["limit"]]
    return jsonify(
        success=True,
        jobs=schemas.dump_jobs(page),
        pagination={"limit": query["limit"], "offset": query["offset"], "hasMore": len(found) > len(page)},
    )


@bp.get("/v1/jobs/<job_id>/webhooks")
def job_webhooks(job_id: str) -> Response:
    """A job's webhook delivery: its status, every attempt so far, and when the next one is due."""
    job = jobs.find(g.account, jobs.parse_id(job_id))
    return jsonify(success=True, webhooks=schemas.dump_webhook_report(webhooks.report(job)))


@bp.post("/v1/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    """Cancel a job that has not ended."""
    job = jobs.cancel(g.account, jobs.parse_id(job_id))
    return jsonify(success=True, job=schemas.dump_job(job))


@bp.get("/v1/account")
def account() -> Response:
    """The caller's account: name, email, plan and credits."""
    return jsonify(success=True, account=schemas.dump_account(g.account))
