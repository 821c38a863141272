"""HTML error pages for the console, also for unknown paths under /console/ and methods a page does not
take (the API and its unknown routes keep the JSON error format)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, g, make_response, render_template
from flask_limiter import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from peewee import PeeweeException
from playhouse.pool import MaxConnectionsExceeded
from werkzeug.exceptions import HTTPException

from console.login import current_account
from errors import ApiError, database_unavailable

log = logging.getLogger(__name__)

TITLES = {
    400: "Something was wrong with that request",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    413: "Too large",
    429: "Slow down",
    500: "Something went wrong",
    503: "Unavailable for a moment",
}
MESSAGES = {
    404: "There is nothing here. It may have been removed, or it belongs to another account.",
    405: "This page cannot be used that way.",
}


def error_page(status: int, message: str) -> tuple[str, int]:
    """An error page in the console's look (with its navigation when signed in)."""
    title = TITLES.get(status, "Error")
    signed_in = getattr(g, "account", None) is not None
    return render_template(
        "error.html", status=status, title=title, message=message, signed_in=signed_in
    ), status


def _csrf_failed(exc: CSRFError) -> tuple[str, int]:
    return error_page(
        400, "This form expired or did not come from this site. Go back, reload the page and try again."
    )


def _rate_limited(exc: RateLimitExceeded) -> tuple[str, int]:
    return error_page(429, "Too many attempts from your address. Wait a minute, then try again.")


def _http_error(exc: HTTPException) -> tuple[str, int]:
    status = exc.code or 500
    return error_page(status, MESSAGES.get(status, exc.description or ""))


def _api_error(exc: ApiError) -> tuple[str, int]:
    return error_page(exc.status, exc.message)


def routing_page(exc: ApiError) -> Response:
    """The page for a failure outside the console's views (no such page, a method the page does not take),
    answered by the app's handlers: no console view ran, so the account is looked up here."""
    g.account = current_account()
    return make_response(error_page(exc.status, MESSAGES.get(exc.status, exc.message)))


def _database_error(exc: Exception) -> Response | tuple[str, int]:
    unavailable = database_unavailable(exc)
    if unavailable is None:
        return _unexpected(exc)
    response = make_response(
        error_page(503, "The database could not be used just now. Wait a few seconds, then try again.")
    )
    response.headers.update(unavailable.headers)
    return response


def _unexpected(exc: Exception) -> tuple[str, int]:
    log.exception("unhandled error in the console", exc_info=exc)
    return error_page(500, "An internal error occurred. It has been logged; please try again.")


def register(blueprint: Blueprint) -> None:
    """Render ``blueprint``'s failures as HTML pages."""
    blueprint.register_error_handler(CSRFError, _csrf_failed)
    blueprint.register_error_handler(RateLimitExceeded, _rate_limited)
    blueprint.register_error_handler(HTTPException, _http_error)
    blueprint.register_error_handler(ApiError, _api_error)
    blueprint.register_error_handler(PeeweeException, _database_error)
    blueprint.register_error_handler(MaxConnectionsExceeded, _database_error)
    blueprint.register_error_handler(Exception, _unexpected)
