"""The shared HTTP client of the providers: the error messages it reads from the backends' answers."""

from __future__ import annotations

from providers.http import error_detail


def test_automatic1111_middleware_errors_give_the_detail_or_the_exception_text():
    refused = {"error": "HTTPException", "detail": "Sampler not found", "body": "", "errors": "400: Sampler"}
    crashed = {"error": "AssertionError", "detail": "", "body": "", "errors": "no upscaler named x"}
    assert error_detail(refused) == "Sampler not found"
    assert error_detail(crashed) == "no upscaler named x"
    assert error_detail({"error": "OutOfMemoryError", "errors": "CUDA out of memory"}) == "CUDA out of memory"


def test_other_error_shapes_still_give_their_message():
    assert error_detail({"error": {"message": "Invalid size", "type": "invalid_request"}}) == "Invalid size"
    assert error_detail({"error": "queue is full"}) == "queue is full"
    assert error_detail({"detail": "Not Found"}) == "Not Found"
    assert error_detail({"message": "no credits"}) == "no credits"


def test_a_fastapi_validation_error_names_the_field():
    invalid = {"loc": ["body", "steps"], "msg": "value is not a valid integer", "type": "type_error.integer"}
    assert error_detail({"detail": [invalid]}) == "steps: value is not a valid integer"
    nested = {"loc": ["body", "init_images", 0], "msg": "str type expected", "type": "type_error.str"}
    assert error_detail({"detail": [nested]}) == "init_images.0: str type expected"
    query = {"loc": ["query", "id_task"], "msg": "field required", "type": "value_error.missing"}
    assert error_detail({"detail": [query]}) == "query.id_task: field required"
    whole = {"loc": ["body"], "msg": "field required", "type": "value_error.missing"}
    assert error_detail({"detail": [whole]}) == "field required"
