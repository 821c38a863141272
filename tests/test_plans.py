"""Plan switches: an upgrade tops the balance up once per plan in 30 days; switching cannot create credits."""

from __future__ import annotations

import datetime

import accounts
import credits
from config import PLANS
from models import Account, LedgerEntry
from test_console import PASSWORD, Console


def test_switching_back_and_forth_in_the_console_cannot_create_credits(app, client, make_account):
    account, _ = make_account("free", email="farmer@example.com", password=PASSWORD)
    console = Console(client)
    assert console.login("farmer@example.com").status_code == 302
    for plan in ["scale", "free", "scale", "hobby", "growth", "scale", "free", "scale"] * 2:
        assert console.post("/console/plans", {"plan": plan}, page="/console/plans").status_code == 302
    with app.app_context():
        row = Account.get_by_id(account.id)
        assert row.plan == "scale"
        assert row.balance == PLANS["scale"].credits == credits.ledger_total(account.id)
        notes = [
            (entry.amount, entry.note)
            for entry in LedgerEntry.select()
            .where(LedgerEntry.account == account.id)
            .order_by(LedgerEntry.id)
        ]
    assert notes[:4] == [
        (50, "Free plan credits"),
        (4950, "Scale plan credits"),
        (0, "Free plan: no credits for a downgrade"),
        (0, "Scale plan: credits already granted in the last 30 days"),
    ]
    assert len(notes) == 1 + 16 - 1  # every switch is a row (the one to the current plan is no switch)


def test_an_upgrade_tops_up_and_never_adds_past_the_grant(app, make_account):
    with app.app_context():
        account, _ = make_account("free")
        credits.grant(account.id, 300)  # balance 350, above hobby's 200
        _, granted = accounts.change_plan(Account.get_by_id(account.id), "hobby")
        assert granted == 0 and credits.balance(account.id) == 350
        _, granted = accounts.change_plan(Account.get_by_id(account.id), "standard")
        assert granted == 150 and credits.balance(account.id) == 500


def test_the_grant_comes_back_after_30_days(app, make_account):
    with app.app_context():
        account, _ = make_account("hobby")
        accounts.change_plan(Account.get_by_id(account.id), "free")
        credits.grant(account.id, -credits.balance(account.id))
        assert accounts.change_plan(Account.get_by_id(account.id), "hobby")[1] == 0
        accounts.change_plan(Account.get_by_id(account.id), "free")
        month_ago = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(days=31)
        LedgerEntry.update(created_at=month_ago).where(LedgerEntry.account == account.id).execute()
        assert accounts.change_plan(Account.get_by_id(account.id), "hobby")[1] == 200
        assert credits.balance(account.id) == 200 == credits.ledger_total(account.id)


def test_the_cli_follows_the_same_rule(app, runner, make_account):
    make_account("free", email="op@example.com")
    first = runner.invoke(args=["users", "plan", "op@example.com", "standard"])
    assert "+450 credits, balance 500" in first.output
    runner.invoke(args=["users", "plan", "op@example.com", "free"])
    again = runner.invoke(args=["users", "plan", "op@example.com", "standard"])
    assert "+0 credits, balance 500" in again.output
