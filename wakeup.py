"""Instant wake-up across processes and machines: PostgreSQL LISTEN/NOTIFY.

Whoever commits new work (a job, a webhook delivery) also sends ``NOTIFY apiframe_<kind>`` in the same
transaction, so PostgreSQL delivers it exactly when the work becomes visible. Every process that runs
a dispatcher keeps one listening connection per kind and nudges its dispatcher on each notification.
Polling stays the fallback: a lost connection is reopened, and nothing is missed for longer than
one dispatch interval. On SQLite (one machine) there is nothing to do.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable

import psycopg2
import psycopg2.extensions
from flask import Flask, current_app
from peewee import Node, fn

from models import db, is_sqlite, keepalives

log = logging.getLogger(__name__)

RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)  # seconds between attempts to reopen a lost connection


def channel(kind: str) -> str:
    """The channel that announces new work of ``kind`` ("job", "webhook").

    Lower case: LISTEN and NOTIFY fold an unquoted name to lower case, and pg_notify does not.
    """
    return f"apiframe_{kind}"


def enabled(app: Flask) -> bool:
    """Whether ``app`` wakes other processes through its database."""
    return bool(app.config["WAKEUP"]) and app.config["DATABASE_URL"].startswith(
        ("postgres://", "postgresql://")
    )


def announce(kind: str) -> None:
    """Tell every listening process about new work of ``kind``, when the current transaction commits."""
    if not is_sqlite() and current_app.config["WAKEUP"]:
        db.execute_sql(f"NOTIFY {channel(kind)}")


def notification(kind: str) -> Node:
    """``announce`` as an expression to return, for a statement that is its own transaction.

    Each row returned with it announces new work of ``kind`` when the statement commits; a statement
    that returns no row announces nothing. PostgreSQL only.
    """
    return fn.pg_notify(channel(kind), "")


class Listener:
    """A thread that holds one LISTEN connection and calls ``callback`` on every notification."""

    def __init__(self, database_url: str, kind: str, callback: Callable[[], None]) -> None:
        self.database_url = database_url
        self.channel = channel(kind)
        self.callback = callback
        self.listening = threading.Event()  # set while the connection is open and listening
        self._stopping = threading.Event()
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(
            target=self._listen_forever, name=f"{self.channel}-listen", daemon=True
        )

    def start(self) -> None:
        """Start listening."""
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and close the connection."""
        self._stopping.set()
        os.write(self._stop_write, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        os.close(self._stop_read)
        os.close(self._stop_write)

    def _listen_forever(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._listen()
            except psycopg2.Error as exc:
                failures = 0 if self.listening.is_set() else failures + 1
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                log.warning(
                    "%s: %s; listening again in %gs (polling meanwhile)",
                    self.channel,
                    str(exc).strip(),
                    delay,
                )
                self.listening.clear()
                self._stopping.wait(delay)

    def _listen(self) -> None:
        """Listen until stopped or the connection fails."""
        connection = psycopg2.connect(
            self.database_url,
            connect_timeout=5,
            application_name=f"{self.channel}-listener",
            **keepalives(self.database_url),
        )
        try:
            connection.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with connection.cursor() as cursor:
                cursor.execute(f"LISTEN {self.channel}")
            self.listening.set()
            self.callback()  # work may have arrived while no connection listened
            while not self._stopping.is_set():
                readable, _, _ = select.select([connection, self._stop_read], [], [], 60)
                if connection in readable:
                    connection.poll()
                    if connection.notifies:
                        connection.notifies.clear()
                        self.callback()
        finally:
            connection.close()
