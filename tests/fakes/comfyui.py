"""A fake ComfyUI, from its server.py routes and execution.py/main.py messages, on one loopback port.

HTTP and the websocket are served by aiohttp, as ComfyUI serves them. ``POST /prompt`` validates the
graph as ``execution.validate_prompt`` does (unknown class, no output node, missing inputs, values not
in a list, a LoadImage file that is not there) and queues it; a worker thread runs the queue one prompt
at a time, as ``main.prompt_worker`` does, executing each node by its class on real images (the size
and batch asked for, pixels that follow the seed and prompt), sending ``execution_start``,
``execution_cached``, ``executing``, ``progress``, ``executed``, ``execution_error``,
``execution_interrupted``, ``execution_success`` and the final ``executing`` with node None to the
prompt's client, and writing ``/history``. Switches make it slow, paused, failing or rude.
"""

from __future__ import annotations

import asyncio
import copy
import io
import random
import ssl
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image, ImageDraw

CHECKPOINTS = ["v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors"]
UPSCALE_MODELS = ["RealESRGAN_x4plus.pth"]
SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m"]
SCHEDULERS = ["normal", "karras"]
UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]

# class -> (required inputs and their type or choices, outputs, is an output node)
NODES: dict[str, tuple[dict[str, Any], tuple[str, ...], bool]] = {
    "CheckpointLoaderSimple": ({"ckpt_name": "checkpoints"}, ("MODEL", "CLIP", "VAE"), False),
    "CLIPTextEncode": ({"text": "STRING", "clip": "CLIP"}, ("CONDITIONING",), False),
    "EmptyLatentImage": ({"width": "INT", "height": "INT", "batch_size": "INT"}, ("LATENT",), False),
    "KSampler": (
        {
            "model": "MODEL",
            "seed": "INT",
            "steps": "INT",
            "cfg": "FLOAT",
            "sampler_name": SAMPLERS,
            "scheduler": SCHEDULERS,
            "positive": "CONDITIONING",
            "negative": "CONDITIONING",
            "latent_image": "LATENT",
            "denoise": "FLOAT",
        },
        ("LATENT",),
        False,
    ),
    "VAEDecode": ({"samples": "LATENT", "vae": "VAE"}, ("IMAGE",), False),
    "VAEEncode": ({"pixels": "IMAGE", "vae": "VAE"}, ("LATENT",), False),
    "VAEEncodeForInpaint": (
        {"pixels": "IMAGE", "vae": "VAE", "mask": "MASK", "grow_mask_by": "INT"},
        ("LATENT",),
        False,
    ),
    "RepeatLatentBatch": ({"samples": "LATENT", "amount": "INT"}, ("LATENT",), False),
    "LatentUpscaleBy": (
        {"samples": "LATENT", "upscale_method": UPSCALE_METHODS[:4], "scale_by": "FLOAT"},
        ("LATENT",),
        False,
    ),
    "LoadImage": ({"image": "input"}, ("IMAGE", "MASK"), False),
    "LoadImageMask": ({"image": "input", "channel": ["alpha", "red", "green", "blue"]}, ("MASK",), False),
    "ImageScaleBy": (
        {"image": "IMAGE", "upscale_method": UPSCALE_METHODS, "scale_by": "FLOAT"},
        ("IMAGE",),
        False,
    ),
    "ImageScale": (
        {
            "image": "IMAGE",
            "upscale_method": UPSCALE_METHODS,
            "width": "INT",
            "height": "INT",
            "crop": ["disabled", "center"],
        },
        ("IMAGE",),
        False,
    ),
    "ImagePadForOutpaint": (
        {"image": "IMAGE", "left": "INT", "top": "INT", "right": "INT", "bottom": "INT", "feathering": "INT"},
        ("IMAGE", "MASK"),
        False,
    ),
    "UpscaleModelLoader": ({"model_name": "upscale_models"}, ("UPSCALE_MODEL",), False),
    "ImageUpscaleWithModel": ({"upscale_model": "UPSCALE_MODEL", "image": "IMAGE"}, ("IMAGE",), False),
    "SaveImage": ({"images": "IMAGE", "filename_prefix": "STRING"}, ("IMAGE",), True),
}


class Interrupted(Exception):
    """comfy.model_management.InterruptProcessingException."""


class NodeFailure(Exception):
    """An exception raised inside a node."""


@dataclass
class Call:
    """One HTTP request as the fake saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    peer: str = ""  # "host:port" the connection came from


@dataclass
class Latent:
    """What a LATENT carries here: the size, and the pixels once sampled or encoded."""

    size: tuple[int, int]
    images: list[Image.Image] | None = None
    mask: Image.Image | None = None


CALL = web.RequestKey("call", Call)


class FakeComfyUI:
    """ComfyUI's API on 127.0.0.1, with the routes and messages the comfyui provider uses."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        """Served over plain HTTP, or over HTTPS (and wss) with the server context ``tls``."""
        # Removed by close(), once its threads have ended.
        self._files = tempfile.TemporaryDirectory(prefix="fake-comfyui-", ignore_cleanup_errors=True)
        root = Path(self._files.name)
        self.input_dir, self.output_dir = root / "input", root / "output"
        self.input_dir.mkdir()
        self.output_dir.mkdir()
        self.calls_seen: list[Call] = []
        self.step_seconds = 0.0  # each sampler step takes this long (progress is sent per step)
        self.paused = threading.Event()  # while set, queued prompts wait (another user's prompt runs)
        self.fail_class: str | None = None  # a node class whose execution raises
        self.drop_socket_after: int | None = None  # close the client's socket after this many messages
        self.required_headers: dict[str, str] = {}  # an authenticating reverse proxy in front
        self.rude_socket: str | None = None  # a websocket that never says anything useful: see _rude_ws
        # (websocket event, or "prompt" (a refusal), "queue", "history", "system_stats"; data) -> data sent
        self.reshape: Callable[[str, Any], Any] | None = None
        self.faults: list[tuple[str | None, int]] = []  # (path or any, status), each answered once
        self.interrupts: list[dict[str, Any]] = []  # bodies of POST /interrupt
        self.deleted: list[str] = []  # prompt ids removed from the queue
        self.socket_opened = threading.Event()
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.sent: dict[str, int] = {}
        self.queue: list[tuple] = []
        self.running: dict[int, tuple] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self.number = 0
        self.counter = 0
        self.files_saved = 0
        self.forgetting: set[str] = set()  # prompts a restart lost: they leave no history
        self.interrupt_flag = threading.Event()
        self.mutex = threading.Condition()
        self.closed = threading.Event()
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        serving = threading.Thread(target=self._serve, args=(started, tls), daemon=True)
        serving.start()
        started.wait(10)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        working = threading.Thread(target=self._worker, daemon=True)
        working.start()
        self._threads = (serving, working)

    # ---- inspection --------------------------------------------------------------------------

    def calls(self, path: str | None = None, method: str | None = None) -> list[Call]:
        """Requests seen, all or those to ``path`` (and ``method``)."""
        return [
            c
            for c in list(self.calls_seen)
            if (path is None or c.path == path) and method in (None, c.method)
        ]

    def fail(self, status: int = 500, times: int = 1, path: str | None = None) -> None:
        """Answer the next ``times`` requests (to ``path``, or any) with ``status``, as a proxy would."""
        self.faults.extend((path, status) for _ in range(times))

    def prompts(self) -> list[dict[str, Any]]:
        """The graphs queued through POST /prompt that passed validation, in order."""
        return [entry["prompt"][2] for entry in self.history.values()] + [item[2] for item in self.queue]

    def wait_until_running(self, timeout: float = 10) -> str:
        """The id of the prompt that starts running next (or runs now)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.mutex:
                if self.running:
                    return next(iter(self.running.values()))[1]
            time.sleep(0.01)
        raise AssertionError("no prompt started running")

    def wait_until_queued(self, timeout: float = 10) -> str:
        """The id of a prompt waiting in the queue."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.mutex:
                if self.queue:
                    return self.queue[0][1]
            time.sleep(0.01)
        raise AssertionError("no prompt was queued")

    def restart(self) -> None:
        """Lose every prompt, running, queued or done, and every socket, as a restarted ComfyUI does."""
        with self.mutex:
            self.queue = []
            self.history = {}
            self.forgetting = {item[1] for item in self.running.values()}
        self.interrupt_flag.set()
        for ws in list(self.sockets.values()):
            asyncio.run_coroutine_threadsafe(ws.close(), self.loop).result(5)
        self.sockets.clear()

    def close(self) -> None:
        """Stop serving (ComfyUI is down); running prompts end."""
        if self.closed.is_set():
            return
        self.closed.set()
        self.interrupt_flag.set()
        self.paused.clear()
        with self.mutex:
            self.mutex.notify_all()
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        for thread in self._threads:  # then nothing writes to the folders any more
            thread.join(10)
        self._files.cleanup()

    # ---- HTTP --------------------------------------------------------------------------------

    def _serve(self, started: threading.Event, tls: ssl.SSLContext | None) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application(middlewares=[self._middleware], client_max_size=50 * 1024 * 1024)
        app.add_routes(
            [
                web.get("/ws", self._ws),
                web.post("/prompt", self._post_prompt),
                web.get("/queue", self._get_queue),
                web.post("/queue", self._post_queue),
                web.post("/interrupt", self._interrupt),
                web.get("/history/{prompt_id}", self._get_history),
                web.post("/upload/image", self._upload),
                web.get("/view", self._view),
                web.get("/system_stats", self._system_stats),
                web.get("/object_info/{node_class}", self._object_info),
            ]
        )
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=tls)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        call = Call(request.method, request.path, dict(request.query), dict(request.headers))
        peer = request.transport.get_extra_info("peername") if request.transport else None
        call.peer = "{}:{}".format(*peer[:2]) if peer else ""
        if request.content_type == "application/json" and request.can_read_body:
            try:
                call.json = await request.json()
            except ValueError:
                call.json = None
        elif request.content_type == "multipart/form-data":
            post = await request.post()
            for name, value in post.items():
                if isinstance(value, web.FileField):
                    call.files[name] = value.file.read()
                    call.form[name + ".filename"] = value.filename
                else:
                    call.form[name] = str(value)
        request[CALL] = call
        self.calls_seen.append(call)
        for name, value in self.required_headers.items():
            if request.headers.get(name) != value:
                return web.json_response({"error": "unauthorised"}, status=401)
        for fault in list(self.faults):
            if fault[0] in (None, request.path):
                self.faults.remove(fault)
                return web.json_response({"error": "upstream trouble"}, status=fault[1])
        return await handler(request)

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if self.rude_socket:
            return await self._rude_ws(request, self.rude_socket)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self.sockets[sid] = ws
        self.sent[sid] = 0
        await ws.send_json({"type": "status", "data": {"status": self._queue_info(), "sid": sid}})
        self.socket_opened.set()
        try:
            async for _message in ws:
                pass
        finally:
            if self.sockets.get(sid) is ws:
                self.sockets.pop(sid, None)
        return ws

    async def _rude_ws(self, request: web.Request, how: str) -> web.StreamResponse:
        """A websocket that holds its client without a message: "slow handshake" (a byte of the 101
        answer every 0.1 s), "pings" (one every 0.1 s), "slow frame" (a 1 MB text frame, a byte every
        0.1 s), "fragments" (a text message whose fragments never end, one every 0.1 s), "huge frame"
        (a 4 GB text frame, 1 MB of it every 0.05 s) or "many fragments" (16 MB of 1 MB fragments)."""
        transport = request.transport
        assert transport is not None

        async def trickle(data: bytes) -> None:
            for byte in data:
                if transport.is_closing():
                    return
                transport.write(bytes([byte]))
                await asyncio.sleep(0.1)

        if how == "slow handshake":
            await trickle(b"HTTP/1.1 101 Switching Protocols\r\nX-Slow: " + b"a" * 100000)
            return web.Response()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        mb = b"a" * (1 << 20)
        if how == "slow frame":
            transport.write(_frame_header(0x1, 1 << 20))
            await trickle(mb)
        elif how == "huge frame":
            transport.write(_frame_header(0x1, 4 << 30))
        elif how == "many fragments":
            transport.write(_frame_header(0x1, 1, fin=False) + b"[")
            for _ in range(16):
                transport.write(_frame_header(0x0, len(mb), fin=False) + mb)
        opcode = 0x1
        while not transport.is_closing() and not self.closed.is_set():
            if how == "pings":
                await ws.ping(b"hi")
            elif how == "fragments":
                transport.write(_frame_header(opcode, 1, fin=False) + b"[")
                opcode = 0x0
            elif how == "huge frame":
                transport.write(mb)
            await asyncio.sleep(0.05 if how == "huge frame" else 0.1)
        return ws

    async def _post_prompt(self, request: web.Request) -> web.Response:
        body = request[CALL].json
        if not isinstance(body, dict) or "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt, prompt_id = body["prompt"], str(uuid.uuid4())
        valid, error, outputs, node_errors = self._validate(prompt)
        if not valid:
            refusal = {"error": error, "node_errors": node_errors}
            return web.json_response(self.reshape("prompt", refusal) if self.reshape else refusal, status=400)
        extra = {"client_id": body["client_id"]} if "client_id" in body else {}
        extra["create_time"] = int(time.time() * 1000)
        with self.mutex:
            number = self.number
            self.number += 1
            self.queue.append((number, prompt_id, prompt, extra, outputs))
            self.mutex.notify_all()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": {}})

    async def _get_queue(self, request: web.Request) -> web.Response:
        with self.mutex:
            running = [list(item[:5]) for item in self.running.values()]
            pending = [list(item[:5]) for item in self.queue]
        queue = {"queue_running": running, "queue_pending": pending}
        return web.json_response(self.reshape("queue", queue) if self.reshape else queue)

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = request[CALL].json or {}
        with self.mutex:
            if body.get("clear"):
                self.queue = []
            for prompt_id in body.get("delete") or []:
                before = len(self.queue)
                self.queue = [item for item in self.queue if item[1] != prompt_id]
                if len(self.queue) < before:
                    self.deleted.append(prompt_id)
        return web.Response(status=200)

    async def _interrupt(self, request: web.Request) -> web.Response:
        body = request[CALL].json if isinstance(request[CALL].json, dict) else {}
        self.interrupts.append(body)
        with self.mutex:
            running = [item[1] for item in self.running.values()]
        if not body.get("prompt_id") or body["prompt_id"] in running:
            self.interrupt_flag.set()
        return web.Response(status=200)

    async def _get_history(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        with self.mutex:
            entry = copy.deepcopy(self.history.get(prompt_id))
        if entry is not None and self.reshape:
            entry = self.reshape("history", entry)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def _upload(self, request: web.Request) -> web.Response:
        call: Call = request[CALL]
        if "image" not in call.files or not call.form.get("image.filename"):
            return web.Response(status=400)
        subfolder = call.form.get("subfolder", "")
        folder = self.input_dir / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        filename = call.form["image.filename"]
        if call.form.get("overwrite") not in ("true", "1"):
            stem, suffix, i = Path(filename).stem, Path(filename).suffix, 1
            while (folder / filename).exists():
                filename, i = f"{stem} ({i}){suffix}", i + 1
        (folder / filename).write_bytes(call.files["image"])
        return web.json_response(
            {"name": filename, "subfolder": subfolder, "type": call.form.get("type", "input")}
        )

    async def _view(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if "filename" not in query:
            return web.Response(status=404)
        base = {"output": self.output_dir, "input": self.input_dir}.get(query.get("type", "output"))
        if base is None or ".." in query["filename"] or query["filename"].startswith("/"):
            return web.Response(status=400)
        path = base / query.get("subfolder", "") / Path(query["filename"]).name
        if not path.is_file():
            return web.Response(status=404)
        return web.Response(body=path.read_bytes(), content_type="image/png")

    async def _system_stats(self, request: web.Request) -> web.Response:
        stats = {
            "system": {
                "os": "linux",
                "ram_total": 34359738368,
                "ram_free": 30000000000,
                "comfyui_version": "0.3.99",
                "python_version": "3.12.3",
                "pytorch_version": "2.14.1",
                "embedded_python": False,
                "argv": ["main.py", "--listen", "127.0.0.1"],
            },
            "devices": [
                {
                    "name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
                    "type": "cuda",
                    "index": 0,
                    "vram_total": 25386352640,
                    "vram_free": 24000000000,
                    "torch_vram_total": 0,
                    "torch_vram_free": 0,
                }
            ],
        }
        return web.json_response(self.reshape("system_stats", stats) if self.reshape else stats)

    async def _object_info(self, request: web.Request) -> web.Response:
        node_class = request.match_info["node_class"]
        if node_class not in NODES:
            return web.json_response({})
        inputs, outputs, output_node = NODES[node_class]
        required = {
            name: [self._choices(kind) or [], {}] if self._choices(kind) is not None else [kind, {}]
            for name, kind in inputs.items()
        }
        info = {
            "input": {"required": required},
            "input_order": {"required": list(inputs)},
            "output": list(outputs),
            "name": node_class,
            "display_name": node_class,
            "output_node": output_node,
        }
        return web.json_response({node_class: info})

    def _choices(self, kind: Any) -> list[str] | None:
        if isinstance(kind, list):
            return kind
        if kind == "checkpoints":
            return list(CHECKPOINTS)
        if kind == "upscale_models":
            return list(UPSCALE_MODELS)
        if kind == "input":
            return sorted(p.name for p in self.input_dir.iterdir() if p.is_file())
        return None

    def _queue_info(self) -> dict[str, Any]:
        with self.mutex:
            return {"exec_info": {"queue_remaining": len(self.queue) + len(self.running)}}

    # ---- validation (execution.validate_prompt) ----------------------------------------------

    def _validate(self, prompt: Any) -> tuple[bool, Any, list[str], dict[str, Any]]:
        if not isinstance(prompt, dict):
            prompt = {}
        outputs = []
        for node_id, node in prompt.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return (
                    False,
                    {
                        "type": "missing_node_type",
                        "message": f"Node 'ID #{node_id}' has no class_type. "
                        "The workflow may be corrupted or a custom node is missing.",
                        "details": f"Node ID '#{node_id}'",
                        "extra_info": {},
                    },
                    [],
                    {},
                )
            if node["class_type"] not in NODES:
                title = (node.get("_meta") or {}).get("title", node["class_type"])
                return (
                    False,
                    {
                        "type": "missing_node_type",
                        "message": f"Node '{title}' not found. The custom node may not be installed.",
                        "details": f"Node ID '#{node_id}'",
                        "extra_info": {
                            "node_id": node_id,
                            "class_type": node["class_type"],
                            "node_title": title,
                        },
                    },
                    [],
                    {},
                )
            if NODES[node["class_type"]][2]:
                outputs.append(node_id)
        if not outputs:
            error = {
                "type": "prompt_no_outputs",
                "message": "Prompt has no outputs",
                "details": "",
                "extra_info": {},
            }
            return False, error, [], {}
        node_errors: dict[str, Any] = {}
        for output in outputs:
            for node_id in self._ancestors(prompt, output):
                reasons = self._node_reasons(prompt, node_id)
                if reasons:
                    entry = node_errors.setdefault(
                        node_id,
                        {
                            "errors": reasons,
                            "dependent_outputs": [],
                            "class_type": prompt[node_id]["class_type"],
                        },
                    )
                    entry["dependent_outputs"].append(output)
        bad_outputs = {o for entry in node_errors.values() for o in entry["dependent_outputs"]}
        good = [o for o in outputs if o not in bad_outputs]
        if not good:
            details = "\n".join(
                f"{r['message']}: {r['details']}" for e in node_errors.values() for r in e["errors"]
            )
            error = {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": details,
                "extra_info": {},
            }
            return False, error, [], node_errors
        return True, None, good, node_errors

    def _ancestors(self, prompt: dict[str, Any], node_id: str) -> list[str]:
        seen: list[str] = []
        stack = [node_id]
        while stack:
            current = stack.pop()
            if current in seen or current not in prompt:
                continue
            seen.append(current)
            for value in prompt[current].get("inputs", {}).values():
                if isinstance(value, list) and len(value) == 2:
                    stack.append(str(value[0]))
        return seen

    def _node_reasons(self, prompt: dict[str, Any], node_id: str) -> list[dict[str, Any]]:
        node = prompt[node_id]
        spec = NODES[node["class_type"]][0]
        inputs = node.get("inputs", {})
        reasons = []
        for name, kind in spec.items():
            if name not in inputs:
                reasons.append(
                    {
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": name,
                        "extra_info": {"input_name": name},
                    }
                )
                continue
            value = inputs[name]
            if isinstance(value, list):
                if str(value[0]) not in prompt:
                    reasons.append(
                        {
                            "type": "dependency_cycle_or_missing",
                            "message": "Missing node",
                            "details": f"{name}: node {value[0]}",
                            "extra_info": {},
                        }
                    )
                continue
            if kind == "input":
                if not (self.input_dir / str(value)).is_file():
                    reasons.append(
                        {
                            "type": "custom_validation_failed",
                            "message": "Custom validation failed for node",
                            "details": f"{name} - Invalid image file: {value}",
                            "extra_info": {},
                        }
                    )
                continue
            choices = self._choices(kind)
            if choices is not None and value not in choices:
                reasons.append(
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": f"{name}: '{value}' not in {choices}",
                        "extra_info": {"input_name": name, "received_value": value},
                    }
                )
        return reasons

    # ---- execution (main.prompt_worker, execution.PromptExecutor) -----------------------------

    def _worker(self) -> None:
        while not self.closed.is_set():
            with self.mutex:
                while (not self.queue or self.paused.is_set()) and not self.closed.is_set():
                    self.mutex.wait(0.05)
                if self.closed.is_set():
                    return
                item = self.queue.pop(0)
                task = self.counter
                self.counter += 1
                self.running[task] = item
            status, outputs, messages = self._execute(item)
            with self.mutex:
                self.running.pop(task, None)
                if item[1] in self.forgetting:
                    continue
                self.history[item[1]] = {
                    "prompt": list(item[:5]),
                    "outputs": outputs,
                    "status": {"status_str": status, "completed": status == "success", "messages": messages},
                    "meta": {node: {"node_id": node, "display_node": node} for node in outputs},
                }
            self._send(item[3].get("client_id"), "executing", {"node": None, "prompt_id": item[1]})

    def _execute(self, item: tuple) -> tuple[str, dict[str, Any], list]:
        _number, prompt_id, prompt, extra, outputs = item
        client = extra.get("client_id")
        messages: list = []

        def message(event: str, data: dict[str, Any]) -> None:
            data = {**data, "timestamp": int(time.time() * 1000)}
            messages.append([event, data])
            self._send(client, event, data)

        self.interrupt_flag.clear()
        message("execution_start", {"prompt_id": prompt_id})
        message("execution_cached", {"nodes": [], "prompt_id": prompt_id})
        results: dict[str, tuple] = {}
        ui: dict[str, Any] = {}
        order: list[str] = []
        for output in outputs:
            _post_order(prompt, output, order)
        executed: list[str] = []
        for node_id in order:
            node = prompt[node_id]
            self._send(
                client, "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}
            )
            try:
                if self.interrupt_flag.is_set() or self.closed.is_set():
                    raise Interrupted()
                if node["class_type"] == self.fail_class:
                    raise NodeFailure("CUDA out of memory. Tried to allocate 2.00 GiB")
                inputs = {
                    k: (results[str(v[0])][v[1]] if isinstance(v, list) else v)
                    for k, v in node["inputs"].items()
                }
                results[node_id] = self._run_node(node["class_type"], inputs, prompt_id, node_id, client)
            except Interrupted:
                message(
                    "execution_interrupted",
                    {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": node["class_type"],
                        "executed": executed,
                    },
                )
                return "error", ui, messages
            except Exception as exc:  # noqa: BLE001  (any node failure is an execution_error, as in ComfyUI)
                message(
                    "execution_error",
                    {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": node["class_type"],
                        "executed": executed,
                        "exception_message": f"{exc}\n",
                        "exception_type": "torch.OutOfMemoryError",
                        "traceback": ['  File "execution.py", line 277, in process_inputs\n'],
                        "current_inputs": {},
                        "current_outputs": executed,
                    },
                )
                return "error", ui, messages
            executed.append(node_id)
            if node["class_type"] == "SaveImage":
                ui[node_id] = {"images": results[node_id][1]}
                self._send(
                    client,
                    "executed",
                    {"node": node_id, "display_node": node_id, "output": ui[node_id], "prompt_id": prompt_id},
                )
        message("execution_success", {"prompt_id": prompt_id})
        return "success", ui, messages

    def _send(self, client: str | None, event: str, data: dict[str, Any]) -> None:
        """PromptServer.send_json to the prompt's client (and close its socket when told to drop)."""
        if client is None or self.closed.is_set():
            return
        future = asyncio.run_coroutine_threadsafe(
            self._send_async(client, {"type": event, "data": data}), self.loop
        )
        try:
            future.result(5)
        except Exception:  # a client that went away
            pass

    async def _send_async(self, client: str, message: dict[str, Any]) -> None:
        ws = self.sockets.get(client)
        if ws is None or ws.closed:
            return
        if self.drop_socket_after is not None and self.sent.get(client, 0) >= self.drop_socket_after:
            self.sockets.pop(client, None)
            await ws.close()
            return
        self.sent[client] = self.sent.get(client, 0) + 1
        if self.reshape:
            message = {**message, "data": self.reshape(message["type"], message["data"])}
        await ws.send_json(message)

    def _run_node(
        self, cls: str, i: dict[str, Any], prompt_id: str, node_id: str, client: str | None
    ) -> tuple:
        if cls == "CheckpointLoaderSimple":
            return ("model", "clip", "vae")
        if cls == "CLIPTextEncode":
            return ({"text": i["text"]},)
        if cls == "EmptyLatentImage":
            return (Latent((i["width"] // 8 * 8, i["height"] // 8 * 8), [None] * i["batch_size"]),)
        if cls in ("LoadImage", "LoadImageMask"):
            with Image.open(self.input_dir / i["image"]) as opened:
                image = opened.convert("RGB")
            if cls == "LoadImageMask":
                index = {"red": 0, "green": 1, "blue": 2}.get(i["channel"], 0)
                return ([image.split()[index]],)
            return ([image], [Image.new("L", image.size, 0)])
        if cls == "VAEEncode":
            return (Latent(_crop8(i["pixels"][0]).size, [_crop8(p) for p in i["pixels"]]),)
        if cls == "VAEEncodeForInpaint":
            pixels = [_crop8(p) for p in i["pixels"]]
            return (Latent(pixels[0].size, pixels, _crop8(i["mask"][0].resize(i["pixels"][0].size))),)
        if cls == "RepeatLatentBatch":
            latent = i["samples"]
            return (Latent(latent.size, latent.images * i["amount"], latent.mask),)
        if cls == "LatentUpscaleBy":
            latent = i["samples"]
            size = (round(latent.size[0] * i["scale_by"]), round(latent.size[1] * i["scale_by"]))
            images = [p.resize(size) if p is not None else None for p in latent.images]
            return (Latent(size, images, latent.mask),)
        if cls == "KSampler":
            return (self._sample(i, prompt_id, node_id, client),)
        if cls == "VAEDecode":
            latent = i["samples"]
            return (
                [
                    p if p is not None else Image.new("RGB", latent.size, (128, 128, 128))
                    for p in latent.images
                ],
            )
        if cls == "ImageScaleBy":
            return (
                [
                    p.resize(
                        (round(p.width * i["scale_by"]), round(p.height * i["scale_by"])),
                        Image.Resampling.LANCZOS,
                    )
                    for p in i["image"]
                ],
            )
        if cls == "ImageScale":
            return (
                [
                    p.resize((i["width"] or p.width, i["height"] or p.height), Image.Resampling.LANCZOS)
                    for p in i["image"]
                ],
            )
        if cls == "ImagePadForOutpaint":
            return self._pad(i)
        if cls == "UpscaleModelLoader":
            return (("upscale_model", i["model_name"]),)
        if cls == "ImageUpscaleWithModel":
            return ([p.resize((p.width * 4, p.height * 4), Image.Resampling.LANCZOS) for p in i["image"]],)
        if cls == "SaveImage":
            return (i["images"], self._save(i["images"], i["filename_prefix"]))
        raise NodeFailure(f"the fake cannot run {cls}")

    def _sample(self, i: dict[str, Any], prompt_id: str, node_id: str, client: str | None) -> Latent:
        """Real pixels from the seed and the prompt, four steps of progress apart."""
        latent: Latent = i["latent_image"]
        steps = min(int(i["steps"]), 10)
        for step in range(1, steps + 1):
            if self.interrupt_flag.wait(self.step_seconds) or self.closed.is_set():
                raise Interrupted()
            self._send(
                client, "progress", {"value": step, "max": steps, "prompt_id": prompt_id, "node": node_id}
            )
        text = i["positive"]["text"]
        images = []
        for index, base in enumerate(latent.images):
            painted = _paint(latent.size, f"{i['seed']}|{index}|{text}")
            if base is not None:
                painted = Image.blend(base.resize(latent.size), painted, float(i["denoise"]))
                if latent.mask is not None:
                    painted = Image.composite(painted, base.resize(latent.size), latent.mask.convert("L"))
            images.append(painted)
        return Latent(latent.size, images, latent.mask)

    def _pad(self, i: dict[str, Any]) -> tuple:
        left, top, right, bottom = (int(i[k]) for k in ("left", "top", "right", "bottom"))
        images, masks = [], []
        for image in i["image"]:
            size = (image.width + left + right, image.height + top + bottom)
            canvas = Image.new("RGB", size, (128, 128, 128))
            canvas.paste(image, (left, top))
            mask = Image.new("L", size, 255)
            mask.paste(0, (left, top, left + image.width, top + image.height))
            images.append(canvas)
            masks.append(mask)
        return (images, masks)

    def _save(self, images: list[Image.Image], prefix: str) -> list[dict[str, str]]:
        subfolder, _, name = prefix.rpartition("/")
        folder = self.output_dir / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        saved = []
        for image in images:
            self.files_saved += 1
            number = self.files_saved
            filename = f"{name}_{number:05}_.png"
            image.save(folder / filename, "PNG")
            saved.append({"filename": filename, "subfolder": subfolder, "type": "output"})
        return saved


def _post_order(prompt: dict[str, Any], node_id: str, order: list[str]) -> None:
    """Append ``node_id`` after everything it depends on (the order ComfyUI's ExecutionList runs them)."""
    if node_id in order:
        return
    for value in prompt[node_id]["inputs"].values():
        if isinstance(value, list) and len(value) == 2:
            _post_order(prompt, str(value[0]), order)
    order.append(node_id)


def _crop8(image: Image.Image) -> Image.Image:
    """The middle of ``image`` with sides cut to multiples of 8, as ComfyUI's VAE encoders cut it."""
    width, height = image.width // 8 * 8, image.height // 8 * 8
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image if (width, height) == image.size else image.crop((left, top, left + width, top + height))


def _paint(size: tuple[int, int], key: str) -> Image.Image:
    """A real picture that depends only on ``key``: a gradient sky and a few shapes."""
    rng = random.Random(key)
    top = tuple(rng.randrange(256) for _ in range(3))
    bottom = tuple(rng.randrange(256) for _ in range(3))
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(size[1]):
        t = y / max(1, size[1] - 1)
        draw.line(
            [(0, y), (size[0], y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        )
    for _ in range(4):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        r = rng.randrange(8, max(9, min(size) // 3))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def _frame_header(opcode: int, length: int, fin: bool = True) -> bytes:
    """The head of an unmasked websocket frame, as a server sends it."""
    first = bytes([(0x80 if fin else 0) | opcode])
    if length < 126:
        return first + bytes([length])
    return first + bytes([127]) + struct.pack(">Q", length)


def png_of(image: Image.Image) -> bytes:
    """``image`` as PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
