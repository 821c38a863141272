"""Choosing providers: APIFRAME_PROVIDER, per-operation routing, start-up checks, parents made elsewhere."""

from __future__ import annotations

import io
import re
import uuid
from pathlib import Path

import openai
import pytest
from openai import OpenAI
from PIL import Image

import accounts
import config
import imagemeta
from app import create_app
from conftest import image_bytes
from fakes import decode_image, provider_settings
from fakes.mjproxy import FakeMidjourneyProxy
from fakes.openai import DESCRIPTIONS, FakeOpenAI
from fakes.sdwebui import FakeSdWebUI
from original import Original
from providers import Providers
from providers.local import painted_with

QUICK = {"PROVIDER_RETRIES": 1, "PROVIDER_BACKOFF": 0.01, "SDWEBUI_POLL_INTERVAL": 0.02}


@pytest.fixture
def sd():
    fake = FakeSdWebUI()
    yield fake
    fake.close()


@pytest.fixture
def oa():
    fake = FakeOpenAI()
    yield fake
    fake.close()


def test_one_provider_does_everything_by_default():
    providers = Providers(provider_settings())
    assert {providers.for_operation(op).name for op in ("imagine", "describe", "blend")} == {"local"}


def test_an_operation_can_be_routed_to_its_own_provider(sd):
    providers = Providers(
        provider_settings(PROVIDER_DESCRIBE="sdwebui", PROVIDER_UPSCALE="sdwebui", SDWEBUI_URL=sd.url)
    )
    assert providers.for_operation("describe").name == "sdwebui"
    assert providers.for_operation("describe") is providers.for_operation("upscale")  # one instance each
    assert providers.for_operation("imagine").name == "local" and providers.default.name == "local"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"PROVIDER": "dalle"}, "APIFRAME_PROVIDER: unknown provider 'dalle'; known: apiframe, comfyui, "),
        ({"PROVIDER_UPSCALE": "magic"}, "APIFRAME_PROVIDER_UPSCALE: unknown provider 'magic'"),
        ({"PROVIDER": "sdwebui"}, "APIFRAME_SDWEBUI_URL must be set to use the sdwebui provider"),
        ({"PROVIDER_DESCRIBE": "openai"}, "APIFRAME_OPENAI_API_KEY must be set to use the openai provider"),
        ({"PROVIDER": "midjourney-proxy"}, "APIFRAME_MJPROXY_URL must be set"),
        ({"PROVIDER": "apiframe"}, "APIFRAME_APIFRAME_KEY must be set to use the apiframe provider"),
        (
            {"PROVIDER": "openai", "OPENAI_API_KEY": "sk-test", "OPENAI_IMAGE_QUALITY": "hd"},
            "APIFRAME_OPENAI_IMAGE_QUALITY must be one of low, medium, high, auto for gpt-image-2, got 'hd'",
        ),
        (
            {"PROVIDER": "sdwebui", "SDWEBUI_URL": "http://gpu:7860", "SDWEBUI_AUTH": "nocolon"},
            "APIFRAME_SDWEBUI_AUTH",
        ),
    ],
)
def test_bad_provider_settings_stop_the_app_at_start_up_naming_the_variable(tmp_path, settings, message):
    with pytest.raises(ValueError) as failure:
        create_app({"DATA_DIR": str(tmp_path), "START_WORKERS": False, **settings})
    assert message in str(failure.value)


def test_routing_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("APIFRAME_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("APIFRAME_PROVIDER_DESCRIBE", "openai")
    monkeypatch.setenv("APIFRAME_OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("APIFRAME_OPENAI_IMAGE_MODEL", "dall-e-3")
    monkeypatch.setenv("APIFRAME_SDWEBUI_STEPS", "12")
    settings = config.load()
    assert settings["PROVIDER_DESCRIBE"] == "openai" and settings["OPENAI_API_KEY"] == "sk-env"
    assert settings["OPENAI_IMAGE_MODEL"] == "dall-e-3" and settings["SDWEBUI_STEPS"] == 12
    monkeypatch.setenv("APIFRAME_PROVIDER_RETRIES", "many")
    with pytest.raises(ValueError, match="APIFRAME_PROVIDER_RETRIES"):
        config.load()


def balance(api) -> int:
    return api.get("/v1/account").get_json()["account"]["credits"]["remaining"]


def test_an_operation_the_provider_cannot_do_is_refused_before_credits_are_taken(settings, oa, request):
    settings.update(PROVIDER="openai", OPENAI_BASE_URL=oa.url + "/v1", OPENAI_API_KEY=oa.key)
    settings.update(OPENAI_IMAGE_MODEL="dall-e-3")
    api = request.getfixturevalue("api")
    before = balance(api)
    for path, body in (
        ("/v1/variation", {"jobId": str(uuid.uuid4()), "index": 1}),
        ("/v1/blend", {"imageUrls": ["https://example.com/a.png", "https://example.com/b.png"]}),
    ):
        response = api.post(path, json=body)
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert "The configured provider (openai) cannot do" in error["message"]
        assert "APIFRAME_PROVIDER_" in error["message"]
    assert balance(api) == before and oa.calls() == []


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the client's create_variation
def test_a_model_that_can_do_the_operation_runs_it_where_the_provider_configured_cannot(
    settings, oa, request
):
    settings.update(PROVIDER="openai", OPENAI_BASE_URL=oa.url + "/v1", OPENAI_API_KEY=oa.key)
    settings.update(OPENAI_IMAGE_MODEL="dall-e-3", PROVIDER_DESCRIBE="local")  # dall-e-3 has no variations
    app, server = request.getfixturevalue("live")
    with app.app_context():
        _, key = accounts.create("chooser@example.com", plan="scale")
    client = OpenAI(api_key=key, base_url=f"{server.url}/v1", max_retries=0)
    image = ("tile.png", image_bytes(size=(256, 256)), "image/png")
    with pytest.raises(openai.BadRequestError):  # the configured provider's, as before
        client.images.create_variation(image=image)
    varied = client.images.create_variation(image=image, model="local", response_format="b64_json")
    assert len(varied.data) == 1 and oa.calls() == []


def test_shorten_and_face_swap_are_refused_where_the_provider_cannot_do_them(settings, oa, request):
    settings.update(PROVIDER="openai", OPENAI_BASE_URL=oa.url + "/v1", OPENAI_API_KEY=oa.key)
    api = request.getfixturevalue("api")
    before = balance(api)
    urls = {"targetImageUrl": "https://example.com/a.png", "swapImageUrl": "https://example.com/b.png"}
    for path, body, operation in (
        ("/v1/shorten", {"prompt": "a fox"}, "shorten"),
        ("/v1/faceswap", urls, "faceswap"),
        ("/shorten", {"prompt": "a fox"}, "shorten"),
    ):
        response = api.post(path, json=body)
        assert response.status_code == 400
        message = response.get_json()["error"]["message"]
        assert f"The configured provider (openai) cannot do {operation} jobs" in message
        assert f"APIFRAME_PROVIDER_{operation.upper()}" in message
    assert balance(api) == before and oa.calls() == []


def test_routed_operations_reach_their_provider_through_the_api(settings, oa, files, request):
    settings.update(QUICK, PROVIDER_DESCRIBE="openai", OPENAI_BASE_URL=oa.url + "/v1", OPENAI_API_KEY=oa.key)
    api = request.getfixturevalue("api")
    assert api.imagine()["status"] == "succeeded" and oa.calls() == []  # imagine stays local
    job = api.wait(api.submit("/v1/describe", {"imageUrl": files.add("/a.png", png_of((64, 64)))})["id"])
    assert job["status"] == "succeeded" and job["descriptions"] == [f"{d} --ar 1:1" for d in DESCRIPTIONS]


def png_of(size, color=(20, 200, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_local_parent_is_upscaled_by_sdwebui_from_its_pixels(settings, sd, request):
    settings.update(QUICK, PROVIDER_UPSCALE="sdwebui", SDWEBUI_URL=sd.url)
    api = request.getfixturevalue("api")
    parent = api.imagine(quality=0.25)
    job = api.wait(api.submit("/v1/upscale", {"jobId": parent["id"], "index": 4})["id"])
    assert job["status"] == "succeeded"
    sent = sd.calls("/sdapi/v1/extra-single-image")[0].json["image"]
    tile = api.client.get(parent["imageUrls"][3].removeprefix("http://images.test")).data
    assert decode_image(sent).tobytes() == Image.open(io.BytesIO(tile)).convert("RGB").tobytes()


def test_images_name_the_provider_that_made_them_and_only_local_ones_are_painted_again(
    settings, sd, request
):
    settings.update(QUICK, PROVIDER_IMAGINE="sdwebui", SDWEBUI_URL=sd.url)  # upscale stays local
    api = request.getfixturevalue("api")
    grid = api.imagine("a quiet lake", quality=0.25)
    upscale = api.wait(api.submit("/v1/upscale", {"jobId": grid["id"], "index": 2})["id"])
    for job in (grid, upscale):  # the upscale (made here) shows the grid's: its scene is sdwebui's
        image = Image.open(io.BytesIO(api.client.get(job["imageUrls"][-1].removeprefix("http://images.test")).data))
        fields = imagemeta.read(image)
        assert fields["Model"] == "apiframe-sdwebui" and fields["Seed"] and fields["Tile"]
        assert painted_with(image) is None  # so a local variation, pan or zoom works from its pixels


def test_a_variation_of_an_upscale_is_sent_the_grids_prompt(settings, sd, request):
    settings.update(QUICK, PROVIDER_VARIATION="sdwebui", SDWEBUI_URL=sd.url)
    api = request.getfixturevalue("api")
    parent = api.imagine("a quiet lake", quality=0.25)
    upscale = api.wait(api.submit("/v1/upscale", {"jobId": parent["id"], "index": 2})["id"])
    strong = {"parent_task_id": upscale["id"], "index": "strong"}  # the original API's route
    assert Original(api.client, api.key).run("/variations", strong)["status"] == "finished"
    assert sd.calls("/sdapi/v1/img2img")[0].json["prompt"] == "a quiet lake"


def test_a_local_parent_is_varied_by_midjourney_proxy_as_an_image_prompt(settings, request):
    fake = FakeMidjourneyProxy(secret=None)
    try:
        settings.update(
            QUICK, PROVIDER_VARIATION="midjourney-proxy", MJPROXY_URL=fake.url, MJPROXY_POLL_INTERVAL=0.01
        )
        api = request.getfixturevalue("api")
        parent = api.imagine("a quiet lake", quality=0.25)
        job = api.wait(api.submit("/v1/variation", {"jobId": parent["id"], "index": 1})["id"])
        assert job["status"] == "succeeded" and len(job["imageUrls"]) == 4
        assert not fake.calls("/mj/submit/change")
        body = fake.calls("/mj/submit/imagine")[0].json
        assert body["prompt"] == "a quiet lake --ar 1:1" and len(body["base64Array"]) == 1
        assert "mj-api-secret" not in fake.calls()[0].headers
    finally:
        fake.close()


def test_the_readme_settings_name_every_per_operation_provider_variable():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if line.startswith("| `APIFRAME_PROVIDER_IMAGINE`")]
    names = re.findall(r"`([^`]+)`", row)
    named = {name.removeprefix("APIFRAME_PROVIDER_").removeprefix("…_") for name in names}
    assert set(config.PROVIDER_OPERATIONS) <= named
