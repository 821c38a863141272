"""The openai adapter against a fake OpenAI API: the requests it sends and how it fails."""

from __future__ import annotations

import io
import json
import time
from datetime import date

import pytest
from PIL import Image

import imaging
from fakes import Ctx, FakeBackend, provider_settings
from fakes.openai import DESCRIPTIONS, FakeOpenAI
from providers import (
    BlendRequest,
    DescribeRequest,
    ImagineRequest,
    InpaintRequest,
    OutpaintRequest,
    ProviderError,
    UpscaleRequest,
    VariationRequest,
    create,
    openai_images,
)

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def oa():
    fake = FakeOpenAI(KEY)
    yield fake
    fake.close()


def make(fake, **overrides):
    settings = {"OPENAI_BASE_URL": fake.url + "/v1", "OPENAI_API_KEY": KEY, **overrides}
    return create("openai", provider_settings(**settings))


def imagine_request(aspect="16:9", quality=1, **fields) -> ImagineRequest:
    width, height = imaging.dimensions(aspect, quality)
    return ImagineRequest(
        prompt="a red fox", width=width, height=height, aspect_ratio=aspect, quality=quality, **fields
    )


def test_imagine_with_the_default_gpt_image_model_asks_for_four_images_in_one_call(oa):
    result = make(oa, OPENAI_IMAGE_QUALITY="high").run("imagine", imagine_request("16:9"), Ctx())
    (call,) = oa.calls("/v1/images/generations")
    assert call.headers["Authorization"] == f"Bearer {KEY}"
    assert call.json == {
        "model": "gpt-image-2",
        "prompt": "a red fox",
        "size": "1536x1024",
        "quality": "high",
        "n": 4,
    }
    assert [tile.size for tile in result.tiles] == [(1024, 576)] * 4  # fitted to the asked aspect ratio


def test_dall_e_3_makes_one_image_per_call_and_asks_for_base64(oa):
    result = make(oa, OPENAI_IMAGE_MODEL="dall-e-3").run("imagine", imagine_request("9:16"), Ctx())
    calls = oa.calls("/v1/images/generations")
    assert len(calls) == 4
    assert all(
        c.json["n"] == 1 and c.json["size"] == "1024x1792" and c.json["model"] == "dall-e-3" for c in calls
    )
    assert all(c.json["response_format"] == "b64_json" for c in calls)
    assert len(result.tiles) == 4


def test_a_compatible_server_gets_the_exact_size_and_is_asked_for_base64(oa):
    result = make(oa, OPENAI_IMAGE_MODEL="my-local-model").run("imagine", imagine_request("4:3", 0.25), Ctx())
    body = oa.calls("/v1/images/generations")[0].json
    assert body["size"] == "512x384" and body["response_format"] == "b64_json" and body["n"] == 4
    assert [tile.size for tile in result.tiles] == [(512, 384)] * 4


def test_url_images_come_from_the_url_host_without_credentials():
    cdn = FakeBackend()
    fake = FakeOpenAI(KEY, url_host=cdn)
    fake.force_urls = True  # a compatible server that always answers with URLs
    try:
        result = make(fake, OPENAI_IMAGE_MODEL="dall-e-2").run("imagine", imagine_request("1:1", 0.5), Ctx())
        assert fake.calls("/v1/images/generations")[0].json["size"] == "512x512"
        assert len(cdn.calls()) == 4
        assert all("Authorization" not in call.headers for call in cdn.calls())
        assert [tile.size for tile in result.tiles] == [imaging.dimensions("1:1", 0.5)] * 4
    finally:
        fake.close()
        cdn.close()


def test_variation_is_an_edit_of_the_tile(oa):
    tile = Image.new("RGB", (512, 384), (10, 200, 30))
    result = make(oa).run("variation", VariationRequest(image=tile, index=1, prompt="a green field"), Ctx())
    (call,) = oa.calls("/v1/images/edits")
    assert call.form["model"] == "gpt-image-2" and call.form["n"] == "4" and call.form["size"] == "1536x1024"
    assert "a green field" in call.form["prompt"] and "response_format" not in call.form
    assert [name for name, _ in call.files] == ["image"]
    assert [t.size for t in result.tiles] == [(512, 384)] * 4


def test_a_subtle_and_a_strong_variation_are_asked_for_in_words(oa):
    tile = Image.new("RGB", (512, 384), (10, 200, 30))
    provider = make(oa)
    for strength in (None, 0.25, 0.75):
        provider.run("variation", VariationRequest(image=tile, index=1, strength=strength), Ctx())
    plain, subtle, strong = (call.form["prompt"] for call in oa.calls("/v1/images/edits"))
    assert plain.startswith("A close variation") and subtle.startswith("A very close variation")
    assert strong.startswith("A free variation")


def test_blend_sends_every_image_to_edits_at_the_blends_shape(oa):
    images = [Image.new("RGB", (300, 400), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    width, height = imaging.dimensions("3:2")  # a landscape blend of portrait inputs
    result = make(oa).run("blend", BlendRequest(images=images, width=width, height=height), Ctx())
    (call,) = oa.calls("/v1/images/edits")
    assert [name for name, _ in call.files] == ["image[]"] * 3 and call.form["size"] == "1536x1024"
    assert [t.size for t in result.tiles] == [(width, height)] * 4


def test_dall_e_2_varies_and_blends_through_variations(oa):
    provider = make(oa, OPENAI_IMAGE_MODEL="dall-e-2")
    provider.run("variation", VariationRequest(image=Image.new("RGB", (300, 200)), index=1), Ctx())
    images = [Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 255))]
    provider.run("blend", BlendRequest(images=images), Ctx())
    calls = oa.calls("/v1/images/variations")
    assert len(calls) == 2 and not oa.calls("/v1/images/edits")
    assert all(
        c.form == {"model": "dall-e-2", "size": "1024x1024", "response_format": "b64_json", "n": "4"}
        for c in calls
    )


def test_dall_e_3_cannot_vary_or_blend(oa):
    provider = make(oa, OPENAI_IMAGE_MODEL="dall-e-3")
    assert not provider.supports("variation") and not provider.supports("blend")
    assert provider.supports("imagine") and provider.supports("describe")


def test_upscale_is_done_locally(oa):
    result = make(oa).run("upscale", UpscaleRequest(image=Image.new("RGB", (100, 80)), index=1), Ctx())
    assert result.image.size == (200, 160) and oa.calls() == []


def test_describe_asks_the_vision_model_with_an_image_url_part(oa):
    image = Image.new("RGB", (640, 360), (200, 30, 30))
    result = make(oa, OPENAI_VISION_MODEL="gpt-4.1-mini").run("describe", DescribeRequest(image=image), Ctx())
    body = oa.calls("/v1/chat/completions")[0].json
    assert body["model"] == "gpt-4.1-mini"
    text, picture = body["messages"][0]["content"]
    assert text["type"] == "text" and "four" in text["text"]
    assert picture["type"] == "image_url" and picture["image_url"]["url"].startswith("data:image/png;base64,")
    assert result.descriptions == [f"{d} --ar 16:9" for d in DESCRIPTIONS]


def test_describe_reads_numbered_lines_too(oa):
    oa.describe_answer = "\n".join(f"{i}. {text}" for i, text in enumerate(DESCRIPTIONS, start=1))
    result = make(oa).run("describe", DescribeRequest(image=Image.new("RGB", (64, 64))), Ctx())
    assert result.descriptions == [f"{d} --ar 1:1" for d in DESCRIPTIONS]


def test_describe_with_too_few_prompts_fails_clearly(oa):
    oa.describe_answer = json.dumps(DESCRIPTIONS[:2])
    with pytest.raises(ProviderError, match="openai provider described the image with 2 prompt"):
        make(oa).run("describe", DescribeRequest(image=Image.new("RGB", (64, 64))), Ctx())


def test_moderation_refusal_is_a_clear_error(oa):
    request = ImagineRequest(prompt="something forbidden", width=1024, height=1024)
    with pytest.raises(ProviderError, match="openai provider refused the request under its content policy"):
        make(oa).run("imagine", request, Ctx())
    assert len(oa.calls("/v1/images/generations")) == 1


def test_a_wrong_key_fails_without_showing_any_of_it(oa):
    with pytest.raises(ProviderError) as failure:
        create(
            "openai", provider_settings(OPENAI_BASE_URL=oa.url + "/v1", OPENAI_API_KEY="sk-wrong-key-999")
        ).run("imagine", imagine_request(), Ctx())
    assert "credentials" in str(failure.value) and "sk-" not in str(failure.value)


def test_429_then_success(oa):
    oa.fail(429, path="/v1/images/generations", Retry_After="0")
    assert len(make(oa).run("imagine", imagine_request(), Ctx()).tiles) == 4
    assert len(oa.calls("/v1/images/generations")) == 2


@pytest.mark.parametrize(
    "headers", [{"Retry-After": "3600"}, {"Retry-After-Ms": "86400000"}, {"X-Should-Retry": "false"}]
)
def test_a_spent_quota_is_not_retried_and_says_so(oa, headers):
    oa.quota_headers = headers
    with pytest.raises(ProviderError, match=r"\(HTTP 429\): You exceeded your current quota, please check"):
        make(oa).run("imagine", imagine_request(), Ctx())
    assert len(oa.calls("/v1/images/generations")) == 1


def test_the_servers_x_should_retry_is_obeyed(oa):
    oa.fail(503, path="/v1/images/generations", X_Should_Retry="false")
    with pytest.raises(ProviderError, match=r"refused the request \(HTTP 503\): upstream trouble"):
        make(oa).run("imagine", imagine_request(), Ctx())
    oa.fail(400, path="/v1/images/generations", X_Should_Retry="true")
    assert len(make(oa).run("imagine", imagine_request(), Ctx()).tiles) == 4
    assert len(oa.calls("/v1/images/generations")) == 3


@pytest.mark.parametrize("status", [408, 409])
def test_a_request_timeout_or_a_conflict_is_retried(oa, status):
    oa.fail(status, path="/v1/images/generations")
    assert len(make(oa).run("imagine", imagine_request(), Ctx()).tiles) == 4
    assert len(oa.calls("/v1/images/generations")) == 2


def test_retry_after_ms_is_read_before_retry_after(oa):
    oa.fail(429, path="/v1/images/generations", Retry_After_Ms="400", Retry_After="0")
    started = time.monotonic()
    make(oa).run("imagine", imagine_request(), Ctx())
    assert time.monotonic() - started >= 0.4


def test_garbage_and_missing_fields_are_clear_errors(oa):
    oa.garbage(path="/v1/images/generations")
    oa.fail(400, path="/v1/images/generations")  # after the garbage: not retried
    with pytest.raises(ProviderError, match="not valid JSON"):
        make(oa).run("imagine", imagine_request(), Ctx())
    with pytest.raises(ProviderError, match=r"refused the request \(HTTP 400\)"):
        make(oa).run("imagine", imagine_request(), Ctx())


def test_gives_up_on_a_persistent_outage(oa):
    oa.fail(502, times=3)
    with pytest.raises(ProviderError, match="answered HTTP 502, 3 times; giving up: upstream trouble$"):
        make(oa).run("imagine", imagine_request(), Ctx())


def test_check_lists_models(oa):
    assert make(oa).check().startswith("4 model(s) available")
    assert oa.calls("/v1/models")[0].headers["Authorization"] == f"Bearer {KEY}"


def test_a_retried_edit_sends_its_images_again(oa):
    oa.fail(500, path="/v1/images/edits")
    tile = Image.new("RGB", (256, 256), (10, 20, 30))
    make(oa).run("variation", VariationRequest(image=tile, index=1), Ctx())
    first, second = oa.calls("/v1/images/edits")
    assert first.files == second.files and first.form == second.form and len(second.files) == 1
    assert second.headers["Authorization"] == f"Bearer {KEY}"


def structured(size: tuple[int, int]) -> Image.Image:
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image.paste((200, 40, 40), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    return image


def test_pan_is_a_masked_edit_of_the_padded_canvas_that_keeps_the_parent(oa):
    image = structured((512, 512))
    request = OutpaintRequest(image=image, pad=(256, 0, 0, 0), width=768, height=512, direction="left")
    result = make(oa, OPENAI_IMAGE_MODEL="gpt-image-1").run("outpaint", request, Ctx())
    call = oa.calls("/v1/images/edits")[0]
    assert call.form["size"] == "1536x1024"
    files = dict(call.files)
    mask = Image.open(io.BytesIO(files["mask"]))
    assert (
        mask.size == (1536, 1024)
        and mask.getpixel((100, 500))[3] == 0
        and mask.getpixel((1000, 500))[3] == 255
    )
    assert [tile.size for tile in result.tiles] == [(768, 512)] * 4
    for tile in result.tiles:
        assert tile.crop((256, 0, 768, 512)).tobytes() == image.tobytes()


def test_vary_region_is_a_masked_edit_that_keeps_the_rest(oa):
    image = structured((256, 256))
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (64, 64, 192, 192))
    result = make(oa, OPENAI_IMAGE_MODEL="dall-e-2").run(
        "inpaint", InpaintRequest(image=image, mask=mask), Ctx()
    )
    files = dict(oa.calls("/v1/images/edits")[0].files)
    stencil = Image.open(io.BytesIO(files["mask"]))
    assert stencil.getpixel((512, 512))[3] == 0 and stencil.getpixel((10, 10))[3] == 255
    for tile in result.tiles:
        assert tile.getpixel((5, 5)) == image.getpixel((5, 5))
        assert tile.getpixel((128, 128)) != image.getpixel((128, 128))


def test_dall_e_3_cannot_pan_or_inpaint(oa):
    provider = make(oa, OPENAI_IMAGE_MODEL="dall-e-3")
    assert not provider.supports("outpaint") and not provider.supports("inpaint")


def test_an_answer_past_the_cap_is_refused_without_reading_the_rest(oa):
    oa.flood(64, path="/v1/images/generations")
    with pytest.raises(ProviderError, match=r"openai provider's answer is larger than \d+ bytes"):
        make(oa, PROVIDER_MAX_BYTES=3000).run("imagine", imagine_request(), Ctx())
    assert oa.flooded < 16 * 1024 * 1024


@pytest.mark.parametrize("model", ["chatgpt-image-latest", "gpt-image-1.5", "gpt-image-1-mini"])
def test_every_gpt_image_model_gets_its_sizes_and_no_response_format(oa, model):
    provider = make(oa, OPENAI_IMAGE_MODEL=model)
    result = provider.run("imagine", imagine_request("4:3", 0.25), Ctx())
    provider.run("variation", VariationRequest(image=Image.new("RGB", (300, 400)), index=1), Ctx())
    generation, edit = oa.calls("/v1/images/generations")[0].json, oa.calls("/v1/images/edits")[0].form
    assert generation["model"] == model and generation["size"] == "1536x1024"
    assert edit["model"] == model and edit["size"] == "1024x1536"
    assert "response_format" not in generation and "response_format" not in edit
    assert [tile.size for tile in result.tiles] == [(512, 384)] * 4


def test_the_quality_goes_with_edits_too_for_gpt_image_models(oa):
    provider = make(oa, OPENAI_IMAGE_QUALITY="low")
    provider.run("variation", VariationRequest(image=Image.new("RGB", (256, 256)), index=1), Ctx())
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (64, 64, 192, 192))
    provider.run("inpaint", InpaintRequest(image=structured((256, 256)), mask=mask), Ctx())
    assert [call.form["quality"] for call in oa.calls("/v1/images/edits")] == ["low", "low"]


def test_dall_e_2_edits_are_sent_no_quality(oa):
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (64, 64, 192, 192))
    request = InpaintRequest(image=structured((256, 256)), mask=mask)
    make(oa, OPENAI_IMAGE_MODEL="dall-e-2", OPENAI_IMAGE_QUALITY="standard").run("inpaint", request, Ctx())
    assert "quality" not in oa.calls("/v1/images/edits")[0].form


@pytest.mark.parametrize(
    ("model", "quality", "allowed"),
    [
        ("gpt-image-1", "hd", "low, medium, high, auto"),
        ("chatgpt-image-latest", "standard", "low, medium, high, auto"),
        ("dall-e-3", "high", "standard, hd"),
        ("dall-e-2", "hd", "standard"),
    ],
)
def test_a_quality_the_model_does_not_take_stops_start_up(oa, model, quality, allowed):
    with pytest.raises(ValueError) as failure:
        make(oa, OPENAI_IMAGE_MODEL=model, OPENAI_IMAGE_QUALITY=quality)
    assert str(failure.value) == (
        f"APIFRAME_OPENAI_IMAGE_QUALITY must be one of {allowed} for {model}, got {quality!r}"
    )


def test_a_compatible_server_gets_its_own_quality_unchecked(oa):
    make(oa, OPENAI_IMAGE_MODEL="my-local-model", OPENAI_IMAGE_QUALITY="ultra").run(
        "imagine", imagine_request(), Ctx()
    )
    assert oa.calls("/v1/images/generations")[0].json["quality"] == "ultra"


@pytest.mark.parametrize(
    ("model", "base_url", "warned"),
    [
        ("dall-e-3", "https://api.openai.com/v1", "removed from its API on 2026-05-12"),
        ("dall-e-2", "https://API.OpenAI.com/v1/", "removed from its API on 2026-05-12"),
        ("gpt-image-1", "https://api.openai.com/v1", "removed from its API on 2026-10-23"),
        ("gpt-image-1.5", "https://api.openai.com/v1", "removes from its API on 2026-12-01"),
        ("gpt-image-2", "https://api.openai.com/v1", None),
        ("dall-e-3", "http://images.internal:8080/v1", None),  # a compatible server keeps the old names
    ],
)
def test_a_model_openai_has_retired_is_warned_about_at_start_up(caplog, monkeypatch, model, base_url, warned):
    class November(date):
        @classmethod
        def today(cls):
            return cls(2026, 11, 29)

    monkeypatch.setattr(openai_images, "date", November)
    caplog.set_level("WARNING", logger="providers.openai_images")
    settings = provider_settings(OPENAI_BASE_URL=base_url, OPENAI_API_KEY=KEY, OPENAI_IMAGE_MODEL=model)
    create("openai", settings)
    expected = [
        f"APIFRAME_OPENAI_IMAGE_MODEL is {model}, which OpenAI {warned}: its jobs fail from then on; "
        "choose gpt-image-2"
    ]
    assert [record.getMessage() for record in caplog.records] == (expected if warned else [])
