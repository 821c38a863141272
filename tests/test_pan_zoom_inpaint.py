"""Pan, zoom out and vary region of an upscaled photograph, in both APIs' spellings, and their bad input."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

import imagemeta
from operations import pan_pad, zoom_geometry
from original import Original
from providers.local import painted_with

PHOTOS = Path(skimage.data.__file__).parent


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def fetch_image(api, url: str) -> Image.Image:
    response = api.client.get(url.removeprefix("http://images.test"))
    assert response.status_code == 200, url
    return Image.open(io.BytesIO(response.data)).convert("RGB")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.float64)


def wait(api, job_id: str) -> dict:
    """Poll a job (gently: the plan's rate limit counts polls) until it ends."""
    deadline = time.monotonic() + 90
    while (job := api.job(job_id))["status"] not in ("succeeded", "failed", "timed_out", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.15)
    return job


def run(api, path: str, body: dict) -> dict:
    """Submit a job and wait for its end."""
    return wait(api, api.submit(path, body)["id"])


@pytest.fixture
def upscaled(api, files) -> tuple[dict, Image.Image]:
    """coffee.png at 300x200, enlarged 2x by upscale-highres: an upscaled photograph (600x400) to work on."""
    with Image.open(PHOTOS / "coffee.png") as photo:
        small = photo.convert("RGB").resize((300, 200), Image.Resampling.LANCZOS)
    url = files.add("/coffee.png", png(small))
    job = run(api, "/v1/upscale-highres", {"imageUrl": url, "type": "2x"})
    assert job["status"] == "succeeded", job
    image = fetch_image(api, job["imageUrl"])
    assert image.size == (600, 400)
    return job, image


def balance(api) -> int:
    return api.get("/v1/account").get_json()["account"]["credits"]["remaining"]


def job_count(api) -> int:
    return len(api.get("/v1/jobs?limit=100").get_json()["jobs"])


@pytest.mark.parametrize("direction", ["left", "up", "right", "down"])
def test_pan_extends_the_canvas_by_half_and_keeps_the_parent_in_place(api, upscaled, direction):
    parent, image = upscaled
    done = run(api, "/v1/pan", {"jobId": parent["id"], "direction": direction})
    assert done["type"] == "pan" and done["direction"] == direction and done["parentJobId"] == parent["id"]
    assert done["status"] == "succeeded", done
    left, top, right, bottom = pan_pad(image.size, direction)
    assert (left + right, top + bottom) == ((300, 0) if direction in ("left", "right") else (0, 200))
    tiles = [fetch_image(api, url) for url in done["imageUrls"]]
    for tile in tiles:
        assert tile.size == (image.width + left + right, image.height + top + bottom)
        kept = tile.crop((left, top, left + image.width, top + image.height))
        assert np.abs(pixels(kept) - pixels(image)).mean() < 1.5  # the parent, unchanged in place
        new = np.asarray(tile, np.float64)
        area = new[:, :left] if left else new[:, -right:] if right else new[:top] if top else new[-bottom:]
        assert area.std() > 8  # the new area is painted, not a flat fill
    assert len({tile.tobytes() for tile in tiles}) == 4


def test_zoom_out_shrinks_the_parent_into_the_middle_at_its_resolution(api, upscaled):
    parent, image = upscaled
    done = run(api, "/v1/zoom", {"jobId": parent["id"], "zoomRatio": 2})
    assert done["status"] == "succeeded" and done["type"] == "zoom" and done["zoomRatio"] == 2, done
    (left, top, right, bottom), size = zoom_geometry(image.size, 2)
    assert size == image.size and (left + right, top + bottom) == (600, 400)
    small = image.resize((300, 200), Image.Resampling.LANCZOS)
    for url in done["imageUrls"]:
        tile = fetch_image(api, url)
        assert tile.size == image.size
        middle = tile.crop((150, 100, 450, 300))
        assert np.abs(pixels(middle) - pixels(small)).mean() < 8  # the parent, at half its size
        assert pixels(tile.crop((0, 0, 150, 400))).std() > 8  # painted surroundings


def test_make_square_extends_the_short_side_and_a_custom_zoom_takes_an_aspect_ratio(api, upscaled):
    parent, image = upscaled
    square = run(api, "/v1/zoom", {"jobId": parent["id"], "zoomRatio": 1})
    tile = fetch_image(api, square["imageUrls"][0])
    assert tile.size == (600, 600)
    kept = tile.crop((0, 100, 600, 500))
    assert np.abs(pixels(kept) - pixels(image)).mean() < 1.5
    wide = run(api, "/v1/zoom", {"jobId": parent["id"], "zoomRatio": 1.25, "aspectRatio": "16:9"})
    assert wide["status"] == "succeeded" and wide["zoomRatio"] == 1.25
    assert fetch_image(api, wide["imageUrls"][0]).size == (600, 338)


def rectangle_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def test_inpaint_repaints_inside_the_mask_and_keeps_the_rest(api, upscaled):
    parent, image = upscaled
    box = (200, 120, 400, 280)
    mask = rectangle_mask(image.size, box)
    body = {
        "jobId": parent["id"],
        "mask": "data:image/png;base64," + base64.b64encode(png(mask)).decode(),
        "prompt": "a red kite",
    }
    job = api.submit("/v1/inpaint", body)
    assert job["type"] == "inpaint" and job["parentJobId"] == parent["id"]
    assert len(str(api.job(job["id"]))) < 2000  # the mask is not kept in the job's params
    done = wait(api, job["id"])
    assert done["status"] == "succeeded", done
    outside = np.asarray(mask) == 0
    for url in done["imageUrls"]:
        tile = pixels(fetch_image(api, url))
        change = np.abs(tile - pixels(image)).mean(axis=2)
        assert tile.shape[:2] == (400, 600)
        assert change[outside].mean() < 1.0 and np.percentile(change[outside], 99) < 6
        assert change[box[1] + 10 : box[3] - 10, box[0] + 10 : box[2] - 10].mean() > 15


def test_the_original_routes_name_their_tasks_and_the_legacy_zoom(api, upscaled):
    parent, image = upscaled
    original = Original(api.client, api.key)
    pan = original.run("/pan", {"parent_task_id": parent["id"], "direction": "up"})
    assert pan["status"] == "finished" and pan["task_type"] == "pan-up" and len(pan["image_urls"]) == 4
    zoom = original.run(
        "/outpaint", {"parent_task_id": parent["id"], "zoom_ratio": "1.5", "aspect_ratio": "1:1"}
    )
    assert zoom["task_type"] == "outpaint-1.5" and zoom["status"] == "finished"
    assert original.image(zoom["image_urls"][0]).size == (600, 600)
    legacy = original.run("/midjourney/zoom", {"taskId": parent["id"]})
    assert legacy["task_type"] == "outpaint-2"
    assert api.job(legacy["task_id"])["zoomRatio"] == 2
    mask = base64.b64encode(png(rectangle_mask(image.size, (0, 0, 150, 150)))).decode()
    inpaint = original.run("/inpaint", {"parent_task_id": parent["id"], "mask": mask})
    assert inpaint["task_type"] == "inpaint" and inpaint["status"] == "finished"


BAD_REFERENCE = [
    ("/v1/pan", {"direction": "left"}, "'jobId' field is required"),
    ("/v1/pan", {"jobId": "{parent}"}, "'direction' field is required"),
    ("/v1/pan", {"jobId": "{parent}", "direction": "sideways"}, "'direction' field must be one of: up, down"),
    ("/v1/pan", {"jobId": "{grid}", "direction": "up"}, "pan needs an upscale"),
    ("/v1/zoom", {"jobId": "{parent}"}, "'zoomRatio' field is required"),
    ("/v1/zoom", {"jobId": "{parent}", "zoomRatio": 2.5}, "'zoomRatio' field must be a number from 1 to 2"),
    ("/v1/zoom", {"jobId": "{parent}", "zoomRatio": "1.5"}, "'zoomRatio' field must be a number from 1 to 2"),
    ("/v1/zoom", {"jobId": "{parent}", "zoomRatio": 2, "aspectRatio": "5:1"}, "'aspectRatio' field must be"),
    ("/v1/inpaint", {"jobId": "{parent}"}, "'mask' field is required"),
    (
        "/v1/inpaint",
        {"jobId": "{parent}", "mask": "not base64!"},
        "'mask' field must be a base64-encoded PNG",
    ),
    ("/v1/inpaint", {"jobId": "{parent}", "mask": "{jpeg}"}, "'mask' field must be a PNG image"),
    (
        "/v1/inpaint",
        {"jobId": "{parent}", "mask": "{small}"},
        "must be the image's size, 600x400; it is 300x200",
    ),
    ("/v1/inpaint", {"jobId": "{parent}", "mask": "{black}"}, "'mask' field is all black"),
    ("/v1/inpaint", {"jobId": "{parent}", "mask": "{white}"}, "'mask' field is all white"),
    ("/v1/inpaint", {"jobId": "{parent}", "mask": 12}, "'mask' field must be a base64 PNG"),
    ("/v1/inpaint", {"jobId": "{grid}", "mask": "{black}"}, "inpaint needs an upscale"),
    ("/v1/shorten", {}, "'prompt' field is required"),
    ("/v1/shorten", {"prompt": "   "}, "'prompt' field must not be empty"),
    ("/v1/shorten", {"prompt": "x" * 4001}, "'prompt' field must be at most 4000 characters"),
    ("/v1/faceswap", {"swapImageUrl": "http://a.test/x.png"}, "'targetImageUrl' field is required"),
    ("/v1/faceswap", {"targetImageUrl": "http://a.test/x.png"}, "'swapImageUrl' field is required"),
    (
        "/v1/faceswap",
        {"targetImageUrl": "ftp://a/x", "swapImageUrl": "http://a.test/x"},
        "'targetImageUrl' field must be an http",
    ),
]

BAD_ORIGINAL = [
    ("/pan", {"parent_task_id": "{parent}"}, "'direction' field is required"),
    ("/pan", {"parent_task_id": "{parent}", "direction": 3}, "'direction' field must be a string"),
    ("/pan", {"direction": "up"}, "'parent_task_id' field is required"),
    ("/outpaint", {"parent_task_id": "{parent}"}, "'zoom_ratio' field is required"),
    (
        "/outpaint",
        {"parent_task_id": "{parent}", "zoom_ratio": "big"},
        "'zoom_ratio' field must be a number or a numeric string from 1 to 2",
    ),
    (
        "/outpaint",
        {"parent_task_id": "{parent}", "zoom_ratio": 0.5},
        "'zoom_ratio' field must be a number or a numeric string",
    ),
    (
        "/outpaint",
        {"parent_task_id": "{parent}", "zoom_ratio": 2, "aspect_ratio": "7:3"},
        "'aspect_ratio' field must be",
    ),
    ("/inpaint", {"parent_task_id": "{parent}", "mask": "{white}"}, "'mask' field is all white"),
    ("/inpaint", {"parent_task_id": "{parent}", "mask": "{small}"}, "must be the image's size"),
    ("/inpaint", {"parent_task_id": "{grid}", "mask": "{black}"}, "inpaint needs an upscale"),
    ("/shorten", {"prompt": ""}, "'prompt' field must not be empty"),
    ("/faceswap", {"target_image_url": "http://a.test/x.png"}, "'swap_image_url' field is required"),
    (
        "/faceswap",
        {"target_image_url": "nope", "swap_image_url": "http://a.test/x"},
        "'target_image_url' field must be an http",
    ),
    ("/midjourney/upscale", {"taskId": "{grid}"}, "'index' field is required"),
    ("/midjourney/upscale", {"taskId": "{grid}", "index": 7}, "'index' field must be one of: 1, 2, 3, 4"),
    (
        "/midjourney/vary",
        {"taskId": "{grid}", "index": 1, "strength": 500},
        "'strength' field must be between 0 and 100",
    ),
    (
        "/midjourney/zoom",
        {"taskId": "{parent}", "zoom": 3},
        "'zoom' field must be a number or a numeric string from 1 to 2",
    ),
    ("/midjourney/zoom", {"zoom": 2}, "'taskId' field is required"),
]


@pytest.fixture
def placeholders(api, upscaled) -> dict[str, object]:
    parent, image = upscaled
    grid = api.imagine("a lighthouse", quality=0.25)
    jpeg = io.BytesIO()
    rectangle_mask(image.size, (0, 0, 10, 10)).save(jpeg, "JPEG")
    as_text = {
        "jpeg": jpeg.getvalue(),
        "small": png(rectangle_mask((300, 200), (0, 0, 10, 10))),
        "black": png(Image.new("L", image.size, 0)),
        "white": png(Image.new("RGBA", image.size, (255, 255, 255, 255))),
    }
    return {
        "parent": parent["id"],
        "grid": grid["id"],
        **{key: base64.b64encode(data).decode() for key, data in as_text.items()},
    }


def _filled(body: dict, values: dict) -> dict:
    return {
        key: values[value[1:-1]] if isinstance(value, str) and value[1:-1] in values else value
        for key, value in body.items()
    }


def test_bad_input_in_either_spelling_is_a_clear_400_with_no_job_and_no_debit(api, placeholders):
    before, jobs_before = balance(api), job_count(api)
    original = Original(api.client, api.key)
    for client, cases in ((api, BAD_REFERENCE), (original, BAD_ORIGINAL)):
        for path, body, message in cases:
            response = client.post(path, json=_filled(body, placeholders))
            answer = response.get_json()
            assert response.status_code == 400, (path, body, answer)
            assert answer["success"] is False and answer["error"]["code"] == "VALIDATION_ERROR"
            assert message in answer["error"]["message"], (path, answer["error"]["message"])
    assert balance(api) == before and job_count(api) == jobs_before


def test_a_canvas_larger_than_an_image_may_be_is_refused_at_submission(api, app, upscaled):
    parent, _ = upscaled
    before = balance(api)
    app.config["MAX_IMAGE_PIXELS"] = 300_000  # the 600x400 parent fits; 900x400 and 1200x800 do not
    for path, body, canvas in (
        ("/v1/pan", {"direction": "right"}, 360_000),
        ("/v1/zoom", {"zoomRatio": 2}, 960_000),
    ):
        response = api.post(path, json={"jobId": parent["id"], **body})
        assert response.status_code == 400
        message = response.get_json()["error"]["message"]
        assert f"a canvas of {canvas} pixels, more than the 300000 an image may have" in message
    assert balance(api) == before


def test_an_upscale_of_a_local_tile_is_panned_as_its_scene_through_a_wider_window(api):
    """The upscale carries the parameters of the tile it enlarges, so pan paints on the same scene, and
    paints the prompt it is given into the new area."""
    grid = api.imagine("a lighthouse on a cliff at dusk", quality=0.25)
    upscale = run(api, "/v1/upscale", {"jobId": grid["id"], "index": 2})
    response = api.client.get(upscale["imageUrl"].removeprefix("http://images.test"))
    with Image.open(io.BytesIO(response.data)) as stored:
        fields = imagemeta.read(stored)
        assert painted_with(stored) is not None
    assert fields["prompt"] == "a lighthouse on a cliff at dusk" and fields["Operation"] == "upscale"
    assert fields["Source"] == "imagine" and fields["Tile"] == "2" and fields["Seed"] == str(grid["seed"])
    new_areas = []
    for prompt in (None, "a red castle on a hill"):
        body = {"jobId": upscale["id"], "direction": "right", **({"prompt": prompt} if prompt else {})}
        panned = run(api, "/v1/pan", body)
        assert panned["status"] == "succeeded", panned
        tile = fetch_image(api, panned["imageUrls"][0])
        new_areas.append(pixels(tile)[:, -tile.width // 4 :])
    assert np.abs(new_areas[0] - new_areas[1]).mean() > 5  # the prompt painted the new area
