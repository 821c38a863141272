"""Jobs: accepting them (with their credits), finding them, cancelling them, and ending them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from flask import current_app

import credits
from config import COSTS
from errors import insufficient_credits, not_found, validation_error
from models import Account, CompiledQuery, Job, Slot, WebhookDelivery, db, utcnow

log = logging.getLogger(__name__)

PENDING, QUEUED, PROCESSING = "pending", "queued", "processing"
SUCCEEDED, FAILED, TIMED_OUT, CANCELLED = "succeeded", "failed", "timed_out", "cancelled"
ACTIVE = (PENDING, QUEUED, PROCESSING)
TERMINAL = (SUCCEEDED, FAILED, TIMED_OUT, CANCELLED)
REFUNDED = (FAILED, TIMED_OUT, CANCELLED)
STATUSES = ACTIVE + TERMINAL

TYPES = ("imagine", "describe", "upscale", "blend", "variation")
GRID_TYPES = ("imagine", "variation", "blend")  # jobs whose result is four tiles

# A job's webhookStatus: null without a webhookUrl, pending until delivered or given up on.
WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED = "pending", "delivered", "failed"
WEBHOOK_STATUSES = (WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED)

# Called with the job after it reaches a terminal state (and the transaction has committed).
finished_hooks: list[Callable[[Job], None]] = []


def parse_id(value: Any, field: str = "id") -> uuid.UUID:
    """A job id from the client, or 400 naming ``field``."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise validation_error(f"The '{field}' field must be a job ID (a UUID).") from None


def find(account: Account, job_id: uuid.UUID) -> Job:
    """The account's job with this id, or 404 (another account's job is never visible)."""
    job = Job.get_or_none((Job.id == job_id) & (Job.account == account.id))
    if job is None:
        raise not_found(f"Job {job_id} was not found.")
    return job


def find_parent(account: Account, job_id: uuid.UUID, operation: str) -> Job:
    """A parent for upscale/variation: the account's succeeded job with four images."""
    parent = find(account, job_id)
    if parent.type not in GRID_TYPES:
        raise validation_error(
            f"Job {job_id} is a {parent.type} job; {operation} needs an imagine, variation or blend job."
        )
    if parent.status != SUCCEEDED:
        raise validation_error(f"Job {job_id} is {parent.status}; {operation} needs a succeeded job.")
    if not parent.tiles or len(parent.tiles) != 4:
        raise validation_error(f"Job {job_id} has no images to {operation}.")
    return parent


def require_provider(operation: str) -> None:
    """400, before any credit is taken, if no configured provider can do ``operation``."""
    providers = current_app.extensions["apiframe.providers"]
    if not providers.supports(operation):
        name = providers.for_operation(operation).name
        raise validation_error(f"The configured provider ({name}) cannot {operation}.")


def create(account: Account, operation: str, data: dict[str, Any]) -> Job:
    """Accept a job from a validated request (a loaded request schema), for any entry point."""
    require_provider(operation)
    webhook = {"webhook_url": data.get("webhook_url"), "webhook_secret": data.get("webhook_secret")}
    if operation == "imagine":
        params = {
            "aspectRatio": data["aspect_ratio"],
            "version": data["version"],
            "quality": data["quality"],
            "style": data["style"],
            "chaos": data["chaos"],
            "stylize": data["stylize"],
        }
        return submit(account, operation, prompt=data["prompt"], params=params, **webhook)
    if operation == "describe":
        return submit(account, operation, params={"imageUrl": data["image_url"]}, **webhook)
    if operation == "blend":
        return submit(account, operation, params={"imageUrls": data["image_urls"]}, **webhook)
    if operation in ("upscale", "variation"):
        parent = find_parent(account, data["job_id"], operation)
        return submit(account, operation, parent=parent, index=data["index"], **webhook)
    raise ValueError(f"unknown operation {operation}")


# Accepting a job is on the path of every create request, so its INSERT is compiled once.
_INSERTED = (
    Job.id, Job.account, Job.type, Job.status, Job.prompt, Job.params, Job.parent, Job.index, Job.cost,
    Job.progress, Job.runs, Job.webhook_url, Job.webhook_secret, Job.webhook_status, Job.webhook_attempts,
    Job.created_at,
)  # fmt: skip
_insert = CompiledQuery(lambda: Job.insert({field: Slot(field.name, field) for field in _INSERTED}))


def submit(
    account: Account,
    job_type: str,
    *,
    prompt: str | None = None,
    params: dict[str, Any] | None = None,
    parent: Job | None = None,
    index: int | None = None,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
) -> Job:
    """Accept a job: take its cost and store it, in one transaction; then wake the workers."""
    cost = COSTS[job_type]
    job = Job(
        id=uuid.uuid4(),
        account=account.id,
        type=job_type,
        status=PENDING,
        prompt=prompt,
        params=params or {},
        parent=parent,
        index=index,
        cost=cost,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret if webhook_url else None,  # unused, so not kept, without a URL
        webhook_status=WEBHOOK_PENDING if webhook_url else None,
        created_at=utcnow(),
    )
    try:
        with db.atomic():
            _insert.execute(**{field.name: job.__data__.get(field.name) for field in _INSERTED})
            credits.debit(account.id, cost, job)
    except credits.InsufficientCredits:
        balance = credits.balance(account.id)
        raise insufficient_credits(
            f"This {job_type} costs {cost} credits and your balance is {balance}."
        ) from None
    current_app.extensions["apiframe.pool"].nudge()
    return job


def finish(job_id: uuid.UUID, status: str, *, token: str | None = None, **fields: Any) -> bool:
    """Move a job to a terminal ``status``, refunding if it did not succeed.

    Only an active job can end, and only once; with ``token``, only while that lease holds it.
    A job with a webhook URL gets its webhook delivery in the same transaction, so it is never lost.
    Returns whether this call ended the job.
    """
    if status not in TERMINAL:
        raise ValueError(f"not a terminal status: {status}")
    with db.atomic():
        query = Job.update(status=status, completed_at=utcnow(), lease_expires=None, **fields).where(
            (Job.id == job_id) & Job.status.in_(ACTIVE)
        )
        if token is not None:
            query = query.where(Job.lease_token == token)
        if query.execute() != 1:
            return False
        job = Job.get_by_id(job_id)
        if status in REFUNDED:
            credits.refund(job, f"{job.type} job {status.replace('_', ' ')}")
        if job.webhook_url:
            WebhookDelivery.create(job=job.id, created_at=job.completed_at, next_attempt_at=job.completed_at)
    for hook in finished_hooks:
        try:
            hook(job)
        except Exception:
            log.exception("job-finished hook failed for %s", job_id)
    return True


def cancel(account: Account, job_id: uuid.UUID) -> Job:
    """Cancel the account's job if it has not ended; 400 if it has."""
    job = find(account, job_id)
    if not finish(job.id, CANCELLED):
        job = find(account, job_id)
        raise validation_error(f"Job {job_id} is already {job.status} and cannot be cancelled.")
    current_app.extensions["apiframe.pool"].interrupt(job.id)
    return find(account, job_id)


def list_for(
    account: Account, *, limit: int, offset: int, status: str | None = None, job_type: str | None = None
) -> list[Job]:
    """The account's jobs, newest first."""
    query = Job.select().where(Job.account == account.id)
    if status:
        query = query.where(Job.status == status)
    if job_type:
        query = query.where(Job.type == job_type)
    return list(query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset))
