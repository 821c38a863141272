"""A fake apiframe.ai v1 API: its create routes, POST /fetch and GET /account.

The pan, outpaint, inpaint, shorten and faceswap routes follow docs.apiframe.ai's api-endpoints pages:
pan and outpaint take an upscale's ``parent_task_id`` (with ``direction``; ``zoom_ratio`` 1 to 2 and
``aspect_ratio``), inpaint its ``mask`` as base64; shorten's task has ``content``, a list of prompts.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
import uuid
from typing import Any

from fakes import FakeBackend, Recorded, Reply, png

DESCRIPTIONS = [
    "1️⃣ a red fox standing in deep snow, winter forest --ar 1:1",
    "2️⃣ wildlife photograph of a fox in a snowy pine forest --ar 1:1",
    "3️⃣ watercolor painting of a red fox, loose brushwork --ar 1:1",
    "4️⃣ cinematic still of a fox crossing a frozen clearing --ar 1:1",
]
SHORTER = ["1️⃣ red fox, snowy forest", "2️⃣ red fox in snow", "3️⃣ fox, deep snow", "4️⃣ red fox", "5️⃣ fox"]
TILE = (80, 60)
COLORS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]


def _errors(status: int, message: str) -> Reply:
    return Reply(status, {"errors": [{"msg": message}]})


class FakeApiframe(FakeBackend):
    """Tasks go pending -> processing (``percentages``, one per fetch) -> finished, or failed."""

    def __init__(self, key: str = "af-key-abcdef123456") -> None:
        super().__init__()
        self.key = key
        self.tasks: dict[str, dict[str, Any]] = {}
        self.fetches: dict[str, int] = {}
        self.percentages = ["20", "60"]
        self.fail_message: str | None = None
        self.banned_word = "bannedword"
        self.counter = itertools.count()
        self.grid: bytes | None = None  # when set, a task's only image is this grid

    def handle(self, request: Recorded) -> Reply:
        if request.headers.get("Authorization") != self.key:
            return _errors(401, "Invalid API key")
        if (request.method, request.path) == ("GET", "/account"):
            return Reply(
                200, {"email": "owner@example.com", "credits": 1200, "total_images": 42, "plan": "basic"}
            )
        if (request.method, request.path) == ("POST", "/fetch"):
            return self._fetch(str((request.json or {}).get("task_id")))
        create = getattr(self, "_create_" + request.path.strip("/").replace("-", "_"), None)
        if request.method != "POST" or create is None:
            return _errors(404, "Not found")
        return create(request.json or {})

    def _task(self, task_type: str, **fields: Any) -> Reply:
        task_id = str(uuid.uuid4())
        self.tasks[task_id] = {"task_id": task_id, "task_type": task_type, **fields}
        return Reply(200, {"task_id": task_id})

    def _parent(self, body: dict[str, Any], indexes: tuple[str, ...] = ("1", "2", "3", "4")) -> Reply | None:
        parent = self.tasks.get(str(body.get("parent_task_id")))
        if parent is None:
            return _errors(400, "Invalid parent_task_id")
        if str(body.get("index")) not in indexes:
            return _errors(400, f"index must be one of {', '.join(indexes)}")
        return None

    def _create_imagine(self, body: dict[str, Any]) -> Reply:
        if not body.get("prompt"):
            return _errors(400, "prompt is required")
        if self.banned_word in body["prompt"]:
            return _errors(400, "Banned prompt detected: bannedword")
        return self._task("imagine", prompt=body["prompt"])

    def _create_upscale_1x(self, body: dict[str, Any]) -> Reply:
        return self._parent(body) or self._task("upscale-1x")

    def _create_upscale_alt(self, body: dict[str, Any]) -> Reply:
        if body.get("type") not in ("subtle", "creative"):
            return _errors(400, "type must be subtle or creative")
        return self._parent({**body, "index": "1"}) or self._task(f"upscale-{body['type']}")

    def _create_variations(self, body: dict[str, Any]) -> Reply:
        return self._parent(body, ("1", "2", "3", "4", "strong", "subtle")) or self._task("variations")

    def _create_describe(self, body: dict[str, Any]) -> Reply:
        if not str(body.get("image_url", "")).startswith("http"):
            return _errors(400, "image_url must be a URL")
        return self._task("describe")

    def _create_blend(self, body: dict[str, Any]) -> Reply:
        urls = body.get("image_urls") or []
        if not 2 <= len(urls) <= 5 or body.get("dimension", "square") not in (
            "square",
            "portrait",
            "landscape",
        ):
            return _errors(400, "image_urls must hold 2 to 5 URLs")
        return self._task("blend")

    def _upscale(self, body: dict[str, Any]) -> Reply | None:
        parent = self.tasks.get(str(body.get("parent_task_id")))
        if parent is None or not parent["task_type"].startswith("upscale"):
            return _errors(400, "parent_task_id must be an upscale task")
        return None

    def _create_pan(self, body: dict[str, Any]) -> Reply:
        if body.get("direction") not in ("up", "down", "left", "right"):
            return _errors(400, "direction must be up, down, left or right")
        return self._upscale(body) or self._task(f"pan-{body['direction']}", prompt=body.get("prompt"))

    def _create_outpaint(self, body: dict[str, Any]) -> Reply:
        try:
            ratio = float(body.get("zoom_ratio"))
        except (TypeError, ValueError):
            ratio = 0
        if not 1 <= ratio <= 2:
            return _errors(400, "zoom_ratio must be between 1 and 2")
        shape = body.get("aspect_ratio")  # a string, as Midjourney's --ar takes it (the docs list no values)
        if shape is not None and not re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", str(shape)):
            return _errors(400, "invalid aspect_ratio")
        return self._upscale(body) or self._task(f"outpaint-{ratio:g}")

    def _create_inpaint(self, body: dict[str, Any]) -> Reply:
        try:
            mask = base64.b64decode(str(body.get("mask", "")), validate=True)
        except (binascii.Error, ValueError):
            mask = b""
        if not mask.startswith(b"\x89PNG"):
            return _errors(400, "mask must be a base64 PNG")
        return self._upscale(body) or self._task("inpaint", prompt=body.get("prompt"))

    def _create_shorten(self, body: dict[str, Any]) -> Reply:
        if not body.get("prompt"):
            return _errors(400, "prompt is required")
        return self._task("shorten")

    def _create_faceswap(self, body: dict[str, Any]) -> Reply:
        urls = (body.get("target_image_url"), body.get("swap_image_url"))
        if not all(str(url or "").startswith("http") for url in urls):
            return _errors(400, "target_image_url and swap_image_url must be URLs")
        return self._task("faceswap")

    def _fetch(self, task_id: str) -> Reply:
        task = self.tasks.get(task_id)
        if task is None:
            return _errors(400, "Invalid task_id")
        step = self.fetches.get(task_id, 0)
        self.fetches[task_id] = step + 1
        if step == 0:
            return Reply(200, {"task_id": task_id, "task_type": task["task_type"], "status": "pending"})
        if step <= len(self.percentages):
            percentage = self.percentages[step - 1]
            return Reply(200, {**task, "status": "processing", "percentage": percentage})
        if self.fail_message:
            return Reply(200, {**task, "status": "failed", "message": self.fail_message})
        return Reply(200, {**task, "status": "finished", **self._result(task)})

    def _result(self, task: dict[str, Any]) -> dict[str, Any]:
        number = next(self.counter)
        if task["task_type"] == "shorten":
            return {"content": SHORTER, "full_content": "## Important tokens\nfox, snow"}
        if task["task_type"].startswith("upscale") or task["task_type"] == "faceswap":
            return {"image_url": self.serve_image(f"/cdn/{number}-up.png", png((TILE[0] * 2, TILE[1] * 2)))}
        if task["task_type"] == "describe":
            return {"content": DESCRIPTIONS}
        if self.grid is not None:
            return {"original_image_url": self.serve_image(f"/cdn/{number}-grid.png", self.grid)}
        urls = [self.serve_image(f"/cdn/{number}-{i}.png", png(TILE, COLORS[i])) for i in range(4)]
        return {"original_image_url": urls[0], "image_urls": urls, "actions": ["upsample1", "variation1"]}
