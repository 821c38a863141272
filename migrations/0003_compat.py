"""Compatibility with the original apiframe.ai API: which API family created each job."""

from peewee import CharField


def up(migrator, db):
    # "reference" (the /v1 API and its aliases) or "original" (the apiframe.ai routes); it decides the
    # shape of the job's webhook. Jobs from before it existed came through the reference API.
    migrator.migrate(migrator.add_column("job", "origin", CharField(default="reference")))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("job", "origin"))
