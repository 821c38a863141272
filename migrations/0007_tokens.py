"""Shorten's per-word importance, kept on the job beside its shorter prompts (JSON text, as JSONField)."""

from peewee import TextField


def up(migrator, db):
    migrator.migrate(migrator.add_column("job", "tokens", TextField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("job", "tokens"))
