"""The admin CLI: accounts, credits, plans, keys, init-db."""

from __future__ import annotations

import subprocess

import pytest

import credits
from config import PLANS
from models import Account, ApiKey, LedgerEntry
from servers import BIN, ROOT, environment, free_port


def _last_line(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def test_users_create_prints_the_key_alone_on_the_last_line(runner, client):
    key = _last_line(runner.invoke(args=["users", "create", "jane@example.com", "--name", "Jane Doe"]))
    assert key.startswith("ak_live_") and " " not in key
    body = client.get("/v1/account", headers={"X-API-Key": key}).get_json()
    assert body == {
        "success": True,
        "account": {
            "name": "Jane Doe",
            "email": "jane@example.com",
            "plan": "free",
            "credits": {"remaining": 50, "total": 50},
        },
    }


def test_users_create_with_plan_grants_that_plans_credits(runner, client):
    key = _last_line(runner.invoke(args=["users", "create", "s@example.com", "--plan", "standard"]))
    account = client.get("/v1/account", headers={"X-API-Key": key}).get_json()["account"]
    assert account["plan"] == "standard"
    assert account["credits"] == {"remaining": PLANS["standard"].credits, "total": PLANS["standard"].credits}


def test_users_create_refuses_duplicates_and_bad_emails(runner):
    _last_line(runner.invoke(args=["users", "create", "dup@example.com"]))
    again = runner.invoke(args=["users", "create", "DUP@example.com"])
    assert again.exit_code != 0 and "already exists" in again.output
    for bad_email in ("not-an-email", "jane doe@example.com", "jane@@example.com"):  # as the signup form
        bad = runner.invoke(args=["users", "create", bad_email])
        assert bad.exit_code != 0 and "not a valid email address" in bad.output


def test_users_credits_grants_and_removes_through_the_ledger(app, runner):
    _last_line(runner.invoke(args=["users", "create", "c@example.com"]))
    _last_line(runner.invoke(args=["users", "credits", "c@example.com", "100"]))
    _last_line(runner.invoke(args=["users", "credits", "c@example.com", "-30"]))
    too_many = runner.invoke(args=["users", "credits", "c@example.com", "-1000"])
    assert too_many.exit_code != 0
    with app.app_context():
        account = Account.get(Account.email == "c@example.com")
        assert account.balance == 120 and account.granted == 120
        assert credits.ledger_total(account.id) == account.balance
        assert [
            e.amount
            for e in LedgerEntry.select().where(LedgerEntry.account == account.id).order_by(LedgerEntry.id)
        ] == [50, 100, -30]


def test_users_credits_refuses_what_the_balance_cannot_hold_on_every_database(database, app, runner):
    _last_line(runner.invoke(args=["users", "create", "big@example.com"]))
    huge = runner.invoke(args=["users", "credits", "big@example.com", "99999999999"])
    assert huge.exit_code == 1 and huge.exception.__class__ is SystemExit
    assert "Error: cannot grant 99999999999 credits: an account holds at most 2147483647" in huge.output
    _last_line(runner.invoke(args=["users", "credits", "big@example.com", str(credits.MAX_CREDITS - 100)]))
    over = runner.invoke(args=["users", "credits", "big@example.com", "100"])
    assert over.exit_code == 1 and "Traceback" not in over.output
    assert "cannot grant 100 credits: the account would hold more than 2147483647" in over.output
    _last_line(runner.invoke(args=["users", "credits", "big@example.com", "50"]))
    with app.app_context():
        account = Account.get(Account.email == "big@example.com")
        assert account.balance == credits.MAX_CREDITS == credits.ledger_total(account.id)


def test_users_create_refuses_a_name_longer_than_the_consoles_on_every_database(database, app, runner):
    long = runner.invoke(args=["users", "create", "n@example.com", "--name", "x" * 300])
    assert long.exit_code == 1 and long.exception.__class__ is SystemExit
    assert "Error: the name must be at most 80 characters" in long.output
    _last_line(runner.invoke(args=["users", "create", "n@example.com", "--name", "x" * 80]))
    with app.app_context():
        assert Account.get(Account.email == "n@example.com").name == "x" * 80


def test_keys_create_refuses_a_name_longer_than_the_consoles_on_every_database(database, app, runner):
    _last_line(runner.invoke(args=["users", "create", "kn@example.com"]))
    long = runner.invoke(args=["keys", "create", "kn@example.com", "--name", "k" * 300])
    assert long.exit_code == 1 and long.exception.__class__ is SystemExit
    assert "Error: the key name must be at most 64 characters" in long.output
    assert _last_line(runner.invoke(args=["keys", "create", "kn@example.com", "--name", "k" * 64]))


def test_users_plan(app, runner):
    _last_line(runner.invoke(args=["users", "create", "p@example.com"]))
    _last_line(runner.invoke(args=["users", "plan", "p@example.com", "growth"]))
    with app.app_context():
        account = Account.get(Account.email == "p@example.com")
        assert account.plan == "growth" and account.balance == PLANS["growth"].credits
    bad = runner.invoke(args=["users", "plan", "p@example.com", "platinum"])
    assert bad.exit_code != 0


def test_unknown_account_is_an_error(runner):
    result = runner.invoke(args=["users", "credits", "ghost@example.com", "5"])
    assert result.exit_code != 0 and "no account" in result.output


def test_keys_revoke_needs_a_clear_prefix(runner):
    _last_line(runner.invoke(args=["users", "create", "k@example.com"]))
    assert runner.invoke(args=["keys", "revoke", "ak_live"]).exit_code != 0
    assert runner.invoke(args=["keys", "revoke", "ak_live_zzzzzzzz"]).exit_code != 0


def test_keys_revoke_of_a_whole_key_revokes_that_key_only(app, runner):
    key = _last_line(runner.invoke(args=["users", "create", "w@example.com"]))
    mistyped = key[:-1] + ("A" if key[-1] != "A" else "B")  # its prefix is the real key's
    wrong = runner.invoke(args=["keys", "revoke", mistyped])
    assert wrong.exit_code == 1 and f"no live key is the key given (starting {key[:16]}…)" in wrong.output
    assert mistyped not in wrong.output
    with app.app_context():
        assert ApiKey.get(ApiKey.prefix == key[:16]).revoked_at is None
    assert runner.invoke(args=["keys", "revoke", key]).output == f"revoked {key[:16]}…\n"
    again = _last_line(runner.invoke(args=["keys", "create", "w@example.com"]))
    assert runner.invoke(args=["keys", "revoke", again[:16]]).output == f"revoked {again[:16]}…\n"


def test_keys_revoke_takes_the_prefix_as_shown_and_minds_its_case(app, runner):
    key = _last_line(runner.invoke(args=["users", "create", "shown@example.com"]))
    swapped = key[:16].swapcase()
    assert runner.invoke(args=["keys", "revoke", swapped]).exit_code == 1  # not this key's prefix
    with app.app_context():
        assert ApiKey.get(ApiKey.prefix == key[:16]).revoked_at is None
    shown = f"{key[:16]}…"  # as `keys create` prints it
    assert runner.invoke(args=["keys", "revoke", shown]).output == f"revoked {shown}\n"


def test_init_db(runner):
    assert "up to date" in runner.invoke(args=["init-db"]).output


def test_users_create_for_a_taken_email_fails_loudly_in_a_shell(tmp_path):
    env = environment(tmp_path / "data", free_port())
    script = 'KEY=$(.venv/bin/flask --app app users create jane@example.com | tail -n 1); echo "KEY=$KEY"'
    first = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert first.returncode == 0 and first.stdout.startswith("KEY=ak_live_")
    again = subprocess.run(
        [str(BIN / "flask"), "--app", "app", "users", "create", "Jane@example.com"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert again.returncode != 0 and again.stdout == ""
    assert "an account with email jane@example.com already exists" in again.stderr
    assert "keys create jane@example.com" in again.stderr


@pytest.mark.parametrize("command", [["users", "create", "jane@example.com"], ["worker"]])
def test_a_bad_setting_stops_a_command_with_its_message_alone(tmp_path, command):
    env = environment(tmp_path / "data", free_port(), APIFRAME_JOB_LEASE="0")
    result = subprocess.run(
        [str(BIN / "flask"), "--app", "app", *command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "Error: APIFRAME_JOB_LEASE must be at least 1, got 0.0\n"
