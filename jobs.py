"""Jobs: accepting them (with their credits), finding them, cancelling them, and ending them."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from flask import current_app

import credits
import ratelimit
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
TYPES += ("reroll", "upscale-alt", "upscale-highres", "seed")  # the original apiframe.ai API's operations
GRID_TYPES = ("imagine", "variation", "blend", "reroll")  # jobs whose result is four tiles
UPSCALE_TYPES = ("upscale", "upscale-alt", "upscale-highres")  # jobs whose result is one image
PROMPT_TYPES = ("imagine", "reroll")  # jobs a reroll can draw again: a prompt and the imagine settings

# The provider operation each job type runs as; a seed job needs no provider (it reads its parent's seed).
PROVIDER_OPERATIONS = {
    "imagine": "imagine",
    "describe": "describe",
    "upscale": "upscale",
    "blend": "blend",
    "variation": "variation",
    "reroll": "imagine",
    "upscale-alt": "upscale",
    "upscale-highres": "upscale",
}

# The API family a job was created through: it decides the shape of the job's webhook.
REFERENCE, ORIGINAL = "reference", "original"

PROCESS_MODES = ("fast", "turbo", "relax")  # the original API's speeds: accepted and recorded
UPSCALE_ALT_TYPES = ("subtle", "creative")
HIGHRES_FACTORS = {"2x": 2, "4x": 4}
VARY_STRENGTHS = {"subtle": 0.25, "strong": 0.75}  # variations of an upscaled image
BLEND_DIMENSIONS = {"square": "1:1", "portrait": "2:3", "landscape": "3:2"}

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


def find_parent(
    account: Account, job_id: uuid.UUID, operation: str, types: tuple[str, ...] = GRID_TYPES
) -> Job:
    """A parent for ``operation``: the account's succeeded job of one of ``types``, with its images."""
    return check_parent(find(account, job_id), operation, types)


def check_parent(parent: Job, operation: str, types: tuple[str, ...]) -> Job:
    """``parent`` if it is a succeeded job of one of ``types`` with its images, else 400."""
    if parent.type not in types:
        raise validation_error(
            f"Job {parent.id} is {_a(parent.type)} job; {operation} needs {_a(_either(types))} job."
        )
    if parent.status != SUCCEEDED:
        raise validation_error(f"Job {parent.id} is {parent.status}; {operation} needs a succeeded job.")
    if len(parent.tiles or ()) != (4 if parent.type in GRID_TYPES else 1):
        raise validation_error(f"Job {parent.id} has no images to {operation}.")
    return parent


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _either(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def require_provider(operation: str) -> None:
    """400, before any credit is taken, if no configured provider can do ``operation``."""
    providers = current_app.extensions["apiframe.providers"]
    if not providers.supports(operation):
        name = providers.for_operation(operation).name
        raise validation_error(
            f"The configured provider ({name}) cannot do {operation} jobs; "
            f"set APIFRAME_PROVIDER_{operation.upper()} to a provider that can."
        )


def create(account: Account, operation: str, data: dict[str, Any], *, origin: str = REFERENCE) -> Job:
    """Accept a job from a validated request (a loaded request schema), for any entry point."""
    if operation not in _INPUTS:
        raise ValueError(f"unknown operation {operation}")
    ratelimit.count_create(account)
    if operation in PROVIDER_OPERATIONS:
        require_provider(PROVIDER_OPERATIONS[operation])
    return submit(
        account,
        operation,
        webhook_url=data.get("webhook_url"),
        webhook_secret=data.get("webhook_secret"),
        origin=origin,
        **_INPUTS[operation](account, data),
    )


def _imagine(account: Account, data: dict[str, Any]) -> dict[str, Any]:
    params = {
        "aspectRatio": data["aspect_ratio"],
        "version": data["version"],
        "quality": data["quality"],
        "style": data["style"],
        "chaos": data["chaos"],
        "stylize": data["stylize"],
    }
    return {"prompt": data["prompt"], "params": _with_process_mode(params, data)}


def _reroll(account: Account, data: dict[str, Any]) -> dict[str, Any]:
    """The parent's prompt and settings (or the ones given) with a new seed, so the images differ."""
    parent = find_parent(account, data["job_id"], "reroll", PROMPT_TYPES)
    params = {**parent.params, "seed": new_seed(avoid=parent.seed)}
    if data.get("aspect_ratio"):
        params["aspectRatio"] = data["aspect_ratio"]
    return {"prompt": data.get("prompt") or parent.prompt, "params": params, "parent": parent}


def new_seed(avoid: int | None = None) -> int:
    """A random 32-bit seed other than ``avoid``."""
    seed = secrets.randbits(32)
    return seed ^ 1 if seed == avoid else seed


def _describe(account: Account, data: dict[str, Any]) -> dict[str, Any]:
    return {"params": _with_process_mode({"imageUrl": data["image_url"]}, data)}


def _blend(account: Account, data: dict[str, Any]) -> dict[str, Any]:
    params = {"imageUrls": data["image_urls"], "dimension": data["dimension"]}
    return {"params": _with_process_mode(params, data)}


def _with_process_mode(params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Record the original API's process_mode, when given (it cannot change the speed here)."""
    if data.get("process_mode"):
        params["processMode"] = data["process_mode"]
    return params


def _upscale(account: Account, data: dict[str, Any]) -> dict[str, Any]:
    return {"parent": find_parent(account, data["job_id"], "upscale"), "index": data["index"]}


def _variation(account: Account, data: dict[str, Any]) -> dict[str, Any]:
    """Four images like one tile of a grid (index 1-4), or like an upscaled image (strong or subtle)."""
    index, params = data["index"], {}
    if index in VARY_STRENGTHS:
        parent = find_parent(account, data["job_id"], f"a {index} variation", UPSCALE_TYPES)
        index, params["strength"] = None, data["index"]
    else:
        parent = find_parent(account, data["job_id"], "variation")
    if data.get("aspect_ratio"):
        params["aspectRatio"] = data["aspect_ratio"]
    return {"parent": parent, "index": index, "params": params, "prompt": data.get("prompt")}


def _upscale_alt(account: Account, data: dict[str, Any]) -> dict[str, Any]:
    parent = find_parent(account, data["job_id"], "upscale-alt", ("upscale",))
    return {"parent": parent, "params": {"type": data["type"]}}


def _upscale_highres(account: Account, data: dict[str, Any]) -> dict[str, Any]:
    """An image at a URL, an upscaled image, or one tile (``index``) of a grid, enlarged 2x or 4x."""
    params = {"type": data["type"]}
    if data.get("image_url"):
        return {"params": {**params, "imageUrl": data["image_url"]}}
    parent, index = find(account, data["job_id"]), data.get("index")
    if parent.type in GRID_TYPES:
        check_parent(parent, "upscale-highres", GRID_TYPES)
        if index is None:
            raise validation_error(
                f"The 'index' field is required: job {parent.id} has four images; say which one (1-4)."
            )
        return {"parent": parent, "index": index, "params": params}
    check_parent(parent, "upscale-highres", UPSCALE_TYPES)
    if index is not None:
        raise validation_error(
            f"The 'index' field is only for jobs with four images; job {parent.id} has one."
        )
    return {"parent": parent, "params": params}


def _seed(account: Account, data: dict[str, Any]) -> dict[str, Any]:
    return {"parent": find(account, data["job_id"])}


# What each operation stores, from its validated request: prompt, params, parent and index.
_INPUTS: dict[str, Callable[[Account, dict[str, Any]], dict[str, Any]]] = {
    "imagine": _imagine,
    "reroll": _reroll,
    "describe": _describe,
    "blend": _blend,
    "upscale": _upscale,
    "variation": _variation,
    "upscale-alt": _upscale_alt,
    "upscale-highres": _upscale_highres,
    "seed": _seed,
}


# Accepting a job is on the path of every create request, so its INSERT is compiled once.
_INSERTED = (
    Job.id, Job.account, Job.type, Job.status, Job.prompt, Job.params, Job.parent, Job.index, Job.cost,
    Job.progress, Job.runs, Job.webhook_url, Job.webhook_secret, Job.webhook_status, Job.webhook_attempts,
    Job.origin, Job.created_at,
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
    origin: str = REFERENCE,
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
        origin=origin,
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
