"""POST /v1/imagine: fields, defaults, the job object, and the images it makes."""

from __future__ import annotations

import io
import re
import uuid
from pathlib import Path

import pytest
from PIL import Image

from models import Job

JOB_FIELDS = {
    "id",
    "type",
    "status",
    "prompt",
    "progress",
    "imageUrl",
    "imageUrls",
    "error",
    "createdAt",
    "completedAt",
}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _image(app, url: str) -> Image.Image:
    """Open a job image by its public URL, through the service's own image route."""
    path = url.removeprefix(app.config["PUBLIC_URL"])
    response = app.test_client().get(path)
    assert response.status_code == 200, url
    return Image.open(io.BytesIO(response.data))


def test_accepted_job_object(api):
    response = api.post("/v1/imagine", json={"prompt": "a futuristic city at sunset", "aspectRatio": "16:9"})
    assert response.status_code == 202
    body = response.get_json()
    assert body["success"] is True
    job = body["job"]
    assert JOB_FIELDS <= set(job)
    uuid.UUID(job["id"])
    assert job["type"] == "imagine"
    assert job["status"] == "pending"
    assert job["prompt"] == "a futuristic city at sunset"
    assert job["progress"] == 0
    assert job["imageUrl"] is None and job["imageUrls"] is None and job["error"] is None
    assert TIMESTAMP.match(job["createdAt"]) and job["completedAt"] is None
    assert job["descriptions"] is None and job["parentJobId"] is None and job["index"] is None


def test_imagine_succeeds_with_a_grid_and_four_tiles(app, api):
    job = api.imagine("a futuristic city at sunset", aspectRatio="16:9")
    assert job["status"] == "succeeded", job
    assert job["progress"] == 100
    assert TIMESTAMP.match(job["completedAt"]) and job["completedAt"] >= job["createdAt"]
    assert job["error"] is None
    assert job["imageUrl"].startswith("http://images.test/images/")
    assert len(job["imageUrls"]) == 4 and len(set(job["imageUrls"])) == 4
    tiles = [_image(app, url) for url in job["imageUrls"]]
    assert all(tile.size == (1024, 576) for tile in tiles)
    grid = _image(app, job["imageUrl"])
    assert grid.size == (2048, 1152)
    assert len({tile.tobytes() for tile in tiles}) == 4


@pytest.mark.parametrize(
    ("aspect_ratio", "quality", "size"),
    [
        ("1:1", 1, (1024, 1024)),
        ("16:9", 1, (1024, 576)),
        ("9:16", 1, (576, 1024)),
        ("4:3", 1, (1024, 768)),
        ("3:4", 1, (768, 1024)),
        ("1:1", 0.5, (728, 728)),
        ("1:1", 0.25, (512, 512)),
    ],
)
def test_aspect_ratio_and_quality_set_the_size(app, api, aspect_ratio, quality, size):
    job = api.imagine("a quiet lake", aspectRatio=aspect_ratio, quality=quality)
    assert _image(app, job["imageUrls"][0]).size == size


def test_defaults_are_stored(app, api):
    job = api.submit("/v1/imagine", {"prompt": "  a cat  "})
    with app.app_context():
        stored = Job.get_by_id(uuid.UUID(job["id"]))
    assert stored.prompt == "a cat"
    assert stored.params == {
        "aspect_ratio": "1:1",
        "version": "6.1",
        "quality": 1,
        "style": None,
        "chaos": 0,
        "stylize": 100,
    }


def test_same_prompt_and_parameters_make_the_same_images(app, api):
    first = api.imagine("a lighthouse in a storm", chaos=20)
    second = api.imagine("a lighthouse in a storm", chaos=20)
    other = api.imagine("a lighthouse in a storm", chaos=21)
    pixels = [_image(app, job["imageUrls"][0]).tobytes() for job in (first, second, other)]
    assert pixels[0] == pixels[1] != pixels[2]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"prompt": "a", "aspectRatio": "2:1"}, "aspectRatio"),
        ({"prompt": "a", "aspectRatio": 1}, "aspectRatio"),
        ({"prompt": "a", "version": "7"}, "version"),
        ({"prompt": "a", "version": 6.1}, "version"),
        ({"prompt": "a", "quality": 2}, "quality"),
        ({"prompt": "a", "quality": "1"}, "quality"),
        ({"prompt": "a", "style": "gothic"}, "style"),
        ({"prompt": "a", "chaos": -1}, "chaos"),
        ({"prompt": "a", "chaos": 101}, "chaos"),
        ({"prompt": "a", "chaos": "50"}, "chaos"),
        ({"prompt": "a", "chaos": True}, "chaos"),
        ({"prompt": "a", "stylize": 1001}, "stylize"),
        ({"prompt": "a", "webhookUrl": "ftp://example.com/hook"}, "webhookUrl"),
        ({"prompt": "a", "webhookUrl": "not a url"}, "webhookUrl"),
        ({"prompt": "a", "colour": "red"}, "colour"),
    ],
)
def test_invalid_fields_are_named(api, body, field):
    response = api.post("/v1/imagine", json=body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert f"'{field}'" in error["message"]


def test_missing_prompt_message_matches_the_reference(api):
    error = api.post("/v1/imagine", json={}).get_json()["error"]
    assert error["message"] == "The 'prompt' field is required."


def test_all_valid_values_are_accepted(api):
    for aspect_ratio in ("1:1", "16:9", "9:16", "4:3", "3:4"):
        assert api.post("/v1/imagine", json={"prompt": "a", "aspectRatio": aspect_ratio}).status_code == 202
    for version in ("5.2", "6.0", "6.1"):
        assert api.post("/v1/imagine", json={"prompt": "a", "version": version}).status_code == 202
    for style in ("raw", "cute", "expressive", "scenic"):
        assert api.post("/v1/imagine", json={"prompt": "a", "style": style}).status_code == 202
    body = {
        "prompt": "a",
        "quality": 0.25,
        "chaos": 100,
        "stylize": 0,
        "webhookUrl": "https://localhost:9/hook",  # nothing listens: the webhook never leaves the machine
    }
    assert api.post("/v1/imagine", json=body).status_code == 202
    assert api.post("/v1/imagine", json={"prompt": "a", "style": None, "chaos": None}).status_code == 202


@pytest.mark.parametrize("path", ["/imagine", "/api/v1/imagine"])
def test_aliases_behave_like_v1(app, api, path):
    response = api.post(path, json={"prompt": "a red barn"})
    assert response.status_code == 202
    job = api.wait(response.get_json()["job"]["id"])
    assert job["status"] == "succeeded"
    assert api.post(path, json={}).status_code == 400


def test_images_are_stored_under_the_data_dir(app, api):
    job = api.imagine("a green field")
    with app.app_context():
        stored = Job.get_by_id(uuid.UUID(job["id"]))
    folder = Path(app.config["DATA_DIR"]) / "images" / job["id"]
    assert (folder / stored.grid).is_file()
    assert all((folder / name).is_file() for name in stored.tiles)


def test_the_job_object_keeps_the_reference_field_order(api):
    body = api.post("/v1/imagine", json={"prompt": "order"}).get_data(as_text=True)
    positions = [
        body.index(f'"{field}"') for field in ("id", "type", "status", "prompt", "progress", "imageUrl")
    ]
    assert positions == sorted(positions)
