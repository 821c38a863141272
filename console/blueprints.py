"""The console's two blueprints: the signed-in pages under /console, and signup/login/logout."""

from __future__ import annotations

from flask import Blueprint

from console import errors
from console.login import require_login

console_bp = Blueprint("console", __name__, url_prefix="/console")
signin_bp = Blueprint("signin", __name__)

console_bp.before_request(require_login)
for _blueprint in (console_bp, signin_bp):
    errors.register(_blueprint)
