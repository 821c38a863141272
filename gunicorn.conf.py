"""gunicorn settings for `make run`; any of them can be overridden with GUNICORN_CMD_ARGS."""

import errno
import json
import os
import socket

from gunicorn import util

from config import DEFAULTS

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '4100')}"
# One process by default: rate limits then live in memory. With APIFRAME_RATELIMIT_STORAGE_URI
# set to redis://..., WEB_CONCURRENCY can run several processes that share the limits.
# gunicorn itself refuses a WEB_CONCURRENCY that is no number or negative; on_starting refuses 0.
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
# Several processes: each listens on a socket of its own (SO_REUSEPORT) and the kernel spreads new
# connections over them. On one shared socket, the process that happens to be waiting in accept()
# takes every connection a burst of keep-alive clients opens, and the others sit idle.
reuse_port = workers > 1
worker_class = "gthread"
# Each open job event stream (SSE) holds a thread; the app caps them at APIFRAME_EVENT_STREAMS per
# process, and those threads come on top of GUNICORN_THREADS, which stay free for the rest of the API.
# A value that is no count is left to the service's own check (on_starting) to refuse by name.
_event_streams = os.environ.get("APIFRAME_EVENT_STREAMS", "")
_event_streams = int(_event_streams) if _event_streams.strip().isdigit() else DEFAULTS["EVENT_STREAMS"]
threads = int(os.environ.get("GUNICORN_THREADS", "16")) + _event_streams
timeout = 60
# An idle keep-alive connection stays open longer than nginx keeps its upstream ones (keepalive_timeout 4s,
# deploy/nginx/apiframe.conf): a server that closes first races a request sent on the connection as it
# closes, and nginx answers a POST with 502 rather than send it again (it may have been received). Not much
# longer: gthread gives a new connection that has sent nothing the same time, each holding one of the
# worker's connection slots, so a long one lets a few silent clients shut a directly exposed server out.
keepalive = 5
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
        f"X-Content-Type-Options: nosniff\r\nContent-Length: {len(body.encode())}\r\n\r\n"
    )
    util.write_nonblock(sock, (head + body).encode("latin-1", "replace"))


util.write_error = _write_json_error  # gunicorn's workers call util.write_error for unparseable requests


def on_starting(server):
    """Stop at once, with a one-line message, on a bad setting: before anything listens or says "ready"."""
    if server.cfg.workers < 1:  # gunicorn would start, serve nothing, and wait
        raise RuntimeError(f"WEB_CONCURRENCY must be at least 1, got {server.cfg.workers}")
    if (getattr(server.app, "app_uri", None) or "").startswith("app:"):  # the service, not the bench's floor
        from app import check_settings

        try:
            check_settings()
        except ValueError as exc:  # gunicorn prints a RuntimeError's message alone and exits with status 1
            raise RuntimeError(str(exc)) from None
    if not (server.master_pid or os.environ.get("LISTEN_FDS")):  # not handed sockets by an upgrade or systemd
        for address in server.cfg.address:
            _refuse_if_taken(address)


def _refuse_if_taken(address):
    """Refuse an address that something else listens on, as a bind without SO_REUSEPORT would.

    With reuse_port, another server's SO_REUSEPORT sockets on the same port take no offence: the kernel
    would share the connections between the two servers (an old one, another data directory's) in silence.
    """
    if not isinstance(address, tuple):  # a unix socket: gunicorn's own bind refuses one in use
        return
    family = socket.AF_INET6 if util.is_ipv6(address[0]) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn: TIME_WAIT is no listener
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            host, port = address[:2]
            raise RuntimeError(
                f"{host}:{port} is already in use, by another server or an older one still running; "
                "stop it, or set another PORT"
            ) from None


def when_ready(server):
    """Say where the console is and how to get a first API key, once the server is listening."""
    port = os.environ.get("PORT", "4100")
    base = (os.environ.get("APIFRAME_PUBLIC_URL") or f"http://localhost:{port}").rstrip("/")
    print(
        f"\nAPIFrame is ready at {base}\n"
        f"  Web console: {base}/signup (sign up, then copy your API key), API reference: {base}/docs\n"
        "  Or create an account and its first API key from another shell (the key is the last line):\n"
        "    .venv/bin/flask --app app users create you@example.com --name 'Your Name'\n",
        flush=True,
    )


def post_worker_init(worker):
    """On a graceful stop, end this process's job event streams and synchronous waits at once, rather
    than wait them out, and claim no more jobs or webhook deliveries (those running go on until
    worker_exit hands them back)."""
    import signal
    import sys

    events = sys.modules.get("events")  # the service's app imported it (on_starting did, in the master);
    if events is None:  # another app (the bench's floor) runs with none of the service's modules loaded
        return
    waits, webhooks, workers = sys.modules["waits"], sys.modules["webhooks"], sys.modules["workers"]
    graceful = signal.getsignal(signal.SIGTERM)

    def stop(signum, frame):
        extensions = getattr(worker.wsgi, "extensions", {})  # empty in another app (the bench's floor)
        for dispatcher in (extensions.get(workers.EXTENSION), extensions.get(webhooks.EXTENSION)):
            if dispatcher is not None:
                dispatcher.drain()  # work it would start now would only be interrupted and run again
        watcher = extensions.get(events.EXTENSION)
        if watcher is not None:
            watcher.stop()  # each stream ends; clients reconnect (Last-Event-ID) to another process
        waiting = extensions.get(waits.EXTENSION)
        if waiting is not None:
            waiting.stop()  # each waiting OpenAI request answers 503, which its SDK sends again
        graceful(signum, frame)

    signal.signal(signal.SIGTERM, stop)


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
