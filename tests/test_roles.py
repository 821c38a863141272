"""Process roles: web nodes with no pool, `flask --app app worker` with no HTTP, a proxy in front."""

from __future__ import annotations

import signal
import sqlite3
import time

import pytest
import requests
from flask import jsonify, request

from app import create_app
from conftest import stop_background, wait_until
from servers import Server, Worker, cli, environment, free_port


def _submit(server: Server, key: str, **fields) -> str:
    response = requests.post(
        f"{server.url}/v1/imagine",
        json={"prompt": "roles", "quality": 0.25, **fields},
        headers={"X-API-Key": key},
    )
    assert response.status_code == 202, response.text
    return response.json()["job"]["id"]


def _job(server: Server, key: str, job_id: str) -> dict:
    return requests.get(f"{server.url}/v1/jobs/{job_id}", headers={"X-API-Key": key}, timeout=5).json()["job"]


def test_a_web_node_runs_no_jobs_and_a_worker_runs_them_without_http(tmp_path):
    env = environment(tmp_path / "data", free_port(), APIFRAME_ROLE="web")
    key = cli(env, "users", "create", "roles@example.com", "--plan", "scale").strip().splitlines()[-1]
    web = Server(env, tmp_path / "web.log").start()
    worker_env = {**env, "APIFRAME_ROLE": "all", "PORT": str(free_port())}
    try:
        job_id = _submit(web, key)
        time.sleep(1.5)  # several dispatch intervals: no pool in the web node takes it
        assert _job(web, key, job_id)["status"] == "pending"
        worker = Worker(worker_env, tmp_path / "worker.log").start()
        assert web.wait_for(key, job_id, ("succeeded", "failed"))["status"] == "succeeded"
        assert requests.get(_job(web, key, job_id)["imageUrl"].replace("localhost", "127.0.0.1")).ok
        with pytest.raises(requests.ConnectionError):  # the worker serves no HTTP
            requests.get(f"http://127.0.0.1:{worker_env['PORT']}/", timeout=2)
        assert worker.stop(signal.SIGTERM, timeout=15) == 0
        assert "stopping; handing running jobs back" in (tmp_path / "worker.log").read_text()
    finally:
        web.stop()


def test_a_stopped_worker_hands_its_running_job_to_another_at_once(tmp_path):
    env = environment(tmp_path / "data", free_port(), APIFRAME_ROLE="web", APIFRAME_JOB_LEASE="120")
    key = cli(env, "users", "create", "handback@example.com", "--plan", "scale").strip().splitlines()[-1]
    web = Server(env, tmp_path / "web.log").start()
    try:
        slow = Worker({**env, "APIFRAME_ROLE": "all", "APIFRAME_LOCAL_LATENCY": "30"}, tmp_path / "slow.log")
        slow.start()
        job_id = _submit(web, key)
        wait_until(lambda: _job(web, key, job_id)["progress"] > 0, what="the slow worker to make progress")
        started = time.monotonic()
        assert slow.stop(signal.SIGINT, timeout=15) == 0
        assert time.monotonic() - started < 10
        assert _job(web, key, job_id)["status"] == "processing"
        fast = Worker({**env, "APIFRAME_ROLE": "all"}, tmp_path / "fast.log").start()
        try:
            # far sooner than the 120 s lease: the stopped worker released it
            assert web.wait_for(key, job_id, ("succeeded", "failed"), timeout=20)["status"] == "succeeded"
        finally:
            fast.stop()
    finally:
        web.stop()
    database = sqlite3.connect(tmp_path / "data" / "apiframe.db")
    assert database.execute("SELECT runs, status FROM job").fetchall() == [(2, "succeeded")]
    database.close()


def test_proxy_fix_trusts_forwarded_headers_only_when_enabled(settings):
    forwarded = {
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "api.example.org",
    }
    seen = {}
    for proxies in (0, 1):
        application = create_app({**settings, "PROXY_FIX": proxies, "START_WORKERS": False})

        @application.get("/_seen")
        def show():
            return jsonify(addr=request.remote_addr, scheme=request.scheme, host=request.host)

        seen[proxies] = application.test_client().get("/_seen", headers=forwarded).get_json()
        stop_background(application)
    assert seen[1] == {"addr": "203.0.113.7", "scheme": "https", "host": "api.example.org"}
    assert seen[0] == {"addr": "127.0.0.1", "scheme": "http", "host": "localhost"}


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [("ROLE", "gpu", "APIFRAME_ROLE must be one of all, web"), ("PROXY_FIX", -1, "APIFRAME_PROXY_FIX")],
)
def test_bad_role_settings_are_refused_at_start(settings, setting, value, message):
    with pytest.raises(ValueError, match=message):
        create_app({**settings, setting: value})
