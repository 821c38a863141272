"""The scale-out path: PostgreSQL for data, Redis for rate limits, several processes at once."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest
import redis
import requests
from standardwebhooks import Webhook

import credits
from app import create_app
from conftest import Api, stop_background, wait_until
from models import Account, Job
from servers import Server, cli, environment, free_port

POSTGRES = "postgresql://postgres@127.0.0.1:5432/{name}"
REDIS = "redis://127.0.0.1:6379/14"


def _admin():
    connection = psycopg2.connect(POSTGRES.format(name="test"))
    connection.autocommit = True
    return connection


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database for one test."""
    name = f"apiframe_{uuid.uuid4().hex[:12]}"
    try:
        admin = _admin()
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at 127.0.0.1:5432: {exc}")
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    yield POSTGRES.format(name=name)
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        cursor.execute(f"DROP DATABASE {name}")
    admin.close()


@pytest.fixture
def redis_url():
    """The Redis server (rate-limit buckets are named by key hash, so runs never collide)."""
    try:
        redis.Redis.from_url(REDIS).ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at 127.0.0.1:6379: {exc}")
    return REDIS


@pytest.fixture
def pg_app(settings, postgres_url):
    settings.update(DATABASE_URL=postgres_url, WORKERS=3)
    application = create_app(settings)
    yield application
    stop_background(application)
    from models import db

    db.obj.close_all()


def test_the_api_works_on_postgres(pg_app, files):
    from accounts import create
    from conftest import image_bytes

    with pg_app.app_context():
        _, key = create("pg@example.com", plan="scale")
    api = Api(pg_app.test_client(), key)
    parent = api.imagine("a harbour at dawn")
    assert parent["status"] == "succeeded"
    upscale = api.wait(api.submit("/v1/upscale", {"jobId": parent["id"], "index": 4})["id"])
    assert upscale["status"] == "succeeded"
    described = api.wait(api.submit("/v1/describe", {"imageUrl": files.add("/x.png", image_bytes())})["id"])
    assert described["status"] == "succeeded"
    assert [job["id"] for job in api.get("/v1/jobs").get_json()["jobs"]] == [
        described["id"],
        upscale["id"],
        parent["id"],
    ]
    pg_app.extensions["apiframe.pool"].stop()
    pending = api.submit("/v1/imagine", {"prompt": "cancel me"})
    assert api.post(f"/v1/jobs/{pending['id']}/cancel").get_json()["job"]["status"] == "cancelled"
    account = api.get("/v1/account").get_json()["account"]
    assert account["credits"]["remaining"] == account["credits"]["total"] - 16 - 4 - 4


def test_concurrent_debits_on_postgres(pg_app):
    from accounts import create

    with pg_app.app_context():
        account, key = create("race@example.com", plan="scale")
        credits.grant(account.id, -(account.balance - 16 * 4))
    pg_app.extensions["apiframe.pool"].stop()
    barrier = threading.Barrier(10)

    def spend(_):
        client = pg_app.test_client()
        barrier.wait()
        return client.post("/v1/imagine", json={"prompt": "race"}, headers={"X-API-Key": key}).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = sorted(pool.map(spend, range(10)))
    assert statuses == [202] * 4 + [402] * 6
    with pg_app.app_context():
        assert Account.get_by_id(account.id).balance == 0 == credits.ledger_total(account.id)


def test_two_processes_share_jobs_and_rate_limits(tmp_path, postgres_url, redis_url):
    env = environment(
        tmp_path / "data",
        free_port(),
        APIFRAME_DATABASE_URL=postgres_url,
        APIFRAME_RATELIMIT_STORAGE_URI=redis_url,
        APIFRAME_LOCAL_LATENCY="0.3",
        WEB_CONCURRENCY="2",
    )
    free_key = cli(env, "users", "create", "free@example.com").strip().splitlines()[-1]
    scale_key = cli(env, "users", "create", "scale@example.com", "--plan", "scale").strip().splitlines()[-1]
    server = Server(env, tmp_path / "server.log").start()
    try:
        # Fresh connections are spread over both processes; the limit holds across them.
        def create(_):
            return requests.post(
                f"{server.url}/v1/imagine", json={}, headers={"X-API-Key": free_key}, timeout=10
            ).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = sorted(pool.map(create, range(16)))
        assert statuses == [400] * 10 + [429] * 6

        headers = {"X-API-Key": scale_key}
        ids = [
            requests.post(
                f"{server.url}/v1/imagine",
                json={"prompt": f"shared {n}", "quality": 0.25},
                headers=headers,
                timeout=10,
            ).json()["job"]["id"]
            for n in range(12)
        ]
        for job_id in ids:
            assert (
                server.wait_for(scale_key, job_id, ("succeeded", "failed"), timeout=60)["status"]
                == "succeeded"
            )
    finally:
        server.stop()
    connection = psycopg2.connect(postgres_url)
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT runs, status FROM job")
        rows = cursor.fetchall()
    connection.close()
    assert rows and set(rows) == {(1, "succeeded")} and len(rows) == 12


def test_jobs_table_uses_native_uuids(pg_app):
    with pg_app.app_context():
        assert Job._meta.database.obj.__class__.__name__ == "PooledPostgresqlDatabase"
        columns = {column.name: column.data_type for column in Job._meta.database.get_columns("job")}
        assert columns["id"].lower() == "uuid"


def test_webhooks_on_postgres(pg_app, receiver):
    from accounts import create

    pg_app.config["WEBHOOK_RETRY_BASE"] = 0.05
    with pg_app.app_context():
        _, key = create("hooks@example.com", plan="scale")
    api = Api(pg_app.test_client(), key)
    receiver.answers = [500]
    ids = [
        api.submit("/v1/imagine", {"prompt": f"pg {n}", "quality": 0.25, "webhookUrl": receiver.url()})["id"]
        for n in range(3)
    ]
    with pg_app.app_context():
        for job_id in ids:
            job = uuid.UUID(job_id)
            wait_until(lambda job=job: Job.get_by_id(job).webhook_status == "delivered", what="delivery")
    secret = (
        pg_app.test_cli_runner().invoke(args=["webhooks", "secret", "hooks@example.com"]).output.split()[-1]
    )
    delivered = [delivery for delivery in receiver.deliveries if delivery.answered == 200]
    assert sorted(Webhook(secret).verify(d.body, d.headers)["job"]["id"] for d in delivered) == sorted(ids)
    assert sorted(api.job(job_id)["webhookAttempts"] for job_id in ids) == [1, 1, 2]
    attempts = api.get(f"/v1/jobs/{ids[0]}/webhooks").get_json()["webhooks"]["attempts"]
    assert attempts[-1]["statusCode"] == 200
