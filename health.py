"""GET /healthz: whether the database answers (200 or 503), whether the rate-limit storage does, and how
the image storage and each operation's provider are doing.

Public and outside the API's rate limit. Storage and provider checks are cached for HEALTH_CACHE_SECONDS, so
a health probe cannot hammer a backend.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify

import ratelimit
import storage
from models import db
from providers import EXTENSION as PROVIDERS

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)
EXTENSION = "apiframe.health"


class ProviderHealth:
    """The storage's and providers' last check, refreshed at most every ``max_age`` seconds."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self.lock = threading.Lock()
        self.checked_at: float | None = None
        self.report: dict[str, Any] = {}

    def current(self, app: Flask) -> dict[str, Any]:
        """The storage's and the providers' state, checking again when the cached one is too old."""
        with self.lock:
            if self.checked_at is None or time.monotonic() - self.checked_at >= self.max_age:
                self.report = _report(app)
                self.checked_at = time.monotonic()
            return self.report


def _report(app: Flask) -> dict[str, Any]:
    problem = app.extensions[storage.EXTENSION].check()
    if problem is None:
        report: dict[str, Any] = {"storage": {"ok": True, "detail": "answering"}}
    else:
        report = {"storage": {"ok": False, "detail": problem, "code": "STORAGE_UNAVAILABLE"}}
    providers = report["providers"] = {}
    for operation, health in app.extensions[PROVIDERS].check().items():
        entry: dict[str, Any] = {"name": health.name, "ok": health.ok, "detail": health.detail}
        if not health.supported:  # neither ok nor failing: the configuration says so, nothing is down
            entry = {"name": health.name, "supported": False, "detail": health.detail}
        elif not health.ok:
            entry["code"] = "PROVIDER_ERROR"
        providers[operation] = entry
    return report


def _database() -> dict[str, Any]:
    try:
        with db.connection_context():
            db.execute_sql("SELECT 1")
    except Exception as exc:  # any driver error means the same thing here: no database
        log.warning("health check: database unavailable: %s", type(exc).__name__)
        return {"ok": False, "detail": "the database did not answer"}
    return {"ok": True, "detail": "answering"}


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """200 while the database answers (degraded if the rate-limit storage, the image storage or a provider
    fails; an operation no provider is configured for is reported, and degrades nothing), else 503."""
    database = _database()
    rate_limits = ratelimit.storage_health()
    checked = current_app.extensions[EXTENSION].current(current_app)
    providers = [entry for entry in checked["providers"].values() if entry.get("supported", True)]
    fine = [database, rate_limits, checked["storage"], *providers]
    body = {
        "status": "ok" if all(entry["ok"] for entry in fine) else "degraded",
        "database": database,
        "rateLimits": rate_limits,
        **checked,
    }
    return jsonify(body), 200 if database["ok"] else 503


def init_app(app: Flask) -> None:
    """Serve /healthz on ``app``."""
    app.extensions[EXTENSION] = ProviderHealth(float(app.config["HEALTH_CACHE_SECONDS"]))
    app.register_blueprint(bp)
