"""Fixtures: an app per test on its own SQLite file, clients, accounts, and loopback servers."""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from werkzeug.serving import make_server

import accounts
from app import create_app
from fakes.proxy import FakeProxy
from servers import MotoS3


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: `make test` runs two processes (pytest-xdist), and long tests started last
    would leave one process working alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def settings(tmp_path) -> dict[str, Any]:
    """Test settings; a test may change them before asking for ``app``."""
    return {
        "DATA_DIR": str(tmp_path / "data"),
        "WORKERS": 2,
        "DISPATCH_INTERVAL": 0.05,
        "ALLOW_PRIVATE_URLS": True,  # tests serve their images on loopback
        "PUBLIC_URL": "http://images.test",
        "LOCAL_LATENCY": 0,
    }


def stop_background(application: Flask) -> None:
    """Stop an app's worker pool, webhook sender and event watcher: no thread outlives its test's database."""
    application.extensions["apiframe.pool"].stop(wait=False)
    application.extensions["apiframe.webhooks"].stop()
    application.extensions["apiframe.events"].stop()
    application.extensions["apiframe.keys"].stop()
    if application.extensions["apiframe.announcer"] is not None:
        application.extensions["apiframe.announcer"].stop()


@pytest.fixture
def app(settings) -> Iterator[Flask]:
    """The app, with its worker pool and webhook sender running."""
    application = create_app(settings)
    yield application
    stop_background(application)


@pytest.fixture
def client(app) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class Api:
    """A test client that sends an API key and knows how to wait for jobs."""

    def __init__(self, client: FlaskClient, key: str | None) -> None:
        self.client = client
        self.key = key

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        merged = {"X-API-Key": self.key} if self.key else {}
        merged.update(headers or {})
        return merged

    def get(self, path: str, **kwargs: Any):
        return self.client.get(path, headers=self._headers(kwargs.pop("headers", None)), **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any):
        return self.client.post(path, json=json, headers=self._headers(kwargs.pop("headers", None)), **kwargs)

    def submit(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.post(path, json=body)
        assert response.status_code == 202, response.get_json()
        return response.get_json()["job"]

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.get_json()
        return response.get_json()["job"]

    def wait(self, job_id: str, timeout: float = 20, until: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Poll until the job reaches one of ``until`` (default: any terminal status)."""
        until = until or ("succeeded", "failed", "timed_out", "cancelled")
        deadline = time.monotonic() + timeout
        interval = 0.02
        while True:
            job = self.job(job_id)
            if job["status"] in until:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")
            time.sleep(interval)
            interval = min(0.2, interval * 1.5)  # a slow (busy) machine must not poll past the rate limit

    def imagine(self, prompt: str = "a red fox in a snowy forest", **fields: Any) -> dict[str, Any]:
        job = self.submit("/v1/imagine", {"prompt": prompt, **fields})
        return self.wait(job["id"])


@pytest.fixture
def make_account(app):
    """Create accounts: ``make_account(plan="scale") -> (account, key)``."""
    counter = iter(range(1, 1000))

    def make(plan: str = "scale", email: str | None = None, **kwargs: Any):
        with app.app_context():
            return accounts.create(email or f"user{next(counter)}@example.com", plan=plan, **kwargs)

    return make


@pytest.fixture
def api(client, make_account) -> Api:
    """An Api client for a new account on the scale plan (300 requests/minute)."""
    _, key = make_account("scale")
    return Api(client, key)


def image_bytes(size=(320, 200), color=(200, 30, 40), image_format="PNG") -> bytes:
    """An encoded test image."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, image_format)
    return buffer.getvalue()


class FileServer:
    """A loopback HTTP server that serves registered byte strings, and records requests."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, str, bytes]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.path)
                status, content_type, body = server.files.get(self.path, (404, "text/plain", b"not found"))
                self.send_response(status)
                if status in (301, 302):
                    self.send_header("Location", body.decode())
                    body = b""
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add(self, path: str, body: bytes, content_type: str = "image/png", status: int = 200) -> str:
        self.files[path] = (status, content_type, body)
        return self.url(path)

    def redirect(self, path: str, location: str) -> str:
        self.files[path] = (302, "text/plain", location.encode())
        return self.url(path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def files() -> Iterator[FileServer]:
    """A loopback server for input images."""
    server = FileServer()
    yield server
    server.close()


@dataclass
class Delivery:
    """One request a Receiver got, and what it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int | None  # None: the connection was dropped without an answer

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A loopback webhook receiver: records every POST and answers from a script (then 200).

    ``answers`` holds the statuses to answer next, in order (``None`` drops the connection);
    while ``gate`` is cleared, requests wait at it; ``stop()`` takes the receiver down
    (connections are refused) and ``start()`` brings it back on the same port.
    """

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.arrived = 0  # requests received, including those still waiting at the gate
        self.answers: list[int | None] = []
        self.gate = threading.Event()
        self.gate.set()
        self.port = 0
        self.httpd: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()
        self.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.arrived += 1
                receiver.gate.wait(30)
                with receiver._lock:
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.deliveries.append(Delivery(self.path, dict(self.headers), body, status))
                if status is None:
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, count: int, timeout: float = 20) -> list[Delivery]:
        """Wait until ``count`` requests have arrived; returns them all."""
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.deliveries)} webhooks arrived, expected {count}")
            time.sleep(0.02)
        return list(self.deliveries)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on loopback."""
    server = Receiver()
    yield server
    server.gate.set()
    server.stop()


@pytest.fixture
def proxy(monkeypatch) -> Iterator[FakeProxy]:
    """A forward proxy, with the test's own proxy environment: none of the machine's proxy variables."""
    for name in [name for name in os.environ if name.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    fake = FakeProxy()
    yield fake
    fake.close()


def wait_until(
    check: Callable[[], Any], timeout: float = 20, what: str = "the condition", interval: float = 0.02
) -> Any:
    """Poll ``check`` every ``interval`` seconds until it returns something truthy; returns that."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return result


class LiveServer:
    """The app served over real HTTP on loopback, in a thread."""

    def __init__(self, app: Flask) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def live(settings) -> Iterator[tuple[Flask, LiveServer]]:
    """An app served on loopback, with PUBLIC_URL pointing at it (so its image URLs work)."""
    application = create_app(settings)
    server = LiveServer(application)
    application.config["PUBLIC_URL"] = server.url
    yield application, server
    server.close()
    stop_background(application)


POSTGRES = "postgresql://postgres@127.0.0.1:5432/{name}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test."""
    name = f"apiframe_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg2.connect(POSTGRES.format(name="test"))
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at 127.0.0.1:5432: {exc}")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    yield POSTGRES.format(name=name)
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        cursor.execute(f"DROP DATABASE {name}")
    admin.close()


@pytest.fixture
def on_postgres(settings, postgres_url) -> str:
    """Run the test's app on PostgreSQL (ask for it before ``app``); the database's URL."""
    settings["DATABASE_URL"] = postgres_url
    return postgres_url


@pytest.fixture
def refusing(postgres_url):
    """Make the database refuse every connection, as while it restarts, and end those it has."""
    admin = psycopg2.connect(POSTGRES.format(name="test"))
    admin.autocommit = True
    name = postgres_url.rsplit("/", 1)[1]

    def refuse(refused: bool = True) -> None:
        with admin.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {'false' if refused else 'true'}")
            if refused:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
                )

    yield refuse
    refuse(False)
    admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, settings) -> str:
    """Run the test on SQLite, then on PostgreSQL (ask for it before ``app``)."""
    if request.param == "postgresql":
        request.getfixturevalue("on_postgres")
    return request.param


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory) -> Iterator[MotoS3]:
    """One S3 endpoint on loopback for the whole run (each test makes its own bucket)."""
    server = MotoS3(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@dataclass
class Bucket:
    """A fresh bucket on the loopback S3 endpoint, and how to point the service at it."""

    endpoint: str
    name: str
    client: Any

    @property
    def storage_url(self) -> str:
        return f"s3://{self.name}/images"

    def keys(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in listed.get("Contents", ()))

    def env(self) -> dict[str, str]:
        """Settings for a server or CLI process that stores its images in this bucket."""
        return {
            **MotoS3.CREDENTIALS,
            "APIFRAME_STORAGE_URL": self.storage_url,
            "APIFRAME_S3_ENDPOINT_URL": self.endpoint,
        }


@pytest.fixture
def bucket(moto_s3, monkeypatch) -> Bucket:
    """A new, empty bucket; AWS credentials for it are in this process's environment."""
    import boto3

    for name, value in MotoS3.CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=moto_s3.url)
    name = f"apiframe-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return Bucket(moto_s3.url, name, client)
