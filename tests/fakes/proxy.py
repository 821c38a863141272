"""A fake forward HTTP proxy on loopback, as squid or tinyproxy serve clients that HTTP_PROXY points at.

``CONNECT host:port`` opens a tunnel (for https, and for websockets); a request in absolute form
(``GET http://host:port/path``) is passed to its server. Every CONNECT is recorded with its
Proxy-Authorization, and ``answer`` makes the proxy refuse CONNECT (``"407"``, ``"502"``), send an
endless answer head at once (``"huge head"``) or a byte at a time (``"trickle"``), or never answer
(``"silent"``), and ``delay`` holds every answer to CONNECT back. Plain requests are always passed on.
Given a server context, the proxy speaks TLS to its clients: an ``https://`` proxy.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
import time
from urllib.parse import urlsplit

REASONS = {"407": "Proxy Authentication Required", "502": "Bad Gateway"}
HANG_LIMIT = 30.0  # a silent or trickling answer gives up after this long, even if the client stays


class FakeProxy:
    """An HTTP proxy on 127.0.0.1; ``url`` is what HTTP_PROXY or HTTPS_PROXY would say."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.answer = "200"  # how CONNECT is answered: see the module's docstring
        self.delay = 0.0  # seconds each answer to CONNECT waits
        self.connects: list[str] = []  # CONNECT targets, in order
        self.authorizations: list[str | None] = []  # each CONNECT's Proxy-Authorization
        self.forwarded: list[str] = []  # request lines of requests passed on in absolute form
        self.upstream: set[str] = set()  # "host:port" this proxy's connections to servers came from
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(tls.wrap_socket(self.request, server_side=True) if tls else self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop accepting connections."""
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, client: socket.socket) -> None:
        head, rest = _read_head(client)
        if not head:
            return
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {
            name.strip().lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)
        }
        if method != "CONNECT":
            self.forwarded.append(request_line)
            parts = urlsplit(target)
            self._pipe(client, self._dial(str(parts.hostname), parts.port or 80), head + b"\r\n\r\n" + rest)
            return
        self.connects.append(target)
        self.authorizations.append(headers.get("proxy-authorization"))
        time.sleep(self.delay)
        if self.answer == "200":
            host, _, port = target.rpartition(":")
            upstream = self._dial(host.strip("[]"), int(port))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self._pipe(client, upstream, rest)
        elif self.answer in REASONS:
            client.sendall(
                f"HTTP/1.1 {self.answer} {REASONS[self.answer]}\r\nContent-Length: 0\r\n\r\n".encode()
            )
        else:
            _misbehave(client, self.answer)

    def _dial(self, host: str, port: int) -> socket.socket:
        upstream = socket.create_connection((host, port), 5)
        upstream.settimeout(None)
        self.upstream.add("{}:{}".format(*upstream.getsockname()[:2]))
        return upstream

    def _pipe(self, client: socket.socket, upstream: socket.socket, first: bytes) -> None:
        """Bytes both ways until either side closes."""
        if first:
            upstream.sendall(first)
        back = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
        back.start()
        _copy(client, upstream)
        back.join(HANG_LIMIT)
        upstream.close()


def _read_head(client: socket.socket) -> tuple[bytes, bytes]:
    """A request's head (without its blank line) and whatever came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            return b"", b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _copy(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    try:
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _misbehave(client: socket.socket, how: str) -> None:
    """Answer CONNECT with a head that never ends ("huge head", "trickle"), or not at all ("silent")."""
    client.settimeout(HANG_LIMIT)
    try:
        if how == "silent":
            client.recv(1)  # until the client gives up
            return
        client.sendall(b"HTTP/1.1 200 Connection established\r\n")
        started = time.monotonic()
        while time.monotonic() - started < HANG_LIMIT:
            if how == "trickle":
                client.sendall(b"X")
                time.sleep(0.05)
            else:
                client.sendall(b"X-Padding: " + b"x" * 1000 + b"\r\n")
    except OSError:
        pass
