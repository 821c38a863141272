"""Reading a request's JSON body, the same way for every API family."""

from __future__ import annotations

import json
from typing import Any

from flask import request

import request_limits
import strict_json
from errors import validation_error


def json_body() -> Any:
    """The request body as JSON; an empty body counts as ``{}``."""
    raw = request_limits.body()
    if not raw.strip():
        return {}
    try:
        return strict_json.loads(raw)
    except strict_json.Refused as exc:
        raise validation_error(str(exc)) from None
    except ValueError as exc:
        if request.mimetype and not request.is_json:
            raise validation_error(
                "The request body must be JSON, sent with Content-Type: application/json."
            ) from None
        detail = (
            f": {exc.msg} at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise validation_error(f"The request body is not valid JSON{detail}.") from None
