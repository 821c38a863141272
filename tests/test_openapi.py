"""/openapi.json and /docs: every API route documented, the document valid OpenAPI 3."""

from __future__ import annotations

import html

import pytest
from jsonschema import Draft4Validator
from openapi_spec_validator import validate

import openapi
from errors import ERROR_CODES


@pytest.fixture
def document(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.is_json
    return response.get_json()


def api_rules(app) -> list[tuple[str, str, str]]:
    """(method, OpenAPI path, endpoint) of every rule of the api blueprint, read from the URL map."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api."):
            path = rule.rule.replace("<", "{").replace(">", "}")
            found += [(method.lower(), path, rule.endpoint) for method in rule.methods - {"HEAD", "OPTIONS"}]
    return found


def test_the_document_is_valid_openapi_3(document):
    validate(document)
    assert document["openapi"].startswith("3.")
    assert document["servers"] == [{"url": "http://images.test"}]


@pytest.mark.parametrize("form", ["GenerationRequest", "EditForm", "VariationForm"])
def test_the_openai_model_field_documents_every_name_it_takes(document, form):
    model = Draft4Validator(document["components"]["schemas"][form]["properties"]["model"])
    for name in ("local", "dall-e-3", "gpt-image-1", "gpt-image-2.5-flare", "chatgpt-image-latest"):
        assert model.is_valid(name), name
    assert not model.is_valid("stable-diffusion-xl") and not model.is_valid("gpt-image-")


def test_every_api_route_has_an_operation(app, document):
    rules = api_rules(app)
    assert len(rules) >= 21  # the /v1 routes and the aliases
    for method, path, _ in rules:
        assert path in document["paths"], f"{path} is missing from the OpenAPI document"
        assert method in document["paths"][path], f"{method.upper()} {path} is missing"


def test_every_api_endpoint_is_described_with_schemas(app):
    endpoints = {endpoint for _, _, endpoint in api_rules(app)}
    undocumented = endpoints - set(openapi.OPERATIONS)
    assert not undocumented, f"add these endpoints to openapi.OPERATIONS: {sorted(undocumented)}"
    assert set(openapi.OPERATIONS) <= endpoints, "openapi.OPERATIONS names endpoints that no longer exist"


def test_operations_carry_request_and_response_schemas(document):
    imagine = document["paths"]["/v1/imagine"]["post"]
    assert imagine["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ImagineRequest"
    }
    accepted = imagine["responses"]["202"]
    assert accepted["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobEnvelope"}
    assert set(accepted["headers"]) == {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}
    assert imagine["responses"]["402"] == {"$ref": "#/components/responses/Error402"}
    fetch = document["paths"]["/fetch/{job_id}"]["get"]
    schema = fetch["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/FetchEnvelope"}
    assert fetch["parameters"][0] == {
        "name": "job_id",
        "in": "path",
        "required": True,
        "description": "The job ID.",
        "schema": {"type": "string", "format": "uuid"},
    }
    listing = document["paths"]["/v1/jobs"]["get"]
    names = {parameter["name"] for parameter in listing["parameters"]}
    assert names == {"limit", "offset", "cursor", "status", "type"}


def test_request_schemas_follow_the_validation(document):
    schemas = document["components"]["schemas"]
    imagine = schemas["ImagineRequest"]
    assert imagine["required"] == ["prompt"] and imagine["additionalProperties"] is False
    # an optional field may be null (it counts as not given), so its enum lists null too
    assert imagine["properties"]["aspectRatio"]["enum"] == ["1:1", "16:9", "9:16", "4:3", "3:4", None]
    assert imagine["properties"]["aspectRatio"]["nullable"] is True
    assert imagine["properties"]["aspectRatio"]["default"] == "1:1"
    assert (imagine["properties"]["chaos"]["minimum"], imagine["properties"]["chaos"]["maximum"]) == (0, 100)
    assert imagine["properties"]["prompt"]["maxLength"] == 4000
    prompt = Draft4Validator(imagine["properties"]["prompt"])
    assert prompt.is_valid(" a fox ") and not any(prompt.is_valid(blank) for blank in (" ", "\t\n", "\x1c"))
    blend = schemas["BlendRequest"]["properties"]["imageUrls"]
    assert (blend["minItems"], blend["maxItems"], blend["items"]["format"]) == (2, 5, "uri")
    assert schemas["PickRequest"]["properties"]["index"]["enum"] == [1, 2, 3, 4]
    job = schemas["Job"]["properties"]
    assert job["status"]["enum"][-1] == "cancelled" and job["imageUrls"]["nullable"] is True
    assert schemas["Account"]["properties"]["credits"] == {"$ref": "#/components/schemas/Credits"}


def test_security_scheme_and_error_format(document):
    assert document["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "Your key: ak_live_…",
    }
    # the key may also come in Authorization, as the original apiframe.ai API's clients send it
    assert document["security"] == [{"ApiKeyAuth": []}, {"BearerAuth": []}, {"AuthorizationKey": []}]
    assert document["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"
    assert document["components"]["securitySchemes"]["AuthorizationKey"]["name"] == "Authorization"
    error = document["components"]["schemas"]["Error"]["properties"]
    assert error["code"]["enum"] == list(ERROR_CODES)
    for code in ("VALIDATION_ERROR", "UNAUTHORIZED", "INSUFFICIENT_CREDITS", "NOT_FOUND", "RATE_LIMITED"):
        assert code in error["code"]["enum"]
    assert "Retry-After" in document["components"]["responses"]["Error429"]["headers"]


def test_aliases_say_what_they_stand_for(document):
    alias = document["paths"]["/api/v1/imagine"]["post"]
    assert alias["tags"] == ["Compatibility aliases"]
    assert alias["description"].startswith("Alias of POST /v1/imagine; behaves identically.")
    ids = [op["operationId"] for methods in document["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids))


def test_a_route_added_later_still_appears(settings):
    from app import create_app

    application = create_app({**settings, "START_WORKERS": False})
    application.add_url_rule("/v1/extra", "api.extra", lambda: "", methods=["GET"])
    application.view_functions["api.extra"].__doc__ = "Something new."
    document = openapi.build(application)
    validate(document)
    assert document["paths"]["/v1/extra"]["get"]["summary"] == "Something new."


def test_docs_page_covers_every_route_with_this_servers_url(app, client):
    page = html.unescape(client.get("/docs").get_data(as_text=True))
    for method, path, _ in api_rules(app):
        assert f'data-route="{method.upper()} {path}"' in page
        if path.startswith("/v1/"):  # each /v1 route has its own section
            anchor = method + path.replace("/", "-").replace("{", "").replace("}", "")
            assert f'id="{anchor}"' in page, f"/docs has no section for {method.upper()} {path}"
    assert "curl -X POST http://images.test/v1/imagine" in page
    for code in ERROR_CODES:
        assert code in page
    for header in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"):
        assert header in page
    assert 'href="/openapi.json"' in page
    for header in ("webhook-id", "webhook-timestamp", "webhook-signature", "X-Webhook-Secret"):
        assert header in page
    assert "<td>8</td><td>3 h 1 min</td><td>6 h 0 min</td>" in page  # the retry schedule, from the settings


def test_docs_need_no_login(client):
    response = client.get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"


def test_the_original_apiframe_routes_are_documented_in_their_own_spelling(document):
    upscale = document["paths"]["/upscale-1x"]["post"]
    assert upscale["tags"] == ["apiframe.ai API"] and "200" in upscale["responses"]
    body = document["components"]["schemas"]["OriginalUpscaleBody"]
    assert set(body["required"]) == {"parent_task_id", "index"}
    assert body["properties"]["index"]["oneOf"][1]["enum"] == ["1", "2", "3", "4"]
    created = upscale["responses"]["200"]["content"]["application/json"]["schema"]
    assert created == {"$ref": "#/components/schemas/TaskCreated"}
    fetch = document["paths"]["/fetch"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert fetch == {"$ref": "#/components/schemas/Task"}
    task = document["components"]["schemas"]["Task"]["properties"]
    assert task["status"]["enum"] == ["pending", "staged", "processing", "finished", "failed"]
    shared = document["paths"]["/imagine"]["post"]
    assert shared["tags"] == ["Compatibility aliases"] and "task_id" in shared["description"]
    answer = shared["responses"]["202"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/SharedJobEnvelope"}
    assert document["paths"]["/v1/reroll"]["post"]["tags"] == ["Jobs"]


def test_every_route_that_honours_an_idempotency_key_documents_it(app, document):
    documented = {
        (method, path)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if any(parameter.get("name") == "Idempotency-Key" for parameter in operation.get("parameters", []))
    }
    honoured = {(route.method, route.path) for route in openapi.api_routes(app) if route.idempotent}
    assert documented == honoured
    assert {("post", "/v1/imagine"), ("post", "/imagine"), ("post", "/v1/images/generations")} <= honoured
    assert ("get", "/v1/jobs") not in honoured
