"""Webhooks: signing secrets, the signed payload, the retry schedule, and the sender threads.

A job with a webhook URL gets a delivery row in the transaction that ends it (``jobs.finish``).
Each process runs a WebhookSender, fed from the database like the JobPool: a dispatcher thread
claims due deliveries with one compare-and-swap UPDATE each (so no two processes send the same
attempt at once) and hands them to a few sending threads, never to a job worker. The process
renews a lease on the deliveries it is sending; a delivery whose lease ran out belongs to a
process that died, and another process sends it again. Deliveries are at least once: a receiver
de-duplicates by the ``webhook-id`` header, which is the same for every attempt.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from peewee import Case, Expression, fn
from standardwebhooks import Webhook

import jobs
from fetch import FetchError, RefusedURL, post_json
from leasing import LeasedDispatcher
from models import Account, Job, WebhookAttempt, WebhookDelivery, db, utcnow
from schemas import dump_job

log = logging.getLogger(__name__)

EXTENSION = "apiframe.webhooks"
RENDERERS = "apiframe.webhook_bodies"  # API family -> how its jobs' webhooks look
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
JITTER = 0.1  # each retry delay is randomised by up to this fraction, either way


# ---- secrets ---------------------------------------------------------------------------------


def new_signing_secret() -> str:
    """A fresh Standard Webhooks secret: ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signing_secret(account_id: int) -> str:
    """The account's webhook signing secret, made the first time it is needed."""
    current = Account.select(Account.webhook_signing_secret).where(Account.id == account_id)
    if secret := current.scalar():
        return secret
    (
        Account.update(webhook_signing_secret=new_signing_secret())
        .where((Account.id == account_id) & Account.webhook_signing_secret.is_null())
        .execute()
    )  # another process may have made it first: theirs stands
    return current.scalar()


def rotate_signing_secret(account_id: int) -> str:
    """Replace the account's signing secret; deliveries still pending are signed with the new one."""
    secret = new_signing_secret()
    Account.update(webhook_signing_secret=secret).where(Account.id == account_id).execute()
    return secret


# ---- what is sent ----------------------------------------------------------------------------


def webhook_id(delivery_id: uuid.UUID) -> str:
    """The Standard Webhooks ``webhook-id`` of a delivery, the same for all its attempts."""
    return f"msg_{delivery_id.hex}"


def event_name(job: Job) -> str:
    """The event a finished job sends, e.g. ``job.succeeded``."""
    return f"job.{job.status}"


def reference_body(job: Job) -> tuple[str | None, dict[str, Any]]:
    """The reference API's webhook: the event, and the job object of GET /v1/jobs/:id."""
    return event_name(job), {"event": event_name(job), "job": dump_job(job)}


def render_for(app: Flask, origin: str, render: Callable[[Job], tuple[str | None, dict[str, Any]]]) -> None:
    """Send the webhooks of jobs created through the API family ``origin`` as ``render`` makes them."""
    app.extensions.setdefault(RENDERERS, {})[origin] = render


def _body(job: Job) -> tuple[str | None, dict[str, Any]]:
    """The event (None if the body names none) and the body of a job's webhook, as its family shows it."""
    return current_app.extensions.get(RENDERERS, {}).get(job.origin, reference_body)(job)


def payload(job: Job) -> str:
    """The webhook body: the job as the API that created it shows the job now."""
    return json.dumps(_body(job)[1], separators=(",", ":"))


def signature_headers(message_id: str, secret: str, at: datetime.datetime, body: str) -> dict[str, str]:
    """The Standard Webhooks headers signing ``body``, sent at ``at`` (UTC)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.replace(tzinfo=datetime.UTC).timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, at, body),
    }


def nominal_retry_delay(failed_attempts: int, base: float) -> float:
    """Seconds before the next attempt, before jitter: ``base``, doubling after each failure."""
    return base * 2 ** (failed_attempts - 1)


def retry_delay(failed_attempts: int, base: float) -> float:
    """Seconds before the next attempt: the nominal delay, give or take 10%."""
    return nominal_retry_delay(failed_attempts, base) * random.uniform(1 - JITTER, 1 + JITTER)


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: the receiver's HTTP status, or why there was none."""

    status_code: int | None
    error: str | None  # None exactly when the webhook was delivered
    retry: bool  # whether a later attempt could succeed


def send(url: str, body: str, headers: dict[str, str], *, allow_private: bool, timeout: float) -> Outcome:
    """POST one attempt through the safe fetcher; any 2xx answer delivers it."""
    try:
        response = post_json(url, body.encode(), headers, allow_private=allow_private, timeout=timeout)
    except RefusedURL as exc:
        return Outcome(None, str(exc), retry=False)
    except FetchError as exc:
        return Outcome(None, str(exc), retry=True)
    code = response.status_code
    if 200 <= code < 300:
        return Outcome(code, None, retry=False)
    reason = f"the receiver answered HTTP {code}"
    if 300 <= code < 400:
        reason += "; redirects are not followed"
    return Outcome(code, reason, retry=True)


# ---- what the API shows ----------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """A job's webhook: where it goes, how it stands, and every attempt so far."""

    url: str | None
    status: str | None
    webhook_id: str | None
    event: str | None
    attempts: list[WebhookAttempt]
    next_attempt_at: datetime.datetime | None


def report(job: Job) -> Report:
    """The webhook report of ``job`` (its delivery exists once the job has ended)."""
    delivery = WebhookDelivery.get_or_none(WebhookDelivery.job == job.id)
    if delivery is None:
        return Report(job.webhook_url, job.webhook_status, None, None, [], None)
    attempts = list(delivery.attempts.order_by(WebhookAttempt.number))
    return Report(
        job.webhook_url,
        job.webhook_status,
        webhook_id(delivery.id),
        _body(job)[0],
        attempts,
        delivery.next_attempt_at,
    )


# ---- the sender ------------------------------------------------------------------------------


class WebhookSender(LeasedDispatcher):
    """One process's webhook sender: claims due deliveries and sends them on its own threads."""

    model = WebhookDelivery
    name = "webhook"

    def __init__(self, app: Flask) -> None:
        super().__init__(app, int(app.config["WEBHOOK_THREADS"]))
        jobs.job_finished.connect(self._on_finished, sender=app)

    def _on_finished(self, app: Flask, job: Job) -> None:
        if job.webhook_url:  # its delivery was committed with the job's end
            self.nudge()

    def _held(self) -> Expression:
        return WebhookDelivery.lease_token.is_null(False)

    def _dispatch(self) -> None:
        """Claim due deliveries for the idle sending threads, taking accounts in turn.

        An account's turn counts its deliveries in flight (in any process), so the accounts with
        fewest go first, and the most overdue within each. With more than one thread, an account
        never takes the last idle one while it has a delivery in flight: one account's dead or
        slow receiver can hold all threads but one, and the next account's webhook goes at once.
        """
        while (free := self._free_slots()) > 0 and not self._stopping.is_set():
            now = utcnow()
            candidates = list(self._turns(now, free))
            if self.size > 1 and len(candidates) == free and candidates[-1].turn > 1:
                candidates.pop()  # the last idle thread waits for an account with nothing in flight
            claimed = [
                (candidate.id, token)
                for candidate in candidates
                if (token := self._take(candidate, now, self._claimable(now))) is not None
            ]
            for delivery_id, token in claimed:
                self._submit(delivery_id, token)
            if not claimed:
                return

    def _turns(self, now: datetime.datetime, limit: int) -> Any:
        """Up to ``limit`` claimable deliveries, each with its ``turn``: 1 + what its account has
        in flight or due before it. Ordered by turn, then by due time."""
        in_flight = Case(None, [(WebhookDelivery.lease_expires >= now, 1)], 0)
        order = [in_flight.desc(), WebhookDelivery.next_attempt_at]
        turn = fn.ROW_NUMBER().over(partition_by=[Job.account], order_by=order)
        ranked = (
            WebhookDelivery.select(WebhookDelivery.id, in_flight.alias("in_flight"), turn.alias("turn"))
            .join(Job, on=WebhookDelivery.job == Job.id)
            .where(WebhookDelivery.next_attempt_at <= now)  # due, or in flight (due when claimed)
            .alias("ranked")
        )
        return (
            WebhookDelivery.select(
                WebhookDelivery.id, WebhookDelivery.lease_token, ranked.c.turn.alias("turn")
            )
            .join(ranked, on=WebhookDelivery.id == ranked.c.id)
            .where(ranked.c.in_flight == 0)
            .order_by(ranked.c.turn, WebhookDelivery.next_attempt_at)
            .limit(limit)
            .objects()  # the turn on the delivery itself
        )

    @staticmethod
    def _claimable(now: datetime.datetime) -> Expression:
        return (WebhookDelivery.next_attempt_at <= now) & (
            WebhookDelivery.lease_expires.is_null() | (WebhookDelivery.lease_expires < now)
        )

    # ---- one attempt -------------------------------------------------------------------------

    def _run(self, key: uuid.UUID, token: str, interrupted: threading.Event) -> None:
        """Send one claimed delivery (an attempt under way ends by its own timeout)."""
        self._attempt(key, token)

    def _attempt(self, delivery_id: uuid.UUID, token: str) -> None:
        """Send one claimed delivery once and record how it went."""
        delivery = WebhookDelivery.get_or_none(
            (WebhookDelivery.id == delivery_id) & (WebhookDelivery.lease_token == token)
        )
        if delivery is None:
            return
        job = Job.get_by_id(delivery.job_id)
        config = current_app.config
        at = utcnow()
        body = payload(job)
        headers = signature_headers(webhook_id(delivery.id), signing_secret(job.account_id), at, body)
        if job.webhook_secret:
            headers["X-Webhook-Secret"] = job.webhook_secret
        started = time.monotonic()
        outcome = send(
            job.webhook_url,
            body,
            headers,
            allow_private=config["ALLOW_PRIVATE_URLS"],
            timeout=config["WEBHOOK_TIMEOUT"],
        )
        duration_ms = round((time.monotonic() - started) * 1000)
        self._record(delivery, token, job.webhook_attempts + 1, at, outcome, duration_ms)

    def _record(
        self,
        delivery: WebhookDelivery,
        token: str,
        number: int,
        at: datetime.datetime,
        outcome: Outcome,
        duration_ms: int,
    ) -> None:
        """Write the attempt, the job's webhook state and the next attempt's time, in one transaction."""
        status, next_attempt_at = self._next_step(number, outcome)
        with db.atomic():
            held = (
                WebhookDelivery.update(
                    next_attempt_at=next_attempt_at, lease_owner=None, lease_token=None, lease_expires=None
                )
                .where((WebhookDelivery.id == delivery.id) & (WebhookDelivery.lease_token == token))
                .execute()
            )
            if held != 1:
                log.warning("lost the lease on webhook delivery %s; another process sends it", delivery.id)
                return
            WebhookAttempt.create(
                delivery=delivery.id,
                number=number,
                at=at,
                status_code=outcome.status_code,
                error=outcome.error,
                duration_ms=duration_ms,
            )
            state = {"webhook_status": status, "webhook_attempts": number}
            Job.update(**state).where(Job.id == delivery.job_id).execute()

    def _next_step(self, number: int, outcome: Outcome) -> tuple[str, datetime.datetime | None]:
        """The delivery's status after attempt ``number``, and when the next attempt is due."""
        config = self.app.config
        if outcome.error is None:
            return jobs.WEBHOOK_DELIVERED, None
        if not outcome.retry or number >= config["WEBHOOK_MAX_ATTEMPTS"]:
            return jobs.WEBHOOK_FAILED, None
        delay = retry_delay(number, config["WEBHOOK_RETRY_BASE"])
        return jobs.WEBHOOK_PENDING, utcnow() + datetime.timedelta(seconds=delay)


# ---- wiring ----------------------------------------------------------------------------------


def sender() -> WebhookSender:
    """The current app's webhook sender."""
    return current_app.extensions[EXTENSION]


def init_app(app: Flask) -> WebhookSender:
    """Give ``app`` its webhook sender (not started), woken whenever one of its jobs with a webhook ends."""
    app.extensions[EXTENSION] = WebhookSender(app)
    return app.extensions[EXTENSION]
