"""Webhooks: signed events, the echoed secret, retries, durability, hostile URLs, the attempts listing."""

from __future__ import annotations

import base64
import datetime
import json
import time
import uuid

import pytest
import requests
from peewee import SqliteDatabase
from playhouse.migrations import Runner
from standardwebhooks import Webhook, WebhookVerificationError

import config
import models
import webhooks
from app import create_app
from conftest import Api, Receiver, image_bytes, stop_background, wait_until
from models import Account, Job, WebhookDelivery, utcnow
from servers import Server, cli, environment, free_port
from webhooks import WebhookSender

EMAIL = "hooks@example.com"
SETTLED = ("delivered", "failed")


@pytest.fixture
def settings(settings):
    """Retries in tenths of a second rather than minutes."""
    settings.update(WEBHOOK_RETRY_BASE=0.05, WEBHOOK_TIMEOUT=5.0)
    return settings


@pytest.fixture
def hooks(client, make_account) -> Api:
    """An Api client for the account EMAIL."""
    _, key = make_account("scale", email=EMAIL)
    return Api(client, key)


def signing_secret(runner, *args: str) -> str:
    """``flask webhooks secret EMAIL [ARGS]``: the secret alone on the last line."""
    result = runner.invoke(args=["webhooks", "secret", EMAIL, *args])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def stored(job_id: str) -> Job:
    """The job's row (tests wait on the database: polling the API would spend its rate limit)."""
    with models.db.connection_context():
        return Job.get_by_id(uuid.UUID(job_id))


def attempted(job_id: str, count: int = 1) -> None:
    """Wait until ``count`` attempts at the job's webhook are recorded."""
    wait_until(lambda: stored(job_id).webhook_attempts >= count, what=f"attempt {count} of job {job_id}")


def settled(api: Api, job_id: str, timeout: float = 20) -> dict:
    """Wait until the job's webhook is delivered or failed; returns the job object."""
    wait_until(lambda: stored(job_id).webhook_status in SETTLED, timeout, f"the webhook of job {job_id}")
    return api.job(job_id)


def report(api: Api, job_id: str) -> dict:
    response = api.get(f"/v1/jobs/{job_id}/webhooks")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["webhooks"]


def moment(timestamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ")


# ---- the event and its signature --------------------------------------------------------------


def test_a_finished_job_posts_a_signed_event(hooks, runner, receiver):
    job = hooks.submit("/v1/imagine", {"prompt": "a lighthouse", "webhookUrl": receiver.url("/in?src=af")})
    assert job["webhookStatus"] == "pending" and job["webhookAttempts"] == 0
    done = settled(hooks, job["id"])
    assert done["status"] == "succeeded"
    assert done["webhookStatus"] == "delivered" and done["webhookAttempts"] == 1
    [delivery] = receiver.deliveries
    assert delivery.path == "/in?src=af"
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["webhook-id"].startswith("msg_")
    assert "X-Webhook-Secret" not in delivery.headers

    secret = signing_secret(runner)
    event = Webhook(secret).verify(delivery.body, delivery.headers)
    # The job object as GET /v1/jobs/:id showed it when the webhook was sent.
    assert event == {
        "event": "job.succeeded",
        "job": {**done, "webhookStatus": "pending", "webhookAttempts": 0},
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(delivery.body.replace(b"succeeded", b"failed"), delivery.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_signing_secret()).verify(delivery.body, delivery.headers)


def test_the_webhook_secret_is_echoed_and_never_shown(hooks, receiver, app):
    shared = "s3cret shared-value/42"
    response = hooks.post(
        "/v1/imagine", json={"prompt": "a fox", "webhookUrl": receiver.url(), "webhookSecret": shared}
    )
    assert response.status_code == 202 and shared not in response.get_data(as_text=True)
    job_id = response.get_json()["job"]["id"]
    settled(hooks, job_id)
    [delivery] = receiver.deliveries
    assert delivery.headers["X-Webhook-Secret"] == shared
    assert shared.encode() not in delivery.body
    assert shared not in hooks.get(f"/v1/jobs/{job_id}").get_data(as_text=True)
    assert shared not in hooks.get(f"/v1/jobs/{job_id}/webhooks").get_data(as_text=True)
    assert shared not in hooks.get("/v1/jobs").get_data(as_text=True)


def test_every_create_endpoint_takes_a_webhook(hooks, runner, receiver, files):
    parent = hooks.submit(
        "/v1/imagine", {"prompt": "a bridge", "webhookUrl": receiver.url("/imagine"), "webhookSecret": "i"}
    )
    assert settled(hooks, parent["id"])["status"] == "succeeded"
    first, second = files.add("/a.png", image_bytes()), files.add("/b.png", image_bytes(color=(0, 90, 200)))
    children = {
        "upscale": {"jobId": parent["id"], "index": 1},
        "variation": {"jobId": parent["id"], "index": 2},
        "describe": {"imageUrl": first},
        "blend": {"imageUrls": [first, second]},
    }
    ids = {"imagine": parent["id"]}
    for operation, body in children.items():
        body.update(webhookUrl=receiver.url(f"/{operation}"), webhookSecret=operation[0])
        ids[operation] = hooks.submit(f"/v1/{operation}", body)["id"]
    for job_id in ids.values():
        assert settled(hooks, job_id)["webhookStatus"] == "delivered"
    hook = Webhook(signing_secret(runner))
    received = {delivery.path[1:]: delivery for delivery in receiver.deliveries}
    assert set(received) == set(ids)
    for operation, delivery in received.items():
        event = hook.verify(delivery.body, delivery.headers)
        assert event["event"] == "job.succeeded" and event["job"]["id"] == ids[operation]
        assert event["job"]["type"] == operation
        assert delivery.headers["X-Webhook-Secret"] == operation[0]


@pytest.mark.parametrize("status", ["failed", "cancelled", "timed_out"])
def test_every_terminal_status_sends_its_event(app, hooks, files, receiver, status):
    url = receiver.url()
    if status == "failed":
        job = hooks.submit("/v1/describe", {"imageUrl": files.url("/missing.png"), "webhookUrl": url})
    elif status == "cancelled":
        app.extensions["apiframe.pool"].stop()
        job = hooks.submit("/v1/imagine", {"prompt": "never painted", "webhookUrl": url})
        assert hooks.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    else:
        app.config["LOCAL_LATENCY"] = 10
        app.extensions["apiframe.pool"].timeout = 0.5
        job = hooks.submit("/v1/imagine", {"prompt": "far too slow", "webhookUrl": url})
    done = settled(hooks, job["id"])
    assert done["status"] == status and done["webhookStatus"] == "delivered"
    event = receiver.deliveries[0].json()
    assert event["event"] == f"job.{status}"
    assert event["job"]["status"] == status and event["job"]["error"] == done["error"]


# ---- the job object and the attempts listing --------------------------------------------------


def test_a_job_without_a_webhook_url_has_no_delivery(app, hooks):
    response = hooks.post("/v1/imagine", json={"prompt": "quiet", "webhookSecret": "unused"})
    assert response.status_code == 202  # accepted, and unused, without a webhookUrl
    done = hooks.wait(response.get_json()["job"]["id"])
    assert done["webhookStatus"] is None and done["webhookAttempts"] == 0
    assert report(hooks, done["id"]) == {
        "url": None,
        "status": None,
        "webhookId": None,
        "event": None,
        "attempts": [],
        "nextAttemptAt": None,
    }
    with app.app_context():
        assert WebhookDelivery.select().count() == 0
        assert Job.get_by_id(uuid.UUID(done["id"])).webhook_secret is None


def test_a_running_job_has_a_pending_webhook_and_no_delivery_yet(app, hooks, receiver):
    app.extensions["apiframe.pool"].stop()
    job = hooks.submit("/v1/imagine", {"prompt": "waiting", "webhookUrl": receiver.url()})
    assert hooks.job(job["id"])["webhookStatus"] == "pending"
    assert report(hooks, job["id"]) == {
        "url": receiver.url(),
        "status": "pending",
        "webhookId": None,
        "event": None,
        "attempts": [],
        "nextAttemptAt": None,
    }
    listed = hooks.get("/v1/jobs").get_json()["jobs"][0]
    assert listed["webhookStatus"] == "pending" and listed["webhookAttempts"] == 0


def test_the_attempts_listing_is_private_and_checked(hooks, make_account, client, receiver):
    job = hooks.submit("/v1/imagine", {"prompt": "mine", "webhookUrl": receiver.url()})
    _, other_key = make_account("scale")
    other = Api(client, other_key)
    response = other.get(f"/v1/jobs/{job['id']}/webhooks")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "NOT_FOUND"
    response = hooks.get("/v1/jobs/not-a-uuid/webhooks")
    assert response.status_code == 400 and "'id'" in response.get_json()["error"]["message"]
    response = client.get(f"/v1/jobs/{job['id']}/webhooks")
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "UNAUTHORIZED"
    response = hooks.get(f"/v1/jobs/{job['id']}/webhooks")
    assert response.status_code == 200 and response.headers["X-RateLimit-Limit"] == "3000"  # reads


# ---- retries ----------------------------------------------------------------------------------


def test_down_then_500_then_200_is_delivered_exactly_once(app, hooks, runner, receiver):
    app.config["WEBHOOK_RETRY_BASE"] = 1.0  # time enough to bring the receiver back between attempts
    receiver.stop()
    job = hooks.submit("/v1/imagine", {"prompt": "patience", "webhookUrl": receiver.url()})
    attempted(job["id"])
    receiver.answers = [500]
    receiver.start()
    done = settled(hooks, job["id"])
    assert done["webhookStatus"] == "delivered" and done["webhookAttempts"] == 3

    assert [delivery.answered for delivery in receiver.deliveries] == [500, 200]
    hook = Webhook(signing_secret(runner))
    events = [hook.verify(delivery.body, delivery.headers) for delivery in receiver.deliveries]
    assert [event["job"]["webhookAttempts"] for event in events] == [1, 2]
    assert len({delivery.headers["webhook-id"] for delivery in receiver.deliveries}) == 1

    listing = report(hooks, job["id"])
    assert listing["status"] == "delivered" and listing["nextAttemptAt"] is None
    assert listing["webhookId"] == receiver.deliveries[0].headers["webhook-id"]
    assert listing["event"] == "job.succeeded" and listing["url"] == receiver.url()
    attempts = listing["attempts"]
    assert [(a["attempt"], a["statusCode"]) for a in attempts] == [(1, None), (2, 500), (3, 200)]
    assert attempts[0]["error"] == "the connection failed"
    assert attempts[1]["error"] == "the receiver answered HTTP 500"
    assert attempts[2]["error"] is None
    assert all(isinstance(a["durationMs"], int) and a["durationMs"] >= 0 for a in attempts)
    # Exponential backoff: about 1 s, then about 2 s (each within 10% jitter).
    first, second, third = (moment(a["at"]) for a in attempts)
    assert (second - first).total_seconds() >= 0.9 - 0.002
    assert (third - second).total_seconds() >= 1.8 - 0.002


def test_a_webhook_that_never_succeeds_ends_failed_after_the_last_attempt(app, hooks, receiver):
    app.config["WEBHOOK_MAX_ATTEMPTS"] = 3
    receiver.answers = [302, 500, 503, 200]
    job = hooks.submit("/v1/imagine", {"prompt": "unlucky", "webhookUrl": receiver.url()})
    done = settled(hooks, job["id"])
    assert done["webhookStatus"] == "failed" and done["webhookAttempts"] == 3
    listing = report(hooks, job["id"])
    assert [a["statusCode"] for a in listing["attempts"]] == [302, 500, 503]
    assert "redirects are not followed" in listing["attempts"][0]["error"]
    assert listing["nextAttemptAt"] is None
    assert [delivery.answered for delivery in receiver.deliveries] == [302, 500, 503]


def test_a_receiver_slower_than_the_timeout_is_retried(app, hooks, receiver):
    app.config["WEBHOOK_TIMEOUT"] = 0.5
    receiver.gate.clear()
    job = hooks.submit("/v1/imagine", {"prompt": "hold on", "webhookUrl": receiver.url()})
    attempted(job["id"])
    receiver.gate.set()
    done = settled(hooks, job["id"])
    assert done["webhookStatus"] == "delivered"
    attempts = report(hooks, job["id"])["attempts"]
    assert attempts[0]["statusCode"] is None and attempts[0]["error"] == "the server did not answer in time"
    assert 400 <= attempts[0]["durationMs"] < 5000
    assert attempts[-1]["statusCode"] == 200


def test_a_slow_receiver_never_delays_jobs(app, hooks, receiver):
    app.config["WEBHOOK_TIMEOUT"] = 30
    receiver.gate.clear()  # the receiver holds every webhook until the gate opens
    try:
        first = hooks.submit(
            "/v1/imagine", {"prompt": "first", "webhookUrl": receiver.url(), "quality": 0.25}
        )
        wait_until(lambda: receiver.arrived >= 1, what="the first webhook to reach the receiver")
        later = [
            hooks.submit(
                "/v1/imagine", {"prompt": f"later {n}", "webhookUrl": receiver.url(), "quality": 0.25}
            )
            for n in range(6)
        ]
        for job in later:
            assert hooks.wait(job["id"])["status"] == "succeeded"
        assert receiver.deliveries == [] and hooks.job(first["id"])["webhookStatus"] == "pending"
    finally:
        receiver.gate.set()
    for job in [first, *later]:
        assert settled(hooks, job["id"])["webhookStatus"] == "delivered"
    assert len(receiver.deliveries) == 7


def test_a_slow_receiver_never_delays_another_accounts_webhooks(database, app, hooks, receiver, make_account):
    app.config["WEBHOOK_TIMEOUT"] = 30
    threads = app.config["WEBHOOK_THREADS"]
    other = Receiver()
    receiver.gate.clear()  # the first account's receiver holds every webhook until the gate opens
    try:
        held = [
            hooks.submit("/v1/imagine", {"prompt": f"n{n}", "webhookUrl": receiver.url(), "quality": 0.25})
            for n in range(threads + 1)
        ]
        wait_until(lambda: receiver.arrived == threads - 1, what="the first account's webhooks to arrive")
        theirs = Api(hooks.client, make_account("scale", email="other@example.com")[1])
        job = theirs.submit("/v1/imagine", {"prompt": "on time", "webhookUrl": other.url(), "quality": 0.25})
        assert settled(theirs, job["id"], timeout=15)["webhookStatus"] == "delivered"  # unfixed: after 30 s
        assert receiver.arrived == threads - 1  # the last thread stays free for other accounts
    finally:
        receiver.gate.set()
        other.stop()
    for job in held:
        assert settled(hooks, job["id"])["webhookStatus"] == "delivered"


# ---- hostile URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "not a url",
        "http://",
        42,
        "http://example.com:99999/hook",
        "http://example.com:0/hook",
    ],
)
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/imagine", {"prompt": "x"}),
        ("/v1/describe", {"imageUrl": "https://example.com/a.png"}),
        ("/v1/blend", {"imageUrls": ["https://example.com/a.png", "https://example.com/b.png"]}),
        ("/v1/upscale", {"jobId": str(uuid.uuid4()), "index": 1}),
    ],
)
def test_a_bad_webhook_url_is_refused_at_submission(app, hooks, path, body, url):
    app.extensions["apiframe.pool"].stop()
    before = hooks.get("/v1/account").get_json()["account"]["credits"]["remaining"]
    response = hooks.post(path, json={**body, "webhookUrl": url})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and "'webhookUrl'" in error["message"]
    assert hooks.get("/v1/account").get_json()["account"]["credits"]["remaining"] == before
    assert hooks.get("/v1/jobs").get_json()["jobs"] == []


@pytest.mark.parametrize(
    "secret",
    ["", "x" * 257, 123, ["a"], "line\nbreak", " padded", "padded ", "caf\u00e9", "tab\there"],
)
def test_a_bad_webhook_secret_is_refused(hooks, receiver, secret):
    body = {"prompt": "x", "webhookUrl": receiver.url(), "webhookSecret": secret}
    response = hooks.post("/v1/imagine", json=body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["message"].startswith("The 'webhookSecret' field")


def test_a_webhook_secret_of_256_characters_is_accepted(hooks, receiver):
    secret = "a-Z 0~" * 42 + "1234"
    assert len(secret) == 256
    job = hooks.submit("/v1/imagine", {"prompt": "x", "webhookUrl": receiver.url(), "webhookSecret": secret})
    settled(hooks, job["id"])
    assert receiver.deliveries[0].headers["X-Webhook-Secret"] == secret


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "169.254.169.254"])
def test_a_private_address_is_refused_at_send_time_and_not_retried(app, hooks, receiver, host):
    app.config["ALLOW_PRIVATE_URLS"] = False
    url = f"http://{host.format(port=receiver.port)}/hook"
    job = hooks.submit("/v1/imagine", {"prompt": "sneaky", "webhookUrl": url})
    done = settled(hooks, job["id"])
    assert done["status"] == "succeeded"
    assert done["webhookStatus"] == "failed" and done["webhookAttempts"] == 1
    listing = report(hooks, job["id"])
    [attempt] = listing["attempts"]
    assert attempt["statusCode"] is None and "private, loopback or link-local" in attempt["error"]
    assert listing["nextAttemptAt"] is None
    assert receiver.arrived == 0


# ---- durability and concurrency ---------------------------------------------------------------


def test_pending_deliveries_survive_a_restart(settings, receiver):
    first = create_app(settings)
    first.extensions["apiframe.webhooks"].stop()  # this process will end before it sends anything
    with first.app_context():
        import accounts

        _, key = accounts.create(EMAIL, plan="scale")
    api = Api(first.test_client(), key)
    job = api.submit("/v1/imagine", {"prompt": "left behind", "webhookUrl": receiver.url()})
    assert api.wait(job["id"])["status"] == "succeeded"
    assert api.job(job["id"])["webhookStatus"] == "pending"
    stop_background(first)

    second = create_app(settings)
    try:
        api = Api(second.test_client(), key)
        done = settled(api, job["id"])
        assert done["webhookStatus"] == "delivered" and done["webhookAttempts"] == 1
        secret = second.test_cli_runner().invoke(args=["webhooks", "secret", EMAIL]).output.split()[-1]
        [delivery] = receiver.deliveries
        assert Webhook(secret).verify(delivery.body, delivery.headers)["job"]["id"] == job["id"]
    finally:
        stop_background(second)


def test_a_server_restart_still_delivers(tmp_path, receiver):
    env = environment(tmp_path / "data", free_port(), APIFRAME_WEBHOOK_RETRY_BASE="4")
    key = cli(env, "users", "create", EMAIL, "--plan", "scale").strip().splitlines()[-1]
    receiver.stop()  # down while the first server runs
    server = Server(env, tmp_path / "server.log").start()

    def job_now() -> dict:
        url = f"{server.url}/v1/jobs/{job['id']}"
        return requests.get(url, headers={"X-API-Key": key}, timeout=5).json()["job"]

    try:
        body = {"prompt": "across restarts", "webhookUrl": receiver.url(), "webhookSecret": "shh"}
        response = requests.post(f"{server.url}/v1/imagine", json=body, headers={"X-API-Key": key}, timeout=5)
        job = response.json()["job"]
        wait_until(lambda: job_now()["webhookAttempts"] >= 1, what="the first attempt", interval=0.2)
    finally:
        server.stop()
    receiver.start()
    secret = cli(env, "webhooks", "secret", EMAIL).strip().splitlines()[-1]
    server = Server(env, tmp_path / "server.log").start()
    try:
        [delivery] = receiver.wait_for(1, timeout=30)
        event = Webhook(secret).verify(delivery.body, delivery.headers)
        assert event["event"] == "job.succeeded" and event["job"]["id"] == job["id"]
        assert delivery.headers["X-Webhook-Secret"] == "shh"
        wait_until(lambda: job_now()["webhookStatus"] == "delivered", what="delivered", interval=0.2)
        assert job_now()["webhookAttempts"] == 2  # one refused before the restart, one delivered after
    finally:
        server.stop()


def test_an_existing_database_is_upgraded(tmp_path):
    path = tmp_path / "old.db"
    old = SqliteDatabase(str(path))
    Runner(old, str(models.MIGRATIONS_DIR)).up(target="0001_initial")
    created = "2026-01-01 00:00:00"
    old.execute_sql(
        "INSERT INTO account (id, email, name, plan, balance, granted, created_at)"
        " VALUES (1, 'old@example.com', '', 'free', 0, 0, ?)",
        (created,),
    )
    rows = {"running": ("processing", "http://127.0.0.1:9/"), "ended": ("succeeded", "http://127.0.0.1:9/")}
    rows["quiet"] = ("pending", None)
    ids = {name: uuid.uuid4() for name in rows}
    for name, (status, url) in rows.items():
        old.execute_sql(
            "INSERT INTO job (id, account_id, type, status, params, cost, progress, created_at,"
            " webhook_url, runs) VALUES (?, 1, 'imagine', ?, '{}', 16, 0, ?, ?, 0)",
            (ids[name].hex, status, created, url),
        )
    old.close()
    models.init_database(f"sqlite:///{path}", str(tmp_path))
    with models.db.connection_context():
        jobs = {name: Job.get_by_id(job_id) for name, job_id in ids.items()}
        # A job that was running when webhooks arrived sends one when it ends.
        assert {name: job.webhook_status for name, job in jobs.items()} == {
            "running": "pending",
            "ended": None,
            "quiet": None,
        }
        assert {job.webhook_attempts for job in jobs.values()} == {0}
        assert Account.get_by_id(1).webhook_signing_secret is None
        assert WebhookDelivery.select().count() == 0


def _replace_sender(app) -> WebhookSender:
    app.extensions["apiframe.webhooks"].stop()
    sender = WebhookSender(app)
    app.extensions["apiframe.webhooks"] = sender  # the fixture stops it
    return sender


def test_a_dead_senders_lease_runs_out_and_another_sends(app, hooks, receiver):
    app.extensions["apiframe.webhooks"].stop()
    job = hooks.submit("/v1/imagine", {"prompt": "orphaned", "webhookUrl": receiver.url()})
    hooks.wait(job["id"])
    held = {
        "lease_owner": "dead:1",
        "lease_token": "t",
        "lease_expires": utcnow() + datetime.timedelta(minutes=1),
    }
    with app.app_context():
        WebhookDelivery.update(**held).where(WebhookDelivery.job == uuid.UUID(job["id"])).execute()
    sender = _replace_sender(app)
    sender.start()
    time.sleep(0.5)  # ten dispatch intervals: a live lease is left alone
    assert receiver.arrived == 0
    with app.app_context():
        expired = {"lease_expires": utcnow() - datetime.timedelta(seconds=1)}
        WebhookDelivery.update(**expired).where(WebhookDelivery.job == uuid.UUID(job["id"])).execute()
    assert settled(hooks, job["id"])["webhookStatus"] == "delivered"
    assert len(receiver.deliveries) == 1


def test_two_senders_never_send_the_same_attempt(app, hooks, receiver):
    app.extensions["apiframe.webhooks"].stop()
    app.extensions["apiframe.limiter"].enabled = False  # polling 16 jobs on a busy machine passes 300/min
    ids = [
        hooks.submit("/v1/imagine", {"prompt": f"crowd {n}", "quality": 0.25, "webhookUrl": receiver.url()})[
            "id"
        ]
        for n in range(16)
    ]
    for job_id in ids:
        hooks.wait(job_id)
    senders = [_replace_sender(app), WebhookSender(app)]  # both find all sixteen due at once
    for sender in senders:
        sender.start()
    try:
        for job_id in ids:
            assert settled(hooks, job_id, timeout=30)["webhookAttempts"] == 1
    finally:
        senders[1].stop()
    sent = [delivery.headers["webhook-id"] for delivery in receiver.deliveries]
    assert len(sent) == 16 and len(set(sent)) == 16


# ---- signing secrets and the CLI --------------------------------------------------------------


def test_the_cli_prints_the_signing_secret_and_rotates_it(app, hooks, runner, receiver):
    with app.app_context():
        assert Account.get(Account.email == EMAIL).webhook_signing_secret is None  # made when needed
    secret = signing_secret(runner)
    assert secret.startswith("whsec_") and " " not in secret
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert signing_secret(runner) == secret

    rotated = signing_secret(runner, "--rotate")
    assert rotated.startswith("whsec_") and rotated != secret
    assert signing_secret(runner) == rotated
    job = hooks.submit("/v1/imagine", {"prompt": "after rotation", "webhookUrl": receiver.url()})
    settled(hooks, job["id"])
    [delivery] = receiver.deliveries
    assert Webhook(rotated).verify(delivery.body, delivery.headers)["job"]["id"] == job["id"]
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(delivery.body, delivery.headers)


def test_the_cli_refuses_an_unknown_account(runner):
    result = runner.invoke(args=["webhooks", "secret", "ghost@example.com"])
    assert result.exit_code != 0 and "no account" in result.output


# ---- settings and schedule --------------------------------------------------------------------


def test_the_default_schedule_spans_about_six_hours():
    base, attempts = config.DEFAULTS["WEBHOOK_RETRY_BASE"], config.DEFAULTS["WEBHOOK_MAX_ATTEMPTS"]
    assert attempts == 8 and config.DEFAULTS["WEBHOOK_TIMEOUT"] == 10
    delays = [webhooks.retry_delay(n, base) for n in range(1, attempts)]
    for n, delay in enumerate(delays, start=1):
        assert 0.9 * base * 2 ** (n - 1) <= delay <= 1.1 * base * 2 ** (n - 1)
    assert 5.4 * 3600 <= sum(delays) <= 6.6 * 3600


def test_webhook_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("APIFRAME_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("APIFRAME_WEBHOOK_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("APIFRAME_WEBHOOK_RETRY_BASE", "2.5")
    monkeypatch.setenv("APIFRAME_WEBHOOK_TIMEOUT", "4")
    monkeypatch.setenv("APIFRAME_WEBHOOK_THREADS", "2")
    settings = config.load()
    assert settings["WEBHOOK_MAX_ATTEMPTS"] == 3 and settings["WEBHOOK_RETRY_BASE"] == 2.5
    assert settings["WEBHOOK_TIMEOUT"] == 4.0 and settings["WEBHOOK_THREADS"] == 2
    monkeypatch.setenv("APIFRAME_WEBHOOK_MAX_ATTEMPTS", "0")
    with pytest.raises(ValueError, match="APIFRAME_WEBHOOK_MAX_ATTEMPTS"):
        config.load()


def test_payload_is_compact_json_of_the_event(app, hooks, receiver):
    job = hooks.submit("/v1/imagine", {"prompt": "compact", "webhookUrl": receiver.url()})
    settled(hooks, job["id"])
    body = receiver.deliveries[0].body
    assert json.dumps(json.loads(body), separators=(",", ":")).encode() == body
    assert int(receiver.deliveries[0].headers["webhook-timestamp"]) == pytest.approx(
        datetime.datetime.now(datetime.UTC).timestamp(), abs=30
    )


def test_a_dropped_connection_is_retried(app, hooks, receiver: Receiver):
    receiver.answers = [None]
    job = hooks.submit("/v1/imagine", {"prompt": "dropped", "webhookUrl": receiver.url()})
    assert settled(hooks, job["id"])["webhookAttempts"] == 2
    assert report(hooks, job["id"])["attempts"][0]["error"] == "the connection failed"
