"""Job events over server-sent events: a job's status and progress as they change, then the finished job.

Each process has one ``Watcher``. It reads the rows of every job its streams follow in one query a
second (workers in any process write progress to the database) and is woken at once by
``jobs.job_finished`` for jobs ending in this process. It also wakes every stream when a key is
revoked or console sessions end in any process (keycache's counter), so that the streams of that key
or session end. A stream holds one of the server's threads while it is open, so the watcher caps open
streams per process and per key (a 429 says which): the rest of the server's threads stay free for
the API.
"""

from __future__ import annotations

import datetime
import functools
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, Response, current_app, json

import jobs
import keycache
from errors import ApiError
from models import Job, db, log_failure, unavailable, utcnow

log = logging.getLogger(__name__)

EXTENSION = "apiframe.events"
RETRY_MS = 2000  # how soon an EventSource reconnects after the stream closes
STREAM_RETRY_AFTER = 5  # seconds a client over a stream cap is asked to wait

T = TypeVar("T")


@dataclass(frozen=True)
class State:
    """What a stream tells about a job: its status, progress, place in the queue and time left."""

    status: str
    progress: int
    queue_position: int | None = None
    eta_seconds: int | None = None

    @property
    def event_id(self) -> str:
        """The id of the events sent in this state, which ``Last-Event-ID`` gives back on reconnecting."""
        return f"{self.status}.{self.progress}.{self.queue_position or 0}"

    @classmethod
    def from_event_id(cls, value: str | None) -> State | None:
        """The state a client had seen, from its ``Last-Event-ID``; None if absent or not ours."""
        status, _, rest = (value or "").partition(".")
        progress, _, place = rest.partition(".")
        if status not in jobs.STATUSES or not progress.isdigit() or not place.isdigit():
            return None
        return cls(status, int(progress), int(place) or None)


def eta_seconds(job: Job, now: datetime.datetime) -> int | None:
    """Seconds a running job has left, from its progress so far; None before there is any."""
    if job.status != jobs.PROCESSING or not job.started_at or not 0 < job.progress < 100:
        return None
    elapsed = max(0.0, (now - job.started_at).total_seconds())
    return round(elapsed * (100 - job.progress) / job.progress)


def state_of(job: Job) -> State:
    """The state of a job row (needs ``status``, ``progress``, ``created_at`` and ``started_at``)."""
    return State(job.status, job.progress, jobs.queue_position(job), eta_seconds(job, utcnow()))


@dataclass(frozen=True)
class Renderer:
    """How one API family shows a job's events: the ``status`` and ``progress`` data, and the final job."""

    status: Callable[[uuid.UUID, State], dict[str, Any]]
    progress: Callable[[uuid.UUID, State], dict[str, Any]]
    done: Callable[[Job], dict[str, Any]]


class Watcher:
    """One process's open event streams and the jobs they follow."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.max_streams = app.config["EVENT_STREAMS"]
        self.max_per_key = app.config["EVENT_STREAMS_PER_KEY"]
        self.interval = app.config["EVENT_POLL_INTERVAL"]
        self._changed = threading.Condition()
        self._generation = 0
        self._states: dict[uuid.UUID, State] = {}
        self._followers: Counter[uuid.UUID] = Counter()
        self._per_key: Counter[str] = Counter()
        self._streams = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        jobs.job_finished.connect(self._on_finished, sender=app)

    @property
    def open_streams(self) -> int:
        """How many streams are open in this process."""
        return self._streams

    def reserve(self, key: str, found: Iterable[Job]) -> list[uuid.UUID]:
        """Take a stream slot for ``key`` following the ``found`` jobs, or raise 429; returns their ids."""
        states = {job.id: state_of(job) for job in found}  # read before taking the lock
        with self._changed:
            if self._per_key[key] >= self.max_per_key:
                raise too_many(
                    f"This key already has {self.max_per_key} event streams open, the most one key may have "
                    "at once. Close one, or poll GET /v1/jobs/:id."
                )
            if self._streams >= self.max_streams:
                raise too_many(
                    f"This server already has {self.max_streams} event streams open, the most it holds at "
                    "once. Try again shortly, or poll GET /v1/jobs/:id."
                )
            self._streams += 1
            self._per_key[key] += 1
            for job_id, state in states.items():
                self._followers[job_id] += 1
                self._states.setdefault(job_id, state)
            self._start()
        return list(states)

    def release(self, key: str, job_ids: Iterable[uuid.UUID]) -> None:
        """Give back the slot ``reserve`` took."""
        with self._changed:
            self._streams -= 1
            self._per_key[key] -= 1
            if self._per_key[key] <= 0:
                del self._per_key[key]
            for job_id in job_ids:
                self._followers[job_id] -= 1
                if self._followers[job_id] <= 0:
                    del self._followers[job_id]
                    self._states.pop(job_id, None)

    def state(self, job_id: uuid.UUID) -> State | None:
        """The job's latest known state."""
        with self._changed:
            return self._states.get(job_id)

    def wait(self, generation: int, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for a change after ``generation``; returns the current one."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._generation != generation or self._stopping.is_set(), max(0.0, timeout)
            )
            return self._generation

    @property
    def generation(self) -> int:
        """A number that grows with every change the watcher sees."""
        with self._changed:
            return self._generation

    def stop(self) -> None:
        """Stop polling and wake every stream (they then end)."""
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()

    @property
    def stopping(self) -> bool:
        """Whether the watcher is stopping."""
        return self._stopping.is_set()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="apiframe-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        with self.app.app_context():
            keys = keycache.cache()
            keys_version = keys.version()
            while not self._stopping.wait(self.interval):
                with self._changed:
                    watched = list(self._followers)
                if not watched:
                    if not db.is_closed():
                        db.close()
                    continue
                version = keys.version()
                if version != keys_version:  # a key revoked (or sessions ended), in any process
                    keys_version = version
                    self._wake()  # so each stream checks its own key now
                try:
                    db.connect(reuse_if_open=True)
                    self._update(self._read(watched))
                except Exception as exc:
                    log_failure(log, exc, "reading the jobs of event streams", then="; reading again")
                    if not db.is_closed():
                        db.close()
            if not db.is_closed():
                db.close()

    @staticmethod
    def _read(job_ids: list[uuid.UUID]) -> dict[uuid.UUID, State]:
        rows = Job.select(Job.id, Job.status, Job.progress, Job.created_at, Job.started_at).where(
            Job.id.in_(job_ids)
        )
        return {row.id: state_of(row) for row in rows}

    def _update(self, states: dict[uuid.UUID, State]) -> None:
        with self._changed:
            changed = False
            for job_id, state in states.items():
                if job_id in self._followers and self._states.get(job_id) != state:
                    self._states[job_id] = state
                    changed = True
            if changed:
                self._wake()

    def _wake(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def _on_finished(self, _app: Flask, job: Job) -> None:
        self._update({job.id: State(job.status, job.progress)})


def too_many(message: str) -> ApiError:
    """429 for a stream over a cap; retrying soon may work."""
    return ApiError(429, "RATE_LIMITED", message, headers={"Retry-After": str(STREAM_RETRY_AFTER)})


def watcher() -> Watcher:
    """The current app's watcher."""
    return current_app.extensions[EXTENSION]


def sse(name: str, data: Mapping[str, Any], event_id: str | None = None) -> str:
    """One server-sent event: its ``name`` and JSON ``data`` (and ``event_id``, for resuming)."""
    lines = [f"id: {event_id}"] if event_id else []
    lines += [f"event: {name}", f"data: {json.dumps(data)}"]
    return "\n".join(lines) + "\n\n"


def _changes(
    job_id: uuid.UUID, seen: State | None, state: State, render: Renderer, ids: bool
) -> list[str]:
    """The status and progress events that take a client from ``seen`` to ``state``."""
    event_id = state.event_id if ids else None
    out = []
    if seen is None or seen.status != state.status:
        out.append(sse("status", render.status(job_id, state), event_id))
    if state.status in jobs.ACTIVE and (
        seen is None or (seen.progress, seen.queue_position) != (state.progress, state.queue_position)
    ):
        out.append(sse("progress", render.progress(job_id, state), event_id))
    return out


def stream(
    job_ids: list[uuid.UUID],
    render: Renderer,
    *,
    resume: State | None = None,
    ids: bool = True,
    allowed: Callable[[], bool] | None = None,
) -> Iterator[str]:
    """The event stream of ``job_ids`` (reserved on the current app's watcher), until every one has ended.

    It also ends as soon as ``allowed()`` turns false (its API key was revoked, its console session
    ended), which it asks at every wake-up and heartbeat. While the database cannot be used, neither
    that nor a job's final state can be read: the stream stays open and asks again (a revocation
    cannot commit meanwhile, and the watcher reads no new state either).
    """
    app, hub = current_app._get_current_object(), watcher()
    config = app.config
    heartbeat, lifetime = config["EVENT_HEARTBEAT"], config["EVENT_STREAM_SECONDS"]

    def events() -> Iterator[str]:
        seen: dict[uuid.UUID, State | None] = dict.fromkeys(job_ids, resume)
        start = time.monotonic()
        beat = start + heartbeat
        generation = hub.generation
        yield f"retry: {RETRY_MS}\n\n"
        while seen and not hub.stopping and (allowed is None or _unless_unavailable(allowed, True)):
            out: list[str] = []
            for job_id, known in list(seen.items()):
                state = hub.state(job_id)
                if state is None or state == known:
                    continue
                if state.status in jobs.TERMINAL:
                    done = _unless_unavailable(functools.partial(_finished, app, job_id, render), None)
                    if done is None:
                        continue  # told at the next wake-up or heartbeat
                    if known is not None:  # a job already finished when asked about gets its done at once
                        out += _changes(job_id, known, state, render, ids)
                    out.append(sse("done", done, state.event_id if ids else None))
                    del seen[job_id]
                else:
                    out += _changes(job_id, known, state, render, ids)
                    seen[job_id] = state
            now = time.monotonic()
            if out:
                yield "".join(out)
                beat = now + heartbeat
            elif now >= beat:
                yield ": keep-alive\n\n"
                beat = now + heartbeat
            if not seen or now - start >= lifetime:
                return
            generation = hub.wait(generation, min(beat, start + lifetime) - now)

    return events()


def _unless_unavailable(read: Callable[[], T], meanwhile: T) -> T:
    """``read()``, or ``meanwhile`` if the database cannot be used for now (logged in one line)."""
    try:
        return read()
    except Exception as exc:
        if not unavailable(exc):
            raise
        log.warning("an event stream cannot use the database (%s); it asks again", str(exc).strip())
        return meanwhile


def _finished(app: Flask, job_id: uuid.UUID, render: Renderer) -> dict[str, Any]:
    with app.app_context(), db.connection_context():
        return render.done(Job.get_by_id(job_id))


def respond(
    key: str,
    found: list[Job],
    render: Renderer,
    last_event_id: str | None = None,
    allowed: Callable[[], bool] | None = None,
) -> Response:
    """A ``text/event-stream`` response following ``found`` (the caller's jobs) for ``key``, or 429;
    it ends once ``allowed()`` is false."""
    hub = watcher()
    job_ids = hub.reserve(key, found)
    try:
        resume = State.from_event_id(last_event_id)
        body = stream(job_ids, render, resume=resume, ids=len(job_ids) == 1, allowed=allowed)
    except BaseException:
        hub.release(key, job_ids)
        raise
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx and the like pass events on at once
    response.call_on_close(lambda: hub.release(key, job_ids))
    return response


def init_app(app: Flask) -> Watcher:
    """Give ``app`` its watcher."""
    hub = Watcher(app)
    app.extensions[EXTENSION] = hub
    return hub
