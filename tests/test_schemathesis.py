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

pytestmark = pytest.mark.slow

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
SEED, EXAMPLES = 1, 5  # deterministic and bounded: well under a minute or two
OPENAI = "/v1/images/"  # the OpenAI family's create routes: OPENAI + an endpoint of the registry's
OPENAI_ENDPOINTS = sorted({name for op in operations.OPERATIONS if op.openai for name in op.openai.endpoints})
# Those answer synchronously, once their jobs have run: they get a server with workers.
OPENAI_CREATES = f"^{OPENAI}({'|'.join(OPENAI_ENDPOINTS)})$"


def config(path: Path) -> Path:
    """Schemathesis settings: what a schema-valid request may also be answered, for reasons no schema states.

    A create route answers 409 or 422 to an Idempotency-Key that is in use or was used with another body;
    one that takes an existing job answers 400 for a job in the wrong state (a parent that is not a
    finished grid), as cancelling a job that has ended does; a page cursor the server did not make is 400;
    an OpenAI edit or variation answers 400 to an uploaded file that is not a usable image.
    """
    expected = {"/v1/jobs/{job_id}/cancel": [400], "/v1/jobs": [400]}
    for op in operations.OPERATIONS:
        routes = list(reference.paths(op))
        if op.original:
            routes += [*op.original.paths, *op.original.shared, *(route.path for route in op.original.routes)]
        for route in routes:
            expected[route] = [409, 422] + ([400] if op.parents else [])
        for endpoint in op.openai.endpoints if op.openai else ():
            # An uploaded file's content (a readable image; a mask with transparency) is beyond a schema.
            uploads = endpoint != "generations"
            expected[OPENAI + endpoint] = [409, 422] + ([400] if uploads else [])
    lines = []
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
def serve(settings):
    """Start the API on loopback, with or without workers, and make a key with credits."""
    started = []

    def start(workers: bool) -> tuple[LiveServer, str]:
        # No private URLs: a job that runs fetches nothing a generated URL names.
        settings.update(START_WORKERS=workers, RATELIMIT_ENABLED=False, ALLOW_PRIVATE_URLS=False)
        from app import create_app

        application = create_app(settings)
        server = LiveServer(application)
        started.append((server, application))
        with application.app_context():
            account, key = accounts.create("schemathesis@example.com", plan="scale")
            credits.grant(account.id, 10_000_000)
        return server, key

    yield start
    for server, application in started:
        server.close()
        stop_background(application)


def schemathesis(server: LiveServer, key: str, tmp_path: Path, *selection: str) -> None:
    """Run Schemathesis over the operations ``selection`` picks, with every check, and expect no failure."""
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(config(tmp_path / "schemathesis.toml")),
            "run",
            f"{server.url}/openapi.json",
            *selection,
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


# Schemathesis's phases in two runs, which the test processes can run side by side: the schema's examples
# with the deterministic boundary cases (nine requests in ten, two thirds of the time), and generated ones.
@pytest.mark.parametrize("phases", ["examples,coverage", "fuzzing,stateful"])
def test_every_operation_conforms_to_the_openapi_document(serve, tmp_path, phases):
    """Every route but the OpenAI creates, on a server that runs no job (so nothing is fetched)."""
    schemathesis(*serve(workers=False), tmp_path, "--exclude-path-regex", OPENAI_CREATES, "--phases", phases)


def test_the_openai_creates_conform_to_the_openapi_document(serve, tmp_path):
    """The OpenAI family's synchronous creates, on a server whose workers run their jobs."""
    schemathesis(*serve(workers=True), tmp_path, "--include-path-regex", OPENAI_CREATES)
