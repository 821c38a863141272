"""The two published apiframe.ai Python clients, unmodified, against this service on loopback.

``apiframe-sdk`` (module ``apiframe``) is the official one: ``Apiframe(api_key, base_url=...)``, which
sends ``Authorization: Bearer <key>`` and normalises answers (``task_id`` -> ``id``, ``percentage``
-> ``progress``, ``finished`` -> ``completed``). ``apiframe`` (module ``apiframe_python``) is the
older ``ApiframeClient``, which sends ``Authorization: <key>`` and returns the JSON as it comes.
"""

from __future__ import annotations

import time

import pytest
from apiframe import Apiframe, ApiframeError, AuthenticationError, RateLimitError
from apiframe_python import ApiframeClient

import accounts
from conftest import image_bytes

POLL = 0.1  # seconds between polls (the clients' default is 3)


@pytest.fixture
def server(live):
    """The live server and a new scale-plan account's key on it."""
    app, live_server = live
    with app.app_context():
        account, key = accounts.create("client@example.com", plan="scale")
    return app, live_server.url, key


@pytest.fixture
def inputs(files) -> list[str]:
    """Two input images on the loopback file server."""
    return [
        files.add("/red.png", image_bytes((320, 240), color=(210, 40, 30))),
        files.add("/sea.png", image_bytes((320, 240), color=(20, 90, 200))),
    ]


# ---- apiframe-sdk ------------------------------------------------------------------------------


def test_the_official_sdk(server, inputs):
    app, url, key = server
    client = Apiframe(api_key=key, base_url=url)
    midjourney, tasks = client.midjourney, client.tasks

    def wait(created: dict) -> dict:
        return tasks.wait_for(created["id"], interval=POLL, timeout=60)

    app.config["LOCAL_LATENCY"] = 1.0  # long enough to see progress
    created = midjourney.imagine({"prompt": "a lighthouse at dusk", "aspect_ratio": "1:1", "quality": 0.25})
    assert created["id"] == created["task_id"] == created["job"]["id"] and created["success"] is True
    progress: list[int] = []
    grid = tasks.wait_for(created["id"], on_progress=progress.append, interval=POLL, timeout=60)
    app.config["LOCAL_LATENCY"] = 0.0
    assert grid["status"] == "completed" and grid["task_type"] == "imagine" and grid["id"] == created["id"]
    assert len(grid["image_urls"]) == 4 and grid["original_image_url"].startswith(url)
    assert progress and progress == sorted(progress) and all(isinstance(p, int) for p in progress)

    upscale = midjourney.upscale_1x({"parent_task_id": grid["id"], "index": 2})  # sent as "2"
    assert set(upscale) == {"task_id", "id"}
    upscaled = wait(upscale)
    assert upscaled["task_type"] == "upscale#2" and upscaled["image_url"].startswith(url)

    variations = wait(midjourney.variations({"parent_task_id": grid["id"], "index": "3"}))
    assert variations["status"] == "completed" and len(variations["image_urls"]) == 4

    reroll = wait(midjourney.reroll({"parent_task_id": grid["id"]}))
    assert reroll["task_type"] == "reroll" and reroll["image_urls"] != grid["image_urls"]
    assert reroll["seed"] != grid["seed"]

    described = midjourney.describe({"image_url": inputs[0]})
    assert described["id"] == described["job"]["id"]
    description = wait(described)
    assert description["task_type"] == "describe" and len(description["content"]) == 4

    blended = midjourney.blend({"image_urls": inputs, "dimension": "landscape"})
    blend = wait(blended)
    assert blend["task_type"] == "blend" and len(blend["image_urls"]) == 4

    creative = midjourney.upscale_alt({"parent_task_id": upscaled["id"], "type": "creative"})
    assert wait(creative)["task_type"] == "upscale-creative"
    highres = midjourney.upscale_highres({"image_url": inputs[1], "type": "4x"})
    assert wait(highres)["task_type"] == "upscale-highres"
    seed = wait(midjourney.seed({"task_id": grid["id"]}))
    assert seed["seed"] == grid["seed"]

    ids = [grid["id"], upscaled["id"], variations["id"], reroll["id"], description["id"], blend["id"]]
    many = tasks.get_many(ids)
    assert [task["id"] for task in many["tasks"]] == ids
    assert {task["status"] for task in many["tasks"]} == {"completed"}
    assert tasks.get(grid["id"]) == grid

    account = tasks.get_account_info()
    spent = 16 + 4 + 16 + 16 + 4 + 16 + 4 + 4 + 0
    assert account == {
        "email": "client@example.com",
        "credits": 5000 - spent,
        "plan": "scale",
        "total_images": 4 * 4 + 1 + 1 + 1,
        "next_billing_date": None,
    }


def test_the_official_sdk_raises_with_our_messages(server, files):
    app, url, key = server
    with pytest.raises(AuthenticationError) as unauthorised:
        Apiframe(api_key="ak_live_" + "x" * 43, base_url=url).tasks.get_account_info()
    assert str(unauthorised.value) == "Invalid API key."

    client = Apiframe(api_key=key, base_url=url)
    with pytest.raises(ApiframeError) as invalid:
        client.midjourney.upscale_1x({"parent_task_id": "not-a-task", "index": 7})
    assert invalid.value.status == 400 and invalid.value.code == "VALIDATION_ERROR"
    assert "'parent_task_id'" in str(invalid.value) and "'index'" in str(invalid.value)
    with pytest.raises(ApiframeError) as missing:
        client.tasks.get("a1b2c3d4-e5f6-7890-abcd-ef1234567890")
    assert missing.value.status == 404 and missing.value.code == "NOT_FOUND"

    failing = client.midjourney.describe({"image_url": files.url("/nowhere.png")})
    with pytest.raises(Exception, match=r"failed: Could not use imageUrl .*HTTP 404") as failed:
        client.tasks.wait_for(failing["id"], interval=POLL, timeout=60)
    assert failed.value.task_details["status"] == "failed"


def test_the_sdk_waits_with_its_default_polling_on_the_free_plan(live):
    app, server = live
    with app.app_context():
        _, key = accounts.create("free@example.com")  # 10 creates a minute, 50 credits
    client = Apiframe(api_key=key, base_url=server.url)
    app.config["LOCAL_LATENCY"] = 7.0  # three or four of the SDK's polls, 3 s apart
    created = client.midjourney.imagine({"prompt": "a lighthouse at dusk", "quality": 0.25})
    done = client.tasks.wait_for(created["id"])  # polls count as reads, not against the plan's 10
    app.config["LOCAL_LATENCY"] = 0.0
    assert done["status"] == "completed" and len(done["image_urls"]) == 4
    outcomes = []
    for _ in range(9):  # creates two to ten: two more grids fit in the credits, then 402s
        try:
            outcomes.append(client.midjourney.imagine({"prompt": "a fox", "quality": 0.25})["id"] and 202)
        except ApiframeError as exc:
            outcomes.append(exc.status)
    assert outcomes == [202, 202] + [402] * 7
    with pytest.raises(RateLimitError):
        client.midjourney.imagine({"prompt": "the eleventh"})
    assert client.tasks.get(created["id"])["status"] == "completed"  # reading still works


# ---- apiframe (ApiframeClient) -----------------------------------------------------------------


def finished(client: ApiframeClient, task_id: str, timeout: float = 60) -> dict:
    """Poll ``client.fetch`` until the task is finished or failed (that client has no wait)."""
    deadline = time.monotonic() + timeout
    while (task := client.fetch(task_id))["status"] not in ("finished", "failed"):
        assert time.monotonic() < deadline, f"task {task_id} still {task['status']}"
        time.sleep(POLL)
    return task


def test_the_older_client(server, inputs):
    _, url, key = server
    client = ApiframeClient(key)
    client.base_url = url

    created = client.imagine("a paper boat on a pond")  # aspect_ratio 1:1, process_mode fast
    assert created["task_id"] == created["job"]["id"] and created["success"] is True
    grid = finished(client, created["task_id"])
    assert grid["status"] == "finished" and grid["task_type"] == "imagine" and len(grid["image_urls"]) == 4
    assert set(grid) == {"task_id", "task_type", "status", "original_image_url", "image_urls", "seed"}

    upscale = client.upscale_1x(grid["task_id"], "1")
    assert set(upscale) == {"task_id"}
    upscaled = finished(client, upscale["task_id"])
    assert upscaled["task_type"] == "upscale#1" and upscaled["image_url"].startswith(url)

    variations = finished(client, client.variations(grid["task_id"], "4")["task_id"])
    assert variations["task_type"] == "variation" and len(variations["image_urls"]) == 4
    reroll = finished(client, client.reroll(grid["task_id"])["task_id"])
    assert reroll["task_type"] == "reroll" and reroll["seed"] != grid["seed"]

    described = client.describe(inputs[0])
    assert described["task_id"] == described["job"]["id"]
    description = finished(client, described["task_id"])
    assert description["status"] == "finished" and len(description["content"]) == 4
    blend = finished(client, client.blend(inputs)["task_id"])  # dimension square
    assert blend["status"] == "finished" and len(blend["image_urls"]) == 4
    seed = finished(client, client.seed(grid["task_id"])["task_id"])
    assert seed["seed"] == grid["seed"]

    ids = [grid["task_id"], upscaled["task_id"], variations["task_id"], reroll["task_id"]]
    many = client.fetch_many(ids)
    assert [task["task_id"] for task in many["tasks"]] == ids
    assert many["tasks"][1] == upscaled

    assert client.account() == {
        "email": "client@example.com",
        "credits": 5000 - (16 + 4 + 16 + 16 + 4 + 16 + 0),
        "plan": "scale",
        "total_images": 4 * 4 + 1,
        "next_billing_date": None,
    }


def test_the_older_client_reads_our_errors(server):
    _, url, key = server
    stranger = ApiframeClient("ak_live_" + "x" * 43)
    stranger.base_url = url
    assert stranger.account()["errors"] == [{"msg": "Invalid API key."}]
    client = ApiframeClient(key)
    client.base_url = url
    answer = client.imagine("a paper boat", aspect_ratio="7:5")
    assert answer["errors"][0]["msg"].startswith("The 'aspect_ratio' field must be one of: 1:1, 16:9")
    answer = client.upscale_alt("a1b2c3d4-e5f6-7890-abcd-ef1234567890", "subtle")
    assert answer["errors"] == [{"msg": "Job a1b2c3d4-e5f6-7890-abcd-ef1234567890 was not found."}]
