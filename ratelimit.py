"""Rate limits: per API key, per minute, at the key owner's plan rate, shared by every API route.

Creating jobs is also limited per account, at the same plan rate, wherever the job comes from (any
key of the API, or the console's playground and buttons), in the limiter's own storage.
"""

from __future__ import annotations

import math
import time

from flask import Blueprint, Flask, Response, current_app, g
from flask_limiter import Limiter
from limits import parse

from config import PLANS
from errors import ApiError
from models import Account

CREATES_SCOPE = "creates"


class CreatesLimited(ApiError):
    """429: the account made as many jobs this minute as its plan allows."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(429, "RATE_LIMITED", message)
        self.retry_after = retry_after

    def response(self) -> Response:
        """The JSON error, with Retry-After."""
        response = super().response()
        response.headers["Retry-After"] = str(self.retry_after)
        return response

EXTENSION = "apiframe.limiter"


def bucket(key_hash: str) -> str:
    """The rate-limit bucket of an API key (from its hash, so it is unique across deployments)."""
    return f"api-key:{key_hash[:24]}"


def api_key_identity() -> str:
    """The bucket a request counts against: its API key."""
    return bucket(g.api_key.key_hash)


def plan_limit() -> str:
    """The caller's plan rate, e.g. ``"10/minute"``."""
    return per_minute(g.account.plan)


def per_minute(plan: str) -> str:
    """The rate-limit string for ``plan``."""
    return f"{PLANS[plan].requests_per_minute}/minute"


def _drop_stray_retry_after(response: Response) -> Response:
    # Flask-Limiter writes Retry-After next to the X-RateLimit headers; it only means something on a
    # 429. A view that asks to be retried for another reason (a busy 503) sets ``g.retry_after``.
    if response.status_code != 429:
        response.headers.pop("Retry-After", None)
        if g.get("retry_after"):
            response.headers["Retry-After"] = str(g.retry_after)
    return response


def init_app(app: Flask, api: Blueprint) -> Limiter:
    """Rate-limit ``api`` on ``app``; register after authentication so the key is known."""
    app.after_request(_drop_stray_retry_after)  # registered first, so it runs after the limiter's
    limiter = Limiter(
        key_func=api_key_identity,
        storage_uri=app.config["RATELIMIT_STORAGE_URI"],
        strategy="fixed-window",
        headers_enabled=True,
        key_prefix="apiframe",
    )
    limiter.shared_limit(plan_limit, scope="api")(api)
    limiter.init_app(app)
    app.extensions[EXTENSION] = limiter
    return limiter


def limiter() -> Limiter:
    """The current app's rate limiter."""
    return current_app.extensions[EXTENSION]


def count_create(account: Account) -> None:
    """Count a job creation against the account's plan rate (API and console together), or raise 429."""
    limiter = current_app.extensions[EXTENSION]
    if not limiter.enabled:
        return
    item = parse(per_minute(account.plan))
    identity = f"account:{account.id}"
    if limiter.limiter.hit(item, "apiframe", identity, CREATES_SCOPE):
        return
    reset, _ = limiter.limiter.get_window_stats(item, "apiframe", identity, CREATES_SCOPE)
    retry_after = max(0, math.ceil(reset - time.time()))
    raise CreatesLimited(
        f"Rate limit of {item.amount} new jobs per minute for the {PLANS[account.plan].title} plan exceeded "
        f"(the API and the console count together). Retry after {retry_after} seconds.",
        retry_after,
    )


def requests_this_minute(limiter: Limiter, key_hash: str, plan: str) -> tuple[int, int]:
    """How many requests a key made in the current window, and the plan's limit."""
    item = parse(per_minute(plan))
    stats = limiter.limiter.get_window_stats(item, "apiframe", bucket(key_hash), "api")
    return item.amount - stats.remaining, item.amount
