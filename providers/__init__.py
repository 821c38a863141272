"""Providers turn inputs into pixels or text, behind one small interface.

A provider never touches the database, stores files, fetches user URLs or sends webhooks: the
gateway does those once, for all providers. It reports progress and checks for cancellation and
the deadline through the JobContext it is given.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from flask import current_app
from PIL import Image

import imaging
from providers import procedural

log = logging.getLogger(__name__)

# The operations a provider can implement. Several API operations may run as one of these (pan and
# zoom both run as outpaint); operations.py says which.
OPERATIONS = (
    "imagine", "variation", "upscale", "blend", "describe", "outpaint", "inpaint", "shorten", "faceswap",
)  # fmt: skip


class JobAborted(Exception):
    """The job must stop now: it was cancelled or ran out of time."""


class JobCancelled(JobAborted):
    """The job was cancelled (or another worker took it over)."""


class JobTimedOut(JobAborted):
    """The job ran past its deadline."""


class ProviderError(Exception):
    """The provider could not do the job; the message is shown to the user as the job's error."""


class UnsupportedOperation(ProviderError):
    """The provider cannot do this operation at all."""


class JobContext(Protocol):
    """What a running job offers its provider."""

    def progress(self, percent: int) -> None:
        """Report progress (0-99; the gateway sets 100 on success). Raises JobAborted to stop."""

    def check(self) -> None:
        """Raise JobAborted if the job was cancelled or is past its deadline."""

    def sleep(self, seconds: float) -> None:
        """Wait, waking early (with JobAborted) on cancellation or the deadline."""

    def remaining(self) -> float:
        """Seconds left before the job's deadline."""


@dataclass(frozen=True)
class ImagineRequest:
    """Text to four images."""

    prompt: str
    width: int
    height: int
    aspect_ratio: str = "1:1"
    version: str = "6.1"
    quality: float = 1
    style: str | None = None
    chaos: float = 0
    stylize: float = 100
    seed: int | None = None


DEFAULT_VARIATION_STRENGTH = 0.5  # between a subtle variation's 0.25 and a strong one's 0.75


@dataclass(frozen=True)
class VariationRequest:
    """One tile of a finished job to four new images like it."""

    image: Image.Image
    index: int
    prompt: str | None = None  # the job's own, else its parent's
    own_prompt: bool = False  # ``prompt`` is the job's own (the user's), not its parent's
    parent_ref: str | None = None
    parent_provider: str | None = None  # the provider that made the parent (``parent_ref`` is its id)
    seed: int | None = None
    # How far the four may go from the image, 0 to 1; None: the provider's default.
    strength: float | None = None
    mode: str | None = None  # None: a tile of a grid; "strong" or "subtle": an upscaled image
    aspect_ratio: str | None = None  # a new shape the request asked for (``image`` is reframed to it already)

    def strength_or(self, default: float) -> float:
        """The strength asked for, or ``default`` when the request asks none."""
        return default if self.strength is None else self.strength


@dataclass(frozen=True)
class UpscaleRequest:
    """One tile of a finished job, enlarged."""

    image: Image.Image
    index: int
    parent_ref: str | None = None
    parent_provider: str | None = None
    factor: int = 2
    # None: a tile of a grid (upscale 1x); "subtle" or "creative" (which invents finer detail): an
    # upscaled image, again; "highres": any image, enlarged by ``factor`` without inventing anything.
    mode: str | None = None


@dataclass(frozen=True)
class BlendRequest:
    """Two to five images mixed into four new ones."""

    images: list[Image.Image]
    urls: list[str] = field(default_factory=list)  # where the gateway fetched them, for URL-based backends
    width: int = 1024
    height: int = 1024
    seed: int | None = None


@dataclass(frozen=True)
class DescribeRequest:
    """One image to four prompts that could have made it."""

    image: Image.Image
    url: str | None = None


@dataclass(frozen=True)
class OutpaintRequest:
    """An image on a larger canvas, the new area painted to continue it (pan and zoom out).

    The canvas is ``image`` with ``pad`` = (left, top, right, bottom) pixels added around it; each of
    the four results is that canvas at ``width`` x ``height`` (pan keeps the canvas's own size, so the
    parent's pixels stay in place; zoom out shrinks it back to the parent's size).
    """

    image: Image.Image
    pad: tuple[int, int, int, int]
    width: int
    height: int
    prompt: str | None = None  # the job's own, else its parent's
    own_prompt: bool = False  # ``prompt`` is the job's own (the user's), not its parent's
    seed: int | None = None
    direction: str | None = None  # pan: "up", "down", "left" or "right"
    zoom: float | None = None  # zoom out: the ratio, 1 to 2 (1: make square)
    parent_ref: str | None = None
    parent_provider: str | None = None


@dataclass(frozen=True)
class InpaintRequest:
    """An image with one region painted anew: where ``mask`` (mode L, the image's size) is white."""

    image: Image.Image
    mask: Image.Image
    prompt: str | None = None  # the job's own, else its parent's
    own_prompt: bool = False  # ``prompt`` is the job's own (the user's), not its parent's
    seed: int | None = None
    parent_ref: str | None = None
    parent_provider: str | None = None


@dataclass(frozen=True)
class ShortenRequest:
    """A prompt to five shorter ones that keep its most important words."""

    prompt: str


@dataclass(frozen=True)
class FaceSwapRequest:
    """The face of ``swap`` put on the face in ``target``: one image."""

    target: Image.Image
    swap: Image.Image
    target_url: str | None = None  # where the gateway fetched them, for URL-based backends
    swap_url: str | None = None


@dataclass
class Result:
    """What a provider made: four tiles (or a grid to cut into four), one image, or text."""

    tiles: list[Image.Image] | None = None
    grid: Image.Image | None = None
    image: Image.Image | None = None
    descriptions: list[str] | None = None  # describe: four prompts; shorten: five shorter prompts
    tokens: list[tuple[str, float]] | None = None  # shorten: each word of the prompt and its importance, 0-1
    seed: int | None = None
    ref: str | None = None  # the backend's own id for this result, for later upscale/variation
    extra: dict[str, Any] = field(default_factory=dict)


def seed_or_random(seed: int | None) -> int:
    """A request's seed, or a random 32-bit one when it gives none."""
    return seed if seed is not None else secrets.randbits(32)


def resample(request: UpscaleRequest) -> Image.Image:
    """An upscale made in this process: real resampling, and invented finer detail for a creative one."""
    return in_mode(imaging.upscale(request.image, request.factor), request)


def in_mode(image: Image.Image, request: UpscaleRequest) -> Image.Image:
    """An upscale as its mode asks: a creative one with finer detail invented (here: no backend's upscaler
    does it), any other as it is."""
    return procedural.enrich(image) if request.mode == "creative" else image


class Provider:
    """Base class: override the operations the backend supports."""

    name = ""
    operations: frozenset[str] = frozenset()
    required_settings: tuple[str, ...] = ()  # config keys that must be set (APIFRAME_<key> in the env)
    # Operations the backend cannot do that go to another provider unless APIFRAME_PROVIDER_<OP> says.
    elsewhere: Mapping[str, str] = {}

    def __init__(self, config: Mapping[str, Any]) -> None:
        for key in self.required_settings:
            if not config.get(key):
                raise ValueError(f"APIFRAME_{key} must be set to use the {self.name} provider")
        self.config = config

    def made(self, parent_provider: str | None, parent_ref: str | None) -> bool:
        """Whether a parent job was made by this provider, so its ``parent_ref`` is one of our ids."""
        return bool(parent_ref) and parent_provider == self.name

    def own_ref(self, parent_provider: str | None, parent_ref: str | None, doing: str) -> str:
        """The backend's id of a parent this provider made; ProviderError (saying it cannot) for others."""
        if not self.made(parent_provider, parent_ref):
            raise ProviderError(
                f"The {self.name} provider can only {doing} images it made itself; this image came from "
                "another provider."
            )
        return str(parent_ref)

    def supports(self, operation: str) -> bool:
        """Whether this provider can do ``operation``."""
        return operation in self.operations

    def run(self, operation: str, request: Any, ctx: JobContext) -> Result:
        """Do ``operation`` on ``request``."""
        if not self.supports(operation):
            raise UnsupportedOperation(f"the {self.name} provider cannot {operation}")
        return getattr(self, operation)(request, ctx)

    def check(self) -> str:
        """Confirm the backend answers and takes our credentials: a one-line status, or ProviderError."""
        return "ok"


REGISTRY: dict[str, type[Provider]] = {}


def register(cls: type[Provider]) -> type[Provider]:
    """Class decorator: make a provider available by its name."""
    REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    # Importing the modules registers their providers.
    from providers import apiframe, comfyui, local, mjproxy, openai_images, sdwebui  # noqa: F401


def create(name: str, config: Mapping[str, Any], variable: str = "APIFRAME_PROVIDER") -> Provider:
    """Instantiate the provider called ``name``; errors name the setting ``variable`` that chose it."""
    _load_builtin()
    try:
        cls = REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"{variable}: unknown provider {name!r}; known: {known}") from None
    return cls(config)


@dataclass(frozen=True)
class Health:
    """One provider's answer to ``check()``."""

    name: str
    ok: bool
    detail: str
    supported: bool = True  # False: the provider cannot do the operation at all (a setting, not a failure)


class Providers:
    """The configured provider for each operation: APIFRAME_PROVIDER, or APIFRAME_PROVIDER_<OPERATION>."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        chosen = {"": config["PROVIDER"]}
        chosen.update({op: config.get(f"PROVIDER_{op.upper()}") or _default_for(op, config)
                       for op in OPERATIONS})  # fmt: skip
        instances: dict[str, Provider] = {}
        for operation, name in chosen.items():
            variable = f"APIFRAME_PROVIDER_{operation.upper()}" if operation else "APIFRAME_PROVIDER"
            if name not in instances:
                instances[name] = create(name, config, variable)
        self.default = instances[config["PROVIDER"]]
        self.by_operation = {operation: instances[chosen[operation]] for operation in OPERATIONS}
        self.by_name = instances

    def for_operation(self, operation: str, chosen: str | None = None) -> Provider:
        """The provider that handles ``operation``: the configured one named ``chosen``, else its own."""
        if chosen and chosen in self.by_name:
            return self.by_name[chosen]
        return self.by_operation[operation]

    def supports(self, operation: str) -> bool:
        """Whether some configured provider handles ``operation``."""
        return self.for_operation(operation).supports(operation)

    def unsupported(self, operation: str) -> str | None:
        """Why no configured provider does ``operation`` (its requests get a 400), or None if one does."""
        if self.supports(operation):
            return None
        return (
            f"The configured provider ({self.for_operation(operation).name}) cannot do {operation} jobs; "
            f"set APIFRAME_PROVIDER_{operation.upper()} to a provider that can."
        )

    def check(self) -> dict[str, Health]:
        """Ask each provider in use (once each) whether its backend answers; the result per operation.

        An operation its provider cannot do is reported as not supported, without asking: that is how the
        service is configured, not a backend that fails."""
        answers: dict[int, Health] = {}
        report: dict[str, Health] = {}
        for operation, provider in self.by_operation.items():
            why = self.unsupported(operation)
            if why:
                report[operation] = Health(provider.name, False, why, supported=False)
                continue
            if id(provider) not in answers:
                answers[id(provider)] = _check(provider)
            report[operation] = answers[id(provider)]
        return report


def _default_for(operation: str, config: Mapping[str, Any]) -> str:
    """APIFRAME_PROVIDER, or the provider it hands ``operation`` to when it cannot do it (said in the log)."""
    name = config["PROVIDER"]
    _load_builtin()
    other = REGISTRY[name].elsewhere.get(operation) if name in REGISTRY else None
    if other is None:
        return name
    log.info(
        "%s: the %s provider cannot %s, so the %s provider does (set APIFRAME_PROVIDER_%s to choose another)",
        operation, name, operation, other, operation.upper(),
    )  # fmt: skip
    return other


def _check(provider: Provider) -> Health:
    try:
        return Health(provider.name, True, provider.check())
    except (ProviderError, JobAborted) as exc:
        detail = str(exc) or f"The {provider.name} provider did not answer in time."
        return Health(provider.name, False, detail)


EXTENSION = "apiframe.providers"


def configured() -> Providers:
    """The current app's providers."""
    return current_app.extensions[EXTENSION]
