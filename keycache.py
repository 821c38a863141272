"""Live API keys remembered between requests, and forgotten at once wherever a key or a plan changes.

Every API request authenticates by its key, and reading the key's row (with its account) was a
statement of its own: under concurrent requests a statement costs far more than its SQL, since each
one lets go of the GIL several times. So this process keeps the rows of live keys, and uses one again
only while nothing that decides it can have changed since it was read. Whoever revokes a key or
changes a plan calls ``changed()`` once that has committed, and every process hears of it (ending an
account's console sessions calls it too, for the open live views that ask again; so a logout anywhere
makes every process read each key once more, a statement per key, which logouts are rare enough for):

- on SQLite (one machine), through a counter of 8 bytes in a file beside the database, which every
  process maps into its memory (reading it is a memory read, not a system call) and ``changed()``
  adds one to, from any process: the server's, or the CLI's;
- on PostgreSQL, through ``NOTIFY apiframe_keys``; each process listens (wakeup.Listener) and counts
  what it hears. While its listener is not connected, nothing is kept, and every request reads its key.

An entry is read again after MAX_AGE seconds in any case. That bounds how long a change made some other
way (by hand in the database) goes unseen, and how long a process whose listening connection broke
without a word (until TCP keepalives notice) goes on with what it kept.

Unknown keys are never kept: each costs a statement. The account kept with a key is used for its id
and plan; its figures (balance, spending) are read again by whoever shows them.
"""

from __future__ import annotations

import fcntl
import itertools
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from flask import Flask, current_app

import wakeup
from models import ApiKey, db, is_sqlite

EXTENSION = "apiframe.keys"
KIND = "keys"  # wakeup's channel: apiframe_keys
MAX_AGE = 30.0  # seconds an entry is used before its key is read again
MAX_ENTRIES = 10_000  # beyond this many keys, the cache starts again empty
_COUNTER = struct.Struct("=Q")


class SharedCounter:
    """A counter in a file, mapped into the memory of every process that uses it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._map: mmap.mmap | None = None

    def _mapped(self) -> mmap.mmap:
        if self._map is None:
            with self._lock:
                if self._map is None:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                    try:
                        if os.fstat(fd).st_size < _COUNTER.size:
                            os.ftruncate(fd, _COUNTER.size)  # zeros; a no-op where another process did it
                        self._map = mmap.mmap(fd, _COUNTER.size)
                    finally:
                        os.close(fd)  # the mapping keeps the file
        return self._map

    def value(self) -> int:
        """The counter now."""
        return _COUNTER.unpack_from(self._mapped())[0]

    def add_one(self) -> None:
        """Add one, under a lock on the file that every process takes for it."""
        mapped = self._mapped()
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _COUNTER.pack_into(mapped, 0, _COUNTER.unpack_from(mapped)[0] + 1)
        finally:
            os.close(fd)  # which releases the lock

    def stop(self) -> None:
        """Nothing to stop: the mapping goes with the process."""


class NotifiedCounter:
    """A count of the notifications this process has heard on the keys channel (PostgreSQL)."""

    def __init__(self, database_url: str) -> None:
        self._ticks = itertools.count(1)
        self._count = 0
        self._listener = wakeup.Listener(database_url, KIND, self._heard)
        self._started = False
        self._lock = threading.Lock()

    def _heard(self) -> None:
        self._count = next(self._ticks)  # also called on every (re)connection: anything may be missed

    def value(self) -> int | None:
        """The count, or None while the listener is not connected (nothing may be kept then)."""
        if not self._started:
            with self._lock:
                if not self._started:
                    self._listener.start()  # by the first request; a CLI or worker process has none
                    self._started = True
            return None
        return self._count if self._listener.listening.is_set() else None

    def add_one(self) -> None:
        """Tell every process, this one first."""
        self._heard()
        db.execute_sql(f"NOTIFY {wakeup.channel(KIND)}")

    def stop(self) -> None:
        """Stop listening."""
        with self._lock:
            if self._started:
                self._listener.stop()
                self._started = False


class _Entry(NamedTuple):
    key: ApiKey
    generation: int
    expires: float


class KeyCache:
    """One process's live keys, by key hash, each with the generation it was read in."""

    def __init__(self, generation: SharedCounter | NotifiedCounter | None) -> None:
        self.generation = generation
        self._entries: dict[str, _Entry] = {}

    def find(self, key_hash: str, read: Callable[[str], ApiKey | None]) -> ApiKey | None:
        """The live key of ``key_hash`` with its account, kept or ``read``; a copy the caller may change."""
        generation = self.version()
        if generation is None:
            return read(key_hash)
        entry = self._entries.get(key_hash)
        if entry is not None and entry.generation == generation and entry.expires > time.monotonic():
            return _copy(entry.key)
        # The generation is the one from before the read: a change that commits while it runs makes
        # the entry stale at once.
        key = read(key_hash)
        if key is not None:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key_hash] = _Entry(_copy(key), generation, time.monotonic() + MAX_AGE)
        return key

    def version(self) -> int | None:
        """A number that changes whenever a key is revoked or a plan changes; None while unknown."""
        return self.generation.value() if self.generation is not None else None

    def used(self, key_hash: str, last_used_at: Any) -> None:
        """Record that the key's last_used_at was just written."""
        entry = self._entries.get(key_hash)
        if entry is not None:
            entry.key.__data__["last_used_at"] = last_used_at

    def changed(self) -> None:
        """A key was revoked or a plan changed (and it has committed): forget every kept key, everywhere."""
        self._entries.clear()
        if self.generation is not None:
            self.generation.add_one()

    def stop(self) -> None:
        """Stop hearing of changes (PostgreSQL's listener)."""
        if self.generation is not None:
            self.generation.stop()


def _copy(key: ApiKey) -> ApiKey:
    """A copy of a key row and its account that shares no state with them (their values are immutable)."""
    copied = ApiKey.__new__(ApiKey)
    copied.__data__, copied._dirty = dict(key.__data__), set()
    account = key.__rel__.get("account")
    if account is None:
        copied.__rel__ = {}
    else:
        joined = type(account).__new__(type(account))
        joined.__data__, joined._dirty, joined.__rel__ = dict(account.__data__), set(), {}
        copied.__rel__ = {"account": joined}
    return copied


def _generation(app: Flask) -> SharedCounter | NotifiedCounter | None:
    if is_sqlite():
        return SharedCounter(f"{db.obj.database}-keys")
    if wakeup.enabled(app):
        return NotifiedCounter(app.config["DATABASE_URL"])
    return None  # PostgreSQL without LISTEN/NOTIFY: no process would hear of a change


def init_app(app: Flask) -> KeyCache:
    """Keep ``app``'s live keys between requests."""
    cache = app.extensions[EXTENSION] = KeyCache(_generation(app))
    return cache


def cache() -> KeyCache:
    """The current app's key cache."""
    return current_app.extensions[EXTENSION]


def changed() -> None:
    """Call once a key's revocation, an account's plan change or the end of its console sessions has
    committed."""
    cache().changed()
