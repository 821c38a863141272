"""A fake AUTOMATIC1111 web UI started with --api (modules/api/api.py and models.py)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

from PIL import Image

from fakes import FakeBackend, Recorded, Reply, b64png, decode_image

CLIP = "a painting of a red fox in the snow, by greg rutkowski, trending on artstation, winter forest"
TAGS = "fox, snow, outdoors, tree, no_humans, animal_focus, winter, forest, day, sky"
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


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class FakeSdWebUI(FakeBackend):
    """txt2img, img2img, extra-single-image, interrogate, progress, interrupt, sd-models."""

    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.auth = auth
        self.generation_seconds = 0.0  # how long a generation takes (progress rises meanwhile)
        self.deepdanbooru = True
        self.return_grid = False  # opts.return_grid: the grid comes first in the images
        self.progress = 0.0
        self.interrupted = threading.Event()

    def handle(self, request: Recorded) -> Reply:
        if self.auth and not self._authorised(request):
            return Reply(
                401, {"detail": "Incorrect username or password"}, headers={"WWW-Authenticate": "Basic"}
            )
        route = {
            ("POST", "/sdapi/v1/txt2img"): self._txt2img,
            ("POST", "/sdapi/v1/img2img"): self._img2img,
            ("POST", "/sdapi/v1/extra-single-image"): self._extras,
            ("POST", "/sdapi/v1/interrogate"): self._interrogate,
            ("GET", "/sdapi/v1/progress"): self._progress,
            ("POST", "/sdapi/v1/interrupt"): self._interrupt,
            ("GET", "/sdapi/v1/sd-models"): lambda _r: Reply(200, MODELS),
        }.get((request.method, request.path))
        return route(request) if route else Reply(404, {"detail": "Not Found"})

    def _authorised(self, request: Recorded) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
        return request.headers.get("Authorization") == expected

    def _run(self) -> None:
        """Spend ``generation_seconds``, raising progress, unless interrupted."""
        self.interrupted.clear()
        self.progress, started = 0.0, time.monotonic()
        while (elapsed := time.monotonic() - started) < self.generation_seconds:
            if self.interrupted.wait(0.01):
                break
            self.progress = elapsed / self.generation_seconds
        self.progress = 0.0

    def _generate(self, body: dict, base: Image.Image | None) -> Reply:
        self._run()
        width, height, batch = body.get("width", 512), body.get("height", 512), body.get("batch_size", 1)
        seed = body.get("seed", -1)
        seed = 1234567 if seed in (-1, None) else seed
        images = []
        for i in range(batch):
            tile = Image.new("RGB", (width, height), (40 + 50 * i, 90, 160 - 30 * i))
            if base is not None:
                tile = Image.blend(base.resize((width, height)), tile, 0.25)
            images.append(_b64(tile))
        if self.return_grid:
            images.insert(0, b64png((width * 2, height * 2)))
        info = {"prompt": body.get("prompt", ""), "seed": seed, "all_seeds": [seed + i for i in range(batch)]}
        return Reply(200, {"images": images, "parameters": body, "info": json.dumps(info)})

    def _txt2img(self, request: Recorded) -> Reply:
        return self._generate(request.json or {}, None)

    def _img2img(self, request: Recorded) -> Reply:
        body = request.json or {}
        if not body.get("init_images"):
            return Reply(404, {"detail": "Init image not found"})
        if body.get("mask") is not None:  # inpainting: the mask is an image like the init image
            mask = decode_image(body["mask"])
            if mask.size != decode_image(body["init_images"][0]).size:
                return Reply(422, {"detail": "mask and init image differ in size"})
        return self._generate(body, decode_image(body["init_images"][0]))

    def _extras(self, request: Recorded) -> Reply:
        body = request.json or {}
        image = decode_image(body["image"])
        factor = body.get("upscaling_resize", 2)
        enlarged = image.resize(
            (int(image.width * factor), int(image.height * factor)), Image.Resampling.LANCZOS
        )
        return Reply(200, {"html_info": "<p>upscaled</p>", "image": _b64(enlarged)})

    def _interrogate(self, request: Recorded) -> Reply:
        body = request.json or {}
        if not body.get("image"):
            return Reply(404, {"detail": "Image not found"})
        decode_image(body["image"])
        if body.get("model", "clip") == "clip":
            return Reply(200, {"caption": CLIP})
        if body.get("model") == "deepdanbooru" and self.deepdanbooru:
            return Reply(200, {"caption": TAGS})
        return Reply(404, {"detail": "Model not found"})

    def _progress(self, _request: Recorded) -> Reply:
        state = {"job_count": 1 if self.progress else 0, "sampling_step": int(self.progress * 20)}
        return Reply(200, {"progress": self.progress, "eta_relative": 1.0, "state": state, "textinfo": None})

    def _interrupt(self, _request: Recorded) -> Reply:
        self.interrupted.set()
        return Reply(200, {})
