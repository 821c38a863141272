"""The sdwebui adapter against a fake AUTOMATIC1111 API: the requests it sends and how it fails."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

import imaging
from fakes import Ctx, decode_image, provider_settings
from fakes.sdwebui import SUBFOLDER_MODEL, FakeSdWebUI
from providers import (
    BlendRequest,
    DescribeRequest,
    ImagineRequest,
    InpaintRequest,
    JobCancelled,
    OutpaintRequest,
    ProviderError,
    UpscaleRequest,
    VariationRequest,
    create,
    sdwebui,
)


@pytest.fixture
def sd():
    fake = FakeSdWebUI()
    yield fake
    fake.close()


def make(fake, **overrides):
    return create("sdwebui", provider_settings(SDWEBUI_URL=fake.url, **overrides))


def imagine_request(aspect="16:9", quality=1, **fields) -> ImagineRequest:
    width, height = imaging.dimensions(aspect, quality)
    return ImagineRequest(
        prompt="a red fox", width=width, height=height, aspect_ratio=aspect, quality=quality, **fields
    )


def test_imagine_sends_txt2img_with_a_batch_of_four_and_records_the_seed(sd):
    provider = make(
        sd, SDWEBUI_STEPS=30, SDWEBUI_CFG_SCALE=6.5, SDWEBUI_SAMPLER="DPM++ 2M", SDWEBUI_MODEL="v1-5"
    )
    result = provider.run("imagine", imagine_request("16:9", 0.5), Ctx())
    (call,) = sd.calls("/sdapi/v1/txt2img")
    assert call.method == "POST" and call.headers["Content-Type"] == "application/json"
    body = call.json
    assert body["prompt"] == "a red fox" and body["batch_size"] == 4 and body["n_iter"] == 1
    assert (body["width"], body["height"]) == imaging.dimensions("16:9", 0.5) == (728, 408)
    assert body["steps"] == 30 and body["cfg_scale"] == 6.5 and body["sampler_name"] == "DPM++ 2M"
    assert body["seed"] == -1 and body["send_images"] is True and body["save_images"] is False
    assert body["override_settings"] == {
        "sd_model_checkpoint": "v1-5",
        "return_mask": False,
        "return_mask_composite": False,
        "return_grid": False,
    }
    assert "Authorization" not in call.headers
    assert len(result.tiles) == 4 and all(tile.size == (728, 408) for tile in result.tiles)
    assert result.seed == 1234567


def test_a_requested_seed_is_sent_and_recorded(sd):
    result = make(sd).run("imagine", imagine_request("1:1", seed=42), Ctx())
    assert sd.calls("/sdapi/v1/txt2img")[0].json["seed"] == 42
    assert result.seed == 42 and [tile.size for tile in result.tiles] == [(1024, 1024)] * 4


def test_server_settings_that_add_masks_or_a_grid_are_turned_off_for_each_generation(sd):
    sd.options.update(return_mask=True, return_mask_composite=True, return_grid=True)
    image = photo_like((128, 96))
    mask = Image.new("L", (128, 96), 0)
    mask.paste(255, (32, 24, 96, 72))
    result = make(sd).run("inpaint", InpaintRequest(image=image, mask=mask, prompt="a kite"), Ctx())
    inside = [tile.getpixel((64, 48)) for tile in result.tiles]
    assert len(set(inside)) == 4 and (255, 255, 255) not in inside  # four generated images, no mask
    settings = sd.calls("/sdapi/v1/img2img")[0].json["override_settings"]
    assert settings == {"return_mask": False, "return_mask_composite": False, "return_grid": False}


def test_basic_auth_is_sent_and_the_password_never_appears_in_errors(sd):
    sd.auth = ("artist", "s3cret-pw")
    provider = make(sd, SDWEBUI_AUTH="artist:s3cret-pw")
    provider.run("imagine", imagine_request(), Ctx())
    expected = "Basic " + base64.b64encode(b"artist:s3cret-pw").decode()
    assert sd.calls("/sdapi/v1/txt2img")[0].headers["Authorization"] == expected
    wrong = make(sd, SDWEBUI_AUTH="artist:wrong")
    with pytest.raises(ProviderError) as failure:
        wrong.run("imagine", imagine_request(), Ctx())
    assert "credentials" in str(failure.value) and "sdwebui" in str(failure.value)
    assert "wrong" not in str(failure.value)


def test_variation_is_img2img_of_the_tile_with_the_configured_strength(sd):
    tile = Image.new("RGB", (512, 384), (10, 200, 30))
    request = VariationRequest(image=tile, index=2, prompt="a green field")
    result = make(sd, SDWEBUI_DENOISING_STRENGTH=0.4).run("variation", request, Ctx())
    body = sd.calls("/sdapi/v1/img2img")[0].json
    assert body["denoising_strength"] == 0.4 and body["batch_size"] == 4 and body["prompt"] == "a green field"
    assert decode_image(body["init_images"][0]).getpixel((5, 5)) == (10, 200, 30)
    assert (body["width"], body["height"]) == (512, 384)
    assert len(result.tiles) == 4 and result.tiles[0].size == (512, 384)


def test_a_variation_asked_for_a_strength_is_sent_with_it(sd):
    tile = Image.new("RGB", (512, 384), (10, 200, 30))
    provider = make(sd, SDWEBUI_DENOISING_STRENGTH=0.4)
    for strength in (0.25, 0.75):  # a subtle and a strong variation of an upscale
        provider.run("variation", VariationRequest(image=tile, index=1, strength=strength), Ctx())
    assert [call.json["denoising_strength"] for call in sd.calls("/sdapi/v1/img2img")] == [0.25, 0.75]


def test_blend_is_img2img_of_an_even_mix_of_the_inputs_at_the_blends_shape(sd):
    images = [Image.new("RGB", (400, 400), (255, 0, 0)), Image.new("RGB", (300, 300), (0, 0, 255))]
    landscape = BlendRequest(images=images, width=1024, height=680)
    make(sd, SDWEBUI_BLEND_STRENGTH=0.8).run("blend", landscape, Ctx())
    body = sd.calls("/sdapi/v1/img2img")[0].json
    mixed = decode_image(body["init_images"][0])
    red, _, blue = mixed.getpixel((10, 10))
    assert abs(red - 128) <= 2 and abs(blue - 127) <= 2 and mixed.size == (1024, 680)
    assert body["denoising_strength"] == 0.8 and (body["width"], body["height"]) == (1024, 680)


def test_upscale_uses_extra_single_image_with_the_configured_upscaler(sd):
    tile = Image.new("RGB", (200, 100), (90, 90, 90))
    result = make(sd, SDWEBUI_UPSCALER="4x-UltraSharp").run(
        "upscale", UpscaleRequest(image=tile, index=1), Ctx()
    )
    body = sd.calls("/sdapi/v1/extra-single-image")[0].json
    assert (
        body["upscaler_1"] == "4x-UltraSharp" and body["upscaling_resize"] == 2 and body["resize_mode"] == 0
    )
    assert decode_image(body["image"]).size == (200, 100)
    assert result.image.size == (400, 200)


def test_a_creative_upscale_gets_finer_detail_than_a_subtle_one(sd):
    tile = Image.new("RGB", (200, 100), (90, 90, 90))
    tile.paste((200, 60, 40), (60, 20, 140, 80))
    provider = make(sd)
    subtle, creative = (
        provider.run("upscale", UpscaleRequest(image=tile, index=1, mode=mode), Ctx()).image
        for mode in ("subtle", "creative")
    )
    assert subtle.size == creative.size == (400, 200) and subtle.tobytes() != creative.tobytes()
    first, second = sd.calls("/sdapi/v1/extra-single-image")
    assert first.json == second.json  # the server's upscaler, the same for both


def test_describe_interrogates_with_clip_and_deepdanbooru_into_four_prompts(sd):
    image = Image.new("RGB", (640, 360), (200, 200, 220))
    result = make(sd).run("describe", DescribeRequest(image=image), Ctx())
    models = [call.json["model"] for call in sd.calls("/sdapi/v1/interrogate")]
    assert models == ["clip", "deepdanbooru"]
    assert len(result.descriptions) == 4 and len(set(result.descriptions)) == 4
    assert result.descriptions[0].startswith("a painting of a red fox in the snow")
    assert any("no_humans" in text for text in result.descriptions)
    assert all(text.endswith("--ar 16:9") for text in result.descriptions)


def test_describe_works_without_deepdanbooru(sd):
    sd.deepdanbooru = False
    result = make(sd).run("describe", DescribeRequest(image=Image.new("RGB", (64, 64))), Ctx())
    assert len(set(result.descriptions)) == 4


@pytest.mark.parametrize("failure", ["garbage", "outage"])
def test_an_extra_interrogator_that_fails_is_skipped(sd, failure):
    if failure == "garbage":
        sd.garbage(path="/sdapi/v1/interrogate")
    else:
        sd.fail(503, times=3, path="/sdapi/v1/interrogate")
    provider = make(sd, SDWEBUI_INTERROGATORS="deepdanbooru,clip")
    result = provider.run("describe", DescribeRequest(image=Image.new("RGB", (64, 64))), Ctx())
    models = [call.json["model"] for call in sd.calls("/sdapi/v1/interrogate")]
    assert models[-1] == "clip" and set(models[:-1]) == {"deepdanbooru"}
    assert result.descriptions[0].startswith("a painting of a red fox in the snow")


def test_progress_is_read_while_a_generation_runs(sd):
    sd.generation_seconds = 0.6
    ctx = Ctx()
    make(sd).run("imagine", imagine_request(), ctx)
    assert sd.calls("/sdapi/v1/progress") and sd.calls("/sdapi/v1/progress")[0].query == {
        "skip_current_image": ["true"]
    }
    assert ctx.reported and max(ctx.reported) > 10 and max(ctx.reported) <= 90


def test_cancel_interrupts_the_generation(sd):
    sd.generation_seconds = 10
    ctx = Ctx()
    ctx.cancel_after(0.3)
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        make(sd).run("imagine", imagine_request(), ctx)
    assert time.monotonic() - started < 5  # not the generation's 10 s
    assert sd.interrupted.wait(2)
    assert sd.calls("/sdapi/v1/interrupt")[0].method == "POST"
    (call,) = sd.calls("/sdapi/v1/txt2img")
    assert sd.interrupts == [call.json["force_task_id"]]  # it stopped this job's own generation


def wait_for(condition, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_cancelling_a_job_queued_behind_another_interrupts_its_own_generation_once_it_starts(sd):
    """Generations queue for one lock and /interrupt stops whichever runs: not the other job's, but the
    cancelled one's as soon as the server starts it, so the GPU does not run it to its end for nothing."""
    sd.generation_seconds = 1.0
    provider = make(sd)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(provider.run, "imagine", imagine_request("1:1", 0.25), Ctx())
        wait_for(lambda: sd.current_task is not None)
        queued = Ctx()
        queued.cancel_after(0.3)
        with pytest.raises(JobCancelled):
            provider.run("imagine", imagine_request("1:1", 0.25), queued)
        time.sleep(0.3)  # time for a wrong interrupt to arrive
        assert not sd.calls("/sdapi/v1/interrupt")  # the other job's generation runs on
        first = running.result(5).tiles[0]
    assert first.getpixel((5, 5)) == (40, 90, 160)  # finished, not the interrupted sampler's noise
    assert queued.reported == []  # the other generation's progress was never reported as this job's
    ids = [call.json["force_task_id"] for call in sd.calls("/sdapi/v1/txt2img")]
    assert len(set(ids)) == 2
    wait_for(lambda: sd.interrupts)
    assert sd.interrupts == [ids[1]]  # the cancelled job's own, once it ran


@pytest.mark.parametrize("server", ["started with --nowebui", "older than 1.6"])
def test_a_server_that_cannot_say_which_task_runs_is_not_interrupted(sd, server):
    if server == "started with --nowebui":
        sd.web_ui = False
    else:
        sd.task_ids = False
    sd.generation_seconds = 10
    ctx = Ctx()
    ctx.cancel_after(0.3)
    with pytest.raises(JobCancelled):
        make(sd).run("imagine", imagine_request(), ctx)
    time.sleep(0.5)  # time for an interrupt to arrive
    assert not sd.calls("/sdapi/v1/interrupt")


def test_a_generation_interrupted_by_someone_else_fails_instead_of_returning_noise(sd):
    sd.generation_seconds, sd.decode_seconds = 2.0, 0.3
    threading.Timer(0.5, requests.post, args=(sd.url + "/sdapi/v1/interrupt",)).start()
    with pytest.raises(ProviderError, match="generation was interrupted on the server"):
        make(sd).run("imagine", imagine_request("1:1", 0.25), Ctx())
    assert sd.interrupts == [sd.calls("/sdapi/v1/txt2img")[0].json["force_task_id"]]


def test_an_interrupt_of_the_generation_before_this_one_is_not_taken_for_its_own(sd):
    sd.generation_seconds, sd.decode_seconds = 0.6, 0.2
    provider = make(sd)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(provider.run, "imagine", imagine_request("1:1", 0.25), Ctx())
        wait_for(lambda: sd.current_task is not None)
        second = pool.submit(provider.run, "imagine", imagine_request("1:1", 0.25), Ctx())
        time.sleep(0.2)
        requests.post(sd.url + "/sdapi/v1/interrupt")  # the first generation's
        with pytest.raises(ProviderError, match="interrupted"):
            first.result(5)
        assert len(second.result(5).tiles) == 4


def test_a_stopped_job_ends_without_waiting_for_the_interrupt(sd):
    sd.generation_seconds = 10
    sd.hang(path="/sdapi/v1/interrupt")
    ctx = Ctx()
    ctx.cancel_after(0.3)
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        make(sd).run("imagine", imagine_request(), ctx)
    assert time.monotonic() - started < 3.5  # the interrupt's own 5 seconds are not the job's
    deadline = time.monotonic() + 2
    while not sd.calls("/sdapi/v1/interrupt") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sd.calls("/sdapi/v1/interrupt")


def test_a_hanging_progress_read_holds_up_neither_the_result_nor_a_failure(sd, monkeypatch):
    monkeypatch.setattr(sdwebui, "PROGRESS_TIMEOUT", 20.0)  # far beyond what the job may take here
    sd.generation_seconds = 0.3
    sd.hang(times=100, path="/sdapi/v1/progress")
    started = time.monotonic()
    assert len(make(sd).run("imagine", imagine_request(), Ctx(30)).tiles) == 4
    assert time.monotonic() - started < 5
    sd.hang(path="/sdapi/v1/txt2img")  # a definite failure (no more attempts), not the job's timeout
    started = time.monotonic()
    with pytest.raises(ProviderError, match="did not answer within 0.3 seconds, once; giving up"):
        make(sd, SDWEBUI_TIMEOUT=0.3, PROVIDER_RETRIES=0).run("imagine", imagine_request(), Ctx(30))
    assert time.monotonic() - started < 5


def test_a_gateway_error_is_retried_then_succeeds(sd):
    sd.fail(502, path="/sdapi/v1/txt2img")
    sd.fail(503, path="/sdapi/v1/txt2img")
    result = make(sd).run("imagine", imagine_request(), Ctx())
    assert len(result.tiles) == 4 and len(sd.calls("/sdapi/v1/txt2img")) == 3


def test_a_generation_that_fails_on_the_server_is_not_run_again(sd):
    sd.middleware_errors = sd.out_of_memory = True
    with pytest.raises(ProviderError, match=r"refused the request \(HTTP 500\): CUDA out of memory\. Tried"):
        make(sd).run("imagine", imagine_request(), Ctx())
    assert len(sd.calls("/sdapi/v1/txt2img")) == 1
    tile = Image.new("RGB", (64, 64))
    with pytest.raises(ProviderError, match="CUDA out of memory"):
        make(sd).run("variation", VariationRequest(image=tile, index=1), Ctx())
    assert len(sd.calls("/sdapi/v1/img2img")) == 1


def test_an_unknown_upscaler_fails_at_once_with_the_servers_reason(sd):
    sd.middleware_errors = True
    request = UpscaleRequest(image=Image.new("RGB", (64, 64)), index=1)
    with pytest.raises(ProviderError, match=r"\(HTTP 500\): could not find upscaler named 4x-Nope$"):
        make(sd, SDWEBUI_UPSCALER="4x-Nope").run("upscale", request, Ctx())
    assert len(sd.calls("/sdapi/v1/extra-single-image")) == 1


def test_an_interrogation_that_fails_on_the_server_is_not_sent_again(sd):
    sd.fail(500, path="/sdapi/v1/interrogate")
    with pytest.raises(ProviderError, match=r"refused the request \(HTTP 500\)"):
        make(sd).run("describe", DescribeRequest(image=Image.new("RGB", (64, 64))), Ctx())
    assert len(sd.calls("/sdapi/v1/interrogate")) == 1


def test_429_honours_retry_after(sd):
    sd.fail(429, path="/sdapi/v1/txt2img", Retry_After="0.3")
    started = time.monotonic()
    make(sd).run("imagine", imagine_request(), Ctx())
    assert time.monotonic() - started >= 0.3


def test_gives_up_after_the_bounded_retries_saying_why(sd):
    sd.fail(503, times=5, path="/sdapi/v1/txt2img")
    with pytest.raises(ProviderError, match=r"answered HTTP 503, 3 times; giving up: upstream trouble$"):
        make(sd).run("imagine", imagine_request(), Ctx())
    assert len(sd.calls("/sdapi/v1/txt2img")) == 3


def test_a_garbage_body_is_a_clear_error(sd):
    sd.garbage(path="/sdapi/v1/txt2img")
    with pytest.raises(ProviderError, match="sdwebui provider sent an answer that is not valid JSON"):
        make(sd).run("imagine", imagine_request(), Ctx())


def test_a_backend_that_never_answers_times_out_and_is_retried(sd):
    sd.hang(times=3, path="/sdapi/v1/txt2img")
    started = time.monotonic()
    with pytest.raises(ProviderError, match="did not answer within 0.3 seconds, 3 times"):
        make(sd, SDWEBUI_TIMEOUT=0.3).run("imagine", imagine_request(), Ctx())
    assert time.monotonic() - started < 3


def test_a_client_error_is_not_retried_and_shows_the_servers_reason(sd):
    request = VariationRequest(image=Image.new("RGB", (64, 64)), index=1)
    sd.fail(422, path="/sdapi/v1/img2img")
    with pytest.raises(ProviderError, match=r"refused the request \(HTTP 422\): upstream trouble"):
        make(sd).run("variation", request, Ctx())
    assert len(sd.calls("/sdapi/v1/img2img")) == 1


def test_a_refusal_in_the_middleware_shape_shows_its_detail_not_the_exception_class(sd):
    sd.middleware_errors = True
    with pytest.raises(ProviderError, match=r"refused the request \(HTTP 400\): Sampler not found\.?$"):
        make(sd, SDWEBUI_SAMPLER="Euler z").run("imagine", imagine_request(), Ctx())
    assert len(sd.calls("/sdapi/v1/txt2img")) == 1


def test_an_unreachable_backend_is_a_clear_error():
    provider = create("sdwebui", provider_settings(SDWEBUI_URL="http://127.0.0.1:9"))
    with pytest.raises(ProviderError, match="sdwebui provider could not be reached"):
        provider.run("imagine", imagine_request(), Ctx())


def test_check_lists_the_models_and_knows_a_missing_one(sd):
    assert make(sd).check() == "1 model(s) available"
    assert sd.calls("/sdapi/v1/sd-models")
    with pytest.raises(ProviderError, match="no model called 'sdxl'") as failure:
        make(sd, SDWEBUI_MODEL="sdxl").check()
    assert "v1-5-pruned-emaonly.safetensors [6ce0161689]" in str(failure.value)  # what it has


def test_check_says_to_start_the_web_ui_with_api_when_it_has_no_api(sd):
    sd.api = False
    with pytest.raises(ProviderError, match="start the web UI with --api"):
        make(sd).check()


@pytest.mark.parametrize(
    "alias",
    [
        "SDXL/juggernautXL_v9.safetensors [c9e3e68f89]",  # title
        "SDXL_juggernautXL_v9",  # model_name
        "SDXL/juggernautXL_v9.safetensors",  # name: the file, with its folder
        "juggernautXL_v9",  # the file's name without extension
        "juggernautXL_v9 [c9e3e68f89]",
        "c9e3e68f89",  # short hash
        "c9e3e68f89b8e38689e1097d4be4573cf308de4e3fd044c64ca697bdb4aa8bca",  # sha256
    ],
)
def test_check_accepts_every_name_the_web_ui_resolves_a_checkpoint_by(sd, alias):
    sd.models.append(SUBFOLDER_MODEL)
    assert make(sd, SDWEBUI_MODEL=alias).check() == "2 model(s) available"


def photo_like(size: tuple[int, int]) -> Image.Image:
    """A picture with structure (a gradient and a square), so kept pixels can be compared."""
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image.paste((200, 40, 40), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    return image


def test_pan_inpaints_the_new_area_of_the_padded_canvas_and_keeps_the_parent(sd):
    image = photo_like((128, 96))
    request = OutpaintRequest(
        image=image, pad=(64, 0, 0, 0), width=192, height=96, prompt="a shore", direction="left"
    )
    result = make(sd).run("outpaint", request, Ctx())
    (call,) = sd.calls("/sdapi/v1/img2img")
    assert (call.json["width"], call.json["height"]) == (192, 96) and call.json["prompt"] == "a shore"
    mask = decode_image(call.json["mask"])
    assert mask.getpixel((10, 50)) == (255, 255, 255) and mask.getpixel((100, 50)) == (0, 0, 0)
    assert [tile.size for tile in result.tiles] == [(192, 96)] * 4
    for tile in result.tiles:
        assert tile.crop((64, 0, 192, 96)).tobytes() == image.tobytes()


def test_zoom_out_shrinks_the_canvas_back_to_the_parents_size(sd):
    image = photo_like((128, 96))
    request = OutpaintRequest(image=image, pad=(64, 48, 64, 48), width=128, height=96, zoom=2)
    result = make(sd).run("outpaint", request, Ctx())
    assert sd.calls("/sdapi/v1/img2img")[0].json["width"] == 256
    assert [tile.size for tile in result.tiles] == [(128, 96)] * 4


def test_vary_region_keeps_the_pixels_outside_the_mask(sd):
    image = photo_like((128, 96))
    mask = Image.new("L", (128, 96), 0)
    mask.paste(255, (32, 24, 96, 72))
    result = make(sd).run("inpaint", InpaintRequest(image=image, mask=mask, prompt="a kite"), Ctx())
    (call,) = sd.calls("/sdapi/v1/img2img")
    assert decode_image(call.json["mask"]).getpixel((64, 48)) == (255, 255, 255)
    for tile in result.tiles:
        assert tile.getpixel((5, 5)) == image.getpixel((5, 5))
        assert tile.getpixel((64, 48)) != image.getpixel((64, 48))


def test_an_answer_past_the_cap_is_refused_without_reading_the_rest(sd):
    sd.flood(64, path="/sdapi/v1/txt2img")
    limit = 5 * 4 * 1000 + 1024 * 1024  # five 3000-byte images in base64, plus 1 MiB
    with pytest.raises(ProviderError, match=f"sdwebui provider's answer is larger than {limit} bytes"):
        make(sd, PROVIDER_MAX_BYTES=3000).run("imagine", imagine_request(), Ctx())
    assert len(sd.calls("/sdapi/v1/txt2img")) == 1 and sd.flooded < 16 * 1024 * 1024


def test_a_redirect_with_a_huge_body_is_refused_before_it_is_followed(sd):
    sd.flood(64, path="/sdapi/v1/txt2img", status=307, Location=sd.url + "/elsewhere")
    with pytest.raises(ProviderError, match="sdwebui provider's answer is larger than"):
        make(sd, PROVIDER_MAX_BYTES=3000).run("imagine", imagine_request(), Ctx())
    assert not sd.calls("/elsewhere") and sd.flooded < 16 * 1024 * 1024
