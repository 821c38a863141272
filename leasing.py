"""Work fed from the database under leases: what the job pool and the webhook sender share.

A LeasedDispatcher is one process's dispatcher thread and ThreadPoolExecutor. The dispatcher claims
due rows with one compare-and-swap UPDATE each, so no two threads or processes ever hold the same
row, and hands them to the executor. The process renews a lease on the rows it holds; a row whose
lease ran out belongs to a process that died, and is claimed again. Stopping hands rows back at once.
The dispatcher polls every DISPATCH_INTERVAL; on PostgreSQL a wakeup.Listener also wakes it as soon as
any process commits new work.
Rows have ``lease_owner``, ``lease_token`` and ``lease_expires`` columns.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask
from peewee import Expression, Model

import wakeup
from models import db, log_failure, unavailable, utcnow

log = logging.getLogger(__name__)


class LeasedDispatcher:
    """Base class: subclasses say which rows they hold, claim due ones, and run each one."""

    model: type[Model]
    name = "work"

    def __init__(self, app: Flask, size: int) -> None:
        self.app = app
        self.size = size
        self.lease = datetime.timedelta(seconds=float(app.config["JOB_LEASE"]))
        self.interval = float(app.config["DISPATCH_INTERVAL"])
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._draining = threading.Event()  # claim nothing more; see ``drain``
        self._lock = threading.Lock()
        self._running: dict[Any, threading.Event] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._dispatcher: threading.Thread | None = None
        self._listener: wakeup.Listener | None = None

    # ---- what subclasses provide ---------------------------------------------------------------

    def _held(self) -> Expression:
        """Which of this owner's rows are still being worked on."""
        raise NotImplementedError

    def _dispatch(self) -> None:
        """Claim due rows (with ``_take``) and ``_submit`` them while there are free slots."""
        raise NotImplementedError

    def _run(self, key: Any, token: str, interrupted: threading.Event) -> None:
        """Do the work of one claimed row; every write must be conditional on ``token``."""
        raise NotImplementedError

    def _maintain(self) -> None:
        """Periodic upkeep, next to lease renewal (nothing by default)."""

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the dispatcher and the worker threads (once)."""
        with self._lock:
            if self._dispatcher is not None:
                return
            self._executor = ThreadPoolExecutor(self.size, thread_name_prefix=f"apiframe-{self.name}")
            self._dispatcher = threading.Thread(
                target=self._dispatch_forever, name=f"apiframe-{self.name}-dispatch", daemon=True
            )
            self._dispatcher.start()
            if wakeup.enabled(self.app):  # other processes' new work wakes this one at once
                self._listener = wakeup.Listener(self.app.config["DATABASE_URL"], self.name, self.nudge)
                self._listener.start()

    @property
    def started(self) -> bool:
        """Whether start() has run."""
        return self._dispatcher is not None

    def stop(self, wait: bool = True) -> None:
        """Stop claiming; with ``wait``, let running work finish, else interrupt it; release the rest."""
        if self._stopping.is_set() or self._dispatcher is None:
            return
        self._stopping.set()
        if self._listener is not None:
            self._listener.stop()
        self._wake.set()
        self._dispatcher.join()
        if not wait:
            with self._lock:
                for interrupted in self._running.values():
                    interrupted.set()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        try:
            with self.app.app_context(), db.connection_context():
                self._release_leases()
        except Exception as exc:
            if not unavailable(exc):
                raise
            # the leases then run out by themselves, and other processes take the work after that
            log.warning("%s: leases left to run out at stop: database unavailable (%s)", self.name, exc)

    def drain(self) -> None:
        """Claim nothing more, as a graceful stop begins: work already running goes on (its leases still
        renewed) until ``stop``, and the rest is left for other processes, or this one restarted."""
        self._draining.set()

    def nudge(self) -> None:
        """Tell the dispatcher that there may be work (if it has a free thread to give it to)."""
        # With every thread busy the dispatcher could claim nothing; the next thread to finish wakes
        # it. So a burst of new work does not wake it once per row (it was 7% of a create's samples).
        if self._free_slots() > 0:
            self._wake.set()

    def interrupt(self, key: Any) -> None:
        """Ask the work on ``key`` to stop at once, if it runs in this process."""
        with self._lock:
            event = self._running.get(key)
        if event is not None:
            event.set()

    # ---- the dispatcher ------------------------------------------------------------------------

    def _dispatch_forever(self) -> None:
        renew_every = self.lease.total_seconds() / 3
        next_renewal = 0.0
        while not self._stopping.is_set():
            try:
                with self.app.app_context(), db.connection_context():
                    if time.monotonic() >= next_renewal:
                        self._renew_leases()
                        self._maintain()
                        next_renewal = time.monotonic() + renew_every
                    self._dispatch()
            except Exception as exc:
                log_failure(log, exc, "%s dispatcher", self.name, then="; retrying")
                self._stopping.wait(1.0)
            self._wake.wait(self.interval)
            self._wake.clear()

    def _free_slots(self) -> int:
        """Threads free to claim work with: none once draining, even in a claim loop under way."""
        if self._draining.is_set():
            return 0
        with self._lock:
            return self.size - len(self._running)

    def _take(self, row: Any, now: datetime.datetime, condition: Expression, **changes: Any) -> str | None:
        """Claim ``row`` if it still has the lease we saw and meets ``condition``; returns the new token."""
        model = self.model
        token = uuid.uuid4().hex
        same_lease = (
            model.lease_token.is_null() if row.lease_token is None else model.lease_token == row.lease_token
        )
        updated = (
            model.update(lease_owner=self.owner, lease_token=token, lease_expires=now + self.lease, **changes)
            .where((model.id == row.id) & same_lease & condition)
            .execute()
        )
        return token if updated == 1 else None

    def _submit(self, key: Any, token: str) -> None:
        interrupted = threading.Event()
        with self._lock:
            self._running[key] = interrupted
        assert self._executor is not None
        self._executor.submit(self._work, key, token, interrupted)

    def _work(self, key: Any, token: str, interrupted: threading.Event) -> None:
        try:
            with self.app.app_context():
                try:
                    self._run(key, token, interrupted)
                finally:  # the connection the work opened (it may have opened another after an outage)
                    if not db.is_closed():
                        db.close()
        except Exception as exc:
            then = "; left to its lease to run out, then taken up again"
            log_failure(log, exc, "%s on %s", self.name, key, then=then)
        finally:
            with self._lock:
                self._running.pop(key, None)
            self._wake.set()

    def _renew_leases(self) -> None:
        """Renew the leases of the rows this process's threads are working on, and of no other.

        A thread whose work ended without a word (its database connection died, say) leaves its row
        held; that row's lease runs out, and the row is claimed again, here or elsewhere.
        """
        with self._lock:
            running = list(self._running)
        if not running:
            return
        model = self.model
        model.update(lease_expires=utcnow() + self.lease).where(
            (model.lease_owner == self.owner) & model.id.in_(running) & self._held()
        ).execute()

    def _release_leases(self) -> None:
        """Let other processes take this process's unfinished rows right away."""
        model = self.model
        model.update(lease_expires=utcnow()).where((model.lease_owner == self.owner) & self._held()).execute()
