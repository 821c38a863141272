"""A wall-clock bound on a whole HTTP exchange, connect to last byte, for requests sessions.

urllib3's timeouts bound each socket operation, so a peer that sends one byte every half second
never trips them. A ``Watchdog`` shuts down the connections its exchange opened (or reused) once its
deadline passes; the blocked read (or TLS handshake) returns at once and the request fails, never
holding the thread. Sessions opt in with ``watch_session``, which makes their connections report
their sockets: the direct ones and those through a proxy (HTTP_PROXY and the like), forwarded or
tunnelled by CONNECT.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connectionpool import HTTPConnectionPool

MIN_CONNECT_SECONDS = 0.01  # past the deadline a connect fails at once (a timeout of 0 means non-blocking)
_active = threading.local()  # the watchdogs of the exchanges under way on this thread, outermost first


class Watchdog:
    """Within ``with Watchdog(seconds):``, the sockets of watched sessions are shut down at the deadline."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + max(0.0, seconds)
        self._expired = threading.Event()
        self._done = False
        self._duplicates: dict[socket.socket, socket.socket] = {}  # each watched socket's, see ``watch``
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
            duplicates, self._duplicates = self._duplicates, {}
        for duplicate in duplicates.values():
            duplicate.close()
        _active.stack.remove(self)

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock``'s connection down when the deadline passes (at once, if it has).

        The watchdog keeps a duplicate of the socket's descriptor until the exchange ends (so a
        connection closed during the exchange is let go only then): wrapping a socket in TLS moves
        its descriptor to a new socket object and leaves ``sock`` detached, and the handshake, or a
        proxy's answer to CONNECT over TLS, is read on the new object before it can be reported. A
        shutdown acts on the connection, not the descriptor: the duplicate's ends any read on it.
        """
        with self._lock:
            if self._done or sock in self._duplicates:
                return
            if not self._expired.is_set():
                try:
                    self._duplicates[sock] = _duplicate(sock)
                except OSError:  # already closed: nothing to shut down
                    pass
                return
        _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self._expired.set()
            duplicates, self._duplicates = self._duplicates, {}
        for duplicate in duplicates.values():
            _shut(duplicate)
            duplicate.close()


def _duplicate(sock: socket.socket) -> socket.socket:
    """A plain socket object on a new descriptor for ``sock``'s connection (``sock.dup()`` refuses TLS)."""
    return socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


def _report(sock: Any) -> None:
    # Through an https proxy, an https request's socket is urllib3's SSLTransport (TLS inside the TLS to
    # the proxy): no socket of its own, and the one it runs on, the proxy's, is reported already.
    if not isinstance(sock, socket.socket):
        return
    for watchdog in getattr(_active, "stack", ()):
        watchdog.watch(sock)


def _time_left() -> float | None:
    """Seconds before the nearest deadline of the thread's watchdogs (None without one)."""
    stack = getattr(_active, "stack", None)
    return min(watchdog.deadline for watchdog in stack) - time.monotonic() if stack else None


class _Reporting:
    """A urllib3 connection that hands its sockets to the thread's watchdogs, when made and when reused.

    A new socket is handed over at once, before a proxy's answer to CONNECT or a TLS handshake is
    read on it, and the socket the connection ends up with (TLS over it) once connected. While it
    is being made there is no socket to shut down, so its connect timeout is cut to the time left
    before the deadline (a redirect to a host that never accepts ends in time too).
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

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        _report(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> Any:
        _report(self.sock)
        return super().request(*args, **kwargs)  # type: ignore[misc]


@functools.cache
def _watched_pool(pool: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
    """``pool`` with connections that report their sockets (any kind: plain, TLS, SOCKS)."""
    if issubclass(pool.ConnectionCls, _Reporting):
        return pool
    connection = type(f"Watched{pool.ConnectionCls.__name__}", (_Reporting, pool.ConnectionCls), {})
    return type(f"Watched{pool.__name__}", (pool,), {"ConnectionCls": connection})


def _watch_manager(manager: PoolManager) -> PoolManager:
    """Make the pools ``manager`` creates from now on report their connections' sockets."""
    manager.pool_classes_by_scheme = {
        scheme: _watched_pool(pool) for scheme, pool in manager.pool_classes_by_scheme.items()
    }
    return manager


def _watch_adapter(adapter: HTTPAdapter) -> None:
    """Watch the adapter's direct pools and those of every proxy it goes through.

    requests sends a proxied call through a ProxyManager of its own (``proxy_manager_for``), made
    when the environment first names the proxy, beside the adapter's direct pool manager.
    """
    for manager in [adapter.poolmanager, *adapter.proxy_manager.values()]:
        _watch_manager(manager)
    make_proxy_manager = adapter.proxy_manager_for

    def proxy_manager_for(proxy: str, **proxy_kwargs: Any) -> PoolManager:
        return _watch_manager(make_proxy_manager(proxy, **proxy_kwargs))

    adapter.proxy_manager_for = proxy_manager_for  # type: ignore[method-assign]


def watch_session(session: requests.Session) -> requests.Session:
    """Make ``session``'s connections report their sockets to the watchdogs of the calling thread."""
    for adapter in session.adapters.values():
        if isinstance(adapter, HTTPAdapter):
            _watch_adapter(adapter)
    return session
