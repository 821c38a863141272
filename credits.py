"""Credits: every change is a ledger row written in the same transaction as the balance."""

from __future__ import annotations

from peewee import IntegrityError, ValueLiterals, fn

from models import REFUND_ROWS, Account, CompiledQuery, Job, LedgerEntry, Slot, db, utcnow

# Ledger reasons. Grants (signup, plan, grant) count towards credits.total; the others do not.
SIGNUP, PLAN, GRANT, DEBIT, REFUND = "signup", "plan", "grant", "debit", "refund"
GRANT_REASONS = (SIGNUP, PLAN, GRANT)

MAX_CREDITS = 2**31 - 1  # the most the INTEGER balance columns hold on PostgreSQL; SQLite keeps to it too


# A job's INSERT takes its cost from the balance and writes the debit's ledger row, in the database
# (migrations/0014_jobs_pay_on_insert.py); when the balance is short, it fails with this message.
INSUFFICIENT = "insufficient credits"


class InsufficientCredits(Exception):
    """The account cannot pay: its balance is below the amount."""


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` is a job's INSERT refused by the database because its account cannot pay."""
    return isinstance(exc, IntegrityError) and str(exc).startswith(INSUFFICIENT)


class TooManyCredits(ValueError):
    """A grant would take an account's credits past MAX_CREDITS."""


_give = CompiledQuery(
    lambda: (
        Account.update(balance=Account.balance + Slot("amount"), refunded=Account.refunded + Slot("amount"))
        .where(Account.id == Slot("account"))
        .returning(Account.balance)
    )
)
_balance = CompiledQuery(lambda: Account.select(Account.balance).where(Account.id == Slot("account")))
# A job's second refund row is not written (the database holds one per job), and RETURNING says so. The
# conflict's WHERE is the partial index's, in literals: SQLite does not match it with a bound parameter.
_entry = CompiledQuery(
    lambda: (
        LedgerEntry.insert(
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
        .on_conflict("NOTHING", conflict_target=[LedgerEntry.job], conflict_where=ValueLiterals(REFUND_ROWS))
        .returning(LedgerEntry.id)
    )
)


def _record(
    account_id: int, amount: int, reason: str, job: Job | None, note: str, balance: int | None = None
) -> bool:
    """The ledger row of a change just made; ``balance`` is the balance after it, if known.

    Returns whether it was written: not if it would be a second refund of ``job``.
    """
    if balance is None:
        balance = _balance.execute(account=account_id).fetchone()[0]
    written = _entry.execute(
        account=account_id,
        amount=amount,
        reason=reason,
        job=job.id if job is not None else None,
        note=note,
        balance=balance,
        created_at=utcnow(),
    ).fetchone()
    return written is not None


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


def refund(job: Job, note: str) -> bool:
    """Give back what ``job`` cost, once; call it in the transaction that ends the job.

    Returns whether this call gave it back: a job refunded already (by another call, in this process or
    another, even one running at the same instant) is not refunded again, and nothing changes.
    """
    if not job.cost:
        return False
    with db.atomic() as change:
        balance = _give.execute(amount=job.cost, account=job.account_id).fetchone()[0]
        if _record(job.account_id, job.cost, REFUND, job, note, balance=balance):
            return True
        change.rollback()  # the balance as it was: the ledger holds this job's refund already
    return False


def balance(account_id: int) -> int:
    """The account's current balance."""
    return _balance.execute(account=account_id).fetchone()[0]


def ledger_total(account_id: int) -> int:
    """The sum of the account's ledger, which always equals its balance."""
    return int(
        LedgerEntry.select(fn.SUM(LedgerEntry.amount)).where(LedgerEntry.account == account_id).scalar() or 0
    )
