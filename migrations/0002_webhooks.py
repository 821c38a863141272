"""Webhooks: accounts' signing secrets, jobs' webhook state, deliveries and their attempts."""

import uuid

from peewee import CharField, DateTimeField, ForeignKeyField, IntegerField, Model, TextField, UUIDField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("account", "webhook_signing_secret", CharField(null=True)),
        migrator.add_column("job", "webhook_secret", TextField(null=True)),
        migrator.add_column("job", "webhook_status", CharField(null=True)),
        migrator.add_column("job", "webhook_attempts", IntegerField(default=0)),
    )

    class Job(Model):
        id = UUIDField(primary_key=True, default=uuid.uuid4)
        status = CharField()
        webhook_url = TextField(null=True)
        webhook_status = CharField(null=True)

        class Meta:
            database = db
            table_name = "job"

    # Jobs still running at the upgrade send their webhook when they end; jobs that had already
    # ended before webhooks existed keep no webhook status.
    Job.update(webhook_status="pending").where(
        Job.webhook_url.is_null(False) & Job.status.in_(("pending", "queued", "processing"))
    ).execute()

    class WebhookDelivery(Model):
        id = UUIDField(primary_key=True, default=uuid.uuid4)
        job = ForeignKeyField(Job, unique=True, on_delete="CASCADE")
        created_at = DateTimeField()
        next_attempt_at = DateTimeField(null=True, index=True)
        lease_owner = CharField(null=True, index=True)
        lease_token = CharField(null=True)
        lease_expires = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "webhook_delivery"

    db.create_tables([WebhookDelivery])

    class WebhookAttempt(Model):
        delivery = ForeignKeyField(WebhookDelivery, on_delete="CASCADE")
        number = IntegerField()
        at = DateTimeField()
        status_code = IntegerField(null=True)
        error = TextField(null=True)
        duration_ms = IntegerField()

        class Meta:
            database = db
            table_name = "webhook_attempt"
            indexes = ((("delivery", "number"), True),)

    db.create_tables([WebhookAttempt])


def down(migrator, db):
    migrator.migrate(
        migrator.drop_table("webhook_attempt"),
        migrator.drop_table("webhook_delivery"),
        migrator.drop_column("job", "webhook_attempts"),
        migrator.drop_column("job", "webhook_status"),
        migrator.drop_column("job", "webhook_secret"),
        migrator.drop_column("account", "webhook_signing_secret"),
    )
