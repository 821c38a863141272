"""Limits on the request line, headers and body, answered by the app in the JSON error format.

gunicorn's own limits are set above these (gunicorn.conf.py), so that a long path or a huge header
reaches the app and gets a JSON 414 or 431 like every other error, not the server's HTML page.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import RequestEntityTooLarge

from errors import ApiError

MAX_TARGET_BYTES = 4096  # path and query string
MAX_HEADER_BYTES = 8192  # one header line: name and value
_UNPREFIXED = ("CONTENT_TYPE", "CONTENT_LENGTH")  # the headers WSGI keeps under names of their own
# A body left unread (refused for its size, or by an answer before the view read it: a bad key, an unknown
# path) is read and dropped up to this size, or the largest any route takes if that is more, so that the
# connection can carry the next request: gunicorn drops at most 64 KB of an unread body, and otherwise
# closes the connection, after an answer that said keep-alive, and with the client perhaps still sending.
DRAIN_MAX_BYTES = 4 * 1024 * 1024


def check_request() -> None:
    """Refuse a request whose target or one of whose headers is too long."""
    target = request.environ.get("RAW_URI") or request.full_path
    if len(target) > MAX_TARGET_BYTES:
        raise ApiError(
            414,
            "URI_TOO_LONG",
            f"The request's path and query string are {len(target)} bytes long; at most {MAX_TARGET_BYTES} "
            "are accepted. Send large inputs in a JSON body.",
        )
    # The headers as the WSGI environ holds them (HTTP_X_API_KEY), not through request.headers, which
    # would spell out every name of every request to find none too long.
    for key, value in request.environ.items():
        if key.startswith("HTTP_"):
            name = key[5:]
        elif key in _UNPREFIXED:
            name = key
        else:
            continue
        size = len(name) + len(value)
        if size > MAX_HEADER_BYTES:
            name = name.replace("_", "-").title()
            raise ApiError(
                431,
                "HEADER_TOO_LARGE",
                f"The '{name[:64]}' header is {size} bytes long; at most {MAX_HEADER_BYTES} are accepted "
                "per header.",
            )


def body() -> bytes:
    """The request's body; 413 when one sent without a Content-Length (chunked) runs past the limit.

    Werkzeug reads such a body up to ``max_content_length`` and stops there without a word: a longer
    body would be cut short and then read as if it were whole.
    """
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        if request.environ["wsgi.input"].read(1):  # one byte past the limit
            raise RequestEntityTooLarge()
    return raw


def _drain_unread_body(response: Response) -> Response:
    """Read what is left of the request's body and drop it (see DRAIN_MAX_BYTES), under a server that
    ends the body itself (gunicorn): there, reading one that was read to its end returns nothing at once."""
    environ = request.environ
    length = request.content_length
    if not (length or "HTTP_TRANSFER_ENCODING" in environ) or not environ.get("wsgi.input_terminated"):
        return response
    config = current_app.config
    most = max(DRAIN_MAX_BYTES, config["MAX_CONTENT_LENGTH"] or 0, config["UPLOAD_MAX_BYTES"])
    if length is not None and length > most:
        return response  # beyond any the service takes: gunicorn closes the connection
    stream, dropped = environ["wsgi.input"], 0
    try:
        while dropped <= most and (chunk := stream.read(65536)):
            dropped += len(chunk)
    except (OSError, ParseException):  # the client went, or sent a body that cannot be read (a bad chunk)
        pass
    return response


def init_app(app: Flask) -> None:
    """Check every request's size limits before anything else reads it; drop what it leaves unread."""
    app.before_request(check_request)
    app.after_request(_drain_unread_body)
