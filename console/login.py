"""Console sessions: a signed cookie holding the account id and the account's session generation.

Logging out and changing the password bump the generation stored on the account, which ends every
session of the account on the server side: a copied cookie of an older generation opens nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from flask import Response, g, jsonify, redirect, request, session, url_for

import keycache
from models import Account, db

SESSION_KEY = "account_id"
GENERATION_KEY = "generation"
# Answered with 401 JSON instead of a redirect to the login page: the pages' scripts ask them.
JSON_VIEWS = {"console.live_jobs", "console.job_events"}


def log_in(account: Account) -> None:
    """Start a fresh session for ``account`` (dropping anything kept from before)."""
    session.clear()
    session[SESSION_KEY] = account.id
    session[GENERATION_KEY] = account.session_generation
    session.permanent = True


def end_sessions(account_id: int) -> Account:
    """End every console session of the account (on every device), and the live views they have open;
    returns the account as it now is."""
    Account.update(session_generation=Account.session_generation + 1).where(
        Account.id == account_id
    ).execute()
    keycache.changed()  # every process's open event streams ask ``liveness`` again
    return Account.get_by_id(account_id)


def log_out() -> None:
    """End the session, and with it every copy of its cookie."""
    account = current_account()
    if account is not None:
        end_sessions(account.id)
    session.clear()


def current_account() -> Account | None:
    """The signed-in account, or None."""
    account_id = session.get(SESSION_KEY)
    if not isinstance(account_id, int):
        return None
    account = Account.get_or_none(Account.id == account_id)
    if account is None or session.get(GENERATION_KEY) != account.session_generation:
        session.clear()
        return None
    return account


def liveness() -> Callable[[], bool]:
    """Whether the current session is still live, asked again after its request (by an open event stream).

    The session's row is read when first asked, then again only once the key cache's version has
    moved (``end_sessions`` moves it, in any process): otherwise a memory read.
    """
    account_id, generation = session[SESSION_KEY], session[GENERATION_KEY]
    keys = keycache.cache()
    seen: list[int | None] = []  # the version the row was last read at

    def live() -> bool:
        version = keys.version()
        if seen and version is not None and seen[-1] == version:
            return True
        seen[:] = [version]
        with db.connection_context():  # the request's connection closed when it ended
            current = Account.select(Account.session_generation).where(Account.id == account_id).scalar()
        return current == generation

    return live


def safe_next(target: str | None) -> str:
    """Where to go after logging in: ``target`` if it is a path on this site, else the dashboard."""
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and target.isprintable()  # no CR or LF, which a Location header cannot hold
    ):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("console.dashboard")


def require_login() -> Response | None:
    """Before every console view: set ``g.account``, or send the visitor to the login page."""
    g.account = current_account()
    if g.account is not None:
        return None
    if request.endpoint in JSON_VIEWS:
        response = jsonify(error="Your session has ended. Log in again.")
        response.status_code = 401
        return response
    path = return_path()
    return redirect(url_for("signin.login", next=path) if path else url_for("signin.login"))


def return_path() -> str | None:
    """The page to come back to after logging in: the one asked for, or for a form sent (POST) the
    same-site page it was sent from; a POST-only address opened after login would only answer 405."""
    if request.method in ("GET", "HEAD"):
        return request.full_path.rstrip("?")
    referrer = urlsplit(request.referrer or "")
    if referrer.netloc != request.host:
        return None
    path = referrer.path + (f"?{referrer.query}" if referrer.query else "")
    return path if safe_next(path) == path else None
