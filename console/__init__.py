"""The web console: signup and login, keys, jobs, the playground, usage and plans, server-rendered."""

from __future__ import annotations

from flask import Flask, Response, request
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFProtect

import hooks
import ratelimit
from console import filters, gallery, pages, playground, signin  # noqa: F401  (importing registers the views)
from console.blueprints import console_bp, signin_bp
from console.errors import routing_page
from errors import ApiError, render_for, render_unrouted

csrf = CSRFProtect()

# Per client address, on POST only, so that guessing passwords and mass signups are slow.
SIGNIN_RATE_LIMITS = {"signin.login": "10/minute", "signin.signup": "5/minute"}
OTHER_SIGNIN_RATE_LIMIT = "20/minute"


def _signin_rate_limit() -> str:
    return SIGNIN_RATE_LIMITS.get(request.endpoint or "", OTHER_SIGNIN_RATE_LIMIT)


def _not_in_frames(response: Response) -> Response:
    """No other site may show the console in a frame, where its buttons could be clicked unseen."""
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    return response


def _not_stored(response: Response) -> Response:
    """No browser or proxy keeps a console answer: a new API key or the webhook signing secret could
    otherwise be read back from the history or a cache after logging out. Static files keep theirs."""
    response.headers["Cache-Control"] = "no-store"
    return response


def _routing_page(error: ApiError) -> Response:
    """The console's error page, with the headers of every console answer."""
    return _not_stored(_not_in_frames(routing_page(error)))


def init_app(app: Flask) -> None:
    """Serve the console on ``app``: sessions, CSRF on every form, pages."""
    app.config.update(
        SESSION_COOKIE_NAME="apiframe_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=app.config["PUBLIC_URL"].startswith("https://"),
    )
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # a form's token lives as long as the session
    # The forms are all on the console's blueprints: the protection's hook runs for their requests only.
    protection = hooks.taken_off(app, csrf.init_app)
    for blueprint in (signin_bp, console_bp):
        hooks.attach(app, blueprint.name, protection, first=True)
        hooks.attach(app, blueprint.name, {"after_request_funcs": [_not_in_frames, _not_stored]})
    limit = {"key_func": get_remote_address, "methods": ["POST"]}
    ratelimit.limit_blueprint(app, signin_bp, _signin_rate_limit, **limit)
    app.register_blueprint(signin_bp)
    app.register_blueprint(console_bp)
    for blueprint in (signin_bp, console_bp):  # a method a page does not take
        render_for(app, blueprint.name, _routing_page)
    render_unrouted(app, lambda path: path.startswith(console_bp.url_prefix + "/"), _routing_page)
    filters.register(app)
