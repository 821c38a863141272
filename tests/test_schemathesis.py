"""/openapi.json says exactly what the server accepts and answers: a Schemathesis run with every check."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import accounts
import credits
import operations
from api import reference
from conftest import LiveServer, stop_background

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
SEED, EXAMPLES = 1, 5  # deterministic and bounded: well under a minute or two


def config(path: Path) -> Path:
    """Schemathesis settings: what a schema-valid request may also be answered, for reasons no schema states.

    A create route answers 409 or 422 to an Idempotency-Key that is in use or was used with another body;
    one that takes an existing job answers 400 for a job in the wrong state (a parent that is not a
    finished grid), as cancelling a job that has ended does; a page cursor the server did not make is 400.
    """
    expected = {"/v1/jobs/{job_id}/cancel": [400], "/v1/jobs": [400]}
    for op in operations.OPERATIONS:
        routes = list(reference.paths(op))
        if op.original:
            routes += op.original.paths + op.original.shared
        for route in routes:
            expected[route] = [409, 422] + ([400] if op.parents else [])
    # The legacy SDK route's zoom is a numeric string whose range the document does not state yet.
    expected["/midjourney/zoom"] = [400, 409, 422]
    lines = []
    # The OpenAI family's create routes answer synchronously, once their jobs have run, and this server
    # runs no job; the official openai client covers them (test_openai_images.py).
    for route in ("/v1/images/generations", "/v1/images/edits", "/v1/images/variations"):
        lines += ["[[operations]]", f'include-path = "{route}"', "enabled = false", ""]
    for route, statuses in expected.items():
        allowed = ", ".join(str(status) for status in ('"2xx"', 401, 403, 404, 429, *statuses))
        lines += [
            "[[operations]]",
            f'include-path = "{route}"',
            f"checks.positive_data_acceptance.expected-statuses = [{allowed}]",
            "",
        ]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def served(settings):
    """The API on loopback without workers (no job runs, so nothing is fetched), and a key with credits."""
    settings.update(START_WORKERS=False, RATELIMIT_ENABLED=False, ALLOW_PRIVATE_URLS=False)
    from app import create_app

    application = create_app(settings)
    server = LiveServer(application)
    with application.app_context():
        account, key = accounts.create("schemathesis@example.com", plan="scale")
        credits.grant(account.id, 10_000_000)
    yield server, key
    server.close()
    stop_background(application)


def test_every_operation_conforms_to_the_openapi_document(served, tmp_path):
    server, key = served
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(config(tmp_path / "schemathesis.toml")),
            "run",
            f"{server.url}/openapi.json",
            "--header",
            f"X-API-Key: {key}",
            "--checks",
            "all",
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    summary = re.search(r"(\d+) generated, (.*)", result.stdout)
    print("schemathesis:", summary.group(0) if summary else result.stdout[-2000:])
    assert result.returncode == 0, result.stdout[-6000:]
    assert "Authentication failed" not in result.stdout
    assert summary and "failure" not in summary.group(2), summary
