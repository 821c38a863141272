"""Image storage: every image the service writes or reads, in a local directory or an S3-compatible bucket.

``APIFRAME_STORAGE_URL`` picks the backend: ``file://PATH`` (by default the data directory's ``images``)
or ``s3://BUCKET/PREFIX``. A job's images are kept under the key ``JOB_ID/NAME`` and their console
previews under ``JOB_ID/thumbs/STEM.webp``; every web node serves them at ``PUBLIC_URL/images/...``.
Once retention.prune has deleted a job's images (APIFRAME_IMAGE_RETENTION_DAYS), their URLs answer 410.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, redirect, request, send_from_directory
from PIL import Image

import imaging
from errors import ApiError, not_found
from models import Job

log = logging.getLogger(__name__)

bp = Blueprint("images", __name__)

EXTENSION = "apiframe.storage"

# Names a job's files may have: grid, tiles 1-4, or the single upscaled image.
FILE_NAME = re.compile(r"^(grid|[1-4]|image)\.(png|webp|jpeg)$")

THUMBNAIL_SIZE = 512  # longest side of the previews the console shows
IMMUTABLE = "public, max-age=31536000, immutable"
MAX_AGE = 365 * 24 * 3600
PRESIGNED_SECONDS = 3600  # how long a redirect to a presigned URL stays valid
STREAM_CHUNK = 64 * 1024

# Bounded waits on a bucket, so that an image request fails well within nginx's 75 s proxy_read_timeout
# (deploy/nginx/apiframe.conf) when S3 is down or hangs: one call takes at most S3_ATTEMPTS x (connect +
# read) seconds plus botocore's backoff between tries (at most 1 + 2 s), 42 s in all.
S3_CONNECT_TIMEOUT = 3
S3_READ_TIMEOUT = 10
S3_ATTEMPTS = 3
STORAGE_RETRY_AFTER = 30  # seconds a client is told to wait when the storage cannot be reached
# S3 error codes that mean the bucket cannot be used as configured -> what the operator is told.
S3_REFUSALS = {
    "NoSuchBucket": "does not exist",
    "AccessDenied": "refuses these credentials (AWS_ACCESS_KEY_ID, or the bucket's policy)",
}

# Pillow releases the GIL while encoding, so a job's images are encoded side by side.
_encoders = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="apiframe-encode")


class MissingImage(LookupError):
    """The image is not in storage."""


class ExpiredImage(FileNotFoundError):
    """One of this service's image URLs whose image the retention deleted; the message says so."""


class StorageUnavailable(RuntimeError):
    """The storage could not be reached (S3 down, hung, or failing), refuses us (no such bucket, access
    denied) or cannot be written (a full or read-only disk). Users are told only that; ``detail``, for the
    operator, says which bucket and why, when known."""

    REACHED = "The image storage could not be reached."

    def __init__(self, message: str = REACHED, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


def content_type(key: str) -> str:
    """The MIME type of a stored image, from its extension."""
    return imaging.FORMATS.get(key.rpartition(".")[2], (None, "application/octet-stream"))[1]


class LocalStorage:
    """Images as files under one directory (atomic writes, so readers never see half a file)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        """Where the images go, for people."""
        return f"file://{self.root}"

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key``; StorageUnavailable when the disk refuses (full, read-only, not ours)."""
        target = self.root / key
        written: Path | None = None
        folder = target.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".", suffix=".tmp", delete=False) as out:
                written = Path(out.name)
                out.write(data)
            written.replace(target)
        except OSError as exc:
            if written is not None:
                written.unlink(missing_ok=True)
            log.warning("storage %s cannot be written: %s", self.describe(), exc)
            raise StorageUnavailable("The image storage could not be written.") from exc

    def read(self, key: str) -> bytes:
        """The bytes stored at ``key``, or MissingImage."""
        try:
            return (self.root / key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise MissingImage(key) from None

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""
        return (self.root / key).is_file()

    def delete_job(self, job_id: str) -> None:
        """Remove everything stored for a job; StorageUnavailable if some of it stays (a read-only disk)."""

        def failed(function: Any, path: str, info: tuple[type, BaseException, Any]) -> None:
            error = info[1]
            if not isinstance(error, FileNotFoundError):  # gone already is what was asked
                log.warning("storage %s: %s could not be deleted: %s", self.describe(), path, error)
                raise StorageUnavailable(detail=f"{path} could not be deleted: {error}") from error

        shutil.rmtree(self.root / job_id, onerror=failed)  # onexc from Python 3.12

    def serve(self, key: str) -> Response:
        """A response with the stored image (conditional and range requests included)."""
        if not self.exists(key):
            raise not_found("No such image.")
        return send_from_directory(self.root, key, max_age=MAX_AGE)

    def check(self) -> str | None:
        """Why images cannot be written here, or None if they can."""
        path = self.root
        while not path.exists():  # made on the first write
            path = path.parent
        return None if path.is_dir() and os.access(path, os.W_OK) else "the image directory is not writable"

    def keys(self) -> Iterator[str]:
        """Every stored key (temporary files excluded)."""
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                yield path.relative_to(self.root).as_posix()


class S3Storage:
    """Images as objects in an S3-compatible bucket (AWS, MinIO, Cloudflare R2, Garage ...)."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None, presign: bool) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self.presign = presign
        config = Config(
            connect_timeout=S3_CONNECT_TIMEOUT,
            read_timeout=S3_READ_TIMEOUT,
            retries={"mode": "standard", "total_max_attempts": S3_ATTEMPTS},
            max_pool_connections=32,
            # self-hosted endpoints (MinIO, Garage) want path-style URLs; AWS picks its own
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        # Credentials and region come from the standard AWS environment variables and config files.
        session = boto3.session.Session()
        self.client = session.client("s3", endpoint_url=endpoint_url, config=config)
        # health checks ask once and briefly: a probe must not hang on a hung bucket
        brief = Config(connect_timeout=2, read_timeout=2, retries={"total_max_attempts": 1})
        self.probe = session.client("s3", endpoint_url=endpoint_url, config=config.merge(brief))

    def describe(self) -> str:
        """Where the images go, for people."""
        return f"s3://{self.bucket}/{self.prefix}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """StorageUnavailable when the bucket cannot be reached, keeps failing (a 5xx after the retries), does
        not exist or refuses us."""
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as NoConnection

        try:
            yield
        except (NoConnection, HTTPClientError) as exc:
            log.warning("storage %s unreachable: %s", self.describe(), exc)
            raise StorageUnavailable() from exc
        except ClientError as exc:
            refusal = S3_REFUSALS.get(exc.response.get("Error", {}).get("Code"))
            if refusal:
                detail = f"The bucket {self.bucket!r} {refusal}."
                log.warning("storage %s: %s", self.describe(), detail)
                raise StorageUnavailable(detail=detail) from exc
            if (_status(exc) or 0) < 500:
                raise
            log.warning("storage %s failing: %s", self.describe(), exc)
            raise StorageUnavailable() from exc

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key``."""
        with self._reaching():
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ContentType=content_type(key),
                CacheControl=IMMUTABLE,
            )

    def _get(self, key: str, **options: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            with self._reaching():
                return self.client.get_object(Bucket=self.bucket, Key=self._key(key), **options)
        except ClientError as exc:
            if _status(exc) == 404:
                raise MissingImage(key) from None
            raise

    def read(self, key: str) -> bytes:
        """The bytes stored at ``key``, or MissingImage."""
        body = self._get(key)["Body"]
        with body:
            return body.read()

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""
        from botocore.exceptions import ClientError

        try:
            with self._reaching():
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _status(exc) == 404:
                return False
            raise
        return True

    def delete_job(self, job_id: str) -> None:
        """Remove everything stored for a job; StorageUnavailable if some of it stays (DeleteObjects answers
        200 with the keys it could not delete)."""
        keys = [{"Key": self._key(key)} for key in self._list(f"{job_id}/")]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            with self._reaching():
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": keys[start : start + 1000]}
                )
            if answer.get("Errors"):
                first = answer["Errors"][0]
                detail = f"{len(answer['Errors'])} objects stay ({first.get('Code')}: {first.get('Key')})"
                log.warning("storage %s: %s", self.describe(), detail)
                raise StorageUnavailable(detail=detail)

    def serve(self, key: str) -> Response:
        """Redirect to a presigned URL, or stream the object through this process."""
        if self.presign:
            if not self.exists(key):
                raise not_found("No such image.")
            url = self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(key)},
                ExpiresIn=PRESIGNED_SECONDS,
            )
            response = redirect(url, 302)
            response.headers["Cache-Control"] = f"private, max-age={PRESIGNED_SECONDS // 2}"
            return response
        from botocore.exceptions import ClientError

        conditional = (
            {"IfNoneMatch": request.headers["If-None-Match"]} if "If-None-Match" in request.headers else {}
        )
        try:
            stored = self._get(key, **conditional)
        except MissingImage:
            raise not_found("No such image.") from None
        except ClientError as exc:
            if _status(exc) != 304:
                raise
            response = Response(status=304)
            response.headers["ETag"] = request.headers["If-None-Match"]
            return response
        body = stored["Body"]
        response = Response(
            body.iter_chunks(STREAM_CHUNK), mimetype=content_type(key), direct_passthrough=True
        )
        response.call_on_close(body.close)
        response.content_length = stored["ContentLength"]
        response.headers["ETag"] = stored["ETag"]
        response.last_modified = stored["LastModified"]
        return response

    def check(self) -> str | None:
        """Why the bucket cannot be used, or None if it answers."""
        from botocore.exceptions import ClientError

        try:
            with self._reaching():
                self.probe.head_bucket(Bucket=self.bucket)
        except StorageUnavailable:
            return "the bucket could not be reached"
        except ClientError as exc:
            return f"the bucket answered HTTP {_status(exc)}"
        return None

    def _list(self, prefix: str) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        )
        with self._reaching():
            for page in pages:
                for item in page.get("Contents", ()):
                    yield item["Key"][len(self.prefix) :]

    def keys(self) -> Iterator[str]:
        """Every stored key."""
        return self._list("")


def _status(exc: Exception) -> int | None:
    """The HTTP status of a botocore ClientError."""
    return getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")


Storage = LocalStorage | S3Storage


def open_storage(url: str, endpoint_url: str | None = None, presign: bool = False) -> Storage:
    """The storage at ``file://PATH`` or ``s3://BUCKET/PREFIX``."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file":
        return LocalStorage(Path(urllib.parse.unquote(parsed.netloc + parsed.path)))
    if parsed.scheme == "s3" and parsed.netloc:
        prefix = parsed.path.strip("/")
        return S3Storage(parsed.netloc, f"{prefix}/" if prefix else "", endpoint_url, presign)
    raise ValueError(f"APIFRAME_STORAGE_URL must be file://PATH or s3://BUCKET/PREFIX, got {url!r}")


def _unavailable(exc: StorageUnavailable) -> Response:
    """503 STORAGE_UNAVAILABLE, in the format of the API family being answered."""
    return ApiError(
        503,
        "STORAGE_UNAVAILABLE",
        f"{exc} Retry in {STORAGE_RETRY_AFTER} seconds.",
        headers={"Retry-After": str(STORAGE_RETRY_AFTER)},
    ).response()


def init_app(app: Flask) -> None:
    """Open the configured storage and serve its images; a request that cannot reach it gets a 503."""
    config = app.config
    app.extensions[EXTENSION] = open_storage(
        config["STORAGE_URL"], config["S3_ENDPOINT_URL"], config["S3_PRESIGN"]
    )
    app.register_blueprint(bp)
    app.register_error_handler(StorageUnavailable, _unavailable)


def current() -> Storage:
    """The app's storage."""
    return current_app.extensions[EXTENSION]


# ---- what the rest of the service calls -------------------------------------------------------


def save_images(
    job_id: uuid.UUID, images: dict[str, Image.Image], texts: dict[str, str | None] | None = None
) -> dict[str, str]:
    """Write ``{stem: image}`` for a job (``texts[stem]``: its parameters); returns ``{stem: file name}``."""
    image_format = current_app.config["IMAGE_FORMAT"]
    store = current()
    texts = texts or {}
    blobs = _encoders.map(lambda stem: imaging.encode(images[stem], image_format, texts.get(stem)), images)
    names = {stem: f"{stem}.{image_format}" for stem in images}
    if isinstance(store, LocalStorage):
        for stem, data in zip(images, blobs, strict=True):
            store.put(f"{job_id}/{names[stem]}", data)
    else:  # uploads overlap, like the encoding
        keys = [f"{job_id}/{names[stem]}" for stem in images]
        list(_encoders.map(store.put, keys, list(blobs)))
    return names


def load_image(job_id: uuid.UUID, name: str) -> Image.Image:
    """One of a job's stored images, decoded; MissingImage if it is not there."""
    image = Image.open(io.BytesIO(current().read(f"{job_id}/{name}")))
    image.load()
    return image


def delete_images(job_id: uuid.UUID) -> None:
    """Remove a job's images, if any."""
    current().delete_job(str(job_id))


def image_bytes(job_id: uuid.UUID, name: str) -> bytes:
    """The stored bytes of one of a job's images (MissingImage if it is gone)."""
    return current().read(f"{job_id}/{name}")


def image_url(job_id: uuid.UUID, name: str) -> str:
    """The public URL of one of a job's images (on the CDN or bucket of PUBLIC_IMAGE_URL, if set)."""
    config = current_app.config
    if config["PUBLIC_IMAGE_URL"]:
        return f"{config['PUBLIC_IMAGE_URL']}/{job_id}/{name}"
    return f"{config['PUBLIC_URL']}/images/{job_id}/{name}"


def thumbnail_url(job_id: uuid.UUID, name: str) -> str:
    """The (site-relative) URL of a small preview of one of a job's images."""
    return f"/images/{job_id}/thumbs/{name}"


def make_thumbnail(data: bytes) -> bytes:
    """A WebP preview of an encoded image."""
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.convert("RGB").save(out, "WEBP", quality=82, method=4)
    return out.getvalue()


def copy_images(source: Storage, target: Storage, overwrite: bool = False) -> tuple[int, int]:
    """Copy every image from ``source`` to ``target``; returns (copied, skipped as already there)."""
    existing = set() if overwrite else set(target.keys())
    copied = skipped = 0
    for key in source.keys():
        if key in existing:
            skipped += 1
            continue
        target.put(key, source.read(key))
        copied += 1
    return copied, skipped


def expired(job_id: uuid.UUID) -> ApiError:
    """410 IMAGE_EXPIRED: the retention (APIFRAME_IMAGE_RETENTION_DAYS) deleted the job's images."""
    days = current_app.config["IMAGE_RETENTION_DAYS"]
    kept = f"this server keeps images {days} days after their job ends" if days else "they had expired"
    return ApiError(410, "IMAGE_EXPIRED", f"The images of job {job_id} were deleted: {kept}.")


def images_deleted(job_id: uuid.UUID) -> ApiError | None:
    """``expired(job_id)`` if the retention deleted the job's images, else None."""
    deleted = Job.select(Job.images_deleted_at).where(Job.id == job_id).scalar()
    return None if deleted is None else expired(job_id)


# ---- serving ----------------------------------------------------------------------------------


def _stored_key(job_id: str, name: str) -> str:
    """The key of an image a job can have; 404 unless the name is such, under a well-formed id."""
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        raise not_found("No such image.") from None
    if str(parsed) != job_id or not FILE_NAME.match(name):
        raise not_found("No such image.")
    return f"{job_id}/{name}"


def _own_url(url: str) -> tuple[str, str] | None:
    """The job id and file name in one of this service's image URLs, or None for any other URL."""
    prefix = f"{current_app.config['PUBLIC_URL']}/images/"
    if not url.startswith(prefix):
        return None
    job_id, _, name = urlsplit(url[len(prefix) :]).path.partition("/")
    return job_id, name


def own_image(url: str) -> bytes | None:
    """The stored bytes behind one of this service's image URLs, or None for any other URL.

    Raises FileNotFoundError for a URL of this service's images that names no stored image (in whichever
    storage is configured, so this works on every node): ExpiredImage if the retention deleted it.
    """
    if (own := _own_url(url)) is None:
        return None
    try:
        key = _stored_key(*own)
    except ApiError:  # not a name a job's image can have
        raise FileNotFoundError(url) from None
    try:
        return current().read(key)
    except MissingImage:
        if (gone := images_deleted(uuid.UUID(own[0]))) is not None:
            raise ExpiredImage(gone.message) from None
        raise FileNotFoundError(url) from None


def refuse_expired(url: str) -> None:
    """410 IMAGE_EXPIRED if ``url`` is one of this service's image URLs whose image the retention deleted."""
    if (own := _own_url(url)) is None:
        return
    try:
        job_id = uuid.UUID(own[0])
    except ValueError:
        return
    if (gone := images_deleted(job_id)) is not None:
        raise gone


def _immutable(response: Response) -> Response:
    if response.status_code in (200, 206, 304):
        response.headers["Cache-Control"] = IMMUTABLE
    return response


@contextlib.contextmanager
def _gone_if_deleted(job_id: str) -> Iterator[None]:
    """Turn the 404 of an image the retention deleted into its 410."""
    try:
        yield
    except ApiError as exc:
        if exc.status == 404 and (gone := images_deleted(uuid.UUID(job_id))) is not None:
            raise gone from None
        raise


@bp.get("/images/<job_id>/<name>")
def serve_image(job_id: str, name: str) -> Response:
    """Serve a stored image (410 once the retention deleted it)."""
    key = _stored_key(job_id, name)
    with _gone_if_deleted(job_id):
        return _immutable(current().serve(key))


@bp.get("/images/<job_id>/thumbs/<name>")
def serve_thumbnail(job_id: str, name: str) -> Response:
    """Serve a small WebP preview of a stored image, made on first request and kept beside it (410 once the
    retention deleted the image)."""
    key = _stored_key(job_id, name)
    thumbnail = f"{job_id}/thumbs/{name.rpartition('.')[0]}.webp"
    store = current()
    with _gone_if_deleted(job_id):
        if not store.exists(thumbnail):
            try:
                store.put(thumbnail, make_thumbnail(store.read(key)))
            except MissingImage:
                raise not_found("No such image.") from None
            if (gone := images_deleted(uuid.UUID(job_id))) is not None:  # pruned while it was made
                store.delete_job(job_id)
                raise gone
        return _immutable(store.serve(thumbnail))
