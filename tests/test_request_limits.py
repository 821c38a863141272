"""Oversize request lines, headers and bodies, and unreadable bodies, get the JSON error format."""

from __future__ import annotations

import socket

import pytest
import requests

from servers import Server, cli, environment, free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("limits")
    running = Server(environment(data / "data", free_port()), data / "server.log").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def key(server) -> str:
    return cli(server.env, "users", "create", "limits@example.com").strip().splitlines()[-1]


def _send_chunked(server, key: str, body: bytes) -> str:
    """POST /v1/imagine with ``body`` as it goes on the wire after chunked headers; the raw answer."""
    head = (
        f"POST /v1/imagine HTTP/1.1\r\nHost: test\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10) as raw:
        raw.sendall(head.encode() + body)
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    return answer.decode("latin-1")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _json_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["X-Content-Type-Options"] == "nosniff"  # the app's answers and gunicorn's
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


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"zz\r\n\r\n", "Invalid chunk size"),
        (b"-2\r\n{}\r\n0\r\n\r\n", "Invalid chunk size"),
        (b"2\r\n{}XX0\r\n\r\n", "terminator"),
        (_chunk(b"{}") + b"0\r\nX-Bad Trailer: 1\r\n\r\n", "header name"),
    ],
)
def test_a_malformed_chunked_body_is_a_json_400(server, key, body, fragment):
    answer = _send_chunked(server, key, body)
    assert answer.startswith("HTTP/1.1 400") and "application/json" in answer, answer[:300]
    assert '"VALIDATION_ERROR"' in answer and "The request body could not be read" in answer
    assert fragment in answer


def test_a_chunked_body_past_the_limit_is_a_413_not_cut_short(server, key):
    padding = b" " * (1024 * 1024)  # JSON whitespace: the first MiB alone would be a valid request
    answer = _send_chunked(server, key, _chunk(b'{"prompt": "a fox"' + padding) + _chunk(b"}") + b"0\r\n\r\n")
    assert answer.startswith("HTTP/1.1 413") and '"PAYLOAD_TOO_LARGE"' in answer, answer[:300]
    within = _chunk(b'{"prompt": "a fox"' + padding[:-1024]) + _chunk(b"}") + b"0\r\n\r\n"
    assert _send_chunked(server, key, within).startswith("HTTP/1.1 202")


def _answer(raw: socket.socket) -> tuple[str, bytes]:
    """One HTTP answer read off ``raw``: its head and its body (framed by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = raw.recv(65536)
        assert chunk, f"the server closed the connection after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
    length = int({name.lower(): value for name, value in fields.items()}[b"content-length"])
    while len(body) < length:
        body += raw.recv(65536)
    return head.decode("latin-1"), body


def _carries_the_next_request(server, key: str, request: bytes, status: str) -> None:
    """``request`` is answered with ``status``, saying keep-alive, and the connection then answers another."""
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10) as raw:
        raw.sendall(request)
        head, answer = _answer(raw)
        assert head.startswith(f"HTTP/1.1 {status}") and b'"error":' in answer.replace(b" ", b""), head
        assert "Connection: keep-alive" in head
        raw.sendall(f"GET /v1/account HTTP/1.1\r\nHost: test\r\nX-API-Key: {key}\r\n\r\n".encode())
        head, answer = _answer(raw)
        assert head.startswith("HTTP/1.1 200") and b'"success":true' in answer.replace(b" ", b"")


def _post(path: str, key: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nX-API-Key: {key}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_after_a_413_the_connection_carries_the_next_request(server, key):
    body = b'{"prompt": "' + b"x" * (1536 * 1024) + b'"}'  # 1.5 MB: past the 1 MiB limit
    _carries_the_next_request(server, key, _post("/v1/imagine", key, body), "413")


# Refused before the body is read: gunicorn itself drops at most 64 KB of an unread body, and would close
# the connection after an answer that said keep-alive, so the client's next request got no answer at all.
@pytest.mark.parametrize(
    ("path", "sent_key", "status"),
    [
        ("/v1/imagine", "ak_live_wrong", "401"),  # a bad key
        ("/v1/no-such-thing", None, "404"),
        ("/v1/account", None, "405"),  # a method the path does not take
        ("/v1/images/generations", "ak_live_wrong", "401"),  # the OpenAI family
    ],
)
def test_after_an_early_error_the_connection_carries_the_next_request(server, key, path, sent_key, status):
    body = b'{"prompt": "' + b"x" * (900 * 1024) + b'"}'  # within the 1 MiB limit, far past 64 KB
    _carries_the_next_request(server, key, _post(path, sent_key or key, body), status)


def test_after_an_early_error_on_a_large_upload_the_connection_carries_the_next_request(server, key):
    # an OpenAI edit of 6 MB (uploads may be up to 20 MiB) sent with a bad key
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + b"\0" * (6 * 1024 * 1024)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = _post("/v1/images/edits", "ak_live_wrong", body, f"multipart/form-data; boundary={boundary}")
    _carries_the_next_request(server, key, request, "401")
