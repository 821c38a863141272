"""API keys: format, hashed storage, and the 401s."""

from __future__ import annotations

import re

from auth import hash_key
from models import ApiKey


def test_key_format_and_hashed_storage(app, make_account):
    account, key = make_account()
    assert re.fullmatch(r"ak_live_[A-Za-z0-9_-]{32,}", key)
    with app.app_context():
        row = ApiKey.get(ApiKey.account == account.id)
        assert row.key_hash == hash_key(key) and key not in (row.key_hash, row.prefix)
        assert key.startswith(row.prefix)


def test_missing_key_is_401(client):
    response = client.get("/v1/account")
    assert response.status_code == 401
    error = response.get_json()["error"]
    assert error["code"] == "UNAUTHORIZED" and "X-API-Key" in error["message"]


def test_wrong_key_is_401(client):
    for key in ("ak_live_" + "x" * 43, "nonsense", ""):
        response = client.get("/v1/account", headers={"X-API-Key": key})
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "UNAUTHORIZED"


def test_every_api_route_requires_a_key(client):
    routes = [
        ("post", "/v1/imagine"),
        ("post", "/v1/describe"),
        ("post", "/v1/upscale"),
        ("post", "/v1/blend"),
        ("post", "/v1/variation"),
        ("get", "/v1/jobs"),
        ("get", "/v1/jobs/a1b2c3d4-e5f6-7890-abcd-ef1234567890"),
        ("post", "/v1/jobs/a1b2c3d4-e5f6-7890-abcd-ef1234567890/cancel"),
        ("get", "/v1/account"),
        ("post", "/imagine"),
        ("post", "/api/v1/blend"),
        ("get", "/fetch/a1b2c3d4-e5f6-7890-abcd-ef1234567890"),
    ]
    for method, path in routes:
        response = getattr(client, method)(path, json={})
        assert response.status_code == 401, path


def test_revoked_key_is_401_and_others_keep_working(app, client, runner, make_account):
    account, key = make_account(email="two@example.com")
    second = runner.invoke(args=["keys", "create", "two@example.com"]).output.strip().splitlines()[-1]
    assert client.get("/v1/account", headers={"X-API-Key": second}).status_code == 200
    result = runner.invoke(args=["keys", "revoke", key[:16]])
    assert result.exit_code == 0, result.output
    assert client.get("/v1/account", headers={"X-API-Key": key}).status_code == 401
    assert client.get("/v1/account", headers={"X-API-Key": second}).status_code == 200


def test_last_used_is_recorded(app, api):
    assert api.get("/v1/account").status_code == 200
    with app.app_context():
        assert ApiKey.get(ApiKey.key_hash == hash_key(api.key)).last_used_at is not None
