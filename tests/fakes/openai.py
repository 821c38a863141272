"""A fake OpenAI API: Images (generations, edits, variations), chat completions and models."""

from __future__ import annotations

import base64
import io
import itertools
import json

from PIL import Image

from fakes import FakeBackend, Recorded, Reply, png

COLORS = [(220, 60, 60), (60, 200, 90), (60, 90, 220), (230, 200, 40), (160, 60, 200), (40, 200, 200)]
DESCRIPTIONS = [
    "a red fox standing in deep snow, winter forest, soft morning light",
    "wildlife photograph of a fox in a snowy pine forest, telephoto, shallow depth of field",
    "watercolor painting of a red fox in the snow, loose brushwork, muted palette",
    "cinematic still of a fox crossing a frozen clearing at dawn, volumetric light",
]
# The sizes each OpenAI model takes (openai-python's image_generate_params.py); gpt-image-2 takes any
# WIDTHxHEIGHT in multiples of 16, from 1:3 to 3:1, up to 3840 on a side. Other names (a compatible
# server's own models) take any WIDTHxHEIGHT.
GPT_IMAGE_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
SIZES = {"dall-e-2": ("256x256", "512x512", "1024x1024"), "dall-e-3": ("1024x1024", "1792x1024", "1024x1792")}

# The qualities each model takes (image_generate_params.py); edits take the same.
QUALITIES = {"dall-e-2": ("standard", "auto"), "dall-e-3": ("standard", "hd", "auto")}
GPT_IMAGE_QUALITIES = ("low", "medium", "high", "auto")


def gpt_image(model: str) -> bool:
    """Whether ``model`` is one of OpenAI's GPT image models (gpt-image-1, chatgpt-image-latest ...)."""
    return model.startswith(("gpt-image-", "chatgpt-image-"))


def _size_refused(model: str, size: str) -> str | None:
    """Why OpenAI refuses ``size`` for ``model``, or None."""
    if model.startswith("gpt-image-2") and size != "auto":
        width, _, height = size.partition("x")
        if width.isdigit() and height.isdigit():
            w, h = int(width), int(height)
            if w % 16 == 0 and h % 16 == 0 and max(w, h) <= 3840 and max(w, h) <= 3 * min(w, h):
                return None
        return f"Invalid value: '{size}'. Width and height must be multiples of 16, from 1:3 to 3:1."
    allowed = GPT_IMAGE_SIZES if gpt_image(model) else SIZES.get(model)
    return None if allowed is None or size in allowed else _unsupported(size, allowed)


def _unsupported(value: str, allowed: tuple[str, ...]) -> str:
    listed = ", ".join(f"'{each}'" for each in allowed)
    return f"Invalid value: '{value}'. Supported values are: {listed}."


def _error(status: int, message: str, code: str | None = None, kind: str = "invalid_request_error") -> Reply:
    return Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})


class FakeOpenAI(FakeBackend):
    """Answers under /v1 with the key ``key``; images as b64_json or as URLs on ``url_host``."""

    def __init__(self, key: str = "sk-test-0123456789abcdef", url_host: FakeBackend | None = None) -> None:
        super().__init__()
        self.key = key
        self.url_host = url_host or self
        self.blocked_word = "forbidden"
        self.describe_answer = json.dumps(DESCRIPTIONS)
        self.counter = itertools.count(1)
        self.force_urls = False  # answer with URLs whatever response_format asks
        self.quota_headers: dict[str, str] | None = None  # set: the account is out of credit, answered so

    def handle(self, request: Recorded) -> Reply:
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            shown = (request.headers.get("Authorization", "")[7:14] + "****") if request.headers else ""
            return _error(401, f"Incorrect API key provided: {shown}.", "invalid_api_key")
        if self.quota_headers is not None and request.method == "POST":
            return self._out_of_quota()
        route = {
            ("POST", "/v1/images/generations"): self._generations,
            ("POST", "/v1/images/edits"): self._edits,
            ("POST", "/v1/images/variations"): self._variations,
            ("POST", "/v1/chat/completions"): self._chat,
            ("GET", "/v1/models"): self._models,
        }.get((request.method, request.path))
        return route(request) if route else _error(404, f"Invalid URL ({request.method} {request.path})")

    def _out_of_quota(self) -> Reply:
        """429 insufficient_quota: a 429 like a rate limit's, that no wait mends, with ``quota_headers``."""
        message = (
            "You exceeded your current quota, please check your plan and billing details. For more "
            "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes."
        )
        reply = _error(429, message, "insufficient_quota", "insufficient_quota")
        reply.headers.update(self.quota_headers or {})
        return reply

    def _answer(self, model: str, n: int, size: str, response_format: str | None) -> Reply:
        width, height = (int(side) for side in ("1024x1024" if size == "auto" else size).split("x"))
        data = []
        for _ in range(n):
            image = png((width, height), COLORS[next(self.counter) % len(COLORS)])
            if not self.force_urls and (gpt_image(model) or response_format == "b64_json"):
                data.append({"b64_json": base64.b64encode(image).decode()})
            else:
                path = f"/files/img-{next(self.counter)}.png"
                data.append({"url": self.url_host.serve_image(path, image)})
        return Reply(200, {"created": 1700000000, "data": data})

    def _check(
        self, model: str, n: int, size: str, response_format: str | None, prompt: str, quality: str | None
    ) -> Reply | None:
        if model == "dall-e-3" and n != 1:
            return _error(400, "You must provide n=1 for this model.")
        if gpt_image(model) and response_format:
            return _error(400, "Unknown parameter: 'response_format'.", "unknown_parameter")
        if self.blocked_word in (prompt or ""):
            return _error(
                400,
                "Your request was rejected by the safety system.",
                "moderation_blocked",
                "image_generation_user_error",
            )
        allowed = GPT_IMAGE_QUALITIES if gpt_image(model) else QUALITIES.get(model)
        if quality is not None and allowed is not None and quality not in allowed:
            return _error(400, _unsupported(quality, allowed), "invalid_value")
        if "x" not in size and size != "auto":
            return _error(400, f"Invalid value: '{size}'.")
        refused = _size_refused(model, size)
        if refused:
            return _error(400, refused, "invalid_value")
        return None

    def _generations(self, request: Recorded) -> Reply:
        body = request.json or {}
        model, n, size = body.get("model", "dall-e-2"), int(body.get("n", 1)), body.get("size", "1024x1024")
        fmt = body.get("response_format")
        refused = self._check(model, n, size, fmt, body.get("prompt", ""), body.get("quality"))
        return refused or self._answer(model, n, size, fmt)

    def _edits(self, request: Recorded) -> Reply:
        form = request.form
        if not request.files:
            return _error(400, "Missing required parameter: 'image'.")
        for _name, data in request.files:
            Image.open(io.BytesIO(data)).verify()
        files = dict(request.files)
        if "mask" in files:  # a PNG with an alpha channel, the image's size: transparent = paint here
            mask = Image.open(io.BytesIO(files["mask"]))
            if mask.mode != "RGBA" or mask.size != Image.open(io.BytesIO(files["image"])).size:
                return _error(400, "Invalid mask: it must be a PNG with transparency, the size of the image.")
        model, n, size = form.get("model", "dall-e-2"), int(form.get("n", 1)), form.get("size", "1024x1024")
        refused = self._check(
            model, n, size, form.get("response_format"), form.get("prompt", ""), form.get("quality")
        )
        return refused or self._answer(model, n, size, form.get("response_format"))

    def _variations(self, request: Recorded) -> Reply:
        form = request.form
        if form.get("model", "dall-e-2") != "dall-e-2":
            return _error(400, "Variations are only supported by dall-e-2.")
        (name, data), *_ = request.files
        image = Image.open(io.BytesIO(data))
        if name != "image" or image.width != image.height:
            return _error(400, "Uploaded image must be a square PNG.")
        return self._answer(
            "dall-e-2", int(form.get("n", 1)), form.get("size", "1024x1024"), form.get("response_format")
        )

    def _chat(self, request: Recorded) -> Reply:
        body = request.json or {}
        parts = body["messages"][-1]["content"]
        if not any(
            p.get("type") == "image_url" and p["image_url"]["url"].startswith("data:image/") for p in parts
        ):
            return _error(400, "Expected an image_url content part.")
        message = {"role": "assistant", "content": self.describe_answer}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return Reply(
            200,
            {"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"], "choices": [choice]},
        )

    def _models(self, _request: Recorded) -> Reply:
        ids = ["gpt-image-1", "dall-e-3", "dall-e-2", "gpt-4o-mini"]
        return Reply(
            200, {"object": "list", "data": [{"id": i, "object": "model", "owned_by": "openai"} for i in ids]}
        )
