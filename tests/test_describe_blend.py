"""POST /v1/describe and /v1/blend: fetched inputs, results, and input failures."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import image_bytes
from providers.local import LocalProvider


def _image(api, url: str) -> np.ndarray:
    response = api.client.get(url.removeprefix("http://images.test"))
    assert response.status_code == 200
    return np.asarray(Image.open(io.BytesIO(response.data)).convert("RGB"), dtype=float)


def test_describe_returns_four_descriptions_from_the_image(api, files):
    url = files.add("/wide-red.png", image_bytes(size=(600, 400), color=(210, 25, 30)))
    response = api.post("/v1/describe", json={"imageUrl": url})
    assert response.status_code == 202
    job = response.get_json()["job"]
    assert job["type"] == "describe" and job["prompt"] is None
    done = api.wait(job["id"])
    assert done["status"] == "succeeded", done
    assert done["imageUrl"] is None and done["imageUrls"] is None
    descriptions = done["descriptions"]
    assert len(descriptions) == 4 and len(set(descriptions)) == 4
    assert all(text.rstrip().split("--ar ")[-1].startswith("3:2") for text in descriptions)
    assert any("red" in text.lower() or "crimson" in text.lower() for text in descriptions)
    assert files.requests == ["/wide-red.png"]


def test_describe_sees_the_difference_between_images(api, files):
    dark = files.add("/dark.png", image_bytes(size=(300, 600), color=(10, 20, 90)))
    done = api.wait(api.submit("/v1/describe", {"imageUrl": dark})["id"])
    text = " ".join(done["descriptions"]).lower()
    assert "--ar 1:2" in text
    assert "blue" in text or "navy" in text


def test_blend_mixes_the_inputs_into_four_tiles(api, files):
    red = files.add("/red.png", image_bytes(color=(230, 10, 10)))
    blue = files.add("/blue.jpg", image_bytes(color=(10, 10, 230), image_format="JPEG"), "image/jpeg")
    response = api.post("/v1/blend", json={"imageUrls": [red, blue]})
    assert response.status_code == 202
    done = api.wait(response.get_json()["job"]["id"])
    assert done["status"] == "succeeded", done
    assert done["type"] == "blend" and len(done["imageUrls"]) == 4
    tiles = [_image(api, url) for url in done["imageUrls"]]
    assert all(tile.shape == (1024, 1024, 3) for tile in tiles)
    for tile in tiles:
        red_share, blue_share = tile[..., 0].mean(), tile[..., 2].mean()
        assert red_share > 20 and blue_share > 20  # both inputs are in every tile
        assert tile[..., 1].mean() < 80
    assert len({tile.tobytes() for tile in tiles}) == 4


def test_blend_inputs_are_held_no_larger_than_the_blend_can_use(api, files, monkeypatch):
    sizes = []
    blend = LocalProvider.blend

    def record(provider, request, ctx):
        sizes.append([image.size for image in request.images])
        return blend(provider, request, ctx)

    monkeypatch.setattr(LocalProvider, "blend", record)
    inputs = [(3000, 2000), (1500, 2400), (600, 400), (1024, 1024)]
    urls = [files.add(f"/{n}.png", image_bytes(size=size)) for n, size in enumerate(inputs)]
    for dimension in ("square", "landscape"):  # 1024x1024 and 1024x680: either way, each covers 1024x1024
        done = api.wait(api.submit("/v1/blend", {"imageUrls": urls, "dimension": dimension})["id"])
        assert done["status"] == "succeeded", done
    assert sizes == [[(1536, 1024), (1024, 1638), (600, 400), (1024, 1024)]] * 2  # or stays as sent


def test_blend_takes_five_but_not_six_or_one(api, files):
    urls = [files.add(f"/{n}.png", image_bytes(color=(n * 40, 90, 200 - n * 30))) for n in range(6)]
    assert api.post("/v1/blend", json={"imageUrls": urls[:5]}).status_code == 202
    for bad in (urls, urls[:1], [], "http://example.com/a.png", [1, 2]):
        response = api.post("/v1/blend", json={"imageUrls": bad})
        assert response.status_code == 400
        assert "'imageUrls'" in response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"imageUrl": ""},
        {"imageUrl": "file:///etc/passwd"},
        {"imageUrl": "javascript:alert(1)"},
        {"imageUrl": "https://"},
        {"imageUrl": ["https://example.com/a.png"]},
    ],
)
def test_describe_rejects_bad_urls(api, body):
    response = api.post("/v1/describe", json=body)
    assert response.status_code == 400
    assert "'imageUrl'" in response.get_json()["error"]["message"]


def test_blend_names_the_bad_item(api):
    response = api.post("/v1/blend", json={"imageUrls": ["https://example.com/a.png", "gopher://x"]})
    assert response.status_code == 400
    assert "Item 2 of the 'imageUrls' field" in response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda f: f.url("/missing.png"), "HTTP 404"),
        (lambda f: f.add("/page.html", b"<html>hi</html>", "text/html"), "not an image"),
        (lambda f: f.add("/broken.png", image_bytes()[:60]), "decoded"),
        (lambda f: "http://127.0.0.1:9/closed.png", "connection failed"),
    ],
)
def test_a_failing_input_fails_the_job_with_a_clear_error(api, files, setup, reason):
    url = setup(files)
    before = api.get("/v1/account").get_json()["account"]["credits"]["remaining"]
    done = api.wait(api.submit("/v1/describe", {"imageUrl": url})["id"])
    assert done["status"] == "failed"
    assert url in done["error"] and reason in done["error"]
    assert api.get("/v1/account").get_json()["account"]["credits"]["remaining"] == before


def test_one_bad_blend_input_fails_the_job(api, files):
    good = files.add("/good.png", image_bytes())
    done = api.wait(api.submit("/v1/blend", {"imageUrls": [good, files.url("/gone.png")]})["id"])
    assert done["status"] == "failed" and "imageUrls[2]" in done["error"]


def test_decompression_bombs_are_refused(app, api, files):
    app.config["MAX_IMAGE_PIXELS"] = 1_000_000
    buffer = io.BytesIO()
    Image.new("L", (4000, 4000)).save(buffer, "PNG")  # tiny file, 16 million pixels
    done = api.wait(api.submit("/v1/describe", {"imageUrl": files.add("/bomb.png", buffer.getvalue())})["id"])
    assert done["status"] == "failed" and "pixels" in done["error"]


def test_oversized_downloads_are_refused(app, api, files):
    app.config["FETCH_MAX_BYTES"] = 10_000
    big = image_bytes(size=(800, 800), image_format="BMP")
    done = api.wait(api.submit("/v1/describe", {"imageUrl": files.add("/big.bmp", big, "image/bmp")})["id"])
    assert done["status"] == "failed" and "larger than" in done["error"]


def test_private_addresses_are_refused_unless_allowed(app, api, files):
    app.config["ALLOW_PRIVATE_URLS"] = False
    url = files.add("/private.png", image_bytes())
    done = api.wait(api.submit("/v1/describe", {"imageUrl": url})["id"])
    assert done["status"] == "failed" and "private" in done["error"]
    assert files.requests == []
    app.config["ALLOW_PRIVATE_URLS"] = True
    assert api.wait(api.submit("/v1/describe", {"imageUrl": url})["id"])["status"] == "succeeded"


def test_redirects_are_followed_and_checked(app, api, files):
    target = files.add("/target.png", image_bytes())
    done = api.wait(api.submit("/v1/describe", {"imageUrl": files.redirect("/hop", target)})["id"])
    assert done["status"] == "succeeded"
    assert files.requests == ["/hop", "/target.png"]


def test_this_services_own_images_are_read_from_storage(app, api, files):
    app.config["ALLOW_PRIVATE_URLS"] = False  # as on a new install
    app.config["PUBLIC_URL"] = "http://127.0.0.1:9"  # a loopback address where nothing listens
    grid = api.imagine(quality=0.25)
    assert grid["imageUrl"].startswith("http://127.0.0.1:9/images/")
    described = api.wait(api.submit("/v1/describe", {"imageUrl": grid["imageUrl"]})["id"])
    assert described["status"] == "succeeded" and len(described["descriptions"]) == 4
    blended = api.wait(api.submit("/v1/blend", {"imageUrls": grid["imageUrls"][:2]})["id"])
    assert blended["status"] == "succeeded" and len(blended["imageUrls"]) == 4
    larger = api.submit("/v1/upscale-highres", {"imageUrl": grid["imageUrls"][0], "type": "2x"})
    assert api.wait(larger["id"])["status"] == "succeeded"
    missing = f"http://127.0.0.1:9/images/{grid['id']}/image.png"  # a name this job has no file for
    done = api.wait(api.submit("/v1/describe", {"imageUrl": missing})["id"])
    assert done["status"] == "failed" and "no such image" in done["error"] and missing in done["error"]
    other = files.add("/elsewhere.png", image_bytes())  # any other loopback URL is still refused
    done = api.wait(api.submit("/v1/describe", {"imageUrl": other})["id"])
    assert done["status"] == "failed" and "private" in done["error"] and files.requests == []
