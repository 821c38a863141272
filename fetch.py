"""The one safe way to reach a URL a user gave us (image inputs, webhooks).

http(s) only; the resolved address is checked when connecting (requests-hardened pins it, so DNS
rebinding cannot swap it), every redirect hop is checked again, and size and time are capped: the
time as a wall-clock deadline over the whole exchange (a watchdog shuts the socket down when it passes).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import requests
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import InvalidIPAddress

from watchdog import Watchdog, watch_session

USER_AGENT = "APIFrame/1.0 (+self-hosted image API)"
MAX_REDIRECTS = 5


class FetchError(Exception):
    """A URL could not be fetched; the message says why, for the user."""


class RefusedURL(FetchError):
    """A URL that may never be reached (not http(s), or a forbidden address): retrying cannot help."""


def check_url(url: str) -> None:
    """Refuse anything but an absolute http(s) URL with a host (and a port, if any, from 1 to 65535)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RefusedURL("only http and https URLs are allowed")
    if not parts.hostname:
        raise RefusedURL("the URL has no host")
    if not has_valid_port(url):
        raise RefusedURL("the URL's port must be a number from 1 to 65535")


def has_valid_port(url: str) -> bool:
    """Whether ``url`` names no port, or one from 1 to 65535."""
    try:
        return urlsplit(url).port != 0
    except ValueError:  # not a number, or past 65535
        return False


def session(*, allow_private: bool, follow_redirects: bool, timeout: float) -> HTTPSession:
    """A requests session that refuses private, loopback and link-local addresses."""
    http = HTTPSession(
        Config(
            ip_filter_enable=not allow_private,
            ip_filter_allow_loopback_ips=False,
            never_redirect=not follow_redirects,
            default_timeout=(min(5.0, timeout), timeout),
            user_agent_override=USER_AGENT,
        )
    )
    http.max_redirects = MAX_REDIRECTS
    watch_session(http)
    return http


def fetch_bytes(url: str, *, allow_private: bool, max_bytes: int, timeout: float) -> bytes:
    """GET ``url`` and return its body, within ``max_bytes`` and ``timeout`` seconds overall."""
    check_url(url)
    watchdog = Watchdog(timeout)
    try:
        with watchdog, session(allow_private=allow_private, follow_redirects=True, timeout=timeout) as http:
            with http.get(url, stream=True, headers={"Accept": "image/*"}) as response:
                _check_hops(response)
                if response.status_code != 200:
                    raise FetchError(f"the server answered HTTP {response.status_code}")
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(f"the file is larger than {max_bytes} bytes")
                return _read_capped(response, max_bytes, watchdog.deadline)
    except FetchError:
        raise
    except Exception as exc:
        if watchdog.expired:
            raise FetchError("the server did not answer in time") from None
        raise FetchError(describe_failure(exc)) from None


def post_json(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool, timeout: float) -> Any:
    """POST a JSON body to ``url``, never following redirects; returns the response, its body unread."""
    check_url(url)
    watchdog = Watchdog(timeout)
    try:
        with watchdog, session(allow_private=allow_private, follow_redirects=False, timeout=timeout) as http:
            headers = {"Content-Type": "application/json", **headers}
            response = http.post(url, data=body, headers=headers, stream=True)
            response.close()  # a huge or endless answer can cost neither memory nor time
            return response
    except Exception as exc:
        if watchdog.expired:
            raise FetchError("the server did not answer in time") from None
        error = RefusedURL if is_forbidden_address(exc) else FetchError
        raise error(describe_failure(exc)) from None


def _check_hops(response: requests.Response) -> None:
    for hop in [*response.history, response]:
        check_url(hop.url)


def _read_capped(response: requests.Response, max_bytes: int, deadline: float) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_content(chunk_size=65536):
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"the file is larger than {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise FetchError("the download took too long")
        chunks.append(chunk)
    return b"".join(chunks)


def is_forbidden_address(exc: Exception) -> bool:
    """Whether a request failed because the host resolved to a forbidden address."""
    if isinstance(exc, InvalidIPAddress):
        return True
    if isinstance(exc, requests.ConnectionError):
        cause = exc.args[0] if exc.args else exc
        return isinstance(cause, InvalidIPAddress) or "Forbidden IP" in str(cause)
    return False


def describe_failure(exc: Exception) -> str:
    """A user-facing reason for a failed request."""
    if is_forbidden_address(exc):
        return "the address is private, loopback or link-local, which is not allowed"
    if isinstance(exc, requests.TooManyRedirects):
        return f"more than {MAX_REDIRECTS} redirects"
    if isinstance(exc, requests.Timeout):
        return "the server did not answer in time"
    if isinstance(exc, requests.ConnectionError):
        cause = exc.args[0] if exc.args else exc
        if "resolve" in str(cause).lower() or "Name or service" in str(cause):
            return "the host name could not be resolved"
        return "the connection failed"
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return "the URL is not valid"
    return f"the request failed ({type(exc).__name__})"
