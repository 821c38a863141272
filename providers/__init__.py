"""Providers turn inputs into pixels or text, behind one small interface.

A provider never touches the database, stores files, fetches user URLs or sends webhooks: the
gateway does those once, for all providers. It reports progress and checks for cancellation and
the deadline through the JobContext it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

OPERATIONS = ("imagine", "variation", "upscale", "blend", "describe")


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


@dataclass(frozen=True)
class VariationRequest:
    """One tile of a finished job to four new images like it."""

    image: Image.Image
    index: int
    prompt: str | None = None
    parent_ref: str | None = None
    seed: int | None = None
    strength: float = 0.5
    mode: str | None = None  # None: a tile of a grid; "strong" or "subtle": an upscaled image


@dataclass(frozen=True)
class UpscaleRequest:
    """One tile of a finished job, enlarged."""

    image: Image.Image
    index: int
    parent_ref: str | None = None
    factor: int = 2
    # None: a tile of a grid (upscale 1x); "subtle" or "creative" (which invents finer detail): an
    # upscaled image, again; "highres": any image, enlarged by ``factor`` without inventing anything.
    mode: str | None = None


@dataclass(frozen=True)
class BlendRequest:
    """Two to five images mixed into four new ones."""

    images: list[Image.Image]
    width: int = 1024
    height: int = 1024
    seed: int | None = None


@dataclass(frozen=True)
class DescribeRequest:
    """One image to four prompts that could have made it."""

    image: Image.Image
    url: str | None = None


@dataclass
class Result:
    """What a provider made: four tiles (or a grid to cut into four), one image, or text."""

    tiles: list[Image.Image] | None = None
    grid: Image.Image | None = None
    image: Image.Image | None = None
    descriptions: list[str] | None = None
    seed: int | None = None
    ref: str | None = None  # the backend's own id for this result, for later upscale/variation
    extra: dict[str, Any] = field(default_factory=dict)


class Provider:
    """Base class: override the operations the backend supports."""

    name = ""
    operations: frozenset[str] = frozenset()

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def supports(self, operation: str) -> bool:
        """Whether this provider can do ``operation``."""
        return operation in self.operations

    def run(self, operation: str, request: Any, ctx: JobContext) -> Result:
        """Do ``operation`` on ``request``."""
        if not self.supports(operation):
            raise UnsupportedOperation(f"the {self.name} provider cannot {operation}")
        return getattr(self, operation)(request, ctx)

    def check(self) -> str:
        """Confirm the backend answers and accepts our credentials; returns a one-line status."""
        return "ok"


REGISTRY: dict[str, type[Provider]] = {}


def register(cls: type[Provider]) -> type[Provider]:
    """Class decorator: make a provider available by its name."""
    REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    from providers import local  # noqa: F401  (registers itself)


def create(name: str, config: Mapping[str, Any]) -> Provider:
    """Instantiate the provider called ``name``."""
    _load_builtin()
    try:
        cls = REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"unknown provider {name!r}; known: {known}") from None
    return cls(config)


class Providers:
    """The configured provider for each operation."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.default = create(config["PROVIDER"], config)
        self.by_operation = {operation: self.default for operation in OPERATIONS}

    def for_operation(self, operation: str) -> Provider:
        """The provider that handles ``operation``."""
        return self.by_operation[operation]

    def supports(self, operation: str) -> bool:
        """Whether some configured provider handles ``operation``."""
        return self.for_operation(operation).supports(operation)
