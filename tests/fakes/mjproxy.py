"""A fake midjourney-proxy: /mj/submit/*, /mj/task/{id}/fetch, /mj/task/list, in two flavours.

``trueai`` is trueai-org/midjourney-proxy (v10 and later): a finished task lists Midjourney's
``buttons``, and /mj/submit/action presses one by ``customId`` (U1-U4 and V1-V4 of a grid; pan, zoom
and the rest of an upscale; custom zoom and vary region, and with ``remix`` on pan, variation and
reroll, answer code 21 and wait in MODAL for /mj/submit/modal, which takes the ``prompt`` (the
parent's when empty) and, for a region, ``maskBase64``); /mj/submit/change is
gone; an unknown task is a 404 with code 3 when submitting and a 204 when fetching.
``novicezk`` is novicezk/midjourney-proxy (v2.6): no buttons, upscale and variation through
/mj/submit/change, an unknown task a code 3 in a 200 when submitting and an empty 200 when fetching.
Both take imagine, describe and blend; trueai also /mj/submit/shorten (the important tokens, then
five numbered prompts) and /mj/insight-face/swap (``sourceBase64`` and ``targetBase64``), and
serves its home page's data at GET /mj/home, which novicezk does not have.
"""

from __future__ import annotations

import itertools
from typing import Any

from fakes import FakeBackend, Recorded, Reply, decode_image, grid_png, png

DESCRIBED = (
    "1️⃣ a red fox standing in deep snow, winter forest, soft light --ar 1:1\n\n"
    "2️⃣ wildlife photograph of a fox in a snowy pine forest --ar 1:1\n\n"
    "3️⃣ watercolor painting of a red fox, loose brushwork --ar 1:1\n\n"
    "4️⃣ cinematic still of a fox crossing a frozen clearing --ar 1:1"
)
SHORTENED = (
    "**IMPORTANT TOKENS**\nred fox, snow\n\n**SHORTENED PROMPTS**\n"
    "1️⃣ red fox in deep snow, winter forest\n\n2️⃣ red fox in deep snow\n\n3️⃣ red fox, snow\n\n"
    "4️⃣ red fox\n\n5️⃣ fox"
)
TILE = (96, 64)
MODAL_BUTTONS = ("MJ::CustomZoom::", "MJ::Inpaint::")
CHANGEABLE = ("IMAGINE", "VARIATION", "REROLL", "BLEND")  # the tasks /mj/submit/change takes


SUBMITS = {  # the /mj/submit/ routes of each flavour
    "trueai": ("imagine", "action", "modal", "describe", "blend", "shorten", "swap_face"),
    "novicezk": ("imagine", "change", "describe", "blend"),
}


def grid_buttons(hash_: str) -> list[dict[str, Any]]:
    """The buttons Midjourney puts under a grid: U1-U4, reroll, V1-V4."""
    ids = [
        *(f"MJ::JOB::upsample::{i}::{hash_}" for i in range(1, 5)),
        f"MJ::JOB::reroll::0::{hash_}::SOLO",
        *(f"MJ::JOB::variation::{i}::{hash_}" for i in range(1, 5)),
    ]
    return [{"customId": custom_id, "emoji": "", "label": "", "type": 2, "style": 2} for custom_id in ids]


def upscale_buttons(hash_: str) -> list[dict[str, Any]]:
    """The buttons Midjourney puts under an upscaled image, as the proxy lists them."""
    ids = [
        f"MJ::JOB::variation::1::{hash_}::SOLO",
        f"MJ::Inpaint::1::{hash_}::SOLO",
        f"MJ::Outpaint::50::1::{hash_}::SOLO",
        f"MJ::Outpaint::75::1::{hash_}::SOLO",
        f"MJ::CustomZoom::{hash_}",
        *(f"MJ::JOB::pan_{d}::1::{hash_}::SOLO" for d in ("left", "right", "up", "down")),
    ]
    return [{"customId": custom_id, "emoji": "", "label": "", "type": 2, "style": 2} for custom_id in ids]


class FakeMidjourneyProxy(FakeBackend):
    """Tasks go NOT_START -> IN_PROGRESS (with ``steps`` of progress) -> SUCCESS, one step per fetch."""

    def __init__(self, secret: str | None = "mj-secret-123", flavor: str = "trueai") -> None:
        super().__init__()
        self.secret = secret
        self.flavor = flavor
        self.tasks: dict[str, dict[str, Any]] = {}
        self.fetches: dict[str, int] = {}
        self.steps = ["0%", "30%", "78%"]
        self.submit_code: int | None = None  # every submission gets this code (21, 22 still make a task)
        self.fail_reason: str | None = None  # tasks end FAILURE with this reason
        self.banned_word = "bannedword"
        self.ids = itertools.count(1712345678901230)
        self.grid: bytes | None = None  # served instead of a grid of four tiles
        self.swap_answer: Any = None  # /mj/insight-face/swap answers this instead, when set
        # trueai with remix mode on (and remix auto-submit off): a pan, variation or reroll waits in
        # MODAL for /mj/submit/modal, as custom zoom and vary region always do
        self.remix = False

    def handle(self, request: Recorded) -> Reply:
        if self.secret and request.headers.get("mj-api-secret") != self.secret:
            return Reply(401, {"code": 401, "description": "unauthorized"})
        if request.method == "POST" and request.path.startswith("/mj/submit/"):
            return self._submit(request.path.removeprefix("/mj/submit/"), request.json or {})
        if (request.method, request.path) == ("POST", "/mj/insight-face/swap") and self.flavor == "trueai":
            if self.swap_answer is not None:
                return Reply(200, self.swap_answer)
            return self._submit("swap_face", request.json or {})
        if (request.method, request.path) == ("GET", "/mj/home") and self.flavor == "trueai":
            return Reply(200, {"success": True, "code": 200, "message": "", "data": {"isRegister": False}})
        if request.method == "GET" and request.path == "/mj/task/list":
            return Reply(200, list(self.tasks.values()))
        if (
            request.method == "GET"
            and request.path.startswith("/mj/task/")
            and request.path.endswith("/fetch")
        ):
            return self._fetch(request.path.split("/")[3])
        return self._no_route(request.path)

    def _no_route(self, path: str) -> Reply:
        """ASP.NET's 404 has no body; Spring's is its error object."""
        if self.flavor == "trueai":
            return Reply(404, b"", content_type="text/plain")
        return Reply(404, {"timestamp": "2024-05-01T00:00:00.000+00:00", "status": 404, "error": "Not Found",
                           "path": path})  # fmt: skip

    def _submit(self, action: str, body: dict[str, Any]) -> Reply:
        if self.submit_code not in (None, 21, 22):
            return Reply(
                200, {"code": self.submit_code, "description": "队列已满，请稍后尝试", "result": None}
            )
        if action not in SUBMITS[self.flavor]:
            return self._no_route(f"/mj/submit/{action}")
        refusal = getattr(self, f"_check_{action}")(body)
        if refusal is not None:  # trueai answers an unknown task with NotFound(...)
            unknown = refusal["code"] == 3 and self.flavor == "trueai"
            return Reply(404 if unknown else 200, refusal)
        if action == "modal":  # an empty prompt is the parent's (SubmitController.Modal)
            task = self.tasks[str(body["taskId"])]
            prompt = body.get("prompt") or self.tasks[task["parentId"]]["prompt"]
            if not prompt:
                return Reply(200, {"code": 4, "description": "prompt不能为空"})
            task.update(status="NOT_START", prompt=prompt, promptEn=prompt, mask=body.get("maskBase64"))
            return Reply(200, {"code": 1, "description": "提交成功", "result": task["id"], "properties": {}})
        task_action = body.get("action", action.upper())
        if action == "action":
            task_action = self._action_of(body["customId"], self.tasks[str(body["taskId"])])
        task_id = str(next(self.ids))
        self.tasks[task_id] = {
            "id": task_id,
            "action": task_action,
            "prompt": body.get("prompt"),
            "promptEn": body.get("prompt"),
            "description": f"/{action} {task_id}",
            "status": "NOT_START",
            "progress": "0%",
            "imageUrl": None,
            "failReason": None,
            "properties": {},
        }
        if action == "action":
            self.tasks[task_id].update(customId=body["customId"], parentId=str(body["taskId"]))
            remixed = self.remix and (
                task_action in ("PAN", "VARIATION") or body["customId"].startswith("MJ::JOB::reroll")
            )
            if body["customId"].startswith(MODAL_BUTTONS) or remixed:  # waits for its modal: code 21
                self.tasks[task_id]["status"] = "MODAL"
                properties = {"finalPrompt": None, "remix": True}
                return Reply(
                    200,
                    {"code": 21, "description": "Waiting for window confirm", "result": task_id,
                     "properties": properties},
                )  # fmt: skip
        code = self.submit_code or 1  # 21: already exists, 22: queued; both name a task to follow
        return Reply(200, {"code": code, "description": "提交成功", "result": task_id, "properties": {}})

    @staticmethod
    def _action_of(custom_id: str, target: dict[str, Any]) -> str:
        """The task action trueai gives a pressed button (SubmitController.Action)."""
        if custom_id.startswith("MJ::JOB::reroll::"):
            return "IMAGINE" if target["action"] == "UPSCALE" else target["action"]
        for prefix, action in (
            ("MJ::JOB::upsample::", "UPSCALE"), ("MJ::JOB::variation::", "VARIATION"),
            ("MJ::JOB::pan_", "PAN"), ("MJ::Outpaint::", "ZOOM"), ("MJ::CustomZoom::", "ZOOM"),
            ("MJ::Inpaint::", "VARIATION"),
        ):  # fmt: skip
            if custom_id.startswith(prefix):
                return action
        return "ACTION"

    def _check_imagine(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if not body.get("prompt"):
            return {"code": 4, "description": "prompt不能为空"}
        if self.banned_word in body["prompt"]:
            return {
                "code": 24,
                "description": "可能包含敏感词",
                "properties": {"bannedWord": self.banned_word},
            }
        for item in body.get("base64Array") or []:
            decode_image(item)
        return None

    def _check_change(self, body: dict[str, Any]) -> dict[str, Any] | None:
        target = self.tasks.get(str(body.get("taskId")))
        if body.get("action") not in ("UPSCALE", "VARIATION", "REROLL"):
            return {"code": 4, "description": "action参数错误"}
        if target is None:
            return {"code": 3, "description": "关联任务不存在或已失效"}
        if target["status"] != "SUCCESS" or target["action"] not in CHANGEABLE:
            return {"code": 4, "description": "关联任务状态错误"}
        return None

    def _check_action(self, body: dict[str, Any]) -> dict[str, Any] | None:
        target = self.tasks.get(str(body.get("taskId")))
        if target is None:
            return {"code": 3, "description": "关联任务不存在或已失效"}
        if body.get("customId") not in [button["customId"] for button in target.get("buttons", [])]:
            return {"code": 4, "description": "customId参数错误"}
        return None

    def _check_modal(self, body: dict[str, Any]) -> dict[str, Any] | None:
        task = self.tasks.get(str(body.get("taskId")))
        if task is None or task["status"] != "MODAL":
            return {"code": 3, "description": "关联任务不存在或已失效"}
        if task["customId"].startswith("MJ::Inpaint::"):
            decode_image("data:image/png;base64," + str(body.get("maskBase64", "")))
        return None

    def _check_shorten(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return None if body.get("prompt") else {"code": 4, "description": "prompt不能为空"}

    def _check_swap_face(self, body: dict[str, Any]) -> dict[str, Any] | None:
        for key in ("sourceBase64", "targetBase64"):
            decode_image(str(body.get(key, "")))
        return None

    def _check_describe(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if not str(body.get("base64", "")).startswith("data:image/"):
            return {"code": 4, "description": "base64格式错误"}
        decode_image(body["base64"])
        return None

    def _check_blend(self, body: dict[str, Any]) -> dict[str, Any] | None:
        images = body.get("base64Array") or []
        if not 2 <= len(images) <= 5 or body.get("dimensions") not in ("PORTRAIT", "SQUARE", "LANDSCAPE"):
            return {"code": 4, "description": "base64List参数错误"}
        for item in images:
            decode_image(item)
        return None

    def _fetch(self, task_id: str) -> Reply:
        task = self.tasks.get(task_id)
        if task is None:  # a null task: ASP.NET answers 204, Spring an empty 200
            return Reply(204 if self.flavor == "trueai" else 200, b"")
        if task["status"] == "MODAL":  # nothing happens until /mj/submit/modal
            return Reply(200, task)
        step = self.fetches.get(task_id, 0)
        self.fetches[task_id] = step + 1
        if step < len(self.steps):
            task.update(status="IN_PROGRESS" if step else "SUBMITTED", progress=self.steps[step])
        elif self.fail_reason:
            task.update(status="FAILURE", failReason=self.fail_reason, progress="")
        elif task["status"] != "SUCCESS":
            self._finish(task)
        return Reply(200, task)

    def _finish(self, task: dict[str, Any]) -> None:
        path = f"/attachments/{task['id']}.png"
        parent = self.tasks.get(task.get("parentId") or "")
        if parent and not task["prompt"]:  # Midjourney's message repeats the prompt
            task.update(prompt=parent["prompt"], promptEn=parent["promptEn"])
        if task["action"] in ("UPSCALE", "SWAP_FACE"):
            self.serve_image(path, png((TILE[0] * 2, TILE[1] * 2), (120, 30, 200)))
            if self.flavor == "trueai":
                task["buttons"] = upscale_buttons(f"hash-{task['id']}")
        elif task["action"] == "SHORTEN":
            task.update(prompt=SHORTENED, promptEn=SHORTENED, properties={"finalPrompt": SHORTENED})
        elif task["action"] == "DESCRIBE":
            self.serve_image(path, png(TILE))
            task.update(prompt=DESCRIBED, promptEn=DESCRIBED, properties={"finalPrompt": DESCRIBED})
        else:
            colors = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
            self.serve_image(path, self.grid or grid_png(TILE, colors))
            if self.flavor == "trueai":
                task["buttons"] = grid_buttons(f"hash-{task['id']}")
        task.update(status="SUCCESS", progress="100%", imageUrl=self.url + path)
