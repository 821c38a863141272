"""Models and the database handle: compiled queries, migrations, and timestamps."""

from __future__ import annotations

import gc
import os
import signal
import socket
import sqlite3
import threading
import time
import uuid
from contextlib import closing

import psycopg2
import pytest
from peewee import OperationalError

import wakeup
from conftest import stop_background, wait_until
from models import (
    CHECKPOINT_INTERVAL,
    SQLITE_PRAGMAS,
    Account,
    ApiKey,
    CompiledQuery,
    Job,
    SerialSqliteDatabase,
    Slot,
    WriterLock,
    db,
    open_database,
    utcnow,
)


def test_a_compiled_select_matches_the_orm(database, app, make_account):
    account, _ = make_account(email="c@example.com")
    query = CompiledQuery(
        lambda: ApiKey.select(ApiKey, Account).join(Account).where(Account.email == Slot("email"))
    )
    with app.app_context():
        row = query.first(email="c@example.com")
        orm = ApiKey.select(ApiKey, Account).join(Account).where(Account.email == "c@example.com").get()
        assert (row.id, row.account.email, row.created_at) == (orm.id, orm.account.email, orm.created_at)
        assert query.first(email="nobody@example.com") is None


def test_slots_convert_like_their_field(database, app, make_account):
    account, _ = make_account()
    job_id = uuid.uuid4()
    insert = CompiledQuery(
        lambda: Job.insert(
            {
                Job.id: Slot("id", Job.id),
                Job.account: Slot("account", Job.account),
                Job.type: Slot("type", Job.type),
                Job.params: Slot("params", Job.params),
                Job.cost: Slot("cost", Job.cost),
                Job.created_at: Slot("at", Job.created_at),
            }
        )
    )
    find = CompiledQuery(lambda: Job.select().where(Job.id == Slot("id")))
    with app.app_context():
        insert.execute(
            id=job_id, account=account.id, type="imagine", params={"chaos": 5}, cost=16, at=utcnow()
        )
        job = find.first(id=job_id)
        assert job.id == job_id and job.params == {"chaos": 5} and job.type == "imagine"


def test_a_compiled_select_reads_every_kind_of_value_as_the_orm_does(database, app, make_account):
    # On SQLite the second and later reads come packed in one JSON array: each value must survive it.
    account, _ = make_account(email="ünïcode+\u2603@example.com", name='quote " and \\ backslash')
    job_id = uuid.uuid4()
    keyed = ApiKey.select(ApiKey, Account).join(Account)
    keys = CompiledQuery(lambda: keyed.where(Account.id == Slot("id")))
    find = CompiledQuery(lambda: Job.select().where(Job.id == Slot("id")))
    with app.app_context(), db.connection_context():
        Job.create(
            id=job_id, account=account.id, type="imagine", status="succeeded", prompt='🦊 in\nsnow "q"',
            params={"chaos": 5, "ratio": 1.25, "nested": {"list": [1, None, "x"]}}, cost=16, seed=2**62,
            tiles=["a.png", "b.png"], tokens=[["fox", 0.875]], created_at=utcnow(), completed_at=None,
        )  # fmt: skip
        for _ in range(2):  # the first read sets the row reader up from the query as written
            key, orm_key = keys.first(id=account.id), keyed.where(Account.id == account.id).get()
            assert key.__data__ == orm_key.__data__ and key.account.__data__ == orm_key.account.__data__
            assert key.__rel__.keys() == orm_key.__rel__.keys() and not key._dirty and not key.account._dirty
            job = find.first(id=job_id)
            assert job.__data__ == Job.get_by_id(job_id).__data__ and job.seed == 2**62 and not job._dirty
        assert find.first(id=uuid.uuid4()) is None
        if database == "sqlite":
            assert find._prepare().packed is not None and keys._prepare().packed is not None
        assert find._rows[2] is not None and keys._rows[2] is not None  # made without peewee's reader
        key.account.name = "changed"  # the models work as the ORM's: saved, only what changed
        assert key.account._dirty == {"name"} and key.account.save() == 1


def test_sqlite_commits_leave_checkpoints_to_a_thread_of_their_own(app, make_account):
    # A commit copies the write-ahead log into the database file only past the backstop; the thread
    # does it within CHECKPOINT_INTERVAL. The database file alone (immutable=1 ignores the log)
    # then holds a row committed just now.
    assert SQLITE_PRAGMAS["wal_autocheckpoint"] >= 10_000
    path = db.obj.database
    account, _ = make_account(email="checkpointed@example.com")
    deadline = time.monotonic() + 10 * CHECKPOINT_INTERVAL
    found = []
    while not found and time.monotonic() < deadline:
        time.sleep(CHECKPOINT_INTERVAL / 5)
        with closing(sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)) as file_only:
            try:
                found = file_only.execute("SELECT id FROM account WHERE id = ?", [account.id]).fetchall()
            except sqlite3.OperationalError:  # not even the tables are in the file yet
                pass
    assert found == [(account.id,)]
    checkpoints = [thread for thread in threading.enumerate() if thread.name == "sqlite-checkpoints"]
    assert checkpoints, "no checkpoint thread"


def test_compiled_sql_follows_the_open_database(settings, tmp_path):
    from app import create_app

    query = CompiledQuery(lambda: Account.select().where(Account.email == Slot("email")))
    first = create_app(settings)
    stop_background(first)
    with first.app_context():
        Account.create(email="one@example.com")
        assert query.first(email="one@example.com").email == "one@example.com"
        compiled_for = db.obj
    settings["DATA_DIR"] = str(tmp_path / "other")
    second = create_app(settings)
    stop_background(second)
    with second.app_context():
        assert db.obj is not compiled_for
        assert query.first(email="one@example.com") is None


def test_every_compiled_query_of_the_service_prepares_on_postgresql(on_postgres, app):
    compiled = [query for query in gc.get_objects() if isinstance(query, CompiledQuery)]
    assert len(compiled) >= 8  # the service's own (auth, credits, jobs), imported by the app
    with app.app_context(), db.connection_context():
        for query in compiled:  # PREPARE parses and plans, so each parameter's type must be clear
            db.obj.execute_sql(query._prepare().prepared.prepare)
        db.obj.execute_sql("DEALLOCATE ALL")


def test_a_compiled_query_is_prepared_once_per_postgresql_connection(on_postgres, app, make_account):
    account, _ = make_account(email="p@example.com")
    query = CompiledQuery(lambda: Account.select().where(Account.email == Slot("email")))
    ran: list[str] = []
    execute_sql = db.obj.execute_sql
    test_thread = threading.get_ident()

    def recorded(sql, params=None):
        if threading.get_ident() == test_thread:  # not the app's dispatcher, which runs queries meanwhile
            ran.append(sql.split(" ", 1)[0])
        return execute_sql(sql, params)

    db.obj.execute_sql = recorded
    try:
        with app.app_context():
            with db.connection_context():
                for _ in range(2):
                    assert query.first(email="p@example.com").id == account.id
                pid = db.obj.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
            assert ran == ["PREPARE", "EXECUTE", "EXECUTE", "SELECT"]
            admin = psycopg2.connect(on_postgres)
            admin.autocommit = True  # each look at pg_stat_activity sees it as it is now
            with admin.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])

                def ended() -> bool:
                    cursor.execute("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = %s", [pid])
                    return cursor.fetchone()[0]

                # Ended, not only asked to: a backend still running could be handed out and end mid-query.
                wait_until(ended, what="the terminated backend to end")
            admin.close()
            deadline = time.monotonic() + 5
            while True:  # the pool hands the ended connection out no more, once the server has said so
                with db.connection_context():
                    if db.obj.execute_sql("SELECT pg_backend_pid()").fetchone()[0] != pid:
                        break
                assert time.monotonic() < deadline
                time.sleep(0.01)
            ran.clear()
            with db.connection_context():  # a new session: prepared again
                assert query.first(email="p@example.com").id == account.id
            assert ran == ["PREPARE", "EXECUTE"]
    finally:
        del db.obj.execute_sql


def test_a_pooled_postgresql_connection_is_handed_out_without_a_round_trip_until_the_server_ends_it(
    postgres_url,
):
    database = open_database(postgres_url)
    watcher = psycopg2.connect(postgres_url)
    watcher.autocommit = True

    def last_statement(pid: int) -> str | None:
        with watcher.cursor() as cursor:
            cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
            row = cursor.fetchone()
        return row and row[0]

    try:
        with database.connection_context():
            pid = database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        with database.connection_context():  # the pooled connection, handed out again
            assert last_statement(pid) == "SELECT pg_backend_pid()"  # and not asked SELECT 1 on the way
            assert database.execute_sql("SELECT pg_backend_pid()").fetchone()[0] == pid
        with watcher.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 5
        while last_statement(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        with database.connection_context():  # the ended connection is left, and a new one made
            assert database.execute_sql("SELECT pg_backend_pid()").fetchone()[0] != pid
    finally:
        database.close_all()
        watcher.close()


def _keepalive_options(fd: int) -> tuple[int, int, int, int]:
    """A connection's TCP keepalive options: on, idle seconds, interval seconds, count."""
    with socket.socket(fileno=os.dup(fd)) as connection:
        return (
            connection.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        )


@pytest.mark.parametrize(("query", "limit"), [("", 5), ("?connect_timeout=2", 2)])
def test_a_postgresql_server_that_never_answers_fails_the_connection_in_seconds(query, limit):
    """A server that accepts the connection and says nothing (or a host that drops every packet) fails
    it after connect_timeout, not after TCP's retries; the URL's own setting wins."""
    with closing(socket.create_server(("127.0.0.1", 0))) as silent:  # the kernel accepts; nobody answers
        database = open_database(f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/x{query}")
        started = time.monotonic()
        with pytest.raises(OperationalError, match="timeout"):
            database.connect()
        took = time.monotonic() - started
    assert limit - 0.5 < took < limit + 3


@pytest.mark.parametrize(("query", "idle"), [("", 30), ("?keepalives_idle=7", 7)])
def test_pooled_postgresql_connections_probe_an_idle_network_with_tcp_keepalives(postgres_url, query, idle):
    database = open_database(postgres_url + query)  # the URL's own setting wins
    try:
        with database.connection_context():
            assert _keepalive_options(database.connection().fileno()) == (1, idle, 10, 3)
    finally:
        database.close_all()


@pytest.mark.parametrize(("query", "idle"), [("", 30), ("?keepalives_idle=7", 7)])
def test_the_listening_connection_probes_an_idle_network_with_tcp_keepalives(
    postgres_url, monkeypatch, query, idle
):
    opened = []
    connect = psycopg2.connect

    def connecting(*args, **kwargs):
        opened.append(connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(psycopg2, "connect", connecting)
    listener = wakeup.Listener(postgres_url + query, "job", lambda: None)
    listener.start()
    try:
        assert listener.listening.wait(10)
        assert _keepalive_options(opened[0].fileno()) == (1, idle, 10, 3)  # the URL's setting wins here too
    finally:
        listener.stop()


def test_sqlite_writers_take_turns_and_a_failed_transaction_lets_the_next_one_in(app, make_account):
    account, _ = make_account()
    assert isinstance(db.obj, SerialSqliteDatabase)
    failures = []

    def write(n: int) -> None:
        try:
            with app.app_context(), db.connection_context():
                for _ in range(20):
                    with db.atomic():
                        Account.update(balance=Account.balance + 1).where(Account.id == account.id).execute()
                    Account.update(spent=Account.spent + 1).where(Account.id == account.id).execute()
        except Exception as exc:  # a failure in a thread must fail the test
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with app.app_context(), db.connection_context():
        with pytest.raises(RuntimeError):
            with db.atomic():
                Account.update(balance=0).where(Account.id == account.id).execute()
                raise RuntimeError("rolled back")
        assert not db.obj.writer.held()
        row = Account.get_by_id(account.id)
        assert (row.balance - account.balance, row.spent - account.spent) == (120, 120)


def test_a_write_returning_rows_has_committed_when_the_next_writer_gets_the_lock(app, make_account):
    """Outside a transaction, a write with RETURNING commits once its rows are read: they are read before
    the writer lock lets the next writer in, who would otherwise find SQLite locked and sleep in its busy
    handler (a create's INSERT ... RETURNING took that sleep under concurrent creates)."""
    account, _ = make_account()
    with app.app_context(), db.connection_context():
        cursor = db.execute_sql(
            "UPDATE account SET spent = spent + 1 WHERE id = ? RETURNING spent", (account.id,)
        )
        with closing(sqlite3.connect(db.obj.database, timeout=0, isolation_level=None)) as other:
            other.execute("UPDATE account SET spent = spent + 10 WHERE id = ?", (account.id,))  # no wait
        assert cursor.rowcount == 1
        assert cursor.fetchone() == (account.spent + 1,) and cursor.fetchone() is None
        assert Account.get_by_id(account.id).spent == account.spent + 11


def test_the_writer_lock_queues_other_threads(tmp_path):
    lock = WriterLock(str(tmp_path / "writer.lock"))
    lock.acquire()
    lock.acquire()  # the holder does not wait on itself
    waited = threading.Event()

    def other() -> None:
        lock.acquire()
        waited.set()
        lock.release()

    thread = threading.Thread(target=other)
    thread.start()
    assert not waited.wait(0.2)
    lock.release()
    assert waited.wait(5)
    thread.join()


def first_writers(lock: WriterLock, writers: int) -> list[BaseException]:
    """``writers`` threads that all make their first write at once under ``lock``; what went wrong."""
    start, inside, failures = threading.Barrier(writers), [], []

    def write() -> None:
        try:
            start.wait()
            lock.acquire()
            inside.append(1)
            assert len(inside) == 1, "two writers at once"
            time.sleep(0.001)
            inside.pop()
            lock.release()
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return failures + [TimeoutError("a writer never got the lock")] * sum(t.is_alive() for t in threads)


def test_the_first_writers_of_a_process_share_one_lock(tmp_path):
    for trial in range(20):  # each a new lock, whose first use comes from several threads at once
        assert first_writers(WriterLock(str(tmp_path / f"writer-{trial}.lock")), 6) == []


def test_a_forked_child_queues_behind_its_parent_with_a_lock_of_its_own(tmp_path):
    lock = WriterLock(str(tmp_path / "writer.lock"))
    lock.acquire()  # held by this thread as the child is forked: the child's copy of the lock is held too
    pid = os.fork()
    if pid == 0:  # the child: it waits for the parent's file lock, then writes
        code = 1
        try:
            lock.acquire()
            lock.release()
            code = 0
        finally:
            os._exit(code)
    time.sleep(0.3)
    assert os.waitpid(pid, os.WNOHANG) == (0, 0)  # still waiting for the parent's file lock
    lock.release()
    deadline = time.monotonic() + 10
    while (ended := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    if ended == (0, 0):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the child never got the lock")
    assert os.waitstatus_to_exitcode(ended[1]) == 0
