"""The safe fetcher: schemes, private addresses (also after redirects), size and time caps."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from requests_hardened import Config, HTTPSession

import fetch
from conftest import image_bytes

LIMITS = {"max_bytes": 1_000_000, "timeout": 5.0}


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "gopher://example.com",
        "http://",
        "example.com/a.png",
        "http://example.com:65536/a.png",
    ],
)
def test_only_http_urls_with_a_host(url):
    with pytest.raises(fetch.FetchError):
        fetch.fetch_bytes(url, allow_private=False, **LIMITS)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/a.png",
        "http://localhost:9/a.png",
        "http://[::1]:9/a.png",
        "http://10.0.0.1/a.png",
        "http://192.168.1.1/a.png",
        "http://172.16.0.1/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:9/",
        "http://[::ffff:127.0.0.1]:9/",
    ],
)
def test_private_loopback_and_link_local_addresses_are_refused(url):
    with pytest.raises(fetch.FetchError, match="private, loopback or link-local"):
        fetch.fetch_bytes(url, allow_private=False, **LIMITS)


def test_allowed_private_urls_are_fetched(files):
    url = files.add("/ok.png", image_bytes())
    assert fetch.fetch_bytes(url, allow_private=True, **LIMITS) == image_bytes()


def test_a_redirect_to_a_private_address_is_refused(files, monkeypatch):
    # The first hop is on loopback (allowed here); its redirect points at the cloud metadata address.
    def loopback_only(**kwargs):
        return HTTPSession(
            Config(
                ip_filter_enable=True,
                ip_filter_allow_loopback_ips=True,
                never_redirect=False,
                default_timeout=(2, 2),
            )
        )

    monkeypatch.setattr(fetch, "session", lambda **kwargs: loopback_only(**kwargs))
    url = files.redirect("/hop", "http://169.254.169.254/latest/meta-data/")
    with pytest.raises(fetch.FetchError, match="private"):
        fetch.fetch_bytes(url, allow_private=False, **LIMITS)
    assert files.requests == ["/hop"]


def test_redirect_loops_are_cut(files):
    files.redirect("/a", files.url("/b"))
    files.redirect("/b", files.url("/a"))
    with pytest.raises(fetch.FetchError, match="redirects"):
        fetch.fetch_bytes(files.url("/a"), allow_private=True, **LIMITS)


def test_size_cap_with_and_without_content_length(files):
    url = files.add("/big.bin", b"x" * 5000, "application/octet-stream")
    with pytest.raises(fetch.FetchError, match="larger than"):
        fetch.fetch_bytes(url, allow_private=True, max_bytes=1000, timeout=5)

    class Chunked(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"y" * 1000)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Chunked)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(fetch.FetchError, match="larger than"):
            fetch.fetch_bytes(
                f"http://127.0.0.1:{server.server_port}/", allow_private=True, max_bytes=10_000, timeout=5
            )
    finally:
        server.shutdown()


def test_a_silent_server_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        with pytest.raises(fetch.FetchError, match="did not answer in time"):
            fetch.fetch_bytes(
                f"http://127.0.0.1:{listener.getsockname()[1]}/",
                allow_private=True,
                max_bytes=1000,
                timeout=0.5,
            )
    finally:
        listener.close()


def test_unresolvable_host():
    with pytest.raises(fetch.FetchError, match="could not be resolved|connection failed"):
        fetch.fetch_bytes("http://no-such-host.invalid/a.png", allow_private=False, **LIMITS)


def test_post_json_refuses_what_can_never_be_reached():
    for url in (
        "ftp://example.com/hook",
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/",
        "http://example.com:99999/hook",
    ):
        with pytest.raises(fetch.RefusedURL):
            fetch.post_json(url, b"{}", {}, allow_private=False, timeout=2)


def test_post_json_failures_that_may_pass_are_not_refusals():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(fetch.FetchError, match="connection failed") as failure:
        fetch.post_json(f"http://127.0.0.1:{port}/hook", b"{}", {}, allow_private=True, timeout=2)
    assert not isinstance(failure.value, fetch.RefusedURL)


@pytest.mark.timeout(30)
def test_post_json_never_reads_an_endless_answer():
    class Endless(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"z" * 65536)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        response = fetch.post_json(
            f"http://127.0.0.1:{server.server_port}/", b"{}", {}, allow_private=True, timeout=2
        )
        assert response.status_code == 200
    finally:
        server.shutdown()
