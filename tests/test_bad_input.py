"""Hostile and careless input: a 4xx in the JSON error format, never a 500; stored oddities break no page."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest

from conftest import Api
from models import Job
from test_console import PASSWORD, Console

PICK_ROUTES = ["/v1/upscale", "/v1/variation", "/v1/upscale-highres"]


def _error(response, status: int = 400) -> str:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["success"] is False and body["error"]["code"]
    return body["error"]["message"]


def _raw(api: Api, path: str, body: str):
    return api.client.post(
        path, data=body, headers={"X-API-Key": api.key, "Content-Type": "application/json"}
    )


@pytest.mark.parametrize("path", PICK_ROUTES)
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_a_non_finite_index_is_a_400(api, path, number):
    body = f'{{"jobId": "{uuid.uuid4()}", "index": {number}, "type": "2x"}}'
    message = _error(_raw(api, path, body))
    assert (
        message.startswith("The 'index' field is") and "finite" in message and number.lstrip("-") in message
    )


def test_a_nan_chaos_reads_well(api):
    assert _error(_raw(api, "/v1/imagine", '{"prompt": "p", "chaos": NaN}')) == (
        "The 'chaos' field is NaN, which is not a JSON number: numbers must be finite."
    )
    assert "The 'chaos' field is 1e999" in _error(_raw(api, "/v1/imagine", '{"prompt": "p", "chaos": 1e999}'))
    assert _error(_raw(api, "/v1/imagine", '{"prompt": "p", "chaos": 1' + "0" * 400 + "}")) == (
        "The 'chaos' field is too large."
    )
    blend = _error(_raw(api, "/v1/blend", '{"imageUrls": ["http://a.test/1.png", -Infinity]}'))
    assert blend.startswith("The 'imageUrls[2]' field is -Infinity")
    assert _error(_raw(api, "/v1/imagine", "NaN")).startswith("The request body holds NaN")


def test_a_huge_whole_number_is_a_400(api):
    body = f'{{"jobId": "{uuid.uuid4()}", "index": 1{"0" * 400}}}'
    assert "'index'" in _error(_raw(api, "/v1/upscale", body))


@pytest.mark.parametrize("path", ["/v1/imagine", "/imagine", "/fetch", "/fetch-many", "/reroll"])
def test_deeply_nested_json_is_a_400(api, path):
    for opener in "[{":
        body = opener * 100000 if opener == "[" else '{"a":' * 100000
        message = _error(_raw(api, path, body))
        assert "nested too deeply" in message


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/imagine", {"prompt": "a \ud800 b"}, "prompt"),
        ("/v1/imagine", {"prompt": "ok", "webhookUrl": "http://hooks.test/\ud800"}, "webhookUrl"),
        (
            "/v1/imagine",
            {"prompt": "ok", "webhookUrl": "http://h.test/", "webhookSecret": "\udfff"},
            "webhookSecret",
        ),
        ("/v1/describe", {"imageUrl": "http://img.invalid/\ud800.png"}, "imageUrl"),
        ("/v1/blend", {"imageUrls": ["http://a.test/1.png", "http://a.test/\ud800.png"]}, "imageUrls"),
        ("/v1/upscale-highres", {"imageUrl": "http://a.test/\udc00", "type": "2x"}, "imageUrl"),
        ("/imagine", {"prompt": "\ud83d", "aspect_ratio": "1:1"}, "prompt"),
        ("/variation", {"parent_task_id": str(uuid.uuid4()), "index": "1", "prompt": "\ud800"}, "prompt"),
        ("/v1/imagine", {"prompt": "a \x00 b"}, "prompt"),  # PostgreSQL cannot store a NUL character
        ("/v1/describe", {"imageUrl": "http://img.test/a\x00.png"}, "imageUrl"),
        (
            "/v1/imagine",
            {"prompt": "ok", "webhookUrl": "http://h.test/", "webhookSecret": "s\x00"},
            "webhookSecret",
        ),
    ],
)
def test_a_lone_surrogate_or_a_nul_in_a_string_field_is_a_400_naming_the_field(app, api, path, body, field):
    message = _error(_raw(api, path, json.dumps(body)))
    assert f"'{field}'" in message and "NUL character or a lone surrogate" in message
    with app.app_context():
        assert Job.select().count() == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/describe", {"imageUrl": "http://img.test:99999/a.png"}, "imageUrl"),
        ("/v1/imagine", {"prompt": "ok", "webhookUrl": "http://hooks.test:0/"}, "webhookUrl"),
        ("/describe", {"image_url": "http://img.test:65536/a.png"}, "image_url"),
    ],
)
def test_a_url_whose_port_is_out_of_range_is_a_400_naming_the_field(app, api, path, body, field):
    message = _error(_raw(api, path, json.dumps(body)))
    assert f"'{field}'" in message and "port is a number from 1 to 65535" in message
    with app.app_context():
        assert Job.select().count() == 0


def test_a_huge_offset_is_a_400(api):
    message = _error(api.get("/v1/jobs?offset=99999999999999999999"))
    assert "'offset'" in message
    assert api.get("/v1/jobs?offset=1000000000").status_code == 200


@pytest.fixture
def member(client, make_account):
    account, key = make_account("scale", email="member@example.com", password=PASSWORD)
    console = Console(client)
    assert console.login("member@example.com").status_code == 302
    return console, account, key


@pytest.mark.parametrize("page", ["/console/jobs", "/console/usage"])
def test_a_huge_page_number_shows_an_empty_page(member, page):
    console, _, _ = member
    response = console.get(f"{page}?page=99999999999999999999")
    assert response.status_code == 200


def test_a_stored_bad_value_never_breaks_a_console_page(app, member):
    console, account, key = member
    api = Api(app.test_client(), key)
    job = api.submit("/v1/describe", {"imageUrl": "http://127.0.0.1:9/x.png"})
    api.wait(job["id"])
    imagine = api.imagine("fine")
    with app.app_context():  # rows stored before the schema refused such values
        Job.update(params={"image_url": "http://img.invalid/\ud800.png"}).where(Job.id == job["id"]).execute()
        Job.update(params={"aspect_ratio": "1:1", "style": "\udfff"}).where(Job.id == imagine["id"]).execute()
    for page in [
        "/console/",
        "/console/jobs",
        "/console/playground",
        f"/console/jobs/{job['id']}",
        f"/console/jobs/{imagine['id']}",
        f"/console/playground?job={imagine['id']}",
        f"/console/jobs/live?id={job['id']}&id={imagine['id']}",
    ]:
        response = console.get(page)
        assert response.status_code == 200, page
    assert "\ufffd.png" in console.get(f"/console/jobs/{job['id']}").get_data(as_text=True)
    assert api.get(f"/v1/jobs/{job['id']}").status_code == 200
    assert api.post("/fetch", json={"task_id": job["id"]}).status_code == 200


# ---- the sweep: every route, with bad input of every kind --------------------------------------------

BAD_BODIES = [
    "NaN",
    '{"index": NaN}',
    '{"index": 1e400, "jobId": "00000000-0000-0000-0000-000000000000"}',
    '{"index": 1'
    + "0" * 400
    + ', "chaos": -1'
    + "0" * 400
    + ', "jobId": "00000000-0000-0000-0000-000000000000"}',
    "[" * 50000,
    '{"prompt": "\\ud800", "imageUrl": "http://x.test/\\ud800", "webhookUrl": "http://x.test/\\udc00"}',
    '{"imageUrls": ["\\ud800", 1e400], "task_ids": [NaN, "\\ud800"], "task_id": "\\ud800"}',
    '{"jobId": {"$gt": ""}, "index": [1], "type": {}, "prompt": 12}',
    '{"prompt": "p", "chaos": -Infinity, "quality": 1e308, "stylize": "NaN"}',
    '"just a string"',
    "\xff\xfe not utf-8",
    "",
]
BAD_QUERIES = ["?offset=99999999999999999999&limit=-1&page=99999999999999999999", "?status=%ED%A0%80&id=%ff"]
BAD_SEGMENTS = ["%ED%A0%80", "99999999999999999999", "00000000-0000-0000-0000-000000000000", "..%2F"]


def _paths(app) -> list[tuple[str, list[str]]]:
    paths = []
    for rule in app.url_map.iter_rules():
        methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
        if rule.rule == "/logout":  # it would end the session the sweep runs in
            continue
        if not rule.arguments:
            paths.append((rule.rule, methods))
            continue
        for segment in BAD_SEGMENTS:
            path = rule.rule
            for argument in rule.arguments:
                path = path.replace(f"<{argument}>", segment)
                for converter in ("int", "path", "string", "uuid"):
                    path = path.replace(f"<{converter}:{argument}>", segment)
            paths.append((path, methods))
    return paths


def test_sweep_every_route_with_bad_input(app, member, capsys):
    console, _, key = member
    app.config["WTF_CSRF_ENABLED"] = False  # reach the views' own handling of the bad input
    app.extensions["apiframe.limiter"].enabled = False  # and not the rate limit's
    counts: Counter = Counter()
    failures = []
    for path, methods in _paths(app):
        for method in methods:
            for query in BAD_QUERIES:
                attempts = (
                    [(body, headers) for body in BAD_BODIES for headers in ({"X-API-Key": key}, {})]
                    if method == "POST"
                    else [(None, {"X-API-Key": key})]
                )
                for body, headers in attempts:
                    response = console.client.open(
                        path + query,
                        method=method,
                        data=body.encode("utf-8", "surrogatepass") if body else body,
                        headers={**headers, "Content-Type": "application/json"},
                    )
                    counts[response.status_code] += 1
                    html_page = response.mimetype == "text/html"
                    api_route = not path.startswith(("/console", "/login", "/signup", "/logout", "/docs"))
                    if response.status_code >= 500 or (
                        api_route and html_page and response.status_code >= 400
                    ):
                        failures.append((method, path + query, (body or "")[:40], response.status_code))
    with capsys.disabled():
        print(
            f"\nbad-input sweep: {sum(counts.values())} requests; by status: {dict(sorted(counts.items()))}"
        )
    assert not failures, failures[:20]
