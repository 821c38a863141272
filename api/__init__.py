"""The API: one ``api`` blueprint holding a nested blueprint per API family.

Each family only routes requests and translates fields onto the operations of ``operations.py``;
the family of a request is the blueprint of its route. Keys and rate limits apply to ``api`` as a
whole, so they are the same for every family.
"""

from __future__ import annotations

from flask import Blueprint, Flask

from api import answers, openai, original, reference

bp = Blueprint("api", __name__)
bp.register_blueprint(reference.bp)
bp.register_blueprint(original.bp)
bp.register_blueprint(openai.bp)


def init_app(app: Flask) -> None:
    """Serve every API family on ``app``."""
    app.register_blueprint(bp)
    answers.init_app(app)
    original.init_app(app, f"{bp.name}.{original.bp.name}")
    openai.init_app(app, f"{bp.name}.{openai.bp.name}")
