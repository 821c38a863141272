"""Image storage: job results written under the data directory and served at PUBLIC_URL/images/."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flask import Blueprint, Response, current_app, send_from_directory
from PIL import Image

import imaging
from errors import not_found

bp = Blueprint("images", __name__)

# Names a job's files may have: grid, tiles 1-4, or the single upscaled image.
FILE_NAME = re.compile(r"^(grid|[1-4]|image)\.(png|webp|jpeg)$")

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


@bp.get("/images/<job_id>/<name>")
def serve_image(job_id: str, name: str) -> Response:
    """Serve a stored image; only names a job can have, under a well-formed job id."""
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        raise not_found("No such image.") from None
    if str(parsed) != job_id or not FILE_NAME.match(name):
        raise not_found("No such image.")
    folder = images_dir() / job_id
    if not (folder / name).is_file():
        raise not_found("No such image.")
    response = send_from_directory(folder, name, max_age=365 * 24 * 3600)
    response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return response
