"""Serving stored images: only files a job can have, never anything else under the data dir."""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

import pytest

import storage


@pytest.fixture
def done(api):
    return api.imagine("a small boat")


def test_images_are_served_with_long_cache_lifetimes(client, done):
    response = client.get(done["imageUrl"].removeprefix("http://images.test"))
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert "immutable" in response.headers["Cache-Control"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"  # never taken for a page or a script
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
        "/images/{id}/thumbs/../grid.png",
        "/images/{id}/thumbs/secret_key",
        "/images/{id}/thumbs/5.png",
        "/images/00000000-0000-0000-0000-000000000000/thumbs/grid.png",
    ],
)
def test_nothing_else_is_served(client, done, path):
    response = client.get(path.format(id=done["id"], upper=done["id"].upper()))
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "NOT_FOUND"


@pytest.fixture
def pics(settings) -> None:
    settings["PUBLIC_URL"] = "https://pics.example.org"  # a setting: read as the app starts


def test_image_urls_follow_the_public_url(pics, api, done):
    job = api.job(done["id"])
    assert job["imageUrl"] == f"https://pics.example.org/images/{done['id']}/grid.png"
    assert all(url.startswith("https://pics.example.org/images/") for url in job["imageUrls"])


def test_thumbnails_are_small_webp_previews_made_once(app, client, done):
    from io import BytesIO

    from PIL import Image

    path = f"/images/{done['id']}/thumbs/grid.png"
    response = client.get(path)
    assert response.status_code == 200 and response.mimetype == "image/webp"
    assert "immutable" in response.headers["Cache-Control"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    with Image.open(BytesIO(response.data)) as preview:
        assert max(preview.size) == 512
    stored = Path(app.config["DATA_DIR"]) / "images" / done["id"] / "thumbs" / "grid.webp"
    made = stored.stat().st_mtime_ns
    assert client.get(path).data == response.data
    assert stored.stat().st_mtime_ns == made
    tile = client.get(f"/images/{done['id']}/thumbs/1.png")
    assert tile.status_code == 200 and len(tile.data) < len(
        client.get(done["imageUrls"][0].removeprefix("http://images.test")).data
    )


def test_a_job_whose_images_cannot_be_written_fails_refunded_saying_why(settings, api):
    images = Path(settings["DATA_DIR"]) / "images"
    if images.is_dir():
        shutil.rmtree(images)
    images.write_text("a file where the image directory should be: every write fails")
    before = api.get("/v1/account").get_json()["account"]["credits"]["remaining"]
    done = api.wait(api.submit("/v1/imagine", {"prompt": "a small boat"})["id"])
    assert done["status"] == "failed"
    assert done["error"].startswith("The image storage could not be written. The credits were refunded")
    assert api.get("/v1/account").get_json()["account"]["credits"]["remaining"] == before


def test_a_write_the_disk_refuses_midway_leaves_no_temporary_file(tmp_path, monkeypatch):
    opened = tempfile.NamedTemporaryFile

    def on_a_full_disk(*args, **kwargs):
        out = opened(*args, **kwargs)

        def write(data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        out.write = write
        return out

    monkeypatch.setattr(storage.tempfile, "NamedTemporaryFile", on_a_full_disk)
    with pytest.raises(storage.StorageUnavailable, match="could not be written"):
        storage.LocalStorage(tmp_path).put("job/grid.png", b"\x89PNG")
    assert [path.name for path in tmp_path.rglob("*")] == ["job"]
