"""The API: the /v1 routes, their aliases and the original apiframe.ai routes.

One view per operation, with a URL rule for each API family that has it; compat.py translates the
original routes' bodies and answers, so every operation has one path from request to job.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

import compat
import jobs
import schemas
import strict_json
import webhooks
from errors import validation_error
from idempotency import idempotent

bp = Blueprint("api", __name__)

_imagine = schemas.ImagineRequest()
_describe = schemas.DescribeRequest()
_pick = schemas.PickRequest()
_blend = schemas.BlendRequest()
_reroll = schemas.RerollRequest()
_upscale_alt = schemas.UpscaleAltRequest()
_upscale_highres = schemas.UpscaleHighresRequest()
_seed = schemas.SeedRequest()
_list_query = schemas.JobListQuery()


def json_body() -> Any:
    """The request body as JSON; an empty body counts as ``{}``."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        return strict_json.loads(raw)
    except strict_json.Refused as exc:
        raise validation_error(str(exc)) from None
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


@idempotent
def create(operation: str, schema: Any) -> Response:
    """Validate the body (with ``schema``, or as the original API's on its routes) and accept the job."""
    if compat.is_original_route():
        data, origin = compat.load(operation, json_body())
        return compat.accepted(jobs.create(g.account, operation, data, origin=origin))
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
@bp.post("/upscale-1x")
def upscale() -> tuple[Response, int]:
    """Upscale one of the four images of a succeeded job."""
    return create("upscale", _pick)


@bp.post("/v1/variation")
@bp.post("/variation")
@bp.post("/api/v1/variation")
@bp.post("/variations")
def variation() -> tuple[Response, int]:
    """Make four variations of one of the four images of a succeeded job (or of an upscaled image)."""
    return create("variation", _pick)


@bp.post("/v1/reroll")
@bp.post("/reroll")
def reroll() -> tuple[Response, int]:
    """Draw a succeeded imagine or reroll job again, with a new seed."""
    return create("reroll", _reroll)


@bp.post("/v1/upscale-alt")
@bp.post("/upscale-alt")
def upscale_alt() -> tuple[Response, int]:
    """Upscale an upscaled image again, subtle or creative."""
    return create("upscale-alt", _upscale_alt)


@bp.post("/v1/upscale-highres")
@bp.post("/upscale-highres")
def upscale_highres() -> tuple[Response, int]:
    """Enlarge an image of a job, or at a URL, 2x or 4x."""
    return create("upscale-highres", _upscale_highres)


@bp.post("/v1/seed")
@bp.post("/seed")
def seed() -> tuple[Response, int]:
    """The seed a job's images were made with."""
    return create("seed", _seed)


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


@bp.post("/fetch")
def fetch_task() -> Response:
    """A task as the original API shows it."""
    task_id = schemas.load(compat.FETCH, json_body())["task_id"]
    return jsonify(compat.task_object(jobs.find(g.account, task_id)))


@bp.post("/fetch-many")
def fetch_tasks() -> Response:
    """2 to 20 tasks as the original API shows them."""
    task_ids = schemas.load(compat.FETCH_MANY, json_body())["task_ids"]
    return jsonify(tasks=compat.tasks(g.account, task_ids))


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


@bp.get("/account")
def account_info() -> Response:
    """The caller's account as the original API shows it."""
    return jsonify(compat.account_object(g.account))
