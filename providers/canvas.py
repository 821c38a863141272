"""What adapters send for outpaint and inpaint: a padded canvas with its mask, masks as PNG, shapes."""

from __future__ import annotations

from PIL import Image, ImageFilter

from imaging import MIDJOURNEY_ASPECT_RATIOS, png_base64, ratio


def mask_base64(mask: Image.Image) -> str:
    """A mask (white = repaint) as base64 PNG, as the original API and midjourney-proxy take it."""
    return png_base64(mask.convert("L"))


def shape_of(width: int, height: int) -> str | None:
    """The Midjourney aspect ratio (1:1, 2:3, 21:9 ...) of ``width`` x ``height``, within 1 %, or None."""
    for name in MIDJOURNEY_ASPECT_RATIOS:
        w, h = ratio(name)
        if abs(width * h - height * w) <= 0.01 * width * h:
            return name
    return None


def padded(image: Image.Image, pad: tuple[int, int, int, int]) -> tuple[Image.Image, Image.Image]:
    """``image`` on a canvas with ``pad`` (left, top, right, bottom) added, and the mask of the new area.

    The new area starts as the image's edges stretched outwards (a neutral start for img2img), and the
    mask is white there, black over the image.
    """
    left, top, right, bottom = pad
    width, height = image.width + left + right, image.height + top + bottom
    canvas = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    canvas = canvas.filter(ImageFilter.GaussianBlur(max(2, min(width, height) // 32)))
    canvas.paste(image.convert("RGB"), (left, top))
    mask = Image.new("L", (width, height), 255)
    mask.paste(0, (left, top, left + image.width, top + image.height))
    return canvas, mask


def keep_original(result: Image.Image, image: Image.Image, pad: tuple[int, int, int, int]) -> Image.Image:
    """``result`` (the painted canvas) with the original pixels put back in place, so they stay unchanged."""
    canvas = result.convert("RGB")
    left, top, right, bottom = pad
    size = (image.width + left + right, image.height + top + bottom)
    if canvas.size != size:
        canvas = canvas.resize(size, Image.Resampling.LANCZOS)
    canvas.paste(image.convert("RGB"), (left, top))
    return canvas
