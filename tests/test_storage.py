"""Serving stored images: only files a job can have, never anything else under the data dir."""

from __future__ import annotations

import pytest


@pytest.fixture
def done(api):
    return api.imagine("a small boat")


def test_images_are_served_with_long_cache_lifetimes(client, done):
    response = client.get(done["imageUrl"].removeprefix("http://images.test"))
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert "immutable" in response.headers["Cache-Control"]
    assert response.data[:8] == b"\x89PNG\r\n\x1a\n"


def test_images_need_no_api_key_and_do_not_count_against_limits(client, done):
    path = done["imageUrls"][0].removeprefix("http://images.test")
    for _ in range(3):
        response = client.get(path)
        assert response.status_code == 200 and "X-RateLimit-Limit" not in response.headers


@pytest.mark.parametrize(
    "path",
    [
        "/images/{id}/../../secret_key",
        "/images/{id}/..%2F..%2Fsecret_key",
        "/images/..%2Fsecret_key/grid.png",
        "/images/{id}/secret_key",
        "/images/{id}/grid.txt",
        "/images/{id}/5.png",
        "/images/{id}/.grid.png.tmp",
        "/images/{upper}/grid.png",
        "/images/00000000-0000-0000-0000-000000000000/grid.png",
        "/images/not-a-uuid/grid.png",
        "/images/{id}/",
        "/images/apiframe.db/grid.png",
    ],
)
def test_nothing_else_is_served(client, done, path):
    response = client.get(path.format(id=done["id"], upper=done["id"].upper()))
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "NOT_FOUND"


def test_image_urls_follow_the_public_url(app, api, done):
    app.config["PUBLIC_URL"] = "https://pics.example.org"
    job = api.job(done["id"])
    assert job["imageUrl"] == f"https://pics.example.org/images/{done['id']}/grid.png"
    assert all(url.startswith("https://pics.example.org/images/") for url in job["imageUrls"])
