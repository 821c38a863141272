"""Waiting for jobs to end, for APIs that answer synchronously (the OpenAI Images API).

A waiting request sleeps on an event that the ``job_finished`` signal sets, so it costs no CPU and no
database connection while it waits; it looks at the database again only every few seconds, for jobs
that another process ends (a look that finds the database unusable for now, down or restarting, does
not end the wait: the next one reads again). Each process lets a bounded number of requests wait at
once, so waiting requests can never take every server thread: one more gets ``Busy`` before any job
is created. When the process stops (``stop``), every waiting request is woken to answer at once, not
cut off unanswered at the end of gunicorn's graceful timeout.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from flask import Flask, current_app

from jobs import SUCCEEDED, TERMINAL, job_finished
from models import Job, db, unavailable

log = logging.getLogger(__name__)

EXTENSION = "apiframe.waits"
RECHECK = 2.0  # seconds between looks at the database, for jobs ended by another process


class Busy(Exception):
    """Every waiting slot of this process is taken."""


class Waits:
    """One process's waiting requests: a bounded number of slots, woken when their jobs end."""

    def __init__(self, app: Flask, slots: int) -> None:
        self.slots = slots
        self._free = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._waiting: dict[uuid.UUID, set[threading.Event]] = {}
        self.held = 0  # slots taken now
        self.stopping = False  # the process is stopping: no request waits any longer
        job_finished.connect(self._on_finished, sender=app)

    def stop(self) -> None:
        """Wake every waiting request, and any that starts waiting after, to answer now."""
        with self._lock:
            self.stopping = True
            events = [event for waiting in self._waiting.values() for event in waiting]
        for event in events:
            event.set()

    def _on_finished(self, app: Flask, job: Job) -> None:
        with self._lock:
            events = list(self._waiting.get(job.id, ()))
        for event in events:
            event.set()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one waiting slot for the block, or raise Busy at once if none is free."""
        if not self._free.acquire(blocking=False):
            raise Busy()
        with self._lock:
            self.held += 1
        try:
            yield
        finally:
            with self._lock:
                self.held -= 1
            self._free.release()

    def wait(self, accepted: Sequence[Job], timeout: float) -> list[Job]:
        """The jobs, once all have ended or one has ended without success (the request has no answer
        with images then); or else once ``timeout`` seconds have passed or the process stops (then some
        are still active). While the database cannot be used, the jobs are as last read (at first, as
        ``accepted``), and are read again at the next look."""
        watching = self.watch(accepted, timeout)
        try:
            return next(found for found in watching if found is not None)
        finally:
            watching.close()

    def watch(
        self, accepted: Sequence[Job], timeout: float, beat: float = math.inf
    ) -> Iterator[list[Job] | None]:
        """``wait``, for a stream: it yields None every ``beat`` seconds while the jobs run, then the
        jobs as ``wait`` returns them."""
        job_ids = [job.id for job in accepted]
        event = threading.Event()
        with self._lock:
            for job_id in job_ids:
                self._waiting.setdefault(job_id, set()).add(event)
        now = time.monotonic()
        deadline, next_beat = now + timeout, now + beat
        found, failing = list(accepted), False
        try:
            while True:
                event.clear()
                try:
                    found, failing = _load(job_ids), False
                except Exception as exc:
                    if not unavailable(exc):
                        raise
                    if not failing:  # a line per outage, not a traceback per look
                        log.warning(
                            "a synchronous request could not read its jobs: database unavailable (%s); "
                            "reading again",
                            str(exc).strip(),
                        )
                    failing = True
                now = time.monotonic()
                left = deadline - now
                if _settled(found) or left <= 0 or self.stopping:
                    yield found
                    return
                if now >= next_beat:
                    yield None
                    next_beat = time.monotonic() + beat
                event.wait(min(left, RECHECK, max(0.0, next_beat - time.monotonic())))
        finally:
            with self._lock:
                for job_id in job_ids:
                    waiting = self._waiting.get(job_id)
                    if waiting is not None:
                        waiting.discard(event)
                        if not waiting:
                            del self._waiting[job_id]


def _settled(found: Sequence[Job]) -> bool:
    """Whether waiting for ``found`` is over: every job has ended, or one ended without success."""
    ended = [job.status for job in found if job.status in TERMINAL]
    return len(ended) == len(found) or bool(set(ended) - {SUCCEEDED})


def _load(job_ids: Sequence[uuid.UUID]) -> list[Job]:
    """The jobs, in order, read on a connection given back at once (none is held while waiting)."""
    with db.connection_context():
        found = {job.id: job for job in Job.select().where(Job.id.in_(list(job_ids)))}
    return [found[job_id] for job_id in job_ids]


def init_app(app: Flask) -> Waits:
    """Give ``app`` its waiting slots (``SYNC_WAITERS`` of them)."""
    app.extensions[EXTENSION] = Waits(app, int(app.config["SYNC_WAITERS"]))
    return app.extensions[EXTENSION]


def waits() -> Waits:
    """The current app's waiting slots."""
    return current_app.extensions[EXTENSION]
