"""Rate limits: per API key, per minute, in two buckets.

``creates`` (requests that make a job, and so cost) get the key owner's plan rate; ``reads`` (jobs,
lists, fetches, the account, event streams and the rest) get a separate, larger budget, so waiting for
a job never uses up the rate at which one may create them.

Creating jobs is also limited per account, at the same plan rate, wherever the job comes from (any
key of the API, or the console's playground and buttons), in the limiter's own storage.

While a shared storage (Redis) does not answer, each process counts in its own memory, and goes back
to the storage once it answers again.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, current_app, g, request
from flask_limiter import Limiter, RateLimitExceeded
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import RateLimiter

import hooks
from config import PLANS
from errors import ApiError
from models import Account


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


log = logging.getLogger(__name__)
T = TypeVar("T")

EXTENSION = "apiframe.limiter"
WINDOW_ENDS = "apiframe.window_ends"
FALLBACK = "apiframe.limiter_fallback"
STORAGE_TIMEOUT = 1.0  # seconds a Redis connect or reply may take before it counts as not answering
LIMITER_HOOKS = "apiframe.limiter_hooks"  # Flask-Limiter's own request hooks, for limit_blueprint
CREATES, READS = "creates", "reads"  # the two buckets' names (flask-limiter scopes)
BUCKET_NAMES = {CREATES: "creates (requests that make a job)", READS: "reads"}  # as a 429 names them
READS_PER_CREATE = 10  # a key's read budget is this many times its plan rate ...
MIN_READS_PER_MINUTE = 120  # ... and never less than this (a poll every 0.5 s)

_create_views: set[Callable[..., object]] = set()


def creates(view: Callable[..., object]) -> Callable[..., object]:
    """Mark ``view`` as one that creates jobs: it counts against the ``creates`` bucket."""
    _create_views.add(view)
    return view


def is_create() -> bool:
    """Whether the current request counts against the ``creates`` bucket."""
    return current_app.view_functions.get(request.endpoint or "") in _create_views


def bucket(key_hash: str) -> str:
    """The rate-limit bucket of an API key (from its hash, so it is unique across deployments)."""
    return f"api-key:{key_hash[:24]}"


def api_key_identity() -> str:
    """The bucket a request counts against: its API key."""
    return bucket(g.api_key.key_hash)


def reads_per_minute(plan: str) -> int:
    """How many reads a minute a key on ``plan`` may make."""
    return max(MIN_READS_PER_MINUTE, READS_PER_CREATE * PLANS[plan].requests_per_minute)


def per_minute(plan: str, bucket: str = CREATES) -> str:
    """The rate-limit string of ``bucket`` for ``plan``."""
    amount = PLANS[plan].requests_per_minute if bucket == CREATES else reads_per_minute(plan)
    return f"{amount}/minute"


def _drop_stray_retry_after(response: Response) -> Response:
    # Flask-Limiter writes Retry-After next to the X-RateLimit headers; it only means something on a 429.
    if response.status_code != 429:
        response.headers.pop("Retry-After", None)
    return response


def _exceeded(limit: RateLimitItem, scope: str) -> ApiError:
    """429 in the JSON error format, naming the bucket that is used up."""
    what = BUCKET_NAMES.get(scope, "requests")
    message = (
        f"Rate limit of {limit.amount} {what} per {limit.get_expiry() // 60 or 1} minute exceeded. "
        "Retry after the number of seconds in the Retry-After header."
    )
    return ApiError(429, "RATE_LIMITED", message)


def _handle_rate_limit(exc: RateLimitExceeded) -> Response:
    """A limit of Flask-Limiter's own (the console's sign-in) used up: the JSON 429."""
    return _exceeded(exc.limit.limit, exc.limit.scope if isinstance(exc.limit.scope, str) else "").response()


# The API's two buckets are counted here rather than by Flask-Limiter's decorators, with its storage
# and strategy and the same keys: its generic resolution of limits per request (the limits of the
# blueprint, of the view, defaults, exemptions, meta limits) was a quarter of a GET's time.


@functools.cache
def _item(plan: str, scope: str) -> RateLimitItem:
    return parse(per_minute(plan, scope))


def _count_api_request(api: str) -> None:
    """Count a request to blueprint ``api`` against its key's bucket (creates or reads); 429 once spent."""
    limiter = current_app.extensions[EXTENSION]
    if not limiter.enabled or api not in request.blueprints or request.method == "OPTIONS":
        return  # an OPTIONS request (a browser's preflight) is answered with no key and counts for nothing
    scope = CREATES if is_create() else READS
    item = _item(g.account.plan, scope)
    used, ends_at = _hit(item, api_key_identity(), scope)
    g.rate_limit = (item, used, ends_at)
    if used > item.amount:
        raise _exceeded(item, scope)


def _hit(item: RateLimitItem, identity: str, scope: str) -> tuple[int, float]:
    """Count a request of ``identity`` in ``item``'s window: the count it reached and when the window ends."""
    # The fixed window's hit (limits' FixedWindowRateLimiter.hit), keeping the count it returns, so
    # the headers need no other look at the storage while the window's end is known.
    key, expiry = item.key_for("apiframe", identity, scope), item.get_expiry()

    def count(strategy: RateLimiter) -> tuple[int, float]:
        storage, counted_at = strategy.storage, time.time()
        used = storage.incr(key, expiry)
        return used, current_app.extensions[WINDOW_ENDS].end(storage, key, used, expiry, counted_at)

    return current_app.extensions[FALLBACK].run(count)


def seconds_until(moment: float) -> int:
    """A Retry-After for ``moment`` (unix seconds): the seconds until then, rounded up, at least 1."""
    return max(1, math.ceil(moment - time.time()))


def _add_limit_headers(response: Response) -> Response:
    """X-RateLimit-Limit, -Remaining and -Reset of the request's bucket; on a 429, Retry-After."""
    counted = g.get("rate_limit")
    if counted is None:
        return response
    item, used, ends_at = counted
    response.headers.add("X-RateLimit-Limit", str(item.amount))
    response.headers.add("X-RateLimit-Remaining", str(max(0, item.amount - used)))
    response.headers.add("X-RateLimit-Reset", str(int(ends_at + 1)))
    if response.status_code != 429:  # Retry-After means something only there
        return response
    asked = response.headers.get("Retry-After")  # a view's own rate limit's (always seconds)
    if asked is None and used <= item.amount:
        return response  # not a rate limit (the OpenAI family's insufficient_quota): no wait helps
    waits = [time.time() + int(asked)] if asked is not None else []
    if used >= item.amount:  # the bucket has no slot left either: the later one wins
        waits.append(ends_at)
    response.headers.set("Retry-After", str(seconds_until(max(waits))))
    return response


class WindowEnds:
    """When each counted fixed window ends, kept in the process: a count's headers then cost no round trip.

    A fixed window ends ``expiry`` seconds after its first count, its end never moves, and its count
    only grows. So a window this process opened (a count of 1) has a known end, and another one's end
    is asked of the storage once. A count no higher than the last one seen here, or a window within
    SURE seconds of its end, means the window may have been reset or ended elsewhere: its end is
    asked again. With Redis, that is one round trip of a create's three and of a read's two.
    """

    KEPT = 10_000  # windows whose end is kept; past that, all are forgotten and asked again once
    SURE = 1.0

    def __init__(self) -> None:
        self._ends: dict[str, tuple[float, int]] = {}  # a counter's key: (its window's end, its last count)

    def end(self, storage: Any, key: str, used: int, expiry: int, counted_at: float) -> float:
        """When (unix seconds) the window of ``key`` ends; its count in ``storage`` just reached ``used``.

        ``counted_at``: the time just before that count, so a window opened by it ends no later than said.
        """
        now = time.time()
        known = self._ends.get(key)
        if used == 1:
            end = counted_at + expiry
        elif known is not None and used > known[1] and known[0] - now >= self.SURE:
            end = known[0]
        else:
            end = storage.get_expiry(key)
        if known is None and len(self._ends) >= self.KEPT:
            self._ends.clear()
        self._ends[key] = (end, used)
        return end

    def forget(self) -> None:
        """Forget every window's end (the counts move to another storage)."""
        self._ends.clear()


class Fallback:
    """Counting in this process's memory while the shared storage does not answer, and back once it does.

    Flask-Limiter keeps an in-memory limiter for this (``in_memory_fallback_enabled``): on a storage
    error in its own hooks (the sign-in pages) it marks the storage dead, and ``Limiter.limiter`` is
    then the in-memory one. The API's buckets count through ``run``, which marks it the same way and,
    while it is dead, asks the storage again at most every RETRY seconds, one request at a time.
    """

    RETRY = 5.0

    def __init__(self, limiter: Limiter, ends: WindowEnds) -> None:
        self.limiter = limiter
        self.ends = ends
        self.lock = threading.Lock()
        self.failed_at = 0.0  # time.monotonic() of the last failure

    def run(self, count: Callable[[RateLimiter], T]) -> T:
        """``count`` on the limiter to count with now: the storage's, or while it is dead, the fallback."""
        if self.limiter._storage_dead:
            self._retry()
        dead = self.limiter._storage_dead
        try:
            return count(self.limiter.limiter)
        except StorageError as exc:
            if dead:
                raise
            self._failed(exc)
            return count(self.limiter.limiter)

    def _failed(self, exc: StorageError) -> None:
        with self.lock:
            self.failed_at = time.monotonic()
            if not self.limiter._storage_dead:
                log.warning("rate-limit storage not answering (%s): counting in this process meanwhile", exc)
                self.limiter._storage_dead = True
                self.ends.forget()

    def _retry(self) -> None:
        if time.monotonic() - self.failed_at < self.RETRY or not self.lock.acquire(blocking=False):
            return
        try:
            if self.limiter.storage.check():
                log.warning("rate-limit storage answering again; counting there")
                self.limiter._storage_dead = False
                self.ends.forget()
            else:
                self.failed_at = time.monotonic()
        finally:
            self.lock.release()


class SweptMemoryStorage(MemoryStorage):
    """limits' in-process storage (``memory://``), its expired counters dropped by one lasting thread.

    The library's own starts a new timer thread 10 ms after a hit whenever the last one has ended:
    under load, a thread for every few requests (4% of a request's samples). A fixed window's
    counter is already reset when read after it expires; this thread only frees old ones.
    """

    STORAGE_SCHEME = ["apiframe+memory"]
    SWEEP_INTERVAL = 1.0

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        sweeper = threading.Thread(target=_sweep, args=(weakref.ref(self),), name="ratelimit-sweep")
        sweeper.daemon = True
        sweeper.start()

    def _MemoryStorage__schedule_expiry(self) -> None:  # the library's per-hit timer thread
        pass


def _sweep(storage: weakref.ref[SweptMemoryStorage]) -> None:
    """Drop expired counters every SWEEP_INTERVAL, for as long as the storage is in use."""
    while (alive := storage()) is not None:
        alive._MemoryStorage__expire_events()
        interval = alive.SWEEP_INTERVAL
        del alive
        time.sleep(interval)


def _storage_uri(uri: str) -> str:
    """The storage for ``uri``: in-process counters go to SweptMemoryStorage."""
    scheme, sep, rest = uri.partition("://")
    return f"{SweptMemoryStorage.STORAGE_SCHEME[0]}://{rest}" if scheme == "memory" and sep else uri


def _storage_options(uri: str) -> dict[str, Any]:
    """Storage errors raised as StorageError; Redis's waits bounded by STORAGE_TIMEOUT (or the URI's)."""
    options: dict[str, Any] = {"wrap_exceptions": True}
    if uri.partition("://")[0] in RedisStorage.STORAGE_SCHEME:
        options.update(socket_timeout=STORAGE_TIMEOUT, socket_connect_timeout=STORAGE_TIMEOUT)
    return options


def init_app(app: Flask, api: Blueprint) -> Limiter:
    """Rate-limit ``api`` on ``app``; register after authentication so the key is known."""
    app.register_error_handler(RateLimitExceeded, _handle_rate_limit)
    uri = _storage_uri(app.config["RATELIMIT_STORAGE_URI"])
    limiter = Limiter(
        key_func=api_key_identity,
        storage_uri=uri,
        storage_options=_storage_options(uri),
        in_memory_fallback_enabled=True,
        strategy="fixed-window",
        headers_enabled=True,
        key_prefix="apiframe",
    )
    # Flask-Limiter hooks into every request of the app; its limits are only on the blueprints given
    # to limit_blueprint, so its hooks are taken off the app and given to those blueprints alone.
    app.extensions[LIMITER_HOOKS] = hooks.taken_off(app, limiter.init_app)
    app.before_request(functools.partial(_count_api_request, api.name))  # after authentication
    app.after_request(_add_limit_headers)
    app.extensions[EXTENSION] = limiter
    app.extensions[WINDOW_ENDS] = WindowEnds()
    app.extensions[FALLBACK] = Fallback(limiter, app.extensions[WINDOW_ENDS])
    return limiter


def limit_blueprint(app: Flask, blueprint: Blueprint, limit: str | Callable[[], str], **options: Any) -> None:
    """A Flask-Limiter limit on every route of ``blueprint`` (``options`` as for ``Limiter.limit``)."""
    app.extensions[EXTENSION].limit(limit, **options)(blueprint)
    hooks.attach(app, blueprint.name, {"after_request_funcs": [_drop_stray_retry_after]})  # runs last
    hooks.attach(app, blueprint.name, app.extensions[LIMITER_HOOKS])


def count_create(account: Account) -> None:
    """Count a job creation against the account's plan rate (API and console together), or raise 429."""
    limiter = current_app.extensions[EXTENSION]
    if not limiter.enabled:
        return
    item = _item(account.plan, CREATES)
    used, ends_at = _hit(item, f"account:{account.id}", CREATES)
    key_counted = g.get("rate_limit")  # an API request's: its key's bucket
    if key_counted is not None and (used, ends_at) > key_counted[1:]:
        g.rate_limit = (item, used, ends_at)  # the account's is the tighter bucket: the headers describe it
    if used <= item.amount:
        return
    retry_after = seconds_until(ends_at)
    raise CreatesLimited(
        f"Rate limit of {item.amount} new jobs per minute for the {PLANS[account.plan].title} plan exceeded "
        f"(the API and the console count together). Retry after {retry_after} seconds.",
        retry_after,
    )


def requests_this_minute(key_hash: str, plan: str, kind: str = CREATES) -> tuple[int, int]:
    """How many requests of bucket ``kind`` a key made in the current window, and that bucket's limit."""
    item = _item(plan, kind)
    stats = current_app.extensions[FALLBACK].run(
        lambda strategy: strategy.get_window_stats(item, "apiframe", bucket(key_hash), kind)
    )
    return item.amount - stats.remaining, item.amount


def storage_health() -> dict[str, Any]:
    """Whether the rate-limit storage answers, for /healthz: while it does not, each process counts alone."""
    storage = current_app.extensions[EXTENSION].storage
    if isinstance(storage, MemoryStorage):
        return {"ok": True, "detail": "counted in this process"}
    if storage.check():
        return {"ok": True, "detail": "answering"}
    return {"ok": False, "detail": "the rate-limit storage did not answer; each process counts on its own"}
