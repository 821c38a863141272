"""Upgrading a database made by the previous release: its jobs keep working, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid

import pytest
from peewee import SqliteDatabase, fn
from playhouse.migrations import Runner

import accounts
import credits
import models
from app import create_app
from auth import hash_key
from conftest import Api, stop_background
from models import Account, Job, LedgerEntry, QueueCount

PREVIOUS_RELEASE = "0003_compat"  # the last migration the previous release shipped
# Jobs as the previous release stored them: their params spelled as the reference API spells them.
OLD_JOBS = {
    "imagine": {"aspectRatio": "16:9", "version": "6.1", "quality": 1, "style": None, "chaos": 0,
                "stylize": 100, "processMode": "turbo"},
    "describe": {"imageUrl": "http://x.test/fox.png"},
    "blend": {"imageUrls": ["http://x.test/a.png", "http://x.test/b.png"], "dimension": "portrait"},
    "upscale-alt": {"type": "creative"},
}  # fmt: skip
NEW_PARAMS = {
    "imagine": {"aspect_ratio": "16:9", "version": "6.1", "quality": 1, "style": None, "chaos": 0,
                "stylize": 100, "process_mode": "turbo"},
    "describe": {"image_url": "http://x.test/fox.png"},
    "blend": {"image_urls": ["http://x.test/a.png", "http://x.test/b.png"], "dimension": "portrait"},
    "upscale-alt": {"type": "creative"},
}  # fmt: skip


def _make_previous_release(database, placeholder: str, key_hash: str) -> dict[str, uuid.UUID]:
    """The previous release's schema, with an account, a key and one job of each kind in OLD_JOBS."""
    Runner(database, str(models.MIGRATIONS_DIR)).up(target=PREVIOUS_RELEASE)
    database.execute_sql(
        "INSERT INTO account (id, email, name, plan, balance, granted, created_at)"
        " VALUES (1, 'old@example.com', '', 'scale', 100, 100, '2026-01-01 00:00:00')"
    )
    database.execute_sql(
        "INSERT INTO api_key (account_id, name, prefix, key_hash, created_at)"
        f" VALUES (1, '', 'ak_live_old', {placeholder}, '2026-01-01 00:00:00')",
        (key_hash,),
    )
    ids = {}
    for job_type, params in OLD_JOBS.items():
        ids[job_type] = uuid.uuid4()
        job_id = ids[job_type].hex if isinstance(database, SqliteDatabase) else str(ids[job_type])
        database.execute_sql(
            "INSERT INTO job (id, account_id, type, status, params, cost, progress, created_at, runs,"
            f" webhook_attempts, origin) VALUES ({placeholder}, 1, {placeholder}, 'failed', {placeholder},"
            " 0, 0, '2026-01-01 00:00:00', 1, 0, 'original')",
            (job_id, job_type, json.dumps(params)),
        )
    return ids


@pytest.fixture(params=["sqlite", "postgresql"])
def old_database(request, tmp_path) -> tuple[str, object, str]:
    """A database URL, an open handle on it, and its query placeholder."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        return url, SqliteDatabase(str(tmp_path / "old.db")), "?"
    url = request.getfixturevalue("postgres_url")
    return url, models.open_database(url), "%s"


def test_upgrading_respells_job_params_and_the_jobs_still_serve(old_database, settings):
    url, database, placeholder = old_database
    key = "ak_live_" + "o" * 43
    ids = _make_previous_release(database, placeholder, hash_key(key))
    database.close()
    settings.update(DATABASE_URL=url, START_WORKERS=False)
    application = create_app(settings)
    try:
        with application.app_context(), models.db.connection_context():
            for job_type, job_id in ids.items():
                assert Job.get_by_id(job_id).params == NEW_PARAMS[job_type]
        api = Api(application.test_client(), key)
        task = api.post("/fetch", json={"task_id": str(ids["upscale-alt"])}).get_json()
        assert task["task_type"] == "upscale-creative"
        listed = api.get("/v1/jobs?type=describe").get_json()["jobs"]
        assert [job["id"] for job in listed] == [str(ids["describe"])]
    finally:
        stop_background(application)
        models.db.obj.close_all()


def test_the_respelling_migration_goes_down_again(tmp_path):
    path = tmp_path / "old.db"
    database = SqliteDatabase(str(path))
    ids = _make_previous_release(database, "?", "0" * 64)
    runner = Runner(database, str(models.MIGRATIONS_DIR))
    runner.up()
    runner.down(target="0004_params_snake_case")  # back through the respelling
    for job_type, job_id in ids.items():
        text = database.execute_sql("SELECT params FROM job WHERE id = ?", (job_id.hex,)).fetchone()[0]
        assert json.loads(text) == OLD_JOBS[job_type]


def test_upgrading_counts_the_jobs_already_waiting(old_database, settings):
    url, database, placeholder = old_database
    key = "ak_live_" + "w" * 43
    ids = _make_previous_release(database, placeholder, hash_key(key))
    for job_id, status in zip(ids.values(), ("pending", "queued", "pending"), strict=False):
        job_id = job_id.hex if isinstance(database, SqliteDatabase) else str(job_id)
        database.execute_sql(
            f"UPDATE job SET status = {placeholder} WHERE id = {placeholder}", (status, job_id)
        )
    database.close()
    settings.update(DATABASE_URL=url, START_WORKERS=False)
    application = create_app(settings)
    try:
        with application.app_context(), models.db.connection_context():
            assert QueueCount.select(fn.SUM(QueueCount.waiting)).scalar() == 3
        api = Api(application.test_client(), key)
        assert api.submit("/v1/imagine", {"prompt": "a fox"})["queuePosition"] == 4  # behind the three
    finally:
        stop_background(application)
        models.db.obj.close_all()


def test_upgrading_a_release_that_named_the_tokens_migration_0005_tokens(old_database, settings):
    url, database, _ = old_database
    runner = Runner(database, str(models.MIGRATIONS_DIR))
    runner.up(target="0006_hardening")  # that release's migrations, with tokens under its old name:
    database.execute_sql("ALTER TABLE job ADD COLUMN tokens TEXT")
    runner.History.create(name="0005_tokens")
    database.close()
    settings.update(DATABASE_URL=url, START_WORKERS=False)
    application = create_app(settings)  # failed: "duplicate column name: tokens"
    try:
        with application.app_context(), models.db.connection_context():
            history = [row.name for row in runner.History.select().order_by(runner.History.name)]
            assert "0005_tokens" not in history and history[-1] == max(runner.status()).name
            account, key = accounts.create("tokens@example.com")
            credits.grant(account.id, 100)
        api = Api(application.test_client(), key)
        job = api.submit("/v1/shorten", {"prompt": "a very detailed photograph of a red fox"})
        with application.app_context(), models.db.connection_context():
            tokens = [{"word": "fox", "weight": 1.0}]
            Job.update(tokens=tokens).where(Job.id == job["id"]).execute()
            assert Job.get_by_id(job["id"]).tokens == tokens  # the column is there, written and read
    finally:
        stop_background(application)
        models.db.obj.close_all()


def _indexes(database, table: str) -> set[tuple[tuple[str, ...], bool, str]]:
    """A table's indexes as what they hold: (columns, unique, the WHERE of a partial one), names aside."""
    return {
        (tuple(index.columns), index.unique, (index.sql or "").partition(" WHERE ")[2])
        for index in database.get_indexes(table)
    }


def test_the_models_declare_the_indexes_the_migrations_make(old_database):
    # (older migrations named some indexes after the model's class; what they index is the same)
    _, database, _ = old_database
    tables = [model._meta.table_name for model in models.MODELS]
    with database.bind_ctx(models.MODELS), database.atomic() as fresh:
        database.create_tables(models.MODELS)
        declared = {table: _indexes(database, table) for table in tables}
        fresh.rollback()
    Runner(database, str(models.MIGRATIONS_DIR)).up()
    assert {table: _indexes(database, table) for table in tables} == declared
    refund_rows = {index for index in declared["ledger_entry"] if index[:2] == (("job_id",), True)}
    assert len(refund_rows) == 1 and "refund" in refund_rows.pop()[2]  # one refund per job
    database.close()


def test_upgrading_keeps_one_refund_per_job_and_every_balance(old_database, settings):
    url, database, placeholder = old_database
    key = "ak_live_" + "r" * 43
    ids = _make_previous_release(database, placeholder, hash_key(key))
    Runner(database, str(models.MIGRATIONS_DIR)).up(target="0011_idempotency_jobs")
    twice, once = (
        job_id.hex if isinstance(database, SqliteDatabase) else str(job_id)
        for job_id in (ids["imagine"], ids["describe"])
    )
    # A job refunded three times (by the race the upgrade ends), and one refunded once.
    rows = [(100, "signup", None, "")]
    rows += [(-16, "debit", twice, "imagine job")] + [(16, "refund", twice, "imagine job failed")] * 3
    rows += [(-4, "debit", once, "describe job"), (4, "refund", once, "describe job failed")]
    balance = 0
    for amount, reason, job_id, note in rows:
        balance += amount
        database.execute_sql(
            "INSERT INTO ledger_entry (account_id, amount, reason, job_id, note, balance_after, created_at)"
            f" VALUES (1, {placeholder}, {placeholder}, {placeholder}, {placeholder}, {placeholder},"
            " '2026-01-02 00:00:00')",
            (amount, reason, job_id, note, balance),
        )
    database.execute_sql(f"UPDATE account SET balance = {balance}, spent = 20, refunded = 52")
    database.close()
    settings.update(DATABASE_URL=url, START_WORKERS=False)
    application = create_app(settings)
    try:
        with application.app_context(), models.db.connection_context():
            refunds = LedgerEntry.select().where(LedgerEntry.reason == credits.REFUND)
            refunds = list(refunds.order_by(LedgerEntry.id))
            twice_id, once_id = ids["imagine"], ids["describe"]
            assert [(row.job_id, row.note) for row in refunds] == [
                (twice_id, "imagine job failed"),
                (None, f"imagine job failed (duplicate refund of job {twice_id})"),
                (None, f"imagine job failed (duplicate refund of job {twice_id})"),
                (once_id, "describe job failed"),
            ]
            account = Account.get_by_id(1)
            assert account.balance == balance == 132 == credits.ledger_total(1)  # no balance changes
            assert account.refunded == sum(row.amount for row in refunds)
            assert credits.refund(Job.get_by_id(twice_id), "imagine job failed") is False
            assert Account.get_by_id(1).balance == 132
    finally:
        stop_background(application)
        models.db.obj.close_all()


def test_every_migration_goes_down_and_up_again(old_database):
    """An operator can roll the schema back to any release and forward again; the first migration's
    down() leaves no table behind."""
    _, database, _ = old_database
    runner = Runner(database, str(models.MIGRATIONS_DIR))
    runner.up()
    runner.down(target="0001_initial")
    assert set(database.get_tables()) <= {"schema_migration"}
    runner.up()
    assert {model._meta.table_name for model in [*models.MODELS, QueueCount]} <= set(database.get_tables())


def test_the_queue_count_goes_down_from_its_first_version_too(postgres_url):
    """The first version of 0010_queue_count named the trigger's function queue_count()."""
    database = models.open_database(postgres_url)
    runner = Runner(database, str(models.MIGRATIONS_DIR))
    runner.up(target="0010_queue_count")
    database.execute_sql("ALTER FUNCTION queue_count_change() RENAME TO queue_count")
    runner.down(target="0010_queue_count")
    assert "queue_count" not in database.get_tables()
    database.close_all()
