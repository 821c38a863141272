"""JSON as RFC 8259 has it: no NaN or Infinity, no number too large for a double, no nesting too deep to read.

Python's json module accepts all of these; request bodies are read with ``loads`` instead, which
refuses them with a message naming the field that holds the number.
"""

from __future__ import annotations

import json
import math
from typing import Any


class Refused(ValueError):
    """A body that is JSON to Python but not to RFC 8259, or too deep to read; the message says why."""


class _NotFinite(ValueError):
    pass


def loads(raw: bytes | str) -> Any:
    """Parse ``raw``: Refused for NaN, infinities, 1e400 and too deep nesting; ValueError if not JSON."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise Refused("The request body is nested too deeply to be read.") from None
    except _NotFinite as exc:
        raise Refused(_non_finite_message(raw, str(exc))) from None


def _refuse_constant(name: str) -> float:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def _non_finite_message(raw: bytes | str, number: str) -> str:
    """A message naming the field that holds ``number``, when it can be found."""
    try:
        where = _non_finite_field(json.loads(raw))
    except RecursionError:
        where = None
    holder = f"The '{where}' field is" if where else "The request body holds"
    return f"{holder} {number}, which is not a JSON number: numbers must be finite."


def _non_finite_field(value: Any, path: str = "") -> str | None:
    """Where the first NaN or infinity is: ``chaos``, ``imageUrls[2]``; "" for the body itself."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = f"{path}[{key + 1}]" if isinstance(key, int) else f"{path}.{key}" if path else key
        found = _non_finite_field(item, where)
        if found is not None:
            return found
    return None
