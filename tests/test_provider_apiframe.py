"""The apiframe adapter against a fake apiframe.ai v1 API: tasks, polling, failures, cancel."""

from __future__ import annotations

import base64
import io
import time

import pytest
from PIL import Image

from fakes import Ctx, png, provider_settings
from fakes.apiframe import FakeApiframe
from providers import (
    BlendRequest,
    DescribeRequest,
    FaceSwapRequest,
    ImagineRequest,
    InpaintRequest,
    JobCancelled,
    OutpaintRequest,
    ProviderError,
    ShortenRequest,
    UpscaleRequest,
    VariationRequest,
    create,
)
from servers import free_port

KEY = "af-key-abcdef123456"


@pytest.fixture
def af():
    fake = FakeApiframe(KEY)
    yield fake
    fake.close()


def make(fake, **overrides):
    return create("apiframe", provider_settings(APIFRAME_URL=fake.url, APIFRAME_KEY=KEY, **overrides))


def imagine(provider, prompt="a red fox", ctx=None, **fields):
    request = ImagineRequest(prompt=prompt, width=1024, height=576, aspect_ratio="16:9", **fields)
    return provider.run("imagine", request, ctx or Ctx())


def test_imagine_posts_the_task_and_polls_fetch_until_finished(af):
    ctx = Ctx()
    result = imagine(make(af, APIFRAME_PROCESS_MODE="relax"), ctx=ctx, style="raw")
    (submit,) = af.calls("/imagine")
    assert submit.headers["Authorization"] == KEY
    assert submit.json == {
        "prompt": "a red fox --v 6.1 --style raw",
        "aspect_ratio": "16:9",
        "process_mode": "relax",
    }
    fetches = af.calls("/fetch")
    assert [f.method for f in fetches] == ["POST"] * 4
    assert all(f.json == {"task_id": result.ref} and f.headers["Authorization"] == KEY for f in fetches)
    assert ctx.reported == [18, 54, 90]
    assert [tile.size for tile in result.tiles] == [(80, 60)] * 4
    assert [tile.getpixel((0, 30))[:3] for tile in result.tiles] == [
        (200, 40, 40),
        (40, 200, 40),
        (40, 40, 200),
        (200, 200, 40),
    ]


def test_a_seeded_imagine_records_its_seed(af):
    provider = make(af)
    assert imagine(provider, seed=424242).seed == 424242 and imagine(provider).seed is None
    assert af.calls("/imagine")[0].json["prompt"].endswith("--seed 424242")


def test_upscale_and_variation_use_the_parent_task_id_and_index(af):
    provider = make(af)
    parent = imagine(provider)
    tile = Image.new("RGB", (80, 60))
    made = {"parent_ref": parent.ref, "parent_provider": "apiframe"}
    upscaled = provider.run("upscale", UpscaleRequest(image=tile, index=2, **made), Ctx())
    varied = provider.run("variation", VariationRequest(image=tile, index=4, **made), Ctx())
    assert af.calls("/upscale-1x")[0].json == {"parent_task_id": parent.ref, "index": "2"}
    assert af.calls("/variations")[0].json == {"parent_task_id": parent.ref, "index": "4"}
    assert upscaled.image.size == (160, 120) and upscaled.ref and len(varied.tiles) == 4
    asked = VariationRequest(
        image=tile, index=1, prompt="a snowy owl", own_prompt=True, aspect_ratio="1:1", **made
    )
    provider.run("variation", asked, Ctx())
    assert af.calls("/variations")[1].json == {
        "parent_task_id": parent.ref, "index": "1", "prompt": "a snowy owl", "aspect_ratio": "1:1"
    }  # fmt: skip


def test_upscales_and_variations_of_an_upscale_use_the_upstream_alternatives(af):
    provider = make(af)
    parent = imagine(provider)
    tile = Image.new("RGB", (80, 60))
    grid = {"parent_ref": parent.ref, "parent_provider": "apiframe"}
    upscaled = provider.run("upscale", UpscaleRequest(image=tile, index=2, **grid), Ctx())
    made = {"parent_ref": upscaled.ref, "parent_provider": "apiframe"}
    creative = provider.run("upscale", UpscaleRequest(image=tile, index=2, mode="creative", **made), Ctx())
    assert af.calls("/upscale-alt")[0].json == {"parent_task_id": upscaled.ref, "type": "creative"}
    assert creative.image.size == (160, 120) and creative.ref not in (parent.ref, upscaled.ref)
    strong = provider.run("variation", VariationRequest(image=tile, index=2, mode="strong", **made), Ctx())
    assert af.calls("/variations")[0].json == {"parent_task_id": upscaled.ref, "index": "strong"}
    assert len(strong.tiles) == 4
    calls = len(af.calls())
    request = UpscaleRequest(image=tile, index=1, factor=4, mode="highres", **made)
    highres = provider.run("upscale", request, Ctx())
    assert highres.image.size == (320, 240) and len(af.calls()) == calls  # resampled here


def test_a_foreign_parent_is_upscaled_locally_and_cannot_be_varied(af):
    provider = make(af)
    tile = Image.new("RGB", (50, 40))
    made = {"parent_ref": None, "parent_provider": "local"}
    assert provider.run("upscale", UpscaleRequest(image=tile, index=1, **made), Ctx()).image.size == (100, 80)
    with pytest.raises(ProviderError, match="only make variations of images it made itself"):
        provider.run("variation", VariationRequest(image=tile, index=1, **made), Ctx())
    assert af.calls() == []


def test_describe_and_blend_pass_the_users_urls(af):
    provider = make(af)
    image = Image.new("RGB", (40, 60))
    described = provider.run(
        "describe", DescribeRequest(image=image, url="https://example.com/fox.png"), Ctx()
    )
    assert af.calls("/describe")[0].json == {"image_url": "https://example.com/fox.png"}
    assert described.descriptions[0] == "a red fox standing in deep snow, winter forest --ar 1:1"
    assert [text[:4] for text in described.descriptions] == ["a re", "wild", "wate", "cine"]  # no "1️⃣ "
    urls = ["https://example.com/a.png", "https://example.com/b.png"]
    landscape = BlendRequest(images=[image, image], urls=urls, width=1024, height=680)  # of portrait inputs
    blended = provider.run("blend", landscape, Ctx())
    assert af.calls("/blend")[0].json == {"image_urls": urls, "dimension": "landscape"}
    assert len(blended.tiles) == 4


def test_a_refused_prompt_shows_the_upstream_reason(af):
    with pytest.raises(
        ProviderError, match=r"apiframe provider refused the request \(HTTP 400\): Banned prompt"
    ):
        imagine(make(af), prompt="a bannedword")


def test_a_failed_task_carries_its_message(af):
    af.fail_message = "The job was flagged by Midjourney moderation"
    with pytest.raises(ProviderError, match="apiframe provider's task failed: The job was flagged"):
        imagine(make(af))


def test_a_wrong_key_is_refused_without_showing_it(af):
    provider = create("apiframe", provider_settings(APIFRAME_URL=af.url, APIFRAME_KEY="af-wrong-key-0000"))
    with pytest.raises(ProviderError) as failure:
        imagine(provider)
    assert "credentials" in str(failure.value) and "af-wrong" not in str(failure.value)


def test_transient_failures_are_retried_and_garbage_is_reported(af):
    af.fail(503, path="/imagine")  # refused before any work: sent again
    af.fail(429, path="/fetch", Retry_After="0")
    assert len(imagine(make(af)).tiles) == 4
    assert len(af.calls("/imagine")) == 2
    af.garbage(path="/fetch")
    with pytest.raises(ProviderError, match="apiframe provider sent an answer that is not valid JSON"):
        imagine(make(af))


@pytest.mark.parametrize("fault", ["500", "502", "hang"])
def test_a_submission_the_backend_may_have_acted_on_is_not_sent_again(af, fault):
    """apiframe.ai bills each task it makes: after an error or a timeout the task may exist already."""
    if fault == "hang":
        af.hang(path="/imagine")
        expected = "did not answer within 0.2 seconds; the request was not sent again"
    else:
        af.fail(int(fault), path="/imagine")
        expected = f"refused the request \\(HTTP {fault}\\)"
    with pytest.raises(ProviderError, match=expected):
        imagine(make(af, APIFRAME_TIMEOUT=0.2))
    assert len(af.calls("/imagine")) == 1


def test_a_submission_that_found_no_server_is_sent_again():
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: the task surely was not made
    provider = create("apiframe", provider_settings(APIFRAME_URL=closed, APIFRAME_KEY=KEY))
    with pytest.raises(ProviderError, match=r"\(connection failed\), 3 times; giving up"):
        imagine(provider)


def test_the_job_deadline_bounds_the_wait(af):
    af.hang(times=1, path="/imagine")
    started = time.monotonic()
    with pytest.raises(Exception) as stopped:
        imagine(make(af, APIFRAME_TIMEOUT=30), ctx=Ctx(seconds=0.5))
    assert type(stopped.value).__name__ == "JobTimedOut"
    assert time.monotonic() - started < 5  # the job's 0.5 s, not the read's 30 s


def test_cancel_stops_polling(af):
    af.percentages = ["1"] * 10_000
    ctx = Ctx()
    ctx.cancel_after(0.2)
    with pytest.raises(JobCancelled):
        imagine(make(af, APIFRAME_POLL_INTERVAL=0.05), ctx=ctx)
    count = len(af.calls())
    time.sleep(0.2)
    assert len(af.calls()) == count


def test_check_reads_the_account(af):
    assert make(af).check() == "account answering; 1200 credits left"
    assert af.calls("/account")[0].headers["Authorization"] == KEY


def upscaled(provider) -> dict:
    """An upscale made upstream: the parent fields of a pan, zoom or inpaint request."""
    parent = imagine(provider)
    tile = Image.new("RGB", (80, 60))
    made = {"parent_ref": parent.ref, "parent_provider": "apiframe"}
    result = provider.run("upscale", UpscaleRequest(image=tile, index=1, **made), Ctx())
    return {"parent_ref": result.ref, "parent_provider": "apiframe"}


def test_pan_zoom_and_inpaint_send_the_upscale_task_and_their_fields(af):
    provider = make(af)
    parent = upscaled(provider)
    image = Image.new("RGB", (160, 120))
    pan = provider.run(
        "outpaint",
        OutpaintRequest(image=image, pad=(80, 0, 0, 0), width=240, height=120, direction="left", **parent),
        Ctx(),
    )
    assert af.calls("/pan")[0].json == {"parent_task_id": parent["parent_ref"], "direction": "left"}
    assert len(pan.tiles) == 4 and pan.ref
    zoom = OutpaintRequest(
        image=image, pad=(80, 60, 80, 60), width=160, height=120, zoom=2, prompt="a bay", own_prompt=True,
        **parent,
    )
    provider.run("outpaint", zoom, Ctx())
    assert af.calls("/outpaint")[0].json == {
        "parent_task_id": parent["parent_ref"],
        "zoom_ratio": 2,
        "aspect_ratio": "4:3",
        "prompt": "a bay",
    }
    portrait = OutpaintRequest(
        image=image, pad=(0, 60, 0, 60), width=160, height=240, zoom=2, prompt="a red fox", **parent
    )
    provider.run("outpaint", portrait, Ctx())  # one of Midjourney's aspect ratios beyond the reference's five
    sent = af.calls("/outpaint")[1].json  # the parent's prompt is not sent: the task's own has its parameters
    assert sent["aspect_ratio"] == "2:3" and "prompt" not in sent
    wide = OutpaintRequest(image=image, pad=(130, 30, 130, 30), width=420, height=180, zoom=2, **parent)
    assert len(provider.run("outpaint", wide, Ctx()).tiles) == 4
    assert af.calls("/outpaint")[2].json["aspect_ratio"] == "21:9"
    mask = Image.new("L", (160, 120), 0)
    mask.paste(255, (40, 30, 120, 90))
    kite = InpaintRequest(image=image, mask=mask, prompt="a kite", own_prompt=True, **parent)
    provider.run("inpaint", kite, Ctx())
    sent = af.calls("/inpaint")[0].json
    assert sent["parent_task_id"] == parent["parent_ref"] and sent["prompt"] == "a kite"
    decoded = Image.open(io.BytesIO(base64.b64decode(sent["mask"])))
    assert decoded.size == (160, 120) and decoded.getpixel((80, 60)) == 255 and decoded.getpixel((0, 0)) == 0


def test_pan_of_an_image_made_elsewhere_fails_saying_so(af):
    provider = make(af)
    request = OutpaintRequest(
        image=Image.new("RGB", (8, 8)), pad=(0, 4, 0, 0), width=8, height=12, direction="up"
    )
    with pytest.raises(ProviderError, match="can only pan or zoom out of images it made itself"):
        provider.run("outpaint", request, Ctx())
    assert af.calls("/pan") == []


def test_shorten_and_faceswap(af):
    provider = make(af)
    shortened = provider.run("shorten", ShortenRequest(prompt="a red fox in a snowy forest"), Ctx())
    assert shortened.descriptions == [
        "red fox, snowy forest",
        "red fox in snow",
        "fox, deep snow",
        "red fox",
        "fox",
    ]
    face = Image.new("RGB", (8, 8))
    request = FaceSwapRequest(
        target=face, swap=face, target_url="https://example.com/t.png", swap_url="https://example.com/s.png"
    )
    swapped = provider.run("faceswap", request, Ctx())
    assert af.calls("/faceswap")[0].json == {
        "target_image_url": "https://example.com/t.png",
        "swap_image_url": "https://example.com/s.png",
    }
    assert swapped.image.size == (160, 120)


def test_a_lone_grid_is_fetched_and_one_too_small_to_cut_is_refused(af):
    af.grid = png((160, 120))
    request = ImagineRequest(prompt="a red fox", width=80, height=60)
    assert make(af).run("imagine", request, Ctx()).grid.size == (160, 120)
    af.grid = png((60000, 1))
    with pytest.raises(ProviderError, match=r"apiframe provider sent a 60000x1 grid; .* at least 32x32"):
        make(af).run("imagine", request, Ctx())
