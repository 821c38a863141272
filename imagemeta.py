"""The prompt and settings an image was made with, kept in its PNG text chunk ``parameters``.

The text follows AUTOMATIC1111's layout, so other tools read it too: the prompt on the first
lines, then one line of ``Key: value`` pairs separated by commas. Describe, variation and outpaint
read it back from images this service made.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from PIL import Image

KEY = "parameters"
# Job settings written into an image, by their name in job params and in the text.
_SETTINGS = (
    ("aspect_ratio", "Aspect ratio"),
    ("chaos", "Chaos"),
    ("stylize", "Stylize"),
    ("style", "Style"),
    ("version", "Version"),
    ("quality", "Quality"),
)
_PAIR = re.compile(r'\s*([A-Za-z][A-Za-z0-9 ]*):\s*("(?:[^"\\]|\\.)*"|[^,]*)(?:,|$)')


def _quote(value: object) -> str:
    """A value as AUTOMATIC1111 writes it: quoted (with escapes) when it holds a comma or a quote."""
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"' if "," in text or '"' in text else text


def format_text(prompt: str, fields: Mapping[str, object]) -> str:
    """The ``parameters`` text for a prompt and its settings (``None`` values left out)."""
    pairs = ", ".join(f"{key}: {_quote(value)}" for key, value in fields.items() if value is not None)
    return f"{prompt.strip()}\n{pairs}"


def model(provider: str) -> str:
    """The ``Model`` an image says it was made with: ``apiframe-`` and the name of the provider."""
    return f"apiframe-{provider}"


def job_text(
    operation: str,
    provider: str,
    prompt: str | None,
    params: Mapping[str, Any],
    seed: int | None,
    image: Image.Image,
    tile: int | None,
    source: str | None = None,
) -> str | None:
    """The ``parameters`` text for one image of a job, or None when the job had no prompt.

    ``provider`` made the image; ``source``: for an enlargement of a grid's tile (an upscale), the
    operation that made the grid, whose provider, prompt, settings, seed and tile are then given.
    """
    if not prompt or not prompt.strip():
        return None
    fields: dict[str, object] = {
        "Operation": operation,
        "Source": source,
        "Seed": seed,
        "Size": f"{image.width}x{image.height}",
        "Tile": tile,
        "Model": model(provider),
    }
    for name, label in _SETTINGS:
        fields[label] = params.get(name)
    return format_text(prompt, fields)


def parse_text(text: str) -> dict[str, str]:
    """The prompt (as ``prompt``) and every ``Key: value`` of a ``parameters`` text."""
    lines = text.strip().splitlines()
    if not lines:
        return {}
    fields: dict[str, str] = {}
    last = lines[-1]
    pairs = list(_PAIR.finditer(last)) if len(lines) > 1 else []
    if pairs and "".join(m.group(0) for m in pairs).strip() == last.strip():
        for match in pairs:
            value = match.group(2).strip()
            if value.startswith('"') and value.endswith('"') and len(value) >= 2:
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            fields[match.group(1).strip()] = value
        lines = lines[:-1]
    prompt_lines = [line for line in lines if not line.startswith("Negative prompt:")]
    fields["prompt"] = "\n".join(prompt_lines).strip()
    return fields


def read(image: Image.Image) -> dict[str, str] | None:
    """The ``parameters`` an image carries (prompt and settings), or None."""
    text = image.info.get(KEY)
    if not isinstance(text, str) or not text.strip():
        return None
    fields = parse_text(text)
    return fields if fields.get("prompt") else None


def number(fields: Mapping[str, str], key: str, default: float) -> float:
    """A numeric setting from parsed parameters, or ``default`` when absent or not a number."""
    try:
        return float(fields[key])
    except (KeyError, ValueError):
        return default
