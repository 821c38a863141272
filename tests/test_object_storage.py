"""Images in an S3-compatible bucket (moto's S3 server on loopback): written, read, served, removed."""

from __future__ import annotations

import io
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

import storage
from app import create_app
from conftest import Api, LiveServer, stop_background


@pytest.fixture
def s3_settings(settings, bucket):
    settings.update(STORAGE_URL=bucket.storage_url, S3_ENDPOINT_URL=bucket.endpoint)
    return settings


@pytest.fixture
def s3_app(s3_settings):
    application = create_app(s3_settings)
    yield application
    stop_background(application)


@pytest.fixture
def s3_api(s3_app):
    import accounts

    with s3_app.app_context():
        _, key = accounts.create("bucket@example.com", plan="scale")
    return Api(s3_app.test_client(), key)


@pytest.fixture
def dead_endpoint() -> str:
    """An S3 endpoint nothing listens on: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def hung_endpoint() -> Iterator[str]:
    """An S3 endpoint that takes connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # the kernel completes the handshakes; nothing ever reads or writes
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def _path(url: str) -> str:
    return url.removeprefix("http://images.test")


def test_results_are_written_to_the_bucket_and_nothing_to_the_data_dir(s3_app, s3_api, bucket):
    job = s3_api.imagine("a lighthouse in fog", quality=0.25)
    assert job["status"] == "succeeded"
    names = ["1.png", "2.png", "3.png", "4.png", "grid.png"]
    assert bucket.keys() == [f"images/{job['id']}/{name}" for name in names]
    assert not (Path(s3_app.config["DATA_DIR"]) / "images").exists()
    stored = bucket.client.get_object(Bucket=bucket.name, Key=f"images/{job['id']}/grid.png")
    assert stored["ContentType"] == "image/png" and "immutable" in stored["CacheControl"]


def test_images_are_streamed_from_the_bucket(s3_api, bucket):
    job = s3_api.imagine("a lighthouse in fog", quality=0.25)
    response = s3_api.client.get(_path(job["imageUrl"]))
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert "immutable" in response.headers["Cache-Control"]
    body = bucket.client.get_object(Bucket=bucket.name, Key=f"images/{job['id']}/grid.png")["Body"].read()
    assert response.data == body and response.content_length == len(body)
    again = s3_api.client.get(_path(job["imageUrl"]), headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


def test_upscales_and_variations_read_their_parent_from_the_bucket(s3_api, bucket):
    parent = s3_api.imagine("a lighthouse in fog", quality=0.25)
    upscale = s3_api.wait(s3_api.submit("/v1/upscale", {"jobId": parent["id"], "index": 2})["id"])
    variation = s3_api.wait(s3_api.submit("/v1/variation", {"jobId": parent["id"], "index": 3})["id"])
    assert upscale["status"] == variation["status"] == "succeeded"
    tile = Image.open(io.BytesIO(s3_api.client.get(_path(parent["imageUrls"][1])).data))
    upscaled = Image.open(io.BytesIO(s3_api.client.get(_path(upscale["imageUrl"])).data))
    assert upscaled.size == (tile.width * 2, tile.height * 2)
    assert f"images/{variation['id']}/grid.png" in bucket.keys()


def test_a_missing_parent_image_fails_the_child_with_a_refund(s3_app, s3_api, bucket):
    parent = s3_api.imagine("a lighthouse in fog", quality=0.25)
    bucket.client.delete_object(Bucket=bucket.name, Key=f"images/{parent['id']}/2.png")
    before = s3_api.get("/v1/account").get_json()["account"]["credits"]["remaining"]
    child = s3_api.wait(s3_api.submit("/v1/upscale", {"jobId": parent["id"], "index": 2})["id"])
    assert child["status"] == "failed" and "no longer available" in child["error"]
    assert s3_api.get("/v1/account").get_json()["account"]["credits"]["remaining"] == before


def test_thumbnails_are_made_once_and_kept_in_the_bucket(s3_api, bucket):
    job = s3_api.imagine("a lighthouse in fog")
    response = s3_api.client.get(f"/images/{job['id']}/thumbs/grid.png")
    assert response.status_code == 200 and response.mimetype == "image/webp"
    with Image.open(io.BytesIO(response.data)) as preview:
        assert max(preview.size) == 512
    key = f"images/{job['id']}/thumbs/grid.webp"
    made = bucket.client.head_object(Bucket=bucket.name, Key=key)["LastModified"]
    assert s3_api.client.get(f"/images/{job['id']}/thumbs/grid.png").data == response.data
    assert bucket.client.head_object(Bucket=bucket.name, Key=key)["LastModified"] == made


def test_deleting_a_jobs_images_empties_its_folder_in_the_bucket(s3_app, s3_api, bucket):
    kept = s3_api.imagine("keep me", quality=0.25)
    gone = s3_api.imagine("remove me", quality=0.25)
    s3_api.client.get(f"/images/{gone['id']}/thumbs/grid.png")
    with s3_app.app_context():
        storage.delete_images(uuid.UUID(gone["id"]))
    assert all(key.startswith(f"images/{kept['id']}/") for key in bucket.keys())
    assert len(bucket.keys()) == 5
    response = s3_api.client.get(_path(gone["imageUrl"]))
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "NOT_FOUND"


def test_the_longest_wait_on_the_bucket_ends_well_within_the_proxy_timeout():
    conf = (Path(__file__).parents[1] / "deploy" / "nginx" / "apiframe.conf").read_text()
    proxy_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", conf).group(1))
    backoff = sum(2**attempt for attempt in range(storage.S3_ATTEMPTS - 1))  # botocore's most, between tries
    longest = storage.S3_ATTEMPTS * (storage.S3_CONNECT_TIMEOUT + storage.S3_READ_TIMEOUT) + backoff
    assert longest <= proxy_timeout * 0.6


@pytest.mark.parametrize("path", ["/images/{id}/grid.png", "/images/{id}/thumbs/1.png"])
def test_images_are_a_503_with_retry_after_while_the_bucket_is_down(s3_settings, dead_endpoint, path):
    s3_settings["S3_ENDPOINT_URL"] = dead_endpoint
    application = create_app({**s3_settings, "START_WORKERS": False})
    response = application.test_client().get(path.format(id=uuid.uuid4()))
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    assert response.get_json()["error"] == {
        "code": "STORAGE_UNAVAILABLE",
        "message": "The image storage could not be reached. Retry in 30 seconds.",
    }


def test_a_hung_bucket_is_a_503_once_the_bounded_waits_run_out(s3_settings, hung_endpoint, monkeypatch):
    monkeypatch.setattr(storage, "S3_READ_TIMEOUT", 0.2)
    s3_settings["S3_ENDPOINT_URL"] = hung_endpoint
    application = create_app({**s3_settings, "START_WORKERS": False})
    started = time.monotonic()
    response = application.test_client().get(f"/images/{uuid.uuid4()}/grid.png")
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "STORAGE_UNAVAILABLE"
    assert time.monotonic() - started < 5


def test_a_job_whose_images_cannot_be_stored_fails_saying_so_with_a_refund(s3_settings, dead_endpoint):
    import accounts

    application = create_app({**s3_settings, "S3_ENDPOINT_URL": dead_endpoint})
    try:
        with application.app_context():
            _, key = accounts.create("down@example.com", plan="scale")
        api = Api(application.test_client(), key)
        before = api.get("/v1/account").get_json()["account"]["credits"]["remaining"]
        job = api.imagine("a lighthouse in fog", quality=0.25)
        assert job["status"] == "failed" and job["error"].startswith(
            "The image storage could not be reached."
        )
        assert api.get("/v1/account").get_json()["account"]["credits"]["remaining"] == before
    finally:
        stop_background(application)


def test_healthz_reports_the_bucket(s3_app, s3_settings, dead_endpoint):
    body = s3_app.test_client().get("/healthz").get_json()
    assert body["status"] == "ok" and body["storage"] == {"ok": True, "detail": "answering"}
    down = create_app({**s3_settings, "S3_ENDPOINT_URL": dead_endpoint, "START_WORKERS": False})
    response = down.test_client().get("/healthz")
    assert response.status_code == 200 and response.get_json()["status"] == "degraded"
    assert response.get_json()["storage"] == {
        "ok": False,
        "detail": "the bucket could not be reached",
        "code": "STORAGE_UNAVAILABLE",
    }


@pytest.mark.parametrize(
    "path",
    [
        "/images/{id}/../../secret_key",
        "/images/{id}/5.png",
        "/images/{upper}/grid.png",
        "/images/00000000-0000-0000-0000-000000000000/grid.png",
        "/images/not-a-uuid/grid.png",
        "/images/{id}/thumbs/secret_key",
        "/images/00000000-0000-0000-0000-000000000000/thumbs/grid.png",
    ],
)
def test_nothing_else_is_served_from_the_bucket(s3_api, path):
    job = s3_api.imagine("a lighthouse in fog", quality=0.25)
    response = s3_api.client.get(path.format(id=job["id"], upper=job["id"].upper()))
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "NOT_FOUND"


def test_presigned_mode_redirects_to_the_bucket(s3_settings, bucket):
    import accounts

    application = create_app({**s3_settings, "S3_PRESIGN": True})
    server = LiveServer(application)
    try:
        with application.app_context():
            _, key = accounts.create("presign@example.com", plan="scale")
        api = Api(application.test_client(), key)
        job = api.imagine("a lighthouse in fog", quality=0.25)
        url = f"{server.url}{_path(job['imageUrl'])}"
        redirected = requests.get(url, allow_redirects=False, timeout=10)
        assert redirected.status_code == 302
        assert redirected.headers["Location"].startswith(
            f"{bucket.endpoint}/{bucket.name}/images/{job['id']}/"
        )
        followed = requests.get(url, timeout=10)
        assert followed.status_code == 200 and followed.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert requests.get(f"{server.url}/images/{uuid.uuid4()}/grid.png", timeout=10).status_code == 404
    finally:
        server.close()
        stop_background(application)


def test_public_image_url_points_clients_at_the_bucket_or_cdn(s3_app, s3_api):
    s3_app.config["PUBLIC_IMAGE_URL"] = "https://cdn.example.org/apiframe"
    job = s3_api.imagine("a lighthouse in fog", quality=0.25)
    assert job["imageUrl"] == f"https://cdn.example.org/apiframe/{job['id']}/grid.png"
    assert job["imageUrls"][3] == f"https://cdn.example.org/apiframe/{job['id']}/4.png"


def test_the_import_command_copies_a_data_directory_into_the_bucket(settings, s3_settings, bucket, tmp_path):
    import accounts

    old_settings = {**settings, "DATA_DIR": str(tmp_path / "old")}
    old_settings.pop("STORAGE_URL")
    old_settings.pop("S3_ENDPOINT_URL")
    old = create_app(old_settings)
    with old.app_context():
        _, key = accounts.create("old@example.com", plan="scale")
    job = Api(old.test_client(), key).imagine("made before the move", quality=0.25)
    old_grid = old.test_client().get(_path(job["imageUrl"])).data
    stop_background(old)

    new = create_app({**s3_settings, "START_WORKERS": False})
    runner = new.test_cli_runner()
    result = runner.invoke(args=["storage", "import", str(tmp_path / "old")])
    assert result.exit_code == 0, result.output
    assert (
        f"copied 5 images from file://{tmp_path / 'old' / 'images'} to s3://{bucket.name}/images/"
        in result.output
    )
    assert bucket.keys() == [
        f"images/{job['id']}/{name}" for name in ["1.png", "2.png", "3.png", "4.png", "grid.png"]
    ]
    assert new.test_client().get(_path(job["imageUrl"])).data == old_grid
    again = runner.invoke(args=["storage", "import", str(tmp_path / "old")])
    assert "copied 0 images" in again.output and "5 images were there already" in again.output

    missing = runner.invoke(args=["storage", "import", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0 and "does not exist" in missing.output
    local = create_app({**old_settings, "START_WORKERS": False}).test_cli_runner()
    same = local.invoke(args=["storage", "import"])
    assert same.exit_code != 0 and "already the configured storage" in same.output


def _old_images(settings) -> None:
    """An image in the data directory, for an import to copy."""
    images = Path(settings["DATA_DIR"]) / "images" / str(uuid.uuid4())
    images.mkdir(parents=True)
    (images / "grid.png").write_bytes(b"\x89PNG")


def test_the_import_command_says_when_the_bucket_cannot_be_reached(settings, s3_settings, dead_endpoint):
    _old_images(settings)
    down = create_app({**s3_settings, "S3_ENDPOINT_URL": dead_endpoint, "START_WORKERS": False})
    result = down.test_cli_runner().invoke(args=["storage", "import"])
    assert result.exit_code == 1 and result.exception.__class__ is SystemExit
    assert "Error: The image storage could not be reached. Nothing more was copied" in result.output


def test_the_import_command_names_a_bucket_that_does_not_exist(settings, s3_settings):
    _old_images(settings)
    missing = create_app({**s3_settings, "STORAGE_URL": "s3://no-such-bucket/x", "START_WORKERS": False})
    result = missing.test_cli_runner().invoke(args=["storage", "import"])
    assert result.exit_code == 1 and result.exception.__class__ is SystemExit
    assert "Error: The bucket 'no-such-bucket' does not exist. Nothing more was copied" in result.output


def test_a_bucket_that_refuses_the_credentials_is_named_for_the_operator_only(s3_app, s3_settings, bucket):
    from botocore.stub import Stubber

    target = s3_app.extensions[storage.EXTENSION]
    with Stubber(target.client) as stub:
        stub.add_client_error("put_object", "AccessDenied", "Access Denied", http_status_code=403)
        with pytest.raises(storage.StorageUnavailable) as caught:
            target.put("x/grid.png", b"\x89PNG")
    assert caught.value.detail == (
        f"The bucket {bucket.name!r} refuses these credentials (AWS_ACCESS_KEY_ID, or the bucket's policy)."
    )
    assert str(caught.value) == "The image storage could not be reached."  # what users are told


def test_the_import_command_refuses_a_directory_without_images(s3_settings, tmp_path):
    app = create_app({**s3_settings, "START_WORKERS": False})
    result = app.test_cli_runner().invoke(args=["storage", "import", str(tmp_path)])
    assert result.exit_code == 1
    assert f"Error: {tmp_path} has no images/ directory: there is nothing to import" in result.output


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/images", "APIFRAME_STORAGE_URL must be file://PATH or s3://BUCKET/PREFIX"),
        ("s3:///images", "APIFRAME_STORAGE_URL must be file://PATH or s3://BUCKET/PREFIX"),
    ],
)
def test_a_bad_storage_url_is_refused_at_start(settings, url, message):
    with pytest.raises(ValueError, match=message):
        create_app({**settings, "STORAGE_URL": url})


def test_the_default_storage_is_the_data_directory(app, api):
    job = api.imagine("local", quality=0.25)
    assert (Path(app.config["DATA_DIR"]) / "images" / job["id"] / "grid.png").is_file()
    assert app.config["STORAGE_URL"] == f"file://{Path(app.config['DATA_DIR']) / 'images'}"
