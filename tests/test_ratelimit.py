"""Rate limits: per key, per minute: creates at the plan rate, reads in a larger bucket; headers; 429."""

from __future__ import annotations

import socket
import threading
import time
import types

import openai
import pytest
from openai import OpenAI

import accounts
import credits
import ratelimit
from config import PLANS
from conftest import Api, wait_until
from ratelimit import READS, reads_per_minute, requests_this_minute
from servers import free_port
from test_console import PASSWORD, Console


def _limit_headers(response) -> tuple[int, int, int]:
    headers = response.headers
    return (
        int(headers["X-RateLimit-Limit"]),
        int(headers["X-RateLimit-Remaining"]),
        int(headers["X-RateLimit-Reset"]),
    )


def test_free_plan_allows_10_creates_per_minute_then_429(client, make_account):
    _, key = make_account("free")
    api = Api(client, key)
    remaining = []
    for _ in range(10):
        response = api.post("/v1/imagine", json={})  # a bad body still counts: the limit comes first
        assert response.status_code == 400
        limit, left, reset = _limit_headers(response)
        assert limit == 10
        assert time.time() <= reset <= time.time() + 61
        assert "Retry-After" not in response.headers
        remaining.append(left)
    assert remaining == list(range(9, -1, -1))
    response = api.post("/v1/imagine", json={"prompt": "a fox"})
    assert response.status_code == 429
    error = response.get_json()["error"]
    assert error["code"] == "RATE_LIMITED" and "10 creates" in error["message"]
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert _limit_headers(response)[:2] == (10, 0)
    assert api.get("/v1/account").status_code == 200  # reading is another bucket


def test_retry_after_is_never_early(app, client, make_account, monkeypatch):
    clock = [1000.95]  # the window opens late in a second: it ends at 1060.95
    monkeypatch.setattr(ratelimit, "time", types.SimpleNamespace(time=lambda: clock[0], sleep=time.sleep))
    storage = app.extensions[ratelimit.EXTENSION].limiter.storage
    monkeypatch.setattr(storage, "get_expiry", lambda key: 1060.95)
    api = Api(client, make_account("free")[1])
    for _ in range(10):
        api.post("/v1/imagine", json={})
    clock[0] = 1001.1
    refused = api.post("/v1/imagine", json={})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"  # 59.85 s, rounded up
    clock[0] = 1060.5
    refused = api.post("/v1/imagine", json={})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"  # never 0 while refused


def test_only_a_rate_limit_429_says_when_to_retry(live):
    app, server = live
    with app.app_context():
        account, key = accounts.create("broke@example.com", plan="free")
        credits.grant(account.id, -48)  # 2 credits: not one image
    with pytest.raises(openai.RateLimitError) as caught:  # OpenAI's answer to an exhausted quota
        OpenAI(api_key=key, base_url=f"{server.url}/v1", max_retries=0).images.generate(prompt="a cat")
    assert caught.value.body["code"] == "insufficient_quota"
    assert "Retry-After" not in caught.value.response.headers  # waiting does not bring credits
    assert caught.value.response.headers["X-RateLimit-Remaining"] == "9"
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError):  # the SDK's own retries, then it gives up
        OpenAI(api_key=key, base_url=f"{server.url}/v1").images.generate(prompt="a cat")
    assert time.monotonic() - started < 10


def test_reads_have_a_larger_budget_of_their_own(client, make_account):
    _, key = make_account("free")
    api = Api(client, key)
    reads = reads_per_minute("free")
    assert reads == 120
    for number in range(reads):
        response = api.get("/v1/account")
        assert response.status_code == 200
        assert _limit_headers(response)[:2] == (reads, reads - number - 1)
    response = api.get("/v1/jobs")
    assert response.status_code == 429 and "Retry-After" in response.headers
    error = response.get_json()["error"]
    assert error["code"] == "RATE_LIMITED" and "120 reads" in error["message"]
    created = api.post("/v1/imagine", json={"prompt": "a fox"})
    assert created.status_code == 202 and _limit_headers(created)[:2] == (10, 9)


@pytest.mark.parametrize("plan", list(PLANS))
def test_each_plan_has_its_limits(client, make_account, plan):
    _, key = make_account(plan)
    api = Api(client, key)
    rate = PLANS[plan].requests_per_minute
    assert int(api.get("/v1/account").headers["X-RateLimit-Limit"]) == max(120, 10 * rate)
    assert int(api.post("/v1/imagine", json={}).headers["X-RateLimit-Limit"]) == rate


def test_headers_are_on_error_responses_too(api):
    for response in (
        api.post("/v1/imagine", json={}),
        api.get("/v1/jobs/a1b2c3d4-e5f6-7890-abcd-ef1234567890"),
        api.get("/v1/jobs/not-a-uuid"),
        api.post("/v1/imagine", data=b"{", headers={"Content-Type": "application/json"}),
    ):
        assert response.status_code in (400, 404)
        assert "X-RateLimit-Limit" in response.headers and "X-RateLimit-Remaining" in response.headers
        assert "X-RateLimit-Reset" in response.headers


def test_each_bucket_is_shared_by_its_endpoints_and_aliases(client, make_account):
    _, key = make_account("free")
    api = Api(client, key)
    creates = [
        api.post("/imagine", json={}),
        api.post("/api/v1/describe", json={}),
        api.post("/v1/upscale", json={}),
        api.post("/upscale-1x", json={}, headers={"Authorization": key}),
    ]
    assert [int(r.headers["X-RateLimit-Remaining"]) for r in creates] == [9, 8, 7, 6]
    reads = [
        api.get("/v1/account"),
        api.get("/v1/jobs"),
        api.get("/fetch/a1b2c3d4-e5f6-7890-abcd-ef1234567890"),
        api.post("/fetch", json={"task_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890"}),
        api.post("/v1/jobs/a1b2c3d4-e5f6-7890-abcd-ef1234567890/cancel"),
    ]
    assert [int(r.headers["X-RateLimit-Remaining"]) for r in reads] == [119, 118, 117, 116, 115]


def test_limits_are_per_key(client, make_account, runner):
    account, key = make_account("free")
    second = runner.invoke(args=["keys", "create", account.email]).output.strip().splitlines()[-1]
    first = Api(client, key)
    for _ in range(10):
        first.post("/v1/imagine", json={})
    assert first.post("/v1/imagine", json={}).status_code == 429
    assert Api(client, second).post("/v1/imagine", json={}).status_code == 400
    _, other_key = make_account("free")
    assert Api(client, other_key).post("/v1/imagine", json={}).status_code == 400


def test_the_headers_describe_the_account_limit_when_it_decides(app, client, make_account, runner):
    account, key = make_account("free")  # 10 creates a minute, for the key and for the account
    second = runner.invoke(args=["keys", "create", account.email]).output.strip().splitlines()[-1]
    with app.app_context():
        credits.grant(account.id, -50)  # no credits: each create is counted, then refused with a 402
    first, other = Api(client, key), Api(client, second)
    for _ in range(6):
        opened = first.post("/v1/imagine", json={"prompt": "a fox"})
        assert opened.status_code == 402
    answers = [other.post("/v1/imagine", json={"prompt": "a fox"}) for _ in range(4)]
    assert [_limit_headers(r)[:2] for r in answers] == [(10, 3), (10, 2), (10, 1), (10, 0)]  # the account's
    refused = other.post("/v1/imagine", json={"prompt": "a fox"})
    assert refused.status_code == 429
    assert "the API and the console count together" in refused.get_json()["error"]["message"]
    assert _limit_headers(refused) == (10, 0, _limit_headers(opened)[2])  # the account's window, opened first
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert _limit_headers(other.get("/v1/account"))[:2] == (120, 119)  # reads: the key's own bucket


def test_unauthenticated_requests_do_not_count(client, make_account):
    _, key = make_account("free")
    for _ in range(15):
        assert client.post("/v1/imagine", json={}, headers={"X-API-Key": "ak_live_wrong"}).status_code == 401
    assert Api(client, key).post("/v1/imagine", json={}).status_code == 400


def test_a_plan_change_applies_its_limit_at_once(client, make_account, runner):
    account, key = make_account("free")
    api = Api(client, key)
    for _ in range(10):
        api.post("/v1/imagine", json={})
    assert api.post("/v1/imagine", json={}).status_code == 429
    runner.invoke(args=["users", "plan", account.email, "hobby"])
    response = api.post("/v1/imagine", json={})
    assert response.status_code == 400 and response.headers["X-RateLimit-Limit"] == "30"


def test_requests_this_minute(app, make_account, client):
    account, key = make_account("hobby")
    for _ in range(3):
        Api(client, key).post("/v1/imagine", json={})
    Api(client, key).get("/v1/account")
    with app.app_context():
        from models import ApiKey

        key_hash = ApiKey.get(ApiKey.account == account.id).key_hash
        assert requests_this_minute(key_hash, "hobby") == (3, 30)
        assert requests_this_minute(key_hash, "hobby", READS) == (1, 300)


def test_jobs_made_in_the_console_count_against_the_same_plan_limit(app, client, make_account):
    import credits
    from test_console import PASSWORD, Console, text

    account, key = make_account("free", email="play@example.com", password=PASSWORD)
    with app.app_context():
        credits.grant(account.id, 1000)
    console = Console(client)
    assert console.login("play@example.com").status_code == 302
    api = Api(app.test_client(), key)
    for n in range(4):
        assert api.post("/v1/imagine", json={"prompt": f"api {n}"}).status_code == 202
    token = console.token("/console/playground")
    for n in range(6):
        response = client.post(
            "/console/playground?tab=imagine",
            data={"csrf_token": token, "prompt": f"console {n}", "aspect_ratio": "1:1", "version": "6.1",
                  "quality": "0.25", "style": "", "chaos": "0", "stylize": "100"},
        )  # fmt: skip
        assert response.status_code == 302, text(response)[:500]
    refused = client.post(
        "/console/playground?tab=imagine",
        data={"csrf_token": token, "prompt": "one too many", "aspect_ratio": "1:1", "version": "6.1",
              "quality": "0.25", "style": "", "chaos": "0", "stylize": "100"},
    )  # fmt: skip
    assert refused.status_code == 429
    assert "Rate limit of 10 new jobs per minute for the Free plan exceeded" in text(refused)
    other_key = Api(app.test_client(), make_account("free")[1])  # another account is not affected
    assert other_key.post("/v1/imagine", json={"prompt": "mine"}).status_code == 202
    with app.app_context():
        from models import Job

        assert Job.select().where(Job.account == account.id).count() == 10


def test_the_api_is_refused_once_the_console_used_the_minute(app, client, make_account):
    import credits
    from test_console import PASSWORD, Console

    account, key = make_account("free", email="mix@example.com", password=PASSWORD)
    with app.app_context():
        credits.grant(account.id, 1000)
    console = Console(client)
    console.login("mix@example.com")
    token = console.token("/console/playground")
    for n in range(10):
        response = client.post(
            "/console/playground?tab=describe",
            data={"csrf_token": token, "image_url": f"http://127.0.0.1:9/{n}.png"},
        )
        assert response.status_code == 302
    refused = Api(app.test_client(), key).post("/v1/describe", json={"imageUrl": "http://127.0.0.1:9/x.png"})
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_in_process_counters_start_no_thread_per_request(app, client, make_account):
    _, key = make_account("scale")
    api = Api(client, key)
    storage = app.extensions[ratelimit.EXTENSION].limiter.storage
    assert isinstance(storage, ratelimit.SweptMemoryStorage)
    api.get("/v1/account")
    before = threading.active_count()
    for _ in range(30):
        assert api.get("/v1/account").status_code == 200
        assert threading.active_count() <= before  # limits' own storage started a timer thread here
    storage.incr("stale", 0.01)
    time.sleep(ratelimit.SweptMemoryStorage.SWEEP_INTERVAL + 0.5)
    assert "stale" not in storage.storage  # the one sweeping thread dropped it


def test_flask_limiters_own_hooks_run_for_the_sign_in_pages_only(app):
    # Its limits are on the sign-in pages alone; on every other request its hooks were a tenth of a poll.
    limiter = app.extensions[ratelimit.EXTENSION]
    check = limiter._check_request_limit
    assert check not in app.before_request_funcs[None] and check in app.before_request_funcs["signin"]
    added = app.extensions[ratelimit.LIMITER_HOOKS]
    assert all(hooks and not set(hooks) & set(getattr(app, name)[None]) for name, hooks in added.items())


class _Storage:
    """A storage whose windows end where the test says, counting how often it is asked."""

    def __init__(self) -> None:
        self.ends: dict[str, float] = {}
        self.asked = 0

    def get_expiry(self, key: str) -> float:
        self.asked += 1
        return self.ends[key]


def test_a_windows_end_is_asked_of_the_storage_only_when_unknown():
    ends, storage = ratelimit.WindowEnds(), _Storage()
    opened = ends.end(storage, "mine", 1, 60, time.time())  # this process opened the window: its end is known
    assert time.time() + 59 <= opened <= time.time() + 60 and storage.asked == 0
    assert [ends.end(storage, "mine", used, 60, time.time()) for used in range(2, 10)] == [opened] * 8
    assert storage.asked == 0
    storage.ends["theirs"] = time.time() + 30  # another process opened this one
    assert ends.end(storage, "theirs", 7, 60, time.time()) == storage.ends["theirs"] and storage.asked == 1
    assert ends.end(storage, "theirs", 9, 60, time.time()) == storage.ends["theirs"] and storage.asked == 1
    storage.ends["theirs"] = time.time() + 55  # reset, then counted again elsewhere: no higher than seen
    assert ends.end(storage, "theirs", 3, 60, time.time()) == storage.ends["theirs"] and storage.asked == 2
    storage.ends["ending"] = time.time() + ratelimit.WindowEnds.SURE / 2  # may end any moment: ask each time
    assert ends.end(storage, "ending", 2, 60, time.time()) == storage.ends["ending"]
    assert ends.end(storage, "ending", 3, 60, time.time()) == storage.ends["ending"] and storage.asked == 4


def test_the_windows_kept_are_bounded(monkeypatch):
    monkeypatch.setattr(ratelimit.WindowEnds, "KEPT", 5)
    ends, storage = ratelimit.WindowEnds(), _Storage()
    for n in range(12):
        ends.end(storage, f"key {n}", 1, 60, time.time())
        assert len(ends._ends) <= 5
    storage.ends["key 0"] = time.time() + 10
    assert ends.end(storage, "key 0", 2, 60, time.time()) == storage.ends["key 0"]  # forgotten, so asked


def test_limit_headers_cost_no_second_look_at_the_storage(app, client, make_account, monkeypatch):
    _, key = make_account("scale")
    api = Api(client, key)
    storage = app.extensions[ratelimit.EXTENSION].limiter.storage
    asked = []
    monkeypatch.setattr(storage, "get_expiry", lambda key: asked.append(key) or time.time())
    resets = {_limit_headers(api.get("/v1/account"))[2] for _ in range(20)}
    assert len(resets) == 1 and asked == []  # the window opened here, so its end was known


def test_options_needs_no_key_and_counts_for_nothing(client, make_account):
    answer = client.options("/v1/imagine")
    assert answer.status_code == 200 and "POST" in answer.headers["Allow"]
    _, key = make_account("free")  # 10 creates a minute
    for _ in range(12):
        assert client.options("/v1/imagine", headers={"X-API-Key": key}).status_code == 200
    answer = client.post("/v1/imagine", json={}, headers={"X-API-Key": key})
    assert answer.status_code == 400 and answer.headers["X-RateLimit-Remaining"] == "9"


class _Proxy:
    """A TCP proxy to Redis that a test can freeze (nothing passes, sockets stay open) or stop (port dead)."""

    def __init__(self, target: int = 6379) -> None:
        self.target = target
        self.frozen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return  # stopped
            far = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [near, far]
            threading.Thread(target=self._pipe, args=(near, far), daemon=True).start()
            threading.Thread(target=self._pipe, args=(far, near), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.frozen.is_set():  # frozen, it swallows what it gets: nothing comes back
                    sink.sendall(data)
        except OSError:
            pass

    def stop(self) -> None:
        self.listener.close()
        for connection in self.sockets:
            connection.close()


def test_a_storage_that_does_not_answer_is_replaced_by_the_process_memory(settings, request, caplog):
    settings["RATELIMIT_STORAGE_URI"] = f"redis://127.0.0.1:{free_port()}/13"  # nothing listens there
    client, make_account = request.getfixturevalue("client"), request.getfixturevalue("make_account")
    _, key = make_account("free", email="down@example.com", password=PASSWORD)
    api = Api(client, key)
    answer = api.get("/v1/account")
    assert answer.status_code == 200 and _limit_headers(answer)[:2] == (120, 119)
    for left in range(9, -1, -1):
        assert _limit_headers(api.post("/v1/imagine", json={}))[:2] == (10, left)
    assert api.post("/v1/imagine", json={}).status_code == 429  # the limits still hold, per process
    assert Console(client).login("down@example.com").status_code == 302  # the sign-in's limit too
    assert client.get("/console/").status_code == 200  # which shows each key's requests this minute
    warnings = [r for r in caplog.records if r.name == "ratelimit" and r.levelname == "WARNING"]
    assert len(warnings) == 1 and "not answering" in warnings[0].getMessage()
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json()["status"] == "degraded"
    assert health.get_json()["rateLimits"] == {
        "ok": False,
        "detail": "the rate-limit storage did not answer; each process counts on its own",
    }


def test_a_frozen_storage_costs_a_bounded_wait_and_is_used_again_once_it_answers(settings, request):
    proxy = _Proxy()
    request.addfinalizer(proxy.stop)
    settings["RATELIMIT_STORAGE_URI"] = f"redis://127.0.0.1:{proxy.port}/13"
    app, client = request.getfixturevalue("app"), request.getfixturevalue("client")
    api = Api(client, request.getfixturevalue("make_account")("free")[1])
    assert _limit_headers(api.get("/v1/account"))[:2] == (120, 119)  # counted in Redis
    assert client.get("/healthz").get_json()["rateLimits"] == {"ok": True, "detail": "answering"}
    proxy.frozen.set()
    started = time.monotonic()
    assert _limit_headers(api.get("/v1/account"))[:2] == (120, 119)  # counted in memory, after one timeout
    assert time.monotonic() - started < ratelimit.STORAGE_TIMEOUT + 1
    started = time.monotonic()
    assert _limit_headers(api.get("/v1/account"))[:2] == (120, 118)
    assert time.monotonic() - started < 0.5  # no wait for a storage known to be down
    proxy.frozen.clear()
    # Once /healthz has had an answer, the pool holds a connection through the proxy; the retry's own
    # check would otherwise have to open one within STORAGE_TIMEOUT (beside CPU hogs, the request below
    # was once counted in memory, as when that check fails).
    wait_until(lambda: client.get("/healthz").get_json()["rateLimits"]["ok"], what="an answer to /healthz")
    app.extensions[ratelimit.FALLBACK].RETRY = 0
    assert _limit_headers(api.get("/v1/account"))[:2] == (120, 118)  # back in Redis, whose count it was
    proxy.stop()
    assert _limit_headers(api.get("/v1/account"))[:2] == (120, 117)  # in memory again
