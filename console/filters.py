"""Template helpers: times, numbers, job images, and what every page needs."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, g

import operations
import storage
from jobs import ACTIVE
from models import Job, utcnow
from schemas import has_lone_surrogate

SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class NavItem:
    """A link of the console's navigation; it is highlighted on any of its endpoints."""

    label: str
    icon: str
    endpoints: tuple[str, ...]


NAV = (
    NavItem("Dashboard", "home", ("console.dashboard",)),
    NavItem("Playground", "sparkles", ("console.playground", "console.run")),
    NavItem("Jobs", "images", ("console.gallery", "console.job_page")),
    NavItem("API keys", "key", ("console.keys", "console.create_key")),
    NavItem("Usage", "chart", ("console.usage",)),
    NavItem("Plans", "layers", ("console.plans",)),
    NavItem("Webhooks", "bell", ("console.webhooks_page",)),
)


def ago(moment: datetime.datetime | None) -> str:
    """'just now', '5 min ago', '3 h ago', '2 days ago', or a date."""
    if moment is None:
        return "never"
    seconds = (utcnow() - moment).total_seconds()
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{round(seconds / 60) or 1} min ago"
    if seconds < 86400:
        return f"{round(seconds / 3600)} h ago"
    if seconds < 7 * 86400:
        days = round(seconds / 86400)
        return f"{days} day{'s' if days > 1 else ''} ago"
    return moment.strftime("%d %b %Y")


def utc(moment: datetime.datetime | None) -> str:
    """An exact UTC time, e.g. for a title attribute."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def duration(job: Job) -> str:
    """How long a finished job took, e.g. '3.2 s' or '1 min 5 s'."""
    if not job.completed_at:
        return ""
    seconds = (job.completed_at - job.created_at).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def job_title(job: Job) -> str:
    """A one-line name for a job: its prompt, or what it was made from."""
    if job.prompt:
        return job.prompt
    params, operation = job.params or {}, operations.REGISTRY.get(job.type)
    label = operation.label if operation else job.type.capitalize()
    if params.get("image_url"):
        return f"{label} {urlsplit(params['image_url']).path.rsplit('/', 1)[-1] or params['image_url']}"
    if params.get("image_urls"):
        return f"{label} of {len(params['image_urls'])} images"
    if params.get("upload"):
        return f"{label} of an uploaded image"
    if params.get("direction"):
        label = f"{label} {params['direction']}"
    if params.get("zoom_ratio") == 1 and not params.get("aspect_ratio"):
        label = "Make square"  # what the button that makes it says; "Zoom out 1×" would not
    elif params.get("zoom_ratio"):
        label = f"{label} {params['zoom_ratio']:g}×"
    if job.parent_id:
        parent = job.parent
        source = f": {job_title(parent)}" if parent is not None else ""
        return f"{label} of image {job.index}{source}" if job.index else f"{label}{source}"
    return label


def image_src(job: Job, name: str, thumbnail: bool = False) -> str:
    """The URL of one of a job's images on this site (a small WebP preview with ``thumbnail``)."""
    if thumbnail:
        return storage.thumbnail_url(job.id, name)
    return f"/images/{job.id}/{name}"


def preview_name(job: Job) -> str | None:
    """The image that stands for a job in lists: its grid, or its single image (None once deleted)."""
    if job.images_deleted_at is not None:
        return None
    if job.grid:
        return job.grid
    return job.tiles[0] if job.tiles else None


def aspect(job: Job) -> str:
    """The CSS aspect-ratio of a job's preview."""
    source = job.parent if job.index and job.parent_id else job
    ratio = (source.params or {}).get("aspect_ratio") if source is not None else None
    if ratio:
        width, height = ratio.split(":")
        return f"{width} / {height}"
    return "1 / 1"


def printable(value: Any) -> Any:
    """What a template prints: lone surrogates a client stored show as U+FFFD instead of failing the page."""
    if isinstance(value, str) and has_lone_surrogate(value):
        return SURROGATE.sub("\ufffd", value)
    return value


def _globals() -> dict[str, Any]:
    return {
        "account": getattr(g, "account", None),
        "public_url": current_app.config["PUBLIC_URL"],
        "allow_signup": current_app.config["ALLOW_SIGNUP"],
        "active_statuses": ACTIVE,
        "grid_types": operations.with_result(operations.GRID),
        "grid_actions": operations.actions(),
        "image_actions": operations.actions(operations.IMAGE),
        "costs": operations.costs(),
        "nav": NAV,
    }


def register(app: Flask) -> None:
    """Make the helpers available to every template."""
    app.jinja_env.finalize = printable
    app.add_template_filter(ago)
    app.add_template_filter(utc)
    app.add_template_filter(duration)
    app.add_template_global(image_src)
    app.add_template_global(preview_name)
    app.add_template_global(aspect)
    app.add_template_global(job_title)
    app.context_processor(_globals)
