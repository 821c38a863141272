"""Shorten and face swap through both APIs: results, tokens, webhooks, /fetch-many, a refund on no face."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw, ImageOps

from original import Original
from providers.faces import find_face
from test_pan_zoom_inpaint import balance, fetch_image, png, wait

PHOTOS = Path(skimage.data.__file__).parent
PROMPT = "a very beautiful and highly detailed oil painting of an old lighthouse on a cliff at dusk, dramatic"


def photo(name: str) -> Image.Image:
    with Image.open(PHOTOS / name) as image:
        return image.convert("RGB")


@pytest.fixture
def original(api) -> Original:
    return Original(api.client, api.key)


def test_shorten_gives_five_shorter_prompts_and_each_words_importance(api, original):
    job = wait(api, api.submit("/v1/shorten", {"prompt": PROMPT})["id"])
    assert job["status"] == "succeeded" and job["type"] == "shorten" and job["prompt"] == PROMPT
    prompts = job["descriptions"]
    assert len(prompts) == 5 and len(set(prompts)) == 5
    assert all(len(text) < len(PROMPT) for text in prompts)
    assert "lighthouse" in prompts[-1] or "lighthouse" in prompts[0]
    words = [word for word, _ in job["tokens"]]
    assert "lighthouse" in words and all(0 <= weight <= 1 for _, weight in job["tokens"])
    weight = dict(job["tokens"])
    assert weight["lighthouse"] > weight["very"]
    task = original.run("/shorten", {"prompt": PROMPT})
    assert task["status"] == "finished" and task["task_type"] == "shorten"
    assert len(task["content"]) == 5 and task["tokens"] == api.job(task["task_id"])["tokens"]
    many = original.post("/fetch-many", {"task_ids": [job["id"], task["task_id"]]}).get_json()["tasks"]
    numbered = [f"{n}\ufe0f\u20e3 {text}" for n, text in enumerate(prompts, 1)]  # as apiframe.ai's
    assert [t["content"] for t in many] == [numbered, task["content"]]


@pytest.fixture
def faces(files) -> dict[str, str]:
    """The astronaut (a face), another face (the astronaut mirrored, with a mark), and photos without one."""
    astronaut = photo("astronaut.png")
    other = ImageOps.mirror(astronaut)
    box = find_face(other)
    ImageDraw.Draw(other).ellipse(
        (
            box.x + 0.25 * box.width,
            box.y + 0.55 * box.height,
            box.x + 0.4 * box.width,
            box.y + 0.7 * box.height,
        ),
        fill=(60, 20, 90),
    )
    return {
        "astronaut": files.add("/astronaut.png", png(astronaut)),
        "other": files.add("/other.png", png(other)),
        "coffee": files.add("/coffee.png", (PHOTOS / "coffee.png").read_bytes()),
        "chelsea": files.add("/chelsea.png", (PHOTOS / "chelsea.png").read_bytes()),
    }


def test_face_swap_changes_the_face_and_not_the_far_corners(api, original, faces):
    before = balance(api)
    job = wait(
        api,
        api.submit("/v1/faceswap", {"targetImageUrl": faces["astronaut"], "swapImageUrl": faces["other"]})[
            "id"
        ],
    )
    assert job["status"] == "succeeded" and job["type"] == "faceswap", job
    assert balance(api) == before - 4
    result = np.asarray(fetch_image(api, job["imageUrl"]), np.float64)
    target = photo("astronaut.png")
    box = find_face(target)
    source = np.asarray(target, np.float64)
    assert result.shape == source.shape
    face = (slice(box.y, box.y + box.height), slice(box.x, box.x + box.width))
    assert np.abs(result[face] - source[face]).mean() > 4
    for corner in ((slice(0, 60), slice(0, 60)), (slice(-60, None), slice(-60, None))):
        assert np.abs(result[corner] - source[corner]).mean() < 1
    task = original.run(
        "/faceswap", {"target_image_url": faces["astronaut"], "swap_image_url": faces["other"]}
    )
    assert task["status"] == "finished" and task["task_type"] == "faceswap" and task["image_url"]
    image = original.image(task["image_url"])
    assert image.size == target.size


@pytest.mark.parametrize(
    ("target", "swap", "which"),
    [("coffee", "astronaut", "target image"), ("astronaut", "chelsea", "swap image")],
)
def test_no_face_fails_the_job_naming_the_image_and_refunds_it(api, original, faces, target, swap, which):
    before = balance(api)
    job = wait(
        api, api.submit("/v1/faceswap", {"targetImageUrl": faces[target], "swapImageUrl": faces[swap]})["id"]
    )
    assert job["status"] == "failed" and f"No face was found in the {which}" in job["error"]
    assert balance(api) == before
    task = original.run("/faceswap", {"target_image_url": faces[target], "swap_image_url": faces[swap]})
    assert task["status"] == "failed" and which in task["message"]
    assert balance(api) == before


def test_a_face_swap_input_that_is_not_an_image_fails_naming_the_field(api, files):
    text = files.add("/note.txt", b"hello")
    job = wait(api, api.submit("/v1/faceswap", {"targetImageUrl": text, "swapImageUrl": text})["id"])
    assert job["status"] == "failed" and "targetImageUrl" in job["error"]


def test_the_new_jobs_post_their_webhooks(api, original, receiver, faces):
    body = {"prompt": PROMPT, "webhook_url": receiver.url("/shorten")}
    task_id = original.submit("/shorten", body)
    job = api.submit(
        "/v1/faceswap",
        {
            "targetImageUrl": faces["coffee"],
            "swapImageUrl": faces["astronaut"],
            "webhookUrl": receiver.url("/faceswap"),
        },
    )
    deliveries = {delivery.path: delivery.json() for delivery in receiver.wait_for(2)}
    assert deliveries["/shorten"]["task_id"] == task_id and len(deliveries["/shorten"]["content"]) == 5
    assert deliveries["/faceswap"]["event"] == "job.failed"
    assert deliveries["/faceswap"]["job"]["id"] == job["id"]
    assert "target image" in deliveries["/faceswap"]["job"]["error"]


def test_the_job_list_filters_by_the_new_types(api):
    wait(api, api.submit("/v1/shorten", {"prompt": PROMPT})["id"])
    listed = api.get("/v1/jobs?type=shorten").get_json()["jobs"]
    assert [job["type"] for job in listed] == ["shorten"]
    assert api.get("/v1/jobs?type=pan").get_json()["jobs"] == []
