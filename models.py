"""Database handle and models: accounts, API keys, jobs, the credit ledger and webhook deliveries."""

from __future__ import annotations

import datetime
import fcntl
import itertools
import json
import logging
import os
import re
import select
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

import psycopg2
from peewee import (
    Alias,
    AutoField,
    BigIntegerField,
    BlobField,
    CharField,
    CursorWrapper,
    DatabaseProxy,
    DateTimeField,
    DecimalField,
    Field,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    ModelCursorWrapper,
    ModelIndex,
    ModelObjectCursorWrapper,
    Node,
    PeeweeException,
    Query,
    Select,
    SqliteDatabase,
    TextField,
    UUIDField,
    fn,
)
from playhouse.db_url import connect as connect_url
from playhouse.db_url import register_database
from playhouse.migrations import Runner
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase, PooledSqliteDatabase
from psycopg2.extensions import TRANSACTION_STATUS_IDLE

db = DatabaseProxy()
log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "foreign_keys": 1,
    "cache_size": -16000,  # 16 MB
    "busy_timeout": 15000,
    # A commit that finds the log over this many pages copies it into the database itself; the
    # checkpoint thread (SerialSqliteDatabase.start_checkpoints) normally does it long before.
    "wal_autocheckpoint": 16384,  # 64 MB
}
CHECKPOINT_INTERVAL = 0.5  # seconds between background checkpoints


def utcnow() -> datetime.datetime:
    """The current time in UTC, as a naive datetime (how every timestamp is stored)."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


class WriterLock:
    """One writer at a time, among this process's threads and the processes that share a file lock.

    A thread lock queues this process's writers; ``flock`` on a file beside the database queues
    processes (each process opens the file itself: a descriptor inherited across fork would share
    the parent's lock). Re-entrant per thread, so a write inside a transaction does not wait on itself.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._restart()
        _writer_locks.add(self)

    def _restart(self) -> None:
        """A lock of this process's own, its file not yet open; at creation, and in a child after a fork
        (which copied the parent's lock as it was, held or not, and its descriptor)."""
        self._lock = threading.Lock()
        self._file: Any = None  # opened by the first writer, inside the lock
        self._local = threading.local()

    def held(self) -> bool:
        """Whether the calling thread holds the lock."""
        return getattr(self._local, "held", False)

    def acquire(self) -> None:
        """Wait for the lock (at once if this thread holds it)."""
        if self.held():
            return
        self._lock.acquire()
        try:
            if self._file is None:
                self._file = open(self.path, "a")
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        except BaseException:
            self._lock.release()
            raise
        self._local.held = True

    def release(self) -> None:
        """Let the next writer in (nothing if this thread does not hold the lock)."""
        if not self.held():
            return
        self._local.held = False
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        finally:
            self._lock.release()


_writer_locks: weakref.WeakSet[WriterLock] = weakref.WeakSet()


def _restart_writer_locks() -> None:
    for lock in list(_writer_locks):
        lock._restart()


# In a forked child, before any thread of its own runs: every WriterLock starts again, so its first
# writers cannot race to set one up (two threads doing so each took a lock of their own).
os.register_at_fork(after_in_child=_restart_writer_locks)

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")


class SerialSqliteDatabase(PooledSqliteDatabase):
    """A pooled SQLite database whose writers queue in a WriterLock before they ask SQLite.

    SQLite runs one writer at a time and makes the others wait in its busy handler, which sleeps in
    growing steps of up to 100 ms: under a few concurrent writers, that sleeping is the tail of
    every write's latency. Writers that queue in a lock first find SQLite's lock free, and each one
    starts the moment the one before it commits. Every transaction (they all begin IMMEDIATE, as
    writers) and every write outside one takes the lock.
    """

    def __init__(self, database: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        self.writer = WriterLock(f"{database}-writer.lock")

    def begin(self, lock_type: str | None = None) -> None:
        self.writer.acquire()
        try:
            super().begin(lock_type)
        except BaseException:
            self.writer.release()
            raise

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.writer.release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.writer.release()

    def start_checkpoints(self) -> None:
        """Copy the write-ahead log into the database from a thread of this process's own.

        SQLite's default makes the commit that takes the log over 1,000 pages do it, with two
        fsyncs, while it holds the writer lock: in a run of creates, 1% of commits took 4-7 ms and
        were 46% of all the time spent committing, and every other writer waited behind them.
        """
        checkpoints = threading.Thread(
            target=_checkpoints, args=(weakref.ref(self),), name="sqlite-checkpoints", daemon=True
        )
        checkpoints.start()

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        if self.writer.held() or not sql.lstrip()[:6].upper().startswith(_WRITES):
            return super().execute_sql(sql, params)
        self.writer.acquire()
        try:
            cursor = super().execute_sql(sql, params)
            # A write outside a transaction commits when its statement is done: with a RETURNING clause,
            # once its last row is read. Read them in the lock, or the next writer finds SQLite locked.
            return _ReadCursor(cursor) if cursor.description else cursor
        finally:
            self.writer.release()


class _ReadCursor:
    """A write's cursor whose rows were read as it ran: what peewee and callers use of a cursor."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._rows = iter(cursor.fetchall())
        self.description = cursor.description
        self.rowcount = cursor.rowcount  # counted once the statement is done
        self.lastrowid = cursor.lastrowid
        cursor.close()

    def fetchone(self) -> Any:
        return next(self._rows, None)

    def fetchall(self) -> list[Any]:
        return list(self._rows)

    def __iter__(self) -> Any:
        return self._rows

    def close(self) -> None:
        pass


def _checkpoints(database: weakref.ref[SerialSqliteDatabase]) -> None:
    """Checkpoint (PASSIVE: never waiting for readers or writers) for as long as the database is in use."""
    connection, failing = None, False
    while (alive := database()) is not None and alive is db.obj:
        try:
            if connection is None:
                connection = sqlite3.connect(alive.database, check_same_thread=False)
            # read to the end, so the statement keeps no snapshot that would hold the log back
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            failing = False
        except sqlite3.Error:
            if not failing:  # once per run of failures; a commit checkpoints past the backstop meanwhile
                log.exception("a background checkpoint failed; trying again every %s s", CHECKPOINT_INTERVAL)
            failing = True
        del alive
        time.sleep(CHECKPOINT_INTERVAL)
    if connection is not None:
        connection.close()


class CheckedPooledPostgresqlDatabase(PooledPostgresqlDatabase):
    """A pooled PostgreSQL database that checks an idle connection it hands out without a round trip.

    peewee's pool sends SELECT 1 whenever it hands out a connection: on the path of every request, a
    round trip as long as a create's whole statement. A server that ends a connection (a restart,
    pg_terminate_backend, an idle timeout) tells the client so, which leaves the socket readable; an
    idle connection nobody ended has nothing to read. So only a connection with something to read, or
    not idle, is asked, as peewee asks it. A connection cut with no word (a NAT or firewall that
    forgot it, a network gone) is found by TCP keepalives (PG_CONNECTION) once it has idled about a
    minute, which leaves its socket readable too; within that minute it fails at its first statement,
    as it would at a SELECT 1.
    """

    def _is_closed(self, conn: Any) -> bool:
        if conn.closed or conn.get_transaction_status() != TRANSACTION_STATUS_IDLE or _has_input(conn):
            return super()._is_closed(conn)
        return False

    def init(self, *args: Any, **kwargs: Any) -> None:
        super().init(*args, **kwargs)
        self._prepared: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()

    def execute_prepared(self, statement: _Prepared, params: list[Any]) -> Any:
        """Run ``statement``, PREPAREd on this thread's connection the first time that connection runs it.

        PostgreSQL then parses and plans it once per connection, not at every request: a create's one
        statement cost PostgreSQL 35-40% less CPU. A connection is a session of its own (a new one after
        an outage prepares again), so a pooler in front of PostgreSQL must keep sessions whole (PgBouncer's
        pool_mode = session, its default).
        """
        connection = self.connection()
        prepared = self._prepared.setdefault(connection, set())
        if statement.name not in prepared:
            self.execute_sql(statement.prepare)
            prepared.add(statement.name)
        return self.execute_sql(statement.execute, params)


def _has_input(conn: Any) -> bool:
    """Whether the server sent something on a connection (poll: any descriptor number, no waiting)."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


register_database(CheckedPooledPostgresqlDatabase, "apiframe+pool")

# libpq's settings for every PostgreSQL connection. A server that does not answer (a host gone, a
# firewall that drops packets, a server that accepts and says nothing) fails a connection after 5 s,
# not the two minutes of TCP's own retries. TCP keepalives probe an idle connection after 30 s, and
# find it dead after 3 more unanswered probes 10 s apart.
PG_CONNECTION = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def connection_settings(url: str) -> dict[str, int]:
    """PG_CONNECTION to connect to ``url`` with, but those its query sets itself, which win."""
    given = {name for name, _ in parse_qsl(urlsplit(url).query)}
    return {name: value for name, value in PG_CONNECTION.items() if name not in given}


def open_database(url: str) -> Any:
    """Open the database at ``url``: ``sqlite:///path`` or ``postgresql://...``."""
    if url.startswith("sqlite:///"):
        return SerialSqliteDatabase(
            url[len("sqlite:///") :],
            pragmas=SQLITE_PRAGMAS,
            lock_type="IMMEDIATE",  # writers queue up front instead of failing on upgrade
            timeout=15,
            check_same_thread=False,
            max_connections=64,
            stale_timeout=600,
        )
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgres", "postgresql") and sep:
        return connect_url(
            f"apiframe+pool://{rest}",
            max_connections=32,
            stale_timeout=600,
            timeout=15,
            **connection_settings(url),
        )
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")


# SQLite's primary result codes that say the database cannot be used for now, not that a statement is wrong.
SQLITE_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_NOMEM,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL,
}


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be used for now (down, restarting, its connection cut, no
    connection free, locked, its disk full or read-only) rather than that a statement is at fault."""
    if isinstance(exc, MaxConnectionsExceeded):
        return True
    if not isinstance(exc, PeeweeException):
        return False
    cause = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc.__context__
    if isinstance(cause, PeeweeException):  # wrapped twice: a connect that failed inside begin, say
        return unavailable(cause)
    if isinstance(cause, psycopg2.OperationalError | psycopg2.InterfaceError):
        return True  # connection failures, shutdowns, cancels, lack of resources, deadlocks
    # SQLite's own errors carry its (extended) result code; those the sqlite3 module raises itself do not
    code = getattr(cause, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in SQLITE_UNAVAILABLE


def log_failure(logger: logging.Logger, exc: BaseException, what: str, *args: Any, then: str = "") -> None:
    """Log that ``what`` (a %-format of ``args``) failed, and ``then`` what happens next: in one warning
    line when the database cannot be used for now (an outage, not a fault), else with the traceback."""
    if unavailable(exc):
        logger.warning(f"{what}: database unavailable (%s){then}", *args, str(exc).strip())
    else:
        logger.error(f"{what} failed{then}", *args, exc_info=exc)


def is_sqlite() -> bool:
    """Whether the open database is SQLite."""
    return isinstance(db.obj, PooledSqliteDatabase)


class JSONField(TextField):
    """A JSON value kept as text, so it works the same on SQLite and PostgreSQL."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(Model):
    class Meta:
        database = db
        legacy_table_names = False


class Account(BaseModel):
    """A customer: owns API keys, jobs and a credit balance."""

    id = AutoField()
    email = CharField(unique=True)
    name = CharField(default="")
    password_hash = CharField(null=True)
    plan = CharField(default="free")
    balance = IntegerField(default=0)
    granted = IntegerField(default=0)
    # Running totals, kept with the ledger and the jobs so no page sums an account's whole history.
    spent = IntegerField(default=0)  # credits debited for jobs
    refunded = IntegerField(default=0)  # credits given back for jobs that did not succeed
    images = IntegerField(default=0)  # images of succeeded jobs: 4 per grid, 1 per single image
    webhook_signing_secret = CharField(null=True)  # whsec_...; made when first needed
    session_generation = IntegerField(default=0)  # console sessions of older generations are void
    created_at = DateTimeField(default=utcnow)


class ApiKey(BaseModel):
    """An API key; only its SHA-256 is stored, with a short prefix to recognise it by."""

    id = AutoField()
    account = ForeignKeyField(Account, backref="api_keys", on_delete="CASCADE")
    name = CharField(default="")
    prefix = CharField(index=True)
    key_hash = CharField(unique=True)
    created_at = DateTimeField(default=utcnow)
    last_used_at = DateTimeField(null=True)
    revoked_at = DateTimeField(null=True)


class Job(BaseModel):
    """One request for pixels or text, from acceptance to its terminal status."""

    id = UUIDField(primary_key=True, default=uuid.uuid4)
    # No index of its own: the (account, created_at, id) one below serves it (each insert writes each index).
    account = ForeignKeyField(Account, backref="jobs", on_delete="CASCADE", index=False)
    type = CharField()
    status = CharField(default="pending")
    prompt = TextField(null=True)
    params = JSONField(default=dict)
    parent = ForeignKeyField("self", null=True, backref="children", on_delete="SET NULL")
    index = IntegerField(null=True)
    cost = IntegerField()
    progress = IntegerField(default=0)
    seed = BigIntegerField(null=True)
    grid = CharField(null=True)
    tiles = JSONField(null=True)
    descriptions = JSONField(null=True)
    tokens = JSONField(null=True)  # shorten: [[word, importance 0-1], ...]
    error = TextField(null=True)
    webhook_url = TextField(null=True)
    webhook_secret = TextField(null=True)  # echoed to the receiver as X-Webhook-Secret
    webhook_status = CharField(null=True)  # null without webhook_url, else pending, delivered or failed
    webhook_attempts = IntegerField(default=0)
    provider = CharField(null=True)
    provider_ref = CharField(null=True)
    origin = CharField(default="reference")  # the API family that created it: reference or original
    created_at = DateTimeField(default=utcnow)
    started_at = DateTimeField(null=True)
    completed_at = DateTimeField(null=True)
    lease_owner = CharField(null=True)
    lease_token = CharField(null=True)
    lease_expires = DateTimeField(null=True)
    runs = IntegerField(default=0)
    images_deleted_at = DateTimeField(null=True)  # when retention.prune removed its stored images

    class Meta:
        indexes = (
            (("account", "created_at", "id"), False),  # an account's jobs, newest first, at any depth
            (("status", "lease_expires"), False),
            (("status", "created_at"), False),  # queue positions
        )


# The ended jobs whose images are still stored, by when they ended: what retention.prune scans, oldest first.
IMAGES_KEPT = Job.images_deleted_at.is_null()
Job.add_index(ModelIndex(Job, (Job.completed_at,), name="job_completed_at_images_kept", where=IMAGES_KEPT))


class QueueCount(BaseModel):
    """The number of waiting jobs, in rows that add up to it, kept by the database's triggers on job.

    Nothing writes it but those triggers (migrations/0010_queue_count.py) and jobs.fold_queue_counts.
    """

    owner = IntegerField(primary_key=True)  # 0, or on PostgreSQL the server process that made the change
    waiting = IntegerField()


class LedgerEntry(BaseModel):
    """One change to an account's credits; the balance is always the sum of these."""

    id = AutoField()
    account = ForeignKeyField(Account, backref="ledger", on_delete="CASCADE")
    amount = IntegerField()
    reason = CharField()
    job = ForeignKeyField(Job, null=True, backref="ledger_entries", on_delete="SET NULL")
    note = CharField(default="")
    balance_after = IntegerField()
    created_at = DateTimeField(default=utcnow, index=True)


# The refund rows: one per job at most, which the database holds (credits.refund counts on it).
REFUND_ROWS = LedgerEntry.reason == "refund"  # credits.REFUND
LedgerEntry.add_index(
    LedgerEntry.index(LedgerEntry.job, unique=True, name="ledger_entry_one_refund_per_job").where(REFUND_ROWS)
)


class WebhookDelivery(BaseModel):
    """The webhook of a finished job: when its next attempt is due, and which process holds it.

    Written in the transaction that ends the job; its outcome so far is on the job
    (``webhook_status``, ``webhook_attempts``). The id is the Standard Webhooks ``webhook-id``.
    """

    id = UUIDField(primary_key=True, default=uuid.uuid4)
    job = ForeignKeyField(Job, unique=True, backref="webhook_deliveries", on_delete="CASCADE")
    created_at = DateTimeField(default=utcnow)
    next_attempt_at = DateTimeField(null=True, index=True)  # null once delivered or failed
    lease_owner = CharField(null=True, index=True)  # renewed and released by owner
    lease_token = CharField(null=True)
    lease_expires = DateTimeField(null=True)


class WebhookAttempt(BaseModel):
    """One try at sending a webhook: when, the HTTP status or the error, and how long it took."""

    id = AutoField()
    delivery = ForeignKeyField(WebhookDelivery, backref="attempts", on_delete="CASCADE")
    number = IntegerField()
    at = DateTimeField()
    status_code = IntegerField(null=True)
    error = TextField(null=True)
    duration_ms = IntegerField()

    class Meta:
        indexes = ((("delivery", "number"), True),)


class IdempotencyKey(BaseModel):
    """A create request's Idempotency-Key: the request it was first used with, and the answer it got."""

    id = AutoField()
    account = ForeignKeyField(Account, backref="idempotency_keys", on_delete="CASCADE")
    key = CharField(max_length=255)
    fingerprint = CharField()  # SHA-256 of the method, path and body of the first request
    status_code = IntegerField(null=True)  # null while the first request is in flight
    body = TextField(null=True)
    # The ids of the jobs made under the key, in order, each recorded in its job's transaction: a retry
    # that takes over the key of a request that died unanswered gets these jobs back, not new ones.
    jobs = JSONField(null=True)
    created_at = DateTimeField(default=utcnow, index=True)

    class Meta:
        indexes = ((("account", "key"), True),)


MODELS = [Account, ApiKey, Job, LedgerEntry, WebhookDelivery, WebhookAttempt, IdempotencyKey]


class _Bound(NamedTuple):
    name: str
    convert: Callable[[Any], Any] | None


class Slot(Node):
    """A named parameter of a CompiledQuery, converted like ``field`` (or like its comparison)."""

    def __init__(self, name: str, field: Field | None = None) -> None:
        super().__init__()
        self.name = name
        self.field = field

    def __sql__(self, ctx: Any) -> Any:
        convert = self.field.db_value if self.field is not None else ctx.state.converter
        return ctx.value(_Bound(self.name, convert), converter=False)


class CompiledQuery:
    """A peewee query whose SQL is generated once per database, then run again with new values.

    Generating SQL costs far more than running it (about 30 times more for a keyed SELECT on
    SQLite), so the few queries every API request runs are compiled. They are still written with
    peewee, once; only the text generation is skipped.

    On SQLite, ``first`` reads the row packed into one JSON array: Python 3.11's sqlite3 module lets
    go of the GIL for every column it reads, and under concurrent requests each time is a hand-over
    to another thread. A job poll (a key row of 21 columns, a job row of 32) let go of it 82 times,
    31 with packed rows. SQLite's values (integers, text, null; these tables have no reals or blobs,
    which JSON would change) come back from the array as the driver gives them.

    On PostgreSQL, the statement is also prepared on each connection that runs it (``execute_prepared``),
    so that PostgreSQL plans it once per connection too. Make each one once, at a module's top level.
    """

    def __init__(self, build: Callable[[], Query]) -> None:
        self.build = build
        self.name = f"apiframe_{next(_statement_numbers)}"  # its prepared statement's, on PostgreSQL
        self._lock = threading.Lock()
        self._compiled: _Compiled | None = None
        self._rows: tuple[Any, dict[str, Any], _Models | None] | None = None  # database, reader set-up, plan

    def _prepare(self) -> _Compiled:
        compiled = self._compiled
        if compiled is None or compiled.database is not db.obj:
            with self._lock:
                query = self.build()
                database = db.obj
                sql, params = database.get_sql_context().sql(query).query()
                packed = None
                if isinstance(database, SqliteDatabase) and isinstance(query, Select) and _packable(query):
                    row = query.clone()
                    row._returning = [fn.json_array(*(_unaliased(column) for column in query._returning))]
                    packed = database.get_sql_context().sql(row).query()
                prepared = None
                if isinstance(database, CheckedPooledPostgresqlDatabase):
                    prepared = _Prepared.of(self.name, sql, len(params))
                compiled = self._compiled = _Compiled(database, query, sql, params, packed, prepared)
        return compiled

    def execute(self, **values: Any) -> Any:
        """Run with ``values`` for the slots; returns the cursor."""
        compiled = self._prepare()
        params = _bind_all(compiled.params, values)
        if compiled.prepared is not None:
            return compiled.database.execute_prepared(compiled.prepared, params)
        return compiled.database.execute_sql(compiled.sql, params)

    def first(self, **values: Any) -> Any:
        """Run a SELECT with ``values``; returns its first row as the query would (a model), or None."""
        row = self.row(**values)
        return None if row is None else self.model(row)

    def row(self, **values: Any) -> Any:
        """Run a SELECT with ``values``; its first row as fetched, or None. ``model(row)`` makes it a model.

        The row is the database's answer as it is, so equal rows mean equal models: a tuple, or on
        SQLite the packed row's JSON text.
        """
        compiled = self._prepare()
        database = compiled.database
        # peewee's reader maps the cursor's columns to fields and models anew for every cursor (as
        # long as the rest of a keyed lookup); the SQL is fixed, so the mapping is made once, from
        # the first cursor of the query as written.
        rows = self._rows
        if rows is None or rows[0] is not database:
            reader = compiled.query._get_cursor_wrapper(self.execute(**values))
            row = reader.cursor.fetchone()
            if row is None:
                return None
            reader.initialize()
            setup = {k: v for k, v in vars(reader).items() if k not in _PER_CURSOR}
            self._rows = (database, setup, _Models.plan(reader))
            if compiled.packed is None:
                return row
            # and read again, packed (once per process): every read of a row gives the same text
        if compiled.packed is None:
            return self.execute(**values).fetchone()
        sql, params = compiled.packed
        row = database.execute_sql(sql, _bind_all(params, values)).fetchone()
        return None if row is None else row[0]

    def model(self, row: Any) -> Any:
        """A row from ``row()`` as the query would make it (a model)."""
        if isinstance(row, str):  # packed
            row = json.loads(row)
        rows = self._rows
        assert rows is not None, "model() of a row that row() did not read"
        if rows[2] is not None:
            return rows[2].make(row)
        reader = self._compiled.query._get_cursor_wrapper(None)
        vars(reader).update(rows[1])
        return reader.process_row(row)


class _Models:
    """A compiled query's row made into its models directly, by peewee's reader's plan worked out once.

    peewee's readers build a dict of the row, then set each value through its field's descriptor
    (48 calls per job poll, 15% of its time); a compiled query's columns are fixed, so each model's
    values are put in place in one pass. Only for models joined inner along their foreign keys (as
    the compiled queries are); anything else is left to the reader.
    """

    def __init__(self, root: Any, models: list[tuple[Any, Any, list, list]], joins: list[tuple]) -> None:
        self.root = root
        self.models = models  # (key, model class, [(index, field name, converter)], [... other columns])
        self.joins = joins  # (key, foreign key's name, key of the model it points to)

    @classmethod
    def plan(cls, reader: Any) -> _Models | None:
        """The plan of an initialized peewee row reader, or None if it is not one of the kinds above."""
        if isinstance(reader, ModelObjectCursorWrapper) and reader.is_model:
            model = reader.constructor
            specs = [(i, reader.unique_columns[i], reader.converters[i], model) for i in range(reader.ncols)]
            return cls._split(model, {model: model}, specs, [])
        if type(reader) is ModelCursorWrapper:
            constructors = reader.key_to_constructor
            if not all(is_model for _, is_model in constructors.values()):
                return None
            joins = reader.src_to_dest
            if any(is_dict or is_outer or not is_fk for _, _, _, is_dict, is_outer, is_fk in joins):
                return None
            owner = {key: key if key in constructors else reader.model for _, key, _, _ in reader._row_spec}
            specs = [(i, column, converter, owner[key]) for i, key, column, converter in reader._row_spec]
            models = {key: constructor for key, (constructor, _) in constructors.items()}
            edges = [(src, attr, dest) for src, attr, dest, *_ in joins]
            return cls._split(reader.model, models, specs, edges)
        return None

    @classmethod
    def _split(cls, root: Any, models: dict[Any, Any], specs: list[tuple], joins: list[tuple]) -> _Models:
        parts = []
        for key, model in models.items():
            mine = [(i, name, convert) for i, name, convert, owner in specs if owner is key]
            fields = model._meta.fields
            values = [
                (i, name, *_unless_same(convert))
                for i, name, convert in mine
                if getattr(fields.get(name), "name", None) == name
            ]
            others = [spec for spec in mine if getattr(fields.get(spec[1]), "name", None) != spec[1]]
            parts.append((key, model, values, others))
        return cls(root, parts, joins)

    def make(self, row: Any) -> Any:
        """The root model of ``row``, with its joined models, as peewee's reader would make them."""
        made = {}
        for key, model, values, others in self.models:
            instance = model.__new__(model)
            instance.__data__ = {
                name: value if to is None or value is None or type(value) is same else to(value)
                for i, name, to, same in values
                for value in (row[i],)
            }
            instance._dirty, instance.__rel__ = set(), {}
            for i, name, to in others:
                setattr(instance, name, row[i] if to is None else to(row[i]))
            made[key] = instance
        for src, attr, dest in self.joins:
            joined = made[dest]
            if any(value is not None for value in joined.__data__.values()):  # no row joined: no model
                setattr(made[src], attr, joined)
        for instance in made.values():
            instance._dirty.clear()
        return made[self.root]


def _unless_same(convert: Any) -> tuple[Any, type | None]:
    """``convert`` (a field's python_value) and the type of value it gives back as it is, if any.

    Most columns come from the driver as the field would make them (an int for an IntegerField, a str
    for a CharField or TextField); their converter (two calls deep) gives the same value back. make()
    of a job row took 10.3 us with those calls, 8.7 without. A converter that changes nothing at all
    is dropped (None).
    """
    field = getattr(convert, "__self__", None)
    if not isinstance(field, Field) or type(field).python_value is not Field.python_value:
        return convert, None
    adapt = type(field).adapt
    if adapt is Field.adapt:
        return None, None
    if adapt is IntegerField.adapt:
        return convert, int
    if adapt is CharField.adapt:  # _StringField's, which TextField has too
        return convert, str
    return convert, None


class _Compiled(NamedTuple):
    database: Any
    query: Query
    sql: str
    params: list[Any]
    packed: tuple[str, list[Any]] | None  # on SQLite, the SELECT with its columns in one JSON array
    prepared: _Prepared | None  # on PostgreSQL, the statement as a prepared one


_statement_numbers = itertools.count(1)
_PLACEHOLDER = re.compile("%[%s]")  # psycopg2's parameter, or its escaped percent sign


class _Prepared(NamedTuple):
    """A statement to PREPARE once per connection, then EXECUTE with its parameters."""

    name: str
    prepare: str
    execute: str

    @classmethod
    def of(cls, name: str, sql: str, count: int) -> _Prepared:
        """``sql``, with psycopg2's ``count`` parameters, as the prepared statement ``name``.

        Its parameters' types are inferred from where they stand, so none may stand where PostgreSQL
        cannot tell (``%s - %s``, say): a Cast tells it.
        """
        numbers = itertools.count(1)
        numbered = _PLACEHOLDER.sub(lambda m: "%%" if m[0] == "%%" else f"${next(numbers)}", sql)
        arguments = f" ({', '.join(['%s'] * count)})" if count else ""
        return cls(name, f"PREPARE {name} AS {numbered}", f"EXECUTE {name}{arguments}")


def _packable(query: Select) -> bool:
    """Whether every column of ``query`` comes back from a JSON array as the driver gives it."""
    return not any(isinstance(column, (FloatField, DecimalField, BlobField)) for column in query._returning)


def _unaliased(column: Any) -> Any:
    return column.unalias() if isinstance(column, Alias) else column


def _bind_all(template: list[Any], values: dict[str, Any]) -> list[Any]:
    return [_bind(param, values) for param in template]


_PER_CURSOR = frozenset(vars(CursorWrapper(None)))  # a row reader's own state, not its column mapping


def _bind(param: Any, values: dict[str, Any]) -> Any:
    if not isinstance(param, _Bound):
        return param
    value = values[param.name]
    return param.convert(value) if param.convert is not None else value


def init_database(url: str, lock_dir: str) -> None:
    """Open the database at ``url`` and bring its schema up to date."""
    if db.obj is not None:
        db.obj.close_all()
    db.initialize(open_database(url))
    # Processes starting together migrate one at a time: a file lock on this machine, and an
    # advisory lock on PostgreSQL for processes on other machines.
    with open(Path(lock_dir) / ".migrate.lock", "w") as lock_file, db.connection_context():
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if not is_sqlite():
            db.execute_sql("SELECT pg_advisory_lock(4100)")
        try:
            Runner(db.obj, str(MIGRATIONS_DIR)).up()
        finally:
            if not is_sqlite():
                db.execute_sql("SELECT pg_advisory_unlock(4100)")
    if is_sqlite():  # once a connection has put the database in WAL mode (no other may be open then)
        db.obj.start_checkpoints()
