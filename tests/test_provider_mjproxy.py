"""The midjourney-proxy adapter against a fake trueai-org or novicezk proxy: submissions, polling, cancel."""

from __future__ import annotations

import time

import pytest
from PIL import Image

import imaging
from fakes import Ctx, FakeBackend, decode_image, grid_png, png, provider_settings
from fakes.mjproxy import TILE, FakeMidjourneyProxy
from providers import (
    OPERATIONS,
    BlendRequest,
    DescribeRequest,
    FaceSwapRequest,
    ImagineRequest,
    InpaintRequest,
    JobCancelled,
    OutpaintRequest,
    ProviderError,
    ShortenRequest,
    UnsupportedOperation,
    UpscaleRequest,
    VariationRequest,
    create,
)

SECRET = "mj-secret-123"


@pytest.fixture
def mj():
    """A trueai-org midjourney-proxy (v10 and later): buttons on every image, no /mj/submit/change."""
    fake = FakeMidjourneyProxy(SECRET)
    yield fake
    fake.close()


@pytest.fixture
def novicezk():
    """A novicezk midjourney-proxy (v2.6): no buttons, upscale and variation through /mj/submit/change."""
    fake = FakeMidjourneyProxy(SECRET, flavor="novicezk")
    yield fake
    fake.close()


@pytest.fixture(params=["trueai", "novicezk"])
def either(request):
    """Each flavour of midjourney-proxy in turn."""
    fake = FakeMidjourneyProxy(SECRET, flavor=request.param)
    yield fake
    fake.close()


def make(fake, **overrides):
    return create(
        "midjourney-proxy", provider_settings(MJPROXY_URL=fake.url, MJPROXY_SECRET=SECRET, **overrides)
    )


def imagine(provider, prompt="a red fox", **fields):
    width, height = imaging.dimensions(fields.get("aspect_ratio", "1:1"))
    return provider.run("imagine", ImagineRequest(prompt=prompt, width=width, height=height, **fields), Ctx())


def test_imagine_submits_with_the_secret_and_polls_until_the_grid_is_ready(mj):
    ctx = Ctx()
    provider = make(mj)
    request = ImagineRequest(
        prompt="a red fox", width=1024, height=576, aspect_ratio="16:9", style="raw", chaos=20, stylize=250
    )
    result = provider.run("imagine", request, ctx)
    submit = mj.calls("/mj/submit/imagine")[0]
    assert submit.headers["mj-api-secret"] == SECRET
    assert submit.json == {"prompt": "a red fox --ar 16:9 --v 6.1 --style raw --c 20 --s 250"}
    fetches = mj.calls(f"/mj/task/{result.ref}/fetch")
    assert len(fetches) == 4 and all(f.headers["mj-api-secret"] == SECRET for f in fetches)
    assert result.grid.size == (192, 128) and result.tiles is None
    assert ctx.reported == [0, 27, 70, 90]  # the proxy's "0%", "30%", "78%", "100%", leaving room to store


def test_niji_styles_switch_model(mj):
    imagine(make(mj), style="cute", quality=0.5)
    assert (
        mj.calls("/mj/submit/imagine")[0].json["prompt"] == "a red fox --ar 1:1 --niji 5 --style cute --q 0.5"
    )


def test_a_seeded_imagine_records_its_seed(mj):  # a reroll, or the OpenAI family's second image, asks one
    provider = make(mj)
    assert imagine(provider, seed=424242).seed == 424242 and imagine(provider).seed is None
    assert mj.calls("/mj/submit/imagine")[0].json["prompt"].endswith("--seed 424242")


def upscale_and_vary_its_own(fake):
    """An imagine, then U3 and V2 of its grid: the three results."""
    provider = make(fake)
    parent = imagine(provider)
    tile = Image.new("RGB", (96, 64))
    made = {"parent_ref": parent.ref, "parent_provider": "midjourney-proxy"}
    upscaled = provider.run("upscale", UpscaleRequest(image=tile, index=3, **made), Ctx())
    varied = provider.run("variation", VariationRequest(image=tile, index=2, **made), Ctx())
    return parent, upscaled, varied


def test_upscale_and_variation_of_its_own_job_use_change_with_the_task_id(novicezk):
    parent, upscaled, varied = upscale_and_vary_its_own(novicezk)
    first, second = (call.json for call in novicezk.calls("/mj/submit/change"))
    assert first == {"action": "UPSCALE", "index": 3, "taskId": parent.ref}
    assert second == {"action": "VARIATION", "index": 2, "taskId": parent.ref}
    assert upscaled.image.size == (192, 128) and upscaled.ref != parent.ref
    assert varied.grid is not None and varied.ref not in (parent.ref, upscaled.ref)


def test_upscale_and_variation_of_its_own_job_press_the_grids_buttons_on_trueai(mj):
    parent, upscaled, varied = upscale_and_vary_its_own(mj)
    assert [call.json for call in mj.calls("/mj/submit/action")] == [
        {"taskId": parent.ref, "customId": f"MJ::JOB::upsample::3::hash-{parent.ref}"},
        {"taskId": parent.ref, "customId": f"MJ::JOB::variation::2::hash-{parent.ref}"},
    ]
    assert not mj.calls("/mj/submit/change") and not mj.calls("/mj/submit/imagine")[1:]
    assert upscaled.image.size == (192, 128) and mj.tasks[upscaled.ref]["action"] == "UPSCALE"
    assert varied.grid is not None and mj.tasks[varied.ref]["action"] == "VARIATION"


@pytest.mark.parametrize("path", ["/mj/submit/change", "/mj/submit/action"])
def test_a_404_from_change_or_action_falls_back_to_the_image(mj, path):
    """trueai since v10 has no /change, and answers an unknown parent with HTTP 404 (code 3 in the body)."""
    provider = make(mj)
    parent = imagine(provider)
    if path == "/mj/submit/change":
        mj.tasks[parent.ref]["buttons"] = []  # a grid the proxy lists no buttons for
    else:
        mj.fail(404, path=path)
    tile = Image.new("RGB", (120, 80))
    made = {"parent_ref": parent.ref, "parent_provider": "midjourney-proxy"}
    upscaled = provider.run("upscale", UpscaleRequest(image=tile, index=1, **made), Ctx())
    assert mj.calls(path) and upscaled.image.size == (240, 160) and upscaled.ref is None


def test_a_rerolled_grid_is_upscaled_with_change_too(novicezk):
    mj = novicezk
    provider = make(mj)
    parent = imagine(provider)
    mj.tasks[parent.ref]["action"] = "REROLL"  # a grid drawn again with the proxy's REROLL
    made = {"parent_ref": parent.ref, "parent_provider": "midjourney-proxy"}
    tile = Image.new("RGB", (96, 64))
    upscaled = provider.run("upscale", UpscaleRequest(image=tile, index=1, **made), Ctx())
    assert upscaled.ref in mj.tasks and mj.tasks[upscaled.ref]["action"] == "UPSCALE"


def test_a_foreign_parent_is_varied_as_an_image_prompt_and_upscaled_locally(mj):
    provider = make(mj)
    tile = Image.new("RGB", (120, 80), (0, 128, 255))
    made = {"parent_ref": "local-123", "parent_provider": "local"}
    varied = provider.run("variation", VariationRequest(image=tile, index=1, prompt="a lake", **made), Ctx())
    body = mj.calls("/mj/submit/imagine")[0].json
    assert body["prompt"] == "a lake --ar 3:2" and decode_image(body["base64Array"][0]).getpixel((1, 1)) == (
        0,
        128,
        255,
    )
    assert varied.grid is not None
    upscaled = provider.run("upscale", UpscaleRequest(image=tile, index=1, **made), Ctx())
    assert upscaled.image.size == (240, 160) and not mj.calls("/mj/submit/change")


def test_a_variation_to_a_new_aspect_ratio_is_an_image_prompt_of_the_reframed_tile(mj):
    provider = make(mj)
    parent = imagine(provider, aspect_ratio="16:9")
    square = Image.new("RGB", (90, 90), (0, 128, 255))  # the tile, already reframed to 1:1
    made = {"parent_ref": parent.ref, "parent_provider": "midjourney-proxy"}
    request = VariationRequest(image=square, index=2, prompt="a lake", aspect_ratio="1:1", **made)
    provider.run("variation", request, Ctx())
    assert not mj.calls("/mj/submit/action")  # the V button would keep the grid's 16:9
    body = mj.calls("/mj/submit/imagine")[1].json
    assert body["prompt"] == "a lake --ar 1:1" and decode_image(body["base64Array"][0]).size == (90, 90)


def test_an_upscaled_image_of_its_own_is_upscaled_again_or_varied_without_change(mj):
    provider = make(mj)
    tile = Image.new("RGB", (120, 80), (0, 128, 255))
    made = {"parent_ref": "1234", "parent_provider": "midjourney-proxy"}
    subtle = provider.run("upscale", UpscaleRequest(image=tile, index=1, mode="subtle", **made), Ctx())
    strong = provider.run("variation", VariationRequest(image=tile, index=1, mode="strong", **made), Ctx())
    assert subtle.image.size == (240, 160) and strong.grid is not None
    assert not mj.calls("/mj/submit/change") and len(mj.calls("/mj/submit/imagine")) == 1


def test_a_parent_the_proxy_forgot_falls_back_to_the_image(either):
    provider = make(either)
    tile = Image.new("RGB", (120, 80))
    made = {"parent_ref": "999", "parent_provider": "midjourney-proxy"}
    result = provider.run("variation", VariationRequest(image=tile, index=4, **made), Ctx())
    assert either.calls("/mj/task/999/fetch")  # an empty 200 (novicezk) or a 204 (trueai)
    assert not either.calls("/mj/submit/change") and not either.calls("/mj/submit/action")
    assert either.calls("/mj/submit/imagine") and result.grid is not None


def test_describe_sends_a_data_url_and_splits_the_four_prompts(mj):
    result = make(mj).run("describe", DescribeRequest(image=Image.new("RGB", (64, 64), (9, 9, 9))), Ctx())
    body = mj.calls("/mj/submit/describe")[0].json
    assert body["base64"].startswith("data:image/png;base64,")
    assert decode_image(body["base64"]).getpixel((0, 0)) == (9, 9, 9)
    assert result.descriptions == [
        "a red fox standing in deep snow, winter forest, soft light --ar 1:1",
        "wildlife photograph of a fox in a snowy pine forest --ar 1:1",
        "watercolor painting of a red fox, loose brushwork --ar 1:1",
        "cinematic still of a fox crossing a frozen clearing --ar 1:1",
    ]


def test_blend_sends_base64_images_and_the_blends_dimensions(mj):
    images = [Image.new("RGB", (400, 200)), Image.new("RGB", (100, 100)), Image.new("RGB", (50, 80))]
    result = make(mj).run("blend", BlendRequest(images=images, width=680, height=1024), Ctx())
    body = mj.calls("/mj/submit/blend")[0].json
    assert body["dimensions"] == "PORTRAIT" and len(body["base64Array"]) == 3  # the blend's, not the inputs'
    assert all(item.startswith("data:image/png;base64,") for item in body["base64Array"])
    assert result.grid is not None


@pytest.mark.parametrize(
    ("code", "message"),
    [(23, "queue is full; try again later"), (24, "refused the prompt: it may contain banned words")],
)
def test_queue_full_and_banned_prompt_fail_clearly(mj, code, message):
    mj.submit_code = code
    with pytest.raises(ProviderError, match=f"midjourney-proxy provider.*{message}"):
        imagine(make(mj))


@pytest.mark.parametrize("code", [21, 22])
def test_existing_and_queued_submissions_are_followed(mj, code):
    mj.submit_code = code
    assert imagine(make(mj)).grid is not None


def test_a_banned_word_is_refused(mj):
    with pytest.raises(ProviderError, match="banned words"):
        imagine(make(mj), prompt="a bannedword fox")


def test_an_upstream_failure_carries_its_reason(mj):
    mj.fail_reason = "Invalid parameter: --v 9"
    with pytest.raises(
        ProviderError, match="midjourney-proxy provider's task failed: Invalid parameter: --v 9"
    ):
        imagine(make(mj))


def test_a_wrong_secret_is_refused_without_showing_it(mj):
    provider = create("midjourney-proxy", provider_settings(MJPROXY_URL=mj.url, MJPROXY_SECRET="nope-secret"))
    with pytest.raises(ProviderError) as failure:
        imagine(provider)
    assert "credentials" in str(failure.value) and "nope-secret" not in str(failure.value)


def test_the_secret_never_follows_a_redirect_to_another_host(mj):
    cdn = FakeBackend()
    try:
        cdn.serve_image("/grid.png", grid_png(TILE, [(200, 40, 40)] * 4))
        mj.redirect(cdn.url + "/grid.png", path="/attachments/grid.png", status=302)
        mj.redirect(cdn.url + "/mj/submit/imagine", path="/mj/submit/imagine")
        provider = make(mj)
        assert provider.http.download_image(mj.url + "/attachments/grid.png", Ctx()).size == (192, 128)
        with pytest.raises(ProviderError, match=r"refused the request \(HTTP 404\)"):
            imagine(provider)
        assert all(call.headers["mj-api-secret"] == SECRET for call in mj.calls())
        assert [call.path for call in cdn.calls()] == ["/grid.png", "/mj/submit/imagine"]
        assert not any("mj-api-secret" in call.headers for call in cdn.calls())
    finally:
        cdn.close()


def test_polling_survives_a_5xx_and_a_slow_answer(mj):
    mj.fail(502, times=1, path="/mj/task/1712345678901230/fetch")
    mj.slow(0.2, path="/mj/task/1712345678901230/fetch")
    assert imagine(make(mj)).grid is not None


def test_a_submission_is_sent_again_only_when_refused_before_any_work(mj):
    """Each task runs on the operator's Midjourney account: after a 502 it may have been made already."""
    mj.fail(429, path="/mj/submit/imagine", Retry_After="0")
    assert imagine(make(mj)).grid is not None
    assert len(mj.calls("/mj/submit/imagine")) == 2
    mj.fail(502, path="/mj/submit/imagine")
    with pytest.raises(ProviderError, match=r"refused the request \(HTTP 502\)"):
        imagine(make(mj))
    assert len(mj.calls("/mj/submit/imagine")) == 3


def test_a_garbage_fetch_is_a_clear_error(mj):
    mj.garbage(path="/mj/task/1712345678901230/fetch")
    with pytest.raises(
        ProviderError, match="midjourney-proxy provider sent an answer that is not valid JSON"
    ):
        imagine(make(mj))


def test_a_fetch_that_hangs_times_out(mj):
    mj.hang(times=3, path="/mj/task/1712345678901230/fetch")
    with pytest.raises(ProviderError, match="did not answer within 0.2 seconds, 3 times"):
        imagine(make(mj, MJPROXY_TIMEOUT=0.2))


def test_cancel_stops_polling_promptly(mj):
    mj.steps = ["1%"] * 10_000
    ctx = Ctx()
    ctx.cancel_after(0.2)
    with pytest.raises(JobCancelled):
        make(mj, MJPROXY_POLL_INTERVAL=0.05).run(
            "imagine", ImagineRequest(prompt="x", width=64, height=64), ctx
        )
    count = len(mj.calls())
    time.sleep(0.2)
    assert len(mj.calls()) == count  # no more polling after the cancel


def test_check_lists_tasks_and_learns_which_proxy_answers(either):
    provider = make(either)
    assert provider.supports("outpaint")  # not known yet
    assert provider.check() == f"answering ({either.flavor}); 0 task(s) known"
    assert either.calls("/mj/task/list")[0].headers["mj-api-secret"] == SECRET
    trueai = either.flavor == "trueai"
    assert [provider.supports(op) for op in OPERATIONS] == [True] * 5 + [trueai] * 4
    provider.check()
    assert len(either.calls("/mj/home")) == 1  # asked once


def novicezk_jobs():
    """A job of each operation novicezk's proxy cannot do."""
    image = Image.new("RGB", (16, 16))
    return [
        ("outpaint", OutpaintRequest(image=image, pad=(0, 8, 0, 0), width=16, height=24, direction="up")),
        ("inpaint", InpaintRequest(image=image, mask=Image.new("L", (16, 16), 255))),
        ("shorten", ShortenRequest(prompt="a red fox in deep snow")),
        ("faceswap", FaceSwapRequest(target=image, swap=image)),
    ]


def test_novicezks_proxy_is_found_out_on_first_use_and_what_it_cannot_do_is_refused(novicezk):
    provider = make(novicezk)
    for operation, request in novicezk_jobs():
        with pytest.raises(UnsupportedOperation, match=f"midjourney-proxy provider cannot {operation}"):
            provider.run(operation, request, Ctx())
    assert novicezk.paths() == ["GET /mj/home"]  # asked once, and nothing submitted
    assert imagine(provider).grid is not None


def test_a_proxy_that_refuses_the_question_is_asked_again_rather_than_taken_for_novicezks(mj):
    mj.fail(401, path="/mj/home")  # credentials, or a proxy in front: it says nothing of the fork
    provider = make(mj)
    assert imagine(provider).grid is not None
    assert provider.flavor is None and provider.supports("shorten")
    assert imagine(provider).grid is not None
    assert provider.flavor == "trueai" and len(mj.calls("/mj/home")) == 2


@pytest.mark.parametrize("flavor", ["novicezk", "trueai"])
def test_the_flavor_setting_skips_the_question(mj, flavor):
    provider = make(mj, MJPROXY_FLAVOR=flavor)
    assert provider.supports("shorten") == (flavor == "trueai")
    assert provider.check() == f"answering ({flavor}); 0 task(s) known"
    assert not mj.calls("/mj/home")


def test_once_the_proxy_is_known_as_novicezks_shorten_is_refused_before_any_credit_is_taken(
    settings, request, novicezk
):
    settings.update(PROVIDER="midjourney-proxy", MJPROXY_URL=novicezk.url, MJPROXY_SECRET=SECRET)
    settings.update(MJPROXY_POLL_INTERVAL=0.01)
    api = request.getfixturevalue("api")
    assert api.imagine("a red fox")["status"] == "succeeded"
    before = api.get("/v1/account").get_json()["account"]["credits"]["remaining"]
    response = api.post("/v1/shorten", json={"prompt": "a red fox in deep snow"})
    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == (
        "The configured provider (midjourney-proxy) cannot do shorten jobs; "
        "set APIFRAME_PROVIDER_SHORTEN to a provider that can."
    )
    assert api.get("/v1/account").get_json()["account"]["credits"]["remaining"] == before
    assert not novicezk.calls("/mj/submit/shorten")


def upscaled(provider) -> dict:
    """An upscale made on the proxy: the parent fields of a pan, zoom or vary region request."""
    grid = imagine(provider)
    result = provider.run(
        "upscale",
        UpscaleRequest(
            image=Image.new("RGB", (96, 64)), index=2, parent_ref=grid.ref, parent_provider="midjourney-proxy"
        ),
        Ctx(),
    )
    return {"parent_ref": result.ref, "parent_provider": "midjourney-proxy"}


def test_pan_and_zoom_press_the_upscales_buttons(mj):
    provider = make(mj)
    parent = upscaled(provider)
    image = Image.new("RGB", (192, 128))
    ref = parent["parent_ref"]
    pan = OutpaintRequest(image=image, pad=(96, 0, 0, 0), width=288, height=128, direction="left", **parent)
    assert provider.run("outpaint", pan, Ctx()).grid.size == (192, 128)
    zoom = OutpaintRequest(image=image, pad=(96, 64, 96, 64), width=192, height=128, zoom=2, **parent)
    provider.run("outpaint", zoom, Ctx())
    pressed = [call.json for call in mj.calls("/mj/submit/action")][1:]  # after the upscale's U2
    assert pressed == [
        {"taskId": ref, "customId": f"MJ::JOB::pan_left::1::hash-{ref}::SOLO"},
        {"taskId": ref, "customId": f"MJ::Outpaint::50::1::hash-{ref}::SOLO"},
    ]
    square = OutpaintRequest(
        image=image, pad=(0, 32, 0, 32), width=192, height=192, zoom=1, prompt="a bay", own_prompt=True,
        **parent,
    )
    provider.run("outpaint", square, Ctx())
    assert mj.calls("/mj/submit/action")[-1].json["customId"] == f"MJ::CustomZoom::hash-{ref}"
    (modal,) = mj.calls("/mj/submit/modal")
    assert modal.json["prompt"] == "a bay --v 6.1 --zoom 1 --ar 1:1"  # the grid's other parameters kept
    portrait = OutpaintRequest(image=image, pad=(0, 80, 0, 80), width=192, height=288, zoom=2, **parent)
    provider.run("outpaint", portrait, Ctx())  # one of Midjourney's aspect ratios beyond the reference's five
    assert mj.calls("/mj/submit/modal")[-1].json["prompt"] == "a red fox --v 6.1 --zoom 2 --ar 2:3"


def test_with_remix_on_a_pan_or_variation_is_confirmed_with_the_parents_prompt(mj):
    """trueai with remix mode on holds them in MODAL (code 21, remix) until /mj/submit/modal."""
    mj.remix = True
    provider = make(mj, MJPROXY_POLL_INTERVAL=0.01)
    parent = upscaled(provider)  # U2 of a grid: an upscale is never remixed
    assert not mj.calls("/mj/submit/modal")
    image = Image.new("RGB", (192, 128))
    pan = OutpaintRequest(image=image, pad=(96, 0, 0, 0), width=288, height=128, direction="left", **parent)
    panned = provider.run("outpaint", pan, Ctx(3))
    grid = mj.calls("/mj/submit/imagine")[0].json["prompt"]
    tile = Image.new("RGB", (96, 64))
    grid_ref = mj.calls("/mj/submit/action")[0].json["taskId"]
    made = {"parent_ref": grid_ref, "parent_provider": "midjourney-proxy"}
    varied = provider.run("variation", VariationRequest(image=tile, index=1, **made), Ctx(3))
    modals = [call.json for call in mj.calls("/mj/submit/modal")]
    assert modals == [{"taskId": panned.ref, "prompt": grid}, {"taskId": varied.ref, "prompt": grid}]
    assert panned.grid is not None and varied.grid is not None
    assert mj.tasks[panned.ref]["action"] == "PAN" and mj.tasks[varied.ref]["action"] == "VARIATION"
    remixed = VariationRequest(image=tile, index=1, prompt="a snowy owl instead", own_prompt=True, **made)
    provider.run("variation", remixed, Ctx(3))  # the user's own prompt, the grid's parameters
    assert mj.calls("/mj/submit/modal")[-1].json["prompt"] == "a snowy owl instead --ar 1:1 --v 6.1"
    again = VariationRequest(image=tile, index=1, prompt="a red fox", **made)  # the job's, from its parent
    provider.run("variation", again, Ctx(3))
    assert mj.calls("/mj/submit/modal")[-1].json["prompt"] == grid
    own = VariationRequest(image=tile, index=1, prompt="an owl --v 7 --s 50", own_prompt=True, **made)
    provider.run("variation", own, Ctx(3))  # parameters of its own replace the grid's of the same name
    assert mj.calls("/mj/submit/modal")[-1].json["prompt"] == "an owl --ar 1:1 --v 7 --s 50"


def test_vary_region_sends_the_mask_to_the_modal(mj):
    provider = make(mj)
    parent = upscaled(provider)
    mask = Image.new("L", (192, 128), 0)
    mask.paste(255, (40, 30, 120, 90))
    image = Image.new("RGB", (192, 128))
    kite = InpaintRequest(image=image, mask=mask, prompt="a kite", own_prompt=True, **parent)
    result = provider.run("inpaint", kite, Ctx())
    assert result.grid is not None
    (modal,) = mj.calls("/mj/submit/modal")
    sent = decode_image(modal.json["maskBase64"])
    assert sent.size == (192, 128) and sent.getpixel((80, 60)) == (255, 255, 255)
    assert modal.json["prompt"] == "a kite --ar 1:1 --v 6.1"


def test_pan_of_an_image_made_elsewhere_fails_without_calling_the_proxy(mj):
    request = OutpaintRequest(
        image=Image.new("RGB", (8, 8)), pad=(0, 4, 0, 0), width=8, height=12, direction="up"
    )
    with pytest.raises(ProviderError, match="can only pan or zoom out of images it made itself"):
        make(mj).run("outpaint", request, Ctx())
    assert mj.calls("/mj/submit/action") == []


def test_pan_of_an_upscale_the_proxy_forgot_says_so(mj):
    provider = make(mj)
    parent = upscaled(provider)
    mj.tasks.clear()  # the proxy restarted, or dropped old tasks: the fetch answers 204
    request = OutpaintRequest(
        image=Image.new("RGB", (8, 8)), pad=(0, 4, 0, 0), width=8, height=12, direction="up", **parent
    )
    with pytest.raises(ProviderError, match=f"no longer knows task {parent['parent_ref']}"):
        provider.run("outpaint", request, Ctx())
    assert len(mj.calls("/mj/submit/action")) == 1  # only the upscale's U2


def test_shorten_and_face_swap(mj):
    provider = make(mj)
    shortened = provider.run("shorten", ShortenRequest(prompt="a red fox in deep snow, winter forest"), Ctx())
    assert shortened.descriptions == [
        "red fox in deep snow, winter forest",
        "red fox in deep snow",
        "red fox, snow",
        "red fox",
        "fox",
    ]
    face = Image.new("RGB", (16, 16), (200, 150, 120))
    swapped = provider.run("faceswap", FaceSwapRequest(target=face, swap=face), Ctx())
    (call,) = mj.calls("/mj/insight-face/swap")
    assert decode_image(call.json["targetBase64"]).size == (16, 16)
    assert swapped.image.size == (192, 128)


@pytest.mark.parametrize("size", [(1, 1), (60000, 1), (1, 60000), (31, 400)])
def test_a_grid_too_small_to_cut_into_four_tiles_is_refused(mj, size):
    mj.grid = png(size)
    message = rf"midjourney-proxy provider sent a {size[0]}x{size[1]} grid; .* at least 32x32 pixels"
    with pytest.raises(ProviderError, match=message):
        imagine(make(mj))


@pytest.mark.parametrize("answer", [[1], "ok", 42])
def test_a_face_swap_answer_that_is_not_an_object_is_a_clear_error(mj, answer):
    mj.swap_answer = answer
    face = Image.new("RGB", (16, 16), (200, 150, 120))
    with pytest.raises(ProviderError, match="midjourney-proxy provider refused the face swap: no reason"):
        make(mj).run("faceswap", FaceSwapRequest(target=face, swap=face), Ctx())
