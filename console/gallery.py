"""The jobs gallery, a job's page, live progress, and the U1-U4/V1-V4 and cancel buttons."""

from __future__ import annotations

import uuid
from typing import Any

from flask import abort, flash, g, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

import events
import jobs
import schemas
from api.reference import EVENTS
from console.blueprints import console_bp as bp
from console.filters import job_title
from console.forms import ConfirmForm, ImageActionForm, JobFilterForm, PickForm
from console.login import liveness
from console.pages import page_number
from errors import ApiError
from models import Job
from operations import Operation

PAGE_SIZE = 24
LIVE_MAX = 50  # jobs one live request may ask about
# How a live job is drawn: the gallery's card, the playground's panel, or the panel on the job's own page.
LIVE_VIEWS = {
    "card": ("console/_job_card.html", {}),
    "panel": ("console/_job_panel.html", {}),
    "page": ("console/_job_panel.html", {"on_job_page": True}),
    "details": ("console/_job_details.html", {}),  # the job page's Details card: refunded, ended
}

def submit(operation: Operation, body: dict[str, Any]) -> Job:
    """Accept a job for the signed-in account exactly as the API would accept ``body``."""
    return jobs.create(g.account, operation, schemas.load(operation.request(), body))


def find_job(job_id: str) -> Job:
    """The signed-in account's job, or 404 (also for ids that are not UUIDs)."""
    try:
        return jobs.find(g.account, jobs.parse_id(job_id))
    except ApiError:
        abort(404)


def job_forms() -> dict[str, Any]:
    """The forms a job's panel shows: U/V buttons, the buttons under one image, and cancel."""
    return {"pick_form": PickForm(), "image_form": ImageActionForm(), "cancel_form": ConfirmForm()}


@bp.get("/jobs")
def gallery() -> str:
    """The account's jobs, newest first, filtered by status and type."""
    form = JobFilterForm(formdata=request.args)
    valid = form.validate()
    status = form.status.data if valid and form.status.data else None
    job_type = form.type.data if valid and form.type.data else None
    page = page_number()
    found = jobs.list_for(
        g.account, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE, status=status, job_type=job_type
    )
    filters = {"status": status or "", "type": job_type or ""}
    return render_template(
        "console/jobs.html",
        form=form,
        jobs=found[:PAGE_SIZE],
        page=page,
        has_more=len(found) > PAGE_SIZE,
        filters=filters,
        filtered=bool(status or job_type),
    )


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    """One job: its grid and tiles, the U/V buttons, its descriptions, or why it failed."""
    job = find_job(job_id)
    children = list(
        Job.select().where((Job.parent == job.id) & (Job.account == g.account.id)).order_by(Job.created_at)
    )
    return render_template("console/job.html", job=job, children=children, on_job_page=True, **job_forms())


@bp.get("/jobs/live")
def live_jobs() -> Response:
    """Status, progress and fresh HTML of some of the account's jobs, for the pages' progress polling; and
    the account's balance (as the sidebar shows it), which a job that ends unsuccessfully gives back."""
    view = request.args.get("view", "card")
    if view not in LIVE_VIEWS:
        return jsonify(error=f"view must be one of: {', '.join(LIVE_VIEWS)}"), 400
    ids = _live_ids()
    found = Job.select().where(Job.id.in_(ids) & (Job.account == g.account.id)) if ids else []
    template, extra = LIVE_VIEWS[view]
    context = {**job_forms(), **extra}
    return jsonify(
        balance=f"{g.account.balance:,}",
        jobs=[
            {
                "id": str(job.id),
                "status": job.status,
                "progress": job.progress,
                "active": job.status in jobs.ACTIVE,
                "title": job_title(job),
                "error": job.error,
                "html": render_template(template, job=job, **context),
            }
            for job in found
        ]
    )


@bp.get("/jobs/events")
def job_events() -> Response:
    """Some of the account's jobs as server-sent events (the API's job events), for live progress."""
    found = list(Job.select().where(Job.id.in_(_live_ids()) & (Job.account == g.account.id)))
    if not found:
        abort(404)
    return events.respond(f"console:{g.account.id}", found, EVENTS, allowed=liveness())


def _live_ids() -> list[uuid.UUID]:
    """The job ids a live request asks about (at most LIVE_MAX; ones that are not UUIDs are skipped)."""
    ids = []
    for value in request.args.getlist("id")[:LIVE_MAX]:
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            continue
    return ids


@bp.post("/jobs/<job_id>/pick")
def pick(job_id: str) -> Response:
    """U1-U4 upscales, V1-V4 varies one image of a succeeded job (as POST /v1/upscale, /variation)."""
    parent = find_job(job_id)
    form = PickForm()
    if not form.validate_on_submit():
        abort(400, "Pick U1-U4 or V1-V4.")
    operation, index = form.operation()
    try:
        job = submit(operation, {"jobId": str(parent.id), "index": index})
    except ApiError as exc:
        flash(exc.message, "error")
        return redirect(url_for("console.job_page", job_id=parent.id))
    flash(f"{form.action.data}: {operation.name} of image {index} started.", "success")
    return redirect(url_for("console.job_page", job_id=job.id))


@bp.post("/jobs/<job_id>/act")
def act(job_id: str) -> Response:
    """Pan, zoom out or vary a region of one image (as POST /v1/pan, /v1/zoom, /v1/inpaint)."""
    parent = find_job(job_id)
    form = ImageActionForm()
    if not form.validate_on_submit():
        abort(400, " ".join(sum(form.errors.values(), [])) or "Pick one of the buttons.")
    operation, body = form.payload(str(parent.id))
    try:
        job = submit(operation, body)
    except ApiError as exc:
        flash(exc.message, "error")
        return redirect(url_for("console.job_page", job_id=parent.id))
    flash(f"{operation.label} started.", "success")
    return redirect(url_for("console.job_page", job_id=job.id))


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> Response:
    """Cancel a job that has not ended (as POST /v1/jobs/:id/cancel); its credits come back."""
    job = find_job(job_id)
    try:
        jobs.cancel(g.account, job.id)
    except ApiError as exc:
        flash(exc.message, "error")
    else:
        flash(f"Job cancelled. Its {job.cost} credits were refunded.", "success")
    return redirect(url_for("console.job_page", job_id=job.id))
