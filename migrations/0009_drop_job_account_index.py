"""One index fewer to write with every job: (account_id, created_at, id) already serves account_id alone."""


def up(migrator, db):
    migrator.migrate(migrator.drop_index("job", "job_account_id"))


def down(migrator, db):
    migrator.migrate(migrator.add_index("job", ("account_id",), False))
