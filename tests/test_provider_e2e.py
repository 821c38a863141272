"""Each adapter end to end through the HTTP API against its fake backend: imagine, upscale, variation,
describe and blend, with real images stored by the gateway and served back from /images/."""

from __future__ import annotations

import io
import uuid

import pytest
from PIL import Image

from conftest import image_bytes
from fakes.apiframe import FakeApiframe
from fakes.comfyui import FakeComfyUI
from fakes.mjproxy import FakeMidjourneyProxy
from fakes.openai import FakeOpenAI
from fakes.sdwebui import FakeSdWebUI
from models import Job
from original import Original

QUICK = {"PROVIDER_RETRIES": 1, "PROVIDER_BACKOFF": 0.01, "PROVIDER_CONNECT_TIMEOUT": 1.0}


def sdwebui(fake: FakeSdWebUI) -> dict:
    return {"PROVIDER": "sdwebui", "SDWEBUI_URL": fake.url, "SDWEBUI_POLL_INTERVAL": 0.02}


def openai(fake: FakeOpenAI) -> dict:
    return {"PROVIDER": "openai", "OPENAI_BASE_URL": fake.url + "/v1", "OPENAI_API_KEY": fake.key}


def mjproxy(fake: FakeMidjourneyProxy) -> dict:
    return {
        "PROVIDER": "midjourney-proxy",
        "MJPROXY_URL": fake.url,
        "MJPROXY_SECRET": fake.secret,
        "MJPROXY_POLL_INTERVAL": 0.01,
    }


def apiframe(fake: FakeApiframe) -> dict:
    return {
        "PROVIDER": "apiframe",
        "APIFRAME_URL": fake.url,
        "APIFRAME_KEY": fake.key,
        "APIFRAME_POLL_INTERVAL": 0.01,
    }


def comfyui(fake: FakeComfyUI) -> dict:
    return {"PROVIDER": "comfyui", "COMFYUI_URL": fake.url, "COMFYUI_POLL_INTERVAL": 0.02}


ADAPTERS = {
    "sdwebui": (FakeSdWebUI, sdwebui),
    "openai": (FakeOpenAI, openai),
    "midjourney-proxy": (FakeMidjourneyProxy, mjproxy),
    "apiframe": (FakeApiframe, apiframe),
    "comfyui": (FakeComfyUI, comfyui),
}


@pytest.fixture(params=list(ADAPTERS))
def backend(request, settings):
    """The fake backend of one adapter, with the app's settings pointing at it."""
    fake_class, configure = ADAPTERS[request.param]
    fake = fake_class()
    settings.update(QUICK, **configure(fake))
    yield request.param, fake
    fake.close()


def fetch_image(api, url: str) -> Image.Image:
    """Download one of the job's image URLs from this service and decode it."""
    assert url.startswith("http://images.test/images/")
    response = api.client.get(url.removeprefix("http://images.test"))
    assert response.status_code == 200 and response.mimetype == "image/png"
    return Image.open(io.BytesIO(response.data)).convert("RGB")


def succeeded(api, path: str, body: dict) -> dict:
    job = api.wait(api.submit(path, body)["id"])
    assert job["status"] == "succeeded", job
    return job


def test_every_operation_through_the_api(backend, api, files, app):
    name, fake = backend
    imagined = succeeded(
        api, "/v1/imagine", {"prompt": "a red fox in the snow", "aspectRatio": "4:3", "quality": 0.25}
    )
    grid = fetch_image(api, imagined["imageUrl"])
    tiles = [fetch_image(api, url) for url in imagined["imageUrls"]]
    assert len(tiles) == 4 and grid.size == (tiles[0].width * 2, tiles[0].height * 2)
    assert len({tile.tobytes() for tile in tiles}) == 4

    upscaled = succeeded(api, "/v1/upscale", {"jobId": imagined["id"], "index": 2})
    assert upscaled["imageUrls"] == [upscaled["imageUrl"]]
    assert fetch_image(api, upscaled["imageUrl"]).width >= tiles[1].width * 2

    varied = succeeded(api, "/v1/variation", {"jobId": imagined["id"], "index": 3})
    assert len({fetch_image(api, url).size for url in varied["imageUrls"]}) == 1

    photo = files.add("/photo.png", image_bytes((320, 320), (30, 120, 200)))
    described = succeeded(api, "/v1/describe", {"imageUrl": photo})
    assert len(described["descriptions"]) == 4 and all(described["descriptions"])

    others = [files.add(f"/in{i}.png", image_bytes((200, 200), (60 * i, 90, 30))) for i in range(3)]
    blended = succeeded(api, "/v1/blend", {"imageUrls": others})
    assert len([fetch_image(api, url) for url in blended["imageUrls"]]) == 4

    with app.app_context():
        stored = Job.get_by_id(uuid.UUID(imagined["id"]))
        assert stored.provider == name
        if name == "comfyui":  # the seed sent in the workflow
            assert stored.seed == fake.prompts()[0]["5"]["inputs"]["seed"]
        else:
            assert stored.seed == (1234567 if name == "sdwebui" else None)  # the seed the web UI reported
    assert_backend_saw_the_chain(name, fake, stored.provider_ref, photo, others)


@pytest.mark.parametrize("backend", ["apiframe"], indirect=True)
def test_apiframe_is_sent_a_variations_prompt_only_when_the_user_gives_one(backend, api):
    """Else /variations takes its parent task's, with the Midjourney parameters it was made with."""
    _, fake = backend
    grid = succeeded(api, "/v1/imagine", {"prompt": "a quiet lake", "quality": 0.25})
    succeeded(api, "/v1/variation", {"jobId": grid["id"], "index": 1})
    prompted = {"parent_task_id": grid["id"], "index": "2", "prompt": "a frozen lake"}
    assert Original(api.client, api.key).run("/variations", prompted)["status"] == "finished"
    assert [call.json.get("prompt") for call in fake.calls("/variations")] == [None, "a frozen lake"]


@pytest.mark.parametrize("backend", ["midjourney-proxy"], indirect=True)
def test_midjourney_proxy_presses_v_for_a_variation_asked_in_its_tiles_own_shape(backend, api):
    """The older apiframe client sends an aspect ratio (1:1 unless told) with every variations request."""
    _, fake = backend
    grid = succeeded(api, "/v1/imagine", {"prompt": "a quiet lake", "quality": 0.25})
    original = Original(api.client, api.key)
    for index, shape in (("1", "3:2"), ("2", "16:9")):  # the fake's grids are 3:2
        asked = {"parent_task_id": grid["id"], "index": index, "aspect_ratio": shape}
        assert original.run("/variations", asked)["status"] == "finished"
    (pressed,) = [call.json["customId"] for call in fake.calls("/mj/submit/action")]
    assert pressed.startswith("MJ::JOB::variation::1::")  # the same shape: Midjourney's own V1
    imagined = [call.json["prompt"] for call in fake.calls("/mj/submit/imagine")]
    assert len(imagined) == 2 and imagined[1].endswith("--ar 16:9")  # a new one: an image prompt


def assert_backend_saw_the_chain(
    name: str, fake, imagine_ref: str | None, photo: str, others: list[str]
) -> None:
    """The backend got one call per operation, and the follow-ups pointed at the imagine task."""
    if name == "sdwebui":
        work = [c.path for c in fake.calls() if c.method == "POST" and c.path.startswith("/sdapi/v1/")]
        assert work[:3] == [
            "/sdapi/v1/txt2img",
            "/sdapi/v1/extra-single-image",
            "/sdapi/v1/img2img",
        ]
        assert fake.calls("/sdapi/v1/interrogate") and len(fake.calls("/sdapi/v1/img2img")) == 2
    elif name == "comfyui":  # describe went to the local provider: ComfyUI has no describe node
        loaders = [{n["class_type"] for n in graph.values()} for graph in fake.prompts()]
        assert [("EmptyLatentImage" in c, "ImageScaleBy" in c, "VAEEncode" in c) for c in loaders] == [
            (True, False, False), (False, True, False), (False, False, True), (False, False, True)
        ]  # fmt: skip
        assert len(fake.calls("/upload/image")) == 3
    elif name == "openai":
        assert len(fake.calls("/v1/images/generations")) == 1 and len(fake.calls("/v1/images/edits")) == 2
        assert fake.calls("/v1/chat/completions")
    elif name == "midjourney-proxy":  # trueai: the grid's U2 and V3 buttons
        pressed = [c.json for c in fake.calls("/mj/submit/action")]
        assert pressed == [
            {"taskId": imagine_ref, "customId": f"MJ::JOB::upsample::2::hash-{imagine_ref}"},
            {"taskId": imagine_ref, "customId": f"MJ::JOB::variation::3::hash-{imagine_ref}"},
        ]
        assert fake.calls("/mj/submit/describe") and fake.calls("/mj/submit/blend")
    else:
        assert fake.calls("/upscale-1x")[0].json == {"parent_task_id": imagine_ref, "index": "2"}
        assert fake.calls("/variations")[0].json == {"parent_task_id": imagine_ref, "index": "3"}
        assert fake.calls("/describe")[0].json == {"image_url": photo}
        assert fake.calls("/blend")[0].json["image_urls"] == others


def balance(api) -> int:
    return api.get("/v1/account").get_json()["account"]["credits"]["remaining"]


def test_a_failing_backend_fails_the_job_naming_the_provider_and_refunds(backend, api):
    name, fake = backend
    fake.fail(503, times=100)
    before = balance(api)
    job = api.wait(api.submit("/v1/imagine", {"prompt": "a red fox"})["id"])
    assert job["status"] == "failed" and job["imageUrl"] is None
    assert f"The {name} provider answered HTTP 503, 2 times; giving up: upstream trouble" == job["error"]
    assert balance(api) == before
    assert "Traceback" not in job["error"] and "key" not in job["error"].lower()
