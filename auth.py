"""API keys: minting, hashing, and authenticating a request by its key."""

from __future__ import annotations

import datetime
import hashlib
import secrets
from collections.abc import Callable

from flask import g, request

import keycache
from errors import unauthorized
from models import Account, ApiKey, CompiledQuery, Slot, db, utcnow

KEY_PREFIX = "ak_live_"
SHOWN_PREFIX_LENGTH = len(KEY_PREFIX) + 8
LAST_USED_RESOLUTION = datetime.timedelta(seconds=60)
MAX_KEY_NAME_LENGTH = 64  # a key's name, to recognise it by


def hash_key(key: str) -> str:
    """The stored form of an API key (keys are random, so a fast hash is enough)."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(account: Account, name: str = "") -> tuple[ApiKey, str]:
    """Mint a key for ``account``; returns the row and the key, which is never shown again."""
    if len(name) > MAX_KEY_NAME_LENGTH:
        raise ValueError(f"the key name must be at most {MAX_KEY_NAME_LENGTH} characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey.create(account=account, name=name, prefix=key[:SHOWN_PREFIX_LENGTH], key_hash=hash_key(key))
    return row, key


def revoke(key: ApiKey) -> bool:
    """Revoke a live key (it stops working at once); returns False if it was already revoked.

    Not inside a transaction: every process forgets the key once the revocation has committed.
    """
    updated = ApiKey.update(revoked_at=utcnow()).where((ApiKey.id == key.id) & ApiKey.revoked_at.is_null())
    if updated.execute() != 1:
        return False
    keycache.changed()
    return True


_live_key = CompiledQuery(
    lambda: (
        ApiKey.select(ApiKey, Account)
        .join(Account)
        .where((ApiKey.key_hash == Slot("key_hash")) & ApiKey.revoked_at.is_null())
        .limit(1)
    )
)


def find_key(key: str) -> ApiKey | None:
    """The live key row (with its account) for ``key``, or None."""
    if not key.startswith(KEY_PREFIX):
        return None
    return keycache.cache().find(hash_key(key), _read_key)


def _read_key(key_hash: str) -> ApiKey | None:
    return _live_key.first(key_hash=key_hash)


def liveness(row: ApiKey) -> Callable[[], bool]:
    """Whether ``row``'s key is still live, asked again after its request (by an open event stream).

    Through the key cache, as every request's key: a memory read, unless a key was revoked or a plan
    changed since it was last read, in any process.
    """
    keys, key_hash = keycache.cache(), row.key_hash
    return lambda: keys.find(key_hash, _read_key_after_request) is not None


def _read_key_after_request(key_hash: str) -> ApiKey | None:
    with db.connection_context():  # the request's connection closed when it ended
        return _read_key(key_hash)


def presented_key() -> str | None:
    """The API key the client sent: X-API-Key, else Authorization (``Bearer <key>`` or a bare ``<key>``)."""
    # The Authorization forms are how the original apiframe.ai API's clients send their key.
    key = request.headers.get("X-API-Key", "").strip()
    if key:
        return key
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip() or None
    return scheme or None


def authenticate() -> None:
    """Identify the caller by API key, setting ``g.api_key`` and ``g.account``, or raise 401.

    ``g.account`` may have been read with the key in an earlier request (keycache.py): its id and
    plan are current, its figures (balance, spending) are read again where they are shown.
    """
    key = presented_key()
    if key is None:
        raise unauthorized(
            "Missing API key. Send it in the X-API-Key header, or as Authorization: Bearer <key> "
            "or Authorization: <key>."
        )
    row = find_key(key)
    if row is None:
        raise unauthorized("Invalid API key.")
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.update(last_used_at=now).where(ApiKey.id == row.id).execute()
        keycache.cache().used(row.key_hash, now)
    g.api_key = row
    g.account = row.account


def current_account() -> Account:
    """The caller's account as it is now, for answers that show its figures (``g.account`` may be older)."""
    return Account.get_by_id(g.account.id)
