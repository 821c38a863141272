"""Webhooks of jobs from the original apiframe.ai routes: the task object, x-webhook-secret, still signed."""

from __future__ import annotations

import uuid

import pytest
from peewee import SqliteDatabase
from playhouse.migrations import Runner
from standardwebhooks import Webhook

import models
from conftest import Api, wait_until
from models import Job
from original import Original

EMAIL = "original@example.com"
PROMPT = "a paper boat on a pond"


@pytest.fixture
def settings(settings):
    """Retries in tenths of a second rather than minutes."""
    settings.update(WEBHOOK_RETRY_BASE=0.05, WEBHOOK_TIMEOUT=5.0)
    return settings


@pytest.fixture
def key(make_account) -> str:
    return make_account(email=EMAIL)[1]


@pytest.fixture
def original(client, key) -> Original:
    return Original(client, key)


def hook(runner) -> Webhook:
    """A verifier with the account's signing secret, from ``flask webhooks secret``."""
    result = runner.invoke(args=["webhooks", "secret", EMAIL])
    assert result.exit_code == 0, result.output
    return Webhook(result.output.strip().splitlines()[-1])


def settled(task_id: str) -> Job:
    """Wait (on the database, not the rate-limited API) until the task's webhook is delivered or failed."""

    def done() -> Job | None:
        with models.db.connection_context():
            job = Job.get_by_id(uuid.UUID(task_id))
        return job if job.webhook_status in ("delivered", "failed") else None

    return wait_until(done, what=f"the webhook of task {task_id}")


def header(delivery, name: str) -> str | None:
    """A header of a delivery, by its case-insensitive name."""
    return {key.lower(): value for key, value in delivery.headers.items()}.get(name.lower())


def test_an_original_job_posts_its_task_object(original, runner, receiver):
    body = {"prompt": PROMPT, "quality": 0.25, "webhook_url": receiver.url(), "webhook_secret": "s3cret"}
    task_id = original.submit("/imagine", body)
    assert settled(task_id).webhook_status == "delivered"
    [delivery] = receiver.deliveries
    assert header(delivery, "x-webhook-secret") == "s3cret"
    task = hook(runner).verify(delivery.body, delivery.headers)  # Standard Webhooks, on the raw body
    assert task == original.fetch(task_id)
    assert task["status"] == "finished" and task["task_type"] == "imagine" and len(task["image_urls"]) == 4
    assert header(delivery, "webhook-id").startswith("msg_")
    report = original.get(f"/v1/jobs/{task_id}/webhooks").get_json()
    assert report["webhooks"]["status"] == "delivered" and report["webhooks"]["event"] is None


def test_every_original_route_posts_task_objects(original, runner, receiver, files):
    parent = original.run("/imagine", {"prompt": PROMPT, "quality": 0.25})
    children = {
        "/upscale-1x": {"parent_task_id": parent["task_id"], "index": "1"},
        "/variations": {"parent_task_id": parent["task_id"], "index": 2},
        "/reroll": {"parent_task_id": parent["task_id"]},
        "/seed": {"task_id": parent["task_id"]},
        "/describe": {"image_url": files.url("/missing.png")},
    }
    ids = {}
    for path, body in children.items():
        body.update(webhook_url=receiver.url(path), webhook_secret=path[1:])
        ids[path] = original.submit(path, body)
    for task_id in ids.values():
        settled(task_id)
    verifier = hook(runner)
    received = {delivery.path: delivery for delivery in receiver.deliveries}
    assert set(received) == set(ids)
    for path, delivery in received.items():
        task = verifier.verify(delivery.body, delivery.headers)
        assert task == original.fetch(ids[path]) and "event" not in task
        assert header(delivery, "X-Webhook-Secret") == path[1:]
    tasks = {path: received[path].json() for path in ids}
    assert tasks["/upscale-1x"]["task_type"] == "upscale#1"
    assert tasks["/seed"]["seed"] == parent["seed"]
    assert tasks["/describe"]["status"] == "failed" and "HTTP 404" in tasks["/describe"]["message"]


def test_a_reference_body_on_a_shared_path_gets_the_reference_webhook(client, key, receiver):
    api = Api(client, key)
    response = api.post("/imagine", json={"prompt": PROMPT, "quality": 0.25, "webhookUrl": receiver.url()})
    task_id = response.get_json()["task_id"]
    assert settled(task_id).webhook_status == "delivered"
    event = receiver.deliveries[0].json()
    assert event["event"] == "job.succeeded" and event["job"]["id"] == task_id
    report = api.get(f"/v1/jobs/{task_id}/webhooks").get_json()["webhooks"]
    assert report["status"] == "delivered" and report["event"] == "job.succeeded"


def test_jobs_from_before_the_upgrade_are_reference_jobs(tmp_path):
    path = tmp_path / "old.db"
    old = SqliteDatabase(str(path))
    Runner(old, str(models.MIGRATIONS_DIR)).up(target="0002_webhooks")
    old.execute_sql(
        "INSERT INTO account (id, email, name, plan, balance, granted, created_at)"
        " VALUES (1, 'old@example.com', '', 'free', 0, 0, '2026-01-01 00:00:00')"
    )
    job_id = uuid.uuid4()
    old.execute_sql(
        "INSERT INTO job (id, account_id, type, status, params, cost, progress, created_at, runs,"
        " webhook_attempts) VALUES (?, 1, 'imagine', 'succeeded', '{}', 16, 100, ?, 1, 0)",
        (job_id.hex, "2026-01-01 00:00:00"),
    )
    old.close()
    models.init_database(f"sqlite:///{path}", str(tmp_path))
    with models.db.connection_context():
        assert Job.get_by_id(job_id).origin == "reference"
