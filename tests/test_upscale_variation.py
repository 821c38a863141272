"""POST /v1/upscale and /v1/variation: parents, indexes, and the images they make."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image


def _image(api, url: str) -> Image.Image:
    response = api.client.get(url.removeprefix("http://images.test"))
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.data)).convert("RGB")


def _difference(a: Image.Image, b: Image.Image) -> float:
    size = (64, 64)
    return float(np.abs(np.asarray(a.resize(size), float) - np.asarray(b.resize(size), float)).mean())


@pytest.fixture
def parent(api):
    return api.imagine("a castle on a hill at sunset", aspectRatio="4:3")


def test_upscale_doubles_the_chosen_tile(api, parent):
    response = api.post("/v1/upscale", json={"jobId": parent["id"], "index": 2})
    assert response.status_code == 202
    job = response.get_json()["job"]
    assert job["type"] == "upscale" and job["status"] == "pending"
    assert job["parentJobId"] == parent["id"] and job["index"] == 2
    done = api.wait(job["id"])
    assert done["status"] == "succeeded"
    assert done["imageUrls"] == [done["imageUrl"]]
    upscaled = _image(api, done["imageUrl"])
    tile = _image(api, parent["imageUrls"][1])
    assert upscaled.size == (tile.width * 2, tile.height * 2) == (2048, 1536)
    assert _difference(upscaled, tile) < 4  # the same picture, enlarged
    assert _difference(upscaled, _image(api, parent["imageUrls"][0])) > _difference(upscaled, tile)


def test_variation_makes_four_tiles_that_resemble_the_chosen_one(api, parent):
    job = api.submit("/v1/variation", {"jobId": parent["id"], "index": 3})
    assert job["type"] == "variation" and job["parentJobId"] == parent["id"] and job["index"] == 3
    done = api.wait(job["id"])
    assert done["status"] == "succeeded"
    tiles = [_image(api, url) for url in done["imageUrls"]]
    source = _image(api, parent["imageUrls"][2])
    assert all(tile.size == source.size for tile in tiles)
    assert _image(api, done["imageUrl"]).size == (source.width * 2, source.height * 2)
    assert len({tile.tobytes() for tile in tiles}) == 4
    assert all(tile.tobytes() != source.tobytes() for tile in tiles)
    unrelated = _image(api, api.imagine("deep blue ocean waves at night")["imageUrls"][0])
    for tile in tiles:
        assert _difference(tile, source) < _difference(tile, unrelated)


def test_variation_of_a_variation_and_upscale_of_a_blend(api, parent, files):
    from conftest import image_bytes

    variation = api.wait(api.submit("/v1/variation", {"jobId": parent["id"], "index": 1})["id"])
    again = api.wait(api.submit("/v1/variation", {"jobId": variation["id"], "index": 4})["id"])
    assert again["status"] == "succeeded"
    urls = [
        files.add("/r.png", image_bytes(color=(220, 20, 20))),
        files.add("/b.png", image_bytes(color=(20, 20, 220))),
    ]
    blend = api.wait(api.submit("/v1/blend", {"imageUrls": urls})["id"])
    upscaled = api.wait(api.submit("/v1/upscale", {"jobId": blend["id"], "index": 1})["id"])
    assert upscaled["status"] == "succeeded"


# /upscale and /variation also belong to the original apiframe.ai API, which takes "1"-"4" as an index
# too: see test_compat_*.
@pytest.mark.parametrize("path", ["/v1/upscale", "/v1/variation", "/api/v1/upscale", "/api/v1/variation"])
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"index": 1}, "jobId"),
        ({"jobId": "nope", "index": 1}, "jobId"),
        ({"jobId": 7, "index": 1}, "jobId"),
        ({"jobId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890"}, "index"),
        ({"jobId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "index": 0}, "index"),
        ({"jobId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "index": 5}, "index"),
        ({"jobId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "index": "2"}, "index"),
        ({"jobId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "index": 1.5}, "index"),
    ],
)
def test_invalid_fields(api, path, body, field):
    response = api.post(path, json=body)
    assert response.status_code == 400
    assert f"'{field}'" in response.get_json()["error"]["message"]


def test_unknown_parent_is_404(api):
    response = api.post("/v1/upscale", json={"jobId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "index": 1})
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "NOT_FOUND"


def test_parent_must_have_succeeded(app, api):
    app.extensions["apiframe.pool"].stop()
    pending = api.submit("/v1/imagine", {"prompt": "later"})
    response = api.post("/v1/variation", json={"jobId": pending["id"], "index": 1})
    assert response.status_code == 400
    assert "pending" in response.get_json()["error"]["message"]


def test_parent_must_have_four_images(api, parent):
    upscaled = api.wait(api.submit("/v1/upscale", {"jobId": parent["id"], "index": 1})["id"])
    for path in ("/v1/upscale", "/v1/variation"):
        response = api.post(path, json={"jobId": upscaled["id"], "index": 1})
        assert response.status_code == 400
        assert "upscale job" in response.get_json()["error"]["message"]


def test_index_as_a_whole_float_is_accepted(api, parent):
    assert api.post("/v1/upscale", json={"jobId": parent["id"], "index": 2.0}).status_code == 202
