"""Hardening: Idempotency-Key records, and a session generation that logout and password changes bump."""

from peewee import AutoField, CharField, DateTimeField, ForeignKeyField, IntegerField, Model, TextField


def up(migrator, db):
    migrator.migrate(migrator.add_column("account", "session_generation", IntegerField(default=0)))

    class Account(Model):
        id = AutoField()

        class Meta:
            database = db
            table_name = "account"

    class IdempotencyKey(Model):
        account = ForeignKeyField(Account, on_delete="CASCADE")
        key = CharField(max_length=255)
        fingerprint = CharField()
        status_code = IntegerField(null=True)
        body = TextField(null=True)
        created_at = DateTimeField(index=True)

        class Meta:
            database = db
            table_name = "idempotency_key"
            indexes = ((("account", "key"), True),)

    db.create_tables([IdempotencyKey])


def down(migrator, db):
    migrator.migrate(
        migrator.drop_table("idempotency_key"),
        migrator.drop_column("account", "session_generation"),
    )
