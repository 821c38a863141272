"""Accounts: creating them with their plan's credits and first key, finding them, changing plans."""

from __future__ import annotations

import datetime
import functools
import re

from peewee import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

import credits
import keycache
from auth import create_key
from config import PLANS
from models import Account, LedgerEntry, db, is_sqlite, utcnow

MIN_PASSWORD_LENGTH = 8
MAX_NAME_LENGTH = 80  # an account's display name
MAX_EMAIL_LENGTH = 254  # the longest address SMTP can carry
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+$")  # one @, something on each side, no spaces
PLAN_GRANT_PERIOD = datetime.timedelta(days=30)


class AccountError(ValueError):
    """An account cannot be created or changed as asked; the message says why."""


def normalize_email(email: str) -> str:
    """The form emails are stored and looked up in."""
    return email.strip().lower()


def find_by_email(email: str) -> Account | None:
    """The account with this email, or None."""
    return Account.get_or_none(Account.email == normalize_email(email))


def create(
    email: str, *, name: str = "", plan: str = "free", password: str | None = None
) -> tuple[Account, str]:
    """Create an account with its plan's credits and a first API key; returns both."""
    email, name = normalize_email(email), name.strip()
    if not EMAIL_PATTERN.match(email) or len(email) > MAX_EMAIL_LENGTH:
        raise AccountError(f"not a valid email address: {email}")
    if len(name) > MAX_NAME_LENGTH:
        raise AccountError(f"the name must be at most {MAX_NAME_LENGTH} characters")
    if plan not in PLANS:
        raise AccountError(f"unknown plan {plan}; plans: {', '.join(PLANS)}")
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    try:
        with db.atomic():
            account = Account.create(
                email=email,
                name=name,
                plan=plan,
                password_hash=generate_password_hash(password) if password else None,
            )
            reason = credits.SIGNUP if plan == "free" else credits.PLAN
            credits.grant(account.id, PLANS[plan].credits, reason, note=plan_note(plan))
            _, key = create_key(account, "default")
    except IntegrityError:
        raise AccountError(f"an account with email {email} already exists") from None
    return Account.get_by_id(account.id), key


def plan_note(plan: str) -> str:
    """The ledger note of a plan's credit grant (signup on that plan, or an upgrade to it)."""
    return f"{PLANS[plan].title} plan credits"


def change_plan(account: Account, plan: str) -> tuple[Account, int]:
    """Move ``account`` to ``plan``; returns the account and the credits this granted.

    The one rule for plan credits: an upgrade (to a plan granting more credits) tops the balance up
    to the new plan's grant, at most once per plan every ``PLAN_GRANT_PERIOD``; a downgrade, a
    sideways move or a repeat upgrade within the period grants nothing. Every switch is a ledger row.
    """
    if plan not in PLANS:
        raise AccountError(f"unknown plan {plan}; plans: {', '.join(PLANS)}")
    target = PLANS[plan]
    with db.atomic():
        query = Account.select().where(Account.id == account.id)
        current = (query if is_sqlite() else query.for_update()).get()  # SQLite: the write lock is held
        if current.plan == plan:
            return current, 0
        upgrade = target.credits > PLANS[current.plan].credits
        since = utcnow() - PLAN_GRANT_PERIOD
        granted_lately = (
            LedgerEntry.select()
            .where(
                (LedgerEntry.account == account.id)
                & LedgerEntry.reason.in_((credits.SIGNUP, credits.PLAN))
                & (LedgerEntry.note == plan_note(plan))
                & (LedgerEntry.created_at >= since)
            )
            .exists()
        )
        Account.update(plan=plan).where(Account.id == account.id).execute()
        if upgrade and not granted_lately:
            amount, note = max(0, target.credits - current.balance), plan_note(plan)
        elif upgrade:
            amount, note = 0, f"{target.title} plan: credits already granted in the last 30 days"
        else:
            amount, note = 0, f"{target.title} plan: no credits for a downgrade"
        credits.grant(account.id, amount, credits.PLAN, note=note)
    keycache.changed()  # the rate limits of the account's keys follow its plan
    return Account.get_by_id(account.id), amount


def change_password(account: Account, current: str, new: str) -> None:
    """Set a new console password, given the current one."""
    if not check_password(account, current):
        raise AccountError("the current password is wrong")
    if len(new) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the new password must be at least {MIN_PASSWORD_LENGTH} characters")
    Account.update(password_hash=generate_password_hash(new)).where(Account.id == account.id).execute()


def check_password(account: Account, password: str) -> bool:
    """Whether ``password`` is the account's console password."""
    return bool(account.password_hash) and check_password_hash(account.password_hash, password)


@functools.cache
def _decoy_hash() -> str:
    return generate_password_hash("decoy password, never matches")


def authenticate(email: str, password: str) -> Account | None:
    """The account whose console login this is, or None (taking as long whether or not the email exists)."""
    account = find_by_email(email)
    if account is None or not account.password_hash:
        check_password_hash(_decoy_hash(), password)
        return None
    return account if check_password(account, password) else None
