"""The worker pool: the status machine, progress, cancel, timeouts, recovery, atomic claims."""

from __future__ import annotations

import datetime
import json
import logging
import signal
import socket
import sqlite3
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
import requests
from peewee import OperationalError

import allocator
import operations
import workers
from conftest import wait_until
from models import Job, LedgerEntry, db, utcnow
from providers import ProviderError
from servers import Server, cli, environment, free_port
from workers import JobPool

JSON = {"Content-Type": "application/json"}

ORDER = ["pending", "queued", "processing", "succeeded"]


def _balance(api) -> int:
    return api.get("/v1/account").get_json()["account"]["credits"]["remaining"]


def _set(app, job_id: str, **fields) -> None:
    with app.app_context():
        Job.update(**fields).where(Job.id == uuid.UUID(job_id)).execute()


def _stored(app, job_id: str) -> Job:
    with app.app_context(), db.connection_context():
        return Job.get_by_id(uuid.UUID(job_id))


def test_status_moves_forward_and_progress_rises(settings, api, app):
    # Room between the tiles for progress to be seen rising, though a loaded machine paints each slowly.
    app.config["LOCAL_LATENCY"] = 4.0
    job = api.submit("/v1/imagine", {"prompt": "slow sunrise"})
    seen = []
    while True:
        current = api.job(job["id"])
        seen.append((current["status"], current["progress"]))
        if current["status"] in ("succeeded", "failed", "timed_out", "cancelled"):
            break
        time.sleep(0.05)
    statuses = [status for status, _ in seen]
    assert statuses[-1] == "succeeded" and seen[-1][1] == 100
    positions = [ORDER.index(status) for status in statuses]
    assert positions == sorted(positions), statuses
    progress = [value for status, value in seen if status == "processing"]
    assert progress == sorted(progress) and len(set(progress)) >= 4, progress
    assert all(0 <= value < 100 for value in progress)


def test_cancel_stops_a_running_job_promptly(app, api):
    app.config["LOCAL_LATENCY"] = 30
    before = _balance(api)
    job = api.submit("/v1/imagine", {"prompt": "a very slow painting"})
    api.wait(job["id"], until=("processing",))
    started = time.monotonic()
    response = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    cancelled = response.get_json()["job"]
    assert cancelled["status"] == "cancelled" and cancelled["completedAt"] and cancelled["imageUrl"] is None
    pool = app.extensions["apiframe.pool"]
    while pool._running:
        assert time.monotonic() - started < 8, "the worker did not stop"  # its job takes 30 s
        time.sleep(0.02)
    time.sleep(0.3)
    assert api.job(job["id"])["status"] == "cancelled"
    assert _balance(api) == before
    assert not (images_dir_for(app) / job["id"]).exists()


def images_dir_for(app):
    return Path(app.config["DATA_DIR"]) / "images"


def test_cancel_a_queued_job(app, api):
    app.extensions["apiframe.pool"].stop()
    job = api.submit("/v1/imagine", {"prompt": "queued"})
    _set(app, job["id"], status="queued", lease_owner="elsewhere", lease_token="t", lease_expires=utcnow())
    assert api.post(f"/v1/jobs/{job['id']}/cancel").get_json()["job"]["status"] == "cancelled"


def test_a_job_past_the_timeout_is_timed_out_and_refunded(settings, app, api):
    app.config["LOCAL_LATENCY"] = 10
    pool = app.extensions["apiframe.pool"]
    pool.timeout = 1.0
    before = _balance(api)
    job = api.submit("/v1/imagine", {"prompt": "too slow"})
    done = api.wait(job["id"], timeout=10)
    assert done["status"] == "timed_out"
    assert "1 second" in done["error"] and done["completedAt"] and done["imageUrl"] is None
    assert _balance(api) == before
    with app.app_context():
        refunds = LedgerEntry.select().where(
            (LedgerEntry.job == uuid.UUID(job["id"])) & (LedgerEntry.reason == "refund")
        )
        assert [entry.amount for entry in refunds] == [operations.get("imagine").cost]


def test_jobs_of_a_dead_process_are_resumed(app, api):
    pool = app.extensions["apiframe.pool"]
    pool.stop()
    pending = api.submit("/v1/imagine", {"prompt": "left pending"})
    queued = api.submit("/v1/imagine", {"prompt": "left queued"})
    running = api.submit("/v1/imagine", {"prompt": "left running"})
    expired = utcnow() - datetime.timedelta(seconds=1)
    _set(app, queued["id"], status="queued", lease_owner="dead:1", lease_token="a", lease_expires=expired)
    _set(
        app,
        running["id"],
        status="processing",
        progress=40,
        started_at=utcnow(),
        lease_owner="dead:1",
        lease_token="b",
        lease_expires=expired,
    )
    restarted = JobPool(app)
    app.extensions["apiframe.pool"] = restarted
    restarted.start()
    for job in (pending, queued, running):
        assert api.wait(job["id"])["status"] == "succeeded"
    assert _stored(app, running["id"]).runs == 1
    assert api.job(running["id"])["progress"] == 100


def test_a_live_lease_is_left_alone(app, api):
    app.extensions["apiframe.pool"].stop()
    job = api.submit("/v1/imagine", {"prompt": "someone else has it"})
    _set(
        app,
        job["id"],
        status="processing",
        started_at=utcnow(),
        lease_owner="alive:2",
        lease_token="c",
        lease_expires=utcnow() + datetime.timedelta(seconds=60),
    )
    other = JobPool(app)
    app.extensions["apiframe.pool"] = other
    other.start()
    time.sleep(0.5)
    assert api.job(job["id"])["status"] == "processing"
    other.stop()


def test_an_orphan_past_its_deadline_is_timed_out_not_resumed(app, api):
    app.extensions["apiframe.pool"].stop()
    before = _balance(api)
    job = api.submit("/v1/imagine", {"prompt": "ancient"})
    _set(
        app,
        job["id"],
        status="processing",
        started_at=utcnow() - datetime.timedelta(hours=1),
        lease_owner="dead:3",
        lease_token="d",
        lease_expires=utcnow() - datetime.timedelta(minutes=59),
    )
    restarted = JobPool(app)
    app.extensions["apiframe.pool"] = restarted
    restarted.start()
    done = api.wait(job["id"])
    assert done["status"] == "timed_out" and _balance(api) == before


def test_the_sweep_times_out_a_stuck_job_of_a_live_process(app, api):
    app.extensions["apiframe.pool"].stop()
    job = api.submit("/v1/imagine", {"prompt": "stuck"})
    _set(
        app,
        job["id"],
        status="processing",
        started_at=utcnow() - datetime.timedelta(hours=1),
        lease_owner="alive:4",
        lease_token="e",
        lease_expires=utcnow() + datetime.timedelta(minutes=5),
    )
    sweeper = JobPool(app)
    app.extensions["apiframe.pool"] = sweeper
    sweeper.start()
    assert api.wait(job["id"])["status"] == "timed_out"


def test_two_pools_never_run_the_same_job(app, api):
    app.config["LOCAL_LATENCY"] = 0.2
    first = app.extensions["apiframe.pool"]
    second = JobPool(app)
    second.start()
    try:
        ids = [api.submit("/v1/imagine", {"prompt": f"crowd {n}", "quality": 0.25})["id"] for n in range(12)]
        second.nudge()
        for job_id in ids:
            assert api.wait(job_id, timeout=30)["status"] == "succeeded"
        owners = {_stored(app, job_id).runs for job_id in ids}
        assert owners == {1}
    finally:
        second.stop()
        first.nudge()


def test_an_unexpected_provider_error_fails_the_job_and_refunds(app, api, monkeypatch):
    provider = app.extensions["apiframe.providers"].default

    def broken(request, ctx):
        raise KeyError("bug")

    monkeypatch.setattr(provider, "imagine", broken)
    before = _balance(api)
    done = api.imagine()
    assert done["status"] == "failed" and "internal error" in done["error"]
    assert _balance(api) == before


def test_a_provider_error_holding_a_nul_character_still_ends_the_job(on_postgres, app, api, monkeypatch):
    provider = app.extensions["apiframe.providers"].default

    def nul_in_error(request, ctx):
        raise ProviderError("the backend said: bad \x00 byte")  # PostgreSQL cannot store a NUL

    monkeypatch.setattr(provider, "imagine", nul_in_error)
    before = _balance(api)
    done = api.imagine()
    assert done["status"] == "failed" and done["error"] == "the backend said: bad \ufffd byte"
    assert _balance(api) == before


@pytest.fixture
def short_lease(settings):
    settings.update(JOB_LEASE=2.0, LOCAL_LATENCY=2)  # the job's writes fail once its connection is gone


def test_a_job_whose_database_connection_dies_goes_on_with_another(short_lease, on_postgres, api, app):
    pool = app.extensions["apiframe.pool"]
    job = api.submit("/v1/imagine", {"prompt": "connection lost"})
    wait_until(lambda: _stored(app, job["id"]).status == "processing", what="the job to start")
    admin = psycopg2.connect(on_postgres)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        ended = [pid for pid, _ in cursor.fetchall()]

        def left() -> int:  # once gone, their sockets tell the pool so, before a poll of the test draws one
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [ended])
            return cursor.fetchone()[0]

        wait_until(lambda: left() == 0, what="the ended connections to go")
    admin.close()
    done = api.wait(job["id"], timeout=pool.lease.total_seconds() + 15)
    assert done["status"] == "succeeded" and _stored(app, job["id"]).runs == 1  # its run was not lost


def _ledger(app, job_id: str) -> list[tuple[str, int]]:
    with app.app_context(), db.connection_context():
        entries = LedgerEntry.select().where(LedgerEntry.job == uuid.UUID(job_id)).order_by(LedgerEntry.id)
        return [(entry.reason, entry.amount) for entry in entries]


def _errors(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def test_a_database_outage_while_a_job_runs_costs_it_only_its_progress(
    on_postgres, app, api, refusing, caplog
):
    app.config["LOCAL_LATENCY"] = 2
    job = api.submit("/v1/imagine", {"prompt": "through a restart"})
    wait_until(lambda: _stored(app, job["id"]).progress > 0, what="the job to report progress")
    refusing()  # as while PostgreSQL restarts: connections ended, new ones refused
    wait_until(lambda: "running on without recording progress" in caplog.text, what="the job to notice")
    refusing(False)
    done = api.wait(job["id"], timeout=15)  # unfixed: the run was abandoned, and taken up after its lease
    assert done["status"] == "succeeded" and _stored(app, job["id"]).runs == 1
    assert _ledger(app, job["id"]) == [("debit", -operations.get("imagine").cost)]
    assert _errors(caplog) == [] and "Traceback" not in caplog.text
    assert caplog.text.count("running on without recording progress") == 1


def test_a_job_that_ends_while_the_database_is_down_is_ended_once_it_is_back(
    on_postgres, app, api, refusing, caplog
):
    app.config["LOCAL_LATENCY"] = 1
    job = api.submit("/v1/imagine", {"prompt": "finished in the dark"})
    wait_until(lambda: _stored(app, job["id"]).status == "processing", what="the job to start")
    refusing()
    wait_until(lambda: "trying again to end it" in caplog.text, what="the provider's run to end")
    refusing(False)
    done = api.wait(job["id"], timeout=15)
    assert done["status"] == "succeeded" and done["progress"] == 100 and len(done["imageUrls"]) == 4
    assert _stored(app, job["id"]).runs == 1
    assert _ledger(app, job["id"]) == [("debit", -operations.get("imagine").cost)]
    assert _errors(caplog) == [] and "Traceback" not in caplog.text
    assert caplog.text.count("trying again to end it as succeeded") == 1


def test_a_job_taken_over_while_its_end_waits_for_the_database_is_not_ended_twice(
    app, api, monkeypatch, caplog
):
    pool, ending = app.extensions["apiframe.pool"], workers.finish
    attempts = []

    def finish_in_an_outage(job_id, status, **fields):
        attempts.append(status)
        if len(attempts) == 1:  # meanwhile its lease ran out, and another process took the job up
            Job.update(lease_owner="elsewhere", lease_token="theirs").where(Job.id == job_id).execute()
            try:  # as peewee wraps the driver's error
                raise psycopg2.OperationalError("server closed the connection unexpectedly")
            except psycopg2.OperationalError as exc:
                raise OperationalError(exc) from exc
        return ending(job_id, status, **fields)

    monkeypatch.setattr(workers, "finish", finish_in_an_outage)
    job = api.submit("/v1/imagine", {"prompt": "taken over"})
    wait_until(lambda: len(attempts) == 2 and not pool._running, what="the second try to end the job")
    stored = _stored(app, job["id"])
    assert (stored.status, stored.lease_token, stored.runs) == ("processing", "theirs", 1)
    assert _ledger(app, job["id"]) == [("debit", -operations.get("imagine").cost)]
    assert (images_dir_for(app) / job["id"]).exists()  # the images are the new holder's to replace
    assert _errors(caplog) == [] and attempts == ["succeeded", "succeeded"]


def test_a_terminal_job_never_changes(app, api):
    done = api.imagine()
    _set(app, done["id"], lease_token="x")
    with app.app_context():
        from jobs import CANCELLED, finish

        assert finish(uuid.UUID(done["id"]), CANCELLED) is False
    assert api.job(done["id"]) == done


@pytest.mark.parametrize("workers", [1, 3])
def test_pool_size_bounds_concurrency(settings, workers):
    from app import create_app
    from conftest import Api, stop_background

    settings.update(WORKERS=workers, LOCAL_LATENCY=0.6)
    application = create_app(settings)
    try:
        api = Api(application.test_client(), None)
        with application.app_context():
            import accounts

            _, api.key = accounts.create("pool@example.com", plan="scale")
        ids = [api.submit("/v1/imagine", {"prompt": f"n{n}", "quality": 0.25})["id"] for n in range(4)]
        time.sleep(0.3)
        processing = sum(api.job(job_id)["status"] == "processing" for job_id in ids)
        assert processing == workers
        for job_id in ids:
            api.wait(job_id)
    finally:
        stop_background(application)


def test_memory_freed_by_a_job_is_handed_back_when_it_ends(app, api, monkeypatch):
    released = []
    monkeypatch.setattr(allocator, "release_free_memory", lambda: released.append(True))
    job = api.submit("/v1/imagine", {"prompt": "a fox", "quality": 0.25})
    assert api.wait(job["id"])["status"] == "succeeded"
    deadline = time.monotonic() + 5
    while not released and time.monotonic() < deadline:
        time.sleep(0.01)
    assert released
    allocator.configure()  # repeatable, and harmless where malloc is not glibc's
    allocator.release_free_memory()


def test_a_graceful_stop_starts_no_more_jobs(tmp_path):
    """After SIGTERM a process starts no job it would only interrupt and leave to run again from scratch."""
    env = environment(tmp_path / "data", free_port(), APIFRAME_LOCAL_LATENCY="1", APIFRAME_WORKERS="1")
    key = cli(env, "users", "create", "drain@example.com", "--plan", "scale").strip().splitlines()[-1]
    server = Server(env, tmp_path / "server.log").start()
    body = json.dumps({"prompt": "a lighthouse", "quality": 0.25}).encode()
    try:
        for _ in range(6):  # one runs at a time, a second each
            created = requests.post(f"{server.url}/v1/imagine", data=body, headers={"X-API-Key": key, **JSON})
            assert created.status_code == 202, created.text
        # A request still arriving keeps the process up after the SIGTERM, while its jobs end one by one.
        arriving = socket.create_connection(("127.0.0.1", int(env["PORT"])))
        head = (
            f"POST /v1/imagine HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        arriving.sendall(head.encode() + body[:5])
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)  # for the signal to reach the worker process (a job may start meanwhile)
        stopped_at = utcnow()
        time.sleep(3.3)  # the running job ends; before, the next ones started as each slot freed
        arriving.sendall(body[5:])
        assert arriving.recv(100).startswith(b"HTTP/1.1 202")
        arriving.close()
        assert server.process.wait(timeout=30) == 0
    finally:
        server.stop()
    with sqlite3.connect(tmp_path / "data" / "apiframe.db") as database:
        rows = database.execute("SELECT started_at FROM job WHERE started_at IS NOT NULL").fetchall()
    started = [datetime.datetime.fromisoformat(at) for (at,) in rows]
    assert started and all(at < stopped_at for at in started), (stopped_at, started)
