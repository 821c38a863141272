"""Idempotency keys on create requests, after the IETF httpapi draft "The Idempotency-Key HTTP Header Field".

A create request with an ``Idempotency-Key`` header is recorded under the account and the key, with a
fingerprint of the request (method, path and body). A retry with the same key and the same request gets
the first answer again (same status and body, marked ``Idempotent-Replayed: true``) and makes no second
job; the same key with another request gets 422; a retry while the first request is still being answered
gets 409. Only successful answers are kept: after an error no job was made, so the key is free again.
Keys are kept for 24 hours (``KEEP``), in the database, so they hold across processes and restarts.
If the database cannot be used when a request ends in an error, the key is released once it answers
again (``Releases``), as long as no job was recorded under it.

Each job a keyed request makes is recorded on the key's row in the job's own transaction (``record``), so
no job is ever made under a key without the key knowing it. If the first request's answer was never kept
(its process died, or storing the answer failed, in which case the client still got its answer), its
key stays in flight; a retry after ``in_flight_limit`` takes the key over and runs the view again, and
``jobs.create`` hands the view the recorded jobs (``reuse``) instead of making and billing new ones: the
retry answers with the same job(s), with no second debit. A first request that outlived its claim (a
stalled process) changes nothing of the row any more, and a job it would make is undone (409).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, current_app, g, has_app_context, request
from peewee import IntegrityError, PeeweeException

import request_limits
from errors import ApiError, validation_error
from models import IdempotencyKey, Job, db, log_failure, unavailable, utcnow

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEEP = datetime.timedelta(hours=24)
# A first request still unanswered this long after the longest a request may wait (SYNC_WAIT, the OpenAI
# family's wait for its images) died with its process, and its key is taken over.
IN_FLIGHT_MARGIN = datetime.timedelta(minutes=2)
MAX_KEY_LENGTH = 255
PURGE_EVERY = 60.0  # seconds between sweeps of expired keys, per process
IN_FLIGHT_RETRY_AFTER = 5  # seconds a retry of a key in use is asked to wait (at most)
RELEASE_RETRY_EVERY = 1.0  # seconds between tries to release a key while the database cannot be used
CLAIM = "idempotency_claim"  # the request's Claim, on flask's g while its view runs

_views: set[Callable[..., Any]] = set()  # the views ``idempotent`` made, for the API's documentation
_purge_lock = threading.Lock()
_next_purge = 0.0


def presented_key() -> str | None:
    """The request's Idempotency-Key (bare, or quoted as the draft's structured-field string), or None."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key:
        raise validation_error(f"The '{HEADER}' header must not be empty.")
    if len(key) > MAX_KEY_LENGTH:
        raise validation_error(f"The '{HEADER}' header must be at most {MAX_KEY_LENGTH} characters.")
    if not key.isascii() or not key.isprintable():
        raise validation_error(f"The '{HEADER}' header must be printable ASCII characters.")
    return key


def fingerprint() -> str:
    """A digest of what makes a request the same request: its method, path and body.

    A JSON body counts by its value (key order and spacing aside); a multipart form by its fields and its
    files' names and contents, since a client's retry may choose another boundary.
    """
    if request.mimetype == "multipart/form-data":
        body = _form_fingerprint()
    else:
        raw = request_limits.body()
        try:
            body = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
        except (ValueError, RecursionError):
            body = raw
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def _form_fingerprint() -> bytes:
    """A multipart form as bytes that do not depend on its boundary: its fields, then its files' digests."""
    files = []
    for field, upload in request.files.items(multi=True):
        content = upload.stream.read()
        upload.stream.seek(0)  # the view reads it again
        files.append([field, upload.filename, hashlib.sha256(content).hexdigest()])
    fields = sorted(request.form.items(multi=True))
    return json.dumps({"fields": fields, "files": sorted(files)}, separators=(",", ":")).encode()


@dataclasses.dataclass
class Claim:
    """A keyed request's hold on its key's row: the jobs recorded on it, and how many this request used.

    ``at`` is the row's ``created_at`` as this request claimed it: a retry that takes the key over sets a
    new one, so a first request that outlived its claim (a stalled process) changes nothing of the row.
    """

    id: int
    at: datetime.datetime
    jobs: list[str] = dataclasses.field(default_factory=list)
    used: int = 0
    # Set when the request ends in an error with its jobs still running and paid for: the key then stays
    # in flight, so that a retry which takes it over gets those jobs back rather than making others.
    held: bool = False

    def row(self) -> Any:
        """The condition that selects the claimed row while this request still holds it."""
        return (IdempotencyKey.id == self.id) & (IdempotencyKey.created_at == self.at)


def idempotent(view: Callable[..., Any]) -> Callable[..., Response]:
    """Make a create view honour Idempotency-Key (the caller is authenticated: ``g.account`` is set)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        key = presented_key()
        if key is None:
            return current_app.make_response(view(*args, **kwargs))
        claimed = claim(g.account.id, key, fingerprint())
        if isinstance(claimed, Response):
            return claimed
        setattr(g, CLAIM, claimed)
        try:
            response = current_app.make_response(view(*args, **kwargs))
        except BaseException:
            if not claimed.held:
                _release_or_retry(claimed)
            raise
        finally:
            g.pop(CLAIM, None)
        if response.is_streamed:  # nothing of it can be kept before it has run: its stream ends the claim
            return response
        if 200 <= response.status_code < 300:
            _keep(claimed, response)
        elif not claimed.held:
            _release_or_retry(claimed)
        return response

    _views.add(wrapper)
    return wrapper


def takes_key(view: Callable[..., Any] | None) -> bool:
    """Whether ``view`` (a route's) honours Idempotency-Key."""
    return view in _views


def _keep(claimed: Claim, response: Response) -> None:
    """Keep a successful answer for retries; if that fails, log it: the answer still goes to the client.

    Its jobs were made and paid for, so a 500 would be wrong. The key stays in flight, and a retry after
    ``in_flight_limit`` gets the same jobs back from the row (``reuse``).
    """
    try:
        IdempotencyKey.update(status_code=response.status_code, body=response.get_data(as_text=True)).where(
            claimed.row()
        ).execute()
    except PeeweeException as exc:
        then = "; retries reuse its jobs"
        log_failure(log, exc, "Idempotency-Key row %s: keeping the answer", claimed.id, then=then)


@contextlib.contextmanager
def streamed(claimed: Claim | None) -> Iterator[None]:
    """The claim of a request whose answer is streamed on after its view returned, for that stream.

    It is the request's claim (``current``) again for the block, and released if the block raises,
    unless ``held``, as an answer given at once would be. A stream that runs to its end leaves the key
    in flight with its jobs recorded, all ended: a retry takes it over at once and is answered from
    them, with no second debit. So does a stream cut off by its client, while its jobs run on.
    """
    if claimed is None:
        yield
        return
    setattr(g, CLAIM, claimed)
    try:
        yield
    except Exception:  # not GeneratorExit: a client gone leaves its jobs running, and paid for
        if not claimed.held:
            _release_or_retry(claimed)
        raise
    finally:
        g.pop(CLAIM, None)


def current() -> Claim | None:
    """The claim of the keyed request being answered, or None (no key, or outside a create view)."""
    return g.get(CLAIM) if has_app_context() else None


def reuse() -> uuid.UUID | None:
    """The next job recorded under the request's claim that it has not used yet (it now has), or None."""
    claim = current()
    if claim is None or claim.used >= len(claim.jobs):
        return None
    claim.used += 1
    return uuid.UUID(claim.jobs[claim.used - 1])


def record(claim: Claim, job_id: uuid.UUID) -> None:
    """Record a job made under ``claim`` on its row; call in the transaction that makes the job.

    409 (the transaction, and so the job, is undone) if the request no longer holds the row: no job is
    made under a key without the key knowing it.
    """
    made = [*claim.jobs, str(job_id)]
    if IdempotencyKey.update(jobs=made).where(claim.row()).execute() != 1:
        raise _changing_hands()
    claim.jobs, claim.used = made, len(made)


def claim(account_id: int, key: str, digest: str) -> Claim | Response:
    """Record a first use of ``key`` (its Claim), or the answer to a retry: replay, 409 or 422."""
    _purge_expired()
    for _ in range(3):  # a row that expires or is released while we look: try again
        now = utcnow()
        try:
            with db.atomic():
                row_id = IdempotencyKey.insert(
                    account=account_id, key=key, fingerprint=digest, created_at=now
                ).execute()
            return Claim(row_id, now)
        except IntegrityError:
            pass
        row = IdempotencyKey.get_or_none((IdempotencyKey.account == account_id) & (IdempotencyKey.key == key))
        if row is None:
            continue
        if row.created_at < now - KEEP:
            IdempotencyKey.delete().where(
                (IdempotencyKey.id == row.id) & (IdempotencyKey.created_at == row.created_at)
            ).execute()
            continue
        if row.fingerprint != digest:
            raise ApiError(
                422,
                "IDEMPOTENCY_KEY_REUSED",
                f"This {HEADER} was already used with a different request (another endpoint or body). "
                "Use a new key for a new request.",
            )
        if row.status_code is None:
            taken_over_in = row.created_at + in_flight_limit() - now
            due = taken_over_in < datetime.timedelta(0) or _all_ended(row.jobs)
            if due and _take_over(row, now):
                return Claim(row.id, now, row.jobs or [])
            raise _in_use(taken_over_in)
        return replay(row)
    raise _changing_hands()


def _all_ended(job_ids: list[str] | None) -> bool:
    """Whether every job recorded on an unanswered key has ended: its request then has nothing left to
    wait for (it was answered without them being kept, say during a database outage), so a retry may
    take the key over at once and answer from them, as after ``in_flight_limit``."""
    from jobs import ACTIVE  # jobs records its jobs here

    ids = [uuid.UUID(job_id) for job_id in job_ids or []]
    return bool(ids) and not Job.select(Job.id).where(Job.id.in_(ids) & Job.status.in_(ACTIVE)).exists()


def _in_use(taken_over_in: datetime.timedelta) -> ApiError:
    """409 for a key whose first request is unanswered, with how soon to ask again.

    Retry-After is a few seconds (its answer may come any moment), never past the time at which a retry
    takes the key over; the message says that time, the longest the key can stay in use.
    """
    latest = max(1, math.ceil(taken_over_in.total_seconds()))
    return ApiError(
        409,
        "IDEMPOTENCY_KEY_IN_USE",
        f"A request with this {HEADER} is still being processed. Retry after it has been answered; "
        f"if it is never answered, a retry takes the key over in {latest} seconds.",
        headers={"Retry-After": str(min(IN_FLIGHT_RETRY_AFTER, latest))},
    )


def _changing_hands() -> ApiError:
    return ApiError(
        409,
        "IDEMPOTENCY_KEY_IN_USE",
        f"This {HEADER} is changing hands; retry in a moment.",
        headers={"Retry-After": "1"},
    )


def in_flight_limit() -> datetime.timedelta:
    """How long a first request may stay unanswered before its key is taken over."""
    return datetime.timedelta(seconds=current_app.config["SYNC_WAIT"]) + IN_FLIGHT_MARGIN


def _take_over(row: IdempotencyKey, now: datetime.datetime) -> bool:
    """Claim the row of a first request whose process died before answering."""
    taken = IdempotencyKey.update(created_at=now).where(
        (IdempotencyKey.id == row.id)
        & IdempotencyKey.status_code.is_null()
        & (IdempotencyKey.created_at == row.created_at)
    )
    return taken.execute() == 1


def release(claimed: Claim) -> None:
    """Forget a key whose request ended without a job, so the client may use it again."""
    IdempotencyKey.delete().where(claimed.row() & IdempotencyKey.status_code.is_null()).execute()


def _release_or_retry(claimed: Claim) -> None:
    """``release``; if the database cannot be used, hand the claim to this process's ``Releases``."""
    try:
        release(claimed)
    except Exception as exc:
        if not unavailable(exc):
            raise
        log.warning(
            "Idempotency-Key row %s: not released (%s); trying again", claimed.id, str(exc).strip()
        )
        _releases.add(claimed, claimed.at + in_flight_limit())


class Releases:
    """Claims whose release failed because the database could not be used, released once it answers.

    A thread of this process tries every ``RELEASE_RETRY_EVERY`` seconds until each is released, or its
    key would be taken over anyway. Only a claim that recorded no job is released this late: the key of
    one that did stays in flight, and the retry that takes it over gets its jobs (``reuse``), so a key
    never makes or bills a job twice. Its process ending first leaves the key to the takeover too.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[Claim, datetime.datetime]] = {}  # by row id
        self._thread: threading.Thread | None = None

    def add(self, claimed: Claim, until: datetime.datetime) -> None:
        """Release ``claimed`` later, if it recorded no job, and not past ``until``."""
        with self._lock:
            self._pending[claimed.id] = (claimed, until)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="idempotency-releases", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(RELEASE_RETRY_EVERY)
            with self._lock:
                pending = list(self._pending.values())
            for claimed, until in pending:
                if not self._release(claimed, until):
                    break  # the database is still down: the others wait for the next try
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return

    def _release(self, claimed: Claim, until: datetime.datetime) -> bool:
        """Try to release one claim; whether the database answered."""
        try:
            if utcnow() < until:
                with db.connection_context():
                    IdempotencyKey.delete().where(
                        claimed.row() & IdempotencyKey.status_code.is_null() & IdempotencyKey.jobs.is_null()
                    ).execute()
        except Exception as exc:
            if unavailable(exc):
                return False
            log.exception("Idempotency-Key row %s: releasing it failed; it is left to a takeover", claimed.id)
        with self._lock:
            self._pending.pop(claimed.id, None)
        return True


_releases = Releases()


def replay(row: IdempotencyKey) -> Response:
    """The first answer given under a key, again."""
    response = Response(row.body, status=row.status_code, mimetype="application/json")
    response.headers[REPLAYED_HEADER] = "true"
    return response


def _purge_expired() -> None:
    """Delete keys older than ``KEEP`` (at most once a minute per process)."""
    global _next_purge
    if time.monotonic() < _next_purge or not _purge_lock.acquire(blocking=False):
        return
    try:
        _next_purge = time.monotonic() + PURGE_EVERY
        IdempotencyKey.delete().where(IdempotencyKey.created_at < utcnow() - KEEP).execute()
    finally:
        _purge_lock.release()
