"""The factory, settings, and the JSON error format for failures outside the views."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from peewee import OperationalError, PostgresqlDatabase, SqliteDatabase

import config
import errors
import models
from app import create_app
from conftest import Api, stop_background
from servers import free_port
from test_console import PASSWORD, Console


def test_factory_honours_test_config(app, tmp_path):
    assert app.config["DATA_DIR"] == str(tmp_path / "data")
    assert app.config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'data' / 'apiframe.db'}"
    assert app.config["PUBLIC_URL"] == "http://images.test"
    assert (tmp_path / "data" / "apiframe.db").exists()


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PORT", "5123")
    monkeypatch.setenv("APIFRAME_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("APIFRAME_WORKERS", "3")
    monkeypatch.setenv("APIFRAME_JOB_TIMEOUT", "42")
    monkeypatch.setenv("APIFRAME_ALLOW_SIGNUP", "false")
    monkeypatch.setenv("APIFRAME_RATELIMIT_STORAGE_URI", "memory://")
    settings = config.load()
    assert settings["PORT"] == 5123
    assert settings["PUBLIC_URL"] == "http://localhost:5123"
    assert settings["WORKERS"] == 3
    assert settings["JOB_TIMEOUT"] == 42.0
    assert settings["ALLOW_SIGNUP"] is False
    assert settings["DATA_DIR"] == str(tmp_path / "env-data")


def test_the_production_template_closes_signup_and_self_upgrade(monkeypatch, tmp_path):
    """On a public deployment, open signup and self-upgrade would hand anyone the scale plan's credits."""
    template = Path(__file__).resolve().parent.parent / "deploy" / "apiframe.env"
    for line in template.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            variable, _, value = line.partition("=")
            monkeypatch.setenv(variable, value)
    settings = config.load({"DATA_DIR": str(tmp_path)})
    assert settings["ALLOW_SIGNUP"] is False and settings["ALLOW_SELF_UPGRADE"] is False


def test_bad_setting_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("APIFRAME_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("APIFRAME_ALLOW_PRIVATE_URLS", "perhaps")
    with pytest.raises(ValueError, match="APIFRAME_ALLOW_PRIVATE_URLS"):
        config.load()


def test_an_unknown_midjourney_proxy_flavor_stops_start_up(monkeypatch, tmp_path):
    monkeypatch.setenv("APIFRAME_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("APIFRAME_MJPROXY_FLAVOR", "TrueAI")
    assert config.load()["MJPROXY_FLAVOR"] == "trueai"
    monkeypatch.setenv("APIFRAME_MJPROXY_FLAVOR", "plus")
    with pytest.raises(ValueError, match="APIFRAME_MJPROXY_FLAVOR must be one of auto, trueai, novicezk"):
        config.load()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("APIFRAME_DISPATCH_INTERVAL", "0", "APIFRAME_DISPATCH_INTERVAL must be at least 0.01, got 0.0"),
        ("APIFRAME_DISPATCH_INTERVAL", "-1", "APIFRAME_DISPATCH_INTERVAL must be at least 0.01, got -1.0"),
        ("APIFRAME_JOB_LEASE", "0", "APIFRAME_JOB_LEASE must be at least 1, got 0.0"),
        ("APIFRAME_JOB_TIMEOUT", "-5", "APIFRAME_JOB_TIMEOUT must be more than 0, got -5.0"),
        ("APIFRAME_JOB_TIMEOUT", "nan", "APIFRAME_JOB_TIMEOUT must be more than 0, got nan"),
        ("APIFRAME_JOB_TIMEOUT", "inf", "APIFRAME_JOB_TIMEOUT must be more than 0, got inf"),
        ("APIFRAME_EVENT_HEARTBEAT", "0", "APIFRAME_EVENT_HEARTBEAT must be at least 0.1, got 0.0"),
        ("APIFRAME_PROVIDER_RETRIES", "-1", "APIFRAME_PROVIDER_RETRIES must not be negative, got -1"),
        ("APIFRAME_PROVIDER_CONNECT_TIMEOUT", "-1", "APIFRAME_PROVIDER_CONNECT_TIMEOUT must be more than 0"),
        ("APIFRAME_PROVIDER_BACKOFF", "-0.5", "APIFRAME_PROVIDER_BACKOFF must not be negative"),
        ("APIFRAME_PROVIDER_MAX_BYTES", "0", "APIFRAME_PROVIDER_MAX_BYTES must be at least 1, got 0"),
        ("APIFRAME_FETCH_MAX_BYTES", "0", "APIFRAME_FETCH_MAX_BYTES must be at least 1"),
        ("APIFRAME_FETCH_TIMEOUT", "0", "APIFRAME_FETCH_TIMEOUT must be more than 0"),
        ("APIFRAME_MAX_IMAGE_PIXELS", "-1", "APIFRAME_MAX_IMAGE_PIXELS must be at least 1"),
        ("APIFRAME_SYNC_WAIT", "0", "APIFRAME_SYNC_WAIT must be more than 0"),
        ("APIFRAME_UPLOAD_MAX_BYTES", "0", "APIFRAME_UPLOAD_MAX_BYTES must be at least 1"),
        ("APIFRAME_EVENT_STREAMS", "-1", "APIFRAME_EVENT_STREAMS must not be negative"),
        ("APIFRAME_EVENT_STREAMS_PER_KEY", "-1", "APIFRAME_EVENT_STREAMS_PER_KEY must not be negative"),
        ("APIFRAME_EVENT_STREAM_SECONDS", "0", "APIFRAME_EVENT_STREAM_SECONDS must be more than 0"),
        ("APIFRAME_HEALTH_CACHE_SECONDS", "-1", "APIFRAME_HEALTH_CACHE_SECONDS must not be negative"),
        ("APIFRAME_LOCAL_LATENCY", "-1", "APIFRAME_LOCAL_LATENCY must not be negative"),
        ("APIFRAME_LOCAL_LATENCY", "nan", "APIFRAME_LOCAL_LATENCY must not be negative, got nan"),
        (
            "APIFRAME_SDWEBUI_DENOISING_STRENGTH",
            "1.5",
            "APIFRAME_SDWEBUI_DENOISING_STRENGTH must be from 0 to 1, got 1.5",
        ),
        ("APIFRAME_SDWEBUI_POLL_INTERVAL", "0", "APIFRAME_SDWEBUI_POLL_INTERVAL must be at least 0.01"),
        ("PORT", "0", "PORT must be from 1 to 65535, got 0"),
    ],
)
def test_a_number_out_of_its_range_stops_start_up_naming_the_variable_and_the_range(
    monkeypatch, tmp_path, variable, value, message
):
    monkeypatch.setenv("APIFRAME_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError) as failure:
        config.load()
    assert str(failure.value).startswith(message)


def test_every_numeric_setting_has_a_range_and_its_default_is_in_it():
    numeric = {key for key, (_, parse) in config.ENVIRONMENT.items() if parse in (int, float)}
    assert numeric == set(config.RANGES)
    for key, allowed in config.RANGES.items():
        assert config.DEFAULTS[key] is None or allowed.allows(config.DEFAULTS[key]), key


def test_the_lowest_values_a_range_allows_are_taken(monkeypatch, tmp_path):
    monkeypatch.setenv("APIFRAME_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("APIFRAME_PROVIDER_RETRIES", "0")
    monkeypatch.setenv("APIFRAME_LOCAL_LATENCY", "0")
    monkeypatch.setenv("APIFRAME_JOB_LEASE", "1")
    settings = config.load()
    assert (settings["PROVIDER_RETRIES"], settings["LOCAL_LATENCY"], settings["JOB_LEASE"]) == (0, 0.0, 1.0)


@pytest.mark.parametrize("variable", ["APIFRAME_PUBLIC_URL", "APIFRAME_PUBLIC_IMAGE_URL"])
@pytest.mark.parametrize("value", ["api.example.com", "ftp://api.example.com", "https://", "/images"])
def test_a_public_url_must_be_absolute_http(monkeypatch, tmp_path, variable, value):
    monkeypatch.setenv("APIFRAME_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError) as failure:
        config.load()
    assert str(failure.value) == (
        f"{variable} must be an absolute http:// or https:// URL with a host, got {value!r}"
    )


def test_public_urls_keep_their_path_without_the_trailing_slash(monkeypatch, tmp_path):
    monkeypatch.setenv("APIFRAME_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("APIFRAME_PUBLIC_URL", "https://api.example.com/apiframe/")
    monkeypatch.setenv("APIFRAME_PUBLIC_IMAGE_URL", "http://cdn.example.com:8080/images/")
    settings = config.load()
    assert settings["PUBLIC_URL"] == "https://api.example.com/apiframe"
    assert settings["PUBLIC_IMAGE_URL"] == "http://cdn.example.com:8080/images"


def test_secret_key_is_generated_once_and_kept(tmp_path):
    first = config.load({"DATA_DIR": str(tmp_path)})["SECRET_KEY"]
    second = config.load({"DATA_DIR": str(tmp_path)})["SECRET_KEY"]
    assert first == second and len(first) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_the_database_survives_a_new_app(settings, make_account, app):
    make_account(email="keep@example.com")
    # The new app reopens the database: no thread of the first may still be using a connection then
    # (the webhook sender's was once closed under it, and the process crashed).
    stop_background(app)
    again = create_app(settings)
    try:
        with again.app_context():
            import accounts

            assert accounts.find_by_email("keep@example.com") is not None
    finally:
        stop_background(again)


def _assert_error(response, status, code):
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]["message"]


def test_unknown_route_is_json_404(client):
    _assert_error(client.get("/v1/nothing-here"), 404, "NOT_FOUND")
    _assert_error(client.get("/no/such/page"), 404, "NOT_FOUND")


def test_wrong_method_is_json_405_with_allow(api):
    response = api.get("/v1/imagine")
    message = _assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in response.headers["Allow"]
    assert "POST" in message
    _assert_error(api.client.delete("/v1/account", headers={"X-API-Key": api.key}), 405, "METHOD_NOT_ALLOWED")


def test_wrong_method_on_a_path_no_route_takes_is_404(client):
    # An id past the int converter's maximum: the POST route does not take the path either.
    too_big = "/console/keys/99999999999/revoke"
    for response in (client.get(too_big), client.post(too_big)):
        assert response.status_code == 404 and response.mimetype == "text/html"  # the console's page
        assert "Allow" not in response.headers
    in_range = client.get("/console/keys/5/revoke")  # the route exists for POST
    assert in_range.status_code == 405 and in_range.headers["Allow"]


def test_no_answer_may_be_sniffed_as_another_type(api):
    for path in ("/v1/account", "/v1/nothing-here", "/docs", "/openapi.json", "/static/console.js"):
        assert api.get(path).headers["X-Content-Type-Options"] == "nosniff", path
    script = api.get("/static/console.js")  # served with the type scripts need, and still cacheable
    assert script.mimetype.endswith("javascript") and "no-store" not in str(script.cache_control)


def test_oversized_body_is_json_413(api):
    response = api.post(
        "/v1/imagine",
        data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    _assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_malformed_json_is_a_validation_error(api):
    response = api.post("/v1/imagine", data=b'{"prompt": "x",', headers={"Content-Type": "application/json"})
    message = _assert_error(response, 400, "VALIDATION_ERROR")
    assert "not valid JSON" in message


def test_wrong_content_type_is_a_validation_error(api):
    response = api.post(
        "/v1/imagine", data="prompt=a+cat", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    message = _assert_error(response, 400, "VALIDATION_ERROR")
    assert "Content-Type: application/json" in message


def test_json_without_content_type_header_is_accepted(api):
    response = api.post("/v1/imagine", data=b'{"prompt": "a cat"}', headers={"Content-Type": "text/plain"})
    assert response.status_code == 202


def test_body_must_be_an_object(api):
    message = _assert_error(api.post("/v1/imagine", json=["a cat"]), 400, "VALIDATION_ERROR")
    assert "JSON object" in message


def test_internal_errors_are_json_without_traceback(app, api, monkeypatch):
    import schemas

    def explode(*_args, **_kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(schemas, "dump_account", explode)
    response = api.get("/v1/account")
    message = _assert_error(response, 500, "INTERNAL_ERROR")
    assert "secret internals" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
    assert message


def test_a_database_that_cannot_be_used_is_a_503_with_retry_after_in_each_family(
    on_postgres, app, client, make_account, refusing, caplog, monkeypatch
):
    monkeypatch.setattr(errors, "_outages", errors._Outages())  # none logged yet in this process
    _, key = make_account("scale", email="down@example.com", password=PASSWORD)
    console = Console(client)
    assert console.login("down@example.com").status_code == 302
    refusing()
    headers, cat = {"X-API-Key": key}, {"prompt": "a cat"}
    for response, code in [
        (client.post("/v1/imagine", json=cat, headers=headers), "DATABASE_UNAVAILABLE"),
        (client.get("/v1/jobs", headers=headers), "DATABASE_UNAVAILABLE"),
        (client.get("/account", headers=headers), "DATABASE_UNAVAILABLE"),  # the original API
        (client.post("/v1/images/generations", json=cat, headers=headers), "database_unavailable"),
    ]:
        assert response.status_code == 503 and response.headers["Retry-After"] == "5", response.data
        assert response.is_json and response.get_json()["error"]["code"] == code
    page = client.get("/console/")
    assert page.status_code == 503 and page.headers["Retry-After"] == "5"
    assert "could not be used just now" in page.get_data(as_text=True)
    assert "Traceback" not in caplog.text and "unhandled error" not in caplog.text  # a warning, not a fault
    # one line for the first, not one per request: an outage under load would flood the log
    assert caplog.text.count("could not use the database") == 1
    assert "1 request(s) could not use the database" in caplog.text
    refusing(False)
    assert client.get("/v1/jobs", headers=headers).status_code == 200


def test_what_needs_no_database_is_served_while_it_cannot_be_used(
    on_postgres, app, client, make_account, refusing
):
    _, key = make_account("scale", email="stored@example.com", password=PASSWORD)
    api = Api(client, key)
    assert Console(client).login("stored@example.com").status_code == 302
    job = api.wait(api.post("/v1/imagine", json={"prompt": "a cat"}).get_json()["job"]["id"])
    image = urlsplit(job["imageUrls"][0]).path
    thumbnail = image.replace(f"/{job['id']}/", f"/{job['id']}/thumbs/")
    assert api.get(thumbnail).status_code == 200  # made and kept
    refusing()
    for path in (image, thumbnail, "/static/console.css", "/docs", "/openapi.json"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.data[:200])
    assert client.get("/no-such-path").get_json()["error"]["code"] == "NOT_FOUND"
    redirect = client.get("/console")
    assert redirect.status_code == 308 and redirect.headers["Location"].endswith("/console/")
    page = client.get("/console", follow_redirects=True)  # the console's own page, not the API's JSON
    assert page.status_code == 503 and page.mimetype == "text/html"
    assert "could not be used just now" in page.get_data(as_text=True)
    assert api.get("/v1/jobs").get_json()["error"]["code"] == "DATABASE_UNAVAILABLE"


def test_a_stop_while_the_database_cannot_be_used_leaves_the_leases_to_run_out(
    on_postgres, app, refusing, caplog
):
    refusing()
    stop_background(app)  # no exception: the work's leases run out by themselves
    assert "leases left to run out at stop: database unavailable" in caplog.text


def test_a_locked_sqlite_database_is_unavailable_and_a_faulty_statement_is_not(tmp_path):
    path = str(tmp_path / "locked.db")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    database = SqliteDatabase(path, timeout=0)
    with pytest.raises(OperationalError) as locked:
        database.execute_sql("SELECT * FROM t")
    holder.rollback()
    with pytest.raises(OperationalError) as faulty:
        database.execute_sql("SELECT * FROM no_such_table")
    assert models.unavailable(locked.value) and not models.unavailable(faulty.value)


def test_a_transaction_that_cannot_connect_is_unavailable():
    database = PostgresqlDatabase("apiframe", host="127.0.0.1", port=free_port(), user="postgres")
    with pytest.raises(OperationalError) as refused:
        with database.atomic():  # peewee wraps the connect's error, then begin's wraps that again
            pass
    assert models.unavailable(refused.value)
