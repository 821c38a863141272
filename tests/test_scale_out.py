"""The scale-out path: PostgreSQL for data, Redis for rate limits, several processes at once."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest
import redis
import requests
from playhouse.pool import PooledPostgresqlDatabase
from standardwebhooks import Webhook

import credits
from app import create_app
from conftest import Api, stop_background, wait_until
from jobs import ACTIVE
from models import Account, Job
from servers import Server, Worker, cli, environment, free_port

REDIS = "redis://127.0.0.1:6379/14"


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
            )

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(create, range(16)))
        assert sorted(answer.status_code for answer in answers) == [400] * 10 + [429] * 6
        # One window, opened by one process: both give the same end (each knows it, or asks Redis once).
        resets = {int(answer.headers["X-RateLimit-Reset"]) for answer in answers}
        assert max(resets) - min(resets) <= 1 and time.time() < min(resets) <= time.time() + 61

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
        cursor.execute("SELECT SUM(waiting) FROM queue_count")  # kept by every process's changes
        (waiting,) = cursor.fetchone()
    connection.close()
    assert rows and set(rows) == {(1, "succeeded")} and len(rows) == 12
    assert waiting == 0


def test_jobs_table_uses_native_uuids(pg_app):
    with pg_app.app_context():
        assert isinstance(Job._meta.database.obj, PooledPostgresqlDatabase)
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


def _rows(database_url: str, query: str, *args) -> list[tuple]:
    connection = psycopg2.connect(database_url)
    with connection, connection.cursor() as cursor:
        cursor.execute(query, args)
        rows = cursor.fetchall()
    connection.close()
    return rows


def _owner_pid(lease_owner: str) -> int:
    return int(lease_owner.split(":")[1])


PARENTS, WITH_CHILDREN = 20, 12  # imagines; of those, how many get an upscale and a variation


@pytest.mark.slow
def test_two_web_and_two_worker_nodes_share_only_postgres_redis_and_s3(tmp_path, postgres_url, bucket):
    """Every node has its own empty data directory; a worker is killed -9 mid-flight."""
    shared = {
        "APIFRAME_DATABASE_URL": postgres_url,
        "APIFRAME_RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/13",
        "APIFRAME_JOB_LEASE": "4",
        "APIFRAME_WORKERS": "3",
        **bucket.env(),
    }
    web_ports = [free_port(), free_port()]
    balancer = f"http://127.0.0.1:{web_ports[0]}"  # what clients are told; any web node serves any image
    web_envs = [
        environment(tmp_path / f"web{n}", port, APIFRAME_ROLE="web", APIFRAME_PUBLIC_URL=balancer, **shared)
        for n, port in enumerate(web_ports)
    ]
    keys = [
        cli(web_envs[0], "users", "create", f"team{n}@example.com", "--plan", "scale")
        .strip()
        .splitlines()[-1]
        for n in range(2)
    ]
    free_key = cli(web_envs[1], "users", "create", "free@example.com").strip().splitlines()[-1]
    webs = [Server(env, tmp_path / f"web{n}.log").start() for n, env in enumerate(web_envs)]
    workers = [
        Worker(
            environment(tmp_path / f"worker{n}", free_port(), APIFRAME_LOCAL_LATENCY="0.5", **shared),
            tmp_path / f"worker{n}.log",
        ).start()
        for n in range(2)
    ]
    try:
        # The rate limit is shared: a free key's 10 creates a minute (here refused ones, which count too),
        # spread over both web nodes.
        statuses = sorted(
            requests.post(
                f"{webs[n % 2].url}/v1/imagine", json={}, headers={"X-API-Key": free_key}, timeout=10
            ).status_code
            for n in range(16)
        )
        assert statuses == [400] * 10 + [429] * 6

        def submit(n: int, path: str, body: dict) -> str:
            """Submit through web node n % 2, for account (n // 2) % 2: both nodes take jobs of both."""
            response = requests.post(
                f"{webs[n % 2].url}{path}", json=body, headers={"X-API-Key": keys[(n // 2) % 2]}, timeout=10
            )
            assert response.status_code == 202, response.text
            return response.json()["job"]["id"]

        def wait_all(ids: list[str], timeout: float = 60) -> dict[str, dict]:
            """Poll through the web node that did not take each job, a page of jobs per request."""
            deadline, done = time.monotonic() + timeout, {}
            while True:
                for n, key in enumerate(keys):
                    page = requests.get(
                        f"{webs[(n + 1) % 2].url}/v1/jobs?limit=100", headers={"X-API-Key": key}, timeout=10
                    ).json()["jobs"]
                    done.update({job["id"]: job for job in page if job["status"] not in ACTIVE})
                if all(job_id in done for job_id in ids):
                    return {job_id: done[job_id] for job_id in ids}
                assert time.monotonic() < deadline, f"{sum(i in done for i in ids)} of {len(ids)} jobs ended"
                time.sleep(0.25)

        parents = [
            submit(n, "/v1/imagine", {"prompt": f"node test {n}", "quality": 0.25}) for n in range(PARENTS)
        ]
        ended = wait_all(parents, timeout=120)
        children = []
        for n, parent in enumerate(parents[:WITH_CHILDREN]):
            account = (n // 2) % 2
            for path, body in (
                ("/v1/upscale", {"index": 1 + n % 4}),
                ("/v1/variation", {"index": 4 - n % 4}),
            ):
                # the parent's account, through the other web node than the one that took the parent
                response = requests.post(
                    f"{webs[(n + 1) % 2].url}{path}",
                    json={"jobId": parent, **body},
                    headers={"X-API-Key": keys[account]},
                    timeout=10,
                )
                assert response.status_code == 202, response.text
                children.append(response.json()["job"]["id"])

        # kill -9 the first worker while it runs some of them
        victim = workers[0].process.pid

        def victims_jobs() -> list[tuple]:
            query = "SELECT id FROM job WHERE status = 'processing' AND lease_owner LIKE %s"
            return _rows(postgres_url, query, f"%:{victim}:%")

        wait_until(victims_jobs, what="the first worker to run children")
        workers[0].stop(signal.SIGKILL)
        in_flight = victims_jobs()  # what it held as it died: nobody takes those up before its lease ends
        assert in_flight
        ended.update(wait_all(children, timeout=180))

        total = PARENTS + 2 * WITH_CHILDREN
        assert len(ended) == total and {job["status"] for job in ended.values()} == {"succeeded"}
        rows = _rows(postgres_url, "SELECT id, runs, lease_owner, parent_id, status, completed_at FROM job")
        by_id = {str(row[0]): row for row in rows}
        assert len(rows) == total and all(row[4] == "succeeded" and row[5] is not None for row in rows)
        survivor = workers[1].process.pid
        for (job_id,) in in_flight:  # resumed on the other worker after the lease ran out
            assert _owner_pid(by_id[str(job_id)][2]) == survivor and by_id[str(job_id)][1] == 2
        assert all(row[1] == 1 for row in rows if (row[0],) not in in_flight)
        crossed = [row for row in rows if row[3] and _owner_pid(row[2]) != _owner_pid(by_id[str(row[3])][2])]
        assert len(crossed) >= 4, "children whose parent was made on the other worker"

        # Every image, from both web nodes, the same bytes; and nothing on any node's disk.
        urls = [url for job in ended.values() for url in job["imageUrls"]]
        urls += [job["imageUrl"] for job in ended.values()]
        assert len(urls) == PARENTS * 5 + WITH_CHILDREN * (1 + 5 + 1)  # grids and tiles; upscales

        def fetch_both(url: str) -> bool:
            path = url.removeprefix(balancer)
            bodies = [requests.get(f"{web.url}{path}", timeout=10) for web in webs]
            return all(r.status_code == 200 and r.content[:4] == b"\x89PNG" for r in bodies) and (
                bodies[0].content == bodies[1].content
            )

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(fetch_both, urls))
        assert len(bucket.keys()) == PARENTS * 5 + WITH_CHILDREN * (1 + 5)
        for node in ("web0", "web1", "worker0", "worker1"):
            assert not (tmp_path / node / "images").exists()
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.stop()
        for web in webs:
            web.stop()

    # Credits are conserved: each balance is its ledger's sum, and nothing was refunded.
    for email in ("team0@example.com", "team1@example.com"):
        ((balance, ledger, refunds, debits, costs),) = _rows(
            postgres_url,
            "SELECT a.balance, sum(l.amount), count(*) FILTER (WHERE l.reason = 'refund'),"
            " -sum(l.amount) FILTER (WHERE l.reason = 'debit'),"
            " (SELECT sum(cost) FROM job WHERE account_id = a.id)"
            " FROM account a JOIN ledger_entry l ON l.account_id = a.id WHERE a.email = %s GROUP BY a.id",
            email,
        )
        assert balance == ledger and refunds == 0 and debits == costs
