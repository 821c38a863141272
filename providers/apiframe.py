"""An upstream apiframe.ai account (API v1), registered as ``apiframe``.

So an operator can put their own keys, credits and limits in front of a paid account. Tasks are
created with /imagine, /upscale-1x, /variations, /describe, /blend, /pan, /outpaint, /inpaint, /shorten
and /faceswap, and polled with POST /fetch.
The upstream API takes image URLs, not pixels: describe and blend pass on the URLs the user gave
(the gateway has already fetched and checked them). Upscale and variation need the upstream task id
of the parent; an upscale of a parent made elsewhere is done here with real resampling, and a
variation of one fails with a message saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers import (
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
from providers.http import Backend, HttpSettings, error_detail, parse_percent
from providers.prompts import midjourney_prompt, orientation, plain_prompts, split_prompts


@register
class ApiframeProvider(Provider):
    """Midjourney through an apiframe.ai account."""

    name = "apiframe"
    operations = frozenset(
        {"imagine", "variation", "upscale", "blend", "describe", "outpaint", "inpaint", "shorten", "faceswap"}
    )
    required_settings = ("APIFRAME_URL", "APIFRAME_KEY")

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        key = config["APIFRAME_KEY"]
        self.http = Backend(
            self.name,
            config["APIFRAME_URL"],
            HttpSettings.from_config(config, "APIFRAME_TIMEOUT"),
            headers={"Authorization": key},
            secrets=[key],
        )
        self.poll_interval = float(config["APIFRAME_POLL_INTERVAL"])

    # ---- operations --------------------------------------------------------------------------

    def imagine(self, request: ImagineRequest, ctx: JobContext) -> Result:
        """Create an /imagine task and fetch its four images (made with the seed asked, if any)."""
        body = {
            "prompt": midjourney_prompt(request, with_aspect=False),
            "aspect_ratio": request.aspect_ratio,
            "process_mode": self.config["APIFRAME_PROCESS_MODE"],
        }
        result = self._four_images(self._submit("/imagine", body, ctx), ctx)
        result.seed = request.seed
        return result

    def variation(self, request: VariationRequest, ctx: JobContext) -> Result:
        """A /variations task of our own parent task, with the prompt and any new aspect ratio asked for."""
        parent = self.own_ref(request.parent_provider, request.parent_ref, "make variations of")
        body = {"parent_task_id": parent, "index": request.mode or str(request.index)}
        if request.own_prompt:  # else /variations takes the parent task's, with its parameters
            body["prompt"] = request.prompt
        if request.aspect_ratio:
            body["aspect_ratio"] = request.aspect_ratio
        return self._four_images(self._submit("/variations", body, ctx), ctx)

    def upscale(self, request: UpscaleRequest, ctx: JobContext) -> Result:
        """/upscale-1x of a tile of our own grid, /upscale-alt of our own upscale, else resampling here."""
        if request.mode == "highres" or not self.made(request.parent_provider, request.parent_ref):
            ctx.progress(10)
            return Result(image=resample(request))
        if request.mode is None:
            path, body = "/upscale-1x", {"parent_task_id": request.parent_ref, "index": str(request.index)}
        else:
            path, body = "/upscale-alt", {"parent_task_id": request.parent_ref, "type": request.mode}
        task_id = self._submit(path, body, ctx)
        task = self._wait(task_id, ctx)
        return Result(image=self.http.download_image(task.get("image_url"), ctx), ref=task_id)

    def blend(self, request: BlendRequest, ctx: JobContext) -> Result:
        """A /blend task of the user's image URLs."""
        if len(request.urls) != len(request.images):
            raise ProviderError("The apiframe provider blends images by URL, and the URLs are missing.")
        dimension = orientation(request.width, request.height).lower()
        body = {"image_urls": list(request.urls), "dimension": dimension}
        return self._four_images(self._submit("/blend", body, ctx), ctx)

    def describe(self, request: DescribeRequest, ctx: JobContext) -> Result:
        """A /describe task of the user's image URL."""
        if not request.url:
            raise ProviderError("The apiframe provider describes images by URL, and the URL is missing.")
        task = self._wait(self._submit("/describe", {"image_url": request.url}, ctx), ctx)
        content = task.get("content")  # ["1️⃣ a red fox ...", ...]: stored without the numbers
        prompts = plain_prompts(content) if isinstance(content, list) else split_prompts(str(content or ""))
        if len(prompts) < 4:
            raise ProviderError(
                f"The apiframe provider described the image with {len(prompts)} prompt(s), not four."
            )
        return Result(descriptions=prompts[:4])

    def outpaint(self, request: OutpaintRequest, ctx: JobContext) -> Result:
        """A /pan (with a direction) or /outpaint (with a zoom ratio) task of our own upscale."""
        parent = self.own_ref(request.parent_provider, request.parent_ref, "pan or zoom out of")
        if request.direction:
            body = {"parent_task_id": parent, "direction": request.direction}
            path = "/pan"
        else:
            body = {"parent_task_id": parent, "zoom_ratio": request.zoom or 2}
            shape = shape_of(request.width, request.height)
            if shape:
                body["aspect_ratio"] = shape
            path = "/outpaint"
        if request.own_prompt:  # else the parent task's, with its parameters
            body["prompt"] = request.prompt
        return self._four_images(self._submit(path, body, ctx), ctx)

    def inpaint(self, request: InpaintRequest, ctx: JobContext) -> Result:
        """An /inpaint task of our own upscale, with the mask as a base64 PNG."""
        parent = self.own_ref(request.parent_provider, request.parent_ref, "vary a region of")
        body = {"parent_task_id": parent, "mask": mask_base64(request.mask)}
        if request.own_prompt:  # else the parent task's, with its parameters
            body["prompt"] = request.prompt
        return self._four_images(self._submit("/inpaint", body, ctx), ctx)

    def shorten(self, request: ShortenRequest, ctx: JobContext) -> Result:
        """A /shorten task: its content is the shorter prompts."""
        task = self._wait(self._submit("/shorten", {"prompt": request.prompt}, ctx), ctx)
        content = task.get("content")
        text = "\n".join(map(str, content)) if isinstance(content, list) else str(content or "")
        return Result(descriptions=split_prompts(text))

    def faceswap(self, request: FaceSwapRequest, ctx: JobContext) -> Result:
        """A /faceswap task of the user's image URLs."""
        if not request.target_url or not request.swap_url:
            raise ProviderError("The apiframe provider swaps faces by URL, and the URLs are missing.")
        body = {"target_image_url": request.target_url, "swap_image_url": request.swap_url}
        task_id = self._submit("/faceswap", body, ctx)
        task = self._wait(task_id, ctx)
        return Result(image=self.http.download_image(task.get("image_url"), ctx), ref=task_id)

    def check(self) -> str:
        """Read the upstream account."""
        account = self.http.json("GET", "/account", self.http.check_context(), retries=0)
        if not isinstance(account, dict):
            raise ProviderError("The apiframe provider sent an unexpected answer to /account.")
        credits = account.get("credits")
        return f"account answering; {credits} credits left" if credits is not None else "account answering"

    # ---- helpers -----------------------------------------------------------------------------

    def _submit(self, path: str, body: dict[str, Any], ctx: JobContext) -> str:
        answer = self.http.json("POST", path, ctx, json=body, idempotent=False)  # a task, billed upstream
        task_id = answer.get("task_id") if isinstance(answer, dict) else None
        if not task_id:
            detail = self.http.scrub(error_detail(answer) or "no task id in the answer")
            raise ProviderError(f"The apiframe provider did not accept the task: {detail}")
        return str(task_id)

    def _wait(self, task_id: str, ctx: JobContext) -> dict[str, Any]:
        """Poll POST /fetch until the task is finished (returned) or failed (raised)."""

        def check_once() -> tuple[bool, float | None, dict[str, Any]]:
            task = self.http.json("POST", "/fetch", ctx, json={"task_id": task_id})
            if not isinstance(task, dict):
                raise ProviderError("The apiframe provider sent an unexpected answer to /fetch.")
            status = task.get("status")
            if status == "failed":
                reason = self.http.scrub(str(task.get("message") or error_detail(task) or "no reason given"))
                raise ProviderError(f"The apiframe provider's task failed: {reason}")
            return status == "finished", parse_percent(task.get("percentage")), task

        return self.http.poll(ctx, check_once, self.poll_interval)

    def _four_images(self, task_id: str, ctx: JobContext) -> Result:
        """Wait for a four-image task; fetch its four images, or its grid when only that is given."""
        task = self._wait(task_id, ctx)
        urls = task.get("image_urls")
        if isinstance(urls, list) and len(urls) == 4:
            return Result(tiles=[self.http.download_image(url, ctx) for url in urls], ref=task_id)
        return Result(grid=self.http.download_grid(task.get("original_image_url"), ctx), ref=task_id)
