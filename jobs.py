"""Jobs: accepting them (with their credits), finding them, cancelling them, and ending them."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from blinker import Namespace
from flask import current_app, has_app_context
from peewee import SQL, Case, Tuple, fn
from PIL import Image

import credits
import idempotency
import ratelimit
import storage
import wakeup
from errors import insufficient_credits, not_found, validation_error
from models import Account, CompiledQuery, Job, QueueCount, Slot, WebhookDelivery, db, utcnow
from providers import configured as configured_providers

if TYPE_CHECKING:
    from operations import Operation

log = logging.getLogger(__name__)

PENDING, QUEUED, PROCESSING = "pending", "queued", "processing"
SUCCEEDED, FAILED, TIMED_OUT, CANCELLED = "succeeded", "failed", "timed_out", "cancelled"
ACTIVE = (PENDING, QUEUED, PROCESSING)
TERMINAL = (SUCCEEDED, FAILED, TIMED_OUT, CANCELLED)
REFUNDED = (FAILED, TIMED_OUT, CANCELLED)
STATUSES = ACTIVE + TERMINAL

# The API family a job was created through: it decides the shape of the job's webhook.
REFERENCE, ORIGINAL = "reference", "original"

# A job's webhookStatus: null without a webhookUrl, pending until delivered or given up on.
WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED = "pending", "delivered", "failed"
WEBHOOK_STATUSES = (WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED)

# Sent by the app (as sender) with ``job=`` once the transaction that accepted or ended a job has
# committed. The worker pool and the webhook sender listen, each for its own app.
_signals = Namespace()
job_accepted = _signals.signal("job-accepted")
job_finished = _signals.signal("job-finished")


def parse_id(value: Any, field: str = "id") -> uuid.UUID:
    """A job id from the client, or 400 naming ``field``."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise validation_error(f"The '{field}' field must be a job ID (a UUID).") from None


# An answer about a job read back counts the waiting jobs ahead of it: a COUNT(*) that the
# (status, created_at) index answers alone (peewee's .count() wraps a SELECT of every column).
# A new job's answer reads how many wait instead (_waiting_now), which the database keeps.
WAITING = (PENDING, QUEUED)
AHEAD = "waiting_ahead"  # a job read by find() or made by submit() carries its count, read with it


def _waiting_before(created_at: Any) -> Any:
    """The query counting the waiting jobs created before ``created_at`` (a value or a column)."""
    ahead = Job.alias("ahead")
    return ahead.select(fn.COUNT(SQL("*"))).where(ahead.status.in_(WAITING) & (ahead.created_at < created_at))


# Finding a job is on the path of every poll, so its SELECT is compiled once. Its queue position is
# counted in the same statement (a statement costs far more under concurrent requests than its SQL).
def _select_job() -> Any:
    waiting_ahead = Case(None, [(Job.status.in_(WAITING), _waiting_before(Job.created_at))])
    mine = (Job.id == Slot("id", Job.id)) & (Job.account == Slot("account", Job.account))
    return Job.select(Job, waiting_ahead.alias(AHEAD)).where(mine)


_job = CompiledQuery(_select_job)


def find(account: Account, job_id: uuid.UUID) -> Job:
    """The account's job with this id, or 404 (another account's job is never visible)."""
    return made(find_row(account, job_id))


def find_row(account: Account, job_id: uuid.UUID) -> Any:
    """The account's job row as the database gave it (equal rows, equal jobs), or 404; ``made`` makes it."""
    row = _job.row(id=job_id, account=account.id)
    if row is None:
        raise not_found(f"Job {job_id} was not found.")
    return row


def made(row: Any) -> Job:
    """The job of a row from ``find_row``."""
    return _job.model(row)


def require_provider(operation: str, chosen: str | None = None) -> None:
    """400, before any credit is taken, if no configured provider (or not ``chosen``) can do ``operation``."""
    providers = configured_providers()
    if chosen:  # the job runs there, whatever the operation's own provider can do
        if not providers.for_operation(operation, chosen).supports(operation):
            raise validation_error(f"The {chosen} provider cannot do {operation} jobs.", {"model": [chosen]})
        return
    unsupported = providers.unsupported(operation)
    if unsupported:
        raise validation_error(unsupported)


def create(account: Account, operation: Operation, data: dict[str, Any], *, origin: str = REFERENCE) -> Job:
    """Accept a job of ``operation`` from a validated request (a loaded request schema), from anywhere.

    ``data["provider"]``, when given, names the configured provider the job runs on. Under an
    Idempotency-Key whose first request made this job already (and died unanswered), it is that job,
    neither counted nor paid for again.
    """
    made_before = idempotency.reuse()
    if made_before is not None:
        return find(account, made_before)
    ratelimit.count_create(account)
    chosen = data.get("provider")
    if operation.provider:
        require_provider(operation.provider, chosen)
    stored = operation.accept(account, data)
    if chosen:
        stored["params"] = {**(stored.get("params") or {}), "provider": chosen}
    return submit(
        account,
        operation.name,
        operation.cost,
        webhook_url=data.get("webhook_url"),
        webhook_secret=data.get("webhook_secret"),
        origin=origin,
        **stored,
    )


def _waiting_now() -> Any:
    """The query reading how many jobs wait, from the count the database keeps (QueueCount).

    A new job's INSERT returns it as it was before the job itself was counted: the jobs ahead of it.
    (PostgreSQL runs AFTER triggers at the statement's end; SQLite 3.40 computes RETURNING before the
    row's triggers run. tests/test_jobs.py checks both.)
    """
    return QueueCount.select(fn.COALESCE(fn.SUM(QueueCount.waiting), 0))


# The rows of server processes that have gone, unless another transaction holds them, moved into row 0.
_FOLD = """
WITH gone AS (
    DELETE FROM queue_count WHERE owner IN (
        SELECT owner FROM queue_count AS kept WHERE owner <> 0
        AND NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = kept.owner)
        FOR UPDATE SKIP LOCKED
    ) RETURNING waiting
)
UPDATE queue_count SET waiting = waiting + (SELECT SUM(waiting) FROM gone)
WHERE owner = 0 AND EXISTS (SELECT 1 FROM gone)
"""


def fold_queue_counts() -> None:
    """On PostgreSQL, move the queue counts kept by server processes that have gone into row 0.

    Each process's changes go to a row of its own (so none waits for another's), and these rows would
    otherwise pile up as connections come and go. The sum stays the same. A row another transaction
    holds (a fold in another process, or a new process given a gone one's id) is left for a later fold.
    """
    db.execute_sql(_FOLD)


# Accepting a job is on the path of every create request, so its INSERT is compiled once. The INSERT
# pays for the job too (credits.INSUFFICIENT). On PostgreSQL, ``announced`` adds the NOTIFY that wakes
# workers (wakeup.notification) to its answer, so a job accepted on its own is one round trip (the
# first of a burst: wakeup.Announcer announces the others).
_INSERTED = (
    Job.id, Job.account, Job.type, Job.status, Job.prompt, Job.params, Job.parent, Job.index, Job.cost,
    Job.progress, Job.runs, Job.webhook_url, Job.webhook_secret, Job.webhook_status, Job.webhook_attempts,
    Job.origin, Job.created_at,
)  # fmt: skip


def _inserting(announced: bool) -> Any:
    ahead = _waiting_now().alias(AHEAD)
    returned = (ahead, wakeup.notification("job")) if announced else (ahead,)
    return Job.insert({field: Slot(field.name, field) for field in _INSERTED}).returning(*returned)


_insert = {announced: CompiledQuery(functools.partial(_inserting, announced)) for announced in (False, True)}


def submit(
    account: Account,
    job_type: str,
    cost: int,
    *,
    prompt: str | None = None,
    params: dict[str, Any] | None = None,
    parent: Job | None = None,
    index: int | None = None,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    origin: str = REFERENCE,
    inputs: dict[str, Image.Image] | None = None,
) -> Job:
    """Accept a job: take its cost, store it and its ``inputs`` images in one transaction; wake workers.

    Under an Idempotency-Key, the job is recorded on the key in the same transaction. Inside
    ``all_or_none``, that transaction is part of the block's, and workers are woken when it commits.
    """
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
    values = {field.name: job.__data__.get(field.name) for field in _INSERTED}
    claim = idempotency.current()
    try:
        if inputs or claim is not None or db.in_transaction():
            # Several writes, or a part of a larger transaction: a savepoint there, so that a job that
            # cannot be paid for leaves the rest of it as it was (and its balance can be read).
            with db.atomic():
                setattr(job, AHEAD, _insert[False].execute(**values).fetchone()[0])
                if claim is not None:
                    idempotency.record(claim, job.id)
                if inputs:  # before the commit, so no worker sees the job without them
                    storage.save_images(job.id, inputs)
                wakeup.announce("job")  # idle workers in every process, once this commits
        else:  # the INSERT alone: its own transaction, which wakes idle workers in every process
            announcer = wakeup.announcer(current_app)
            announced = announcer is not None and announcer.take_turn()
            setattr(job, AHEAD, _insert[announced].execute(**values).fetchone()[0])
            if announcer is not None and not announced:
                announcer.follow_up()
    except Exception as exc:
        if inputs:
            storage.delete_images(job.id)
        if not credits.refused(exc):
            raise
        balance = credits.balance(account.id)
        raise insufficient_credits(
            f"This {job_type} costs {cost} credits and your balance is {balance}."
        ) from None
    batch = _batch.get()
    if batch is None:
        job_accepted.send(current_app._get_current_object(), job=job)
    else:
        batch.made.append(job)
        if inputs:
            batch.stored.append(job.id)
    return job


@dataclasses.dataclass
class _Batch:
    """The jobs ``submit`` made inside ``all_or_none``, and those of them that stored ``inputs`` images."""

    made: list[Job] = dataclasses.field(default_factory=list)
    stored: list[uuid.UUID] = dataclasses.field(default_factory=list)


_batch: ContextVar[_Batch | None] = ContextVar("jobs_batch", default=None)


@contextmanager
def all_or_none() -> Iterator[list[Job]]:
    """Accept several jobs in one transaction: if one is refused (not paid for, not stored), none is made.

    Yields the jobs made so far. The transaction holds the account's row (PostgreSQL) from the first
    debit, and the writer lock (SQLite) from its start, to the commit, so a concurrent request waits and
    then sees the true balance, instead of each paying for part of its jobs and both being refused. The
    work of accepting each job (its checks, its rate-limit count, storing its inputs) runs inside, so
    the lock is held for that long: tens of milliseconds for a large edit with a mask. If the block fails,
    the images the jobs' ``inputs`` stored are deleted, as their jobs no longer exist; if it commits,
    the pool hears of the jobs (job_accepted) only then, as it could not see them before. A job made
    before the block (reused under an Idempotency-Key) is not the block's to undo.
    """
    batch = _Batch()
    token = _batch.set(batch)
    try:
        with db.atomic():
            yield batch.made
    except BaseException:
        for job_id in batch.stored:
            storage.delete_images(job_id)
        raise
    finally:
        _batch.reset(token)
    for job in batch.made:
        job_accepted.send(current_app._get_current_object(), job=job)


def finish(job_id: uuid.UUID, status: str, *, token: str | None = None, **fields: Any) -> bool:
    """Move a job to a terminal ``status``, refunding if it did not succeed.

    Only an active job can end, and only once; with ``token``, only while that lease holds it.
    A job with a webhook URL gets its webhook delivery in the same transaction, so it is never lost.
    Returns whether this call ended the job.
    """
    if status not in TERMINAL:
        raise ValueError(f"not a terminal status: {status}")
    if fields.get("error"):  # a provider's words: PostgreSQL cannot store a NUL, and the job would never end
        fields["error"] = fields["error"].replace("\x00", "\ufffd")
    with db.atomic():
        query = Job.update(status=status, completed_at=utcnow(), lease_expires=None, **fields).where(
            (Job.id == job_id) & Job.status.in_(ACTIVE)
        )
        if token is not None:
            query = query.where(Job.lease_token == token)
        if query.execute() != 1:
            return False
        job = Job.get_by_id(job_id)
        if status == SUCCEEDED and job.tiles:  # GET /account's total_images, without summing history
            made = Account.images + len(job.tiles)
            Account.update(images=made).where(Account.id == job.account_id).execute()
        if status in REFUNDED:
            credits.refund(job, f"{job.type} job {status.replace('_', ' ')}")
        if job.webhook_url:
            WebhookDelivery.create(job=job.id, created_at=job.completed_at, next_attempt_at=job.completed_at)
            wakeup.announce("webhook")
    if has_app_context():
        try:
            job_finished.send(current_app._get_current_object(), job=job)
        except Exception:
            log.exception("a job-finished receiver failed for %s", job_id)
    return True


def cancel(account: Account, job_id: uuid.UUID) -> Job:
    """Cancel the account's job if it has not ended; 400 if it has."""
    job = find(account, job_id)
    if not finish(job.id, CANCELLED):
        job = find(account, job_id)
        raise validation_error(f"Job {job_id} is already {job.status} and cannot be cancelled.")
    return find(account, job_id)


_waiting = CompiledQuery(lambda: _waiting_before(Slot("created_at", Job.created_at)))


def queue_position(job: Job) -> int | None:
    """A waiting job's place in the queue (1: next to run), or None once it runs or has ended."""
    # The pool claims the oldest waiting job first, whoever it belongs to.
    if job.status not in WAITING:
        return None
    ahead = getattr(job, AHEAD, None)  # counted as the job was read, or counted now
    if ahead is None:
        ahead = _waiting.execute(created_at=job.created_at).fetchone()[0]
    return ahead + 1


def list_for(
    account: Account,
    *,
    limit: int,
    offset: int = 0,
    after: tuple[datetime.datetime, uuid.UUID] | None = None,
    status: str | None = None,
    job_type: str | None = None,
) -> list[Job]:
    """The account's jobs, newest first: ``offset`` jobs in, or the ones after the job ``after`` names.

    Both walk the (account, created_at, id) index in its order, so no page sorts the account's history;
    the index alone finds a page's ids, and only that page's rows are read.
    """
    page = Job.select(Job.id).where(Job.account == account.id)
    if status:
        page = page.where(Job.status == status)
    if job_type:
        page = page.where(Job.type == job_type)
    if after is not None:
        created_at, job_id = after
        position = Tuple(Job.created_at.to_value(created_at), Job.id.to_value(job_id))
        page = page.where(Tuple(Job.created_at, Job.id) < position)
    newest_first = (Job.created_at.desc(), Job.id.desc())
    page = page.order_by(*newest_first).limit(limit).offset(offset)
    return list(Job.select().where(Job.id.in_(page)).order_by(*newest_first))
