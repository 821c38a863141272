"""A job is refunded once at most: a unique index on the job of the ledger's refund rows.

Before it, two processes could both refund one job (an OpenAI Images request and the Idempotency-Key
retry that took it over). Such a second refund stays in the ledger, so the balance and ``account.refunded``
still equal the ledger's sums, but no longer names the job: its note says whose refund it repeats.
"""

import uuid

from peewee import SqliteDatabase, Table, fn

INDEX = "ledger_entry_one_refund_per_job"
NOTE_LENGTH = 255  # the note column's


def up(migrator, db):
    if not isinstance(db, SqliteDatabase):  # no refund written from here to the commit
        db.execute_sql("LOCK TABLE ledger_entry IN SHARE ROW EXCLUSIVE MODE")
    ledger = Table("ledger_entry", ("id", "job_id", "reason", "note")).bind(db)
    first = ledger.alias("first")
    earliest = first.select(fn.MIN(first.id)).where(
        (first.reason == "refund") & (first.job_id == ledger.job_id)
    )
    repeats = ledger.select(ledger.id, ledger.job_id, ledger.note).where(
        (ledger.reason == "refund") & (ledger.id > earliest)
    )
    for entry_id, job_id, note in list(repeats.tuples()):
        mark = f" (duplicate refund of job {uuid.UUID(str(job_id))})"
        note = note[: NOTE_LENGTH - len(mark)] + mark
        ledger.update(job_id=None, note=note).where(ledger.id == entry_id).execute()
    migrator.migrate(
        migrator.add_index("ledger_entry", ("job_id",), True, where=ledger.reason == "refund", name=INDEX)
    )


def down(migrator, db):
    migrator.migrate(migrator.drop_index("ledger_entry", INDEX))
