"""Credits: every change is a ledger row written in the same transaction as the balance."""

from __future__ import annotations

from peewee import CTE, Node, Select, Value, fn

from models import Account, CompiledQuery, Job, LedgerEntry, Slot, db, utcnow

# Ledger reasons. Grants (signup, plan, grant) count towards credits.total; the others do not.
SIGNUP, PLAN, GRANT, DEBIT, REFUND = "signup", "plan", "grant", "debit", "refund"
GRANT_REASONS = (SIGNUP, PLAN, GRANT)

MAX_CREDITS = 2**31 - 1  # the most the INTEGER balance columns hold on PostgreSQL; SQLite keeps to it too


class InsufficientCredits(Exception):
    """The account cannot pay: its balance is below the amount."""


class TooManyCredits(ValueError):
    """A grant would take an account's credits past MAX_CREDITS."""


# The statements of a debit, which every accepted job runs: the update answers with the new balance.
_take = CompiledQuery(
    lambda: Account.update(balance=Account.balance - Slot("amount"), spent=Account.spent + Slot("amount"))
    .where((Account.id == Slot("account")) & (Account.balance >= Slot("amount")))
    .returning(Account.balance)
)
_balance = CompiledQuery(lambda: Account.select(Account.balance).where(Account.id == Slot("account")))
_entry = CompiledQuery(
    lambda: LedgerEntry.insert(
        {
            LedgerEntry.account: Slot("account", LedgerEntry.account),
            LedgerEntry.amount: Slot("amount", LedgerEntry.amount),
            LedgerEntry.reason: Slot("reason", LedgerEntry.reason),
            LedgerEntry.job: Slot("job", LedgerEntry.job),
            LedgerEntry.note: Slot("note", LedgerEntry.note),
            LedgerEntry.balance_after: Slot("balance", LedgerEntry.balance_after),
            LedgerEntry.created_at: Slot("created_at", LedgerEntry.created_at),
        }
    )
)


def _record(
    account_id: int, amount: int, reason: str, job: Job | None, note: str, balance: int | None = None
) -> None:
    """The ledger row of a change just made; ``balance`` is the balance after it, if known."""
    if balance is None:
        balance = _balance.execute(account=account_id).fetchone()[0]
    _entry.execute(
        account=account_id,
        amount=amount,
        reason=reason,
        job=job.id if job is not None else None,
        note=note,
        balance=balance,
        created_at=utcnow(),
    )


def grant(account_id: int, amount: int, reason: str = GRANT, note: str = "") -> int:
    """Add ``amount`` credits (or, if negative, take them away); they count as granted."""
    if reason not in GRANT_REASONS:
        raise ValueError(f"not a grant reason: {reason}")
    if abs(amount) > MAX_CREDITS:
        raise TooManyCredits(f"cannot grant {amount} credits: an account holds at most {MAX_CREDITS}")
    with db.atomic():
        query = Account.update(balance=Account.balance + amount, granted=Account.granted + amount).where(
            Account.id == account_id
        )
        if amount < 0:
            query = query.where(Account.balance >= -amount)
        else:  # what the columns hold, checked in the update so that concurrent grants cannot pass it
            room = MAX_CREDITS - amount
            query = query.where((Account.balance <= room) & (Account.granted <= room))
        if query.execute() != 1:
            if amount > 0:
                raise TooManyCredits(
                    f"cannot grant {amount} credits: the account would hold more than {MAX_CREDITS}"
                )
            raise InsufficientCredits(f"cannot remove {-amount} credits: the balance is smaller")
        _record(account_id, amount, reason, None, note)
    return balance(account_id)


def debit(account_id: int, amount: int, job: Job) -> None:
    """Take ``amount`` credits for ``job``; raise InsufficientCredits if short.

    Call it inside the transaction that accepts the job: the balance and the ledger row change with it.
    """
    if not amount:  # a free job changes nothing, so it writes no ledger row
        return
    row = _take.execute(amount=amount, account=account_id).fetchone()
    if row is None:
        raise InsufficientCredits(f"this costs {amount} credits")
    _record(account_id, -amount, DEBIT, job, f"{job.type} job", balance=row[0])


def debit_ctes(account: Node, amount: Node, job: Node, note: Node, at: Node) -> tuple[CTE, CTE]:
    """A debit as two common table expressions, for the one statement that also inserts what it pays for.

    ``debit`` takes ``amount`` from ``account`` if its balance covers it and answers the new balance (no
    row if it does not); ``entry`` writes the debit's ledger row from that answer. A statement whose rows
    come FROM ``debit`` inserts nothing when the balance is short. PostgreSQL only: SQLite runs no writes
    in a WITH, so there ``debit`` runs in the transaction that accepts the job.
    """
    taken = (
        Account.update(balance=Account.balance - amount, spent=Account.spent + amount)
        .where((Account.id == account) & (Account.balance >= amount))
        .returning(Account.balance)
        .cte("debit")
    )
    row = {
        LedgerEntry.account: account,
        LedgerEntry.amount: Value(0) - amount,
        LedgerEntry.reason: Value(DEBIT),
        LedgerEntry.job: job,
        LedgerEntry.note: note,
        LedgerEntry.balance_after: taken.c.balance,
        LedgerEntry.created_at: at,
    }
    entry = LedgerEntry.insert_from(Select((taken,), list(row.values())), list(row)).cte("entry")
    return taken, entry


def refund(job: Job, note: str) -> None:
    """Give back what ``job`` cost. Call once, in the transaction that ends the job."""
    if not job.cost:
        return
    with db.atomic():
        Account.update(balance=Account.balance + job.cost, refunded=Account.refunded + job.cost).where(
            Account.id == job.account_id
        ).execute()
        _record(job.account_id, job.cost, REFUND, job, note)


def balance(account_id: int) -> int:
    """The account's current balance."""
    return _balance.execute(account=account_id).fetchone()[0]


def ledger_total(account_id: int) -> int:
    """The sum of the account's ledger, which always equals its balance."""
    return int(
        LedgerEntry.select(fn.SUM(LedgerEntry.amount)).where(LedgerEntry.account == account_id).scalar() or 0
    )
