"""The two published apiframe.ai Python clients, unmodified, against this service on loopback.

``apiframe-sdk`` (module ``apiframe``) is the official one: ``Apiframe(api_key, base_url=...)``, which
sends ``Authorization: Bearer <key>`` and normalises answers (``task_id`` -> ``id``, ``percentage``
-> ``progress``, ``finished`` -> ``completed``). ``apiframe`` (module ``apiframe_python``) is the
older ``ApiframeClient``, which sends ``Authorization: <key>`` and returns the JSON as it comes.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import pytest
import requests
import skimage.data
from apiframe import Apiframe, ApiframeError, AuthenticationError, RateLimitError
from apiframe_python import ApiframeClient
from PIL import Image, ImageOps

import accounts
from conftest import image_bytes

POLL = 0.1  # seconds between polls (the clients' default is 3)
PHOTOS = Path(skimage.data.__file__).parent


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def image_at(url: str) -> Image.Image:
    """One of the live server's images, decoded."""
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, url
    return Image.open(io.BytesIO(response.content))


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


def test_the_official_sdks_unsupported_methods_raise_a_readable_404(server, files):
    app, url, key = server
    client = Apiframe(api_key=key, base_url=url)
    unsupported = [
        lambda: client.midjourney.imagine_video({"prompt": "a boat", "image_url": files.url("/red.png")}),
        lambda: client.midjourney_alt.imagine({"prompt": "a boat"}),
        lambda: client.flux.generate({"prompt": "a boat"}),
    ]
    for call in unsupported:
        with pytest.raises(ApiframeError) as missing:
            call()
        assert missing.value.status == 404 and missing.value.code == "NOT_FOUND"
        assert str(missing.value) == "No such endpoint. See /docs for the API reference."


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


# ---- pan, zoom out, vary region, shorten, face swap and the SDK's legacy routes -------------------


@pytest.fixture
def photos(files) -> dict[str, str]:
    """Photographs on the loopback file server: a small one to upscale, a face, another face, none."""
    with Image.open(PHOTOS / "coffee.png") as coffee:
        small = coffee.convert("RGB").resize((240, 160), Image.Resampling.LANCZOS)
    astronaut = Image.open(PHOTOS / "astronaut.png").convert("RGB")
    return {
        "small": files.add("/small.png", png(small)),
        "astronaut": files.add("/astronaut.png", png(astronaut)),
        "other": files.add("/other.png", png(ImageOps.mirror(astronaut))),
        "chelsea": files.add("/chelsea.png", (PHOTOS / "chelsea.png").read_bytes()),
    }


def mask_of(size: tuple[int, int]) -> str:
    """A base64 PNG mask of ``size``, white (repaint) in its middle."""
    mask = Image.new("L", size, 0)
    mask.paste(255, (size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4))
    return base64.b64encode(png(mask)).decode()


def test_the_official_sdk_pans_zooms_inpaints_shortens_swaps_faces_and_its_legacy_routes(server, photos):
    app, url, key = server
    client = Apiframe(api_key=key, base_url=url)
    midjourney, tasks = client.midjourney, client.tasks

    def wait(created: dict) -> dict:
        return tasks.wait_for(created["id"], interval=POLL, timeout=90)

    grid = wait(
        midjourney.imagine({"prompt": "a lighthouse at dusk", "aspect_ratio": "1:1", "quality": 0.25})
    )
    legacy_upscale = wait(midjourney.upscale({"taskId": grid["id"], "index": 3}))
    assert legacy_upscale["status"] == "completed" and legacy_upscale["task_type"] == "upscale#3"
    vary = wait(midjourney.vary({"taskId": grid["id"], "index": 2, "strength": 80}))
    assert vary["task_type"] == "variation" and len(vary["image_urls"]) == 4

    parent = wait(midjourney.upscale_highres({"image_url": photos["small"], "type": "2x"}))  # 480x320
    pan = wait(midjourney.pan({"parent_task_id": parent["id"], "direction": "left"}))
    assert pan["status"] == "completed" and pan["task_type"] == "pan-left" and len(pan["image_urls"]) == 4
    assert image_at(pan["image_urls"][0]).size == (720, 320)
    outpaint = wait(
        midjourney.outpaint({"parent_task_id": parent["id"], "zoom_ratio": 2, "prompt": "a harbour"})
    )
    assert outpaint["task_type"] == "outpaint-2" and image_at(outpaint["image_urls"][1]).size == (
        480,
        320,
    )
    zoom = wait(midjourney.zoom({"taskId": parent["id"], "zoom": 1}))
    assert zoom["task_type"] == "outpaint-1" and image_at(zoom["image_urls"][2]).size == (480, 480)
    inpaint = wait(
        midjourney.inpaint({"parent_task_id": parent["id"], "mask": mask_of((480, 320)), "prompt": "a boat"})
    )
    assert inpaint["task_type"] == "inpaint" and len(inpaint["image_urls"]) == 4

    shorten = wait(
        midjourney.shorten({"prompt": "a very beautiful and highly detailed painting of a red fox"})
    )
    assert shorten["task_type"] == "shorten" and len(shorten["content"]) == 5
    assert "fox" in [word for word, _ in shorten["tokens"]]
    swapped = wait(
        midjourney.face_swap({"target_image_url": photos["astronaut"], "swap_image_url": photos["other"]})
    )
    assert swapped["task_type"] == "faceswap" and image_at(swapped["image_url"]).size == (512, 512)

    no_face = midjourney.face_swap(
        {"target_image_url": photos["astronaut"], "swap_image_url": photos["chelsea"]}
    )
    with pytest.raises(Exception, match="No face was found in the swap image") as failed:
        wait(no_face)
    assert failed.value.task_details["status"] == "failed"
    spent = 16 + 4 + 16 + 4 + 16 * 4 + 4 + 4
    assert tasks.get_account_info()["credits"] == 5000 - spent  # the failed face swap was refunded


def test_the_older_client_pans_zooms_inpaints_and_swaps_faces(server, photos):
    app, url, key = server
    client = ApiframeClient(key)
    client.base_url = url
    made = requests.post(
        f"{url}/upscale-highres",
        json={"image_url": photos["small"], "type": "2x"},
        headers={"Authorization": key},
        timeout=10,
    )  # this client cannot upscale a URL
    parent = finished(client, made.json()["task_id"])
    assert parent["status"] == "finished"
    pan = finished(client, client.pan(parent["task_id"], "down", prompt="a sandy beach")["task_id"])
    assert pan["task_type"] == "pan-down" and image_at(pan["image_urls"][0]).size == (480, 480)
    outpaint = finished(client, client.outpaint(parent["task_id"], "1.5")["task_id"])  # aspect_ratio 1:1
    assert outpaint["task_type"] == "outpaint-1.5" and image_at(outpaint["image_urls"][0]).size == (
        480,
        480,
    )
    inpaint = finished(client, client.inpaint(parent["task_id"], mask_of((480, 320)), "a gull")["task_id"])
    assert inpaint["status"] == "finished" and len(inpaint["image_urls"]) == 4
    swap = finished(client, client.faceswap(photos["astronaut"], photos["other"])["task_id"])
    assert swap["status"] == "finished" and swap["task_type"] == "faceswap"
    wrong = client.inpaint(parent["task_id"], mask_of((100, 100)))
    assert wrong["errors"][0]["msg"] == ("The 'mask' field must be the image's size, 480x320; it is 100x100.")
    assert client.pan(parent["task_id"], "diagonal")["errors"][0]["msg"].startswith(
        "The 'direction' field must be one of: up, down, left, right."
    )
