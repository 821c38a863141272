"""AUTOMATIC1111 / Forge / SD.Next, started with ``--api``: the ``/sdapi/v1`` endpoints.

imagine -> txt2img with batch_size 4; variation -> img2img of the chosen tile; blend -> img2img of an
even mix of the inputs; pan and zoom out -> img2img inpainting of the padded canvas, masked white where
it is new; vary region -> img2img inpainting with the user's mask (the pixels outside a mask are put
back as they were); upscale -> extra-single-image; describe -> interrogate (clip, and deepdanbooru
when the server has it) made into four prompts. Progress comes from /progress while a generation
runs. Each generation is sent with a task id of its own (``force_task_id``); /sdapi/v1/interrupt stops
whatever the server runs, so a cancelled or timed-out job sends it only when /internal/progress says
the server is running that task.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

import imaging
from imaging import png_base64
from providers import (
    BlendRequest,
    DescribeRequest,
    ImagineRequest,
    InpaintRequest,
    JobAborted,
    JobContext,
    OutpaintRequest,
    Provider,
    ProviderError,
    Result,
    UpscaleRequest,
    VariationRequest,
    in_mode,
    register,
)
from providers.analysis import aspect_ratio
from providers.canvas import keep_original, padded
from providers.http import RETRY_STATUSES, Backend, Deadline, HttpSettings, HttpStatusError

# A 500 from a generation, an upscale or an interrogation is the same the next time (CUDA out of
# memory, an unknown upscaler, an image it cannot decode): retrying would only run the GPU again.
WORK_RETRY_STATUSES = RETRY_STATUSES - {500}

log = logging.getLogger(__name__)

BATCH = 4
INPAINT_NEW, INPAINT_REGION = 1.0, 0.75  # denoising: the new area of a pan or zoom; a region to vary
INTERRUPT_SECONDS = 5.0
PROGRESS_TIMEOUT = 5.0  # a progress read (beside the generation, never holding up the job) gives up
# Added to a prompt so that the four describe answers differ even when the server has little to say.
FLAVOURS = ("cinematic lighting", "highly detailed", "soft focus", "wide angle")


@dataclass
class Task:
    """One generation as the server queues it: the id it is sent with, and what progress reads saw."""

    id: str = field(default_factory=lambda: f"task(apiframe-{uuid.uuid4().hex})")
    running: bool | None = None  # the server ran this task at the last read; None: it did not say
    interrupted: bool = False  # the server's interrupt flag was up while it ran this task


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``"user:password"`` -> ``("user", "password")``; None when unset."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise ValueError("APIFRAME_SDWEBUI_AUTH must look like USER:PASSWORD")
    return user, password


@register
class SdWebUIProvider(Provider):
    """Stable Diffusion on the operator's own GPU, through the AUTOMATIC1111 API."""

    name = "sdwebui"
    operations = frozenset({"imagine", "variation", "upscale", "blend", "describe", "outpaint", "inpaint"})
    required_settings = ("SDWEBUI_URL",)

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        auth = parse_auth(config.get("SDWEBUI_AUTH"))
        self.http = Backend(
            self.name,
            config["SDWEBUI_URL"],
            HttpSettings.from_config(config, "SDWEBUI_TIMEOUT"),
            auth=auth,
            secrets=[auth[1]] if auth else [],
        )
        self.poll_interval = float(config["SDWEBUI_POLL_INTERVAL"])

    # ---- operations --------------------------------------------------------------------------

    def imagine(self, request: ImagineRequest, ctx: JobContext) -> Result:
        """txt2img with a batch of four at the tile size."""
        payload = self._generation(request.prompt, request.width, request.height, request.seed)
        return self._generate("txt2img", payload, ctx, (request.width, request.height))

    def variation(self, request: VariationRequest, ctx: JobContext) -> Result:
        """img2img of the chosen tile, four times, at the request's strength (default: the setting's)."""
        width, height = _multiple_of_8(request.image.size)
        payload = self._generation(request.prompt or "", width, height, request.seed)
        payload.update(
            init_images=[png_base64(request.image)],
            denoising_strength=request.strength_or(float(self.config["SDWEBUI_DENOISING_STRENGTH"])),
        )
        return self._generate("img2img", payload, ctx, (width, height))

    def blend(self, request: BlendRequest, ctx: JobContext) -> Result:
        """img2img of an even mix of the inputs, four times."""
        width, height = request.width, request.height
        mixed = imaging.average(request.images, width, height)
        payload = self._generation("", width, height, request.seed)
        payload.update(
            init_images=[png_base64(mixed)], denoising_strength=float(self.config["SDWEBUI_BLEND_STRENGTH"])
        )
        return self._generate("img2img", payload, ctx, (width, height))

    def outpaint(self, request: OutpaintRequest, ctx: JobContext) -> Result:
        """Inpaint the new area of the padded canvas; the parent's pixels are put back unchanged."""
        canvas, mask = padded(request.image, request.pad)
        result = self._inpaint(canvas, mask, request.prompt, request.seed, INPAINT_NEW, ctx)
        tiles = [keep_original(tile, request.image, request.pad) for tile in result.tiles]
        size = (request.width, request.height)
        result.tiles = [
            tile if tile.size == size else tile.resize(size, Image.Resampling.LANCZOS) for tile in tiles
        ]
        return result

    def inpaint(self, request: InpaintRequest, ctx: JobContext) -> Result:
        """Inpaint where the mask is white; outside it, the pixels stay as they were."""
        image = request.image.convert("RGB")
        result = self._inpaint(image, request.mask, request.prompt, request.seed, INPAINT_REGION, ctx)
        mask = request.mask.convert("L")
        result.tiles = [Image.composite(tile.resize(image.size), image, mask) for tile in result.tiles]
        return result

    def upscale(self, request: UpscaleRequest, ctx: JobContext) -> Result:
        """The server's upscaler, by ``request.factor`` (a creative upscale's detail invented here)."""
        payload = {
            "image": png_base64(request.image),
            "resize_mode": 0,
            "upscaling_resize": request.factor,
            "upscaler_1": self.config["SDWEBUI_UPSCALER"],
        }
        ctx.progress(10)
        body = self.http.json(
            "POST", "/sdapi/v1/extra-single-image", ctx, json=payload, retry_statuses=WORK_RETRY_STATUSES
        )
        return Result(image=in_mode(self.http.image_from_base64(self.http.field(body, "image")), request))

    def describe(self, request: DescribeRequest, ctx: JobContext) -> Result:
        """Four prompts from the server's interrogators."""
        image = png_base64(request.image)
        captions = {}
        for model in _names(self.config["SDWEBUI_INTERROGATORS"]):
            caption = self._interrogate(image, model, ctx)
            if caption:
                captions[model] = caption
            ctx.progress(30 * len(captions))
        if not captions:
            raise ProviderError(
                "The sdwebui provider could not describe the image (no interrogator answered)."
            )
        return Result(descriptions=four_prompts(captions, request.image.size))

    def check(self) -> str:
        """List the checkpoints (and confirm the configured one is among them)."""
        try:
            models = self.http.json("GET", "/sdapi/v1/sd-models", self.http.check_context(), retries=0)
        except HttpStatusError as exc:
            if exc.status != 404:
                raise
            raise ProviderError(
                "The sdwebui provider has no API at APIFRAME_SDWEBUI_URL (/sdapi/v1/sd-models: HTTP 404): "
                "start the web UI with --api (COMMANDLINE_ARGS in webui-user), or check the URL."
            ) from None
        if not isinstance(models, list):
            raise ProviderError("The sdwebui provider sent an unexpected answer to /sdapi/v1/sd-models.")
        wanted = self.config.get("SDWEBUI_MODEL")
        models = [model for model in models if isinstance(model, dict)]
        if wanted and not any(wanted in checkpoint_aliases(model) for model in models):
            titles = ", ".join(str(model.get("title")) for model in models[:10]) or "none"
            raise ProviderError(
                f"The sdwebui provider has no model called {wanted!r} (a generation would quietly use the "
                f"loaded one); it has: {titles}."
            )
        return f"{len(models)} model(s) available"

    # ---- helpers -----------------------------------------------------------------------------

    def _generation(self, prompt: str, width: int, height: int, seed: int | None) -> dict[str, Any]:
        """The txt2img/img2img fields every generation sends."""
        payload: dict[str, Any] = {
            "prompt": prompt,
            "negative_prompt": self.config["SDWEBUI_NEGATIVE_PROMPT"] or "",
            "seed": -1 if seed is None else seed,
            "batch_size": BATCH,
            "n_iter": 1,
            "steps": int(self.config["SDWEBUI_STEPS"]),
            "cfg_scale": float(self.config["SDWEBUI_CFG_SCALE"]),
            "width": width,
            "height": height,
            "sampler_name": self.config["SDWEBUI_SAMPLER"],
            "send_images": True,
            "save_images": False,
            # server settings that would put an inpainting mask after each image, or a grid first
            "override_settings": {"return_mask": False, "return_mask_composite": False, "return_grid": False},
        }
        if self.config.get("SDWEBUI_MODEL"):
            payload["override_settings"]["sd_model_checkpoint"] = self.config["SDWEBUI_MODEL"]
        return payload

    def _generate(
        self, endpoint: str, payload: dict[str, Any], ctx: JobContext, size: tuple[int, int]
    ) -> Result:
        """Run a generation, reporting progress, interrupting the server if the job stops."""
        path = f"/sdapi/v1/{endpoint}"
        task = Task()
        payload["force_task_id"] = task.id
        try:
            body = self.http.while_running(
                ctx,
                lambda detached: self.http.json(
                    "POST", path, detached, json=payload, retry_statuses=WORK_RETRY_STATUSES
                ),
                lambda detached: self._read_progress(detached, task),
                self.poll_interval,
            )
        except JobAborted:  # the job ends now; the interrupt has its own thread and timeout
            threading.Thread(
                target=self.interrupt, args=(task.id,), name="sdwebui-interrupt", daemon=True
            ).start()
            raise
        if task.interrupted:
            raise ProviderError(
                "The sdwebui provider's generation was interrupted on the server (from its web page or "
                "by another client), so its images are unfinished."
            )
        tiles = self._tiles(self.http.field(body, "images"), size)
        return Result(tiles=tiles, seed=_seed(body.get("info")))

    def _inpaint(
        self,
        image: Image.Image,
        mask: Image.Image,
        prompt: str | None,
        seed: int | None,
        strength: float,
        ctx: JobContext,
    ) -> Result:
        """img2img inpainting of ``image`` where ``mask`` is white, four times, at a multiple of 8."""
        width, height = _multiple_of_8(image.size)
        payload = self._generation(prompt or "", width, height, seed)
        payload.update(
            init_images=[png_base64(image.resize((width, height)))],
            mask=png_base64(mask.convert("L").resize((width, height), Image.Resampling.NEAREST)),
            denoising_strength=strength,
            inpainting_fill=1,  # start from the original (the canvas's stretched edges)
            inpaint_full_res=False,
            mask_blur=8,
        )
        return self._generate("img2img", payload, ctx, (width, height))

    def _read_progress(self, ctx: JobContext, task: Task) -> float | None:
        """The running generation's progress (0-100), or None when it is not ``task``'s or unknown.

        /sdapi/v1/progress shows the server's one state, whoever's generation it is; /internal/progress
        read after it says whether that is ``task``. An interrupt flag seen between two reads that both
        found ``task`` running was raised during it.
        """
        try:
            body = self.http.json(
                "GET",
                "/sdapi/v1/progress?skip_current_image=true",
                ctx,
                retries=0,
                read_timeout=PROGRESS_TIMEOUT,
            )
            percent = float(body["progress"]) * 100
            state = body.get("state")
        except (ProviderError, KeyError, TypeError, ValueError, AttributeError):
            log.debug("sdwebui: no progress this time")
            return None
        where = self._task_state(task.id, ctx)
        was_running, task.running = task.running, None if where is None else where == "active"
        if was_running and task.running and isinstance(state, dict) and state.get("interrupted") is True:
            task.interrupted = True
        return None if task.running is False else percent

    def _task_state(self, task_id: str, ctx: JobContext) -> str | None:
        """Where the generation sent with ``task_id`` is: "active" (running), "queued" or "completed";
        None if the server cannot say.

        Only /internal/progress (served with the web page by AUTOMATIC1111 1.6+ and Forge; not under
        --nowebui) knows tasks: /sdapi/v1/progress never names the current one. A task the server has
        neither queued, run nor finished is unknown (a server older than 1.6 ignores force_task_id).
        """
        try:
            body = self.http.json(
                "POST",
                "/internal/progress",
                ctx,
                retries=0,
                read_timeout=PROGRESS_TIMEOUT,
                json={"id_task": task_id, "id_live_preview": -1, "live_preview": False},
            )
        except ProviderError:
            return None
        states = ("active", "queued", "completed")
        return next((state for state in states if isinstance(body, dict) and body.get(state) is True), None)

    def interrupt(self, task_id: str) -> None:
        """Stop the generation sent with ``task_id`` once the server runs it (best effort).

        /sdapi/v1/interrupt stops whatever the server runs, so it is sent only when the server says that
        is this task: one still queued there is watched until it starts (for up to the read timeout of
        a generation), and a server that cannot say is left alone.
        """
        give_up = time.monotonic() + self.http.settings.read_timeout
        try:
            while (state := self._task_state(task_id, Deadline(INTERRUPT_SECONDS))) == "queued":
                if time.monotonic() >= give_up:
                    break
                time.sleep(self.poll_interval)
            if state != "active":
                log.info("sdwebui: not interrupting: the server is not running %s (or cannot say)", task_id)
                return
            self.http.request("POST", "/sdapi/v1/interrupt", Deadline(INTERRUPT_SECONDS), retries=0)
        except (ProviderError, JobAborted):
            log.warning("sdwebui: could not interrupt the running generation")

    def _tiles(self, encoded: Any, size: tuple[int, int]) -> list[Image.Image]:
        """The four generated images (anything else a script adds, at another size, is passed over)."""
        if not isinstance(encoded, list):
            raise ProviderError("The sdwebui provider sent no list of images.")
        images = [self.http.image_from_base64(item) for item in encoded]
        matching = [image for image in images if image.size == size]
        tiles = (matching if len(matching) >= BATCH else images)[:BATCH]
        if len(tiles) < BATCH:
            raise ProviderError(f"The sdwebui provider sent {len(images)} image(s) instead of {BATCH}.")
        return tiles

    def _interrogate(self, image: str, model: str, ctx: JobContext) -> str:
        """One interrogator's caption; one other than clip that fails (missing, broken) is skipped."""
        try:
            body = self.http.json(
                "POST",
                "/sdapi/v1/interrogate",
                ctx,
                json={"image": image, "model": model},
                retry_statuses=WORK_RETRY_STATUSES,
            )
        except ProviderError:
            if model == "clip":
                raise
            log.info("sdwebui: interrogator %s is not available", model)
            return ""
        caption = body.get("caption") if isinstance(body, dict) else None
        return caption.strip() if isinstance(caption, str) else ""


def checkpoint_aliases(model: Mapping[str, Any]) -> set[str]:
    """The names the web UI finds an /sdapi/v1/sd-models entry by (CheckpointInfo.ids in sd_models.py).

    The title is the file's path under the models folder, then `` [short hash]`` when the hash is known;
    the file's own name without extension, with or without that hash, and both hashes count too.
    """
    title, short = str(model.get("title") or ""), model.get("hash")
    name = title.removesuffix(f" [{short}]") if short else title
    stem = os.path.splitext(re.split(r"[\\/]", name)[-1])[0]
    aliases = {title, name, stem, str(model.get("model_name") or "")}
    if short:
        aliases |= {str(short), f"{stem} [{short}]", str(model.get("sha256") or "")}
    return aliases - {""}


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _multiple_of_8(size: tuple[int, int]) -> tuple[int, int]:
    return tuple(max(64, side // 8 * 8) for side in size)  # type: ignore[return-value]


def _seed(info: Any) -> int | None:
    """The first seed of a generation, from the ``info`` JSON string the server returns."""
    try:
        parsed = json.loads(info) if isinstance(info, str) else info
        seed = parsed.get("seed", (parsed.get("all_seeds") or [None])[0])
        return int(seed) if seed is not None else None
    except (ValueError, TypeError, AttributeError):
        return None


def four_prompts(captions: dict[str, str], size: tuple[int, int]) -> list[str]:
    """Four different prompts from a CLIP caption and (when present) DeepDanbooru tags."""
    clip = captions.get("clip", "")
    tags = [tag.strip() for tag in captions.get("deepdanbooru", "").split(",") if tag.strip()]
    clauses = [part.strip() for part in clip.split(",") if part.strip()]
    subject = clauses[0] if clauses else ", ".join(tags[:3])
    pool = list(dict.fromkeys(clauses[1:] + tags))
    candidates = [
        clip or ", ".join(tags[:12]),
        ", ".join([subject, *pool[:4]]),
        ", ".join([subject, *(pool[4:8] or FLAVOURS[:2])]),
        ", ".join([", ".join(tags[:10]) or subject, *FLAVOURS[2:]]),
    ]
    prompts: list[str] = []
    for text, flavour in zip(candidates, FLAVOURS, strict=True):
        text = text or subject
        prompts.append(f"{text}, {flavour}" if text in prompts else text)
    ratio = aspect_ratio(*size)
    return [f"{prompt} --ar {ratio}" for prompt in prompts]
