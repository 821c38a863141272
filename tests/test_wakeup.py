"""Instant wake-up on PostgreSQL: a job or webhook accepted by one process wakes idle workers in another.

The worker process polls only every 60 seconds here, so anything that starts sooner was woken by
LISTEN/NOTIFY.
"""

from __future__ import annotations

import select
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest
import requests

import accounts
import wakeup
from app import create_app
from conftest import Api, stop_background, wait_until
from models import db
from servers import Server, Worker, cli, environment, free_port


@pytest.fixture
def nodes(tmp_path, postgres_url):
    """Start a web node (no pool) and, through ``start_worker(**settings)``, a worker, on PostgreSQL."""
    env = environment(
        tmp_path / "web",
        free_port(),
        APIFRAME_DATABASE_URL=postgres_url,
        APIFRAME_ROLE="web",
        APIFRAME_DISPATCH_INTERVAL="60",
    )
    key = cli(env, "users", "create", "wake@example.com", "--plan", "scale").strip().splitlines()[-1]
    web = Server(env, tmp_path / "web.log").start()
    workers = []

    def start_worker(**settings: str) -> Worker:
        worker_env = {
            **env,
            "APIFRAME_DATA_DIR": str(tmp_path / "worker"),
            "APIFRAME_ROLE": "all",
            **settings,
        }
        workers.append(Worker(worker_env, tmp_path / "worker.log").start())
        return workers[-1]

    yield web, key, start_worker
    for worker in workers:
        worker.stop()
    web.stop()


def _listeners(database_url: str) -> int:
    """The job listeners connected to this test's database (other runs may share the server)."""
    connection = psycopg2.connect(database_url)
    with connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'apiframe_job-listener' AND datname = current_database()"
        )
        (count,) = cursor.fetchone()
    connection.close()
    return count


def _submit(web: Server, key: str, **fields) -> str:
    response = requests.post(
        f"{web.url}/v1/imagine",
        json={"prompt": "wake up", "quality": 0.25, **fields},
        headers={"X-API-Key": key},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return response.json()["job"]["id"]


def _notifications(database_url: str, run) -> list[str]:
    """The channels of the notifications sent while ``run()`` ran."""
    listener = psycopg2.connect(database_url)
    listener.autocommit = True
    with listener.cursor() as cursor:
        cursor.execute(f"LISTEN {wakeup.channel('job')}")
    run()
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:  # delivered at commit; give the socket a moment
        listener.poll()
        time.sleep(0.05)
    channels = [notice.channel for notice in listener.notifies]
    listener.close()
    return channels


@pytest.fixture(params=[True, False], ids=["wakeup", "no-wakeup"])
def wake(request, settings, on_postgres) -> bool:
    """APIFRAME_WAKEUP on and off, for an app on PostgreSQL (ask for it before ``app``)."""
    settings.update(WAKEUP=request.param, START_WORKERS=False)
    return request.param


def test_a_paid_job_is_announced_by_its_own_statement(wake, on_postgres, make_account, client):
    api = Api(client, make_account("free")[1])  # credits for three imagines, then 402

    def imagine() -> int:
        time.sleep(wakeup.ANNOUNCE_GAP)  # each job alone: none follows another within the gap
        return api.post("/v1/imagine", json={"prompt": "a fox"}).status_code

    statuses = []
    paid = _notifications(on_postgres, lambda: statuses.extend(imagine() for _ in range(3)))
    refused = _notifications(on_postgres, lambda: statuses.append(imagine()))
    assert statuses == [202, 202, 202, 402]
    assert paid == ([wakeup.channel("job")] * 3 if wake else [])
    assert refused == []  # no row, so no announcement


def test_a_burst_of_jobs_is_announced_once_a_gap_and_after_its_last_job(on_postgres, settings, monkeypatch):
    """Each notification is heard as an idle worker in another process hears it: it then counts the jobs
    it can see. The last one heard sees every job of the burst, and there are far fewer than jobs."""
    monkeypatch.setattr(wakeup, "ANNOUNCE_GAP", 0.2)  # longer, so that even a slow burst is one
    settings["START_WORKERS"] = False
    application = create_app(settings)
    with application.app_context():
        keys = [accounts.create(f"burst{n}@example.com", plan="scale")[1] for n in range(8)]
    heard: list[int] = []  # the jobs seen at each notification
    listener = psycopg2.connect(on_postgres)
    listener.autocommit = True
    with listener.cursor() as cursor:
        cursor.execute(f"LISTEN {wakeup.channel('job')}")
    stop = threading.Event()

    def hear() -> None:
        while not stop.is_set():
            if select.select([listener], [], [], 0.05)[0]:
                listener.poll()
            while listener.notifies:  # one that arrives during the count is added to the list
                listener.notifies.pop(0)
                with listener.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM job")
                    heard.append(cursor.fetchone()[0])

    def submit(key: str) -> list[int]:
        client = Api(application.test_client(), key)
        return [client.post("/v1/imagine", json={"prompt": "a fox"}).status_code for _ in range(10)]

    hearing = threading.Thread(target=hear)
    hearing.start()
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(len(keys)) as pool:
            statuses = [status for done in pool.map(submit, keys) for status in done]
        wait_until(lambda: heard and heard[-1] == len(statuses), what="the burst's last job to be announced")
        took = time.monotonic() - started
    finally:
        stop.set()
        hearing.join()
        listener.close()
        stop_background(application)
    assert statuses == [202] * 80
    assert len(heard) <= took / wakeup.ANNOUNCE_GAP + 2  # at most one announcement a gap, and a last one
    assert len(heard) < len(statuses) / 2


def test_stopping_makes_the_announcement_owed_at_once(on_postgres, settings, monkeypatch):
    monkeypatch.setattr(wakeup, "ANNOUNCE_GAP", 30.0)
    settings["START_WORKERS"] = False
    application = create_app(settings)
    announcer = application.extensions[wakeup.EXTENSION]
    assert announcer.take_turn() and not announcer.take_turn()  # the second job waits for the first's gap
    stopped = []

    def follow_up_and_stop() -> None:
        announcer.follow_up()
        started = time.monotonic()
        announcer.stop()
        stopped.append(time.monotonic() - started)
        with db.connection_context():  # a request's, whose job commits as the process exits
            announcer.follow_up()  # announced by the request's thread, on its connection

    try:
        assert _notifications(on_postgres, follow_up_and_stop) == [wakeup.channel("job")] * 2
    finally:
        stop_background(application)
    assert stopped[0] < 5  # not the 30 s gap


def test_a_job_accepted_by_a_web_node_starts_at_once_on_a_worker(nodes, postgres_url):
    web, key, start_worker = nodes
    start_worker()
    wait_until(lambda: _listeners(postgres_url) == 1, what="the worker to listen")
    for _ in range(3):
        submitted = time.monotonic()
        job_id = _submit(web, key)
        assert web.wait_for(key, job_id, ("succeeded", "failed"), timeout=20)["status"] == "succeeded"
        assert time.monotonic() - submitted < 20  # the worker's next poll is 60 s away


def test_the_listener_reconnects_when_its_connection_is_lost(nodes, postgres_url):
    web, key, start_worker = nodes
    start_worker()
    wait_until(lambda: _listeners(postgres_url) == 1, what="the worker to listen")
    admin = psycopg2.connect(postgres_url)
    with admin, admin.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'apiframe_job-listener' AND datname = current_database()"
        )
    admin.close()
    wait_until(lambda: _listeners(postgres_url) == 1, what="the worker to listen again", timeout=20)
    job_id = _submit(web, key)
    assert web.wait_for(key, job_id, ("succeeded", "failed"), timeout=20)["status"] == "succeeded"


def test_without_wakeup_a_job_waits_for_the_next_poll(nodes, postgres_url):
    web, key, start_worker = nodes
    start_worker(APIFRAME_WAKEUP="false")
    time.sleep(2)  # the worker's first dispatch has run
    assert _listeners(postgres_url) == 0
    job_id = _submit(web, key)
    time.sleep(3)
    assert web.wait_for(key, job_id, ("pending",), timeout=1)["status"] == "pending"


def test_a_webhook_for_a_job_cancelled_on_a_web_node_is_sent_at_once(nodes, receiver):
    web, key, start_worker = nodes
    job_id = _submit(web, key, webhookUrl=receiver.url())
    start_worker(APIFRAME_LOCAL_LATENCY="30")
    wait_until(lambda: web.wait_for(key, job_id, ("processing",))["progress"] > 0, what="the job to run")
    cancelled = requests.post(f"{web.url}/v1/jobs/{job_id}/cancel", headers={"X-API-Key": key}, timeout=10)
    assert cancelled.json()["job"]["status"] == "cancelled"
    (delivery,) = receiver.wait_for(1, timeout=20)  # the sender's next poll is 60 s away
    assert delivery.json()["job"]["id"] == job_id and delivery.json()["job"]["status"] == "cancelled"
