"""Inpaint masks: a client's base64 PNG checked at submission, kept with the job, read by the worker."""

from __future__ import annotations

import base64
import binascii
import io
import re

import numpy as np
from flask import current_app
from PIL import Image

import storage
from errors import validation_error
from inputs import InputError
from models import Job

STEM = "mask"  # the file a job's mask is stored as, beside its images (never served)
_DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)
_PNG = b"\x89PNG\r\n\x1a\n"


def decode(text: str, size: tuple[int, int], field: str = "mask") -> Image.Image:
    """The mask in ``text`` (base64 PNG, optional data URL prefix) as a black and white image of ``size``.

    400 naming ``field`` unless it is a PNG of exactly ``size`` with both white (repaint) and black (keep).
    """
    raw = _DATA_URL.sub("", text.strip(), count=1)
    try:
        data = base64.b64decode(re.sub(r"\s+", "", raw), validate=True)
    except (binascii.Error, ValueError):
        raise validation_error(f"The '{field}' field must be a base64-encoded PNG image.") from None
    if not data.startswith(_PNG):
        raise validation_error(f"The '{field}' field must be a PNG image; this is not one.")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.size != size:
                raise validation_error(
                    f"The '{field}' field must be the image's size, {size[0]}x{size[1]}; "
                    f"it is {image.width}x{image.height}."
                )
            grey = np.asarray(image.convert("LA"), np.uint16)  # transparent counts as black (keep)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise validation_error(f"The '{field}' field is not a usable PNG image ({exc}).") from None
    white = grey[..., 0] * grey[..., 1] >= 128 * 255
    if not white.any():
        raise validation_error(f"The '{field}' field is all black: paint the region to repaint in white.")
    if white.all():
        raise validation_error(f"The '{field}' field is all white: leave the region to keep black.")
    return Image.fromarray((white * 255).astype(np.uint8), "L")


def file_name() -> str:
    """The name a mask is stored under, beside its job's images."""
    return f"{STEM}.{current_app.config['IMAGE_FORMAT']}"


def load(job: Job) -> Image.Image:
    """The job's stored mask, black and white (mode L), or InputError if it is gone."""
    try:
        grey = np.asarray(storage.load_image(job.id, job.params["mask"]).convert("L"))
    except (OSError, LookupError, TypeError):  # storage.MissingImage is a LookupError
        raise InputError(f"The mask of job {job.id} is no longer available.") from None
    return Image.fromarray(((grey >= 128) * 255).astype(np.uint8), "L")

