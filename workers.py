"""The worker pool: claims jobs from the database, runs them through their provider, ends them.

The pool is fed from the database, never from memory. A dispatcher thread claims jobs with one
compare-and-swap UPDATE each (so no two threads or processes run the same job) and hands them to a
ThreadPoolExecutor. The process renews a lease on the jobs it holds; a job whose lease ran out
belongs to a process that died, and is claimed again (resumed) or, if past its deadline, timed out.
Every write a running job makes is conditional on its lease token, so a job that was cancelled,
timed out or taken over can never be changed by the thread that lost it.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app
from peewee import Expression, fn
from PIL import Image

import imaging
import storage
from fetch import FetchError, fetch_bytes
from jobs import (
    ACTIVE,
    BLEND_DIMENSIONS,
    CANCELLED,
    FAILED,
    HIGHRES_FACTORS,
    PENDING,
    PROCESSING,
    PROVIDER_OPERATIONS,
    QUEUED,
    SUCCEEDED,
    TIMED_OUT,
    UPSCALE_TYPES,
    VARY_STRENGTHS,
    finish,
)
from leasing import LeasedDispatcher
from models import Job, utcnow
from providers import (
    BlendRequest,
    DescribeRequest,
    ImagineRequest,
    JobCancelled,
    JobTimedOut,
    ProviderError,
    Result,
    UpscaleRequest,
    VariationRequest,
)

log = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL = 0.2  # seconds between progress writes of one job
STATUS_POLL_INTERVAL = 1.0  # how often a running job looks for cancellation by another process
OVERDUE_GRACE = 2.0  # the sweep times a job out this long after its own deadline check should have
MAX_HIGHRES_SIDE = 2048  # upscale-highres refuses larger inputs, as the original API does


class InputError(Exception):
    """A job's input (an image URL, a parent image) could not be used; the message says why."""


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

    def progress(self, percent: int) -> None:
        """Record progress (kept rising, at most 99) and stop if the job was taken away."""
        self.check()
        percent = max(0, min(99, int(percent)))
        now = time.monotonic()
        if percent <= self.reported or now - self.last_write < PROGRESS_WRITE_INTERVAL:
            return
        updated = (
            Job.update(progress=percent)
            .where((Job.id == self.job_id) & (Job.lease_token == self.token) & (Job.status == PROCESSING))
            .execute()
        )
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
            still_ours = (
                Job.select(Job.id)
                .where((Job.id == self.job_id) & (Job.lease_token == self.token) & (Job.status == PROCESSING))
                .exists()
            )
            if not still_ours:
                raise JobCancelled()

    def sleep(self, seconds: float) -> None:
        """Wait up to ``seconds``, waking at once on cancellation or the deadline."""
        self.check()
        self.cancelled.wait(max(0.0, min(seconds, self.deadline - time.monotonic())))
        self.check()

    def remaining(self) -> float:
        """Seconds until the deadline."""
        return max(0.0, self.deadline - time.monotonic())


class JobPool(LeasedDispatcher):
    """One process's job workers: claims runnable jobs and runs them through their providers."""

    model = Job
    name = "job"

    def __init__(self, app: Flask) -> None:
        super().__init__(app, int(app.config["WORKERS"]))
        self.timeout = float(app.config["JOB_TIMEOUT"])

    def _held(self) -> Expression:
        return Job.status.in_((QUEUED, PROCESSING))

    def _maintain(self) -> None:
        self._time_out_overdue()

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
        if finish(job_id, TIMED_OUT, error=self._timeout_message()):
            self.interrupt(job_id)

    def _timeout_message(self) -> str:
        return f"The job ran longer than the {self.timeout:g} second limit."

    # ---- running one job ---------------------------------------------------------------------

    def _run(self, job_id: uuid.UUID, token: str, cancelled: threading.Event) -> None:
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
        try:
            ctx.check()
            fields = execute(job, ctx)
            if not finish(job_id, SUCCEEDED, token=token, progress=100, **fields):
                self._discard(job_id)
        except JobTimedOut:
            finish(job_id, TIMED_OUT, token=token, error=self._timeout_message())
            self._discard(job_id)
        except JobCancelled:
            self._discard(job_id)
        except (InputError, ProviderError) as exc:
            finish(job_id, FAILED, token=token, error=str(exc))
            self._discard(job_id)
        except Exception:
            log.exception("job %s failed", job_id)
            finish(job_id, FAILED, token=token, error="An internal error occurred while processing the job.")
            self._discard(job_id)

    def _discard(self, job_id: uuid.UUID) -> None:
        """Remove images of a job that did not succeed (unless another worker has it now)."""
        status = Job.select(Job.status).where(Job.id == job_id).scalar()
        if status in (FAILED, TIMED_OUT, CANCELLED):
            storage.delete_images(job_id)


# ---- what a job does -------------------------------------------------------------------------


def execute(job: Job, ctx: RunningJob) -> dict[str, Any]:
    """Gather the job's inputs, run its provider, store its images; returns the fields to save."""
    if job.type == "seed":
        return {"seed": parent_seed(job)}
    operation = PROVIDER_OPERATIONS[job.type]
    provider = current_app.extensions["apiframe.providers"].for_operation(operation)
    request = build_request(job, ctx)
    ctx.check()
    result = provider.run(operation, request, ctx)
    ctx.check()
    fields = store_result(job, result)
    fields.update(provider=provider.name, provider_ref=result.ref, seed=result.seed)
    return fields


def parent_seed(job: Job) -> int:
    """The seed of a seed job's parent, or InputError saying why it has none."""
    parent = parent_of(job)
    if parent.seed is not None:
        return parent.seed
    if parent.status != SUCCEEDED:
        raise InputError(f"Job {parent.id} is {parent.status}; only a succeeded job has a seed.")
    raise InputError(f"Job {parent.id} ({parent.type}) has no seed; only jobs with four images have one.")


def build_request(job: Job, ctx: RunningJob) -> Any:
    """The provider request for ``job``, with its input images fetched or loaded."""
    return _REQUESTS[job.type](job, ctx)


def _imagine_request(job: Job, ctx: RunningJob) -> ImagineRequest:
    params = job.params
    width, height = imaging.dimensions(params["aspectRatio"], params["quality"])
    return ImagineRequest(
        prompt=job.prompt,
        width=width,
        height=height,
        aspect_ratio=params["aspectRatio"],
        version=params["version"],
        quality=params["quality"],
        style=params.get("style"),
        chaos=params["chaos"],
        stylize=params["stylize"],
        seed=params.get("seed"),
    )


def _describe_request(job: Job, ctx: RunningJob) -> DescribeRequest:
    url = job.params["imageUrl"]
    return DescribeRequest(image=fetch_image(url, "imageUrl", ctx), url=url)


def _blend_request(job: Job, ctx: RunningJob) -> BlendRequest:
    urls = job.params["imageUrls"]
    images = [fetch_image(url, f"imageUrls[{i + 1}]", ctx) for i, url in enumerate(urls)]
    width, height = imaging.dimensions(BLEND_DIMENSIONS[job.params.get("dimension", "square")])
    return BlendRequest(images=images, urls=list(urls), width=width, height=height)


def _upscale_request(job: Job, ctx: RunningJob) -> UpscaleRequest:
    parent = parent_of(job)
    return UpscaleRequest(image=parent_tile(parent, job.index), index=job.index, **made_by(parent))


def _upscale_alt_request(job: Job, ctx: RunningJob) -> UpscaleRequest:
    parent = parent_of(job)
    return UpscaleRequest(
        image=parent_tile(parent, 1), index=parent.index or 1, mode=job.params["type"], **made_by(parent)
    )


def _upscale_highres_request(job: Job, ctx: RunningJob) -> UpscaleRequest:
    """An image at a URL, or of the parent job (the tile ``index`` of a grid), of at most 2048x2048."""
    if job.params.get("imageUrl"):
        image, index, source = fetch_image(job.params["imageUrl"], "imageUrl", ctx), 1, {}
    else:
        parent = parent_of(job)
        image, index, source = parent_tile(parent, job.index or 1), job.index or 1, made_by(parent)
    if image.width > MAX_HIGHRES_SIDE or image.height > MAX_HIGHRES_SIDE:
        raise InputError(
            f"The image is {image.width}x{image.height}; upscale-highres takes images of at most "
            f"{MAX_HIGHRES_SIDE}x{MAX_HIGHRES_SIDE}."
        )
    factor = HIGHRES_FACTORS[job.params["type"]]
    return UpscaleRequest(image=image, index=index, factor=factor, mode="highres", **source)


def _variation_request(job: Job, ctx: RunningJob) -> VariationRequest:
    """Tile ``index`` of a grid, or an upscaled image (``strength`` strong or subtle), reframed if asked."""
    parent, params = parent_of(job), job.params
    image = parent_tile(parent, job.index or 1)
    if params.get("aspectRatio"):
        image = imaging.reframe(image, params["aspectRatio"])
    strength = {"strength": VARY_STRENGTHS[params["strength"]]} if params.get("strength") else {}
    return VariationRequest(
        image=image,
        index=job.index or parent.index or 1,
        prompt=job.prompt or parent.prompt,
        mode=params.get("strength"),
        **strength,
        **made_by(parent),
    )


_REQUESTS: dict[str, Callable[[Job, RunningJob], Any]] = {
    "imagine": _imagine_request,
    "reroll": _imagine_request,
    "describe": _describe_request,
    "blend": _blend_request,
    "upscale": _upscale_request,
    "upscale-alt": _upscale_alt_request,
    "upscale-highres": _upscale_highres_request,
    "variation": _variation_request,
}


def parent_of(job: Job) -> Job:
    """The job's parent, or InputError if it was deleted."""
    parent = job.parent
    if parent is None:
        raise InputError("The parent job no longer exists.")
    return parent


def made_by(parent: Job) -> dict[str, str | None]:
    """Which provider made the parent, and its id there (``parent_ref`` and ``parent_provider``)."""
    return {"parent_ref": parent.provider_ref, "parent_provider": parent.provider}


def fetch_image(url: str, field: str, ctx: RunningJob) -> Image.Image:
    """Download and decode one input image through the safe fetcher."""
    config = current_app.config
    ctx.check()
    try:
        data = fetch_bytes(
            url,
            allow_private=config["ALLOW_PRIVATE_URLS"],
            max_bytes=config["FETCH_MAX_BYTES"],
            timeout=max(1.0, min(config["FETCH_TIMEOUT"], ctx.remaining())),
        )
        return imaging.decode(data, config["MAX_IMAGE_PIXELS"])
    except (FetchError, imaging.ImageError) as exc:
        raise InputError(f"Could not use {field} {url}: {exc}.") from None


def parent_tile(parent: Job, index: int) -> Image.Image:
    """Load tile ``index`` (1-4) of a finished job from storage."""
    try:
        return imaging.flatten(storage.load_image(parent.id, parent.tiles[index - 1]))
    except (OSError, LookupError, TypeError):  # storage.MissingImage is a LookupError
        raise InputError(f"Image {index} of job {parent.id} is no longer available.") from None


def store_result(job: Job, result: Result) -> dict[str, Any]:
    """Write the result's images (or keep its text); returns the job fields that describe it."""
    if job.type == "describe":
        descriptions = [str(text) for text in (result.descriptions or []) if str(text).strip()]
        if len(descriptions) < 4:
            raise ProviderError("The provider returned fewer than four descriptions.")
        return {"descriptions": descriptions[:4]}
    if job.type in UPSCALE_TYPES:
        if result.image is None:
            raise ProviderError("The provider returned no image.")
        names = storage.save_images(job.id, {"image": result.image})
        return {"grid": None, "tiles": [names["image"]]}
    tiles = result.tiles or (imaging.split_grid(result.grid) if result.grid is not None else None)
    if not tiles or len(tiles) != 4:
        raise ProviderError("The provider did not return four images.")
    grid = result.grid if result.grid is not None else imaging.compose_grid(tiles)
    names = storage.save_images(job.id, {"grid": grid, **{str(i + 1): tile for i, tile in enumerate(tiles)}})
    return {"grid": names["grid"], "tiles": [names[str(i + 1)] for i in range(4)]}
