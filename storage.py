"""Image storage: job results written under the data directory and served at PUBLIC_URL/images/."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, send_from_directory
from PIL import Image

import imaging
from errors import ApiError, not_found

bp = Blueprint("images", __name__)

# Names a job's files may have: grid, tiles 1-4, or the single upscaled image.
FILE_NAME = re.compile(r"^(grid|[1-4]|image)\.(png|webp|jpeg)$")

THUMBNAIL_SIZE = 512  # longest side of the previews the console shows
IMMUTABLE = "public, max-age=31536000, immutable"

# Pillow releases the GIL while encoding, so a job's images are encoded side by side.
_encoders = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="apiframe-encode")


def images_dir() -> Path:
    """Where job images live."""
    return Path(current_app.config["DATA_DIR"]) / "images"


def save_images(job_id: uuid.UUID, images: dict[str, Image.Image]) -> dict[str, str]:
    """Write ``{stem: image}`` for a job; returns ``{stem: file name}``."""
    image_format = current_app.config["IMAGE_FORMAT"]
    folder = images_dir() / str(job_id)
    folder.mkdir(parents=True, exist_ok=True)
    blobs = _encoders.map(lambda image: imaging.encode(image, image_format), images.values())
    encoded = dict(zip(images, blobs, strict=True))
    names = {}
    for stem, data in encoded.items():
        name = f"{stem}.{image_format}"
        temporary = folder / f".{name}.tmp"
        temporary.write_bytes(data)
        temporary.replace(folder / name)
        names[stem] = name
    return names


def delete_images(job_id: uuid.UUID) -> None:
    """Remove a job's images, if any."""
    shutil.rmtree(images_dir() / str(job_id), ignore_errors=True)


def image_path(job_id: uuid.UUID, name: str) -> Path:
    """The file behind one of a job's images."""
    return images_dir() / str(job_id) / name


def image_url(job_id: uuid.UUID, name: str) -> str:
    """The public URL of one of a job's images."""
    return f"{current_app.config['PUBLIC_URL']}/images/{job_id}/{name}"


def thumbnail_url(job_id: uuid.UUID, name: str) -> str:
    """The (site-relative) URL of a small preview of one of a job's images."""
    return f"/images/{job_id}/thumbs/{name}"


def _stored_image(job_id: str, name: str) -> Path:
    """The file of a stored image; 404 unless the name is one a job can have, under a well-formed id."""
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        raise not_found("No such image.") from None
    if str(parsed) != job_id or not FILE_NAME.match(name):
        raise not_found("No such image.")
    path = images_dir() / job_id / name
    if not path.is_file():
        raise not_found("No such image.")
    return path


def own_image(url: str) -> bytes | None:
    """The stored bytes behind one of this service's image URLs, or None for any other URL.

    Raises FileNotFoundError for a URL of this service's images that names no stored image.
    """
    prefix = f"{current_app.config['PUBLIC_URL']}/images/"
    if not url.startswith(prefix):
        return None
    job_id, _, name = urlsplit(url[len(prefix) :]).path.partition("/")
    try:
        return _stored_image(job_id, name).read_bytes()
    except (ApiError, OSError):
        raise FileNotFoundError(url) from None


def _immutable(response: Response) -> Response:
    response.headers["Cache-Control"] = IMMUTABLE
    return response


@bp.get("/images/<job_id>/<name>")
def serve_image(job_id: str, name: str) -> Response:
    """Serve a stored image."""
    path = _stored_image(job_id, name)
    return _immutable(send_from_directory(path.parent, path.name, max_age=365 * 24 * 3600))


def make_thumbnail(source: Path, target: Path) -> None:
    """Write a WebP preview of ``source`` to ``target`` (atomically, so concurrent makers are harmless)."""
    target.parent.mkdir(exist_ok=True)
    with Image.open(source) as image:
        image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".", suffix=".tmp", delete=False) as out:
            image.convert("RGB").save(out, "WEBP", quality=82, method=4)
    Path(out.name).replace(target)


@bp.get("/images/<job_id>/thumbs/<name>")
def serve_thumbnail(job_id: str, name: str) -> Response:
    """Serve a small WebP preview of a stored image, made on first request and kept beside it."""
    path = _stored_image(job_id, name)
    thumbnail = path.parent / "thumbs" / f"{path.stem}.webp"
    if not thumbnail.is_file():
        make_thumbnail(path, thumbnail)
    return _immutable(send_from_directory(thumbnail.parent, thumbnail.name, max_age=365 * 24 * 3600))
