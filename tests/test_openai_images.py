"""The OpenAI Images API, through the official ``openai`` package, against the live server on loopback."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import re
import signal
import socket
import sqlite3
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import peewee
import psycopg2
import pytest
import requests
from openai import OpenAI
from PIL import Image

import accounts
import credits
import jobs
import operations
import schemas
import storage
import waits
import workers
from api import openai as openai_api
from config import DEFAULTS
from conftest import image_bytes, wait_until
from fakes.sdwebui import FakeSdWebUI
from models import Job, LedgerEntry, db
from providers import ProviderError
from servers import Server, cli, environment, free_port
from test_console import PASSWORD, Console, text

PNG = "image/png"
# The SDK marks create_variation (dall-e-2's endpoint) deprecated; it is still OpenAI's API.
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")


@pytest.fixture
def server(live):
    """The live app, its URL, and an SDK client for a new scale-plan account (which has 5000 credits)."""
    app, live_server = live
    with app.app_context():
        account, key = accounts.create("openai@example.com", plan="scale")
    client = OpenAI(api_key=key, base_url=f"{live_server.url}/v1", max_retries=0, timeout=60)
    return app, live_server.url, account, key, client


def decoded(image: openai.types.Image) -> Image.Image:
    """An answer's image, from its bytes or its URL."""
    if image.b64_json:
        return Image.open(io.BytesIO(base64.b64decode(image.b64_json)))
    data = requests.get(image.url, timeout=10).content
    return Image.open(io.BytesIO(data))


def balance(app, account) -> int:
    with app.app_context():
        return credits.balance(account.id)


def jobs_of(app, account) -> list[Job]:
    with app.app_context(), db.connection_context():  # none kept: it could be cut while the test runs
        return list(Job.select().where(Job.account == account.id).order_by(Job.created_at))


def upload(size=(300, 200), color=(200, 30, 40)) -> tuple[str, bytes, str]:
    return ("photo.png", image_bytes(size, color), PNG)


# ---- generations ---------------------------------------------------------------------------------


def test_generate_one_image_as_a_url_at_the_promised_size(server):
    app, url, account, _, client = server
    answer = client.images.generate(prompt="a lighthouse at dusk", n=1, size="256x256")
    assert len(answer.data) == 1 and answer.created <= time.time() + 1
    image = answer.data[0]
    assert image.url.startswith(f"{url}/images/") and image.b64_json is None
    assert image.revised_prompt == "a lighthouse at dusk"
    assert decoded(image).size == (512, 512)  # 256x256 is made at quality 0.25, as the README says
    (job,) = jobs_of(app, account)
    assert job.status == "succeeded" and job.cost == 16
    assert balance(app, account) == 5000 - 16


def test_generate_four_images_as_b64_json_in_a_wide_size(server):
    app, _, account, _, client = server
    answer = client.images.generate(
        prompt="a harbour at noon", n=4, size="1792x1024", quality="low", response_format="b64_json"
    )
    assert len(answer.data) == 4 and all(image.url is None for image in answer.data)
    sizes = {decoded(image).size for image in answer.data}
    assert sizes == {(512, 288)}  # 16:9 at quality 0.25 (low)
    assert len(jobs_of(app, account)) == 1  # four images: one imagine job


def test_generate_six_images_takes_two_jobs_with_different_images(server):
    app, _, account, key, client = server
    answer = client.images.generate(
        prompt="a field of poppies", n=6, size="512x512", response_format="b64_json"
    )
    assert len(answer.data) == 6
    digests = {hashlib.sha256(base64.b64decode(image.b64_json)).hexdigest() for image in answer.data}
    assert len(digests) == 6
    jobs = jobs_of(app, account)
    assert [job.status for job in jobs] == ["succeeded", "succeeded"]
    assert balance(app, account) == 5000 - 32
    listed = requests.get(f"{server[1]}/v1/jobs", headers={"X-API-Key": key}, timeout=10).json()["jobs"]
    assert {job["id"] for job in listed} == {str(job.id) for job in jobs}


def test_a_failed_job_gives_a_500_and_the_whole_request_is_refunded(server, monkeypatch):
    app, _, account, _, client = server
    run = workers.execute

    def second_job_fails(job, ctx):
        if job.params.get("seed") is not None:  # the request's second job draws a fresh seed
            raise ProviderError("the backend is down")
        return run(job, ctx)

    monkeypatch.setattr(workers, "execute", second_job_fails)
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(prompt="a field of poppies", n=6, size="512x512")
    assert "the backend is down" in caught.value.body["message"]
    # the other job succeeded first, or was cancelled as the request ended: nothing waits for it
    assert sorted(job.status for job in jobs_of(app, account)) in (
        ["failed", "succeeded"],
        ["cancelled", "failed"],
    )
    assert balance(app, account) == 5000  # no images answered, none paid for


@pytest.mark.parametrize(
    ("size", "expected"),
    [("1024x1792", (576, 1024)), ("1536x1024", (1024, 768)), ("auto", (1024, 1024))],
)
def test_sizes_make_the_aspect_ratio_and_size_the_readme_promises(server, size, expected):
    *_, client = server
    answer = client.images.generate(prompt="a mountain lake", size=size)
    assert decoded(answer.data[0]).size == expected


def test_bad_generation_requests_are_400_in_openai_shape(server):
    app, url, account, key, client = server
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="a cat", n=11)
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": "The 'n' field must be between 1 and 10.",
        "type": "invalid_request_error",
        "param": "n",
        "code": None,
    }
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="a cat", size="300x300")
    assert caught.value.body["param"] == "size" and "1024x1792" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="   ")
    assert caught.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="a cat", model="no-such-model")
    assert caught.value.body["param"] == "model" and "local" in caught.value.body["message"]
    headers = {"Authorization": f"Bearer {key}"}
    response = requests.post(f"{url}/v1/images/generations", data="{not json", headers=headers, timeout=10)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    assert jobs_of(app, account) == [] and balance(app, account) == 5000


def test_gpt_image_models_answer_base64_unless_a_url_is_asked_for(server):
    *_, client = server
    (image,) = client.images.generate(prompt="a heron", model="gpt-image-1", size="256x256").data
    assert image.url is None and decoded(image).size == (512, 512)  # as OpenAI's GPT image models answer
    (image,) = client.images.edit(image=upload(), prompt="a heron", model="gpt-image-2", size="256x256").data
    assert image.url is None and image.b64_json
    (image,) = client.images.generate(prompt="a heron", model="dall-e-3", size="256x256").data
    assert image.url and image.b64_json is None  # DALL-E's default, and no model's, stay URLs
    asked = client.images.generate(
        prompt="a heron", model="gpt-image-1", response_format="url", size="256x256"
    )
    assert asked.data[0].url and asked.data[0].b64_json is None


def test_openai_s_other_fields_are_taken_and_the_output_format_honoured(server):
    app, url, account, _, client = server
    options = {
        "background": "opaque",
        "moderation": "low",
        "safety_identifier": "user-1",
        "partial_images": 2,
    }
    answer = client.images.generate(
        prompt="a heron",
        model="gpt-image-1",
        size="256x256",
        stream=False,
        output_format="jpeg",
        output_compression=40,
        **options,
    )
    image = decoded(answer.data[0])
    assert image.format == "JPEG" and image.size == (512, 512)
    smaller = client.images.generate(
        prompt="a heron", model="gpt-image-1", size="256x256", output_format="jpeg"
    )
    assert len(answer.data[0].b64_json) < len(smaller.data[0].b64_json)  # quality 40, not the default
    (linked,) = client.images.generate(prompt="a heron", size="256x256", output_format="webp").data
    assert linked.url.startswith(f"{url}/images/") and linked.url.endswith(".webp")
    assert decoded(linked).format == "WEBP"
    (edited,) = client.images.edit(
        image=upload(),
        prompt="a heron",
        model="gpt-image-2",
        size="256x256",
        input_fidelity="high",
        background="auto",
        output_format="webp",
        output_compression=80,
        stream=False,
        partial_images=0,
        safety_identifier="user-1",
    ).data
    assert decoded(edited).format == "WEBP"
    assert balance(app, account) == 5000 - 4 * 16


def test_what_the_service_cannot_do_is_refused_before_any_job(server):
    app, _, account, _, client = server
    refused = [
        ({"background": "transparent"}, "background", "opaque"),
        ({"output_format": "gif"}, "output_format", "png, webp or jpeg"),
        ({"output_format": "tiff"}, "output_format", "png, webp, jpeg"),
        ({"output_compression": 101}, "output_compression", "between 0 and 100"),
        ({"partial_images": 4}, "partial_images", "between 0 and 3"),
        ({"moderation": "high"}, "moderation", "low, auto"),
    ]
    for fields, param, message in refused:
        with pytest.raises(openai.BadRequestError) as caught:
            client.images.generate(prompt="a heron", model="gpt-image-1", **fields)
        assert caught.value.body["param"] == param and message in caught.value.body["message"], fields
    for fields, param, message in [*refused[:1], ({"input_fidelity": "max"}, "input_fidelity", "high, low")]:
        with pytest.raises(openai.BadRequestError) as caught:
            client.images.edit(image=upload(), prompt="a heron", **fields)
        assert caught.value.body["param"] == param and message in caught.value.body["message"], fields
    assert jobs_of(app, account) == [] and balance(app, account) == 5000


def test_a_url_serves_a_stored_jpeg_as_stored(live):
    app, live_server = live
    app.config.update(IMAGE_FORMAT="jpeg")
    with app.app_context():
        _, key = accounts.create("jpeg@example.com", plan="scale")
    client = OpenAI(api_key=key, base_url=f"{live_server.url}/v1", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="a heron", output_compression=50)  # a url, of the stored file
    assert caught.value.body["param"] == "output_compression" and "b64_json" in caught.value.body["message"]
    (image,) = client.images.generate(prompt="a heron", size="256x256", output_format="png").data
    assert image.url.endswith(".png") and decoded(image).format == "PNG"


@pytest.mark.parametrize(
    ("model", "quality"),
    [("gpt-image-2", "high"), ("gpt-image-2.5-flare", "max"), ("chatgpt-image-latest", "xhigh")],
)
def test_newer_openai_model_names_and_qualities_are_taken(server, model, quality):
    app, *_, client = server
    answer = client.images.generate(prompt="a heron", model=model, quality=quality, size="1024x1024")
    assert decoded(answer.data[0]).size == (1024, 1024)  # xhigh and max: the highest quality, as high
    for name in ("gpt-imagery", "dall-e-4", "gpt-image-"):
        with pytest.raises(openai.BadRequestError) as caught:
            client.images.generate(prompt="a heron", model=name)
        assert caught.value.body["param"] == "model" and "gpt-image-*" in caught.value.body["message"]


# ---- edits and variations ------------------------------------------------------------------------


def test_edit_without_a_mask_is_a_prompted_variation_of_the_upload(server):
    app, _, account, _, client = server
    answer = client.images.edit(image=upload(), prompt="the same scene in blue", n=2, size="512x512")
    assert len(answer.data) == 2
    assert all(image.revised_prompt == "the same scene in blue" for image in answer.data)
    assert {decoded(image).size for image in answer.data} == {(512, 512)}
    (job,) = jobs_of(app, account)
    assert job.status == "succeeded" and job.prompt == "the same scene in blue" and job.parent is None
    assert job.params["upload"].endswith("/image.png")  # the upload is kept in image storage
    assert balance(app, account) == 5000 - 16


def mask_png(size=(300, 200), transparent=(0, 0, 150, 200), mode="RGBA") -> tuple[str, bytes, str]:
    """A mask as OpenAI defines one: opaque, the region to change (left, top, right, bottom) transparent."""
    image = Image.new(mode, size, (0, 0, 0, 255) if mode == "RGBA" else (0, 0, 0))
    if mode == "RGBA":
        image.paste((0, 0, 0, 0), transparent)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return ("mask.png", buffer.getvalue(), PNG)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG that says it is ``width`` x ``height``, with a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_edit_with_a_mask_repaints_only_the_transparent_region(server):
    app, _, account, _, client = server
    red = upload((300, 200), (200, 30, 40))
    answer = client.images.edit(
        image=red, mask=mask_png(), prompt="a boat on the water", size="512x512", response_format="b64_json"
    )
    assert len(answer.data) == 1 and answer.data[0].revised_prompt == "a boat on the water"
    image = decoded(answer.data[0]).convert("RGB")
    assert image.size == (512, 512)
    # the image is centre-cropped to 200x200 and scaled, so the transparent x < 150 is the left half
    kept = [image.getpixel((x, y)) for x in range(300, 500, 20) for y in range(20, 500, 40)]
    assert all(abs(r - 200) + abs(g - 30) + abs(b - 40) < 30 for r, g, b in kept)
    changed = [image.getpixel((x, y)) for x in range(10, 220, 20) for y in range(20, 500, 40)]
    assert sum(abs(r - 200) + abs(g - 30) + abs(b - 40) > 30 for r, g, b in changed) > len(changed) // 2
    (job,) = jobs_of(app, account)
    assert job.status == "succeeded" and job.params["upload"] and job.params["mask"] and job.cost == 16


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (mask_png(transparent=(0, 0, 0, 0)), "no transparent pixels"),
        (mask_png(transparent=(0, 0, 300, 200)), "transparent everywhere"),
        (mask_png(size=(200, 200)), "the image's size, 300x200"),
        (mask_png(mode="RGB"), "must have transparency"),
        (("mask.jpg", image_bytes((300, 200), image_format="JPEG"), "image/jpeg"), "must be a PNG"),
        (("mask.png", b"no image at all", PNG), "not an image in a supported format"),
        (("mask.png", png_claiming(100_000, 100_000), PNG), "too large to decode safely"),
    ],
)
def test_bad_masks_are_400_naming_the_mask(server, mask, message):
    app, _, account, _, client = server
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(image=upload(), mask=mask, prompt="a boat on the water")
    assert caught.value.body["param"] == "mask" and message in caught.value.body["message"]
    assert " at 0x" not in caught.value.body["message"]  # no Python object of ours in the message
    assert jobs_of(app, account) == [] and balance(app, account) == 5000


def test_create_variation_of_an_upload(server):
    app, _, account, _, client = server
    answer = client.images.create_variation(
        image=upload((640, 480)), n=5, size="256x256", response_format="b64_json"
    )
    assert len(answer.data) == 5 and {decoded(image).size for image in answer.data} == {(512, 512)}
    assert [job.status for job in jobs_of(app, account)] == ["succeeded", "succeeded"]
    assert balance(app, account) == 5000 - 32


def test_variation_with_auto_size_keeps_the_uploads_shape(server):
    *_, client = server
    answer = client.images.create_variation(image=upload((600, 340)))
    assert decoded(answer.data[0]).size == (1024, 576)  # nearest aspect ratio: 16:9


def test_bad_uploads_are_400_naming_the_field(server):
    app, url, account, key, client = server
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.create_variation(image=("notes.png", b"not an image at all", PNG))
    assert caught.value.body["param"] == "image" and "not usable" in caught.value.body["message"]
    headers = {"Authorization": f"Bearer {key}"}
    response = requests.post(f"{url}/v1/images/variations", data={"n": "2"}, headers=headers, timeout=10)
    assert response.status_code == 400 and response.json()["error"]["param"] == "image"
    response = requests.post(f"{url}/v1/images/variations", json={"n": 2}, headers=headers, timeout=10)
    assert response.status_code == 400 and "multipart/form-data" in response.json()["error"]["message"]
    two = [("image[]", upload()), ("image[]", upload())]
    response = requests.post(
        f"{url}/v1/images/edits", data={"prompt": "x"}, files=two, headers=headers, timeout=10
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "image"
    for n in ("two", "²", "--5", "1_0", "9" * 5000):  # int() takes some, refuses others with its own errors
        files = [("image", upload())]
        response = requests.post(
            f"{url}/v1/images/variations", data={"n": n}, files=files, headers=headers, timeout=10
        )
        assert response.json()["error"] == {
            "message": "The 'n' field must be a whole number.",
            "type": "invalid_request_error",
            "param": "n",
            "code": None,
        }, n
    assert jobs_of(app, account) == [] and balance(app, account) == 5000


def test_uploads_larger_than_the_json_limit_are_taken_up_to_their_own(server):
    app, url, _, key, client = server
    noise = Image.frombytes("RGB", (900, 900), random.Random(7).randbytes(900 * 900 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG", compress_level=0)
    assert buffer.tell() > 2 * 1024 * 1024
    answer = client.images.create_variation(image=("big.png", buffer.getvalue(), PNG), size="256x256")
    assert len(answer.data) == 1
    app.config["UPLOAD_MAX_BYTES"] = 1024 * 1024
    response = requests.post(
        f"{url}/v1/images/variations",
        files=[("image", ("big.png", buffer.getvalue(), PNG))],
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert response.status_code == 413
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_an_upload_of_exactly_the_limit_is_taken(tmp_path):
    """Under gunicorn too, where Werkzeug caps the body stream at the limit (and refused one reaching it)."""
    image = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(image, "PNG")
    upload = requests.Request(
        "POST", "http://127.0.0.1/v1/images/variations",
        files=[("image", ("teal.png", image.getvalue(), PNG))], data={"size": "256x256"},
    ).prepare()  # fmt: skip
    answers = []
    for limit in (len(upload.body), len(upload.body) - 1):
        env = environment(tmp_path / str(limit), free_port(), APIFRAME_UPLOAD_MAX_BYTES=str(limit))
        key = cli(env, "users", "create", "upload@example.com").strip().splitlines()[-1]
        server = Server(env, tmp_path / f"{limit}.log").start()
        try:
            upload.prepare_url(f"{server.url}/v1/images/variations", None)
            upload.headers["Authorization"] = f"Bearer {key}"
            with requests.Session() as session:
                answers.append(session.send(upload, timeout=30).status_code)
        finally:
            server.stop()
    assert answers == [200, 413]


# ---- models --------------------------------------------------------------------------------------


def test_models_list_the_configured_providers(server):
    *_, client = server
    models = client.models.list()
    assert [model.id for model in models.data] == ["local"] and models.data[0].object == "model"
    assert client.models.retrieve("local").id == "local"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("dall-e-9")
    assert caught.value.body["code"] == "model_not_found"
    answer = client.images.generate(prompt="a red kite", model="local", size="256x256")
    assert len(answer.data) == 1
    answer = client.images.generate(prompt="a red kite", model="dall-e-3", size="256x256")
    assert len(answer.data) == 1  # OpenAI's own model names run on the configured providers


@pytest.fixture
def two_providers(settings):
    """local for everything, but sdwebui (a fake of its HTTP API on loopback) for imagine."""
    fake = FakeSdWebUI()
    settings.update(
        PROVIDER_IMAGINE="sdwebui", SDWEBUI_URL=fake.url, SDWEBUI_POLL_INTERVAL=0.02, PROVIDER_RETRIES=1
    )
    yield fake
    fake.close()


def test_model_chooses_the_provider_where_several_are_configured(two_providers, live):
    app, live_server = live
    with app.app_context():
        account, key = accounts.create("models@example.com", plan="scale")
    client = OpenAI(api_key=key, base_url=f"{live_server.url}/v1", max_retries=0, timeout=60)
    assert [model.id for model in client.models.list().data] == ["local", "sdwebui"]
    client.images.generate(prompt="a quiet street", size="256x256")  # imagine's configured provider
    assert len(two_providers.calls("/sdapi/v1/txt2img")) == 1
    client.images.generate(prompt="a quiet street", size="256x256", model="local")
    client.images.generate(prompt="a quiet street", size="256x256", model="sdwebui")
    assert len(two_providers.calls("/sdapi/v1/txt2img")) == 2
    assert [job.provider for job in jobs_of(app, account)] == ["sdwebui", "local", "sdwebui"]


# ---- keys, credits, limits -----------------------------------------------------------------------


def test_a_wrong_key_raises_authentication_error(server):
    _, url, *_ = server
    client = OpenAI(api_key="ak_live_" + "x" * 40, base_url=f"{url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.images.generate(prompt="a cat")
    assert caught.value.status_code == 401 and caught.value.body["code"] == "invalid_api_key"


def test_too_few_credits_raise_rate_limit_error_as_an_exhausted_quota(live):
    app, live_server = live
    with app.app_context():
        account, key = accounts.create("poor@example.com", plan="free")  # 50 credits
        credits.grant(account.id, -30)
    client = OpenAI(api_key=key, base_url=f"{live_server.url}/v1", max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(prompt="a cat", n=5)  # two imagines: 32 credits
    assert caught.value.status_code == 429
    assert caught.value.body["type"] == caught.value.body["code"] == "insufficient_quota"
    assert "your balance is 20" in caught.value.body["message"]  # as it is, not as it was between the jobs
    assert balance(app, account) == 20  # the job it could pay for was never made: all or nothing
    assert jobs_of(app, account) == []


def test_a_refused_variation_keeps_no_upload(live):
    app, live_server = live
    with app.app_context():
        account, key = accounts.create("broke@example.com", plan="free")
        credits.grant(account.id, -45)  # 5 credits: not one variation
    client = OpenAI(api_key=key, base_url=f"{live_server.url}/v1", max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.create_variation(image=upload())
    assert caught.value.body["code"] == "insufficient_quota"
    images = Path(app.config["DATA_DIR"]) / "images"
    assert not list(images.glob("*/image.*"))  # the upload was removed with the request
    assert jobs_of(app, account) == [] and balance(app, account) == 5


def test_a_job_that_cannot_be_stored_undoes_the_requests_other_jobs(live, monkeypatch):
    app, live_server = live
    with app.app_context():
        account, key = accounts.create("full-disk@example.com", plan="scale")
    save_images, saved = storage.save_images, []

    def fails_third(owner, images, *args, **kwargs):  # the upload, the first job's mask, then the second's
        saved.append(owner)
        if len(saved) == 3:
            raise storage.StorageUnavailable("The image storage could not be written.")
        return save_images(owner, images, *args, **kwargs)

    monkeypatch.setattr(storage, "save_images", fails_third)
    client = OpenAI(api_key=key, base_url=f"{live_server.url}/v1", max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:  # n=5: two jobs
        client.images.edit(image=upload(), mask=mask_png(), prompt="a boat", n=5, size="512x512")
    assert caught.value.status_code == 503 and len(saved) == 3
    assert jobs_of(app, account) == []  # the first, made, is undone with the second
    assert balance(app, account) == 5000
    stored = Path(app.config["DATA_DIR"]) / "images"
    assert [path for path in stored.rglob("*") if path.is_file()] == []  # nor the upload, nor its mask


def test_two_requests_the_balance_covers_one_of_get_one_answer_and_one_refusal(
    database, app, make_account, monkeypatch
):
    account, key = make_account("scale")
    with app.app_context():
        credits.grant(account.id, 32 - credits.balance(account.id))  # one request's two imagines
    submit = jobs.submit
    first_paid, other_paid = threading.Event(), threading.Event()

    def pays_then_lets_the_other_request_pay(*args, **kwargs):
        job = submit(*args, **kwargs)
        if not first_paid.is_set():  # the first request's first job: let the other pay for its first
            first_paid.set()
            other_paid.wait(timeout=2)  # it cannot while this request's jobs are being accepted
        else:
            other_paid.set()
        return job

    monkeypatch.setattr(jobs, "submit", pays_then_lets_the_other_request_pay)

    def generate():
        return app.test_client().post(
            "/v1/images/generations",
            json={"prompt": "a lighthouse", "n": 8, "size": "256x256"},  # two jobs: 32 credits
            headers={"Authorization": f"Bearer {key}"},
        )

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(generate)
        assert first_paid.wait(timeout=30)
        answers = [pool.submit(generate).result(timeout=60), first.result(timeout=60)]
    assert sorted(answer.status_code for answer in answers) == [200, 429]
    (refused,) = [answer.get_json() for answer in answers if answer.status_code == 429]
    assert refused["error"]["code"] == "insufficient_quota"
    assert "your balance is 0" in refused["error"]["message"]
    assert [job.status for job in jobs_of(app, account)] == ["succeeded", "succeeded"]  # no cancelled ones
    assert balance(app, account) == 0


def test_workers_hear_of_a_requests_jobs_once_they_are_committed_and_of_refused_ones_never(
    database, app, make_account
):
    account, key = make_account("scale")
    heard = []

    def seen_by_another_connection(job_id):  # what a worker, on its own connection, would find
        with ThreadPoolExecutor(1) as other, app.app_context():
            return other.submit(lambda: Job.get_or_none(Job.id == job_id) is not None).result()

    def on_accepted(sender, job):
        heard.append(seen_by_another_connection(job.id))

    jobs.job_accepted.connect(on_accepted, sender=app)
    try:
        generate = {"prompt": "a lighthouse", "n": 8, "size": "256x256"}  # two jobs
        answer = app.test_client().post(
            "/v1/images/generations", json=generate, headers={"Authorization": f"Bearer {key}"}
        )
        assert answer.status_code == 200 and heard == [True, True]
        with app.app_context():
            credits.grant(account.id, 20 - credits.balance(account.id))  # one job's credits, not two
        refused = app.test_client().post(
            "/v1/images/generations", json=generate, headers={"Authorization": f"Bearer {key}"}
        )
        assert refused.status_code == 429 and heard == [True, True]
    finally:
        jobs.job_accepted.disconnect(on_accepted, sender=app)


def test_a_refused_edit_keeps_no_mask_of_the_job_it_could_pay_for(database, live):
    app, live_server = live
    with app.app_context():
        account, key = accounts.create("masked@example.com", plan="free")
        credits.grant(account.id, -30)  # 20 credits: one of the two inpaint jobs
    client = OpenAI(api_key=key, base_url=f"{live_server.url}/v1", max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.edit(image=upload(), mask=mask_png(), prompt="a boat", n=5, size="512x512")
    assert caught.value.body["code"] == "insufficient_quota"
    assert jobs_of(app, account) == [] and balance(app, account) == 20
    stored = Path(app.config["DATA_DIR"]) / "images"
    assert [path for path in stored.rglob("*") if path.is_file()] == []  # no mask of a job that is not


def test_the_rate_limit_raises_rate_limit_error(live):
    app, live_server = live
    with app.app_context():
        _, key = accounts.create("limited@example.com", plan="free")  # 10 creates a minute
    client = OpenAI(api_key=key, base_url=f"{live_server.url}/v1", max_retries=0)
    for _ in range(10):  # refused, but each is a create request, and counts
        with pytest.raises(openai.BadRequestError):
            client.images.generate(prompt=" ")
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(prompt="a fox")
    assert caught.value.body["code"] == "rate_limit_exceeded"
    assert int(caught.value.response.headers["Retry-After"]) > 0


# ---- waiting ---------------------------------------------------------------------------------------


@pytest.fixture
def one_slot(settings):
    """A server that lets one request wait at a time."""
    settings["SYNC_WAITERS"] = 1


def test_waiting_requests_are_bounded_and_the_api_still_answers(one_slot, live):
    app, live_server = live
    app.config.update(LOCAL_LATENCY=3.0)
    with app.app_context():
        _, key = accounts.create("busy@example.com", plan="scale")
    client = OpenAI(api_key=key, base_url=f"{live_server.url}/v1", max_retries=0, timeout=60)
    answers: list = []
    waiting = threading.Thread(target=lambda: answers.append(client.images.generate(prompt="a slow cat")))
    waiting.start()
    wait_until(lambda: app.extensions["apiframe.waits"].held == 1, what="the first request to wait")
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(prompt="one too many")
    assert caught.value.status_code == 503 and caught.value.body["code"] == "server_busy"
    assert caught.value.response.headers["Retry-After"] == "5"
    assert client.models.list().data  # other requests are answered while one waits
    waiting.join(30)
    assert len(answers) == 1 and len(answers[0].data) == 1


def test_a_request_that_waits_too_long_gets_504_and_its_credits_back(live):
    app, live_server = live
    app.config.update(LOCAL_LATENCY=5.0, SYNC_WAIT=0.5)
    with app.app_context():
        account, key = accounts.create("late@example.com", plan="scale")
    client = OpenAI(api_key=key, base_url=f"{live_server.url}/v1")  # the SDK's own retries, as by default
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(prompt="a very slow cat")
    assert caught.value.status_code == 504 and caught.value.body["code"] == "timeout"
    assert "APIFRAME_SYNC_WAIT" in caught.value.body["message"]
    # not retried: a retry would wait as long again (the SDK retries a 5xx unless told not to)
    assert caught.value.response.headers["X-Should-Retry"] == "false"
    assert [job.status for job in jobs_of(app, account)] == ["cancelled"]
    assert balance(app, account) == 5000


def test_a_job_cancelled_while_its_request_waits_ends_the_request_with_no_retry(live):
    app, live_server = live
    app.config.update(LOCAL_LATENCY=600.0)  # neither job would end on its own
    with app.app_context():
        account, key = accounts.create("changed-mind@example.com", plan="scale")
    client = OpenAI(api_key=key, base_url=f"{live_server.url}/v1")  # the SDK's own retries, as by default
    answers: list[Exception] = []

    def generate():
        try:
            client.images.generate(prompt="a cat I no longer want", n=5)  # two jobs
        except openai.APIStatusError as exc:
            answers.append(exc)

    waiting = threading.Thread(target=generate)
    waiting.start()
    wait_until(lambda: len(jobs_of(app, account)) == 2, timeout=10)
    job = jobs_of(app, account)[0]
    cancel = requests.post(
        f"{live_server.url}/v1/jobs/{job.id}/cancel", headers={"X-API-Key": key}, timeout=10
    )
    assert cancel.status_code == 200
    waiting.join(10)  # at once: not when the other job ends
    (answer,) = answers
    assert answer.status_code == 409 and answer.body["code"] == "job_cancelled"
    assert answer.response.headers["X-Should-Retry"] == "false"  # the SDK makes no new job on its own
    assert [job.status for job in jobs_of(app, account)] == ["cancelled", "cancelled"]  # the other one too
    assert balance(app, account) == 5000


def test_a_stopping_server_makes_no_job_for_a_request_that_could_not_wait(server):
    app, _, account, _, client = server
    app.extensions[waits.EXTENSION].stop()
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(prompt="a lighthouse")
    assert caught.value.status_code == 503 and caught.value.body["code"] == "server_stopping"
    assert caught.value.response.headers["X-Should-Retry"] == "true"
    assert jobs_of(app, account) == []


def test_a_graceful_stop_answers_a_waiting_request_at_once_for_its_sdk_to_send_again(tmp_path):
    env = environment(tmp_path / "data", free_port(), APIFRAME_LOCAL_LATENCY="600")  # the job never ends
    key = cli(env, "users", "create", "deploy@example.com").strip().splitlines()[-1]
    server = Server(env, tmp_path / "server.log").start()
    answers: list[openai.APIStatusError] = []

    def generate():
        client = OpenAI(api_key=key, base_url=f"{server.url}/v1", max_retries=0)
        try:
            client.images.generate(prompt="a lighthouse at dusk")
        except openai.APIStatusError as exc:
            answers.append(exc)

    try:
        waiting = threading.Thread(target=generate)
        waiting.start()
        jobs_url = f"{server.url}/v1/jobs"
        wait_until(lambda: requests.get(jobs_url, headers={"X-API-Key": key}, timeout=5).json()["jobs"])
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        waiting.join(30)
        assert time.monotonic() - started < 10  # not gunicorn's 20 s graceful timeout, and then no answer
        (answer,) = answers
        assert answer.status_code == 503 and answer.body["code"] == "server_stopping"
        assert answer.response.headers["X-Should-Retry"] == "true" and answer.response.headers["Retry-After"]
        server.process.wait(timeout=30)
    finally:
        server.stop()
    with sqlite3.connect(tmp_path / "data" / "apiframe.db") as database:
        assert database.execute("SELECT status FROM job").fetchall() == [("cancelled",)]
        assert database.execute("SELECT balance, refunded FROM account").fetchall() == [(50, 16)]  # free plan


def test_a_504_refunds_the_jobs_that_succeeded_too(server, monkeypatch):
    app, _, account, _, client = server
    app.config.update(SYNC_WAIT=6.0)  # time for the first job to paint on a loaded machine
    run, release = workers.execute, threading.Event()

    def second_job_is_late(job, ctx):
        if job.params.get("seed") is not None:  # the request's second job draws a fresh seed
            release.wait(15)
            raise ProviderError("too late")
        return run(job, ctx)

    monkeypatch.setattr(workers, "execute", second_job_is_late)
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            client.images.generate(prompt="a slow fox", n=8, size="256x256")
        assert caught.value.status_code == 504
        assert sorted(job.status for job in jobs_of(app, account)) == ["cancelled", "succeeded"]
        assert balance(app, account) == 5000  # the answer has none of the first job's images
    finally:
        release.set()


def test_a_job_ended_by_another_process_is_seen_without_the_signal(settings, make_account, app):
    app.extensions["apiframe.pool"].stop(wait=False)  # no worker here: "another process" ends the job
    account, _ = make_account("scale")
    with app.test_request_context():
        operation = operations.for_openai("generations")
        job = jobs.create(account, operation, schemas.load(operation.request(), {"prompt": "a cat"}))
        ender = threading.Timer(0.3, lambda: Job.update(status="succeeded").where(Job.id == job.id).execute())
        ender.start()
        started = time.monotonic()
        (ended,) = waits.waits().wait([job], timeout=10)
        assert ended.status == "succeeded" and time.monotonic() - started < waits.RECHECK + 4  # not 10 s


# ---- the database, while a request waits -------------------------------------------------------------


@pytest.fixture
def web_node(settings, monkeypatch):
    """A web node that runs no jobs until the test starts its pool (a worker node's, elsewhere), and whose
    waiting requests look at the database every 0.2 s."""
    settings["START_WORKERS"] = False
    monkeypatch.setattr(waits, "RECHECK", 0.2)


def waiting_request(app, email: str, url: str):
    """An SDK request (with its own retries, as by default) waiting in a thread once its job is accepted:
    the account, the thread, and what it got (the answer, or the error)."""
    with app.app_context():
        account, key = accounts.create(email, plan="scale")
    client = OpenAI(api_key=key, base_url=f"{url}/v1", timeout=60)
    got: list = []

    def generate():
        try:
            got.append(client.images.generate(prompt="a lighthouse in the fog"))
        except openai.APIStatusError as exc:
            got.append(exc)

    waiting = threading.Thread(target=generate)
    waiting.start()
    wait_until(lambda: jobs_of(app, account), what="the request's job")
    return account, waiting, got


def debits(app, account) -> list[int]:
    with app.app_context():
        rows = LedgerEntry.select().where((LedgerEntry.account == account.id) & (LedgerEntry.amount < 0))
        return [row.amount for row in rows]


def test_a_database_blip_while_a_request_waits_still_answers_its_images_for_one_debit(
    on_postgres, web_node, live, refusing, caplog
):
    app, live_server = live
    account, waiting, got = waiting_request(app, "blip@example.com", live_server.url)
    refusing()
    time.sleep(1.0)  # several looks at the database find it refusing
    refusing(False)
    app.extensions["apiframe.pool"].start()
    waiting.join(30)
    (answer,) = got
    assert isinstance(answer, openai.types.ImagesResponse) and len(answer.data) == 1
    assert decoded(answer.data[0]).size == (1024, 1024)
    assert [job.status for job in jobs_of(app, account)] == ["succeeded"]  # no second job, as a retry makes
    assert debits(app, account) == [-16] and balance(app, account) == 5000 - 16
    lines = [r for r in caplog.records if r.name == "waits"]
    assert [r.levelname for r in lines] == ["WARNING"] and "database unavailable" in lines[0].getMessage()
    assert not any(r.exc_info for r in lines)


def test_a_database_down_past_the_wait_gets_an_answer_the_sdk_does_not_retry(
    on_postgres, web_node, live, refusing
):
    app, live_server = live
    app.config.update(SYNC_WAIT=1.0)
    account, waiting, got = waiting_request(app, "outage@example.com", live_server.url)
    refusing()
    waiting.join(30)
    (answer,) = got
    assert answer.status_code == 503 and answer.body["code"] == "database_unavailable"
    # not sent again: its job could not be cancelled, and a retry would make and charge another
    headers = answer.response.headers
    assert headers["X-Should-Retry"] == "false" and "Retry-After" not in headers
    refusing(False)
    (job,) = jobs_of(app, account)
    assert "may still make the images" in answer.body["message"] and str(job.id) in answer.body["message"]
    assert job.status == "pending" and debits(app, account) == [-16]  # it runs once a worker can take it


def test_a_database_back_for_the_end_of_the_wait_cancels_and_refunds_as_a_504(server, monkeypatch, caplog):
    app, _, account, _, client = server
    app.config.update(LOCAL_LATENCY=600.0, SYNC_WAIT=1.0)
    monkeypatch.setattr(waits, "RECHECK", 0.2)

    def outage(job_ids):  # every look fails as on a connection that PostgreSQL cut, wrapped by peewee
        with peewee.__exception_wrapper__:
            raise psycopg2.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(waits, "_load", outage)
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(prompt="a lighthouse")
    assert caught.value.status_code == 504 and caught.value.response.headers["X-Should-Retry"] == "false"
    assert [job.status for job in jobs_of(app, account)] == ["cancelled"]
    assert balance(app, account) == 5000
    assert caplog.text.count("could not read its jobs: database unavailable") == 1


def test_a_key_whose_jobs_could_not_be_cancelled_makes_no_second_set(server, monkeypatch):
    """The answer says its jobs may still make their images and stay paid for: a retry under its
    Idempotency-Key must not make and charge others, even once the database is back."""
    app, _, account, _, client = server
    app.config.update(LOCAL_LATENCY=600.0, SYNC_WAIT=1.0)
    monkeypatch.setattr(waits, "RECHECK", 0.2)

    def outage(*_args, **_kwargs):  # as on a connection PostgreSQL cut, wrapped by peewee
        with peewee.__exception_wrapper__:
            raise psycopg2.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(waits, "_load", outage)
    finish = jobs.finish
    monkeypatch.setattr(jobs, "finish", outage)  # the cancel fails; the key's release does not
    key = {"Idempotency-Key": "one-lighthouse"}
    with pytest.raises(openai.APIStatusError) as caught:
        client.with_options(max_retries=0).images.generate(prompt="a lighthouse", extra_headers=key)
    assert caught.value.status_code == 503 and caught.value.response.headers["X-Should-Retry"] == "false"
    monkeypatch.setattr(jobs, "finish", finish)
    with pytest.raises(openai.ConflictError) as retried:
        client.with_options(max_retries=0).images.generate(prompt="a lighthouse", extra_headers=key)
    assert retried.value.body["code"] == "idempotency_key_in_use"
    assert "Retry-After" in retried.value.response.headers
    (job,) = jobs_of(app, account)  # still running, the one paid for
    assert job.status in ("pending", "processing") and balance(app, account) == 5000 - 16
    with app.app_context():  # it ends (here, its owner cancels it): the key's request has nothing left
        jobs.finish(job.id, jobs.CANCELLED)
    with pytest.raises(openai.ConflictError) as answered:  # at once, from that job, not after minutes
        client.with_options(max_retries=0).images.generate(prompt="a lighthouse", extra_headers=key)
    assert answered.value.body["code"] == "job_cancelled" and len(jobs_of(app, account)) == 1


NGINX_CONF = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "apiframe.conf"


def nginx_block(text: str, opening: str) -> str:
    """The body of the nginx block that ``opening`` (say ``location /v1/images/ {``) starts."""
    start = text.index(opening) + len(opening)
    depth = 1
    for end in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            return text[start:end]
    raise AssertionError(f"{opening!r} is never closed")


def nginx_size(value: str) -> int:
    """An nginx size (``20m``, ``512k``, ``1024``) in bytes."""
    return int(value.rstrip("kKmMgG")) * {"k": 1024, "m": 1024**2, "g": 1024**3}.get(value[-1].lower(), 1)


def test_nginx_waits_for_the_openai_routes_longer_than_they_wait_for_their_jobs():
    routes = nginx_block(NGINX_CONF.read_text(), "location /v1/images/ {")
    timeout = re.search(r"^\s*proxy_read_timeout (\d+)s;", routes, re.MULTILINE)
    assert timeout and int(timeout.group(1)) > DEFAULTS["SYNC_WAIT"] + 10  # the app's own 504 comes first


def test_nginx_takes_uploads_on_the_openai_upload_routes_only():
    conf = NGINX_CONF.read_text()
    routes = nginx_block(conf, "location /v1/images/ {")
    (pattern,) = re.findall(r"location ~ (\S+) \{", routes)
    routes_taking_uploads = [
        name for name in ("edits", "variations", "generations") if re.search(pattern, f"/v1/images/{name}")
    ]
    assert routes_taking_uploads == ["edits", "variations"]
    uploads = nginx_block(routes, f"location ~ {pattern} {{")
    (limit,) = re.findall(r"client_max_body_size (\w+);", uploads)
    assert nginx_size(limit) >= DEFAULTS["UPLOAD_MAX_BYTES"]
    (json_limit,) = re.findall(r"client_max_body_size (\w+);", conf.replace(uploads, ""))
    assert nginx_size(json_limit) == DEFAULTS["MAX_CONTENT_LENGTH"]  # the JSON API's stays


def test_nginx_never_tells_a_client_to_retry_what_it_had_no_answer_for():
    """A create whose web node did not answer (in time) may have made its jobs: a blind retry pays twice."""
    conf = NGINX_CONF.read_text()
    pages = re.findall(r"error_page ([\d ]*\b50[24]\b[\d ]*) =?\s*(@\w+);", conf)
    assert {page for _, page in pages} == {"@no_answer", "@openai_no_answer"}
    for statuses, page in pages:
        assert set(statuses.split()) == {"502", "504"}, statuses
        answer = nginx_block(conf, f"location {page} {{")
        told = answer.lower().replace("x-should-retry false", "")  # the OpenAI SDKs' "do not retry"
        assert "Retry-After" not in answer and "retry" not in told
        assert "Idempotency-Key" in answer and "GET /v1/jobs" in answer


def test_the_readme_states_what_each_size_makes():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for size, aspect_ratio, quality, pixels in openai_api.size_table():
        rows = [line for line in readme.splitlines() if line.startswith(f"| `{size}`")]
        assert len(rows) == 1, size
        cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
        assert cells[1:] == [aspect_ratio, f"{quality:g}", pixels], rows[0]


def test_the_jobs_show_in_the_console_gallery(client, make_account, app):
    account, key = make_account("hobby", email="gallery@example.com", password=PASSWORD)
    console = Console(client)
    assert console.login("gallery@example.com").status_code == 302
    headers = {"Authorization": f"Bearer {key}"}
    body = {"prompt": "a lone heron", "size": "256x256"}
    made = client.post("/v1/images/generations", json=body, headers=headers)
    assert made.status_code == 200 and len(made.get_json()["data"]) == 1
    varied = client.post(
        "/v1/images/variations",
        data={"image": (io.BytesIO(image_bytes((400, 225))), "photo.png"), "size": "256x256"},
        headers=headers,
    )
    assert varied.status_code == 200, varied.get_json()
    page = text(console.get("/console/jobs"))
    assert "a lone heron" in page and "Variations of an uploaded image" in page
    variation = jobs_of(app, account)[-1]
    job_page = text(console.get(f"/console/jobs/{variation.id}"))
    assert "Variations of an uploaded image" in job_page and "U2" in job_page  # it can be upscaled as usual


# ---- streaming -----------------------------------------------------------------------------------


def streamed_images(events) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(event.b64_json))) for event in events]


def raw_stream(url: str, key: str, body: dict) -> requests.Response:
    """A streamed generation as plain HTTP, its events read as they come."""
    answer = requests.post(
        f"{url}/v1/images/generations",
        json={**body, "stream": True},
        headers={"Authorization": f"Bearer {key}"},
        stream=True,
        timeout=30,
    )
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/event-stream")
    return answer


def test_a_streamed_generation_sends_each_image_as_a_completed_event(database, server):
    app, _, account, _, client = server
    stream = client.images.generate(
        prompt="a lighthouse at dusk", model="gpt-image-1", n=2, size="256x256", stream=True, partial_images=2
    )
    events = list(stream)  # no partial images: the backends make none, and OpenAI's API may send fewer
    assert [event.type for event in events] == ["image_generation.completed"] * 2
    images = streamed_images(events)
    assert [image.size for image in images] == [(512, 512)] * 2 and images[0].tobytes() != images[1].tobytes()
    for event in events:
        assert (event.size, event.output_format, event.background) == ("512x512", "png", "auto")
        assert event.quality == "low"  # 256x256 is made at quality 0.25, OpenAI's low
        assert event.usage.total_tokens == 0 and event.created_at <= time.time() + 1
        assert event.safety_identifier is None
    (job,) = jobs_of(app, account)
    assert job.status == "succeeded" and balance(app, account) == 5000 - 16


def test_a_streamed_edit_sends_image_edit_events_in_the_format_asked_for(server):
    app, _, account, _, client = server
    stream = client.images.edit(
        user="user-7",
        image=upload(),
        prompt="a heron",
        size="256x256",
        output_format="jpeg",
        background="opaque",
        stream=True,
    )
    (event,) = list(stream)
    assert (event.type, event.output_format, event.background) == ("image_edit.completed", "jpeg", "opaque")
    assert event.safety_identifier == "user-7"  # the deprecated user, as OpenAI's events name it
    (image,) = streamed_images([event])
    assert image.format == "JPEG" and f"{image.width}x{image.height}" == event.size
    assert balance(app, account) == 5000 - 16


def test_a_stream_cannot_answer_urls(server):
    app, _, account, _, client = server
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="a heron", response_format="url", stream=True)
    assert caught.value.body["param"] == "response_format" and "base64" in caught.value.body["message"]
    assert jobs_of(app, account) == []


def test_a_stream_keeps_its_connection_open_until_the_images_are_ready(server):
    app, url, _, key, _ = server
    app.config.update(LOCAL_LATENCY=1.0, EVENT_HEARTBEAT=0.2)
    answer = raw_stream(url, key, {"prompt": "a slow heron", "size": "256x256"})
    lines = [line for line in answer.iter_lines(decode_unicode=True) if line]
    assert lines[0] == ": waiting for the images"  # the answer's head came at once
    assert lines.count(": keep-alive") >= 3
    assert lines[-2:][0] == "event: image_generation.completed" and lines[-1].startswith("data: {")


def test_a_job_failing_ends_the_stream_with_an_error_event_and_refunds_it(server, monkeypatch):
    app, _, account, _, client = server

    def fails(job, ctx):
        raise ProviderError("the backend is down")

    monkeypatch.setattr(workers, "execute", fails)
    stream = client.images.generate(prompt="a field of poppies", n=5, size="256x256", stream=True)
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert "the backend is down" in caught.value.message
    assert caught.value.body["type"] == "server_error" and caught.value.body["code"] == "provider_error"
    assert balance(app, account) == 5000


def test_a_stream_that_waits_too_long_ends_with_an_error_and_its_credits_back(server):
    app, _, account, _, client = server
    app.config.update(LOCAL_LATENCY=5.0, SYNC_WAIT=0.5)
    with pytest.raises(openai.APIError) as caught:
        list(client.images.generate(prompt="a very slow cat", stream=True))
    assert caught.value.body["code"] == "timeout" and "APIFRAME_SYNC_WAIT" in caught.value.message
    assert [job.status for job in jobs_of(app, account)] == ["cancelled"]
    assert balance(app, account) == 5000


def test_a_stream_holds_its_waiting_slot_until_it_ends_or_its_client_goes(one_slot, live):
    app, live_server = live
    app.config.update(LOCAL_LATENCY=1.5, EVENT_HEARTBEAT=0.1)
    with app.app_context():
        account, key = accounts.create("stream-slot@example.com", plan="scale")
    client = OpenAI(api_key=key, base_url=f"{live_server.url}/v1", max_retries=0, timeout=60)
    slots = app.extensions[waits.EXTENSION]
    answer = raw_stream(live_server.url, key, {"prompt": "a slow cat"})
    wait_until(lambda: slots.held == 1, what="the stream to hold the slot")
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(prompt="one too many")
    assert caught.value.body["code"] == "server_busy"
    answer.close()  # the client goes: the slot is free at the next keep-alive; the job runs on, paid for
    wait_until(lambda: slots.held == 0, what="the slot to be given back")
    assert len(list(client.images.generate(prompt="a cat", stream=True))) == 1
    wait_until(lambda: {job.status for job in jobs_of(app, account)} == {"succeeded"}, timeout=10)
    assert balance(app, account) == 5000 - 2 * 16


def test_a_stopping_server_ends_a_stream_with_an_error_after_refunding_it(server):
    app, url, account, key, _ = server
    app.config.update(LOCAL_LATENCY=600.0)  # the job never ends on its own
    answer = raw_stream(url, key, {"prompt": "a lighthouse"})
    lines = answer.iter_lines(decode_unicode=True)
    assert next(lines) == ": waiting for the images"
    app.extensions[waits.EXTENSION].stop()
    event = [line for line in lines if line.startswith("data: ")][-1]
    error = json.loads(event.removeprefix("data: "))
    assert error["type"] == "error" and error["error"]["code"] == "server_stopping"
    assert [job.status for job in jobs_of(app, account)] == ["cancelled"]
    assert balance(app, account) == 5000


def test_an_image_that_cannot_be_read_for_the_events_ends_the_stream_with_an_error(server, monkeypatch):
    app, *_, client = server

    def missing(job_id, name):
        raise storage.MissingImage(f"{job_id}/{name}")

    monkeypatch.setattr(storage, "image_bytes", missing)  # an object store that lost it, or cannot answer
    with pytest.raises(openai.APIError) as caught:  # not a connection cut off halfway
        list(client.images.generate(prompt="a lighthouse", size="256x256", stream=True))
    assert caught.value.body["code"] == "internal_error"


def test_a_client_that_stops_reading_gives_its_waiting_slot_back_once_the_images_are_ready(one_slot, live):
    app, live_server = live
    with app.app_context():
        account, key = accounts.create("stalled@example.com", plan="scale")
    slots = app.extensions[waits.EXTENSION]
    with socket.create_connection(("127.0.0.1", live_server.port)) as stalled:
        body = json.dumps({"prompt": "ten large herons", "n": 10, "stream": True}).encode()
        stalled.sendall(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )  # and never reads the 10 images' events (some 15 MB)
        wait_until(lambda: len(jobs_of(app, account)) == 3, what="the request's jobs")
        wait_until(lambda: {job.status for job in jobs_of(app, account)} == {"succeeded"}, timeout=60)
        wait_until(lambda: slots.held == 0, what="the slot to come back while the answer is written")


def test_a_stream_logs_a_database_outage_once_however_often_it_beats(server, monkeypatch, caplog):
    app, _, account, _, client = server
    app.config.update(LOCAL_LATENCY=600.0, SYNC_WAIT=1.0, EVENT_HEARTBEAT=0.05)
    monkeypatch.setattr(waits, "RECHECK", 0.05)

    def outage(job_ids):
        with peewee.__exception_wrapper__:
            raise psycopg2.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(waits, "_load", outage)
    with pytest.raises(openai.APIError) as caught:
        list(client.images.generate(prompt="a lighthouse", stream=True))
    assert caught.value.body["code"] == "timeout"
    assert caplog.text.count("could not read its jobs: database unavailable") == 1


def test_a_retried_stream_with_its_idempotency_key_gets_the_same_images_for_one_debit(database, server):
    app, _, account, _, client = server
    key = {"Idempotency-Key": "stream-retry-1"}
    first = list(client.images.generate(prompt="a fox", size="256x256", stream=True, extra_headers=key))
    again = list(client.images.generate(prompt="a fox", size="256x256", stream=True, extra_headers=key))
    assert [event.b64_json for event in again] == [event.b64_json for event in first]
    assert len(jobs_of(app, account)) == 1 and balance(app, account) == 5000 - 16


def test_a_failed_streams_idempotency_key_is_free_again(database, server, monkeypatch):
    app, _, account, _, client = server
    key = {"Idempotency-Key": "stream-failed-1"}
    run = workers.execute
    monkeypatch.setattr(workers, "execute", lambda job, ctx: (_ for _ in ()).throw(ProviderError("down")))
    with pytest.raises(openai.APIError):
        list(client.images.generate(prompt="a fox", size="256x256", stream=True, extra_headers=key))
    monkeypatch.setattr(workers, "execute", run)
    (event,) = list(client.images.generate(prompt="a fox", size="256x256", stream=True, extra_headers=key))
    assert [job.status for job in jobs_of(app, account)] == ["failed", "succeeded"]
    assert balance(app, account) == 5000 - 16


# ---- idempotency keys ----------------------------------------------------------------------------


def test_a_retried_generation_with_its_idempotency_key_makes_one_job(server):
    app, _, account, _, client = server
    key = {"Idempotency-Key": "gen-retry-1"}
    first = client.images.with_raw_response.generate(prompt="a fox", n=1, size="256x256", extra_headers=key)
    again = client.images.with_raw_response.generate(prompt="a fox", n=1, size="256x256", extra_headers=key)
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert again.parse().data[0].url == first.parse().data[0].url
    assert len(jobs_of(app, account)) == 1
    with pytest.raises(openai.UnprocessableEntityError):
        client.images.generate(prompt="a cat", n=1, size="256x256", extra_headers=key)


def test_a_retried_upload_counts_by_its_contents_not_its_multipart_boundary(server):
    app, url, account, key, _ = server
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "variation-retry-1"}
    answers = [
        requests.post(
            f"{url}/v1/images/variations",
            headers=headers,
            files={"image": upload()},
            data={"size": "256x256", "n": "1"},
            timeout=60,
        )
        for _ in range(2)  # requests picks a new boundary each time
    ]
    assert [answer.status_code for answer in answers] == [200, 200]
    assert answers[1].headers["Idempotent-Replayed"] == "true"
    assert answers[1].json() == answers[0].json()
    assert len(jobs_of(app, account)) == 1
    other = requests.post(
        f"{url}/v1/images/variations",
        headers=headers,
        files={"image": upload(color=(10, 200, 30))},
        data={"size": "256x256", "n": "1"},
        timeout=60,
    )
    assert other.status_code == 422
