"""A wall-clock bound on a whole HTTP exchange, connect to last byte, for requests sessions.

urllib3's timeouts bound each socket operation, so a peer that sends one byte every half second
never trips them. A ``Watchdog`` shuts down the sockets its exchange opened (or reused) once its
deadline passes; the blocked read returns at once and the request fails, never holding the thread.
Sessions opt in with ``watch_session``, which makes their connections report their sockets.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import requests
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

MIN_CONNECT_SECONDS = 0.01  # past the deadline a connect fails at once (a timeout of 0 means non-blocking)
_active = threading.local()  # the watchdogs of the exchanges under way on this thread, outermost first


class Watchdog:
    """Within ``with Watchdog(seconds):``, the sockets of watched sessions are shut down at the deadline."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + max(0.0, seconds)
        self._expired = threading.Event()
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._expire)
        self._timer.daemon = True

    @property
    def expired(self) -> bool:
        """Whether the deadline passed while the exchange was under way."""
        return self._expired.is_set()

    def __enter__(self) -> Watchdog:
        stack = getattr(_active, "stack", None)
        if stack is None:
            stack = _active.stack = []
        stack.append(self)
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()
        with self._lock:
            self._done = True
            self._sockets.clear()
        _active.stack.remove(self)

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down when the deadline passes (at once, if it has)."""
        with self._lock:
            if self._done:
                return
            if not self._expired.is_set():
                self._sockets.append(sock)
                return
        _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self._expired.set()
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


def _report(sock: socket.socket | None) -> None:
    if sock is None:
        return
    for watchdog in getattr(_active, "stack", ()):
        watchdog.watch(sock)


def _time_left() -> float | None:
    """Seconds before the nearest deadline of the thread's watchdogs (None without one)."""
    stack = getattr(_active, "stack", None)
    return min(watchdog.deadline for watchdog in stack) - time.monotonic() if stack else None


class _Reporting:
    """A urllib3 connection that hands its socket to the thread's watchdogs, when made and when reused.

    There is no socket to shut down while a connection is being made, so its connect timeout is cut
    to the time left before the deadline (a redirect to a host that never accepts ends in time too).
    """

    sock: socket.socket | None
    timeout: Any

    def connect(self) -> None:
        left = _time_left()
        if left is not None:
            left = max(left, MIN_CONNECT_SECONDS)
            if not isinstance(self.timeout, (int, float)) or self.timeout > left:
                self.timeout = left
        super().connect()  # type: ignore[misc]
        _report(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        _report(self.sock)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Reporting, HTTPConnection):
    pass


class _HTTPSConnection(_Reporting, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def watch_session(session: requests.Session) -> requests.Session:
    """Make ``session``'s connections report their sockets to the watchdogs of the calling thread."""
    for adapter in session.adapters.values():
        manager = getattr(adapter, "poolmanager", None)
        if manager is not None:
            manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return session
