"""Oversize request lines and headers get the JSON error format, from the app or from gunicorn itself."""

from __future__ import annotations

import socket

import pytest
import requests

from servers import Server, environment, free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("limits")
    running = Server(environment(data / "data", free_port()), data / "server.log").start()
    yield running
    running.stop()


def _json_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code
    return body["error"]["message"]


def test_a_10kb_api_key_is_a_json_431(server):
    response = requests.get(f"{server.url}/v1/account", headers={"X-API-Key": "k" * 10240}, timeout=10)
    assert "X-Api-Key" in _json_error(response, 431, "HEADER_TOO_LARGE")


def test_a_path_over_4kb_is_a_json_414(server):
    response = requests.get(f"{server.url}/v1/jobs/{'a' * 5000}", timeout=10)
    assert "4096" in _json_error(response, 414, "URI_TOO_LONG")
    response = requests.get(f"{server.url}/v1/jobs?status={'a' * 5000}", timeout=10)
    _json_error(response, 414, "URI_TOO_LONG")


def test_beyond_gunicorns_own_limits_the_answer_is_json_too(server):
    response = requests.get(f"{server.url}/v1/jobs/{'a' * 9000}", timeout=10)
    _json_error(response, 414, "URI_TOO_LONG")
    response = requests.get(f"{server.url}/v1/account", headers={"X-API-Key": "k" * 70000}, timeout=10)
    _json_error(response, 431, "HEADER_TOO_LARGE")
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10) as raw:
        raw.sendall(b"NOT A REQUEST\r\n\r\n")
        answer = raw.recv(65536).decode("latin-1")
    assert answer.startswith("HTTP/1.1 400") and "application/json" in answer and '"success": false' in answer


def test_normal_requests_still_pass(server):
    response = requests.get(f"{server.url}/v1/account", headers={"X-API-Key": "ak_live_nope"}, timeout=10)
    _json_error(response, 401, "UNAUTHORIZED")
