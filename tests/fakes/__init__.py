"""Fake backends served over real HTTP on loopback, written from each backend's published API.

``FakeBackend`` records every request (method, path, query, headers, JSON body or multipart form)
and can be told to misbehave: answer 5xx/429 (with Retry-After), send garbage, answer slowly, or
never answer at all, flood the client with a huge answer, or redirect elsewhere. Subclasses
implement ``handle`` for their backend's routes.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from providers.http import Deadline

HANG_LIMIT = 30.0  # a hanging answer gives up after this long, even if the test forgot to close


def png(size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """PNG bytes of a real image: a colour gradient, so tiles and grids differ from each other."""
    image = Image.new("RGB", size, color)
    for x in range(0, size[0], max(1, size[0] // 8)):
        shade = tuple(min(255, c + x * 60 // max(1, size[0])) for c in color)
        image.paste(shade, (x, 0, min(size[0], x + max(1, size[0] // 8)), size[1]))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def b64png(size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 40, 40)) -> str:
    """``png`` as base64 text."""
    return base64.b64encode(png(size, color)).decode()


def decode_image(data: str) -> Image.Image:
    """A base64 image (bare or a data URL) sent to a fake."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def grid_png(tile: tuple[int, int], colors: list[tuple[int, int, int]]) -> bytes:
    """A 2x2 grid PNG of four differently coloured tiles."""
    grid = Image.new("RGB", (tile[0] * 2, tile[1] * 2))
    for i, color in enumerate(colors[:4]):
        grid.paste(Image.open(io.BytesIO(png(tile, color))), ((i % 2) * tile[0], (i // 2) * tile[1]))
    buffer = io.BytesIO()
    grid.save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Recorded:
    """One request as the fake saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class Reply:
    """What a fake answers."""

    status: int = 200
    body: Any = None  # JSON-able, or bytes sent as they are
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    """A misbehaviour to apply to the next matching request(s)."""

    kind: str  # "status", "garbage", "hang", "slow", "flood"
    path: str | None = None
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    size: int = 0


class FakeBackend:
    """A recording HTTP server on loopback; subclasses answer their backend's routes in ``handle``."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.faults: deque[Fault] = deque()
        self.files: dict[str, bytes] = {}  # images served at these paths
        self.flooded = 0  # bytes sent by "flood" answers
        self.closing = threading.Event()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                fake._serve(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                fake._serve(self, "POST")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    # ---- switches ----------------------------------------------------------------------------

    def fail(self, status: int = 500, times: int = 1, path: str | None = None, **headers: str) -> None:
        """Answer the next ``times`` matching requests with ``status`` (and headers, e.g. Retry_After)."""
        hdrs = {name.replace("_", "-"): value for name, value in headers.items()}
        self.faults.extend(Fault("status", path, status, hdrs) for _ in range(times))

    def garbage(self, times: int = 1, path: str | None = None) -> None:
        """Answer the next matching requests 200 with a body that is not JSON."""
        self.faults.extend(Fault("garbage", path) for _ in range(times))

    def hang(self, times: int = 1, path: str | None = None) -> None:
        """Never answer the next matching requests (until the fake closes)."""
        self.faults.extend(Fault("hang", path) for _ in range(times))

    def slow(self, seconds: float, times: int = 1, path: str | None = None) -> None:
        """Answer the next matching requests normally, after ``seconds``."""
        self.faults.extend(Fault("slow", path, seconds=seconds) for _ in range(times))

    def flood(
        self, megabytes: int, times: int = 1, path: str | None = None, status: int = 200, **headers: str
    ) -> None:
        """Answer the next matching requests with ``megabytes`` MiB of JSON (one long string)."""
        self.faults.extend(Fault("flood", path, status, headers, size=megabytes) for _ in range(times))

    def redirect(self, to: str, times: int = 1, path: str | None = None, status: int = 307) -> None:
        """Redirect the next matching requests to ``to`` (another server's URL, say)."""
        self.faults.extend(Fault("status", path, status, {"Location": to}) for _ in range(times))

    def serve_image(self, path: str, data: bytes) -> str:
        """Serve ``data`` as a PNG at ``path``; returns its URL."""
        self.files[path] = data
        return self.url + path

    # ---- inspection --------------------------------------------------------------------------

    def calls(self, path: str | None = None) -> list[Recorded]:
        """Recorded requests, all or those to ``path``."""
        with self.lock:
            return [r for r in self.requests if path is None or r.path == path]

    def paths(self) -> list[str]:
        """``"METHOD /path"`` of every request, in order."""
        return [f"{r.method} {r.path}" for r in self.calls()]

    def close(self) -> None:
        """Stop serving (hanging answers give up)."""
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- serving -----------------------------------------------------------------------------

    def handle(self, request: Recorded) -> Reply:
        """Answer one request; subclasses route here."""
        return Reply(404, {"detail": "Not Found"})

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        request = self._record(handler, method)
        fault = self._next_fault(request.path)
        if fault is not None and fault.kind == "hang":
            self.closing.wait(HANG_LIMIT)
            handler.close_connection = True
            return
        if fault is not None and fault.kind == "flood":
            self._flood(handler, fault)
            return
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind == "status":
            reply = Reply(fault.status, {"error": {"message": "upstream trouble"}}, headers=fault.headers)
        elif fault is not None and fault.kind == "garbage":
            reply = Reply(200, b"<html>Bad gateway</html>", "text/html")
        elif method == "GET" and request.path in self.files:
            reply = Reply(200, self.files[request.path], "image/png")
        else:
            reply = self.handle(request)
        self._send(handler, reply)

    def _next_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.path is None or fault.path == path:
                    self.faults.remove(fault)
                    return fault
        return None

    def _record(self, handler: BaseHTTPRequestHandler, method: str) -> Recorded:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        request = Recorded(method, parts.path, parse_qs(parts.query), dict(handler.headers.items()), body)
        content_type = handler.headers.get("Content-Type", "")
        if content_type.startswith("application/json") and body:
            try:
                request.json = json.loads(body)
            except ValueError:
                request.json = None
        elif content_type.startswith("multipart/form-data"):
            request.form, request.files = _multipart(content_type, body)
        with self.lock:
            self.requests.append(request)
        return request

    def _flood(self, handler: BaseHTTPRequestHandler, fault: Fault) -> None:
        """``{"images": ["AAAA…"]}`` with ``fault.size`` MiB of A, chunked, unless the client hangs up."""
        handler.send_response(fault.status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        for name, value in fault.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.close_connection = True
        chunks = [b'{"images": ["'] + [b"A" * (1 << 20)] * fault.size + [b'"]}', b""]
        try:
            for chunk in chunks:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.flooded += len(chunk)
        except OSError:  # the client hung up, as it should
            pass

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.content_type)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
    """Fields and files of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    form, files = {}, []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename():
            files.append((name, payload))
        else:
            form[name] = payload.decode()
    return form, files


class Ctx(Deadline):
    """A JobContext for calling a provider directly: a deadline, a cancel switch, and recorded progress."""

    def __init__(self, seconds: float = 20.0) -> None:
        super().__init__(seconds)
        self.reported: list[int] = []

    def cancel_after(self, seconds: float) -> None:
        """Cancel the job ``seconds`` from now."""
        threading.Timer(seconds, self.stop.set).start()

    def progress(self, percent: int) -> None:
        self.check()
        self.reported.append(percent)


def provider_settings(**overrides: Any) -> dict[str, Any]:
    """Settings for building a provider directly in a test: the defaults, with quick retries and polls."""
    import config

    fast = {
        "PROVIDER_RETRIES": 2,
        "PROVIDER_BACKOFF": 0.01,
        "PROVIDER_CONNECT_TIMEOUT": 1.0,
        "SDWEBUI_POLL_INTERVAL": 0.02,
        "MJPROXY_POLL_INTERVAL": 0.01,
        "APIFRAME_POLL_INTERVAL": 0.01,
        "SDWEBUI_TIMEOUT": 5.0,
        "OPENAI_TIMEOUT": 5.0,
        "MJPROXY_TIMEOUT": 5.0,
        "APIFRAME_TIMEOUT": 5.0,
        "COMFYUI_TIMEOUT": 5.0,
        "COMFYUI_POLL_INTERVAL": 0.02,
    }
    return {**config.DEFAULTS, **fast, **overrides}
