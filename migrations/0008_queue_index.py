"""An index for a waiting job's place in the queue: the count of waiting jobs created before it."""


def up(migrator, db):
    migrator.migrate(migrator.add_index("job", ("status", "created_at"), False))


def down(migrator, db):
    migrator.migrate(migrator.drop_index("job", "job_status_created_at"))
