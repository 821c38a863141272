"""Accounts, API keys, jobs and the credit ledger."""

import uuid

from peewee import (
    BigIntegerField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
    UUIDField,
)


def up(migrator, db):
    class Account(Model):
        email = CharField(unique=True)
        name = CharField(default="")
        password_hash = CharField(null=True)
        plan = CharField(default="free")
        balance = IntegerField(default=0)
        granted = IntegerField(default=0)
        created_at = DateTimeField()

        class Meta:
            database = db
            table_name = "account"

    db.create_tables([Account])

    class ApiKey(Model):
        account = ForeignKeyField(Account, on_delete="CASCADE")
        name = CharField(default="")
        prefix = CharField(index=True)
        key_hash = CharField(unique=True)
        created_at = DateTimeField()
        last_used_at = DateTimeField(null=True)
        revoked_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "api_key"

    db.create_tables([ApiKey])

    class Job(Model):
        id = UUIDField(primary_key=True, default=uuid.uuid4)
        account = ForeignKeyField(Account, on_delete="CASCADE")
        type = CharField()
        status = CharField(default="pending")
        prompt = TextField(null=True)
        params = TextField(default="{}")
        parent = ForeignKeyField("self", null=True, on_delete="SET NULL")
        index = IntegerField(null=True)
        cost = IntegerField()
        progress = IntegerField(default=0)
        seed = BigIntegerField(null=True)
        grid = CharField(null=True)
        tiles = TextField(null=True)
        descriptions = TextField(null=True)
        error = TextField(null=True)
        webhook_url = TextField(null=True)
        provider = CharField(null=True)
        provider_ref = CharField(null=True)
        created_at = DateTimeField()
        started_at = DateTimeField(null=True)
        completed_at = DateTimeField(null=True)
        lease_owner = CharField(null=True)
        lease_token = CharField(null=True)
        lease_expires = DateTimeField(null=True)
        runs = IntegerField(default=0)

        class Meta:
            database = db
            table_name = "job"
            indexes = ((("account", "created_at"), False), (("status", "lease_expires"), False))

    db.create_tables([Job])

    class LedgerEntry(Model):
        account = ForeignKeyField(Account, on_delete="CASCADE")
        amount = IntegerField()
        reason = CharField()
        job = ForeignKeyField(Job, null=True, on_delete="SET NULL")
        note = CharField(default="")
        balance_after = IntegerField()
        created_at = DateTimeField(index=True)

        class Meta:
            database = db
            table_name = "ledger_entry"

    db.create_tables([LedgerEntry])


def down(migrator, db):
    migrator.migrate(migrator.drop_table("ledger_entry"))
    migrator.migrate(migrator.drop_table("job"))
    migrator.migrate(migrator.drop_table("api_key"))
    migrator.migrate(migrator.drop_table("account"))
