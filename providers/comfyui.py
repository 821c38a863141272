"""ComfyUI, through the HTTP and websocket API of its ``server.py``, running workflow templates.

Each operation runs its template (``comfyui_templates``; the defaults are txt2img with a batch of
four, img2img for variation and blend (blend starts from an even mix of the inputs), an image or
model upscale, ``ImagePadForOutpaint`` for outpaint and ``VAEEncodeForInpaint`` for inpaint). Input
images go up through ``POST /upload/image``; the graph is queued with ``POST /prompt``; progress and
the end come over ``/ws?clientId=`` (through an HTTP CONNECT tunnel when the HTTP calls go through a
proxy), with ``/history/{id}`` and ``/queue`` polled when the socket drops; results are read from
the history and fetched from ``/view``. A job that stops interrupts the prompt if it is running and
deletes it from the queue if it is waiting. Describe has no built-in ComfyUI node: it runs on
another provider (``local`` unless APIFRAME_PROVIDER_DESCRIBE says).
"""

from __future__ import annotations

import json
import logging
import socket as net
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import SplitResult, quote, urlencode, urlsplit, urlunsplit

import requests
import urllib3
import websocket
from PIL import Image
from websocket import ABNF

import imaging
from imaging import png_bytes
from providers import (
    DEFAULT_VARIATION_STRENGTH,
    BlendRequest,
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
    comfyui_templates,
    in_mode,
    register,
    seed_or_random,
)
from providers.comfyui_templates import Template
from providers.http import Backend, Deadline, HttpSettings, HttpStatusError, scaled
from watchdog import Watchdog

log = logging.getLogger(__name__)

BATCH = 4
BLEND_DENOISE = 0.75  # how far a blend departs from the even mix of its inputs
UPLOAD_SUBFOLDER = "apiframe"  # inputs go to ComfyUI's input/apiframe/
CANCEL_SECONDS = 5.0  # interrupting or dequeuing a stopped job gives up after this long
SOCKET_WAIT = 1.0  # longest single wait for websocket data (the job is checked in between)
MESSAGE_BYTES = 8 * 1024 * 1024  # a longer websocket message (JSON, or a preview image) ends the socket
QUIET_PEEK = 10.0  # after this long without news of our prompt, look at /history once
LOST_CHECKS = 2  # polls in a row that find the prompt nowhere before the job fails
PROXY_HEAD_BYTES = 16 * 1024  # a longer answer from a proxy to CONNECT ends the websocket attempt


def parse_headers(value: str | None) -> dict[str, str]:
    """APIFRAME_COMFYUI_HEADERS: a JSON object, or ``Name: value`` lines; {} when unset."""
    if not value or not value.strip():
        return {}
    variable = "APIFRAME_COMFYUI_HEADERS"
    if value.lstrip().startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"{variable}: not a valid JSON object ({exc})") from None
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()):
            raise ValueError(f"{variable}: every header name and value must be a string")
        headers = parsed
    else:
        headers = {}
        for line in value.splitlines():
            if not line.strip():
                continue
            name, sep, content = line.partition(":")
            if not sep or not name.strip():
                raise ValueError(f"{variable}: expected 'Name: value' lines or a JSON object, got {line!r}")
            headers[name.strip()] = content.strip()
    for name, content in headers.items():
        if not name or any(c in name + content for c in "\r\n") or " " in name:
            raise ValueError(f"{variable}: {name!r} is not a valid header")
    return headers


def _round8(side: int) -> int:
    return max(64, int(side) // 8 * 8)


class Frames(websocket.frame_buffer):
    """A job's websocket frames, read with the job checked before each socket read, which never waits
    past the deadline; a message longer than MESSAGE_BYTES (one frame or its fragments together) is
    refused from its frame header, before its data is read."""

    def __init__(self, socket: websocket.WebSocket, ctx: JobContext) -> None:
        super().__init__(self._read, skip_utf8_validation=False)
        self.socket, self.ctx = socket, ctx
        self.taken = 0  # bytes of the fragmented message being received

    def _read(self, size: int) -> bytes:
        self.ctx.check()
        self.socket.settimeout(max(0.01, min(SOCKET_WAIT, self.ctx.remaining())))
        return websocket.recv(self.socket.sock, size)

    def recv_length(self) -> None:
        super().recv_length()
        if self.taken + (self.length or 0) > MESSAGE_BYTES:
            raise websocket.WebSocketPayloadException(f"a message of over {MESSAGE_BYTES} bytes")

    def recv_frame(self) -> ABNF:
        frame = super().recv_frame()
        if frame.opcode in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY, ABNF.OPCODE_CONT):
            self.taken = 0 if frame.fin else self.taken + len(frame.data)
        return frame


class Watch:
    """Progress of one prompt: nodes finished (or cached) of all, plus the running node's share."""

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.done: set[str] = set()
        self.current: str | None = None
        self.fraction = 0.0

    def percent(self) -> float:
        """0-100."""
        return min(100.0, 100.0 * (len(self.done) + self.fraction) / self.total)

    def message(self, kind: str, data: dict[str, Any]) -> None:
        """Take one websocket message about our prompt into account."""
        if kind == "execution_cached" and isinstance(data.get("nodes"), list):
            self.done.update(str(node) for node in data["nodes"])
        elif kind == "executing" and data.get("node") is not None:
            if self.current is not None:
                self.done.add(self.current)
            self.current, self.fraction = str(data["node"]), 0.0
        elif kind == "progress":
            try:
                self.fraction = max(0.0, min(1.0, float(data["value"]) / float(data["max"])))
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                pass
        elif kind == "executed" and data.get("node") is not None:
            self.done.add(str(data["node"]))


@register
class ComfyUIProvider(Provider):
    """Stable Diffusion (or any model ComfyUI runs) through the operator's own ComfyUI workflows."""

    name = "comfyui"
    operations = frozenset({"imagine", "variation", "upscale", "blend", "outpaint", "inpaint"})
    required_settings = ("COMFYUI_URL",)
    elsewhere = {"describe": "local"}

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.headers = parse_headers(config.get("COMFYUI_HEADERS"))
        url = config["COMFYUI_URL"]
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ValueError(f"APIFRAME_COMFYUI_URL must be an http(s) URL, got {url!r}")
        self.http = Backend(
            self.name,
            url,
            HttpSettings.from_config(config, "COMFYUI_TIMEOUT"),
            headers=self.headers,
            secrets=list(self.headers.values()),
        )
        self.poll_interval = float(config["COMFYUI_POLL_INTERVAL"])
        self.templates = comfyui_templates.load(
            config.get("COMFYUI_WORKFLOWS"), bool(config.get("COMFYUI_UPSCALE_MODEL"))
        )
        self.unusable_proxy_logged: str | None = None  # the scheme of a proxy the websocket cannot use

    # ---- operations --------------------------------------------------------------------------

    def imagine(self, request: ImagineRequest, ctx: JobContext) -> Result:
        """txt2img: four images at the tile size."""
        seed = seed_or_random(request.seed)
        values = self._common(request.prompt, seed)
        values.update(size=(_round8(request.width), _round8(request.height)), batch=BATCH)
        return Result(tiles=self._tiles(self._run("imagine", values, {}, ctx)), seed=seed)

    def variation(self, request: VariationRequest, ctx: JobContext) -> Result:
        """img2img of the chosen tile, four times, at the request's strength."""
        seed = seed_or_random(request.seed)
        values = self._common(request.prompt or "", seed)
        values.update(batch=BATCH, denoise=request.strength_or(DEFAULT_VARIATION_STRENGTH))
        image = _fit8(request.image)
        tiles = self._run("variation", values, {"image": image}, ctx)
        return Result(tiles=self._tiles(tiles), seed=seed)

    def blend(self, request: BlendRequest, ctx: JobContext) -> Result:
        """img2img of an even mix of the inputs, four times."""
        seed = seed_or_random(request.seed)
        mixed = imaging.average(request.images, _round8(request.width), _round8(request.height))
        values = self._common("", seed)
        values.update(batch=BATCH, denoise=BLEND_DENOISE)
        return Result(tiles=self._tiles(self._run("blend", values, {"image": mixed}, ctx)), seed=seed)

    def upscale(self, request: UpscaleRequest, ctx: JobContext) -> Result:
        """The upscale workflow (image scale, or the named upscale model), to exactly ``factor`` times; a
        creative upscale's detail is invented here."""
        values: dict[str, Any] = {
            "scale": float(request.factor),
            "upscale_model": self.config.get("COMFYUI_UPSCALE_MODEL") or None,
        }
        images = self._run("upscale", values, {"image": request.image}, ctx)
        wanted = (request.image.width * request.factor, request.image.height * request.factor)
        image = images[0]
        if image.size != wanted:  # an upscale model has its own factor (often 4x)
            image = image.convert("RGB").resize(wanted, Image.Resampling.LANCZOS)
        return Result(image=in_mode(image, request))

    def outpaint(self, request: OutpaintRequest, ctx: JobContext) -> Result:
        """The image padded by ``pad`` and the new area painted, four times, at width x height."""
        seed = seed_or_random(request.seed)
        values = self._common(request.prompt or "", seed)
        values.update(
            pad=tuple(int(side) for side in request.pad), size=(request.width, request.height), batch=BATCH
        )
        tiles = self._tiles(self._run("outpaint", values, {"image": request.image}, ctx))
        size = (request.width, request.height)
        return Result(tiles=[_uncropped(t, size) for t in tiles], seed=seed)

    def inpaint(self, request: InpaintRequest, ctx: JobContext) -> Result:
        """The region where the mask is white painted anew, four times."""
        seed = seed_or_random(request.seed)
        values = self._common(request.prompt or "", seed)
        values["batch"] = BATCH
        mask = request.mask.convert("L").resize(request.image.size).convert("RGB")
        uploads = {"image": request.image, "mask": mask}
        tiles = self._tiles(self._run("inpaint", values, uploads, ctx))
        size = request.image.size
        return Result(tiles=[_uncropped(t, size, request.image, mask) for t in tiles], seed=seed)

    def check(self) -> str:
        """The workflows still load, the server answers, and it has every node class and model they use."""
        try:
            templates = comfyui_templates.load(
                self.config.get("COMFYUI_WORKFLOWS"), bool(self.config.get("COMFYUI_UPSCALE_MODEL"))
            )
        except comfyui_templates.TemplateError as exc:
            raise ProviderError(f"The comfyui provider's workflows cannot be used: {exc}") from None
        ctx = self.http.check_context()
        stats = self.http.json("GET", "/system_stats", ctx, retries=0)
        system = (stats.get("system") or {}) if isinstance(stats, dict) else None
        devices = stats.get("devices") if isinstance(stats, dict) else None
        if not isinstance(system, dict) or not isinstance(devices, list):
            raise ProviderError("The comfyui provider sent an unexpected answer to /system_stats.")
        version = system.get("comfyui_version")
        for node_class in sorted(set().union(*(t.classes() for t in templates.values()))):
            info = self.http.json("GET", f"/object_info/{quote(node_class)}", ctx, retries=0)
            if not isinstance(info, dict) or node_class not in info:
                raise ProviderError(
                    f"The comfyui provider has no node {node_class!r}, which the workflows use "
                    "(a custom node that is not installed?)."
                )
            self._check_choices(templates, node_class, info[node_class])
        device = devices[0].get("name") if devices and isinstance(devices[0], dict) else "no device"
        return f"ComfyUI {version or '(unknown version)'} on {device}; {len(templates)} workflows ready"

    # ---- running a workflow ------------------------------------------------------------------

    def _common(self, prompt: str, seed: int) -> dict[str, Any]:
        """The values every generation binds."""
        return {
            "prompt": prompt,
            "negative": self.config.get("COMFYUI_NEGATIVE_PROMPT") or None,
            "seed": seed,
            "checkpoint": self.config.get("COMFYUI_CHECKPOINT") or None,
        }

    def _run(
        self, operation: str, values: dict[str, Any], uploads: dict[str, Image.Image], ctx: JobContext
    ) -> list[Image.Image]:
        """Upload the inputs, queue the filled-in workflow, follow it to its end, fetch its images."""
        template = self.templates[operation]
        for name, image in uploads.items():
            values[name] = self._upload(image, ctx)
        graph = template.fill(values)
        client_id = uuid.uuid4().hex
        socket = self._connect(client_id, ctx)
        try:
            prompt_id = self._submit(graph, client_id, ctx)
            try:
                entry = self._wait(prompt_id, socket, len(graph), ctx)
            except JobAborted:
                self._cancel(prompt_id)
                raise
        finally:
            if socket is not None:
                socket.close(timeout=0)  # no wait for its answer: what is unread may be a refused frame
        return self._results(entry, template, ctx)

    def _upload(self, image: Image.Image, ctx: JobContext) -> str:
        """Put ``image`` into ComfyUI's input folder; the name LoadImage knows it by."""
        filename = f"apiframe-{uuid.uuid4().hex}.png"
        body = self.http.json(
            "POST",
            "/upload/image",
            ctx,
            files={"image": (filename, png_bytes(image), "image/png")},
            data={"type": "input", "subfolder": UPLOAD_SUBFOLDER, "overwrite": "true"},
        )
        name = self.http.field(body, "name")
        subfolder = body.get("subfolder") or ""
        return f"{subfolder}/{name}" if subfolder else str(name)

    def _submit(self, graph: dict[str, Any], client_id: str, ctx: JobContext) -> str:
        """``POST /prompt``; ComfyUI's own message when it refuses the workflow."""
        try:
            body = self.http.json("POST", "/prompt", ctx, json={"prompt": graph, "client_id": client_id})
        except HttpStatusError as exc:
            if exc.status == 400 and isinstance(exc.body, dict):
                raise ProviderError(self._refusal(exc.body)) from None
            raise
        prompt_id = self.http.field(body, "prompt_id")
        if body.get("node_errors"):
            self._cancel(str(prompt_id))
            raise ProviderError(self._refusal(body))
        return str(prompt_id)

    def _refusal(self, body: dict[str, Any]) -> str:
        """The job's error for a workflow ComfyUI would not run: its message and each node's errors."""
        error = body.get("error")
        parts = []
        if isinstance(error, dict):
            parts.append(str(error.get("message") or error.get("type") or "invalid prompt"))
        elif error:
            parts.append(str(error))
        node_errors = body.get("node_errors")
        if isinstance(node_errors, dict):
            for node_id, entry in node_errors.items():
                if not isinstance(entry, dict):
                    continue
                errors = entry.get("errors") if isinstance(entry.get("errors"), list) else []
                reasons = "; ".join(
                    f"{reason.get('message')}: {reason.get('details')}".rstrip(": ")
                    for reason in errors
                    if isinstance(reason, dict)
                )
                parts.append(f"node {node_id} ({entry.get('class_type')}): {reasons}")
        detail = self.http.scrub(". ".join(parts) or "no reason given", 500)
        return f"The comfyui provider refused the workflow: {detail}"

    def _connect(self, client_id: str, ctx: JobContext) -> websocket.WebSocket | None:
        """The websocket for ``client_id``'s messages; None (the job polls instead) if it will not open."""
        parts = urlsplit(self.http.url("/ws"))
        scheme = "wss" if parts.scheme == "https" else "ws"
        url = urlunsplit((scheme, parts.netloc, parts.path, urlencode({"clientId": client_id}), ""))
        timeout = min(self.http.settings.connect_timeout, max(0.05, ctx.remaining()))
        proxy = self._proxy(parts)
        socket = websocket.WebSocket()
        socket.frame_buffer = Frames(socket, ctx)
        try:
            with Watchdog(timeout) as watchdog:  # the whole handshake, which a server or proxy could trickle
                socket.connect(
                    url,
                    socket=_open(parts, proxy, timeout, watchdog, self.http.tls_context),
                    timeout=timeout,
                    header=[f"{name}: {value}" for name, value in self.headers.items()],
                )
            return socket
        except (websocket.WebSocketException, OSError) as exc:
            reason = str(exc) if isinstance(exc, websocket.WebSocketProxyException) else type(exc).__name__
            log.warning("comfyui: no websocket (%s); polling /history", reason)
            return None

    def _proxy(self, parts: SplitResult) -> SplitResult | None:
        """The http:// proxy the HTTP calls to ComfyUI go through, for the websocket to tunnel through.

        None when they connect directly; also for a proxy of another kind (socks, https), which is
        logged once: the websocket then connects directly, as it always did.
        """
        proxy = self.http.proxy(urlunsplit(parts))
        if proxy is None:
            return None
        found = urlsplit(proxy)
        if found.scheme == "http" and found.hostname and _port(found) is not None:
            return found
        if self.unusable_proxy_logged != found.scheme:
            self.unusable_proxy_logged = found.scheme
            log.warning(
                "comfyui: the websocket cannot go through a %s:// proxy; it connects to ComfyUI directly",
                found.scheme,
            )
        return None

    def _wait(self, prompt_id: str, socket: websocket.WebSocket | None, nodes: int, ctx: JobContext) -> dict:
        """Follow the prompt to its end (the socket, then /history); its history entry."""
        watch = Watch(nodes)
        if socket is not None:
            try:
                entry = self._follow(socket, prompt_id, watch, ctx)
                if entry is not None:
                    return entry
            except (websocket.WebSocketException, OSError) as exc:
                log.warning("comfyui: the websocket dropped (%s); polling /history", type(exc).__name__)
        return self._poll(prompt_id, watch, ctx)

    def _follow(
        self, socket: websocket.WebSocket, prompt_id: str, watch: Watch, ctx: JobContext
    ) -> dict | None:
        """Read messages until the prompt ends: its entry if already in /history, else None (poll)."""
        last_news = time.monotonic()
        while True:
            ctx.check()
            try:
                raw = socket.recv()
            except websocket.WebSocketTimeoutException:
                if time.monotonic() - last_news >= QUIET_PEEK:
                    last_news = time.monotonic()
                    entry = self._history(prompt_id, ctx)
                    if entry is not None:
                        return entry
                continue
            if raw == "":
                raise websocket.WebSocketConnectionClosedException("closed by the server")
            if not isinstance(raw, str):
                continue  # a binary preview image
            try:
                message = json.loads(raw)
                kind, data = message["type"], message.get("data") or {}
            except (ValueError, KeyError, TypeError):
                continue
            if not isinstance(data, dict) or data.get("prompt_id") != prompt_id:
                continue
            last_news = time.monotonic()
            if kind == "execution_error":
                raise ProviderError(self._execution_error(data))
            if kind == "execution_interrupted":
                raise ProviderError("The comfyui provider's prompt was interrupted on the server.")
            if kind == "executing" and data.get("node") is None:
                return None  # sent once the history has the outputs (after execution_success)
            watch.message(kind, data)
            ctx.progress(scaled(watch.percent()))

    def _poll(self, prompt_id: str, watch: Watch, ctx: JobContext) -> dict:
        """Poll /history (and /queue, since /history says {} for unknown ids too) until the prompt ends."""
        lost = 0
        while True:
            entry = self._history(prompt_id, ctx)
            if entry is not None:
                return entry
            state = _queue_state(self.http.json("GET", "/queue", ctx), prompt_id)
            lost = lost + 1 if state is None else 0
            if lost >= LOST_CHECKS:
                raise ProviderError(
                    "The comfyui provider lost the prompt: it is neither queued, running nor in the "
                    "history (was ComfyUI restarted?)."
                )
            if state == "running":
                ctx.progress(scaled(watch.percent()))
            ctx.sleep(self.poll_interval)

    def _history(self, prompt_id: str, ctx: JobContext) -> dict | None:
        """The prompt's history entry once it has ended (a failed one raises), else None."""
        body = self.http.json("GET", f"/history/{prompt_id}", ctx)
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        if not isinstance(entry, dict):
            return None
        status = entry.get("status") or {}
        if isinstance(status, dict) and status.get("status_str") == "error":
            messages = status.get("messages") if isinstance(status.get("messages"), list) else []
            for event, data in (m for m in messages if isinstance(m, list) and len(m) == 2):
                if event == "execution_error" and isinstance(data, dict):
                    raise ProviderError(self._execution_error(data))
                if event == "execution_interrupted":
                    raise ProviderError("The comfyui provider's prompt was interrupted on the server.")
            raise ProviderError("The comfyui provider's prompt failed (no reason given).")
        return entry

    def _execution_error(self, data: dict[str, Any]) -> str:
        message = self.http.scrub(str(data.get("exception_message") or data.get("exception_type") or ""), 400)
        where = f"node {data.get('node_id')} ({data.get('node_type')})"
        return f"The comfyui provider's workflow failed in {where}: {message or 'no reason given'}"

    def _cancel(self, prompt_id: str) -> None:
        """Interrupt the prompt if it runs (checked first: /interrupt stops whatever runs), or dequeue."""
        ctx = Deadline(CANCEL_SECONDS)
        try:
            state = _queue_state(self.http.json("GET", "/queue", ctx, retries=0), prompt_id)
            if state == "running":
                # Servers that know the field interrupt only this prompt; older ones whatever runs now.
                self.http.request("POST", "/interrupt", ctx, retries=0, json={"prompt_id": prompt_id})
            elif state == "pending":
                self.http.request("POST", "/queue", ctx, retries=0, json={"delete": [prompt_id]})
        except (ProviderError, JobAborted):
            log.warning("comfyui: could not stop prompt %s on the server", prompt_id)

    def _results(self, entry: dict[str, Any], template: Template, ctx: JobContext) -> list[Image.Image]:
        """The result node's images, fetched from /view."""
        outputs = entry.get("outputs") if isinstance(entry.get("outputs"), dict) else {}
        try:
            files = [
                item
                for node_id in template.outputs
                for item in ((outputs.get(node_id) or {}).get("images") or [])
                if isinstance(item, dict) and item.get("filename")
            ]
        except (AttributeError, TypeError):  # a node's output that is not {"images": [...]}
            raise ProviderError("The comfyui provider sent an unexpected answer to /history.") from None
        if not files:
            raise ProviderError("The comfyui provider's workflow finished without saving an image.")
        images = []
        for item in files:
            query = {"filename": item["filename"], "subfolder": item.get("subfolder") or "",
                     "type": item.get("type") or "output"}  # fmt: skip
            images.append(self.http.download_image("/view?" + urlencode(query), ctx))
        return images

    def _tiles(self, images: list[Image.Image]) -> list[Image.Image]:
        if len(images) < BATCH:
            raise ProviderError(
                f"The comfyui provider's workflow made {len(images)} image(s) instead of {BATCH}."
            )
        return images[:BATCH]

    def _check_choices(self, templates: dict[str, Template], node_class: str, info: Any) -> None:
        """A checkpoint or upscale model the workflows load must be one the server has."""
        chosen = {"checkpoint": self.config.get("COMFYUI_CHECKPOINT"),
                  "upscale_model": self.config.get("COMFYUI_UPSCALE_MODEL")}  # fmt: skip
        for template in templates.values():
            for binding, setting in chosen.items():
                for target in template.bindings.get(binding, []):
                    node = template.graph[target.node]
                    if node["class_type"] != node_class:
                        continue
                    wanted = setting or node["inputs"].get(target.inputs[0])
                    choices = _choices(info, target.inputs[0])
                    if choices is not None and wanted not in choices:
                        known = ", ".join(map(str, choices[:10])) or "none"
                        raise ProviderError(
                            f"The comfyui provider has no {binding.replace('_', ' ')} {wanted!r} "
                            f"(it has: {known})."
                        )


def _choices(info: Any, input_name: str) -> list[Any] | None:
    """The allowed values of a combo input in an /object_info entry (old and new shapes), if listed."""
    try:
        spec = info["input"]["required"][input_name]
    except (KeyError, TypeError):
        return None
    if isinstance(spec, list) and spec and isinstance(spec[0], list):
        return spec[0]
    if isinstance(spec, list) and len(spec) > 1 and spec[0] == "COMBO" and isinstance(spec[1], dict):
        options = spec[1].get("options")
        return options if isinstance(options, list) else None
    return None


def _open(
    parts: SplitResult,
    proxy: SplitResult | None,
    timeout: float,
    watchdog: Watchdog,
    tls: Callable[[], ssl.SSLContext],
) -> net.socket:
    """A TCP (for https, TLS from ``tls()``) connection to ``parts``' server, shut down by ``watchdog``;
    through a CONNECT tunnel when there is a ``proxy``."""
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    address = (proxy.hostname, _port(proxy)) if proxy else (parts.hostname, port)
    sock = net.create_connection(address, timeout)
    watchdog.watch(sock)
    try:
        if proxy is not None:
            _tunnel(sock, proxy, str(parts.hostname), port)
        if secure:
            sock = tls().wrap_socket(sock, server_hostname=parts.hostname, do_handshake_on_connect=False)
            watchdog.watch(sock)
            sock.do_handshake()
    except (OSError, websocket.WebSocketException):
        sock.close()
        raise
    return sock


def _tunnel(sock: net.socket, proxy: SplitResult, host: str, port: int) -> None:
    """Ask the proxy on ``sock`` for a tunnel to ``host:port`` (HTTP CONNECT, with Basic
    Proxy-Authorization when the proxy URL has user:password, as requests sends it); a refusal raises."""
    host = host if host.isascii() else host.encode("idna").decode("ascii")  # as requests sends a name
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    headers = {"Host": target}
    username, password = requests.utils.get_auth_from_url(urlunsplit(proxy))
    if username:
        headers.update(urllib3.util.make_headers(proxy_basic_auth=f"{username}:{password}"))
    lines = [f"CONNECT {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    status = _answer_head(sock).split(b"\n", 1)[0].decode("latin-1")
    words = status.split(None, 2)
    if len(words) < 2 or not words[0].startswith("HTTP/") or not words[1].isdigit():
        raise websocket.WebSocketProxyException("the proxy's answer to CONNECT is not HTTP")
    if not 200 <= int(words[1]) < 300:
        said = "".join(c for c in " ".join(words[1:]) if c.isprintable())[:100]
        raise websocket.WebSocketProxyException(f"the proxy answered CONNECT {target} with {said}")


def _answer_head(sock: net.socket) -> bytes:
    """The proxy's answer to CONNECT, to its blank line and at most PROXY_HEAD_BYTES, read a byte at a
    time: what follows it is the tunnel's."""
    head = bytearray()
    while not head.endswith((b"\n\n", b"\n\r\n")):
        if len(head) >= PROXY_HEAD_BYTES:
            raise websocket.WebSocketProxyException(
                f"the proxy's answer to CONNECT is longer than {PROXY_HEAD_BYTES} bytes"
            )
        byte = sock.recv(1)
        if not byte:
            raise websocket.WebSocketProxyException("the proxy's answer to CONNECT broke off")
        head += byte
    return bytes(head)


def _port(parts: SplitResult) -> int | None:
    """The URL's port, its scheme's default without one; None for a port that is not a number."""
    try:
        return parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None


def _queue_state(queue: Any, prompt_id: str) -> str | None:
    """ "running", "pending" or None: where ``prompt_id`` is in a ``GET /queue`` answer."""
    if not isinstance(queue, dict):
        raise ProviderError("The comfyui provider sent an unexpected answer to /queue.")
    for state, key in (("running", "queue_running"), ("pending", "queue_pending")):
        items = queue.get(key) or []
        if not isinstance(items, list):
            raise ProviderError("The comfyui provider sent an unexpected answer to /queue.")
        for item in items:
            if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                return state
    return None


def _uncropped(
    tile: Image.Image,
    size: tuple[int, int],
    original: Image.Image | None = None,
    mask: Image.Image | None = None,
) -> Image.Image:
    """A sampled ``tile`` at ``size`` again. The VAE encoders keep the middle of their input, its sides cut
    to multiples of 8: such a tile goes back where it was cut from, the strips around it from the tile
    scaled, or from ``original`` where ``mask`` is black. Any other size (a workflow of the operator's
    that works at a size of its own) is scaled to fit."""
    width, height = size
    if tile.size == size:
        return tile
    restored = imaging.fit(tile.convert("RGB"), width, height)
    if not (0 <= width - tile.width < 8 and 0 <= height - tile.height < 8):
        return restored
    if original is not None and mask is not None:
        restored = Image.composite(restored, original.convert("RGB"), mask.convert("L"))
    restored.paste(tile.convert("RGB"), ((width - tile.width) // 2, (height - tile.height) // 2))
    return restored


def _fit8(image: Image.Image) -> Image.Image:
    """``image`` cropped to sides that are multiples of 8, as the VAE needs."""
    width, height = _round8(image.width), _round8(image.height)
    return image if (width, height) == image.size else imaging.fit(image, width, height)
