"""A job pays for itself: the INSERT of a job that costs credits takes them from its account's balance and
writes the debit's ledger row, or fails with "insufficient credits" (an integrity error) and inserts nothing.

Accepting a job is then one statement on both databases, its own transaction when nothing else is stored
with it: before, SQLite ran five (BEGIN, the job's INSERT, the debit's UPDATE, its ledger row, COMMIT),
each a round of the driver's and peewee's work on the path of every create. No job can be inserted unpaid.

Nodes of an older release debit in their own code: once this runs, they would take a job's cost twice, so
they are stopped before a node of this release starts (README).

A later migration that rebuilds the job table on SQLite drops this trigger with it and must create it again;
tests/test_credits.py fails until it does.
"""

from peewee import SqliteDatabase

INSUFFICIENT = "insufficient credits"  # credits.INSUFFICIENT
SQLITE_TRIGGER = f"""CREATE TRIGGER job_debit AFTER INSERT ON job WHEN NEW.cost > 0
BEGIN
    SELECT RAISE(ABORT, '{INSUFFICIENT}') WHERE NOT EXISTS (
        SELECT 1 FROM account WHERE id = NEW.account_id AND balance >= NEW.cost
    );
    UPDATE account SET balance = balance - NEW.cost, spent = spent + NEW.cost WHERE id = NEW.account_id;
    INSERT INTO ledger_entry (account_id, amount, reason, job_id, note, balance_after, created_at)
    SELECT id, -NEW.cost, 'debit', NEW.id, NEW.type || ' job', balance, NEW.created_at
    FROM account WHERE id = NEW.account_id;
END"""
POSTGRES_TRIGGER = (
    f"""CREATE FUNCTION job_debit() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE left_over integer;
    BEGIN
        UPDATE account SET balance = balance - NEW.cost, spent = spent + NEW.cost
        WHERE id = NEW.account_id AND balance >= NEW.cost RETURNING balance INTO left_over;
        IF NOT FOUND THEN
            RAISE EXCEPTION '{INSUFFICIENT}' USING ERRCODE = 'check_violation';
        END IF;
        INSERT INTO ledger_entry (account_id, amount, reason, job_id, note, balance_after, created_at)
        VALUES (NEW.account_id, -NEW.cost, 'debit', NEW.id, NEW.type || ' job', left_over, NEW.created_at);
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER job_debit AFTER INSERT ON job FOR EACH ROW WHEN (NEW.cost > 0)
    EXECUTE FUNCTION job_debit()""",
)


def up(migrator, db):
    for statement in (SQLITE_TRIGGER,) if isinstance(db, SqliteDatabase) else POSTGRES_TRIGGER:
        db.execute_sql(statement)


def down(migrator, db):
    if isinstance(db, SqliteDatabase):
        db.execute_sql("DROP TRIGGER job_debit")
    else:
        db.execute_sql("DROP TRIGGER job_debit ON job")
        db.execute_sql("DROP FUNCTION job_debit()")
