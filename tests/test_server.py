"""The service as users run it: gunicorn, the CLI, real HTTP, and restarts."""

from __future__ import annotations

import http.client
import io
import re
import signal
import time

import pytest
import requests
from PIL import Image

from servers import ROOT, Server, cli, environment, free_port, run_gunicorn
from test_openai_images import NGINX_CONF, nginx_block


@pytest.fixture
def server_env(tmp_path):
    return environment(tmp_path / "data", free_port())


def _key(env) -> str:
    return (
        cli(env, "users", "create", "ops@example.com", "--name", "Ops", "--plan", "scale")
        .strip()
        .splitlines()[-1]
    )


def test_quickstart_create_key_imagine_poll_open_the_image(server_env, tmp_path):
    key = _key(server_env)
    server = Server(server_env, tmp_path / "server.log").start()
    try:
        headers = {"X-API-Key": key}
        response = requests.post(
            f"{server.url}/v1/imagine",
            json={"prompt": "a futuristic city at sunset", "aspectRatio": "16:9"},
            headers=headers,
            timeout=5,
        )
        assert response.status_code == 202
        assert response.headers["X-RateLimit-Limit"] == "300"
        job = server.wait_for(key, response.json()["job"]["id"], ("succeeded", "failed"))
        assert job["status"] == "succeeded"
        assert job["imageUrl"].startswith(f"http://localhost:{server_env['PORT']}/images/")
        image = requests.get(job["imageUrl"].replace("localhost", "127.0.0.1"), timeout=5)
        assert image.status_code == 200 and image.headers["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).size == (2048, 1152)
        account = requests.get(f"{server.url}/v1/account", headers=headers, timeout=5).json()["account"]
        assert account["credits"]["remaining"] == account["credits"]["total"] - 16
        assert requests.get(f"{server.url}/v1/nothing", timeout=5).json()["error"]["code"] == "NOT_FOUND"
    finally:
        server.stop()


def test_a_job_survives_a_crash_of_the_server(server_env, tmp_path):
    server_env.update(APIFRAME_LOCAL_LATENCY="2", APIFRAME_JOB_LEASE="1.5")
    key = _key(server_env)
    server = Server(server_env, tmp_path / "server.log").start()
    job = requests.post(
        f"{server.url}/v1/imagine", json={"prompt": "crash test"}, headers={"X-API-Key": key}, timeout=5
    ).json()["job"]
    server.wait_for(key, job["id"], ("processing",))
    server.stop(signal.SIGKILL)  # no clean-up at all: the lease has to run out
    restarted = Server(server_env, tmp_path / "server.log").start()
    try:
        done = restarted.wait_for(key, job["id"], ("succeeded", "failed", "timed_out"))
        assert done["status"] == "succeeded" and done["progress"] == 100
    finally:
        restarted.stop()


def test_a_clean_stop_hands_running_jobs_back_at_once(server_env, tmp_path):
    server_env.update(APIFRAME_LOCAL_LATENCY="2", APIFRAME_JOB_LEASE="600")
    key = _key(server_env)
    server = Server(server_env, tmp_path / "server.log").start()
    job = requests.post(
        f"{server.url}/v1/imagine", json={"prompt": "restart"}, headers={"X-API-Key": key}, timeout=5
    ).json()["job"]
    server.wait_for(key, job["id"], ("processing",))
    server.stop(signal.SIGTERM)
    restarted = Server(server_env, tmp_path / "server.log").start()
    try:
        # A 600 s lease would hold the job for ten minutes; the clean stop released it.
        done = restarted.wait_for(key, job["id"], ("succeeded", "failed", "timed_out"), timeout=20)
        assert done["status"] == "succeeded"
    finally:
        restarted.stop()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be at least 1, got 0"),
        ({"APIFRAME_WORKERS": "0"}, "APIFRAME_WORKERS must be at least 1, got 0"),
        ({"APIFRAME_EVENT_STREAMS": "-1"}, "APIFRAME_EVENT_STREAMS must not be negative, got -1"),
        ({"APIFRAME_PROVIDER": "sdwebui"}, "APIFRAME_SDWEBUI_URL must be set to use the sdwebui provider"),
    ],
)
def test_a_bad_setting_stops_the_server_before_it_is_ready_with_its_message_alone(
    server_env, setting, message
):
    server_env.update(setting)
    status, output = run_gunicorn(server_env)
    assert status == 1, output
    assert f"\nError: {message}\n" in output
    assert "Traceback" not in output and "is ready" not in output


def test_a_second_server_on_a_port_in_use_is_refused_though_each_runs_several_processes(tmp_path):
    port = free_port()
    first = Server(environment(tmp_path / "a", port, WEB_CONCURRENCY="2"), tmp_path / "a.log").start()
    try:
        status, output = run_gunicorn(environment(tmp_path / "b", port, WEB_CONCURRENCY="2"), timeout=15)
        assert status == 1, output
        assert f"\nError: 127.0.0.1:{port} is already in use, by another server or an older one" in output
        assert "is ready" not in output
        assert requests.get(f"{first.url}/healthz", timeout=5).status_code == 200
    finally:
        first.stop()
    again = Server(environment(tmp_path / "b", port, WEB_CONCURRENCY="2"), tmp_path / "b.log").start()
    again.stop()  # once the first has stopped, the port is free again


def test_an_idle_keep_alive_connection_outlives_the_pauses_of_those_who_reuse_it(server_env, tmp_path):
    server = Server(server_env, tmp_path / "server.log").start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", int(server_env["PORT"]), timeout=10)
        for pause in (0, 3):  # a client's pool reuses the connection after a pause
            time.sleep(pause)
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            assert response.status == 200 and not response.will_close
        connection.close()
    finally:
        server.stop()


def test_nginx_closes_an_idle_upstream_connection_before_gunicorn_does():
    upstream = nginx_block(NGINX_CONF.read_text(), "upstream apiframe_web {")
    nginx = re.search(r"^\s*keepalive_timeout (\d+)s;", upstream, re.MULTILINE)
    gunicorn = re.search(r"^keepalive = (\d+)$", (ROOT / "gunicorn.conf.py").read_text(), re.MULTILINE)
    assert nginx and gunicorn and int(nginx.group(1)) < int(gunicorn.group(1))
