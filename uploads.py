"""Images clients upload with a request: kept in image storage, read back by the job that uses them.

An upload is stored like a job's single image, under an id of its own (``<id>/image.png``), so it is
never fetched by URL and every node that can read job images can read it.
"""

from __future__ import annotations

import logging
import uuid

from flask import current_app
from PIL import Image

import imaging
import storage
from inputs import InputError

log = logging.getLogger(__name__)
NAME = "image"  # an upload's stem in storage


class UploadError(ValueError):
    """Bytes that are not a usable image; the message says why."""


def decode(data: bytes) -> Image.Image:
    """The uploaded bytes as an RGB image, or UploadError."""
    try:
        return imaging.decode(data, current_app.config["MAX_IMAGE_PIXELS"])
    except imaging.ImageError as exc:
        raise UploadError(str(exc)) from None


def save(image: Image.Image) -> str:
    """Store an uploaded image; returns the reference a job keeps (``<id>/<file name>``)."""
    new_id = uuid.uuid4()
    names = storage.save_images(new_id, {NAME: image})
    return f"{new_id}/{names[NAME]}"


def upload_id(reference: str) -> uuid.UUID:
    """The id an upload's images are stored under, from its reference (ValueError if it holds none)."""
    return uuid.UUID(reference.partition("/")[0])


def discard(reference: str) -> None:
    """Remove an upload no job uses; one the storage cannot remove now stays, unused (logged), rather
    than fail the request that dropped it."""
    try:
        storage.delete_images(upload_id(reference))
    except storage.StorageUnavailable as exc:
        log.warning("the unused upload %s stays: %s %s", reference, exc, exc.detail or "")


def load(reference: str) -> Image.Image:
    """An upload stored by ``save``, decoded (InputError if it is gone)."""
    try:
        data = storage.image_bytes(upload_id(reference), reference.partition("/")[2])
        return imaging.decode(data, current_app.config["MAX_IMAGE_PIXELS"])
    except (OSError, LookupError, ValueError):  # storage.MissingImage is a LookupError
        raise InputError("The uploaded image is no longer available.") from None
