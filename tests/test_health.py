"""GET /healthz and `flask providers check`: database and provider state, for probes and operators."""

from __future__ import annotations

import pytest

import health
import providers
from fakes.sdwebui import FakeSdWebUI

OPERATIONS = set(providers.OPERATIONS)


@pytest.fixture
def sd():
    fake = FakeSdWebUI()
    yield fake
    fake.close()


def test_healthz_is_public_and_reports_database_and_providers(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = response.get_json()
    assert body["status"] == "ok" and body["database"]["ok"] is True
    assert body["rateLimits"] == {"ok": True, "detail": "counted in this process"}
    assert body["storage"] == {"ok": True, "detail": "answering"}
    assert set(body["providers"]) == OPERATIONS
    assert body["providers"]["imagine"] == {
        "name": "local",
        "ok": True,
        "detail": "runs in this process; nothing to reach",
    }


def test_healthz_is_outside_the_api_rate_limit(client):
    for _ in range(15):  # more than the free plan's 10 a minute
        response = client.get("/healthz")
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response.headers


def test_a_provider_that_does_not_answer_degrades_health(settings, request):
    settings.update(PROVIDER_UPSCALE="sdwebui", SDWEBUI_URL="http://127.0.0.1:9", PROVIDER_RETRIES=0)
    body = request.getfixturevalue("client").get("/healthz").get_json()
    assert body["status"] == "degraded" and body["database"]["ok"] is True
    upscale = body["providers"]["upscale"]
    assert upscale["name"] == "sdwebui" and upscale["ok"] is False and upscale["code"] == "PROVIDER_ERROR"
    assert "sdwebui provider could not be reached" in upscale["detail"]
    assert body["providers"]["imagine"]["ok"] is True


def test_an_operation_the_provider_cannot_do_is_not_supported_and_degrades_nothing(settings, sd, request):
    settings.update(PROVIDER="sdwebui", SDWEBUI_URL=sd.url)
    body = request.getfixturevalue("client").get("/healthz").get_json()
    assert body["status"] == "ok"
    assert body["providers"]["shorten"] == {
        "name": "sdwebui",
        "supported": False,
        "detail": "The configured provider (sdwebui) cannot do shorten jobs; "
        "set APIFRAME_PROVIDER_SHORTEN to a provider that can.",
    }
    assert body["providers"]["faceswap"]["supported"] is False and "ok" not in body["providers"]["faceswap"]
    assert body["providers"]["imagine"] == {"name": "sdwebui", "ok": True, "detail": "1 model(s) available"}


def test_provider_checks_are_cached(settings, sd, request):
    settings.update(PROVIDER="sdwebui", SDWEBUI_URL=sd.url)
    client = request.getfixturevalue("client")
    for _ in range(3):
        assert client.get("/healthz").get_json()["providers"]["describe"]["detail"] == "1 model(s) available"
    assert len(sd.calls("/sdapi/v1/sd-models")) == 1  # one check for all operations and all three probes
    request.getfixturevalue("app").extensions["apiframe.health"].max_age = 0
    client.get("/healthz")
    assert len(sd.calls("/sdapi/v1/sd-models")) == 2


def test_a_database_that_does_not_answer_is_503(client, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("database is down")

    monkeypatch.setattr(health.db.obj, "connect", broken)
    monkeypatch.setattr(health.db.obj, "execute_sql", broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "degraded" and body["database"] == {
        "ok": False,
        "detail": "the database did not answer",
    }


def test_providers_check_prints_one_line_per_operation(runner):
    result = runner.invoke(args=["providers", "check"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "imagine: local ok: runs in this process; nothing to reach"
    assert [line.split(":")[0] for line in lines] == list(providers.OPERATIONS)


def test_providers_check_asks_the_backend_with_credentials(settings, sd, request):
    sd.auth = ("user", "pw")
    settings.update(PROVIDER="sdwebui", SDWEBUI_URL=sd.url, SDWEBUI_AUTH="user:pw")
    result = request.getfixturevalue("runner").invoke(args=["providers", "check"])
    assert result.exit_code == 0, result.output
    assert "describe: sdwebui ok: 1 model(s) available" in result.output


def test_providers_check_says_what_the_provider_cannot_do_without_failing(settings, sd, request):
    settings.update(PROVIDER="sdwebui", SDWEBUI_URL=sd.url)
    result = request.getfixturevalue("runner").invoke(args=["providers", "check"])
    assert result.exit_code == 0, result.output
    assert "imagine: sdwebui ok: 1 model(s) available" in result.output
    assert (
        "shorten: sdwebui not supported: The configured provider (sdwebui) cannot do shorten jobs; "
        "set APIFRAME_PROVIDER_SHORTEN to a provider that can." in result.output
    )
    assert "faceswap: sdwebui not supported: " in result.output


def test_providers_check_fails_when_a_backend_refuses(settings, sd, request):
    sd.auth = ("user", "pw")
    settings.update(PROVIDER_DESCRIBE="sdwebui", SDWEBUI_URL=sd.url, SDWEBUI_AUTH="user:wrong-pw")
    result = request.getfixturevalue("runner").invoke(args=["providers", "check"])
    assert result.exit_code == 1
    assert (
        "describe: sdwebui FAILED: The sdwebui provider did not accept the configured credentials"
        in result.output
    )
    assert "imagine: local ok" in result.output and "wrong-pw" not in result.output
