"""Image operations shared by the gateway and the providers: sizes, decoding, grids, encoding."""

from __future__ import annotations

import base64
import io
import math
import warnings

from PIL import Image, ImageFilter, ImageOps, PngImagePlugin, UnidentifiedImageError

import imagemeta

ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4")
# The original API passed any ratio on to Midjourney as --ar; its routes take these, the ones commonly sent
# (dimensions() sizes any ratio, so every provider renders them).
MIDJOURNEY_ASPECT_RATIOS = (*ASPECT_RATIOS, "2:3", "3:2", "4:5", "5:4", "1:2", "2:1", "21:9", "9:21")
LONG_SIDE = 1024  # at quality 1
FORMATS = {"png": ("PNG", "image/png"), "webp": ("WEBP", "image/webp"), "jpeg": ("JPEG", "image/jpeg")}


class ImageError(ValueError):
    """Bytes that are not a usable image."""


def ratio(aspect_ratio: str) -> tuple[int, int]:
    """``"16:9"`` -> ``(16, 9)``."""
    width, height = aspect_ratio.split(":")
    return int(width), int(height)


def dimensions(aspect_ratio: str, quality: float = 1) -> tuple[int, int]:
    """Tile size for an aspect ratio; quality scales the pixel count (1 -> long side 1024)."""
    width, height = ratio(aspect_ratio)
    long_side = LONG_SIDE * math.sqrt(quality)
    scale = long_side / max(width, height)
    return _round8(width * scale), _round8(height * scale)


def _round8(value: float) -> int:
    return max(8, int(round(value / 8)) * 8)


def decode(data: bytes, max_pixels: int) -> Image.Image:
    """Decode image bytes into an RGB image, refusing non-images and decompression bombs."""
    return flatten(open_image(data, max_pixels))


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode image bytes as they are (any mode), refusing non-images and decompression bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"image is {width}x{height}, more than {max_pixels} pixels")
            image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(_decode_message(exc)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"image could not be decoded ({exc})") from None
    return image


def _decode_message(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image in a supported format (PNG, JPEG, WebP, GIF, BMP, TIFF)"
    return "image is too large to decode safely"


def flatten(image: Image.Image) -> Image.Image:
    """Convert any mode to RGB, putting transparency on white; the ``parameters`` text is kept."""
    if image.mode == "RGB":
        return image
    flat = _flatten(image)
    if imagemeta.KEY in image.info:
        flat.info[imagemeta.KEY] = image.info[imagemeta.KEY]
    return flat


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")  # no copy of a large RGBA image
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def compose_grid(tiles: list[Image.Image]) -> Image.Image:
    """Lay four tiles out as a 2x2 grid (1 2 / 3 4)."""
    if len(tiles) != 4:
        raise ValueError("a grid needs exactly four tiles")
    width, height = tiles[0].size
    grid = Image.new("RGB", (width * 2, height * 2))
    for position, tile in enumerate(tiles):
        if tile.size != (width, height):
            tile = tile.resize((width, height), Image.Resampling.LANCZOS)
        grid.paste(tile, ((position % 2) * width, (position // 2) * height))
    return grid


def split_grid(grid: Image.Image) -> list[Image.Image]:
    """Cut a 2x2 grid into its four tiles (1 2 / 3 4)."""
    width, height = grid.size[0] // 2, grid.size[1] // 2
    return [
        grid.crop(((i % 2) * width, (i // 2) * height, (i % 2 + 1) * width, (i // 2 + 1) * height))
        for i in range(4)
    ]


def upscale(image: Image.Image, factor: int = 2) -> Image.Image:
    """Enlarge with Lanczos resampling, then restore edge crispness with a light unsharp mask."""
    enlarged = image.resize((image.width * factor, image.height * factor), Image.Resampling.LANCZOS)
    return enlarged.filter(ImageFilter.UnsharpMask(radius=1.2 * factor, percent=60, threshold=2))


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale and centre-crop to exactly ``width`` x ``height``."""
    if image.size == (width, height):
        return image
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)


def cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` scaled down to the smallest size that still covers ``width`` x ``height``; never enlarged.

    Fitting it to that size later loses nothing, and a large input no longer holds its full decoded size
    in memory while the job runs.
    """
    if image.width <= width or image.height <= height:
        return image
    return ImageOps.cover(image, (width, height), Image.Resampling.LANCZOS)


def reframe(image: Image.Image, aspect_ratio: str) -> Image.Image:
    """The largest centred region of ``image`` with ``aspect_ratio``, scaled back to the image's long side."""
    width, height = ratio(aspect_ratio)
    scale = max(image.size) / max(width, height)
    return fit(image, _round8(width * scale), _round8(height * scale))


def average(images: list[Image.Image], width: int, height: int) -> Image.Image:
    """An even mix of the images, each fitted to ``width`` x ``height``."""
    mixed = fit(flatten(images[0]), width, height)
    for count, image in enumerate(images[1:], start=2):
        mixed = Image.blend(mixed, fit(flatten(image), width, height), 1 / count)
    return mixed


def nearest_aspect_ratio(image: Image.Image, choices: tuple[str, ...] = ASPECT_RATIOS) -> str:
    """The aspect ratio of ``choices`` (by default, the supported ones) closest to ``image``'s."""
    shape = image.width / image.height
    return min(choices, key=lambda name: abs(math.log(shape * ratio(name)[1] / ratio(name)[0])))


def png_bytes(image: Image.Image) -> bytes:
    """``image`` as PNG, Pillow's default settings: what a backend is sent."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def png_base64(image: Image.Image) -> str:
    """``image`` as base64-encoded PNG."""
    return base64.b64encode(png_bytes(image)).decode("ascii")


def encode(image: Image.Image, image_format: str, text: str | None = None) -> bytes:
    """Encode for storage: fast settings, since these are written on every job.

    ``text`` (how the image was made) goes into a PNG's ``parameters`` chunk; other formats skip it.
    """
    pil_format, _ = FORMATS[image_format]
    options = {"PNG": {"compress_level": 1}, "WEBP": {"quality": 90, "method": 2}, "JPEG": {"quality": 92}}
    if pil_format == "PNG" and text:
        info = PngImagePlugin.PngInfo()
        info.add_itxt(imagemeta.KEY, text)
        options["PNG"]["pnginfo"] = info
    buffer = io.BytesIO()
    image.save(buffer, pil_format, **options[pil_format])
    return buffer.getvalue()
