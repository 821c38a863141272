"""gunicorn settings for `make run`; any of them can be overridden with GUNICORN_CMD_ARGS."""

import json
import os

from gunicorn import util

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '4100')}"
# One process by default: rate limits then live in memory. With APIFRAME_RATELIMIT_STORAGE_URI
# set to redis://..., WEB_CONCURRENCY can run several processes that share the limits.
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
timeout = 60
graceful_timeout = 20
accesslog = "-"
control_socket_disable = True  # no runtime control interface; servers on one machine stay independent
# Above the app's own limits (request_limits.py: 4096-byte targets, 8192-byte headers), so the app answers
# those with its JSON 414 and 431; gunicorn only refuses what is beyond these, still in JSON (below).
limit_request_line = 8190  # gunicorn's maximum
limit_request_field_size = 65536

_HTTP_ERROR_CODES = {400: "VALIDATION_ERROR", 403: "FORBIDDEN", 414: "URI_TOO_LONG", 431: "HEADER_TOO_LARGE"}


def _write_json_error(sock, status_int, reason, mesg):
    """gunicorn's answer to a request it cannot parse, in the service's JSON error format."""
    code = _HTTP_ERROR_CODES.get(status_int, reason.upper().replace(" ", "_"))
    body = json.dumps({"success": False, "error": {"code": code, "message": f"{reason}: {mesg}"}})
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body.encode())}\r\n\r\n"
    )
    util.write_nonblock(sock, (head + body).encode("latin-1", "replace"))


util.write_error = _write_json_error  # gunicorn's workers call util.write_error for unparseable requests


def worker_exit(server, worker):
    """Hand this process's running jobs and webhook deliveries back before the interpreter shuts down."""
    import webhooks
    import workers

    extensions = getattr(getattr(worker, "wsgi", None), "extensions", {})
    pool = extensions.get(workers.EXTENSION)
    if pool is not None:
        pool.stop(wait=False)
    sender = extensions.get(webhooks.EXTENSION)
    if sender is not None:
        sender.stop()
