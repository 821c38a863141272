"""The application factory: ``gunicorn 'app:create_app()'``."""

from __future__ import annotations

import atexit
import logging
from collections.abc import Mapping
from typing import Any

import click
from flask import Flask, current_app, request

import api
import auth
import cli
import compat
import config
import console
import docs
import errors
import health
import models
import ratelimit
import request_limits
import storage
import webhooks
from providers import Providers
from workers import JobPool


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings, database, API, console, docs, limits, CLI, workers and webhook sender."""
    app = Flask(__name__)
    app.config.from_mapping(config.load(test_config))
    app.json.sort_keys = False  # objects keep the reference's field order (id, type, status, ...)
    _configure_logging(app)

    models.init_database(app.config["DATABASE_URL"], app.config["DATA_DIR"])
    app.before_request(_open_connection)
    app.teardown_request(_close_connection)

    errors.init_app(app)
    request_limits.init_app(app)
    compat.init_app(app)
    app.before_request(_authenticate_api)  # before the limiter's hook, which needs the key
    ratelimit.init_app(app, api.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(storage.bp)
    health.init_app(app)
    console.init_app(app, api.bp)
    app.register_blueprint(docs.bp)
    cli.init_app(app)

    app.extensions["apiframe.providers"] = Providers(app.config)
    pool = JobPool(app)
    app.extensions["apiframe.pool"] = pool
    sender = webhooks.init_app(app)
    if app.config["START_WORKERS"]:
        if click.get_current_context(silent=True) is None:
            # serving: start now, so jobs and webhooks left by a previous run resume at once
            pool.start()
            sender.start()
        app.before_request(_start_background_once)  # under `flask run`, start with the first request
        atexit.register(pool.stop, wait=False)
        atexit.register(sender.stop)
    return app


def _configure_logging(app: Flask) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _open_connection() -> None:
    if request.blueprint != health.bp.name:  # /healthz reports a database that will not connect
        models.db.connect(reuse_if_open=True)


def _close_connection(_exc: BaseException | None) -> None:
    if not models.db.is_closed():
        models.db.close()


def _authenticate_api() -> None:
    if request.blueprint == api.bp.name:
        auth.authenticate()


def _start_background_once() -> None:
    for service in (current_app.extensions["apiframe.pool"], current_app.extensions[webhooks.EXTENSION]):
        if not service.started:
            service.start()
