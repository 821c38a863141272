"""The jobs made under an Idempotency-Key, recorded on its row, so a retry after a crash gets them back."""

from peewee import TextField


def up(migrator, db):
    migrator.migrate(migrator.add_column("idempotency_key", "jobs", TextField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("idempotency_key", "jobs"))
