"""The reference API: /v1, and its compatibility aliases.

Every operation of the registry gets ``POST /v1/<name>`` and the aliases its entry lists, all on one
view that validates the body with the operation's request schema and accepts the job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

import auth
import events
import jobs
import operations
import ratelimit
import schemas
import webhooks
from api import answers
from api.body import json_body
from idempotency import idempotent
from operations import Operation

FAMILY = jobs.REFERENCE
bp = Blueprint("reference", __name__)

_list_query = schemas.JobListQuery()


def accepted(job: jobs.Job) -> tuple[Response, int]:
    """202 with the new job."""
    return jsonify(success=True, job=schemas.dump_job(job)), 202


def create_view(operation: Operation) -> Callable[[], tuple[Response, int]]:
    """The view of ``operation``: its request schema, then the job."""
    schema = operation.request()

    def create() -> tuple[Response, int]:
        data = schemas.load(schema, json_body())
        return accepted(jobs.create(g.account, operation, data, origin=FAMILY))

    create.__name__ = operation.endpoint
    create.__doc__ = operation.summary + "."
    return ratelimit.creates(idempotent(create))


def paths(operation: Operation) -> tuple[str, ...]:
    """Where the reference serves ``operation``: /v1/<name>, then its aliases."""
    return (f"/v1/{operation.name}", *operation.aliases)


for _operation in operations.OPERATIONS:
    _view = create_view(_operation)
    for _path in paths(_operation):
        bp.add_url_rule(_path, _operation.endpoint, _view, methods=["POST"])


@bp.get("/v1/jobs/<job_id>")
@bp.get("/fetch/<job_id>", endpoint="fetch")
@bp.get("/api/v1/fetch/<job_id>", endpoint="fetch")
def get_job(job_id: str) -> Response:
    """A job's status and result; the /fetch aliases answer under ``data`` instead of ``job``."""
    render = _under_data if request.endpoint == f"{request.blueprint}.fetch" else _under_job
    return answers.job(g.account, jobs.parse_id(job_id), render)


def _under_job(job: jobs.Job) -> dict[str, Any]:
    return {"success": True, "job": schemas.dump_job(job)}


def _under_data(job: jobs.Job) -> dict[str, Any]:
    return {"success": True, "data": schemas.dump_job(job)}


def _known(data: dict[str, Any], state: events.State) -> dict[str, Any]:
    """``data`` plus the state's queuePosition and etaSeconds, when known."""
    if state.queue_position is not None:
        data["queuePosition"] = state.queue_position
    if state.eta_seconds is not None:
        data["etaSeconds"] = state.eta_seconds
    return data


EVENTS = events.Renderer(
    status=lambda job_id, state: {"id": str(job_id), "status": state.status},
    progress=lambda job_id, state: _known({"id": str(job_id), "progress": state.progress}, state),
    done=schemas.dump_job,
)


@bp.get("/v1/jobs/<job_id>/events")
def job_events(job_id: str) -> Response:
    """A job's status and progress as server-sent events, then the finished job."""
    job = jobs.find(g.account, jobs.parse_id(job_id))
    key, last_event_id = ratelimit.api_key_identity(), request.headers.get("Last-Event-ID")
    return events.respond(key, [job], EVENTS, last_event_id, allowed=auth.liveness(g.api_key))


@bp.get("/v1/jobs")
def list_jobs() -> Response:
    """The caller's jobs, newest first."""
    query = schemas.load(_list_query, request.args.to_dict())
    found = jobs.list_for(
        g.account,
        limit=query["limit"] + 1,
        offset=query["offset"],
        after=query.get("cursor"),
        status=query.get("status"),
        job_type=query.get("type"),
    )
    page, more = found[: query["limit"]], len(found) > query["limit"]
    return jsonify(
        success=True,
        jobs=schemas.dump_jobs(page),
        pagination={"limit": query["limit"], "offset": query["offset"], "hasMore": more},
        nextCursor=schemas.PageCursor.after(page[-1]) if more else None,
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
    return jsonify(success=True, account=schemas.dump_account(auth.current_account()))
