"""What every HTTP provider needs: one session per backend, bounded retries, JSON, images, polling.

Backend URLs come from the operator (often a GPU box on the LAN), so these calls do not go through
the SSRF filter in ``fetch.py``, which is only for URLs users give us. Every wait goes through the
job's context, so cancellation and the deadline cut retries and polling short; read timeouts never
outlast the job, and a watchdog bounds each attempt (and each download) by the wall clock, so a
backend that trickles bytes cannot hold the thread past it. Errors become ``ProviderError``s that
name the provider and never carry secrets.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import logging
import math
import os
import random
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
from PIL import Image
from urllib3.exceptions import NewConnectionError

import imaging
from fetch import USER_AGENT
from providers import JobAborted, JobCancelled, JobContext, JobTimedOut, ProviderError
from watchdog import Watchdog, watch_session

log = logging.getLogger(__name__)

# Tried again, as OpenAI's SDKs do: a request timeout, a lock conflict, a rate limit, a server error.
RETRY_STATUSES = frozenset({408, 409, 429, *range(500, 600)})
# A call that makes (and may bill) something upstream is sent again only after an answer saying it was
# refused before any work: a rate limit, or a server that is not taking requests.
REFUSED_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER = 60.0  # a server that asks for a longer wait is not tried again
MAX_BACKOFF = 30.0
CHECK_SECONDS = 10.0  # a health check gives up after this long
PROGRESS_SHARE = 90  # backend progress 0-100 maps to job progress 0-90; storing takes the rest
# A JSON answer carries at most this many base64 images: sdwebui's four and, with return_grid, the grid.
ANSWER_IMAGES = 5
ANSWER_SLACK = 1024 * 1024  # the rest of an answer: info, echoed parameters, prompts, data: prefixes
MIN_TILE_SIDE = 16  # a grid is cut into four tiles at least this big a side; a smaller one is broken

T = TypeVar("T")


class HttpStatusError(ProviderError):
    """The backend answered with an HTTP status we do not retry; ``body`` is its decoded JSON, if any."""

    def __init__(self, message: str, status: int, body: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True)
class HttpSettings:
    """How a provider talks to its backend."""

    connect_timeout: float
    read_timeout: float
    retries: int
    backoff: float
    max_bytes: int
    max_pixels: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any], read_timeout_key: str) -> HttpSettings:
        """The shared PROVIDER_* settings plus this provider's own read timeout."""
        return cls(
            connect_timeout=float(config["PROVIDER_CONNECT_TIMEOUT"]),
            read_timeout=float(config[read_timeout_key]),
            retries=int(config["PROVIDER_RETRIES"]),
            backoff=float(config["PROVIDER_BACKOFF"]),
            max_bytes=int(config["PROVIDER_MAX_BYTES"]),
            max_pixels=int(config["MAX_IMAGE_PIXELS"]),
        )

    @property
    def max_answer_bytes(self) -> int:
        """The longest answer read: ANSWER_IMAGES images of ``max_bytes``, base64-encoded, plus slack."""
        return ANSWER_IMAGES * 4 * math.ceil(self.max_bytes / 3) + ANSWER_SLACK


class Deadline:
    """A JobContext for work outside a job (health checks, background calls): a deadline and a stop switch."""

    def __init__(self, seconds: float, stop: threading.Event | None = None) -> None:
        self.deadline = time.monotonic() + seconds
        self.stop = stop or threading.Event()

    def progress(self, percent: int) -> None:
        """Progress goes nowhere; only stopping matters."""
        self.check()

    def check(self) -> None:
        """Raise once stopped or past the deadline."""
        if self.stop.is_set():
            raise JobCancelled()
        if time.monotonic() >= self.deadline:
            raise JobTimedOut()

    def sleep(self, seconds: float) -> None:
        """Wait, waking early when stopped."""
        self.check()
        self.stop.wait(max(0.0, min(seconds, self.remaining())))
        self.check()

    def remaining(self) -> float:
        """Seconds left."""
        return max(0.0, self.deadline - time.monotonic())


class BackendSession(requests.Session):
    """A session whose credential headers never follow a redirect away from the backend's origin.

    requests strips only Authorization, and only when the host changes; a custom header (a proxy's
    secret, a token in front of ComfyUI) would go to whatever host a redirect names.
    """

    def __init__(self, same_origin: Callable[[str], bool], credentials: Iterable[str]) -> None:
        super().__init__()
        self.same_origin = same_origin
        self.credentials = ["Authorization", *credentials]

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        """Drop every credential header once a redirect leaves the backend (scheme, host and port)."""
        if not self.same_origin(prepared_request.url or ""):
            for name in self.credentials:
                prepared_request.headers.pop(name, None)
        super().rebuild_auth(prepared_request, response)


class Backend:
    """A provider's session with its backend: base URL, auth, timeouts, retries and decoding."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        settings: HttpSettings,
        *,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.settings = settings
        self.auth_headers = dict(headers or {})
        self.auth = auth
        self.secrets = [secret for secret in secrets if secret]
        self.session = watch_session(BackendSession(self._same_origin, list(self.auth_headers)))
        self.session.hooks["response"].append(self._read_redirect)
        self.session.headers["User-Agent"] = USER_AGENT

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on the backend."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def tls_context(self) -> ssl.SSLContext:
        """TLS for a socket the provider opens itself, trusting what its HTTP calls trust.

        requests verifies against REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE when set (a private CA in front
        of a GPU box), else certifi's bundle; a socket beside those calls must accept the same server.
        """
        verify = self.session.merge_environment_settings(self.base_url, {}, None, None, None)["verify"]
        trusted = verify if isinstance(verify, str) else requests.certs.where()
        if os.path.isdir(trusted):
            return ssl.create_default_context(capath=trusted)
        return ssl.create_default_context(cafile=trusted)

    def proxy(self, url: str) -> str | None:
        """The proxy URL the HTTP calls to ``url`` go through, or None when they connect directly.

        requests' own choice (the session's ``trust_env`` and proxies, HTTP_PROXY, HTTPS_PROXY,
        ALL_PROXY and NO_PROXY, for the URL's scheme), so that a socket beside those calls goes
        the same way.
        """
        proxies = self.session.merge_environment_settings(url, {}, None, None, None)["proxies"]
        proxy = requests.utils.select_proxy(url, proxies)
        return requests.utils.prepend_scheme_if_needed(proxy, "http") if proxy else None

    def _same_origin(self, url: str) -> bool:
        mine, theirs = urlsplit(self.base_url), urlsplit(url)
        return (mine.scheme, mine.netloc) == (theirs.scheme, theirs.netloc)

    # ---- requests ----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        ctx: JobContext,
        *,
        retries: int | None = None,
        read_timeout: float | None = None,
        retry_statuses: Collection[int] = RETRY_STATUSES,
        idempotent: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        """Send a request, retrying transient failures; returns a 2xx response or raises ProviderError.

        ``retries`` and ``read_timeout`` override the provider's settings for this call, and
        ``retry_statuses`` the statuses tried again (a backend whose 500 is deterministic leaves it out).
        A call that is not ``idempotent`` (it makes a task, and may bill it, each time it arrives) is sent
        again only when it surely did not arrive (no connection was made) or was refused before any
        work (REFUSED_STATUSES): after a timeout, a cut connection or another error the backend may have
        made the task, and a second try would make it twice.
        The answer is read within the attempt, and no further than ``max_answer_bytes``.
        """
        url = self.url(path)
        response = self._with_retries(
            lambda timeout: self._load(self._send(method, url, timeout, {**kwargs, "stream": True})),
            ctx,
            path,
            retries,
            read_timeout,
            retry_statuses if idempotent else REFUSED_STATUSES.intersection(retry_statuses),
            idempotent,
        )
        if response.status_code >= 300:
            raise self._status_error(response)
        return response

    def check_context(self) -> Deadline:
        """A context for a health check: short, whatever the read timeout of real work."""
        return Deadline(min(CHECK_SECONDS, self.settings.connect_timeout + self.settings.read_timeout))

    def json(self, method: str, path: str, ctx: JobContext, **kwargs: Any) -> Any:
        """Send a request and decode its JSON answer."""
        return self.decode(self.request(method, path, ctx, **kwargs))

    def _send(self, method: str, url: str, timeout: float, kwargs: dict[str, Any]) -> requests.Response:
        headers = dict(kwargs.get("headers") or {})
        options = {key: value for key, value in kwargs.items() if key != "headers"}
        auth = None
        if self._same_origin(url):  # credentials never go to another host (CDNs, storage buckets)
            headers = {**self.auth_headers, **headers}
            auth = self.auth
        timeouts = (min(self.settings.connect_timeout, timeout), timeout)
        return self.session.request(method, url, headers=headers, auth=auth, timeout=timeouts, **options)

    def _load(self, response: requests.Response) -> requests.Response:
        """``response`` with its body read, within ``max_answer_bytes``; a longer one is refused."""
        with response:
            # what requests fills in when it reads a whole body itself
            response._content = self._read_capped(response, self.settings.max_answer_bytes, "answer")
        return response

    def _read_redirect(self, response: requests.Response, **kwargs: Any) -> None:
        """A redirect's body, which requests reads whole before following it, read within the cap."""
        if response.is_redirect:
            self._load(response)

    def _with_retries(
        self,
        send: Callable[[float], requests.Response],
        ctx: JobContext,
        what: str,
        retries: int | None = None,
        read_timeout: float | None = None,
        retry_statuses: Collection[int] = RETRY_STATUSES,
        idempotent: bool = True,
    ) -> requests.Response:
        attempts = (self.settings.retries if retries is None else retries) + 1
        for attempt in range(1, attempts + 1):
            ctx.check()
            timeout = min(read_timeout or self.settings.read_timeout, ctx.remaining())
            if timeout <= 0:
                raise JobTimedOut()
            watchdog = Watchdog(timeout)
            try:
                with watchdog:
                    response = send(timeout)
            except requests.RequestException as exc:
                ctx.check()  # a timeout that used up the job's time is the job's timeout
                reason, wait, detail = self._failure_reason(exc, timeout, watchdog.expired), None, ""
                if not idempotent and not _unsent(exc):
                    raise ProviderError(
                        f"The {self.provider} provider {reason}; the request was not sent again, since it "
                        "may have made the task already (a second one could be made and billed)."
                    ) from None
            else:
                if not should_retry(response, retry_statuses):
                    return response
                reason, wait = f"answered HTTP {response.status_code}", retry_after(response)
                detail = self._detail(response)
                response.close()
            log.warning("%s: %s %s (attempt %d of %d)", self.provider, what, reason, attempt, attempts)
            if attempt == attempts:
                tries = "once" if attempts == 1 else f"{attempts} times"
                message = f"The {self.provider} provider {reason}, {tries}; giving up"
                raise ProviderError(message + (f": {detail}" if detail else "."))
            ctx.sleep(self._backoff(attempt, wait))
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, retry_after_seconds: float | None) -> float:
        """Exponential backoff with jitter, or the server's Retry-After when it asks for longer."""
        delay = min(MAX_BACKOFF, self.settings.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        if retry_after_seconds is not None:
            delay = max(delay, min(retry_after_seconds, MAX_RETRY_AFTER))
        return delay

    def _failure_reason(self, exc: requests.RequestException, timeout: float, expired: bool = False) -> str:
        if expired:
            return f"did not answer within {timeout:g} seconds"
        if isinstance(exc, requests.ConnectTimeout):
            return "could not be reached (connection timed out)"
        if isinstance(exc, requests.Timeout):
            return f"did not answer within {timeout:g} seconds"
        if isinstance(exc, requests.ConnectionError):
            return "could not be reached (connection failed)"
        return f"could not be reached ({type(exc).__name__})"

    def _status_error(self, response: requests.Response) -> HttpStatusError:
        body = self._maybe_json(response)
        status = response.status_code
        if status in (401, 403):
            message = (
                f"The {self.provider} provider did not accept the configured credentials (HTTP {status})."
            )
        else:
            detail = self._detail(response)
            message = f"The {self.provider} provider refused the request (HTTP {status})"
            message += f": {detail}" if detail else "."
        return HttpStatusError(message, status, body)

    def _detail(self, response: requests.Response) -> str:
        """Why the backend says a request failed (its error message, else the status's reason), scrubbed."""
        return self.scrub(error_detail(self._maybe_json(response)) or response.reason or "")

    @staticmethod
    def _maybe_json(response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            return None

    # ---- decoding ----------------------------------------------------------------------------

    def decode(self, response: requests.Response) -> Any:
        """The response's JSON, or a ProviderError that says the answer was not JSON."""
        try:
            return response.json()
        except ValueError:
            raise ProviderError(
                f"The {self.provider} provider sent an answer that is not valid JSON "
                f"(HTTP {response.status_code})."
            ) from None

    def field(self, body: Any, *keys: str | int) -> Any:
        """``body[k1][k2]...``, or a ProviderError naming the missing field."""
        value = body
        for key in keys:
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError):
                path = ".".join(str(k) for k in keys)
                raise ProviderError(
                    f"The {self.provider} provider sent an answer without '{path}'."
                ) from None
        return value

    def scrub(self, text: str, limit: int = 300) -> str:
        """``text`` without any configured secret, shortened for a job's error."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        text = " ".join(text.split())
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def image_from_base64(self, data: Any) -> Image.Image:
        """Decode a base64 image (bare or a data URL) within the pixel cap."""
        if not isinstance(data, str) or not data:
            raise ProviderError(f"The {self.provider} provider sent an empty image.")
        if data.startswith("data:"):
            data = data.partition(",")[2]
        try:
            raw = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError):
            raise ProviderError(
                f"The {self.provider} provider sent an image that is not valid base64."
            ) from None
        return self.image_from_bytes(raw)

    def image_from_bytes(self, raw: bytes) -> Image.Image:
        """Decode image bytes within the size and pixel caps."""
        if len(raw) > self.settings.max_bytes:
            raise ProviderError(
                f"The {self.provider} provider sent an image larger than {self.settings.max_bytes} bytes."
            )
        try:
            return imaging.decode(raw, self.settings.max_pixels)
        except imaging.ImageError as exc:
            raise ProviderError(f"The {self.provider} provider sent an unusable image: {exc}.") from None

    def download_image(self, url: str, ctx: JobContext) -> Image.Image:
        """Fetch a result image the backend points at (relative URLs are on the backend), within the caps."""
        if not isinstance(url, str) or not url:
            raise ProviderError(f"The {self.provider} provider sent no image URL.")
        if url.startswith("data:"):
            return self.image_from_base64(url)
        absolute = urljoin(self.base_url + "/", url)  # "/x.png" is on the backend's host
        if urlsplit(absolute).scheme not in ("http", "https"):
            raise ProviderError(f"The {self.provider} provider sent an image URL that is not http(s).")
        with Watchdog(ctx.remaining()):  # headers and body, every attempt: never past the job's deadline
            response = self._with_retries(
                lambda timeout: self._send("GET", absolute, timeout, {"stream": True}), ctx, "image download"
            )
            with response:
                if response.status_code != 200:
                    raise ProviderError(
                        f"The {self.provider} provider's result image could not be downloaded "
                        f"(HTTP {response.status_code})."
                    )
                try:
                    raw = self._read_capped(response, self.settings.max_bytes, "result image")
                except requests.RequestException:
                    ctx.check()  # a download cut off by the job's deadline is the job's timeout
                    raise ProviderError(
                        f"The {self.provider} provider's result image download broke off."
                    ) from None
        return self.image_from_bytes(raw)

    def download_grid(self, url: str, ctx: JobContext) -> Image.Image:
        """A 2x2 grid the backend points at (``download_image``), big enough to cut into four tiles."""
        grid = self.download_image(url, ctx)
        if min(grid.size) < 2 * MIN_TILE_SIDE:
            side = 2 * MIN_TILE_SIDE
            raise ProviderError(
                f"The {self.provider} provider sent a {grid.width}x{grid.height} grid; a grid must be at "
                f"least {side}x{side} pixels to be cut into four tiles."
            )
        return grid

    def _read_capped(self, response: requests.Response, limit: int, what: str) -> bytes:
        """The body of a streamed ``response``; a ProviderError as soon as it is past ``limit`` bytes."""
        declared = response.headers.get("Content-Length", "")
        too_large = f"The {self.provider} provider's {what} is larger than {limit} bytes."
        if declared.isdigit() and int(declared) > limit:
            raise ProviderError(too_large)
        chunks, size = [], 0
        for chunk in response.iter_content(chunk_size=65536):
            size += len(chunk)
            if size > limit:
                raise ProviderError(too_large)
            chunks.append(chunk)
        return b"".join(chunks)

    # ---- long-running work -------------------------------------------------------------------

    def poll(
        self, ctx: JobContext, check_once: Callable[[], tuple[bool, float | None, T]], interval: float
    ) -> T:
        """Call ``check_once`` (-> done, percent or None, value) until done, reporting progress between."""
        while True:
            done, percent, value = check_once()
            if done:
                percent = 100
            if percent is not None:
                ctx.progress(scaled(percent))
            if done:
                return value
            ctx.sleep(interval)

    def while_running(
        self,
        ctx: JobContext,
        call: Callable[[JobContext], T],
        read_progress: Callable[[JobContext], float | None],
        interval: float,
    ) -> T:
        """Run ``call`` on a helper thread and ``read_progress`` every ``interval`` seconds on another.

        The helpers get their own context (the same deadline, stopped when this job stops or the call
        ends), so they never touch the job's database row; this thread reports the progress last read
        (backend percent, or None) and, since it never waits on the backend itself, notices the call's
        end, a cancel or the deadline within a tenth of a second. On cancellation or timeout the
        helpers are told to stop and the JobAborted propagates; the caller interrupts the backend.
        """
        stop = threading.Event()
        detached = Deadline(ctx.remaining(), stop)
        done = threading.Event()
        outcome: dict[str, Any] = {}
        latest: dict[str, float] = {}  # the progress last read

        def run() -> None:
            try:
                outcome["value"] = call(detached)
            except BaseException as exc:  # handed to the job's thread below
                outcome["error"] = exc
            finally:
                done.set()

        def watch() -> None:
            try:
                while not stop.wait(interval):
                    percent = read_progress(detached)
                    if percent is not None:
                        latest["percent"] = percent
            except JobAborted:
                pass

        threading.Thread(target=run, name=f"{self.provider}-call", daemon=True).start()
        threading.Thread(target=watch, name=f"{self.provider}-progress", daemon=True).start()
        reported = None
        try:
            while not done.wait(min(0.1, interval)):
                ctx.check()
                percent = latest.get("percent")
                if percent is not None and percent != reported:
                    ctx.progress(scaled(percent))
                    reported = percent
        finally:
            stop.set()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]


def scaled(percent: float) -> int:
    """Backend progress (0-100) as job progress, leaving room for storing the images."""
    return int(max(0.0, min(100.0, float(percent))) * PROGRESS_SHARE / 100)


def _unsent(exc: requests.RequestException) -> bool:
    """Whether a request surely never reached the backend: its connection was never made."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None  # urllib3's MaxRetryError
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, NewConnectionError)


def should_retry(response: requests.Response, statuses: Collection[int] = RETRY_STATUSES) -> bool:
    """Whether a failed answer is worth another attempt, decided as OpenAI's SDKs decide it.

    Not when the server asks for a wait past MAX_RETRY_AFTER (a spent quota, say: its message says
    so); else as the server's ``X-Should-Retry: true|false`` says; else when the status is in ``statuses``.
    """
    if response.status_code < 400:
        return False
    wait = retry_after(response)
    if wait is not None and wait > MAX_RETRY_AFTER:
        return False
    verdict = response.headers.get("X-Should-Retry", "").strip().lower()
    if verdict in ("true", "false"):
        return verdict == "true"
    return response.status_code in statuses


def retry_after(response: requests.Response) -> float | None:
    """Seconds the server asks to wait: Retry-After-Ms, else Retry-After (seconds or an HTTP date), if any."""
    try:
        return max(0.0, float(response.headers["Retry-After-Ms"]) / 1000)
    except (KeyError, ValueError):
        pass
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_detail(body: Any) -> str:
    """The human message in a JSON error body, in the shapes common backends use."""
    if isinstance(body, str):
        return body
    if not isinstance(body, dict):
        return ""
    keys = ("error", "detail", "message", "description", "errors")
    if isinstance(body.get("error"), str) and ("detail" in body or "errors" in body):
        # AUTOMATIC1111's api_middleware: the exception's class name, its HTTP detail, then str(exception)
        keys = ("errors", "error")
        if isinstance(body.get("detail"), str) and body["detail"].strip():
            keys = ("detail", *keys)
    for key in keys:
        value = body.get(key)
        if isinstance(value, dict):
            value = value.get("message") or value.get("msg")
        elif isinstance(value, list) and value:
            first = value[0]
            value = _validation_message(first) if isinstance(first, dict) else first
        if value:
            return str(value)
    return ""


def _validation_message(error: dict[str, Any]) -> Any:
    """One item of FastAPI's 422 ``detail`` list: ``"steps: value is not a valid integer"``."""
    message = error.get("msg") or error.get("message")
    loc = error.get("loc")
    if not message or not isinstance(loc, list):
        return message
    path = ".".join(str(part) for part in (loc[1:] if loc[:1] == ["body"] else loc))
    return f"{path}: {message}" if path else message


def data_url(image: Image.Image) -> str:
    """``image`` as a ``data:image/png;base64,...`` URL."""
    return "data:image/png;base64," + imaging.png_base64(image)


def parse_percent(value: Any) -> float | None:
    """``"42%"``, ``"42"`` or ``42`` -> 42.0 (clamped to 0-100); None if unreadable."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip().rstrip("%").strip()
    try:
        return max(0.0, min(100.0, float(text)))
    except ValueError:
        return None
