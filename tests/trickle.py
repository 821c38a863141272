"""A loopback HTTP (or TLS) server that answers one byte every ``interval`` seconds: the slowest of peers."""

from __future__ import annotations

import socket
import threading
import time

# A TLS handshake record of 16 kB (the largest) holding a ServerHello: the client reads all of it before it
# can go on, so the bytes need not be right.
SERVER_HELLO = b"\x16\x03\x03\x40\x00" + b"\x02\x00\x3f\xfc\x03\x03" + bytes(16378)


class TrickleServer:
    """Answers every connection one byte at a time; ``mode`` picks what trickles.

    ``headers``: the status line and headers trickle; ``body``: headers at once, then a large body trickles;
    ``tls``: an https server whose ServerHello trickles, so the client's TLS handshake never ends.
    Each connection stops after ``limit`` seconds. ``open_connections`` counts connections still being fed.
    """

    def __init__(self, mode: str = "headers", interval: float = 0.5, limit: float = 30.0) -> None:
        self.mode = mode
        self.interval = interval
        self.limit = limit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open_connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/slow.png") -> str:
        return f"{'https' if self.mode == 'tls' else 'http'}://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._feed, args=(conn,), daemon=True).start()

    def _feed(self, conn: socket.socket) -> None:
        with self._lock:
            self.open_connections += 1
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
        trickled = {"headers": head, "body": b"\x89PNG" + b"\0" * 99996, "tls": SERVER_HELLO}[self.mode]
        try:
            conn.settimeout(5)
            conn.recv(65536)  # the request (for tls, the ClientHello)
            if self.mode == "body":
                conn.sendall(head)
            started = time.monotonic()
            for byte in trickled:
                if self._stop.is_set() or time.monotonic() - started > self.limit:
                    break
                conn.sendall(bytes([byte]))
                time.sleep(self.interval)
        except OSError:  # the client hung up: what a deadline should make it do
            pass
        finally:
            conn.close()
            with self._lock:
                self.open_connections -= 1

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
