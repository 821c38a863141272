"""The worker pool: claims jobs from the database, runs them through their provider, ends them.

The pool is fed from the database, never from memory. A dispatcher thread claims jobs with one
compare-and-swap UPDATE each (so no two threads or processes run the same job) and hands them to a
ThreadPoolExecutor. The process renews a lease on the jobs it holds; a job whose lease ran out
belongs to a process that died, and is claimed again (resumed) or, if past its deadline, timed out.
Every write a running job makes is conditional on its lease token, so a job that was cancelled,
timed out or taken over can never be changed by the thread that lost it. A moment's database outage
costs a running job only the record of its progress: its end is written once the database is back.
"""

from __future__ import annotations

import datetime
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app
from peewee import Expression, fn
from PIL import Image

import allocator
import imagemeta
import imaging
import operations
import retention
import storage
from inputs import InputError
from jobs import (
    ACTIVE,
    CANCELLED,
    FAILED,
    PENDING,
    PROCESSING,
    QUEUED,
    SUCCEEDED,
    TIMED_OUT,
    finish,
    fold_queue_counts,
    job_accepted,
    job_finished,
)
from leasing import LeasedDispatcher
from models import Job, db, is_sqlite, unavailable, utcnow
from providers import JobCancelled, JobTimedOut, ProviderError, Result
from providers import configured as configured_providers

log = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL = 0.2  # seconds between progress writes of one job
STATUS_POLL_INTERVAL = 1.0  # how often a running job looks for cancellation by another process
OVERDUE_GRACE = 2.0  # the sweep times a job out this long after its own deadline check should have
DATABASE_RETRY_INTERVAL = 1.0  # while the database cannot be used, how often a job tries it again
EXTENSION = "apiframe.pool"

T = TypeVar("T")


class RunningJob:
    """The JobContext of one job running on one worker thread."""

    def __init__(self, job: Job, token: str, deadline: float, cancelled: threading.Event) -> None:
        self.job_id = job.id
        self.token = token
        self.deadline = deadline
        self.cancelled = cancelled
        self.reported = job.progress
        self.last_write = 0.0
        self.last_poll = time.monotonic()
        self.offline_until = 0.0  # while the database cannot be used: when to try it again

    def progress(self, percent: int) -> None:
        """Record progress (kept rising, at most 99) and stop if the job was taken away."""
        self.check()
        percent = max(0, min(99, int(percent)))
        now = time.monotonic()
        if percent <= self.reported or now - self.last_write < PROGRESS_WRITE_INTERVAL:
            return
        updated = self._ask(
            Job.update(progress=percent)
            .where((Job.id == self.job_id) & (Job.lease_token == self.token) & (Job.status == PROCESSING))
            .execute
        )
        if updated is None:
            return
        if updated != 1:
            raise JobCancelled()
        self.reported, self.last_write, self.last_poll = percent, now, now

    def check(self) -> None:
        """Raise if the job was cancelled, taken over, or is past its deadline."""
        if self.cancelled.is_set():
            raise JobCancelled()
        now = time.monotonic()
        if now >= self.deadline:
            raise JobTimedOut()
        if now - self.last_poll >= STATUS_POLL_INTERVAL:
            self.last_poll = now
            still_ours = self._ask(
                Job.select(Job.id)
                .where((Job.id == self.job_id) & (Job.lease_token == self.token) & (Job.status == PROCESSING))
                .exists
            )
            if still_ours is False:
                raise JobCancelled()

    def sleep(self, seconds: float) -> None:
        """Wait up to ``seconds``, waking at once on cancellation or the deadline."""
        self.check()
        self.cancelled.wait(max(0.0, min(seconds, self.deadline - time.monotonic())))
        self.check()

    def remaining(self) -> float:
        """Seconds until the deadline."""
        return max(0.0, self.deadline - time.monotonic())

    def _ask(self, statement: Callable[[], T]) -> T | None:
        """Run ``statement``; None, without waiting, while the database cannot be used.

        The provider's run goes on through a database outage: its progress is then not recorded, and
        only the job's end has to be written (which waits for the database, ``JobPool._end``).
        """
        now = time.monotonic()
        if now < self.offline_until:
            return None
        try:
            answer = statement()
        except Exception as exc:
            if not unavailable(exc):
                raise
            if not self.offline_until:  # one line per outage
                log.warning(
                    "job %s: the database cannot be used (%s); running on without recording progress",
                    self.job_id, str(exc).strip(),
                )  # fmt: skip
            self.offline_until = now + DATABASE_RETRY_INTERVAL
            _drop_connection()
            return None
        self.offline_until = 0.0
        return answer


class JobPool(LeasedDispatcher):
    """One process's job workers: claims runnable jobs and runs them through their providers."""

    model = Job
    name = "job"

    def __init__(self, app: Flask) -> None:
        super().__init__(app, int(app.config["WORKERS"]))
        self.timeout = float(app.config["JOB_TIMEOUT"])
        self.retention = retention.Schedule(app)
        job_accepted.connect(self._on_accepted, sender=app)
        job_finished.connect(self._on_finished, sender=app)

    def stop(self, wait: bool = True) -> None:
        self.retention.stop()
        super().stop(wait)

    def _on_accepted(self, app: Flask, job: Job) -> None:
        self.nudge()

    def _on_finished(self, app: Flask, job: Job) -> None:
        if job.status in (CANCELLED, TIMED_OUT):  # stop it here if this process runs it
            self.interrupt(job.id)

    def _held(self) -> Expression:
        return Job.status.in_((QUEUED, PROCESSING))

    def _maintain(self) -> None:
        self._time_out_overdue()
        if not is_sqlite():
            fold_queue_counts()
        self.retention.run_if_due()

    def _dispatch(self) -> None:
        """Claim as many runnable jobs as there are idle workers, oldest first."""
        while (free := self._free_slots()) > 0 and not self._stopping.is_set():
            now = utcnow()
            candidates = list(
                Job.select(Job.id, Job.status, Job.lease_token, Job.started_at)
                .where(Job.status.in_(ACTIVE) & (Job.lease_expires.is_null() | (Job.lease_expires < now)))
                .order_by(Job.created_at)
                .limit(free)
            )
            if not candidates:
                return
            claimed = 0
            for candidate in candidates:
                if self._past_deadline(candidate, now):
                    self._end_overdue(candidate.id)
                elif (token := self._claim(candidate, now)) is not None:
                    self._submit(candidate.id, token)
                    claimed += 1
            if claimed == 0 and len(candidates) < free:
                return

    def _past_deadline(self, job: Job, now: datetime.datetime) -> bool:
        return job.started_at is not None and (now - job.started_at).total_seconds() >= self.timeout

    def _claim(self, job: Job, now: datetime.datetime) -> str | None:
        """Take ``job`` if it is still as we saw it (pending ones become queued); returns the token."""
        status = QUEUED if job.status == PENDING else job.status
        return self._take(job, now, Job.status == job.status, status=status)

    def _time_out_overdue(self) -> None:
        """End jobs that ran past the timeout, even if their thread is stuck."""
        cutoff = utcnow() - datetime.timedelta(seconds=self.timeout + OVERDUE_GRACE)
        overdue = Job.select(Job.id).where(Job.status.in_((QUEUED, PROCESSING)) & (Job.started_at < cutoff))
        for job in overdue:
            self._end_overdue(job.id)

    def _end_overdue(self, job_id: uuid.UUID) -> None:
        finish(job_id, TIMED_OUT, error=self._timeout_message())

    def _timeout_message(self) -> str:
        return f"The job ran longer than the {self.timeout:g} second limit."

    # ---- running one job ---------------------------------------------------------------------

    def _run(self, job_id: uuid.UUID, token: str, cancelled: threading.Event) -> None:
        """Run one claimed job to its end, then give back the memory its images took."""
        try:
            self._run_to_end(job_id, token, cancelled)
        finally:
            allocator.release_free_memory()

    def _run_to_end(self, job_id: uuid.UUID, token: str, cancelled: threading.Event) -> None:
        """Run one claimed job to its end."""
        started = (
            Job.update(status=PROCESSING, started_at=fn.COALESCE(Job.started_at, utcnow()), runs=Job.runs + 1)
            .where((Job.id == job_id) & (Job.lease_token == token) & Job.status.in_((QUEUED, PROCESSING)))
            .execute()
        )
        if started != 1:
            return
        job = Job.get_by_id(job_id)
        left = self.timeout - (utcnow() - job.started_at).total_seconds()
        ctx = RunningJob(job, token, time.monotonic() + left, cancelled)
        end = functools.partial(self._end, job_id, token, cancelled)
        try:
            ctx.check()
            fields = execute(job, ctx)
            end(SUCCEEDED, progress=100, **fields)
        except JobTimedOut:
            end(TIMED_OUT, error=self._timeout_message())
        except JobCancelled:
            self._discard(job_id)
        except (InputError, ProviderError) as exc:
            end(FAILED, error=str(exc))
        except storage.StorageUnavailable as exc:
            log.warning("job %s failed: %s", job_id, exc)
            end(FAILED, error=f"{exc} The credits were refunded; try again later.")
        except Exception as exc:
            if unavailable(exc):  # the job is left to its lease, and runs again
                raise
            log.exception("job %s failed", job_id)
            end(FAILED, error="An internal error occurred while processing the job.")

    def _end(
        self, job_id: uuid.UUID, token: str, cancelled: threading.Event, status: str, **fields: Any
    ) -> None:
        """End the job as ``status`` (unless it ended or was taken over meanwhile), and remove its images
        unless it succeeded.

        While the database cannot be used, this is tried again on a fresh connection, for as long as a
        lease lasts: the dispatcher renews the job's lease meanwhile (once it can), so no other process
        takes the job up; one that did once the lease ran out holds another token, and this ends nothing.
        """
        give_up = time.monotonic() + self.lease.total_seconds()
        outage = False
        while True:
            try:
                if not finish(job_id, status, token=token, **fields) or status != SUCCEEDED:
                    self._discard(job_id)  # a SUCCEEDED job that ended all the same is another's to keep
                return
            except Exception as exc:
                stopped = cancelled.is_set() and self._stopping.is_set()  # the pool stops without waiting
                if not unavailable(exc) or time.monotonic() >= give_up or stopped:
                    raise
                if not outage:
                    log.warning(
                        "job %s: the database cannot be used (%s); trying again to end it as %s",
                        job_id, str(exc).strip(), status,
                    )  # fmt: skip
                    outage = True
                _drop_connection()
                time.sleep(DATABASE_RETRY_INTERVAL)

    def _discard(self, job_id: uuid.UUID) -> None:
        """Remove images of a job that did not succeed (unless another worker has it now)."""
        status = Job.select(Job.status).where(Job.id == job_id).scalar()
        if status in (FAILED, TIMED_OUT, CANCELLED):
            try:
                storage.delete_images(job_id)
            except storage.StorageUnavailable:
                log.warning("job %s: its images could not be removed from the unreachable storage", job_id)


def _drop_connection() -> None:
    """Give back this thread's connection, which an outage may have cut: the next statement opens another."""
    if not db.is_closed():
        db.close()


# ---- what a job does -------------------------------------------------------------------------


def execute(job: Job, ctx: RunningJob) -> dict[str, Any]:
    """Gather the job's inputs, run its provider, store its result; returns the fields to save."""
    operation = operations.get(job.type)
    if operation.compute is not None:
        return operation.compute(job)
    provider = configured_providers().for_operation(operation.provider, job.params.get("provider"))
    request = operation.build(job, ctx)
    ctx.check()
    result = provider.run(operation.provider, request, ctx)
    ctx.check()
    fields = store_result(job, operation, result, provider.name)
    fields.update(provider=provider.name, provider_ref=result.ref, seed=result.seed)
    return fields


def store_result(job: Job, operation: operations.Operation, result: Result, provider: str) -> dict[str, Any]:
    """Write the result's images (or keep its text), made by ``provider``; returns the job fields that
    describe them."""
    kind = operation.result
    if kind == operations.TEXT:
        descriptions = [str(text) for text in (result.descriptions or []) if str(text).strip()]
        if len(descriptions) < operation.texts:
            raise ProviderError(f"The provider returned fewer than {operation.texts} texts.")
        tokens = [[str(word), float(weight)] for word, weight in result.tokens] if result.tokens else None
        return {"descriptions": descriptions[: operation.texts], "tokens": tokens}
    if kind == operations.IMAGE:
        if result.image is None:
            raise ProviderError("The provider returned no image.")
        images = {"image": result.image}
        names = storage.save_images(job.id, images, _texts(job, result, images, provider))
        return {"grid": None, "tiles": [names["image"]]}
    tiles = result.tiles or (imaging.split_grid(result.grid) if result.grid is not None else None)
    if not tiles or len(tiles) != 4:
        raise ProviderError("The provider did not return four images.")
    grid = result.grid if result.grid is not None else imaging.compose_grid(tiles)
    images = {"grid": grid, **{str(i + 1): tile for i, tile in enumerate(tiles)}}
    names = storage.save_images(job.id, images, _texts(job, result, images, provider))
    return {"grid": names["grid"], "tiles": [names[str(i + 1)] for i in range(4)]}


def _texts(
    job: Job, result: Result, images: dict[str, Image.Image], provider: str
) -> dict[str, str | None]:
    """Each image's ``parameters`` text: the job's provider, prompt and settings, and which tile it is; an
    upscale's (which has no prompt of its own) are those of the grid tile it enlarges."""
    one_image = operations.result_of(job.type) == operations.IMAGE
    index = job.index if one_image else None
    prompt, params, seed, source = job.prompt, job.params or {}, result.seed, None
    enlarged = _enlarged_tile(job) if one_image and not prompt else None
    if enlarged is not None:
        grid, index = enlarged
        prompt, params, seed, source = grid.prompt, grid.params or {}, grid.seed, grid.type
        provider = grid.provider or provider
    return {
        stem: imagemeta.job_text(
            job.type, provider, prompt, params, seed, image, int(stem) if stem.isdigit() else index, source
        )
        for stem, image in images.items()
    }


def _enlarged_tile(job: Job) -> tuple[Job, int] | None:
    """The grid and tile number a one-image job without a prompt enlarges (through upscales of upscales)."""
    for _ in range(16):
        parent = job.parent
        kind = operations.result_of(parent.type) if parent is not None else None
        if kind == operations.GRID:
            return (parent, job.index) if job.index else None
        if kind != operations.IMAGE:
            return None
        job = parent
    return None


def pool() -> JobPool:
    """The current app's job pool."""
    return current_app.extensions[EXTENSION]


def init_app(app: Flask) -> JobPool:
    """Give ``app`` its job pool (not started)."""
    app.extensions[EXTENSION] = JobPool(app)
    return app.extensions[EXTENSION]
