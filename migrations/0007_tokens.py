"""Shorten's per-word importance, kept on the job beside its shorter prompts (JSON text, as JSONField).

Three releases shipped this migration as ``0005_tokens``; their databases have the column already, and
their history says so under that name, which this migration takes over.
"""

from peewee import Table, TextField

OLD_NAME = "0005_tokens"


def up(migrator, db):
    if "tokens" in {column.name for column in db.get_columns("job")}:
        history = Table("schema_migration", ("name",)).bind(db)
        history.delete().where(history.name == OLD_NAME).execute()
        return
    migrator.migrate(migrator.add_column("job", "tokens", TextField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("job", "tokens"))
