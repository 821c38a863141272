"""The comfyui adapter against a fake ComfyUI: templates and bindings, the protocol, cancel and failures."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
from urllib.parse import urlsplit

import pytest
from PIL import Image

import imaging
from app import create_app
from certificates import self_signed
from fakes import Ctx, provider_settings
from fakes.comfyui import FakeComfyUI
from fakes.sdwebui import FakeSdWebUI
from providers import (
    BlendRequest,
    ImagineRequest,
    InpaintRequest,
    JobCancelled,
    JobTimedOut,
    OutpaintRequest,
    ProviderError,
    Providers,
    UpscaleRequest,
    VariationRequest,
    create,
)
from providers.comfyui import _uncropped, parse_headers
from providers.comfyui_templates import DEFAULTS_DIR


@pytest.fixture
def comfy():
    fake = FakeComfyUI()
    yield fake
    fake.close()


def make(fake, **overrides):
    return create("comfyui", provider_settings(COMFYUI_URL=fake.url, **overrides))


def imagine_request(aspect="4:3", quality=0.25, **fields) -> ImagineRequest:
    width, height = imaging.dimensions(aspect, quality)
    return ImagineRequest(prompt="a red fox", width=width, height=height, aspect_ratio=aspect, **fields)


def by_class(graph: dict, class_type: str) -> dict:
    (node,) = [node for node in graph.values() if node["class_type"] == class_type]
    return node["inputs"]


def sent_graph(fake) -> dict:
    return fake.calls("/prompt")[-1].json["prompt"]


def photo(size=(256, 192), color=(30, 140, 60)) -> Image.Image:
    return Image.new("RGB", size, color)


# ---- operations --------------------------------------------------------------------------------


def test_imagine_queues_the_filled_template_and_returns_four_tiles_that_follow_the_seed(comfy):
    provider = make(comfy, COMFYUI_CHECKPOINT="sd_xl_base_1.0.safetensors", COMFYUI_NEGATIVE_PROMPT="blurry")
    first = provider.run("imagine", imagine_request(seed=42), Ctx())
    (submit,) = comfy.calls("/prompt")
    (socket,) = comfy.calls("/ws")
    assert submit.json["client_id"] == socket.query["clientId"]
    graph = submit.json["prompt"]
    assert graph["5"]["_meta"] == {"title": "apiframe:seed"}  # titles go along, as the UI sends them
    assert by_class(graph, "EmptyLatentImage") == {"width": 512, "height": 384, "batch_size": 4}
    assert by_class(graph, "KSampler")["seed"] == 42 and by_class(graph, "KSampler")["denoise"] == 1.0
    assert by_class(graph, "CheckpointLoaderSimple")["ckpt_name"] == "sd_xl_base_1.0.safetensors"
    texts = sorted(
        node["inputs"]["text"] for node in graph.values() if node["class_type"] == "CLIPTextEncode"
    )
    assert texts == ["a red fox", "blurry"]
    assert first.seed == 42 and [tile.size for tile in first.tiles] == [(512, 384)] * 4
    assert len({tile.tobytes() for tile in first.tiles}) == 4
    views = comfy.calls("/view")
    assert len(views) == 4 and {v.query["type"] for v in views} == {"output"}
    assert views[0].query["subfolder"] == "apiframe" and views[0].query["filename"].startswith("imagine_")
    again = provider.run("imagine", imagine_request(seed=42), Ctx())
    other = provider.run("imagine", imagine_request(seed=43), Ctx())
    assert [t.tobytes() for t in again.tiles] == [t.tobytes() for t in first.tiles]
    assert other.tiles[0].tobytes() != first.tiles[0].tobytes()


def test_without_a_seed_a_random_one_is_sent_and_recorded(comfy):
    result = make(comfy).run("imagine", imagine_request(), Ctx())
    assert by_class(sent_graph(comfy), "KSampler")["seed"] == result.seed is not None


def test_progress_comes_from_the_websocket_without_polling(comfy):
    comfy.step_seconds = 0.05
    ctx = Ctx()
    make(comfy).run("imagine", imagine_request(), ctx)
    assert not comfy.calls("/queue") and len(comfy.calls("/history/" + _prompt_id(comfy))) == 1
    rising = [p for p in ctx.reported if p]
    assert len(set(rising)) >= 5 and rising == sorted(rising) and max(rising) <= 90


def test_over_https_the_websocket_trusts_the_ca_bundle_the_http_calls_trust(tmp_path, monkeypatch):
    tls, certificate = self_signed(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate)  # the operator's private CA, for requests
    fake = FakeComfyUI(tls)
    try:
        fake.step_seconds = 0.05
        ctx = Ctx()
        result = make(fake).run("imagine", imagine_request(), ctx)
        assert fake.url.startswith("https://") and len(result.tiles) == 4
        assert fake.calls("/ws") and not fake.calls("/queue")  # progress came over wss, not by polling
        assert len({p for p in ctx.reported if p}) >= 5
    finally:
        fake.close()


def _came_through(proxy, call) -> bool:
    """Whether ``call`` reached the fake ComfyUI over one of the proxy's connections."""
    return call.peer in proxy.upstream


def test_progress_comes_over_a_websocket_tunnelled_through_the_proxy_the_http_calls_use(
    comfy, proxy, monkeypatch
):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    comfy.step_seconds = 0.05
    ctx = Ctx()
    result = make(comfy).run("imagine", imagine_request(), ctx)
    assert len(result.tiles) == 4
    assert proxy.connects == [urlsplit(comfy.url).netloc]  # the websocket's tunnel
    assert any(" http://127.0.0.1:" in line for line in proxy.forwarded)  # the HTTP calls, in absolute form
    (socket,) = comfy.calls("/ws")
    assert _came_through(proxy, socket) and not comfy.calls("/queue")  # progress came over it, no polling
    rising = [p for p in ctx.reported if p]
    assert len(set(rising)) >= 5 and rising == sorted(rising)


def test_over_https_the_websocket_tunnels_through_the_proxy_with_its_credentials(
    tmp_path, proxy, monkeypatch
):
    tls, certificate = self_signed(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", "http://gpu%20box:s%3Acret@"))
    fake = FakeComfyUI(tls)
    try:
        fake.step_seconds = 0.05
        ctx = Ctx()
        assert len(make(fake).run("imagine", imagine_request(), ctx).tiles) == 4
        (socket,) = fake.calls("/ws")
        assert _came_through(proxy, socket) and not fake.calls("/queue")  # over wss, through the tunnel
        assert len({p for p in ctx.reported if p}) >= 5
        assert set(proxy.connects) == {urlsplit(fake.url).netloc}
        basic = "Basic " + base64.b64encode(b"gpu box:s:cret").decode()
        assert proxy.authorizations and set(proxy.authorizations) == {basic}  # websocket and HTTP alike
    finally:
        fake.close()


def test_no_proxy_or_a_session_that_ignores_the_environment_sends_the_websocket_directly(
    comfy, proxy, monkeypatch
):
    monkeypatch.setenv("http_proxy", proxy.url)
    provider = make(comfy)
    provider.run("imagine", imagine_request(), Ctx())
    assert len(proxy.connects) == 1 and _came_through(proxy, comfy.calls("/ws")[-1])
    seen = len(comfy.calls())
    monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.1")
    provider.run("imagine", imagine_request(), Ctx())
    monkeypatch.delenv("NO_PROXY")
    provider.http.session.trust_env = False  # the HTTP calls ignore the proxy variables: so does the socket
    provider.run("imagine", imagine_request(), Ctx())
    assert len(proxy.connects) == 1 and not any(_came_through(proxy, call) for call in comfy.calls()[seen:])
    assert len(comfy.calls("/ws")) == 3
    assert not comfy.calls("/queue")  # each job's progress came over its websocket


@pytest.mark.parametrize("answer", ["407", "502", "huge head"])
def test_a_proxy_that_refuses_the_tunnel_makes_the_job_poll_and_succeed(
    comfy, proxy, monkeypatch, caplog, answer
):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    proxy.answer = answer
    with caplog.at_level(logging.WARNING, logger="providers.comfyui"):
        result = run_within(make(comfy), Ctx(seconds=10), 5)
    assert len(result.tiles) == 4 and proxy.connects == [urlsplit(comfy.url).netloc]
    assert not comfy.calls("/ws") and comfy.calls("/history/" + _prompt_id(comfy))
    why = answer if answer != "huge head" else "longer than"
    assert any("no websocket" in r.getMessage() and why in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("answer", ["silent", "trickle"])
def test_a_proxy_that_never_answers_connect_never_holds_the_job_past_its_deadline(
    comfy, proxy, monkeypatch, caplog, answer
):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    proxy.answer = answer
    result, gave_up = run_giving_up_the_websocket(comfy, caplog)
    assert len(result.tiles) == 4 and proxy.connects and not comfy.calls("/ws")
    assert gave_up < 3  # at its 0.5 s connect timeout, not the job's 30 s (nor the proxy's)
    started = time.monotonic()
    assert isinstance(run_within(make(comfy, PROVIDER_CONNECT_TIMEOUT=30), Ctx(seconds=1.0), 10), JobTimedOut)
    assert time.monotonic() - started < 5 and len(proxy.connects) == 2  # the job's 1 s, not 30 s


def _prompt_id(fake) -> str:
    (entry_id,) = list(fake.history)[-1:]
    return entry_id


def test_variation_uploads_the_tile_and_samples_it_at_the_requested_strength(comfy):
    tile = photo((260, 196))
    result = make(comfy).run(
        "variation", VariationRequest(image=tile, index=2, prompt="a meadow", strength=0.8), Ctx()
    )
    (upload,) = comfy.calls("/upload/image")
    assert upload.form["type"] == "input" and upload.form["subfolder"] == "apiframe"
    assert upload.form["overwrite"] == "true" and upload.form["image.filename"].endswith(".png")
    assert Image.open(__import__("io").BytesIO(upload.files["image"])).size == (256, 192)  # sides of 8
    graph = sent_graph(comfy)
    assert by_class(graph, "LoadImage")["image"] == "apiframe/" + upload.form["image.filename"]
    assert (
        by_class(graph, "KSampler")["denoise"] == 0.8 and by_class(graph, "RepeatLatentBatch")["amount"] == 4
    )
    assert [t.size for t in result.tiles] == [(256, 192)] * 4


def test_blend_samples_an_even_mix_of_the_inputs(comfy):
    images = [Image.new("RGB", (300, 300), (255, 0, 0)), Image.new("RGB", (200, 200), (0, 0, 255))]
    result = make(comfy).run("blend", BlendRequest(images=images, width=512, height=512), Ctx())
    mixed = Image.open(__import__("io").BytesIO(comfy.calls("/upload/image")[0].files["image"])).convert(
        "RGB"
    )
    red, _, blue = mixed.getpixel((10, 10))
    assert mixed.size == (512, 512) and abs(red - 128) <= 2 and abs(blue - 127) <= 2
    assert by_class(sent_graph(comfy), "KSampler")["denoise"] == 0.75 and len(result.tiles) == 4


def test_upscale_scales_the_image_by_the_factor(comfy):
    result = make(comfy).run("upscale", UpscaleRequest(image=photo((200, 100)), index=1, factor=2), Ctx())
    assert by_class(sent_graph(comfy), "ImageScaleBy") == {
        "image": ["1", 0], "upscale_method": "lanczos", "scale_by": 2.0
    }  # fmt: skip
    assert result.image.size == (400, 200)


def test_a_creative_upscale_gets_finer_detail_than_a_subtle_one(comfy):
    provider = make(comfy)
    subtle, creative = (
        provider.run("upscale", UpscaleRequest(image=photo((200, 100)), index=1, mode=mode), Ctx()).image
        for mode in ("subtle", "creative")
    )
    assert subtle.size == creative.size == (400, 200) and subtle.tobytes() != creative.tobytes()


def test_upscale_with_a_named_model_runs_it_and_keeps_the_asked_factor(comfy):
    provider = make(comfy, COMFYUI_UPSCALE_MODEL="RealESRGAN_x4plus.pth")
    result = provider.run("upscale", UpscaleRequest(image=photo((200, 100)), index=1, factor=2), Ctx())
    graph = sent_graph(comfy)
    assert by_class(graph, "UpscaleModelLoader") == {"model_name": "RealESRGAN_x4plus.pth"}
    assert by_class(graph, "ImageUpscaleWithModel")["image"] == ["1", 0]
    assert result.image.size == (400, 200)  # the model's 4x, brought to the 2x asked for


def test_outpaint_pads_the_image_and_keeps_its_pixels(comfy):
    request = OutpaintRequest(
        image=photo((256, 256), (10, 200, 30)),
        pad=(128, 0, 0, 0),
        width=384,
        height=256,
        prompt="more forest",
        seed=7,
        direction="left",
    )
    result = make(comfy).run("outpaint", request, Ctx())
    graph = sent_graph(comfy)
    pad = by_class(graph, "ImagePadForOutpaint")
    assert (pad["left"], pad["top"], pad["right"], pad["bottom"]) == (128, 0, 0, 0)
    assert by_class(graph, "VAEEncodeForInpaint")["mask"] == ["5", 1]
    assert by_class(graph, "ImageScale")["width"] == 384 and by_class(graph, "KSampler")["seed"] == 7
    assert result.seed == 7 and [t.size for t in result.tiles] == [(384, 256)] * 4
    for tile in result.tiles:
        assert tile.getpixel((300, 128)) == (10, 200, 30)  # the parent's pixels, in place
        assert tile.getpixel((20, 128)) != (10, 200, 30)  # new pixels on the left


def test_inpaint_repaints_only_where_the_mask_is_white(comfy):
    image = photo((256, 256), (200, 50, 50))
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (0, 0, 128, 256))
    result = make(comfy).run(
        "inpaint", InpaintRequest(image=image, mask=mask, prompt="a window", seed=5), Ctx()
    )
    uploads = comfy.calls("/upload/image")
    assert len(uploads) == 2
    graph = sent_graph(comfy)
    assert by_class(graph, "LoadImageMask") == {"image": "apiframe/" + uploads[1].form["image.filename"],
                                                "channel": "red"}  # fmt: skip
    assert by_class(graph, "VAEEncodeForInpaint")["mask"] == ["5", 0]
    for tile in result.tiles:
        assert tile.getpixel((200, 100)) == (200, 50, 50) and tile.getpixel((40, 100)) != (200, 50, 50)


# ---- failures ----------------------------------------------------------------------------------


def test_inpaint_tiles_keep_an_image_whose_sides_are_not_multiples_of_8_in_place(comfy):
    image = Image.radial_gradient("L").resize((250, 190)).convert("RGB")  # a face swap's size, say
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (0, 0, 100, 190))
    result = make(comfy).run("inpaint", InpaintRequest(image=image, mask=mask, prompt="a window"), Ctx())
    assert [tile.size for tile in result.tiles] == [(250, 190)] * 4
    kept = (110, 0, 250, 190)  # outside the mask, every pixel where it was
    assert all(tile.crop(kept).tobytes() == image.crop(kept).tobytes() for tile in result.tiles)
    edge = (0, 0, 1, 190)  # the column the VAE cut away, inside the mask: painted, not the image's
    assert all(tile.crop(edge).tobytes() != image.crop(edge).tobytes() for tile in result.tiles)


def test_tiles_of_an_operators_workflow_that_works_at_its_own_size_are_scaled_to_fit():
    tile = Image.radial_gradient("L").convert("RGB")  # 256 square, for a 1024 square image
    original = Image.new("RGB", (1024, 1024), (200, 50, 50))
    restored = _uncropped(tile, (1024, 1024), original, Image.new("L", (1024, 1024), 0))
    assert restored.tobytes() == imaging.fit(tile, 1024, 1024).tobytes()


def test_node_errors_fail_the_job_with_comfyuis_message(comfy):
    provider = make(comfy, COMFYUI_CHECKPOINT="missing.safetensors")
    with pytest.raises(ProviderError) as failure:
        provider.run("imagine", imagine_request(), Ctx())
    message = str(failure.value)
    assert message.startswith("The comfyui provider refused the workflow: Prompt outputs failed validation")
    assert "node 1 (CheckpointLoaderSimple): Value not in list: ckpt_name: 'missing.safetensors'" in message
    assert len(comfy.calls("/prompt")) == 1 and not comfy.history


def test_an_unknown_node_class_is_comfyuis_missing_node_message(comfy, tmp_path):
    graph = json.loads((DEFAULTS_DIR / "upscale.json").read_text())
    graph["2"]["class_type"] = "UltimateSDUpscale"
    (tmp_path / "upscale.json").write_text(json.dumps(graph))
    provider = make(comfy, COMFYUI_WORKFLOWS=str(tmp_path))
    with pytest.raises(
        ProviderError, match="Node 'apiframe:scale' not found. The custom node may not be installed"
    ):
        provider.run("upscale", UpscaleRequest(image=photo(), index=1), Ctx())


def test_an_execution_error_fails_the_job_naming_the_node(comfy):
    comfy.fail_class = "KSampler"
    with pytest.raises(ProviderError) as failure:
        make(comfy).run("imagine", imagine_request(), Ctx())
    assert str(failure.value) == (
        "The comfyui provider's workflow failed in node 5 (KSampler): "
        "CUDA out of memory. Tried to allocate 2.00 GiB"
    )


def test_an_execution_error_seen_only_in_the_history_fails_the_job(comfy):
    comfy.fail_class = "VAEDecode"
    comfy.drop_socket_after = 1  # the socket is gone before the error is sent
    with pytest.raises(ProviderError, match=r"failed in node 6 \(VAEDecode\): CUDA out of memory"):
        make(comfy).run("imagine", imagine_request(), Ctx())
    assert comfy.calls("/queue") or comfy.calls("/history/" + _prompt_id(comfy))


def test_a_socket_that_drops_mid_job_falls_back_to_history_and_queue(comfy):
    comfy.step_seconds = 0.05
    comfy.drop_socket_after = 4
    result = make(comfy).run("imagine", imagine_request(seed=9), Ctx())
    assert len(result.tiles) == 4 and result.seed == 9
    assert len(comfy.calls("/history/" + _prompt_id(comfy))) >= 2 and comfy.calls("/queue", "GET")


def test_comfyui_down_at_submission_is_a_clear_error():
    provider = create("comfyui", provider_settings(COMFYUI_URL="http://127.0.0.1:9"))
    started = time.monotonic()
    with pytest.raises(ProviderError, match="comfyui provider could not be reached"):
        provider.run("imagine", imagine_request(), Ctx())
    assert time.monotonic() - started < 5


def test_a_5xx_at_submission_is_retried(comfy):
    comfy.fail(503, times=2, path="/prompt")
    result = make(comfy).run("imagine", imagine_request(), Ctx())
    assert len(result.tiles) == 4 and len(comfy.calls("/prompt")) == 3


def test_comfyui_going_down_mid_job_fails_the_job(comfy):
    comfy.step_seconds = 0.2
    ctx = Ctx()
    provider = make(comfy)

    def stop_when_running():
        comfy.wait_until_running()
        time.sleep(0.2)
        comfy.close()

    threading.Thread(target=stop_when_running, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(ProviderError, match="comfyui provider could not be reached"):
        provider.run("imagine", imagine_request(), ctx)
    assert time.monotonic() - started < 8


def test_a_prompt_lost_by_a_restarted_comfyui_fails_the_job(comfy):
    comfy.step_seconds = 0.3
    threading.Timer(0.4, comfy.restart).start()
    with pytest.raises(ProviderError, match="lost the prompt: it is neither queued, running nor in"):
        make(comfy).run("imagine", imagine_request(), Ctx())
    assert comfy.calls("/queue", "GET") and not comfy.history


def test_cancel_interrupts_our_running_prompt(comfy):
    comfy.step_seconds = 0.5
    ctx = Ctx()
    ctx.cancel_after(0.4)
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        make(comfy).run("imagine", imagine_request(), ctx)
    assert time.monotonic() - started < 3
    prompt_id = _wait_history(comfy)
    assert comfy.interrupts == [{"prompt_id": prompt_id}] and not comfy.deleted
    assert comfy.history[prompt_id]["status"]["messages"][-1][0] == "execution_interrupted"


def _wait_history(fake, timeout: float = 5) -> str:
    deadline = time.monotonic() + timeout
    while not fake.history:
        assert time.monotonic() < deadline, "the prompt never ended"
        time.sleep(0.02)
    return _prompt_id(fake)


def test_cancel_deletes_our_queued_prompt_and_interrupts_nothing(comfy):
    comfy.paused.set()  # someone else's prompt is running; ours waits
    ctx = Ctx()
    ctx.cancel_after(0.4)
    with pytest.raises(JobCancelled):
        make(comfy).run("imagine", imagine_request(), ctx)
    (submitted,) = comfy.calls("/prompt")
    assert len(comfy.deleted) == 1 and not comfy.interrupts and not comfy.queue
    assert comfy.calls("/queue", "POST")[0].json == {"delete": comfy.deleted}


def test_a_silent_server_never_holds_the_job_past_its_deadline(comfy):
    comfy.step_seconds = 30
    started = time.monotonic()
    with pytest.raises(JobTimedOut):
        make(comfy).run("imagine", imagine_request(), Ctx(seconds=1.0))
    assert time.monotonic() - started < 5  # the job's 1 s, not the step's 30 s
    assert comfy.interrupts  # the server was told to stop


def run_within(provider, ctx, seconds: float):
    """An imagine run in a thread: its result or exception, failing if it still runs ``seconds`` later."""
    outcome = []

    def run():
        try:
            outcome.append(provider.run("imagine", imagine_request(), ctx))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"the job still ran {seconds} s later"
    return outcome[0]


def run_giving_up_the_websocket(comfy, caplog) -> tuple:
    """An imagine with a 0.5 s connect timeout and a 30 s deadline whose websocket will not open: its
    result, and the seconds from its start to the give-up (timed alone: the painting after it is not)."""
    started = time.time()
    with caplog.at_level(logging.WARNING, logger="providers.comfyui"):
        result = run_within(make(comfy, PROVIDER_CONNECT_TIMEOUT=0.5), Ctx(seconds=30), 20)
    (gave_up,) = [record for record in caplog.records if "no websocket" in record.getMessage()]
    return result, gave_up.created - started


@pytest.mark.parametrize("rudeness", ["pings", "slow frame", "fragments"])
def test_a_websocket_that_keeps_sending_never_holds_the_job_past_its_deadline_or_a_cancel(comfy, rudeness):
    comfy.rude_socket = rudeness
    assert isinstance(run_within(make(comfy), Ctx(seconds=1.5), 5), JobTimedOut)
    ctx = Ctx()
    ctx.cancel_after(0.5)
    assert isinstance(run_within(make(comfy), ctx, 4), JobCancelled)


def test_a_trickled_websocket_handshake_gives_up_for_polling_within_the_connect_timeout(comfy, caplog):
    comfy.rude_socket = "slow handshake"
    result, gave_up = run_giving_up_the_websocket(comfy, caplog)
    assert len(result.tiles) == 4 and comfy.calls("/history/" + _prompt_id(comfy))
    assert gave_up < 3  # at its 0.5 s connect timeout, not the job's 30 s


@pytest.mark.parametrize("rudeness", ["huge frame", "many fragments"])
def test_a_websocket_message_past_the_size_limit_ends_the_socket_for_polling(comfy, rudeness):
    comfy.rude_socket = rudeness
    result = run_within(make(comfy), Ctx(seconds=30), 10)
    assert len(result.tiles) == 4 and comfy.calls("/history/" + _prompt_id(comfy))


def test_a_malformed_websocket_message_about_our_prompt_is_ignored(comfy):
    comfy.reshape = lambda event, data: {**data, "nodes": 5} if event == "execution_cached" else data
    assert len(make(comfy).run("imagine", imagine_request(), Ctx()).tiles) == 4


@pytest.mark.parametrize(
    "reshape, message",
    ids=["outputs", "messages"],
    argvalues=[
        (lambda entry: {**entry, "outputs": {node: ["x"] for node in entry["outputs"]}},
         "The comfyui provider sent an unexpected answer to /history."),
        (lambda entry: {**entry, "status": {**entry["status"], "messages": [["a"], "b", 5]}},
         "The comfyui provider's prompt failed (no reason given)."),
    ],
)  # fmt: skip
def test_a_wrong_shaped_history_entry_fails_the_job_naming_the_provider(comfy, reshape, message):
    comfy.fail_class = "VAEDecode" if "failed" in message else None
    comfy.drop_socket_after = 1  # the end is read from the history
    comfy.reshape = lambda what, data: reshape(data) if what == "history" else data
    with pytest.raises(ProviderError) as failure:
        make(comfy).run("imagine", imagine_request(), Ctx())
    assert str(failure.value) == message


def test_a_wrong_shaped_queue_fails_the_job_naming_the_provider(comfy):
    comfy.paused.set()
    comfy.fail(500, path="/ws")  # no websocket: the queue is polled
    comfy.reshape = lambda what, data: {**data, "queue_pending": 5} if what == "queue" else data
    with pytest.raises(ProviderError) as failure:
        make(comfy).run("imagine", imagine_request(), Ctx())
    assert str(failure.value) == "The comfyui provider sent an unexpected answer to /queue."


def test_a_wrong_shaped_refusal_still_gives_comfyuis_message(comfy):
    def reshape(what, data):
        return {**data, "node_errors": {"1": {"class_type": "X", "errors": 5}}} if what == "prompt" else data

    comfy.reshape = reshape
    with pytest.raises(ProviderError) as failure:
        make(comfy, COMFYUI_CHECKPOINT="missing.safetensors").run("imagine", imagine_request(), Ctx())
    assert str(failure.value) == (
        "The comfyui provider refused the workflow: Prompt outputs failed validation. node 1 (X):"
    )


def test_proxy_headers_are_sent_on_http_and_the_websocket_and_never_shown(comfy):
    comfy.required_headers = {"Authorization": "Bearer s3cret-token"}
    provider = make(comfy, COMFYUI_HEADERS="Authorization: Bearer s3cret-token")
    provider.run("imagine", imagine_request(), Ctx())
    assert comfy.calls("/ws")[0].headers["Authorization"] == "Bearer s3cret-token"
    assert not comfy.calls("/queue")  # the socket was accepted, so no polling
    wrong = make(comfy, COMFYUI_HEADERS='{"Authorization": "Bearer nope-token"}')
    with pytest.raises(ProviderError) as failure:
        wrong.run("imagine", imagine_request(), Ctx())
    assert "credentials" in str(failure.value) and "nope-token" not in str(failure.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, {}),
        (
            '{"X-Api-Key": "k1", "Authorization": "Basic YTpi"}',
            {"X-Api-Key": "k1", "Authorization": "Basic YTpi"},
        ),
        (
            "X-Api-Key: k1\nCf-Access-Client-Id: abc:def\n",
            {"X-Api-Key": "k1", "Cf-Access-Client-Id": "abc:def"},
        ),
    ],
)
def test_headers_setting_takes_json_or_lines(value, expected):
    assert parse_headers(value) == expected


@pytest.mark.parametrize("value", ["{not json", "no colon here", '{"X": 1}', "Bad Name: v"])
def test_bad_headers_setting_names_the_variable(value):
    with pytest.raises(ValueError, match="APIFRAME_COMFYUI_HEADERS"):
        parse_headers(value)


# ---- templates ---------------------------------------------------------------------------------


def test_a_custom_workflow_directory_replaces_only_the_operations_it_has(comfy, tmp_path):
    custom = {
        "10": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "11": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["10", 1]},
               "_meta": {"title": "Positive apiframe:prompt"}},
        "12": {"class_type": "CLIPTextEncode", "inputs": {"text": "ugly", "clip": ["10", 1]}},
        "13": {"class_type": "EmptyLatentImage", "inputs": {"width": 8, "height": 8, "batch_size": 1},
               "_meta": {"title": "apiframe:size apiframe:batch=batch_size"}},
        "14": {"class_type": "KSampler", "_meta": {"title": "apiframe:seed=seed"},
               "inputs": {"model": ["10", 0], "seed": 1, "steps": 30, "cfg": 5.5, "sampler_name": "dpmpp_2m",
                          "scheduler": "karras", "positive": ["11", 0], "negative": ["12", 0],
                          "latent_image": ["13", 0], "denoise": 1.0}},
        "15": {"class_type": "VAEDecode", "inputs": {"samples": ["14", 0], "vae": ["10", 2]}},
        "16": {"class_type": "SaveImage", "inputs": {"images": ["15", 0], "filename_prefix": "mine/fox"}},
    }  # fmt: skip
    (tmp_path / "imagine.json").write_text(json.dumps(custom))
    provider = make(comfy, COMFYUI_WORKFLOWS=str(tmp_path))
    result = provider.run("imagine", imagine_request(seed=3), Ctx())
    graph = sent_graph(comfy)
    assert sorted(graph) == ["10", "11", "12", "13", "14", "15", "16"]
    assert graph["14"]["inputs"]["sampler_name"] == "dpmpp_2m" and graph["14"]["inputs"]["seed"] == 3
    assert graph["11"]["inputs"]["text"] == "a red fox" and graph["12"]["inputs"]["text"] == "ugly"
    assert graph["13"]["inputs"] == {"width": 512, "height": 384, "batch_size": 4}
    assert len(result.tiles) == 4 and comfy.calls("/view")[0].query["subfolder"] == "mine"
    provider.run("upscale", UpscaleRequest(image=photo(), index=1), Ctx())  # the default still
    assert by_class(sent_graph(comfy), "ImageScaleBy")["scale_by"] == 2.0


def write(tmp_path, name: str, graph) -> str:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / name).write_text(graph if isinstance(graph, str) else json.dumps(graph))
    return str(tmp_path)


def default(operation: str) -> dict:
    return json.loads((DEFAULTS_DIR / f"{operation}.json").read_text())


def without_title(graph: dict, node: str) -> dict:
    graph[node]["_meta"]["title"] = "Plain"
    return graph


def replaced(operation: str, node: str, **fields) -> dict:
    graph = default(operation)
    graph[node] = {**graph[node], **fields}
    return graph


PREVIEW = {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}
DANGLING = {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}, "_meta": {"title": "apiframe:output"}}


@pytest.mark.parametrize(
    ("name", "graph", "message"),
    [
        ("imagine.json", without_title(default("imagine"), "5"), "imagine needs: apiframe:seed"),
        ("inpaint.json", without_title(default("inpaint"), "5"), "inpaint needs: apiframe:mask"),
        ("outpaint.json", without_title(default("outpaint"), "5"), "outpaint needs: apiframe:pad"),
        ("upscale.json", {**default("upscale"), "3": PREVIEW}, "no result node: title one 'apiframe:output'"),
        ("imagine.json", replaced("imagine", "4", _meta={"title": "apiframe:sizes"}),
         "is titled apiframe:sizes, an unknown binding"),
        ("variation.json", replaced("variation", "6", _meta={"title": "apiframe:denoise"}),
         "node 6 (RepeatLatentBatch) is titled apiframe:denoise but has no input denoise to set"),
        ("blend.json", {"nodes": [], "links": []}, "in ComfyUI's UI format; save it with 'Export (API)'"),
        ("imagine.json", "{broken", "imagine.json is not valid JSON"),
        ("upscale.json", {"1": {"inputs": {}}}, "upscale.json: node 1 has no class_type"),
        ("upscale.json", {**default("upscale"), "3": DANGLING}, "node 3 links to node 9, which is missing"),
    ],
)  # fmt: skip
def test_a_bad_template_stops_start_up_naming_the_file_and_the_problem(tmp_path, name, graph, message):
    directory = write(tmp_path, name, graph)
    with pytest.raises(ValueError) as failure:
        create_app({"DATA_DIR": str(tmp_path / "data"), "START_WORKERS": False, "PROVIDER": "comfyui",
                    "COMFYUI_WORKFLOWS": directory})  # fmt: skip
    assert message in str(failure.value) and name in str(failure.value)


def test_a_missing_workflow_directory_stops_start_up(tmp_path):
    with pytest.raises(ValueError, match="APIFRAME_COMFYUI_WORKFLOWS: .*nowhere is not a directory"):
        Providers(provider_settings(PROVIDER="comfyui", COMFYUI_WORKFLOWS=str(tmp_path / "nowhere")))


def test_providers_check_reports_the_server_and_the_workflows(comfy, app_for):
    app = app_for(comfy)
    result = app.test_cli_runner().invoke(args=["providers", "check"])
    assert result.exit_code == 0, result.output
    assert "imagine: comfyui ok: ComfyUI 0.3.99 on cuda:0 NVIDIA GeForce RTX 4090" in result.output
    assert "describe: local ok" in result.output
    classes = {call.path.rsplit("/", 1)[1] for call in comfy.calls() if call.path.startswith("/object_info/")}
    assert {"CheckpointLoaderSimple", "KSampler", "ImagePadForOutpaint", "VAEEncodeForInpaint"} <= classes


def test_providers_check_fails_on_a_missing_checkpoint_or_node_or_a_template_broken_since_start(
    comfy, app_for, tmp_path
):
    result = (
        app_for(comfy, COMFYUI_CHECKPOINT="sd3.safetensors")
        .test_cli_runner()
        .invoke(args=["providers", "check"])
    )
    assert result.exit_code == 1
    assert (
        "imagine: comfyui FAILED: The comfyui provider has no checkpoint 'sd3.safetensors' (it has: "
        in result.output
    )
    graph = default("upscale")
    graph["2"]["class_type"] = "UltimateSDUpscale"
    directory = write(tmp_path, "upscale.json", graph)
    result = app_for(comfy, COMFYUI_WORKFLOWS=directory).test_cli_runner().invoke(args=["providers", "check"])
    assert "has no node 'UltimateSDUpscale', which the workflows use" in result.output
    good = write(tmp_path / "later", "upscale.json", default("upscale"))
    app = app_for(comfy, COMFYUI_WORKFLOWS=good)
    write(tmp_path / "later", "upscale.json", without_title(default("upscale"), "1"))  # edited since start-up
    result = app.test_cli_runner().invoke(args=["providers", "check"])
    assert result.exit_code == 1
    assert "upscale.json lacks the binding(s) upscale needs: apiframe:image" in result.output


def test_a_wrong_shaped_system_stats_fails_the_check_and_degrades_health(comfy, app_for):
    comfy.reshape = lambda what, data: {"system": "x", "devices": []} if what == "system_stats" else data
    app = app_for(comfy)
    result = app.test_cli_runner().invoke(args=["providers", "check"])
    assert result.exit_code == 1
    reason = "The comfyui provider sent an unexpected answer to /system_stats."
    assert f"imagine: comfyui FAILED: {reason}" in result.output
    response = app.test_client().get("/healthz")
    assert response.status_code == 200 and response.get_json()["status"] == "degraded"
    assert response.get_json()["providers"]["imagine"]["detail"] == reason


@pytest.fixture
def app_for(tmp_path):
    """An app (no workers) whose provider is the comfyui adapter of a fake."""
    made = []

    def build(fake, **settings):
        app = create_app({"DATA_DIR": str(tmp_path / f"data{len(made)}"), "START_WORKERS": False,
                          "PROVIDER": "comfyui", "COMFYUI_URL": fake.url, **settings})  # fmt: skip
        made.append(app)
        return app

    return build


# ---- routing -----------------------------------------------------------------------------------


def test_describe_goes_to_the_local_provider_unless_another_is_chosen(caplog, comfy):
    with caplog.at_level(logging.INFO, logger="providers"):
        providers = Providers(provider_settings(PROVIDER="comfyui", COMFYUI_URL=comfy.url))
    assert providers.for_operation("describe").name == "local"
    assert {providers.for_operation(op).name for op in ("imagine", "variation", "upscale", "blend")} == {
        "comfyui"
    }
    assert providers.for_operation("outpaint").name == providers.for_operation("inpaint").name == "comfyui"
    assert "describe: the comfyui provider cannot describe, so the local provider does" in caplog.text
    sd = FakeSdWebUI()
    try:
        chosen = Providers(
            provider_settings(
                PROVIDER="comfyui", COMFYUI_URL=comfy.url, PROVIDER_DESCRIBE="sdwebui", SDWEBUI_URL=sd.url
            )
        )
        assert chosen.for_operation("describe").name == "sdwebui"
    finally:
        sd.close()


def test_a_bad_comfyui_url_stops_start_up():
    with pytest.raises(ValueError, match="APIFRAME_COMFYUI_URL must be an http"):
        Providers(provider_settings(PROVIDER="comfyui", COMFYUI_URL="127.0.0.1:8188"))


# ---- through the gateway -----------------------------------------------------------------------


@pytest.fixture
def gateway(settings, comfy):
    """The app's settings pointing at the fake ComfyUI (ask for this before ``api``)."""
    settings.update(
        PROVIDER="comfyui",
        COMFYUI_URL=comfy.url,
        COMFYUI_POLL_INTERVAL=0.02,
        PROVIDER_RETRIES=1,
        PROVIDER_BACKOFF=0.01,
        PROVIDER_CONNECT_TIMEOUT=1.0,
    )
    return comfy


def balance(api) -> int:
    return api.get("/v1/account").get_json()["account"]["credits"]["remaining"]


def wait_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_cancelling_a_running_job_interrupts_its_prompt_and_refunds(gateway, api):
    gateway.step_seconds = 1.0
    before = balance(api)
    job = api.submit("/v1/imagine", {"prompt": "a slow fox", "quality": 0.25})
    prompt_id = gateway.wait_until_running()
    api.wait(job["id"], until=("processing",))
    assert api.post(f"/v1/jobs/{job['id']}/cancel").get_json()["job"]["status"] == "cancelled"
    wait_for(lambda: gateway.interrupts)
    assert gateway.interrupts == [{"prompt_id": prompt_id}] and not gateway.deleted
    wait_for(lambda: prompt_id in gateway.history)
    assert gateway.history[prompt_id]["status"]["status_str"] == "error"
    assert api.job(job["id"])["status"] == "cancelled" and balance(api) == before


def test_cancelling_a_job_whose_prompt_waits_in_the_queue_deletes_it(gateway, api):
    gateway.paused.set()  # another client's prompt holds the server
    before = balance(api)
    job = api.submit("/v1/imagine", {"prompt": "a patient fox", "quality": 0.25})
    prompt_id = gateway.wait_until_queued()
    api.post(f"/v1/jobs/{job['id']}/cancel")
    wait_for(lambda: gateway.deleted)
    assert gateway.deleted == [prompt_id] and not gateway.interrupts and not gateway.queue
    assert api.job(job["id"])["status"] == "cancelled" and balance(api) == before


REFUSED = (
    "The comfyui provider refused the workflow: Prompt outputs failed validation. "
    "node 1 (CheckpointLoaderSimple): Value not in list: ckpt_name: 'gone.safetensors' not in"
)
FAILED = "The comfyui provider's workflow failed in node 5 (KSampler): CUDA out of memory."
UNREACHABLE = "The comfyui provider could not be reached (connection failed), 2 times; giving up."


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("node_errors", REFUSED),
        ("execution_error", FAILED),
        ("down", UNREACHABLE),
        ("down mid-job", UNREACHABLE),
    ],
)
def test_a_failing_comfyui_fails_the_job_with_its_reason_and_refunds(gateway, app, api, breakage, message):
    before = balance(api)
    if breakage == "node_errors":
        app.config["COMFYUI_CHECKPOINT"] = "gone.safetensors"  # the provider reads the app's settings
    if breakage == "execution_error":
        gateway.fail_class = "KSampler"
    if breakage == "down":
        gateway.close()
    if breakage == "down mid-job":
        gateway.step_seconds = 0.3
    job = api.submit("/v1/imagine", {"prompt": "a red fox", "quality": 0.25})
    if breakage == "down mid-job":
        gateway.wait_until_running()
        api.wait(job["id"], until=("processing",))
        gateway.close()
    done = api.wait(job["id"])
    assert done["status"] == "failed" and done["imageUrl"] is None
    assert done["error"].startswith(message), done["error"]
    assert balance(api) == before


def test_a_socket_that_drops_mid_job_still_succeeds_through_history(gateway, api):
    gateway.step_seconds = 0.05
    gateway.drop_socket_after = 5
    job = api.wait(api.submit("/v1/imagine", {"prompt": "a red fox", "quality": 0.25})["id"])
    assert job["status"] == "succeeded" and len(job["imageUrls"]) == 4
    assert gateway.calls("/queue", "GET") and len(gateway.calls("/view")) == 4


@pytest.fixture
def house_style(settings, tmp_path):
    """A workflow directory with the operator's own imagine graph (ask for this before ``api``)."""
    graph = default("imagine")
    graph["5"]["inputs"].update(steps=12, cfg=4.5, sampler_name="dpmpp_2m", scheduler="karras")
    graph["7"]["inputs"]["filename_prefix"] = "house-style/fox"
    settings["COMFYUI_WORKFLOWS"] = write(tmp_path / "workflows", "imagine.json", graph)


def test_a_custom_workflow_directory_through_the_gateway(gateway, house_style, api):
    job = api.wait(
        api.submit("/v1/imagine", {"prompt": "a red fox", "aspectRatio": "16:9", "quality": 0.25})["id"]
    )
    assert job["status"] == "succeeded"
    sent = sent_graph(gateway)["5"]["inputs"]
    assert (sent["steps"], sent["cfg"], sent["sampler_name"], sent["scheduler"]) == (
        12,
        4.5,
        "dpmpp_2m",
        "karras",
    )
    assert {call.query["subfolder"] for call in gateway.calls("/view")} == {"house-style"}


def test_imagine_upscale_variation_pan_zoom_and_inpaint_all_run_on_comfyui(gateway, api):
    grid = api.wait(api.submit("/v1/imagine", {"prompt": "a lighthouse", "quality": 0.25})["id"])
    assert grid["status"] == "succeeded" and len(grid["imageUrls"]) == 4
    upscale = api.wait(api.submit("/v1/upscale", {"jobId": grid["id"], "index": 2})["id"])
    varied = api.wait(api.submit("/v1/variation", {"jobId": grid["id"], "index": 3})["id"])
    assert upscale["status"] == "succeeded" and varied["status"] == "succeeded"
    panned = api.wait(api.submit("/v1/pan", {"jobId": upscale["id"], "direction": "left"})["id"])
    zoomed = api.wait(api.submit("/v1/zoom", {"jobId": upscale["id"], "zoomRatio": 2})["id"])
    served = api.client.get(urlsplit(upscale["imageUrl"]).path)
    with Image.open(io.BytesIO(served.get_data())) as image:
        size = image.size
    mask = Image.new("L", size, 0)
    mask.paste(255, (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    body = {"jobId": upscale["id"], "mask": base64.b64encode(buffer.getvalue()).decode()}
    inpainted = api.wait(api.submit("/v1/inpaint", body)["id"])
    for job in (panned, zoomed, inpainted):
        assert job["status"] == "succeeded" and len(job["imageUrls"]) == 4, job
    classes = [
        {node["class_type"] for node in call.json["prompt"].values()}
        for call in gateway.calls("/prompt", "POST")
    ]
    assert sum("ImagePadForOutpaint" in graph for graph in classes) == 2  # pan and zoom
    assert sum("VAEEncodeForInpaint" in graph for graph in classes) >= 1  # vary region
