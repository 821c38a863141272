"""gunicorn settings for `make run`; any of them can be overridden with GUNICORN_CMD_ARGS."""

import os

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
