"""The application factory: ``gunicorn 'app:create_app()'``."""

from __future__ import annotations

import atexit
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import click
from flask import Flask, Response, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

import allocator
import api
import auth
import cli
import config
import console
import docs
import errors
import events
import health
import keycache
import models
import ratelimit
import request_limits
import roles
import storage
import wakeup
import webhooks
import workers
from providers import EXTENSION as PROVIDERS
from providers import Providers


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings, database, API, console, docs, limits, CLI, workers and webhook sender."""
    allocator.configure()  # before any thread of the app's starts
    app = App(__name__)
    with _settings_errors_shown_by_the_cli():
        app.config.from_mapping(config.load(test_config))
        app.extensions[PROVIDERS] = Providers(app.config)
    app.json.sort_keys = False  # objects keep the reference's field order (id, type, status, ...)
    app.session_interface = CookielessSessions()
    _configure_logging(app)

    models.init_database(app.config["DATABASE_URL"], app.config["DATA_DIR"])
    atexit.register(keycache.init_app(app).stop)
    announcer = wakeup.init_app(app)
    if announcer is not None:
        atexit.register(announcer.stop)
    app.teardown_request(_close_connection)  # a request connects at its first query (peewee's autoconnect)

    errors.init_app(app)
    app.after_request(_no_sniffing)
    request_limits.init_app(app)
    app.before_request(_authenticate_api)  # before the limiter's hook, which needs the key
    ratelimit.init_app(app, api.bp)
    api.init_app(app)
    storage.init_app(app)
    health.init_app(app)
    console.init_app(app)
    app.register_blueprint(docs.bp)
    cli.init_app(app)
    roles.init_app(app)

    pool = workers.init_app(app)
    sender = webhooks.init_app(app)
    atexit.register(events.init_app(app).stop)
    if roles.runs_background(app):
        if click.get_current_context(silent=True) is None:
            # serving: start now, so jobs and webhooks left by a previous run resume at once
            pool.start()
            sender.start()
        app.before_request(_start_background_once)  # under `flask run`, start with the first request
        atexit.register(pool.stop, wait=False)
        atexit.register(sender.stop)
    return app


def check_settings() -> None:
    """Check the environment's settings and the providers they choose, starting nothing.

    gunicorn's master calls it before it starts any process (gunicorn.conf.py): a bad setting raises
    ValueError naming the variable, rather than failing each process after "ready" is said.
    """
    Providers(config.load())


@contextlib.contextmanager
def _settings_errors_shown_by_the_cli() -> Iterator[None]:
    """Under the flask CLI, a bad setting is its one-line message and exit status 1, not a traceback."""
    try:
        yield
    except ValueError as exc:
        if click.get_current_context(silent=True) is None:
            raise
        raise click.ClickException(str(exc)) from None


class App(Flask):
    """Flask, remembering which hooks and views are plain functions.

    Flask asks ``inspect`` whether each one is a coroutine function on every call: a dozen times per
    request, 3% of a job poll. The project has no ``async def`` views; the answer cannot change.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            return self._sync[func]
        except KeyError:
            synced = self._sync[func] = super().ensure_sync(func)
            return synced


class CookielessSessions(SecureCookieSessionInterface):
    """Flask's cookie sessions, with no signing set up for a request that brings no session cookie.

    Flask opens a session on every request; API clients send none, so each of their requests built
    a signing serializer (and parsed the absent cookies) for nothing.
    """

    def open_session(self, app: Flask, request: Any) -> SecureCookieSession | None:
        if app.secret_key and (
            "HTTP_COOKIE" not in request.environ or not request.cookies.get(self.get_cookie_name(app))
        ):
            return self.session_class()
        return super().open_session(app, request)


def _configure_logging(app: Flask) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _close_connection(_exc: BaseException | None) -> None:
    if not models.db.is_closed():
        models.db.close()


def _no_sniffing(response: Response) -> Response:
    """Browsers take every answer as the type it declares: an image, an error or a job's prompt is
    never run as a script or shown as a page, whatever its bytes look like."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _authenticate_api() -> None:
    if api.bp.name in request.blueprints and request.method != "OPTIONS":  # OPTIONS tells only the methods
        auth.authenticate()


def _start_background_once() -> None:
    for service in (workers.pool(), webhooks.sender()):
        if not service.started:
            service.start()
