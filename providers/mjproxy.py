"""Midjourney through the open-source midjourney-proxy (novicezk), registered as ``midjourney-proxy``.

Tasks are submitted under /mj/submit/ and polled at /mj/task/{id}/fetch; a finished task's
``imageUrl`` is the 2x2 grid, which the gateway splits into the four tiles. Upscale and variation of
a job this provider made use the proxy's /mj/submit/change with the upstream task id. For a parent
made elsewhere (or one the proxy has forgotten), a variation is an imagine with the tile as image
prompt, and an upscale is done here with real resampling: the proxy cannot upscale a foreign image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image

from providers import (
    BlendRequest,
    DescribeRequest,
    ImagineRequest,
    JobContext,
    Provider,
    ProviderError,
    Result,
    UpscaleRequest,
    VariationRequest,
    register,
    resample,
)
from providers.http import Backend, HttpSettings, data_url, parse_percent
from providers.prompts import midjourney_prompt, orientation, split_prompts

ACCEPTED = (1, 21, 22)  # submitted, already exists (that task is used), queued
NOT_FOUND, VALIDATION_ERROR, QUEUE_FULL, BANNED_PROMPT = 3, 4, 23, 24
FAILED = ("FAILURE", "CANCEL")
VARIATION_PROMPT = "a variation of this image"


class ParentUnavailable(ProviderError):
    """The proxy no longer knows the parent task, or will not change it."""


@register
class MidjourneyProxyProvider(Provider):
    """Midjourney via a midjourney-proxy server the operator runs."""

    name = "midjourney-proxy"
    operations = frozenset({"imagine", "variation", "upscale", "blend", "describe"})
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

    # ---- operations --------------------------------------------------------------------------

    def imagine(self, request: ImagineRequest, ctx: JobContext) -> Result:
        """Submit /imagine with Midjourney parameters and fetch the grid."""
        task_id = self._submit("imagine", {"prompt": midjourney_prompt(request)}, ctx)
        return self._grid(task_id, ctx)

    def variation(self, request: VariationRequest, ctx: JobContext) -> Result:
        """VARIATION of a tile of our own grid, else an imagine with the image as image prompt."""
        if request.mode is None and self.made(request.parent_provider, request.parent_ref):
            try:
                return self._grid(self._change("VARIATION", request.parent_ref, request.index, ctx), ctx)
            except ParentUnavailable:
                pass
        body = {"prompt": request.prompt or VARIATION_PROMPT, "base64Array": [data_url(request.image)]}
        return self._grid(self._submit("imagine", body, ctx), ctx)

    def upscale(self, request: UpscaleRequest, ctx: JobContext) -> Result:
        """UPSCALE of a tile of our own grid, else real resampling here."""
        if request.mode is None and self.made(request.parent_provider, request.parent_ref):
            try:
                task_id = self._change("UPSCALE", request.parent_ref, request.index, ctx)
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
            "dimensions": orientation(request.images[0]),
        }
        return self._grid(self._submit("blend", body, ctx), ctx)

    def describe(self, request: DescribeRequest, ctx: JobContext) -> Result:
        """Submit /describe and split the proxy's four prompts."""
        task = self._wait(self._submit("describe", {"base64": data_url(request.image)}, ctx), ctx)
        properties = task.get("properties") if isinstance(task.get("properties"), dict) else {}
        text = properties.get("finalPrompt") or task.get("prompt") or ""
        prompts = split_prompts(text) if isinstance(text, str) else []
        if len(prompts) < 4:
            raise ProviderError(
                f"The midjourney-proxy provider described the image with {len(prompts)} prompt(s), not four."
            )
        return Result(descriptions=prompts[:4])

    def check(self) -> str:
        """List the proxy's tasks (which needs the secret)."""
        tasks = self.http.json("GET", "/mj/task/list", self.http.check_context(), retries=0)
        if not isinstance(tasks, list):
            raise ProviderError("The midjourney-proxy provider sent an unexpected answer to /mj/task/list.")
        return f"answering; {len(tasks)} task(s) known"

    # ---- helpers -----------------------------------------------------------------------------

    def _submit(self, action: str, body: dict[str, Any], ctx: JobContext) -> str:
        """Submit a task; returns its id, or raises with the proxy's reason."""
        answer = self.http.json("POST", f"/mj/submit/{action}", ctx, json=body)
        if not isinstance(answer, dict):
            raise ProviderError("The midjourney-proxy provider sent an unexpected answer to a submission.")
        code, result = answer.get("code"), answer.get("result")
        if code in ACCEPTED and result:
            return str(result)
        description = self.http.scrub(str(answer.get("description") or "no reason given"))
        if code == QUEUE_FULL:
            raise ProviderError("The midjourney-proxy provider's queue is full; try again later.")
        if code == BANNED_PROMPT:
            raise ProviderError(
                "The midjourney-proxy provider refused the prompt: it may contain banned words."
            )
        if action == "change" and code in (NOT_FOUND, VALIDATION_ERROR):
            raise ParentUnavailable(description)
        raise ProviderError(f"The midjourney-proxy provider refused the task (code {code}): {description}")

    def _change(self, action: str, task_id: str | None, index: int, ctx: JobContext) -> str:
        return self._submit("change", {"action": action, "index": index, "taskId": task_id}, ctx)

    def _wait(self, task_id: str, ctx: JobContext) -> dict[str, Any]:
        """Poll the task until it succeeds (returned) or fails (raised)."""

        def check_once() -> tuple[bool, float | None, dict[str, Any]]:
            task = self.http.json("GET", f"/mj/task/{task_id}/fetch", ctx)
            if not isinstance(task, dict) or not task:
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
        grid: Image.Image = self.http.download_image(task.get("imageUrl"), ctx)
        return Result(grid=grid, ref=task_id)
