"""The number of waiting jobs, kept by the database on every change to a job, so that a new job's place
in the queue is read, not counted (a count costs a step per waiting job: on PostgreSQL, a quarter of an
accepted job's time behind a few thousand waiting ones).

``queue_count`` holds the number in rows whose sum is the count of waiting jobs. SQLite has one writer
at a time, so one row (owner 0) does. On PostgreSQL, each server process (backend) adds its changes to a
row of its own, so concurrent transactions never wait for one another, and never deadlock, on the count;
jobs.fold_queue_counts moves the rows of backends that have gone into row 0.

A later migration that rebuilds the job table on SQLite (peewee does for some column changes) drops
these triggers with it and must create them again; tests/test_jobs.py fails until it does.
"""

from peewee import SqliteDatabase

WAITING = "('pending', 'queued')"
SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER queue_count_insert AFTER INSERT ON job WHEN NEW.status IN {WAITING}
    BEGIN UPDATE queue_count SET waiting = waiting + 1 WHERE owner = 0; END""",
    f"""CREATE TRIGGER queue_count_update AFTER UPDATE OF status ON job
    WHEN (OLD.status IN {WAITING}) <> (NEW.status IN {WAITING})
    BEGIN UPDATE queue_count SET waiting = waiting + (CASE WHEN NEW.status IN {WAITING} THEN 1 ELSE -1 END)
    WHERE owner = 0; END""",
    f"""CREATE TRIGGER queue_count_delete AFTER DELETE ON job WHEN OLD.status IN {WAITING}
    BEGIN UPDATE queue_count SET waiting = waiting - 1 WHERE owner = 0; END""",
)
POSTGRES_TRIGGERS = (
    f"""CREATE FUNCTION queue_count_change() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE change integer := 0;
    BEGIN
        IF TG_OP <> 'DELETE' AND NEW.status IN {WAITING} THEN change := change + 1; END IF;
        IF TG_OP <> 'INSERT' AND OLD.status IN {WAITING} THEN change := change - 1; END IF;
        IF change <> 0 THEN
            INSERT INTO queue_count (owner, waiting) VALUES (pg_backend_pid(), change)
            ON CONFLICT (owner) DO UPDATE SET waiting = queue_count.waiting + EXCLUDED.waiting;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER queue_count AFTER INSERT OR DELETE OR UPDATE OF status ON job
    FOR EACH ROW EXECUTE FUNCTION queue_count_change()""",
    """CREATE FUNCTION queue_count_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM queue_count WHERE owner <> 0;
        UPDATE queue_count SET waiting = 0;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER queue_count_truncated AFTER TRUNCATE ON job
    FOR EACH STATEMENT EXECUTE FUNCTION queue_count_truncated()""",
)


def up(migrator, db):
    sqlite = isinstance(db, SqliteDatabase)
    if not sqlite:  # no job changes from here to the commit, whatever the isolation level
        db.execute_sql("LOCK TABLE job IN SHARE ROW EXCLUSIVE MODE")
    db.execute_sql("CREATE TABLE queue_count (owner INTEGER NOT NULL PRIMARY KEY, waiting INTEGER NOT NULL)")
    for trigger in SQLITE_TRIGGERS if sqlite else POSTGRES_TRIGGERS:
        db.execute_sql(trigger)
    # In the migration's transaction, after the triggers: no change is counted twice or missed.
    waiting = f"SELECT 0, COUNT(*) FROM job WHERE status IN {WAITING}"
    db.execute_sql(f"INSERT INTO queue_count (owner, waiting) {waiting}")


def down(migrator, db):
    if isinstance(db, SqliteDatabase):
        for name in ("insert", "update", "delete"):
            db.execute_sql(f"DROP TRIGGER queue_count_{name}")
    else:
        db.execute_sql("DROP TRIGGER queue_count ON job")
        db.execute_sql("DROP TRIGGER queue_count_truncated ON job")
        # the first version of this migration named the trigger's function queue_count()
        db.execute_sql("DROP FUNCTION IF EXISTS queue_count_change()")
        db.execute_sql("DROP FUNCTION IF EXISTS queue_count()")
        db.execute_sql("DROP FUNCTION queue_count_truncated()")
    db.execute_sql("DROP TABLE queue_count")
