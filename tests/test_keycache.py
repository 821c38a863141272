"""Live keys kept between requests (keycache.py): read once, and forgotten at once wherever they change."""

from __future__ import annotations

import pytest
import requests

import accounts
import auth
import keycache
import operations
import ratelimit
from conftest import wait_until
from models import Account
from servers import Server, cli, environment, free_port


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The key hashes authentication reads from the database, in order."""
    seen: list[str] = []
    read = auth._read_key

    def counting(key_hash: str):
        seen.append(key_hash)
        return read(key_hash)

    monkeypatch.setattr(auth, "_read_key", counting)
    return seen


def test_a_live_key_is_read_once_and_a_revoked_one_stops_at_once(app, client, runner, make_account, reads):
    _, key = make_account(email="kept@example.com")
    headers = {"X-API-Key": key}
    for _ in range(3):
        assert client.get("/v1/jobs", headers=headers).status_code == 200
    assert reads == [auth.hash_key(key)]
    assert runner.invoke(args=["keys", "revoke", key[:16]]).exit_code == 0
    response = client.get("/v1/jobs", headers=headers)
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "UNAUTHORIZED"


def test_unknown_keys_are_read_every_time(client, reads):
    unknown = "ak_live_" + "x" * 43
    for _ in range(2):
        assert client.get("/v1/jobs", headers={"X-API-Key": unknown}).status_code == 401
    assert len(reads) == 2


def test_a_plan_change_reaches_a_kept_key_at_once(app, client, make_account, reads):
    account, key = make_account(plan="free")
    headers = {"X-API-Key": key}
    limit = client.get("/v1/jobs", headers=headers).headers["X-RateLimit-Limit"]
    assert limit == str(ratelimit.reads_per_minute("free"))
    with app.app_context():
        accounts.change_plan(Account.get_by_id(account.id), "scale")
    limit = client.get("/v1/jobs", headers=headers).headers["X-RateLimit-Limit"]
    assert limit == str(ratelimit.reads_per_minute("scale")) and len(reads) == 2


@pytest.mark.parametrize("path", ["/v1/account", "/account"])
def test_the_account_shows_its_balance_as_it_is_now(client, make_account, reads, path):
    _, key = make_account()
    headers = {"X-API-Key": key}

    def balance() -> int:
        body = client.get(path, headers=headers).get_json()
        return body["account"]["credits"]["remaining"] if "account" in body else body["credits"]

    before = balance()
    assert client.post("/v1/imagine", json={"prompt": "a lighthouse"}, headers=headers).status_code == 202
    assert balance() == before - operations.REGISTRY["imagine"].cost
    assert len(reads) == 1  # the key was kept all along; the account was read again for its figures


def test_the_kept_key_is_a_copy(app, client, make_account):
    _, key = make_account()
    with app.test_request_context(headers={"X-API-Key": key}):
        first = auth.find_key(key)
        first.account.plan = "changed here"
        first.name = "changed here"
        again = auth.find_key(key)
    assert again.account.plan == "scale" and again.name != "changed here"


def test_a_shared_counter_is_seen_by_every_mapping_of_its_file(tmp_path):
    one, two = keycache.SharedCounter(str(tmp_path / "keys")), keycache.SharedCounter(str(tmp_path / "keys"))
    assert one.value() == two.value() == 0
    one.add_one()
    two.add_one()
    assert one.value() == two.value() == 2


def test_a_key_revoked_by_the_cli_stops_at_once_on_a_running_server(tmp_path):
    """The server's processes keep the key; the CLI, another process, revokes it; the next request is 401."""
    env = environment(tmp_path / "data", free_port(), WEB_CONCURRENCY="2")
    key = cli(env, "users", "create", "ops@example.com", "--plan", "scale").strip().splitlines()[-1]
    server = Server(env, tmp_path / "server.log").start()
    try:
        with requests.Session() as first, requests.Session() as second:  # connections to either process
            for session in (first, second) * 3:
                assert session.get(f"{server.url}/v1/jobs", headers={"X-API-Key": key}, timeout=5).ok
            cli(env, "keys", "revoke", key[:16])
            for session in (first, second) * 3:
                response = session.get(f"{server.url}/v1/jobs", headers={"X-API-Key": key}, timeout=5)
                assert response.status_code == 401
    finally:
        server.stop()


def test_on_postgresql_a_key_revoked_in_another_process_stops_everywhere(settings, postgres_url, reads):
    from app import create_app
    from conftest import stop_background

    settings["DATABASE_URL"] = postgres_url
    application = create_app(settings)
    try:
        client = application.test_client()
        with application.app_context():
            _, key = accounts.create("pg@example.com", plan="scale")
        headers = {"X-API-Key": key}
        assert client.get("/v1/jobs", headers=headers).status_code == 200  # starts the listener
        listener = application.extensions[keycache.EXTENSION].generation._listener
        assert listener.listening.wait(10)
        before = len(reads)
        for _ in range(3):
            assert client.get("/v1/jobs", headers=headers).status_code == 200
        assert len(reads) == before + 1  # kept, now that the process hears of changes
        env = environment(settings["DATA_DIR"], free_port(), APIFRAME_DATABASE_URL=postgres_url)
        cli(env, "keys", "revoke", key[:16])
        wait_until(lambda: client.get("/v1/jobs", headers=headers).status_code == 401, 5, "the revocation")
    finally:
        stop_background(application)
