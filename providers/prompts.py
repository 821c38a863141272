"""Prompt text for backends: Midjourney parameters from a request, and four prompts out of a text answer."""

from __future__ import annotations

import json
import re

from providers import ImagineRequest

NIJI_STYLES = ("cute", "expressive", "scenic")  # Midjourney offers these only on its niji 5 model

# "1️⃣ ...", "1. ...", "1) ...", "- ...", "* ..." at the start of an item.
_ITEM_MARK = re.compile(r"^\s*(?:[1-9]\ufe0f?\u20e3|\(?[1-9][.):]|[-*\u2022])\s*")
_KEYCAP = re.compile(r"(?=[1-9]\ufe0f?\u20e3)")
# Where a Midjourney prompt's parameters start (``--ar``, or ``—ar`` as phones type it), and each one.
_PARAMETER = re.compile(r"(?:^|(?<=\s))(?:--|\u2014)(?=[a-z])", re.IGNORECASE)
_PARAMETER_SPLIT = re.compile(r"\s+(?=(?:--|\u2014)[a-z])", re.IGNORECASE)
_SHORT_NAMES = {"aspect": "ar", "version": "v", "stylize": "s", "quality": "q", "chaos": "c"}
_SAME_SETTING = {"niji": "v"}  # the model: one of --v and --niji


def midjourney_prompt(request: ImagineRequest, *, with_aspect: bool = True) -> str:
    """The prompt with Midjourney's parameters for the request's aspect ratio, version, style and the rest."""
    parts = [request.prompt.strip()]
    if with_aspect:
        parts.append(f"--ar {request.aspect_ratio}")
    if request.style in NIJI_STYLES:
        parts.append(f"--niji 5 --style {request.style}")
    else:
        parts.append(f"--v {request.version}")
        if request.style:
            parts.append(f"--style {request.style}")
    if request.quality != 1:
        parts.append(f"--q {request.quality:g}")
    if request.chaos:
        parts.append(f"--c {request.chaos:g}")
    if request.stylize != 100:
        parts.append(f"--s {request.stylize:g}")
    if request.seed is not None:
        parts.append(f"--seed {request.seed}")
    return " ".join(parts)


def remixed(prompt: str | None, parent_prompt: str, **settings: str | None) -> str:
    """A Midjourney modal's prompt (remix, custom zoom, vary region), filled in as Midjourney does: the
    parent task's prompt with ``prompt``'s text instead of its own (when it has text), and ``prompt``'s
    parameters, then ``settings`` (``zoom="2"``, ``ar="2:3"``; None drops one), in place of the parent's
    parameters for the same setting (``--ar``, ``--v``, ``--s``, ...)."""
    text, parameters = _split_parameters(parent_prompt)
    if prompt and prompt.strip():
        own_text, own = _split_parameters(prompt)
        text, settings = own_text or text, dict(own) | settings
    for name, value in settings.items():
        same = _SAME_SETTING.get(name, name)
        parameters = [(n, v) for n, v in parameters if _SAME_SETTING.get(n, n) != same]
        if value is not None:
            parameters.append((name, value))
    return " ".join([text, *(f"--{name} {value}".strip() for name, value in parameters)]).strip()


def _split_parameters(prompt: str) -> tuple[str, list[tuple[str, str]]]:
    """A Midjourney prompt's text and its parameters: each one's short name, in lower case, and value."""
    start = _PARAMETER.search(prompt)
    if start is None:
        return prompt.strip(), []
    parameters = []
    for part in _PARAMETER_SPLIT.split(prompt[start.start() :].strip()):
        name, _, value = part.lstrip("-\u2014").partition(" ")
        parameters.append((_SHORT_NAMES.get(name.lower(), name.lower()), value.strip()))
    return prompt[: start.start()].strip(), parameters


def orientation(width: int, height: int) -> str:
    """PORTRAIT, SQUARE or LANDSCAPE, as Midjourney's /blend names its dimensions."""
    if width > height * 1.1:
        return "LANDSCAPE"
    if height > width * 1.1:
        return "PORTRAIT"
    return "SQUARE"


def split_prompts(text: str) -> list[str]:
    """Prompts from a text answer: a JSON list, keycap-numbered items (1️⃣ …), or one per line."""
    text = text.strip()
    listed = _json_list(text)
    if listed is not None:
        items = listed
    elif _KEYCAP.search(text):
        items = _KEYCAP.split(text)
    else:
        items = text.splitlines()
    return plain_prompts(items)


def plain_prompts(items: list[str]) -> list[str]:
    """Each prompt without its number or bullet (``1️⃣``, ``1.``, ``-``) or quotes; empty ones dropped."""
    prompts = [_ITEM_MARK.sub("", str(item)).strip().strip('"').strip() for item in items]
    return [prompt for prompt in prompts if prompt]


def _json_list(text: str) -> list[str] | None:
    """A JSON array of strings, or an object holding one (``{"prompts": [...]}``), inside ``text``."""
    start = min((i for i in (text.find("["), text.find("{")) if i >= 0), default=-1)
    if start < 0:
        return None
    try:
        value = json.loads(text[start : max(text.rfind("]"), text.rfind("}")) + 1])
    except ValueError:
        return None
    if isinstance(value, dict):
        value = next((v for v in value.values() if isinstance(v, list)), None)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None
