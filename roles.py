"""Process roles: web (HTTP), worker (job pool and webhook sender), or both; and web nodes behind a proxy.

``make run`` is one process doing both. With ``APIFRAME_ROLE=web`` a served process runs no pool, and
``flask --app app worker`` runs the pool and the webhook sender with no HTTP server until SIGTERM or
SIGINT, handing its running jobs back to the other workers when it stops.
"""

from __future__ import annotations

import signal
import threading

import click
from flask import Flask, current_app
from werkzeug.middleware.proxy_fix import ProxyFix

import storage
import webhooks

POOL = "apiframe.pool"


def runs_background(app: Flask) -> bool:
    """Whether a served process of ``app`` runs the job pool and webhook sender."""
    return bool(app.config["START_WORKERS"]) and app.config["ROLE"] == "all"


def background_services(app: Flask) -> list:
    """The job pool and the webhook sender of ``app``."""
    return [app.extensions[POOL], app.extensions[webhooks.EXTENSION]]


@click.command("worker")
def worker() -> None:
    """Run the job pool and the webhook sender, with no HTTP server, until SIGTERM or SIGINT."""
    app = current_app._get_current_object()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    services = background_services(app)
    for service in services:
        service.start()
    pool = app.extensions[POOL]
    click.echo(f"worker {pool.owner}: {pool.size} job threads; images in {storage.current().describe()}")
    while not stop.wait(1.0):
        pass
    click.echo(f"worker {pool.owner}: stopping; handing running jobs back")
    pool.stop(wait=False)
    for service in services[1:]:
        service.stop()


def init_app(app: Flask) -> None:
    """Add the worker command, and trust the X-Forwarded-* headers of APIFRAME_PROXY_FIX proxies."""
    app.cli.add_command(worker)
    proxies = int(app.config["PROXY_FIX"])
    if proxies:
        app.wsgi_app = ProxyFix(
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_port=proxies, x_prefix=proxies
        )
