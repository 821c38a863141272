"""Models and the database handle: compiled queries, migrations, and timestamps."""

from __future__ import annotations

import threading
import uuid

import pytest

from conftest import stop_background
from models import Account, ApiKey, CompiledQuery, Job, SerialSqliteDatabase, Slot, WriterLock, db, utcnow


def test_a_compiled_select_matches_the_orm(app, make_account):
    account, _ = make_account(email="c@example.com")
    query = CompiledQuery(
        lambda: ApiKey.select(ApiKey, Account).join(Account).where(Account.email == Slot("email"))
    )
    with app.app_context():
        row = query.first(email="c@example.com")
        orm = ApiKey.select(ApiKey, Account).join(Account).where(Account.email == "c@example.com").get()
        assert (row.id, row.account.email, row.created_at) == (orm.id, orm.account.email, orm.created_at)
        assert query.first(email="nobody@example.com") is None


def test_slots_convert_like_their_field(app, make_account):
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
