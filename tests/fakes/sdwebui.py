"""A fake AUTOMATIC1111 web UI started with --api (modules/api/api.py and models.py)."""

from __future__ import annotations

import base64
import io
import json
import random
import threading
import time

from PIL import Image

from fakes import FakeBackend, Recorded, Reply, b64png, decode_image

CLIP = "a painting of a red fox in the snow, by greg rutkowski, trending on artstation, winter forest"
TAGS = "fox, snow, outdoors, tree, no_humans, animal_focus, winter, forest, day, sky"
# Settings that add images to an answer, at their defaults (modules/shared_options.py).
OPTIONS = {
    "return_grid": True,
    "grid_only_if_multiple": True,
    "return_mask": False,
    "return_mask_composite": False,
}
MODELS = [
    {
        "title": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
        "model_name": "v1-5-pruned-emaonly",
        "hash": "6ce0161689",
        "sha256": "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
        "filename": "/models/Stable-diffusion/v1-5-pruned-emaonly.safetensors",
        "config": None,
    }
]
# A checkpoint in a subfolder: its name (the title without the hash) keeps the folder, model_name does not.
SUBFOLDER_MODEL = {
    "title": "SDXL/juggernautXL_v9.safetensors [c9e3e68f89]",
    "model_name": "SDXL_juggernautXL_v9",
    "hash": "c9e3e68f89",
    "sha256": "c9e3e68f89b8e38689e1097d4be4573cf308de4e3fd044c64ca697bdb4aa8bca",
    "filename": "/models/Stable-diffusion/SDXL/juggernautXL_v9.safetensors",
    "config": None,
}
SAMPLERS = {"Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ SDE", "DDIM"}
UPSCALERS = {"None", "Lanczos", "Nearest", "ESRGAN_4x", "R-ESRGAN 4x+", "SwinIR_4x", "4x-UltraSharp"}


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class FakeSdWebUI(FakeBackend):
    """txt2img, img2img, extra-single-image, interrogate, progress, interrupt, sd-models.

    Generations wait for one queue lock and share one ``shared.state``: /interrupt stops whichever
    runs, and the interrupted sampler's latents are decoded and answered 200 like finished ones.
    /internal/progress (served with the web page, not under --nowebui) knows a task by its id.
    """

    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.auth = auth
        self.generation_seconds = 0.0  # how long sampling takes (progress rises meanwhile)
        self.decode_seconds = 0.0  # then decoding (after an interrupt too), still the running task
        self.deepdanbooru = True
        self.models = list(MODELS)  # /sdapi/v1/sd-models
        self.options = dict(OPTIONS)  # the server's settings; a request's override_settings win for it
        self.api = True  # False: started without --api, so no /sdapi/v1 routes
        self.web_ui = True  # False: started with --nowebui, so the page's /internal routes are missing
        self.task_ids = True  # False: older than 1.6, which ignores force_task_id
        self.progress = 0.0
        self.running = False  # shared.state between begin() and end()
        self.interrupted = threading.Event()  # state.interrupted: set by /interrupt, cleared by begin()
        self.interrupts: list[str | None] = []  # the task running when each /interrupt came
        # modules/progress.py: tasks waiting for the queue lock, the one running, those finished
        self.pending: dict[str, float] = {}
        self.current_task: str | None = None
        self.finished: list[str] = []
        self.queue_lock = threading.Lock()  # every generation holds it (the web UI's queue_lock)
        # Failures as api_middleware's handle_exception answers them (AUTOMATIC1111, Forge, reForge):
        # {"error": class name, "detail", "body", "errors": str(exception)}. Off: FastAPI's {"detail"}
        # for an HTTPException and Starlette's bare 500 for anything else.
        self.middleware_errors = False
        self.out_of_memory = False  # generations fail as on a GPU without room for them

    def handle(self, request: Recorded) -> Reply:
        if self.web_ui and (request.method, request.path) == ("POST", "/internal/progress"):
            return self._task_progress(request)  # on the page's app, outside --api-auth
        if self.auth and not self._authorised(request):
            return self._refuse(401, "Incorrect username or password", {"WWW-Authenticate": "Basic"})
        if not self.api and request.path.startswith("/sdapi/"):
            return Reply(404, {"detail": "Not Found"})
        route = {
            ("POST", "/sdapi/v1/txt2img"): self._txt2img,
            ("POST", "/sdapi/v1/img2img"): self._img2img,
            ("POST", "/sdapi/v1/extra-single-image"): self._extras,
            ("POST", "/sdapi/v1/interrogate"): self._interrogate,
            ("GET", "/sdapi/v1/progress"): self._progress,
            ("POST", "/sdapi/v1/interrupt"): self._interrupt,
            ("GET", "/sdapi/v1/sd-models"): lambda _r: Reply(200, self.models),
        }.get((request.method, request.path))
        return route(request) if route else Reply(404, {"detail": "Not Found"})

    def _refuse(self, status: int, detail: str, headers: dict[str, str] | None = None) -> Reply:
        """An HTTPException raised by a route."""
        if self.middleware_errors:
            body = {"error": "HTTPException", "detail": detail, "body": "", "errors": f"{status}: {detail}"}
            return Reply(status, body, headers=headers or {})
        return Reply(status, {"detail": detail}, headers=headers or {})

    def _crash(self, exception: str, message: str) -> Reply:
        """Any other exception out of a route: a 500."""
        if self.middleware_errors:
            return Reply(500, {"error": exception, "detail": "", "body": "", "errors": message})
        return Reply(500, b"Internal Server Error", "text/plain; charset=utf-8")

    def _authorised(self, request: Recorded) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
        return request.headers.get("Authorization") == expected

    def _run(self) -> bool:
        """Sample for ``generation_seconds``, raising progress, then decode; True if interrupted."""
        self.interrupted.clear()  # state.begin()
        self.running, self.progress, started = True, 0.0, time.monotonic()
        while (elapsed := time.monotonic() - started) < self.generation_seconds:
            if self.interrupted.wait(0.01) or self.closing.is_set():
                break
            self.progress = elapsed / self.generation_seconds
        interrupted = self.interrupted.is_set()
        self.closing.wait(self.decode_seconds)
        return interrupted

    def _generate(self, body: dict, base: Image.Image | None, kind: str) -> Reply:
        if body.get("sampler_name", "Euler a") not in SAMPLERS:  # validate_sampler_name
            return self._refuse(400, "Sampler not found")
        forced = body.get("force_task_id") if self.task_ids else None
        task_id = forced or f"task({kind}-{random.randrange(16**7):07X})"
        with self.lock:
            self.pending[task_id] = time.time()  # add_task_to_queue
        with self.queue_lock:
            with self.lock:  # start_task
                self.current_task = task_id
                self.pending.pop(task_id, None)
            try:
                if self.out_of_memory:  # process_images raises: state.end() follows, finish_task does not
                    return self._crash(
                        "OutOfMemoryError",
                        "CUDA out of memory. Tried to allocate 2.25 GiB (GPU 0; 7.79 GiB total capacity; "
                        "5.11 GiB already allocated; 1.02 GiB free; 5.60 GiB reserved in total by PyTorch)",
                    )
                interrupted = self._run()
                with self.lock:  # finish_task
                    self.current_task = None
                    self.finished.append(task_id)
            finally:
                with self.lock:  # state.end()
                    self.running, self.progress = False, 0.0
        opts = {**self.options, **(body.get("override_settings") or {})}
        width, height, batch = body.get("width", 512), body.get("height", 512), body.get("batch_size", 1)
        seed = body.get("seed", -1)
        seed = 1234567 if seed in (-1, None) else seed
        mask = decode_image(body["mask"]).resize((width, height)) if body.get("mask") else None
        images = []
        for i in range(batch):
            tile = Image.new("RGB", (width, height), (40 + 50 * i, 90, 160 - 30 * i))
            if base is not None:
                tile = Image.blend(base.resize((width, height)), tile, 0.25)
            if interrupted:  # the latents as far as the sampler got: still noisy
                tile = Image.blend(tile, Image.effect_noise((width, height), 80).convert("RGB"), 0.5)
            images.append(_b64(tile))
            if mask is not None and opts["return_mask"]:  # processing.py: each image's mask after it
                images.append(_b64(mask))
            if mask is not None and opts["return_mask_composite"]:
                blank = Image.new("RGBA", tile.size)
                images.append(_b64(Image.composite(tile.convert("RGBA"), blank, mask.convert("L"))))
        # save_images false means do_not_save_grid: then no grid, whatever return_grid says
        wanted = opts["return_grid"] and body.get("save_images")
        if wanted and not (batch < 2 and opts["grid_only_if_multiple"]):
            images.insert(0, b64png((width * 2, height * 2)))
        info = {"prompt": body.get("prompt", ""), "seed": seed, "all_seeds": [seed + i for i in range(batch)]}
        return Reply(200, {"images": images, "parameters": body, "info": json.dumps(info)})

    def _txt2img(self, request: Recorded) -> Reply:
        return self._generate(request.json or {}, None, "txt2img")

    def _img2img(self, request: Recorded) -> Reply:
        body = request.json or {}
        if not body.get("init_images"):
            return self._refuse(404, "Init image not found")
        if body.get("mask") is not None:  # inpainting: the mask is an image like the init image
            mask = decode_image(body["mask"])
            if mask.size != decode_image(body["init_images"][0]).size:
                return self._refuse(422, "mask and init image differ in size")
        return self._generate(body, decode_image(body["init_images"][0]), "img2img")

    def _extras(self, request: Recorded) -> Reply:
        body = request.json or {}
        if body.get("upscaler_1", "None") not in UPSCALERS:  # scripts/postprocessing_upscale.py
            return self._crash("AssertionError", f"could not find upscaler named {body['upscaler_1']}")
        image = decode_image(body["image"])
        factor = body.get("upscaling_resize", 2)
        enlarged = image.resize(
            (int(image.width * factor), int(image.height * factor)), Image.Resampling.LANCZOS
        )
        return Reply(200, {"html_info": "<p>upscaled</p>", "image": _b64(enlarged)})

    def _interrogate(self, request: Recorded) -> Reply:
        body = request.json or {}
        if not body.get("image"):
            return self._refuse(404, "Image not found")
        decode_image(body["image"])
        if body.get("model", "clip") == "clip":
            return Reply(200, {"caption": CLIP})
        if body.get("model") == "deepdanbooru" and self.deepdanbooru:
            return Reply(200, {"caption": TAGS})
        return self._refuse(404, "Model not found")

    def _progress(self, _request: Recorded) -> Reply:
        """/sdapi/v1/progress: the server's one state, whichever task it belongs to (no task id)."""
        state = {
            "skipped": False,
            "interrupted": self.interrupted.is_set(),
            "stopping_generation": False,
            "job": "scripts_txt2img" if self.running else "",
            "job_count": 1 if self.running else 0,
            "job_no": 0,
            "sampling_step": int(self.progress * 20),
            "sampling_steps": 20,
        }
        progress = max(0.01, self.progress) if self.running else 0.0
        return Reply(200, {"progress": progress, "eta_relative": 1.0, "state": state, "textinfo": None})

    def _task_progress(self, request: Recorded) -> Reply:
        """/internal/progress: one task's place (modules/progress.py progressapi)."""
        task_id = (request.json or {}).get("id_task")
        with self.lock:
            active = task_id is not None and task_id == self.current_task
            queued, completed = task_id in self.pending, task_id in self.finished
            waiting = sorted(self.pending, key=self.pending.__getitem__)
        answer = {"active": active, "queued": queued, "completed": completed, "progress": None, "eta": None}
        answer.update(live_preview=None, id_live_preview=-1, textinfo="Waiting...")
        if queued:
            answer["textinfo"] = f"In queue: {waiting.index(task_id) + 1}/{len(waiting)}"
        if active:
            answer.update(progress=self.progress, eta=1.0, textinfo=None)
        return Reply(200, answer)

    def _interrupt(self, _request: Recorded) -> Reply:
        """shared.state.interrupt(): whatever runs now stops at its next step."""
        with self.lock:
            self.interrupts.append(self.current_task)
        self.interrupted.set()
        return Reply(200, {})
