"""Instant wake-up across processes and machines: PostgreSQL LISTEN/NOTIFY.

Whoever commits new work (a job, a webhook delivery) also sends ``NOTIFY apiframe_<kind>`` in the same
transaction, so PostgreSQL delivers it exactly when the work becomes visible. Every process that runs
a dispatcher keeps one listening connection per kind and nudges its dispatcher on each notification.
Polling stays the fallback: a lost connection is reopened, and nothing is missed for longer than
one dispatch interval. On SQLite (one machine) there is nothing to do.

A NOTIFY is not free: PostgreSQL lets one notifying transaction commit at a time (a lock held through
the commit's flush), and wakes every listener for each. So a burst of jobs accepted on their own is
announced twice, not once a job (Announcer): by the first job's own statement, and once after the
burst's latest commit, at most ANNOUNCE_GAP later.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.extensions
from flask import Flask, current_app
from peewee import Node, fn

from models import connection_settings, db, is_sqlite, log_failure

log = logging.getLogger(__name__)

EXTENSION = "apiframe.announcer"
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)  # seconds between attempts to reopen a lost connection
# The longest an idle worker in another process waits to hear of a job in a burst (the first one is
# announced at once). With a NOTIFY each, PostgreSQL took 2,800 jobs a second from 8 clients, and
# 5,160 without (pgbench, this schema, on 2 cores); under the bench's load, one process's creates
# cost it 1.10 ms of CPU each with a NOTIFY each, and 0.95 ms with this gap.
ANNOUNCE_GAP = 0.02


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


class Announcer:
    """One process's announcements of new jobs accepted on their own, at most one per ANNOUNCE_GAP.

    Before a job's statement runs, ``take_turn`` says whether it carries the announcement itself: yes
    when none was made in the last ANNOUNCE_GAP and none is owed. A job that did not calls ``follow_up``
    once it has committed, and a thread announces it, and every other job committed meanwhile, at the
    end of that gap. So no job commits without an announcement made after it; ``stop`` makes the one
    owed at once, and a job that commits after it announces itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = -ANNOUNCE_GAP  # time.monotonic() of the latest announcement made or begun
        self._owed = False  # a committed job waits for an announcement
        self._wake = threading.Event()  # set when one is owed, or to stop
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def take_turn(self) -> bool:
        """Whether the job about to be written announces itself (then it must, in its statement)."""
        with self._lock:
            now = time.monotonic()
            if self._owed or now - self._last < ANNOUNCE_GAP:  # owed: the thread announces it anyway
                return False
            self._last = now
            return True

    def follow_up(self) -> None:
        """A job that did not announce itself has committed: announce it within ANNOUNCE_GAP."""
        with self._lock:
            if not self._stopping.is_set():
                self._owed = True
                if self._thread is None:  # by the first burst; a CLI or worker process may never need it
                    self._thread = threading.Thread(
                        target=self._announce_forever, name="apiframe_job-announce", daemon=True
                    )
                    self._thread.start()
                self._wake.set()
                return
        self._announce(contextlib.nullcontext())  # stopped: at once, on the request's own connection

    def stop(self) -> None:
        """Make the announcement still owed at once, if one is, and stop."""
        with self._lock:
            self._stopping.set()
            self._wake.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    def _announce_forever(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                gap = self._last + ANNOUNCE_GAP - time.monotonic()
            if gap > 0:
                self._stopping.wait(gap)
            with self._lock:  # a job that commits from here on is announced by the next round
                owed, self._owed = self._owed, False
                if owed:
                    self._last = time.monotonic()
                elif self._stopping.is_set():
                    return
                if not self._stopping.is_set():  # stopping: round after round until none is owed
                    self._wake.clear()
            if owed:
                self._announce(db.connection_context())

    def _announce(self, connection: contextlib.AbstractContextManager[Any]) -> None:
        try:
            with connection:
                db.execute_sql(f"NOTIFY {channel('job')}")
        except Exception as exc:
            then = "; other processes find the jobs at their next poll"
            log_failure(log, exc, "announcing new jobs", then=then)


def announcer(app: Flask) -> Announcer | None:
    """``app``'s announcer of jobs accepted on their own, or None where nothing is announced."""
    return app.extensions[EXTENSION]


def init_app(app: Flask) -> Announcer | None:
    """Give ``app`` its announcer (its thread starts with the first job that needs it)."""
    app.extensions[EXTENSION] = Announcer() if enabled(app) else None
    return app.extensions[EXTENSION]


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
            application_name=f"{self.channel}-listener",
            **connection_settings(self.database_url),
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
