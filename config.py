"""Settings: defaults, the APIFRAME_* environment, and the plan table."""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Plan:
    """A subscription plan: its API rate limit and the credits it grants."""

    name: str
    title: str
    requests_per_minute: int
    credits: int


PLANS: dict[str, Plan] = {
    plan.name: plan
    for plan in (
        Plan("free", "Free", 10, 50),
        Plan("hobby", "Hobby", 30, 200),
        Plan("standard", "Standard", 60, 500),
        Plan("growth", "Growth", 120, 1500),
        Plan("scale", "Scale", 300, 5000),
    )
}

DEFAULT_PLAN = "free"
MAX_RETENTION_DAYS = 36_500  # a century: the most APIFRAME_IMAGE_RETENTION_DAYS (and prune --days) takes


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


# Operations that APIFRAME_PROVIDER_<OPERATION> can route to a provider of their own.
PROVIDER_OPERATIONS = (
    "IMAGINE", "VARIATION", "UPSCALE", "BLEND", "DESCRIBE", "OUTPAINT", "INPAINT", "SHORTEN", "FACESWAP",
)  # fmt: skip

# Flask config key -> (environment variable, parser). Only these are read from the environment.
ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "PORT": ("PORT", int),
    "DATA_DIR": ("APIFRAME_DATA_DIR", str),
    "DATABASE_URL": ("APIFRAME_DATABASE_URL", str),
    "PUBLIC_URL": ("APIFRAME_PUBLIC_URL", str),
    "SECRET_KEY": ("APIFRAME_SECRET_KEY", str),
    "PROVIDER": ("APIFRAME_PROVIDER", str),
    "WORKERS": ("APIFRAME_WORKERS", int),
    "JOB_TIMEOUT": ("APIFRAME_JOB_TIMEOUT", float),
    "LOCAL_LATENCY": ("APIFRAME_LOCAL_LATENCY", float),
    "RATELIMIT_STORAGE_URI": ("APIFRAME_RATELIMIT_STORAGE_URI", str),
    "ALLOW_PRIVATE_URLS": ("APIFRAME_ALLOW_PRIVATE_URLS", _bool),
    "ALLOW_SIGNUP": ("APIFRAME_ALLOW_SIGNUP", _bool),
    "ALLOW_SELF_UPGRADE": ("APIFRAME_ALLOW_SELF_UPGRADE", _bool),
    "IMAGE_FORMAT": ("APIFRAME_IMAGE_FORMAT", str),
    "FETCH_MAX_BYTES": ("APIFRAME_FETCH_MAX_BYTES", int),
    "FETCH_TIMEOUT": ("APIFRAME_FETCH_TIMEOUT", float),
    "MAX_IMAGE_PIXELS": ("APIFRAME_MAX_IMAGE_PIXELS", int),
    "JOB_LEASE": ("APIFRAME_JOB_LEASE", float),
    "WEBHOOK_MAX_ATTEMPTS": ("APIFRAME_WEBHOOK_MAX_ATTEMPTS", int),
    "WEBHOOK_RETRY_BASE": ("APIFRAME_WEBHOOK_RETRY_BASE", float),
    "WEBHOOK_TIMEOUT": ("APIFRAME_WEBHOOK_TIMEOUT", float),
    "WEBHOOK_THREADS": ("APIFRAME_WEBHOOK_THREADS", int),
    "HEALTH_CACHE_SECONDS": ("APIFRAME_HEALTH_CACHE_SECONDS", float),
    "DISPATCH_INTERVAL": ("APIFRAME_DISPATCH_INTERVAL", float),
    # Scale-out: shared image storage, process roles, wake-up across processes, a proxy in front.
    "STORAGE_URL": ("APIFRAME_STORAGE_URL", str),
    "S3_ENDPOINT_URL": ("APIFRAME_S3_ENDPOINT_URL", str),
    "S3_PRESIGN": ("APIFRAME_S3_PRESIGN", _bool),
    "PUBLIC_IMAGE_URL": ("APIFRAME_PUBLIC_IMAGE_URL", str),
    "IMAGE_RETENTION_DAYS": ("APIFRAME_IMAGE_RETENTION_DAYS", int),
    "ROLE": ("APIFRAME_ROLE", str),
    "WAKEUP": ("APIFRAME_WAKEUP", _bool),
    "PROXY_FIX": ("APIFRAME_PROXY_FIX", int),
    "SYNC_WAIT": ("APIFRAME_SYNC_WAIT", float),
    "SYNC_WAITERS": ("APIFRAME_SYNC_WAITERS", int),
    "UPLOAD_MAX_BYTES": ("APIFRAME_UPLOAD_MAX_BYTES", int),
    "EVENT_STREAMS": ("APIFRAME_EVENT_STREAMS", int),
    "EVENT_STREAMS_PER_KEY": ("APIFRAME_EVENT_STREAMS_PER_KEY", int),
    "EVENT_HEARTBEAT": ("APIFRAME_EVENT_HEARTBEAT", float),
    "EVENT_STREAM_SECONDS": ("APIFRAME_EVENT_STREAM_SECONDS", float),
    # Providers: which one does each operation, and how they reach their backends.
    **{f"PROVIDER_{op}": (f"APIFRAME_PROVIDER_{op}", str) for op in PROVIDER_OPERATIONS},
    "PROVIDER_CONNECT_TIMEOUT": ("APIFRAME_PROVIDER_CONNECT_TIMEOUT", float),
    "PROVIDER_RETRIES": ("APIFRAME_PROVIDER_RETRIES", int),
    "PROVIDER_BACKOFF": ("APIFRAME_PROVIDER_BACKOFF", float),
    "PROVIDER_MAX_BYTES": ("APIFRAME_PROVIDER_MAX_BYTES", int),
    "SDWEBUI_URL": ("APIFRAME_SDWEBUI_URL", str),
    "SDWEBUI_AUTH": ("APIFRAME_SDWEBUI_AUTH", str),
    "SDWEBUI_TIMEOUT": ("APIFRAME_SDWEBUI_TIMEOUT", float),
    "SDWEBUI_MODEL": ("APIFRAME_SDWEBUI_MODEL", str),
    "SDWEBUI_SAMPLER": ("APIFRAME_SDWEBUI_SAMPLER", str),
    "SDWEBUI_STEPS": ("APIFRAME_SDWEBUI_STEPS", int),
    "SDWEBUI_CFG_SCALE": ("APIFRAME_SDWEBUI_CFG_SCALE", float),
    "SDWEBUI_NEGATIVE_PROMPT": ("APIFRAME_SDWEBUI_NEGATIVE_PROMPT", str),
    "SDWEBUI_DENOISING_STRENGTH": ("APIFRAME_SDWEBUI_DENOISING_STRENGTH", float),
    "SDWEBUI_BLEND_STRENGTH": ("APIFRAME_SDWEBUI_BLEND_STRENGTH", float),
    "SDWEBUI_UPSCALER": ("APIFRAME_SDWEBUI_UPSCALER", str),
    "SDWEBUI_INTERROGATORS": ("APIFRAME_SDWEBUI_INTERROGATORS", str),
    "SDWEBUI_POLL_INTERVAL": ("APIFRAME_SDWEBUI_POLL_INTERVAL", float),
    "COMFYUI_URL": ("APIFRAME_COMFYUI_URL", str),
    "COMFYUI_HEADERS": ("APIFRAME_COMFYUI_HEADERS", str),
    "COMFYUI_CHECKPOINT": ("APIFRAME_COMFYUI_CHECKPOINT", str),
    "COMFYUI_WORKFLOWS": ("APIFRAME_COMFYUI_WORKFLOWS", str),
    "COMFYUI_UPSCALE_MODEL": ("APIFRAME_COMFYUI_UPSCALE_MODEL", str),
    "COMFYUI_NEGATIVE_PROMPT": ("APIFRAME_COMFYUI_NEGATIVE_PROMPT", str),
    "COMFYUI_TIMEOUT": ("APIFRAME_COMFYUI_TIMEOUT", float),
    "COMFYUI_POLL_INTERVAL": ("APIFRAME_COMFYUI_POLL_INTERVAL", float),
    "OPENAI_BASE_URL": ("APIFRAME_OPENAI_BASE_URL", str),
    "OPENAI_API_KEY": ("APIFRAME_OPENAI_API_KEY", str),
    "OPENAI_IMAGE_MODEL": ("APIFRAME_OPENAI_IMAGE_MODEL", str),
    "OPENAI_VISION_MODEL": ("APIFRAME_OPENAI_VISION_MODEL", str),
    "OPENAI_IMAGE_QUALITY": ("APIFRAME_OPENAI_IMAGE_QUALITY", str),
    "OPENAI_IMAGES_PER_CALL": ("APIFRAME_OPENAI_IMAGES_PER_CALL", int),
    "OPENAI_TIMEOUT": ("APIFRAME_OPENAI_TIMEOUT", float),
    "MJPROXY_URL": ("APIFRAME_MJPROXY_URL", str),
    "MJPROXY_SECRET": ("APIFRAME_MJPROXY_SECRET", str),
    "MJPROXY_TIMEOUT": ("APIFRAME_MJPROXY_TIMEOUT", float),
    "MJPROXY_POLL_INTERVAL": ("APIFRAME_MJPROXY_POLL_INTERVAL", float),
    "MJPROXY_FLAVOR": ("APIFRAME_MJPROXY_FLAVOR", str),
    "APIFRAME_URL": ("APIFRAME_APIFRAME_URL", str),
    "APIFRAME_KEY": ("APIFRAME_APIFRAME_KEY", str),
    "APIFRAME_PROCESS_MODE": ("APIFRAME_APIFRAME_PROCESS_MODE", str),
    "APIFRAME_TIMEOUT": ("APIFRAME_APIFRAME_TIMEOUT", float),
    "APIFRAME_POLL_INTERVAL": ("APIFRAME_APIFRAME_POLL_INTERVAL", float),
}

DEFAULTS: dict[str, Any] = {
    "PORT": 4100,
    "DATA_DIR": "./data",
    "DATABASE_URL": None,  # SQLite file in DATA_DIR
    "PUBLIC_URL": None,  # http://localhost:$PORT
    "SECRET_KEY": None,  # generated once and kept in DATA_DIR
    "PROVIDER": "local",
    "WORKERS": 4,
    "JOB_TIMEOUT": 600.0,
    "LOCAL_LATENCY": 0.0,
    "RATELIMIT_STORAGE_URI": "memory://",
    "ALLOW_PRIVATE_URLS": False,
    "ALLOW_SIGNUP": True,
    "ALLOW_SELF_UPGRADE": True,
    "IMAGE_FORMAT": "png",
    "FETCH_MAX_BYTES": 20 * 1024 * 1024,
    "FETCH_TIMEOUT": 20.0,
    "MAX_IMAGE_PIXELS": 40_000_000,
    # A process renews the lease on the jobs and webhook deliveries it holds; one whose lease has
    # run out belongs to a process that died, and is taken up again by another.
    "JOB_LEASE": 30.0,
    # Webhook delivery: attempt n+1 follows attempt n after about RETRY_BASE * 2**(n-1) seconds,
    # so 8 attempts from a 170 s base span about 6 hours.
    "WEBHOOK_MAX_ATTEMPTS": 8,
    "WEBHOOK_RETRY_BASE": 170.0,
    "WEBHOOK_TIMEOUT": 10.0,
    "WEBHOOK_THREADS": 4,
    "HEALTH_CACHE_SECONDS": 30.0,  # /healthz asks the providers at most this often
    "STORAGE_URL": None,  # file:// the data directory's images
    "S3_ENDPOINT_URL": None,  # AWS itself when unset
    "S3_PRESIGN": False,  # serve S3 images by redirecting to a presigned URL instead of streaming them
    "PUBLIC_IMAGE_URL": None,  # image URLs point here (a public bucket or CDN) instead of PUBLIC_URL/images
    "IMAGE_RETENTION_DAYS": 0,  # delete a job's images this many days after it ended (0: keep them forever)
    "ROLE": "all",  # web: serve HTTP with no job pool or webhook sender (`flask --app app worker` runs them)
    "WAKEUP": True,  # on PostgreSQL, LISTEN/NOTIFY wakes idle workers in every process when a job arrives
    "PROXY_FIX": 0,  # how many proxies in front set X-Forwarded-For/-Proto/-Host/-Prefix (0: trust none)
    # The OpenAI Images API answers synchronously: a request waits up to SYNC_WAIT seconds for its jobs,
    # and at most SYNC_WAITERS requests wait at once per process (keep it below GUNICORN_THREADS).
    "SYNC_WAIT": 300.0,
    "SYNC_WAITERS": 8,
    "UPLOAD_MAX_BYTES": 20 * 1024 * 1024,  # a multipart request with images (OpenAI edits, variations)
    # Job event streams (SSE): each holds a server thread, so a process holds at most EVENT_STREAMS
    # (gunicorn.conf.py gives it that many threads on top of GUNICORN_THREADS), a key EVENT_STREAMS_PER_KEY.
    "EVENT_STREAMS": 32,
    "EVENT_STREAMS_PER_KEY": 8,
    "EVENT_HEARTBEAT": 15.0,  # seconds between comment lines that keep idle connections open
    "EVENT_STREAM_SECONDS": 300.0,  # a stream then closes; EventSource reconnects with Last-Event-ID
    "EVENT_POLL_INTERVAL": 1.0,  # how often a process reads the rows of the jobs its streams follow
    **{f"PROVIDER_{op}": None for op in PROVIDER_OPERATIONS},
    "PROVIDER_CONNECT_TIMEOUT": 5.0,
    "PROVIDER_RETRIES": 3,  # extra attempts after a connection error, timeout, 408, 409, 429 or 5xx
    "PROVIDER_BACKOFF": 1.0,  # first retry waits about this long, doubling each time (with jitter)
    "PROVIDER_MAX_BYTES": 50 * 1024 * 1024,
    "SDWEBUI_URL": None,
    "SDWEBUI_AUTH": None,
    "SDWEBUI_TIMEOUT": 600.0,
    "SDWEBUI_MODEL": None,
    "SDWEBUI_SAMPLER": "Euler a",
    "SDWEBUI_STEPS": 25,
    "SDWEBUI_CFG_SCALE": 7.0,
    "SDWEBUI_NEGATIVE_PROMPT": "",
    "SDWEBUI_DENOISING_STRENGTH": 0.55,
    "SDWEBUI_BLEND_STRENGTH": 0.75,
    "SDWEBUI_UPSCALER": "R-ESRGAN 4x+",
    "SDWEBUI_INTERROGATORS": "clip,deepdanbooru",
    "SDWEBUI_POLL_INTERVAL": 1.0,
    "COMFYUI_URL": "http://127.0.0.1:8188",
    "COMFYUI_HEADERS": None,  # JSON object or "Name: value" lines, for an authenticating reverse proxy
    "COMFYUI_CHECKPOINT": None,  # the default workflows' own (v1-5-pruned-emaonly.safetensors)
    "COMFYUI_WORKFLOWS": None,  # directory of OPERATION.json files replacing the defaults
    "COMFYUI_UPSCALE_MODEL": None,  # upscale with this model (UpscaleModelLoader) instead of image scaling
    "COMFYUI_NEGATIVE_PROMPT": None,  # the workflows' own
    "COMFYUI_TIMEOUT": 60.0,  # read timeout of one HTTP call (a generation is followed, not awaited)
    "COMFYUI_POLL_INTERVAL": 1.0,  # seconds between /history polls when the websocket is down
    "OPENAI_BASE_URL": "https://api.openai.com/v1",
    "OPENAI_API_KEY": None,
    "OPENAI_IMAGE_MODEL": "gpt-image-2",
    "OPENAI_VISION_MODEL": "gpt-4o-mini",
    "OPENAI_IMAGE_QUALITY": None,  # model default
    "OPENAI_IMAGES_PER_CALL": None,  # by model: 1 for dall-e-3, else 4
    "OPENAI_TIMEOUT": 300.0,
    "MJPROXY_URL": None,
    "MJPROXY_SECRET": None,
    "MJPROXY_TIMEOUT": 30.0,
    "MJPROXY_POLL_INTERVAL": 3.0,
    "MJPROXY_FLAVOR": "auto",  # which midjourney-proxy: asked of the proxy, or trueai or novicezk
    "APIFRAME_URL": "https://api.apiframe.pro",
    "APIFRAME_KEY": None,
    "APIFRAME_PROCESS_MODE": "fast",
    "APIFRAME_TIMEOUT": 30.0,
    "APIFRAME_POLL_INTERVAL": 3.0,
    "DISPATCH_INTERVAL": 1.0,
    "START_WORKERS": True,
    "MAX_CONTENT_LENGTH": 1024 * 1024,
}


@dataclass(frozen=True)
class Range:
    """The values a numeric setting allows: at least ``low`` (more than it if ``above``), at most ``high``.

    Never nan or infinity: a float setting becomes a timeout, a sleep or a lease, where either breaks.
    """

    low: float
    high: float = math.inf
    above: bool = False

    def allows(self, value: float) -> bool:
        """Whether ``value`` is in the range."""
        low_ok = value > self.low if self.above else value >= self.low
        return math.isfinite(value) and low_ok and value <= self.high

    def describe(self) -> str:
        """What the range asks of a value, as the rest of a sentence that starts with its variable."""
        if self.high != math.inf:
            return f"must be from {self.low:g} to {self.high:g}"
        if self.above:
            return f"must be more than {self.low:g}"
        return "must not be negative" if self.low == 0 else f"must be at least {self.low:g}"


POSITIVE = Range(0, above=True)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1)
POLL = Range(0.01)  # a loop that waits less than this between rounds is a busy loop

# Flask config key -> the values it allows; every numeric setting of ENVIRONMENT has one, checked at load.
RANGES: dict[str, Range] = {
    "PORT": Range(1, 65535),
    "WORKERS": Range(1),
    "JOB_TIMEOUT": POSITIVE,
    "LOCAL_LATENCY": NON_NEGATIVE,
    "FETCH_MAX_BYTES": Range(1),
    "FETCH_TIMEOUT": POSITIVE,
    "MAX_IMAGE_PIXELS": Range(1),
    "JOB_LEASE": Range(1),  # renewed every third of it; shorter, a renewal would race the lease's end
    "WEBHOOK_MAX_ATTEMPTS": Range(1),
    "WEBHOOK_RETRY_BASE": NON_NEGATIVE,
    "WEBHOOK_TIMEOUT": POSITIVE,
    "WEBHOOK_THREADS": Range(1),
    "HEALTH_CACHE_SECONDS": NON_NEGATIVE,  # 0: check on every request
    "DISPATCH_INTERVAL": POLL,
    "PROXY_FIX": NON_NEGATIVE,
    "IMAGE_RETENTION_DAYS": Range(0, MAX_RETENTION_DAYS),  # 0: images are kept forever
    "SYNC_WAIT": POSITIVE,
    "SYNC_WAITERS": Range(1),
    "UPLOAD_MAX_BYTES": Range(1),
    "EVENT_STREAMS": NON_NEGATIVE,  # 0: every stream is refused, and pages poll instead
    "EVENT_STREAMS_PER_KEY": NON_NEGATIVE,
    "EVENT_HEARTBEAT": Range(0.1),
    "EVENT_STREAM_SECONDS": POSITIVE,
    "PROVIDER_CONNECT_TIMEOUT": POSITIVE,
    "PROVIDER_RETRIES": NON_NEGATIVE,
    "PROVIDER_BACKOFF": NON_NEGATIVE,
    "PROVIDER_MAX_BYTES": Range(1),
    "SDWEBUI_TIMEOUT": POSITIVE,
    "SDWEBUI_STEPS": Range(1),
    "SDWEBUI_CFG_SCALE": NON_NEGATIVE,
    "SDWEBUI_DENOISING_STRENGTH": FRACTION,
    "SDWEBUI_BLEND_STRENGTH": FRACTION,
    "SDWEBUI_POLL_INTERVAL": POLL,
    "COMFYUI_TIMEOUT": POSITIVE,
    "COMFYUI_POLL_INTERVAL": POLL,
    "OPENAI_IMAGES_PER_CALL": Range(1),
    "OPENAI_TIMEOUT": POSITIVE,
    "MJPROXY_TIMEOUT": POSITIVE,
    "MJPROXY_POLL_INTERVAL": POLL,
    "APIFRAME_TIMEOUT": POSITIVE,
    "APIFRAME_POLL_INTERVAL": POLL,
}

IMAGE_FORMATS = ("png", "webp", "jpeg")
MJPROXY_FLAVORS = ("auto", "trueai", "novicezk")
ROLES = ("all", "web")  # what a served process runs besides HTTP; `flask --app app worker` is the worker role


def load(test_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the settings: defaults, then the environment, then ``test_config``."""
    settings = dict(DEFAULTS)
    for key, (variable, parse) in ENVIRONMENT.items():
        raw = os.environ.get(variable)
        if raw is None or raw == "":
            continue
        try:
            settings[key] = parse(raw)
        except ValueError as exc:
            raise ValueError(f"{variable}: {exc}") from None
    if test_config:
        settings.update(test_config)
    return _derive(settings)


def _derive(settings: dict[str, Any]) -> dict[str, Any]:
    """Fill the settings whose defaults depend on others, and check the rest."""
    data_dir = Path(settings["DATA_DIR"]).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings["DATA_DIR"] = str(data_dir)
    if not settings["DATABASE_URL"]:
        settings["DATABASE_URL"] = f"sqlite:///{data_dir / 'apiframe.db'}"
    if not settings["PUBLIC_URL"]:
        settings["PUBLIC_URL"] = f"http://localhost:{settings['PORT']}"
    settings["PUBLIC_URL"] = _base_url("APIFRAME_PUBLIC_URL", settings["PUBLIC_URL"])
    if not settings["SECRET_KEY"]:
        settings["SECRET_KEY"] = _stored_secret(data_dir / "secret_key")
    if not settings["STORAGE_URL"]:
        settings["STORAGE_URL"] = f"file://{data_dir / 'images'}"
    if settings["PUBLIC_IMAGE_URL"]:
        settings["PUBLIC_IMAGE_URL"] = _base_url("APIFRAME_PUBLIC_IMAGE_URL", settings["PUBLIC_IMAGE_URL"])
    if settings["ROLE"] not in ROLES:
        raise ValueError(f"APIFRAME_ROLE must be one of {', '.join(ROLES)}")
    settings["IMAGE_FORMAT"] = settings["IMAGE_FORMAT"].lower()
    if settings["IMAGE_FORMAT"] not in IMAGE_FORMATS:
        raise ValueError(f"APIFRAME_IMAGE_FORMAT must be one of {', '.join(IMAGE_FORMATS)}")
    settings["MJPROXY_FLAVOR"] = settings["MJPROXY_FLAVOR"].lower()
    if settings["MJPROXY_FLAVOR"] not in MJPROXY_FLAVORS:
        raise ValueError(f"APIFRAME_MJPROXY_FLAVOR must be one of {', '.join(MJPROXY_FLAVORS)}")
    for key, allowed in RANGES.items():
        value = settings[key]
        if value is not None and not allowed.allows(value):
            raise ValueError(f"{ENVIRONMENT[key][0]} {allowed.describe()}, got {value!r}")
    return settings


def _base_url(variable: str, url: str) -> str:
    """``url`` without its trailing slash, if clients can open it: image URLs are built on it as it is."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{variable} must be an absolute http:// or https:// URL with a host, got {url!r}")
    return url.rstrip("/")


def _stored_secret(path: Path) -> str:
    """Read the secret kept at ``path``, creating it on first use (safe across processes)."""
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(secrets.token_urlsafe(48))
        temporary.chmod(0o600)
        try:
            os.link(temporary, path)  # atomic: the first process to link wins
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return path.read_text().strip()
