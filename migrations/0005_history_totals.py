"""Totals kept as they change, so no page sums an account's history; an index for pages at any depth."""

import json

from peewee import IntegerField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("account", "spent", IntegerField(default=0)),
        migrator.add_column("account", "refunded", IntegerField(default=0)),
        migrator.add_column("account", "images", IntegerField(default=0)),
    )
    # The totals so far, from the ledger and the jobs (once; from now on they are kept as they change).
    p = db.param
    for column, reason, sign in (("spent", "debit", -1), ("refunded", "refund", 1)):
        totals = f"SELECT account_id, SUM(amount) FROM ledger_entry WHERE reason = {p} GROUP BY account_id"
        rows = db.execute_sql(totals, (reason,)).fetchall()
        for account_id, total in rows:
            db.execute_sql(f"UPDATE account SET {column} = {p} WHERE id = {p}", (sign * total, account_id))
    images: dict[int, int] = {}
    made = "SELECT account_id, tiles FROM job WHERE status = 'succeeded' AND tiles IS NOT NULL"
    for account_id, tiles in db.execute_sql(made).fetchall():
        images[account_id] = images.get(account_id, 0) + len(json.loads(tiles) or ())
    for account_id, count in images.items():
        db.execute_sql(f"UPDATE account SET images = {p} WHERE id = {p}", (count, account_id))
    migrator.migrate(
        migrator.add_index("job", ("account_id", "created_at", "id"), False),
        migrator.drop_index("job", "job_account_id_created_at"),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.add_index("job", ("account_id", "created_at"), False),
        migrator.drop_index("job", "job_account_id_created_at_id"),
        migrator.drop_column("account", "spent"),
        migrator.drop_column("account", "refunded"),
        migrator.drop_column("account", "images"),
    )
