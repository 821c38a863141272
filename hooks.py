"""Extensions' request hooks, moved from the whole app onto the blueprints that need them.

Flask-Limiter and Flask-WTF's CSRF protection hook into every request of the app, although they act
on a few blueprints only (the sign-in pages' limits, the console's forms); each of their hooks still
cost every API request its checks. ``taken_off`` runs an extension's set-up and takes the hooks it
added off the app; ``attach`` gives them to a blueprint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

HOOKS = ("before_request_funcs", "after_request_funcs", "teardown_request_funcs")
Hooks = dict[str, list[Callable[..., Any]]]  # by HOOKS name


def taken_off(app: Flask, set_up: Callable[[Flask], Any]) -> Hooks:
    """Run ``set_up(app)``; the app-wide hooks it added are removed from the app and returned."""
    before = {hooks: list(getattr(app, hooks)[None]) for hooks in HOOKS}
    set_up(app)
    taken: Hooks = {}
    for hooks in HOOKS:
        registered = getattr(app, hooks)[None]
        taken[hooks] = [hook for hook in registered if hook not in before[hooks]]
        registered[:] = [hook for hook in registered if hook in before[hooks]]
    return taken


def attach(app: Flask, blueprint: str, taken: Hooks, first: bool = False) -> None:
    """Run ``taken`` hooks on ``blueprint``'s requests: after its own hooks, or before them if ``first``."""
    for hooks, added in taken.items():
        registered = getattr(app, hooks)[blueprint]
        registered[:] = [*added, *registered] if first else [*registered, *added]
