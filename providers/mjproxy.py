"""Midjourney through an open-source midjourney-proxy, registered as ``midjourney-proxy``.

Two forks speak the same /mj API: trueai-org/midjourney-proxy, which does every operation, and
novicezk/midjourney-proxy, which has no buttons, so no pan, zoom, vary region, shorten or face swap.
Which one answers is asked once (only trueai serves GET /mj/home) unless APIFRAME_MJPROXY_FLAVOR
says; the operations the provider claims follow, so the others are refused or routed elsewhere.

Tasks are submitted under /mj/submit/ and polled at /mj/task/{id}/fetch; a finished task's
``imageUrl`` is the 2x2 grid, which the gateway splits into the four tiles. Pan, zoom out and vary
region press the buttons of an upscale this provider made (/mj/submit/action with the button's
customId; custom zoom and vary region then fill in /mj/submit/modal, with ``maskBase64`` for a
region; with remix mode on, trueai holds a pan or variation for its modal too, and gets the
parent's prompt); shorten is /mj/submit/shorten and face swap /mj/insight-face/swap. Upscale and
variation of a job this provider made press the grid's U or V button where the proxy lists
buttons (trueai, which dropped /mj/submit/change in v10), else use /mj/submit/change with the
upstream task id (novicezk). For a parent made elsewhere (or one the proxy has forgotten, or will
not change), a variation is an imagine with the tile as image prompt, and an upscale is done here
with real resampling: the proxy cannot upscale a foreign image.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from imaging import MIDJOURNEY_ASPECT_RATIOS, nearest_aspect_ratio
from providers import (
    OPERATIONS,
    BlendRequest,
    DescribeRequest,
    FaceSwapRequest,
    ImagineRequest,
    InpaintRequest,
    JobContext,
    OutpaintRequest,
    Provider,
    ProviderError,
    Result,
    ShortenRequest,
    UpscaleRequest,
    VariationRequest,
    register,
    resample,
)
from providers.canvas import mask_base64, shape_of
from providers.http import Backend, HttpSettings, HttpStatusError, data_url, parse_percent
from providers.prompts import midjourney_prompt, orientation, remixed, split_prompts

EXISTED = 21  # already exists (that task is used), or (trueai) a task waiting for /mj/submit/modal
log = logging.getLogger(__name__)

ACCEPTED = (1, EXISTED, 22)  # submitted, existed, queued
NOT_FOUND, VALIDATION_ERROR, QUEUE_FULL, BANNED_PROMPT = 3, 4, 23, 24
FAILED = ("FAILURE", "CANCEL")
VARIATION_PROMPT = "a variation of this image"
# The buttons of a grid, by the start of their customId: U1-U4 and V1-V4.
UPSAMPLE, VARY = "MJ::JOB::upsample::{index}::", "MJ::JOB::variation::{index}::"
# The buttons of an upscaled image, by the start of their customId: Midjourney's pan and zoom out
# buttons (2x and 1.5x), custom zoom and vary region (both open a modal: /mj/submit/modal).
PAN = "MJ::JOB::pan_{direction}::"
ZOOMS = {2.0: "MJ::Outpaint::50::", 1.5: "MJ::Outpaint::75::"}
CUSTOM_ZOOM, VARY_REGION = "MJ::CustomZoom::", "MJ::Inpaint::"
# What each fork can do: novicezk has no /action, /modal, /shorten or /mj/insight-face/swap.
FLAVORS = {
    "trueai": frozenset(OPERATIONS),
    "novicezk": frozenset({"imagine", "variation", "upscale", "blend", "describe"}),
}
_NUMBERED = re.compile(r"[1-9]\ufe0f?\u20e3")


class ParentUnavailable(ProviderError):
    """The proxy no longer knows the parent task, or will not change it."""


@register
class MidjourneyProxyProvider(Provider):
    """Midjourney via a midjourney-proxy server the operator runs."""

    name = "midjourney-proxy"
    operations = FLAVORS["trueai"]  # until the proxy is known to be novicezk's
    required_settings = ("MJPROXY_URL",)

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        secret = config.get("MJPROXY_SECRET")
        self.http = Backend(
            self.name,
            config["MJPROXY_URL"],
            HttpSettings.from_config(config, "MJPROXY_TIMEOUT"),
            headers={"mj-api-secret": secret} if secret else {},
            secrets=[secret] if secret else [],
        )
        self.poll_interval = float(config["MJPROXY_POLL_INTERVAL"])
        flavor = config.get("MJPROXY_FLAVOR") or "auto"
        self.flavor: str | None = None if flavor == "auto" else flavor  # None: not asked yet

    def supports(self, operation: str) -> bool:
        """What the proxy's fork can do; every operation while it is not known yet."""
        return operation in FLAVORS.get(self.flavor or "", self.operations)

    def run(self, operation: str, request: Any, ctx: JobContext) -> Result:
        """Learn which proxy answers (once), then do ``operation`` if it can."""
        if self.flavor is None:
            self._detect(ctx)
        return super().run(operation, request, ctx)

    # ---- operations --------------------------------------------------------------------------

    def imagine(self, request: ImagineRequest, ctx: JobContext) -> Result:
        """Submit /imagine with Midjourney parameters and fetch the grid, made with the seed asked, if any."""
        result = self._grid(self._submit("imagine", {"prompt": midjourney_prompt(request)}, ctx), ctx)
        result.seed = request.seed
        return result

    def variation(self, request: VariationRequest, ctx: JobContext) -> Result:
        """VARIATION of a tile of our own grid, else (or to a new aspect ratio) an imagine with the image as
        image prompt, in its shape."""
        own_tile = request.mode is None and self.made(request.parent_provider, request.parent_ref)
        if own_tile and not request.aspect_ratio:
            try:
                parent = str(request.parent_ref)
                return self._grid(self._change("VARIATION", parent, request.index, ctx, _own(request)), ctx)
            except ParentUnavailable:
                pass
        shape = nearest_aspect_ratio(request.image, MIDJOURNEY_ASPECT_RATIOS)
        prompt = f"{request.prompt or VARIATION_PROMPT} --ar {shape}"
        body = {"prompt": prompt, "base64Array": [data_url(request.image)]}
        return self._grid(self._submit("imagine", body, ctx), ctx)

    def upscale(self, request: UpscaleRequest, ctx: JobContext) -> Result:
        """UPSCALE of a tile of our own grid, else real resampling here."""
        if request.mode is None and self.made(request.parent_provider, request.parent_ref):
            try:
                task_id = self._change("UPSCALE", str(request.parent_ref), request.index, ctx)
            except ParentUnavailable:
                pass
            else:
                task = self._wait(task_id, ctx)
                return Result(image=self.http.download_image(task.get("imageUrl"), ctx), ref=task_id)
        ctx.progress(10)
        return Result(image=resample(request))

    def blend(self, request: BlendRequest, ctx: JobContext) -> Result:
        """Submit /blend of the inputs as data URLs."""
        body = {
            "base64Array": [data_url(image) for image in request.images],
            "dimensions": orientation(request.width, request.height),
        }
        return self._grid(self._submit("blend", body, ctx), ctx)

    def describe(self, request: DescribeRequest, ctx: JobContext) -> Result:
        """Submit /describe and split the proxy's four prompts."""
        task = self._wait(self._submit("describe", {"base64": data_url(request.image)}, ctx), ctx)
        text = _properties(task).get("finalPrompt") or task.get("prompt") or ""
        prompts = split_prompts(text) if isinstance(text, str) else []
        if len(prompts) < 4:
            raise ProviderError(
                f"The midjourney-proxy provider described the image with {len(prompts)} prompt(s), not four."
            )
        return Result(descriptions=prompts[:4])

    def outpaint(self, request: OutpaintRequest, ctx: JobContext) -> Result:
        """Press pan, zoom out 2x or 1.5x on our own upscale; any other zoom is a custom zoom modal."""
        parent = self._own_parent(request.parent_provider, request.parent_ref, "pan or zoom out of", ctx)
        shape = shape_of(request.width, request.height)
        same_shape = shape_of(request.image.width, request.image.height) == shape
        if request.direction:
            custom_id = self._button(parent, PAN.format(direction=request.direction))
            return self._grid(self._action(parent, custom_id, ctx, prompt=_own(request)), ctx)
        zoom = float(request.zoom or 2)
        if zoom in ZOOMS and same_shape:
            button = self._button(parent, ZOOMS[zoom])
            return self._grid(self._action(parent, button, ctx, prompt=_own(request)), ctx)
        modal = self._action(parent, self._button(parent, CUSTOM_ZOOM), ctx, fill_modal=False)
        prompt = remixed(_own(request), _prompt(parent), zoom=f"{zoom:g}", ar=shape)
        return self._grid(self._submit("modal", {"taskId": modal, "prompt": prompt}, ctx), ctx)

    def inpaint(self, request: InpaintRequest, ctx: JobContext) -> Result:
        """Press vary region on our own upscale and send the mask to the modal."""
        parent = self._own_parent(request.parent_provider, request.parent_ref, "vary a region of", ctx)
        modal = self._action(parent, self._button(parent, VARY_REGION), ctx, fill_modal=False)
        prompt = remixed(_own(request), _prompt(parent))
        body = {"taskId": modal, "maskBase64": mask_base64(request.mask), "prompt": prompt}
        return self._grid(self._submit("modal", body, ctx), ctx)

    def shorten(self, request: ShortenRequest, ctx: JobContext) -> Result:
        """Submit /shorten; the shorter prompts are the numbered items of its answer."""
        task = self._wait(self._submit("shorten", {"prompt": request.prompt}, ctx), ctx)
        text = str(_properties(task).get("finalPrompt") or task.get("prompt") or "")
        first = _NUMBERED.search(text)  # the important tokens come before the numbered prompts
        return Result(descriptions=split_prompts(text[first.start() :] if first else text))

    def faceswap(self, request: FaceSwapRequest, ctx: JobContext) -> Result:
        """Submit /mj/insight-face/swap with both images; the result is one image."""
        body = {"sourceBase64": data_url(request.swap), "targetBase64": data_url(request.target)}
        answer = self.http.json("POST", "/mj/insight-face/swap", ctx, json=body, idempotent=False)
        if not isinstance(answer, dict) or answer.get("code") not in ACCEPTED or not answer.get("result"):
            description = answer.get("description") if isinstance(answer, dict) else None
            detail = self.http.scrub(str(description or "no reason given"))
            raise ProviderError(f"The midjourney-proxy provider refused the face swap: {detail}")
        task_id = str(answer["result"])
        task = self._wait(task_id, ctx)
        return Result(image=self.http.download_image(task.get("imageUrl"), ctx), ref=task_id)

    def check(self) -> str:
        """List the proxy's tasks (which needs the secret), and learn which proxy it is."""
        ctx = self.http.check_context()
        tasks = self.http.json("GET", "/mj/task/list", ctx, retries=0)
        if not isinstance(tasks, list):
            raise ProviderError("The midjourney-proxy provider sent an unexpected answer to /mj/task/list.")
        if self.flavor is None:
            self._detect(ctx, retries=0)
        return f"answering ({self.flavor}); {len(tasks)} task(s) known"

    # ---- helpers -----------------------------------------------------------------------------

    def _detect(self, ctx: JobContext, retries: int | None = None) -> None:
        """Which fork answers: only trueai's proxy serves GET /mj/home (novicezk's answers 404). Any other
        failure (credentials, a proxy in front, an outage) leaves it unknown, to be asked again."""
        try:
            self.http.request("GET", "/mj/home", ctx, retries=retries)
        except HttpStatusError as exc:
            if exc.status != 404:
                log.warning("midjourney-proxy: cannot tell which proxy answers (%s); asking again later", exc)
                return
            self.flavor = "novicezk"
        else:
            self.flavor = "trueai"
        can = ", ".join(sorted(FLAVORS[self.flavor]))
        log.info("midjourney-proxy: the proxy is %s's, which can %s", self.flavor, can)

    def _submit(self, action: str, body: dict[str, Any], ctx: JobContext) -> str:
        """Submit a task; returns its id, or raises with the proxy's reason."""
        return str(self._accepted(action, body, ctx)["result"])

    def _accepted(self, action: str, body: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        """Submit a task; returns the proxy's answer accepting it, or raises with the proxy's reason."""
        try:
            # a task, run on the operator's Midjourney account each time it arrives
            answer = self.http.json("POST", f"/mj/submit/{action}", ctx, json=body, idempotent=False)
        except HttpStatusError as exc:
            # trueai answers an unknown parent with HTTP 404 (code 3), and has no /change since v10
            if action in ("change", "action") and exc.status == 404:
                raise ParentUnavailable(str(exc)) from None
            raise
        if not isinstance(answer, dict):
            raise ProviderError("The midjourney-proxy provider sent an unexpected answer to a submission.")
        code, result = answer.get("code"), answer.get("result")
        if code in ACCEPTED and result:
            return answer
        description = self.http.scrub(str(answer.get("description") or "no reason given"))
        if code == QUEUE_FULL:
            raise ProviderError("The midjourney-proxy provider's queue is full; try again later.")
        if code == BANNED_PROMPT:
            raise ProviderError(
                "The midjourney-proxy provider refused the prompt: it may contain banned words."
            )
        if (action, code) in (("change", NOT_FOUND), ("change", VALIDATION_ERROR), ("action", NOT_FOUND)):
            raise ParentUnavailable(description)
        raise ProviderError(f"The midjourney-proxy provider refused the task (code {code}): {description}")

    def _own_parent(
        self, provider: str | None, ref: str | None, doing: str, ctx: JobContext
    ) -> dict[str, Any]:
        """The proxy's task of a parent this provider made, or ProviderError saying it cannot."""
        return self._parent(self.own_ref(provider, ref, doing), ctx)

    def _fetch(self, task_id: str, ctx: JobContext) -> dict[str, Any] | None:
        """The proxy's task, or None if it does not know it (novicezk answers an empty 200, trueai 204)."""
        response = self.http.request("GET", f"/mj/task/{task_id}/fetch", ctx)
        if response.status_code == 204 or not response.content.strip():
            return None
        task = self.http.decode(response)
        return task if isinstance(task, dict) and task else None

    def _parent(self, task_id: str, ctx: JobContext) -> dict[str, Any]:
        """The parent task as the proxy has it, or ParentUnavailable."""
        task = self._fetch(task_id, ctx)
        if task is None:
            raise ParentUnavailable(f"The midjourney-proxy provider no longer knows task {task_id}.")
        return {**task, "id": task_id}

    @staticmethod
    def _buttons(task: dict[str, Any]) -> list[str]:
        """The customIds of a task's buttons (trueai lists them; novicezk has none)."""
        buttons = task.get("buttons")
        return [
            str(button.get("customId", ""))
            for button in (buttons if isinstance(buttons, list) else [])
            if isinstance(button, dict)
        ]

    def _button(self, task: dict[str, Any], prefix: str) -> str:
        """The customId of the task's button that starts with ``prefix``."""
        for custom_id in self._buttons(task):
            if custom_id.startswith(prefix):
                return custom_id
        raise ProviderError(
            f"The midjourney-proxy provider's task {task['id']} has no {prefix.strip(':')} button."
        )

    def _action(
        self,
        parent: dict[str, Any],
        custom_id: str,
        ctx: JobContext,
        *,
        fill_modal: bool = True,
        prompt: str | None = None,
    ) -> str:
        """Press a button of the parent task: /mj/submit/action; returns the task to follow.

        With remix mode on, trueai holds a pan, variation or reroll in MODAL (code 21, ``remix``)
        until /mj/submit/modal sends its prompt: the parent's, remixed with ``prompt``, unless the caller
        fills the modal itself. Without remix, a button takes no prompt."""
        answer = self._accepted("action", {"taskId": parent["id"], "customId": custom_id}, ctx)
        task_id = str(answer["result"])
        if fill_modal and answer.get("code") == EXISTED and _properties(answer).get("remix"):
            return self._submit("modal", {"taskId": task_id, "prompt": remixed(prompt, _prompt(parent))}, ctx)
        return task_id

    def _change(
        self, action: str, task_id: str, index: int, ctx: JobContext, prompt: str | None = None
    ) -> str:
        """UPSCALE or VARIATION of a tile of our grid: its U or V button where the proxy lists buttons
        (trueai, which has no /change since v10; ``prompt`` for a remix modal), else /mj/submit/change
        (novicezk)."""
        parent = self._parent(task_id, ctx)
        if self._buttons(parent):
            prefix = UPSAMPLE if action == "UPSCALE" else VARY
            return self._action(parent, self._button(parent, prefix.format(index=index)), ctx, prompt=prompt)
        return self._submit("change", {"action": action, "index": index, "taskId": task_id}, ctx)

    def _wait(self, task_id: str, ctx: JobContext) -> dict[str, Any]:
        """Poll the task until it succeeds (returned) or fails (raised)."""

        def check_once() -> tuple[bool, float | None, dict[str, Any]]:
            task = self._fetch(task_id, ctx)
            if task is None:
                raise ProviderError(f"The midjourney-proxy provider no longer knows task {task_id}.")
            status = task.get("status")
            if status in FAILED:
                reason = self.http.scrub(str(task.get("failReason") or "no reason given"))
                raise ProviderError(f"The midjourney-proxy provider's task failed: {reason}")
            return status == "SUCCESS", parse_percent(task.get("progress")), task

        return self.http.poll(ctx, check_once, self.poll_interval)

    def _grid(self, task_id: str, ctx: JobContext) -> Result:
        """Wait for a four-image task and fetch its grid."""
        task = self._wait(task_id, ctx)
        return Result(grid=self.http.download_grid(task.get("imageUrl"), ctx), ref=task_id)


def _own(request: VariationRequest | OutpaintRequest | InpaintRequest) -> str | None:
    """The job's own prompt, for a modal; None when its prompt is its parent's (the task's own is whole)."""
    return request.prompt if request.own_prompt else None


def _prompt(task: dict[str, Any]) -> str:
    """The prompt a task was made with, Midjourney's parameters and all."""
    return str(task.get("prompt") or _properties(task).get("finalPrompt") or "")


def _properties(answer: dict[str, Any]) -> dict[str, Any]:
    """The ``properties`` object of a task or a submission's answer (empty when missing)."""
    properties = answer.get("properties")
    return properties if isinstance(properties, dict) else {}
