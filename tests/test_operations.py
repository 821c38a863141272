"""The operation registry: each entry is served, documented, priced, runnable and, where fit, clickable."""

from __future__ import annotations

import html
import io
import tokenize
from pathlib import Path

import pytest

import operations
import providers
from operations import GRID, IMAGE

ROOT = Path(__file__).resolve().parent.parent
# Where an operation's name may be written: the registry, the providers that implement it, tests,
# benchmarks and migrations (and templates and prose, which are not Python).
NAMED_IN = ("operations.py", "providers", "tests", "bench", "migrations", ".venv")


def rules_by_path(app) -> dict[str, set[str]]:
    """Each URL rule's path and the endpoints serving it."""
    found: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        found.setdefault(rule.rule, set()).add(rule.endpoint)
    return found


@pytest.mark.parametrize("operation", operations.OPERATIONS, ids=lambda op: op.name)
def test_every_family_that_declares_an_operation_routes_it(app, operation):
    rules = rules_by_path(app)
    for path in (f"/v1/{operation.name}", *operation.aliases):
        assert rules.get(path) == {f"api.reference.{operation.endpoint}"}, path
    if operation.original:
        for path in operation.original.paths:
            assert rules.get(path) == {f"api.original.{operation.endpoint}"}, path
        for path in operation.original.shared:
            assert rules.get(path) == {f"api.original.{operation.endpoint}_shared"}, path
        for route in operation.original.routes:
            endpoint = f"api.original.{operation.endpoint}_{route.endpoint}"
            assert rules.get(route.path) == {endpoint}, route.path


@pytest.mark.parametrize("operation", operations.OPERATIONS, ids=lambda op: op.name)
def test_every_operation_is_in_the_openapi_document_and_priced_in_the_docs(client, operation):
    document = client.get("/openapi.json").get_json()
    paths = (f"/v1/{operation.name}", *operation.aliases)
    if operation.original:
        paths += operation.original.paths + operation.original.shared
        paths += tuple(route.path for route in operation.original.routes)
    for path in paths:
        assert "post" in document["paths"][path], path
    page = html.unescape(client.get("/docs").get_data(as_text=True))
    assert f'<code>POST /v1/{operation.name}</code></td><td class="num">{operation.cost}</td>' in page
    assert f'id="post-v1-{operation.name}"' in page


@pytest.mark.parametrize("operation", operations.OPERATIONS, ids=lambda op: op.name)
def test_every_operation_runs_as_a_provider_operation_or_says_it_needs_none(operation):
    if operation.provider is None:
        assert operation.compute is not None and operation.build is None
    else:
        assert operation.provider in providers.OPERATIONS and operation.build is not None
        assert operation.compute is None


def test_result_kinds_partition_the_operations():
    kinds = {op.name: op.result for op in operations.OPERATIONS}
    assert set(operations.with_result(GRID)) | set(operations.with_result(IMAGE)) <= set(kinds)
    for name, kind in kinds.items():
        assert operations.result_of(name) == kind


def test_no_module_outside_the_registry_and_providers_names_an_operation():
    names = set(operations.names())
    found = []
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in NAMED_IN:
            continue
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        for token in tokens:
            if token.type == tokenize.STRING and token.string.strip("\"'") in names:
                found.append(f"{relative}:{token.start[0]} {token.string}")
    assert not found, "operation names outside the registry: " + ", ".join(found)


def test_the_readme_prices_every_operation_as_the_registry_does():
    readme = (ROOT / "README.md").read_text()
    for operation in operations.OPERATIONS:
        paths = [f"/v1/{operation.name}"]
        if operation.original:
            paths += operation.original.paths + operation.original.shared
            paths += [route.path for route in operation.original.routes]
        for path in paths:
            rows = [line for line in readme.splitlines() if line.startswith(f"| `POST {path}` |")]
            assert rows, f"the README has no row for POST {path}"
            assert all(row.endswith(f"| {operation.cost} |") for row in rows), rows
