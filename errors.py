"""The JSON error format: one exception type and the handlers that render every failure."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, has_app_context, has_request_context, jsonify, request
from gunicorn.http.errors import ParseException  # gunicorn reading a request body as it arrives
from peewee import PeeweeException
from playhouse.pool import MaxConnectionsExceeded
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Rule

import models

log = logging.getLogger(__name__)

# HTTP status -> error code, for failures raised by Flask/Werkzeug rather than by our views.
HTTP_CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    402: "INSUFFICIENT_CREDITS",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
}


# Every error code a client can get: code -> (HTTP status, when it happens). The docs and OpenAPI list these.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "VALIDATION_ERROR": (400, "The request body or query is invalid; the message names the field."),
    "UNAUTHORIZED": (401, "No API key in X-API-Key or Authorization, or the key is unknown or revoked."),
    "INSUFFICIENT_CREDITS": (402, "The balance is smaller than the operation's cost; no job is created."),
    "NOT_FOUND": (404, "No such job (another account's job is never visible), image or endpoint."),
    "METHOD_NOT_ALLOWED": (405, "The endpoint exists but not for this HTTP method; see the Allow header."),
    "PAYLOAD_TOO_LARGE": (413, "The request body is larger than 1 MiB."),
    "URI_TOO_LONG": (414, "The path and query string are longer than 4096 bytes."),
    "HEADER_TOO_LARGE": (431, "A request header is longer than 8192 bytes."),
    "IMAGE_EXPIRED": (
        410,
        "The image, or a parent job's images, were deleted by this server's retention (the message says how "
        "long it keeps them); the job itself stays readable.",
    ),
    "IDEMPOTENCY_KEY_IN_USE": (
        409,
        "A request with this Idempotency-Key is still being processed; wait Retry-After seconds.",
    ),
    "IDEMPOTENCY_KEY_REUSED": (422, "This Idempotency-Key was already used with a different request."),
    "RATE_LIMITED": (
        429,
        "Too many creates (the plan's rate) or reads (a larger budget) this minute for the key, or too many "
        "open event streams; the message says which. Wait Retry-After seconds.",
    ),
    "PROVIDER_ERROR": (500, "The image provider failed. A job whose provider fails ends failed, refunded."),
    "INTERNAL_ERROR": (500, "An unexpected error; it is logged on the server."),
    "STORAGE_UNAVAILABLE": (503, "The image storage could not be reached; wait Retry-After seconds."),
    "DATABASE_UNAVAILABLE": (
        503,
        "The database could not be used for now (down, restarting, its connection lost, busy or full); wait "
        "Retry-After seconds.",
    ),
}
DATABASE_RETRY_AFTER = 5  # seconds a client is told to wait when the database cannot be used


EXTENSION = "apiframe.error_bodies"  # blueprint name -> how errors on its routes are rendered
UNROUTED = "apiframe.error_bodies.unrouted"  # (claims a path, render) for paths that no route has
# An error's JSON body in an API family's format, or a whole response (the console's HTML pages).
Render = Callable[["ApiError"], "dict[str, Any] | Response"]


class ApiError(Exception):
    """A failure to report to the client as ``{"success": false, "error": {...}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """This error in the reference's format."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = self.fields
        return {"success": False, "error": error}

    def response(self) -> Response:
        """Render this error as a JSON response, in the format of the API family being answered."""
        rendered = _renderer()(self)
        response = rendered if isinstance(rendered, Response) else jsonify(rendered)
        response.status_code = self.status
        response.headers.update(self.headers)
        return response


def _renderer() -> Render:
    """How errors are rendered for the current request: by its blueprint's family, else the reference's."""
    if has_request_context() and has_app_context():
        renderers = current_app.extensions.get(EXTENSION, {})
        for blueprint in _blueprints():
            if blueprint in renderers:
                return renderers[blueprint]
        if _unrouted():  # no route at all (not a method no route takes)
            for claims, render in current_app.extensions.get(UNROUTED, ()):
                if claims(request.path):
                    return render
    return ApiError.body


def _blueprints() -> list[str]:
    """The request's blueprints, innermost first; for a wrong method, those of the route it missed."""
    rule = _missed_rule() if request.url_rule is None else None
    if rule is None:
        return request.blueprints
    parts = rule.endpoint.split(".")[:-1]
    return [".".join(parts[:end]) for end in range(len(parts), 0, -1)]


def _missed_rule() -> Rule | None:
    """For a request refused with 405 by routing, the route that takes its path with another method.

    None if no method has a route for the path: Werkzeug compares a route's methods before its
    converters, so a path that only looks like a route's (an id past an int converter's maximum) is
    refused with 405 although the route's own method would not match it either.
    """
    exc = request.routing_exception
    if not isinstance(exc, MethodNotAllowed):
        return None
    adapter = current_app.url_map.bind_to_environ(request.environ)
    for method in exc.valid_methods or ():
        try:
            return adapter.match(method=method, return_rule=True)[0]
        except HTTPException:  # no route for this path with this method either
            continue
    return None


def _unrouted() -> bool:
    """Whether no route takes the request's path, whatever the method."""
    exc = request.routing_exception
    return isinstance(exc, NotFound) or (isinstance(exc, MethodNotAllowed) and _missed_rule() is None)


def render_for(app: Flask, blueprint: str, render: Render) -> None:
    """Render errors on the routes of ``blueprint`` (its full, dotted name) with ``render``."""
    app.extensions.setdefault(EXTENSION, {})[blueprint] = render


def render_unrouted(app: Flask, claims: Callable[[str], bool], render: Render) -> None:
    """Render the errors (a 404) of a path that no route has with ``render``, if ``claims(path)``."""
    app.extensions.setdefault(UNROUTED, []).append((claims, render))


def validation_error(message: str, fields: dict[str, Any] | None = None) -> ApiError:
    """400 VALIDATION_ERROR."""
    return ApiError(400, "VALIDATION_ERROR", message, fields=fields)


def not_found(message: str) -> ApiError:
    """404 NOT_FOUND."""
    return ApiError(404, "NOT_FOUND", message)


def unauthorized(message: str) -> ApiError:
    """401 UNAUTHORIZED."""
    return ApiError(401, "UNAUTHORIZED", message)


def insufficient_credits(message: str) -> ApiError:
    """402 INSUFFICIENT_CREDITS."""
    return ApiError(402, "INSUFFICIENT_CREDITS", message)


def _http_message(exc: HTTPException) -> str:
    """A one-line message for an HTTP failure raised outside our views."""
    if exc.code == 404:
        return "No such endpoint. See /docs for the API reference."
    if exc.code == 405:
        allowed = ", ".join(sorted(m for m in (exc.valid_methods or []) if m not in ("HEAD", "OPTIONS")))
        return f"Method not allowed here. Allowed: {allowed}." if allowed else "Method not allowed here."
    if exc.code == 413:
        return "Request body is too large."
    return exc.description or exc.name


def _handle_api_error(exc: ApiError) -> Response:
    return exc.response()


def http_error(exc: HTTPException) -> Response:
    """The JSON error for an HTTP failure raised outside our views (404, 405, 413 ...)."""
    if exc is request.routing_exception and isinstance(exc, MethodNotAllowed) and _unrouted():
        exc = NotFound()  # no method has a route for this path: a 405 would name methods that 404 too
    status = exc.code or 500
    code = HTTP_CODES.get(status, (exc.name or "ERROR").upper().replace(" ", "_"))
    response = ApiError(status, code, _http_message(exc)).response()
    if status == 405 and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _handle_unreadable_body(exc: ParseException) -> Response:
    """gunicorn could not read the request's body as it arrived (a malformed chunk, say): a 400."""
    return validation_error(f"The request body could not be read: {exc}.").response()


class _Outages:
    """Requests answered 503 because the database could not be used: logged in one line every
    OUTAGE_LOG_INTERVAL seconds at most, with how many there were meanwhile (an outage under load
    would otherwise log a line per request)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logged_at = -math.inf
        self._since = 0

    def happened(self, exc: Exception) -> None:
        with self._lock:
            self._since += 1
            now = time.monotonic()
            if now - self._logged_at < OUTAGE_LOG_INTERVAL:
                return
            count, self._since, self._logged_at = self._since, 0, now
        log.warning("%d request(s) could not use the database: %s", count, str(exc).strip())


OUTAGE_LOG_INTERVAL = 10.0
_outages = _Outages()


def database_unavailable(exc: Exception) -> ApiError | None:
    """503 DATABASE_UNAVAILABLE (logged by ``_outages``) if ``exc`` says the database cannot be used now."""
    if not models.unavailable(exc):
        return None
    _outages.happened(exc)
    return ApiError(
        503,
        "DATABASE_UNAVAILABLE",
        f"The database could not be used just now. Retry in {DATABASE_RETRY_AFTER} seconds.",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
    )


def failure(exc: Exception) -> ApiError:
    """The error a request that raised ``exc`` answers, logged as the error handlers log it: for an answer
    streamed on after its view returned, which they do not see (HTTP errors and unreadable bodies are
    the view's own, before any answer)."""
    if isinstance(exc, ApiError):
        return exc
    return database_unavailable(exc) or _unexpected(exc)


def _unexpected(exc: Exception) -> ApiError:
    log.exception("unhandled error", exc_info=exc)
    return ApiError(500, "INTERNAL_ERROR", "An internal error occurred. It has been logged.")


def _handle_database_error(exc: Exception) -> Response:
    return failure(exc).response()


def _handle_unexpected(exc: Exception) -> Response:
    return _unexpected(exc).response()


def init_app(app: Flask) -> None:
    """Render every failure of ``app`` in the JSON error format."""
    app.register_error_handler(ApiError, _handle_api_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(ParseException, _handle_unreadable_body)
    app.register_error_handler(PeeweeException, _handle_database_error)
    app.register_error_handler(MaxConnectionsExceeded, _handle_database_error)
    app.register_error_handler(Exception, _handle_unexpected)
