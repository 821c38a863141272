"""A running job's inputs: images at users' URLs (fetched safely) and its parent's stored images."""

from __future__ import annotations

from flask import current_app
from PIL import Image

import imaging
import storage
from fetch import FetchError, fetch_bytes
from models import Job
from providers import JobContext


class InputError(Exception):
    """A job's input (an image URL, a parent image) could not be used; the message says why."""


def parent_of(job: Job) -> Job:
    """The job's parent, or InputError if it was deleted."""
    parent = job.parent
    if parent is None:
        raise InputError("The parent job no longer exists.")
    return parent


def made_by(parent: Job) -> dict[str, str | None]:
    """Which provider made the parent, and its id there (``parent_ref`` and ``parent_provider``)."""
    return {"parent_ref": parent.provider_ref, "parent_provider": parent.provider}


def fetch_image(url: str, field: str, ctx: JobContext) -> Image.Image:
    """One input image, decoded: this service's own image URLs from storage, others fetched safely."""
    config = current_app.config
    ctx.check()
    try:
        data = storage.own_image(url)
        if data is None:
            data = fetch_bytes(
                url,
                allow_private=config["ALLOW_PRIVATE_URLS"],
                max_bytes=config["FETCH_MAX_BYTES"],
                timeout=max(1.0, min(config["FETCH_TIMEOUT"], ctx.remaining())),
            )
        return imaging.decode(data, config["MAX_IMAGE_PIXELS"])
    except storage.ExpiredImage as exc:
        raise InputError(f"Could not use {field} {url}: {exc}") from None
    except FileNotFoundError:
        raise InputError(f"Could not use {field} {url}: this server has no such image.") from None
    except (FetchError, imaging.ImageError) as exc:
        raise InputError(f"Could not use {field} {url}: {exc}.") from None


def parent_tile(parent: Job, index: int) -> Image.Image:
    """Load tile ``index`` (1-4) of a finished job from storage."""
    try:
        return imaging.flatten(storage.load_image(parent.id, parent.tiles[index - 1]))
    except (OSError, LookupError, TypeError):  # storage.MissingImage is a LookupError
        raise InputError(f"Image {index} of job {parent.id} is no longer available.") from None
