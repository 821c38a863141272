"""Credits: every change is a ledger row written in the same transaction as the balance."""

from __future__ import annotations

from peewee import fn

from models import Account, Job, LedgerEntry, db

# Ledger reasons. Grants (signup, plan, grant) count towards credits.total; the others do not.
SIGNUP, PLAN, GRANT, DEBIT, REFUND = "signup", "plan", "grant", "debit", "refund"
GRANT_REASONS = (SIGNUP, PLAN, GRANT)


class InsufficientCredits(Exception):
    """The account cannot pay: its balance is below the amount."""


def _record(account_id: int, amount: int, reason: str, job: Job | None, note: str) -> LedgerEntry:
    balance = Account.select(Account.balance).where(Account.id == account_id).scalar()
    return LedgerEntry.create(
        account=account_id, amount=amount, reason=reason, job=job, note=note, balance_after=balance
    )


def grant(account_id: int, amount: int, reason: str = GRANT, note: str = "") -> LedgerEntry:
    """Add ``amount`` credits (or, if negative, take them away); they count as granted."""
    if reason not in GRANT_REASONS:
        raise ValueError(f"not a grant reason: {reason}")
    with db.atomic():
        query = Account.update(balance=Account.balance + amount, granted=Account.granted + amount).where(
            Account.id == account_id
        )
        if amount < 0:
            query = query.where(Account.balance >= -amount)
        if query.execute() != 1:
            raise InsufficientCredits(f"cannot remove {-amount} credits: the balance is smaller")
        return _record(account_id, amount, reason, None, note)


def debit(account_id: int, amount: int, job: Job) -> LedgerEntry:
    """Take ``amount`` credits for ``job``, atomically; raise InsufficientCredits if short."""
    with db.atomic():
        updated = (
            Account.update(balance=Account.balance - amount)
            .where((Account.id == account_id) & (Account.balance >= amount))
            .execute()
        )
        if updated != 1:
            raise InsufficientCredits(f"this costs {amount} credits")
        return _record(account_id, -amount, DEBIT, job, f"{job.type} job")


def refund(job: Job, note: str) -> LedgerEntry | None:
    """Give back what ``job`` cost. Call once, in the transaction that ends the job."""
    if not job.cost:
        return None
    with db.atomic():
        Account.update(balance=Account.balance + job.cost).where(Account.id == job.account_id).execute()
        return _record(job.account_id, job.cost, REFUND, job, note)


def ledger_total(account_id: int) -> int:
    """The sum of the account's ledger, which always equals its balance."""
    return int(
        LedgerEntry.select(fn.SUM(LedgerEntry.amount)).where(LedgerEntry.account == account_id).scalar() or 0
    )
