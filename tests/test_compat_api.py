"""The original apiframe.ai routes through the test client: keys, answers, tasks, new operations, credits."""

from __future__ import annotations

import uuid

import pytest

import credits
from config import PLANS
from conftest import image_bytes
from models import Job, LedgerEntry, db
from operations import OPERATIONS
from original import Original, difference, fine_detail

PROMPT = "a lighthouse on a cliff at dusk"
SMALL = {"quality": 0.25}  # 512 px tiles keep the image work quick


@pytest.fixture
def original(api) -> Original:
    """The ``api`` fixture's account, spoken to as the original API's clients do."""
    return Original(api.client, api.key)


@pytest.fixture
def grid(original) -> dict:
    """A finished 1:1 imagine task with 512 px tiles."""
    task = original.run("/imagine", {"prompt": PROMPT, "aspect_ratio": "1:1", **SMALL})
    assert task["status"] == "finished", task
    return task


@pytest.fixture
def upscaled(original, grid) -> dict:
    """Tile 2 of ``grid``, upscaled 1x (1024 px)."""
    task = original.run("/upscale-1x", {"parent_task_id": grid["task_id"], "index": "2"})
    assert task["status"] == "finished", task
    return task


def row(app, task_id: str) -> Job:
    with app.app_context(), db.connection_context():
        return Job.get_by_id(uuid.UUID(task_id))


def balance(original: Original) -> int:
    return original.get("/account").get_json()["credits"]


def refused(response, status: int, code: str, *fragments: str) -> dict:
    """Assert an error in both formats (the reference's, plus what original clients read)."""
    body = response.get_json()
    assert response.status_code == status, body
    assert body["success"] is False and body["error"]["code"] == code == body["code"]
    assert body["message"] == body["error"]["message"] == body["errors"][0]["msg"]
    for fragment in fragments:
        assert fragment in body["message"], body["message"]
    return body


# ---- keys, limits and errors -------------------------------------------------------------------


@pytest.mark.parametrize("form", ["X-API-Key: {}", "Authorization: {}", "Authorization: Bearer {}"])
def test_every_form_of_the_key_works_everywhere(client, make_account, form):
    _, key = make_account()
    name, value = form.format(key).split(": ", 1)
    for path in ("/v1/account", "/account", "/v1/jobs"):
        response = client.get(path, headers={name: value})
        assert response.status_code == 200, path
        assert response.headers["X-RateLimit-Limit"] == "3000"  # the scale plan's read budget
    unknown = {"task_id": str(uuid.uuid4())}
    assert client.post("/fetch", json=unknown, headers={name: value}).status_code == 404


ORIGINAL_ROUTES = [
    ("post", "/imagine"), ("post", "/reroll"), ("post", "/upscale-1x"), ("post", "/upscale-alt"),
    ("post", "/upscale-highres"), ("post", "/variations"), ("post", "/describe"), ("post", "/blend"),
    ("post", "/seed"), ("post", "/fetch"), ("post", "/fetch-many"), ("get", "/account"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), ORIGINAL_ROUTES)
def test_original_routes_need_a_key_and_say_how_to_send_it(client, method, path):
    response = getattr(client, method)(path, json={})
    refused(response, 401, "UNAUTHORIZED", "X-API-Key", "Authorization: Bearer <key>", "Authorization: <key>")
    wrong = getattr(client, method)(path, json={}, headers={"Authorization": "Bearer ak_live_" + "x" * 43})
    refused(wrong, 401, "UNAUTHORIZED", "Invalid API key.")


@pytest.mark.parametrize("path", ["/v1/reroll", "/v1/upscale-alt", "/v1/upscale-highres", "/v1/seed"])
def test_the_new_v1_routes_need_a_key_and_answer_in_the_reference_format(client, path):
    response = client.post(path, json={})
    assert response.status_code == 401
    assert set(response.get_json()) == {"success", "error"}


def test_the_rate_limit_applies_to_original_routes(client, make_account):
    _, key = make_account("free")  # 10 creates a minute
    original = Original(client, key)
    for _ in range(10):
        assert original.post("/imagine", {}).status_code == 400
    response = original.post("/upscale-1x", {"parent_task_id": str(uuid.uuid4()), "index": 1})
    refused(response, 429, "RATE_LIMITED", "Rate limit")
    assert original.get("/account").status_code == 200
    assert int(response.headers["Retry-After"]) >= 1 and response.headers["X-RateLimit-Remaining"] == "0"


LEGACY_ROUTES = [route.path for op in OPERATIONS if op.original for route in op.original.routes]  # the SDK's


@pytest.mark.parametrize("path", LEGACY_ROUTES)
def test_the_sdks_legacy_routes_count_as_creates(original, path):
    response = original.post(path, {})
    assert response.status_code == 400, response.get_json()
    assert response.headers["X-RateLimit-Limit"] == str(PLANS["scale"].requests_per_minute)  # not reads


def test_the_sdks_legacy_routes_honour_idempotency_keys(api, original, grid):
    before = balance(original)
    headers = {**original.headers, "Idempotency-Key": "legacy-upscale-1"}
    body = {"taskId": grid["task_id"], "index": 3}
    first, again = (original.client.post("/midjourney/upscale", json=body, headers=headers) for _ in range(2))
    assert first.status_code == again.status_code == 200, again.get_json()
    assert again.get_json() == first.get_json() and again.headers["Idempotent-Replayed"] == "true"
    assert balance(original) == before - 4  # charged once


def test_insufficient_credits_on_an_original_route(app, client, make_account):
    account, key = make_account()
    original = Original(client, key)
    grid = original.run("/imagine", {"prompt": PROMPT, **SMALL})
    with app.app_context():
        credits.grant(account.id, -credits.balance(account.id))
    response = original.post("/reroll", {"parent_task_id": grid["task_id"]})
    refused(response, 402, "INSUFFICIENT_CREDITS", "This reroll costs 16 credits and your balance is 0.")
    assert original.run("/seed", {"task_id": grid["task_id"]})["status"] == "finished"  # seeds are free


def test_another_accounts_tasks_are_not_found(client, make_account, original, grid):
    other = Original(client, make_account()[1])
    fetched = other.post("/fetch", {"task_id": grid["task_id"]})
    refused(fetched, 404, "NOT_FOUND", grid["task_id"])
    for path, body in [
        ("/upscale-1x", {"parent_task_id": grid["task_id"], "index": 1}),
        ("/reroll", {"parent_task_id": grid["task_id"]}),
        ("/seed", {"task_id": grid["task_id"]}),
        ("/upscale-highres", {"parent_task_id": grid["task_id"], "index": 1, "type": "2x"}),
    ]:
        refused(other.post(path, body), 404, "NOT_FOUND")


# ---- the shared paths --------------------------------------------------------------------------


def test_imagine_answers_both_apis_at_once(app, api, original):
    response = original.post("/imagine", {"prompt": PROMPT, "aspect_ratio": "16:9", "process_mode": "turbo"})
    assert response.status_code == 202
    body = response.get_json()
    assert body["success"] is True and body["task_id"] == body["job"]["id"]
    assert body["job"]["type"] == "imagine" and body["job"]["status"] == "pending"
    job = row(app, body["task_id"])
    assert job.params["aspect_ratio"] == "16:9" and job.params["process_mode"] == "turbo"
    assert job.origin == "original"
    camel = api.post("/imagine", json={"prompt": PROMPT, "aspectRatio": "4:3", "webhookSecret": "s"})
    assert camel.status_code == 202 and camel.get_json()["task_id"] == camel.get_json()["job"]["id"]
    assert row(app, camel.get_json()["task_id"]).origin == "reference"


def test_the_reference_routes_are_unchanged(api, grid):
    response = api.post("/v1/imagine", json={"prompt": PROMPT, "aspect_ratio": "1:1"})
    assert response.status_code == 400
    assert response.get_json() == {
        "success": False,
        "error": {
            "code": "VALIDATION_ERROR",
            "message": "'aspect_ratio' is not a known field.",
            "fields": {"aspect_ratio": ["Unknown field."]},
        },
    }
    assert "task_id" not in api.post("/v1/imagine", json={"prompt": PROMPT}).get_json()
    assert api.post("/v1/upscale", json={"jobId": grid["task_id"], "index": "2"}).status_code == 400
    fetched = api.get(f"/fetch/{grid['task_id']}").get_json()
    assert set(fetched) == {"success", "data"} and fetched["data"]["id"] == grid["task_id"]
    assert fetched["data"]["imageUrl"] == grid["original_image_url"]


def test_both_spellings_with_different_values_are_refused(original):
    response = original.post("/imagine", {"prompt": PROMPT, "aspect_ratio": "1:1", "aspectRatio": "16:9"})
    refused(response, 400, "VALIDATION_ERROR", "'aspect_ratio'", "'aspectRatio'", "two spellings of one")
    same = original.post("/imagine", {"prompt": PROMPT, "aspect_ratio": "1:1", "aspectRatio": "1:1", **SMALL})
    assert same.status_code == 202


def test_describe_and_blend_in_the_original_spelling(api, original, files):
    red = files.add("/red.png", image_bytes(color=(200, 30, 40)))
    response = original.post("/describe", {"image_url": red, "process_mode": "fast"})
    assert response.status_code == 202 and response.get_json()["job"]["type"] == "describe"
    described = original.wait(response.get_json()["task_id"])
    assert described["task_type"] == "describe" and described["status"] == "finished"
    assert len(described["content"]) == 4 and all(isinstance(text, str) for text in described["content"])
    assert described["image_url"] == red
    blue = files.add("/blue.png", image_bytes(color=(20, 40, 210)))
    landscape = original.run("/blend", {"image_urls": [red, blue], "dimension": "landscape"})
    assert landscape["task_type"] == "blend" and len(landscape["image_urls"]) == 4
    assert original.image(landscape["image_urls"][0]).size == (1024, 680)
    portrait = api.wait(api.submit("/v1/blend", {"imageUrls": [red, blue], "dimension": "portrait"})["id"])
    assert original.image(portrait["imageUrls"][0]).size == (680, 1024)


# ---- POST /fetch, /fetch-many and GET /account -------------------------------------------------


def test_a_finished_imagine_task(original, grid):
    assert set(grid) == {"task_id", "task_type", "status", "original_image_url", "image_urls", "seed"}
    assert grid["task_type"] == "imagine" and grid["seed"].isdigit()
    tiles = [original.image(url) for url in grid["image_urls"]]
    assert {tile.size for tile in tiles} == {(512, 512)}
    assert original.image(grid["original_image_url"]).size == (1024, 1024)


def test_a_task_follows_its_job(app, api, original):
    app.extensions["apiframe.pool"].stop()
    task_id = original.submit("/imagine", {"prompt": PROMPT})
    assert original.fetch(task_id) == {
        "task_id": task_id,
        "task_type": "imagine",
        "status": "pending",
        "percentage": "0",
        "queue_position": 1,
    }
    steps = [("queued", 0, "staged", 1), ("processing", 37, "processing", None)]
    for status, progress, expected, place in steps:
        with app.app_context():
            Job.update(status=status, progress=progress).where(Job.id == uuid.UUID(task_id)).execute()
        task = original.fetch(task_id)
        assert (task["status"], task["percentage"]) == (expected, str(progress))
        assert task.get("queue_position") == place
    assert api.post(f"/v1/jobs/{task_id}/cancel").status_code == 200
    assert original.fetch(task_id) == {
        "task_id": task_id,
        "task_type": "imagine",
        "status": "failed",
        "message": "The job was cancelled.",
    }


def test_a_failed_task_says_why(original, files):
    task = original.run("/describe", {"image_url": files.url("/missing.png")})
    assert task["status"] == "failed" and "HTTP 404" in task["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "The 'task_id' field is required."),
        ({"task_id": "nope"}, "The 'task_id' field must be a job ID (a UUID)."),
        ({"task_id": str(uuid.uuid4()), "extra": 1}, "'extra' is not a known field."),
    ],
)
def test_fetch_refuses_bad_bodies(original, body, fragment):
    refused(original.post("/fetch", body), 400, "VALIDATION_ERROR", fragment)


def test_fetch_many_in_the_order_asked(client, make_account, original, grid):
    foreign = Original(client, make_account()[1]).submit("/imagine", {"prompt": PROMPT, **SMALL})
    unknown = str(uuid.uuid4())
    ids = [grid["task_id"], unknown, foreign, grid["task_id"]]
    response = original.post("/fetch-many", {"task_ids": ids})
    assert response.status_code == 200 and response.headers["X-RateLimit-Limit"] == "3000"  # reads
    tasks = response.get_json()["tasks"]
    assert [task["task_id"] for task in tasks] == ids
    assert tasks[0] == tasks[3] == original.fetch(grid["task_id"])
    for missing in (tasks[1], tasks[2]):
        assert missing == {
            "task_id": missing["task_id"],
            "error": "NOT_FOUND",
            "message": f"Task {missing['task_id']} was not found.",
        }


@pytest.mark.parametrize(
    ("task_ids", "fragment"),
    [
        (["a1b2c3d4-e5f6-7890-abcd-ef1234567890"], "The 'task_ids' field must hold 2 to 20 task IDs."),
        ([str(uuid.uuid4()) for _ in range(21)], "must hold 2 to 20 task IDs."),
        ("a1b2c3d4-e5f6-7890-abcd-ef1234567890", "The 'task_ids' field must be an array of task IDs."),
        ([str(uuid.uuid4()), "nope"], "Item 2 of the 'task_ids' field must be a job ID (a UUID)."),
        (None, "The 'task_ids' field is required."),
    ],
)
def test_fetch_many_refuses_bad_lists(original, task_ids, fragment):
    refused(original.post("/fetch-many", {"task_ids": task_ids}), 400, "VALIDATION_ERROR", fragment)


def test_account_info(api, original, grid, upscaled):
    account = api.get("/v1/account").get_json()["account"]
    assert account["credits"]["remaining"] == 5000 - 16 - 4
    assert original.get("/account").get_json() == {
        "email": account["email"],
        "credits": 5000 - 16 - 4,
        "plan": "scale",
        "total_images": 4 + 1,
        "next_billing_date": None,
    }


# ---- upscales ----------------------------------------------------------------------------------


def test_upscale_1x(api, original, grid):
    response = original.post("/upscale-1x", {"parent_task_id": grid["task_id"], "index": 3})
    assert response.status_code == 200 and set(response.get_json()) == {"task_id"}
    task = original.wait(response.get_json()["task_id"])
    assert set(task) == {"task_id", "task_type", "status", "image_url"}
    assert task["task_type"] == "upscale#3" and task["status"] == "finished"
    assert original.image(task["image_url"]).size == (1024, 1024)
    job = api.job(task["task_id"])
    assert job["type"] == "upscale" and job["index"] == 3 and job["parentJobId"] == grid["task_id"]


def test_upscale_on_the_shared_path_takes_either_spelling(api, original, grid):
    snake = original.post("/upscale", {"parent_task_id": grid["task_id"], "index": "4"})
    camel = api.post("/upscale", json={"jobId": grid["task_id"], "index": 1})
    for response, index in ((snake, 4), (camel, 1)):
        body = response.get_json()
        assert response.status_code == 202 and body["task_id"] == body["job"]["id"]
        assert body["job"]["type"] == "upscale" and body["job"]["index"] == index


def test_upscale_alt_subtle_keeps_and_creative_invents_detail(api, original, upscaled):
    before = balance(original)
    parent = {"parent_task_id": upscaled["task_id"]}
    subtle = original.run("/upscale-alt", {**parent, "type": "subtle"})
    creative = original.run("/upscale-alt", {**parent, "type": "creative"})
    assert (subtle["task_type"], creative["task_type"]) == ("upscale-subtle", "upscale-creative")
    assert balance(original) == before - 4 - 4
    source = original.image(upscaled["image_url"])
    subtle_image, creative_image = original.image(subtle["image_url"]), original.image(creative["image_url"])
    assert subtle_image.size == creative_image.size == (2048, 2048)
    assert difference(subtle_image, source) < 3 and difference(creative_image, subtle_image) < 4
    assert fine_detail(creative_image) > 1.5 * fine_detail(subtle_image)
    job = api.job(creative["task_id"])
    assert job["type"] == "upscale-alt" and job["parentJobId"] == upscaled["task_id"]
    assert job["imageUrls"] == [job["imageUrl"]] == [creative["image_url"]]


def test_upscale_alt_needs_an_upscale(api, original, grid):
    response = original.post("/upscale-alt", {"parent_task_id": grid["task_id"], "type": "subtle"})
    refused(response, 400, "VALIDATION_ERROR", "is an imagine job; upscale-alt needs an upscale job")
    v1 = api.post("/v1/upscale-alt", json={"jobId": grid["task_id"], "type": "creative"})
    assert v1.status_code == 400 and "needs an upscale job" in v1.get_json()["error"]["message"]


def test_v1_upscale_alt(api, upscaled):
    job = api.submit("/v1/upscale-alt", {"jobId": upscaled["task_id"], "type": "subtle"})
    assert job["type"] == "upscale-alt" and job["parentJobId"] == upscaled["task_id"]
    assert api.wait(job["id"])["status"] == "succeeded"


def test_upscale_highres_of_a_job_or_a_url(api, original, grid, upscaled, files):
    before = balance(original)
    twice = original.run("/upscale-highres", {"parent_task_id": upscaled["task_id"], "type": "2x"})
    assert twice["task_type"] == "upscale-highres" and twice["status"] == "finished"
    assert original.image(twice["image_url"]).size == (2048, 2048)
    photo = files.add("/photo.png", image_bytes((320, 200)))
    four = original.run("/upscale-highres", {"image_url": photo, "type": "4x"})
    assert original.image(four["image_url"]).size == (1280, 800)
    body = {"jobId": grid["task_id"], "index": 3, "type": "2x"}
    tile = api.wait(api.submit("/v1/upscale-highres", body)["id"])
    assert tile["type"] == "upscale-highres" and tile["index"] == 3
    assert original.image(tile["imageUrl"]).size == (1024, 1024)
    assert balance(original) == before - 3 * 4


def test_upscale_highres_refuses_images_over_2048_as_a_job_error(original, files):
    before = balance(original)
    wide = files.add("/wide.png", image_bytes((2100, 64)))
    task = original.run("/upscale-highres", {"image_url": wide, "type": "2x"})
    assert task["status"] == "failed"
    assert task["message"] == "The image is 2100x64; upscale-highres takes images of at most 2048x2048."
    assert balance(original) == before  # refunded


def test_upscale_highres_checks_its_parent(original, grid, upscaled):
    no_index = original.post("/upscale-highres", {"parent_task_id": grid["task_id"], "type": "2x"})
    refused(no_index, 400, "VALIDATION_ERROR", "The 'index' field is required", "four images")
    body = {"parent_task_id": upscaled["task_id"], "type": "4x", "index": 1}
    extra = original.post("/upscale-highres", body)
    refused(extra, 400, "VALIDATION_ERROR", "The 'index' field is only for jobs with four images")


# ---- variations and rerolls --------------------------------------------------------------------


def test_variations_of_a_tile_reframed_and_prompted(api, original, grid):
    before = balance(original)
    body = {"parent_task_id": grid["task_id"], "index": "1", "prompt": "warmer", "aspect_ratio": "16:9"}
    response = original.post("/variations", body)
    assert response.status_code == 200 and set(response.get_json()) == {"task_id"}
    task = original.wait(response.get_json()["task_id"])
    assert task["task_type"] == "variation" and len(task["image_urls"]) == 4
    assert {original.image(url).size for url in task["image_urls"]} == {(512, 288)}
    job = api.job(task["task_id"])
    assert job["prompt"] == "warmer" and job["index"] == 1 and job["parentJobId"] == grid["task_id"]
    assert balance(original) == before - 16


def test_strong_variations_stray_further_than_subtle_ones(original, grid, upscaled):
    source = original.image(upscaled["image_url"])
    spread = {}
    for strength in ("subtle", "strong"):
        task = original.run("/variations", {"parent_task_id": upscaled["task_id"], "index": strength})
        assert task["status"] == "finished" and len(task["image_urls"]) == 4
        spread[strength] = sum(difference(original.image(url), source) for url in task["image_urls"]) / 4
    assert spread["subtle"] < spread["strong"]
    response = original.post("/variations", {"parent_task_id": grid["task_id"], "index": "strong"})
    needs = "a strong variation needs an upscale, upscale-alt, upscale-highres or faceswap job"
    refused(response, 400, "VALIDATION_ERROR", needs)


def test_reroll_draws_the_prompt_again_with_a_new_seed(app, api, original, grid):
    before = balance(original)
    response = original.post("/reroll", {"parent_task_id": grid["task_id"]})
    assert response.status_code == 200 and set(response.get_json()) == {"task_id"}
    task = original.wait(response.get_json()["task_id"])
    assert task["task_type"] == "reroll" and task["status"] == "finished"
    assert task["seed"] != grid["seed"]
    old, new = ([original.image(url).tobytes() for url in t["image_urls"]] for t in (grid, task))
    assert not set(old) & set(new)
    job = api.job(task["task_id"])
    assert job["prompt"] == PROMPT and job["parentJobId"] == grid["task_id"]
    assert job["seed"] == int(task["seed"])
    assert row(app, task["task_id"]).params["quality"] == 0.25  # the parent's settings
    assert balance(original) == before - 16
    body = {"parent_task_id": task["task_id"], "prompt": "a storm", "aspect_ratio": "9:16"}
    again = original.run("/reroll", body)
    assert {original.image(url).size for url in again["image_urls"]} == {(288, 512)}
    assert api.job(again["task_id"])["prompt"] == "a storm"


def test_reroll_needs_an_imagine_or_a_reroll(api, original, upscaled):
    response = original.post("/reroll", {"parent_task_id": upscaled["task_id"]})
    refused(response, 400, "VALIDATION_ERROR", "is an upscale job; reroll needs an imagine or reroll job")


def test_v1_reroll(api, grid):
    response = api.post("/v1/reroll", json={"jobId": grid["task_id"], "aspectRatio": "4:3"})
    assert response.status_code == 202 and set(response.get_json()) == {"success", "job"}
    job = response.get_json()["job"]
    assert job["type"] == "reroll" and job["parentJobId"] == grid["task_id"] and job["prompt"] == PROMPT
    done = api.wait(job["id"])
    assert done["status"] == "succeeded" and len(done["imageUrls"]) == 4 and done["seed"] is not None


# ---- seeds -------------------------------------------------------------------------------------


def test_a_seed_is_free_and_is_the_parents(app, api, original, grid):
    before = balance(original)
    task = original.run("/seed", {"task_id": grid["task_id"]})
    assert task["task_type"] == "seed" and task["status"] == "finished" and task["seed"] == grid["seed"]
    assert set(task) == {"task_id", "task_type", "status", "seed"}
    assert balance(original) == before
    with app.app_context():
        assert not LedgerEntry.select().where(LedgerEntry.job == uuid.UUID(task["task_id"])).exists()
    job = api.wait(api.submit("/v1/seed", {"jobId": grid["task_id"]})["id"])
    assert job["type"] == "seed" and job["status"] == "succeeded" and job["seed"] == int(grid["seed"])
    assert job["parentJobId"] == grid["task_id"] and job["imageUrl"] is None


def test_a_job_without_a_seed_gives_a_failed_seed_task(app, api, original, upscaled):
    task = original.run("/seed", {"task_id": upscaled["task_id"]})
    assert task["status"] == "failed"
    no_seed = f"Job {upscaled['task_id']} (upscale) has no seed; only jobs with four images have one."
    assert task["message"] == no_seed
    app.config["LOCAL_LATENCY"] = 30
    running = api.submit("/v1/imagine", {"prompt": PROMPT})["id"]
    seed = original.wait(original.submit("/seed", {"task_id": running}))
    assert seed["status"] == "failed" and seed["message"].startswith(f"Job {running} is ")
    assert seed["message"].endswith("; only a succeeded job has a seed.")
    assert api.post(f"/v1/jobs/{running}/cancel").status_code == 200


@pytest.mark.parametrize(
    "path", ["/imagine-video", "/flux-imagine", "/pro/midjourney/imagine", "/ai-photos/train"]
)
def test_the_original_apis_other_endpoints_are_a_404_in_its_error_shape(original, path):
    refused(original.post(path, {"prompt": "a boat"}), 404, "NOT_FOUND", "No such endpoint.")


@pytest.mark.parametrize("path", ["/v1/imagine-video", "/v1/images/nothing"])  # /console/ has HTML pages
def test_unknown_paths_of_the_other_parts_keep_the_references_error_shape(client, path):
    response = client.post(path)
    assert response.status_code == 404 and set(response.get_json()) == {"success", "error"}


@pytest.mark.parametrize(("ratio", "size"), [("2:3", (344, 512)), ("3:2", (512, 344)), ("21:9", (512, 216))])
def test_the_original_imagine_takes_midjourneys_common_aspect_ratios(original, ratio, size):
    task = original.run("/imagine", {"prompt": PROMPT, "aspect_ratio": ratio, **SMALL})
    assert task["status"] == "finished", task
    assert {original.image(url).size for url in task["image_urls"]} == {size}


def test_an_aspect_ratio_outside_the_list_is_refused_naming_the_accepted_ones(api, original, grid):
    accepted = "1:1, 16:9, 9:16, 4:3, 3:4, 2:3, 3:2, 4:5, 5:4, 1:2, 2:1, 21:9, 9:21."
    for path, body in [
        ("/imagine", {"prompt": PROMPT}),
        ("/reroll", {"parent_task_id": grid["task_id"]}),
        ("/variations", {"parent_task_id": grid["task_id"], "index": 1}),
    ]:
        response = original.post(path, {**body, "aspect_ratio": "7:3"})
        refused(response, 400, "VALIDATION_ERROR", f"The 'aspect_ratio' field must be one of: {accepted}")
    for path in ("/v1/imagine", "/imagine"):  # a reference body on the shared path too, as on /v1
        reference = api.post(path, json={"prompt": PROMPT, "aspectRatio": "2:3"})
        assert reference.status_code == 400
        message = reference.get_json()["error"]["message"]
        assert message == "The 'aspectRatio' field must be one of: 1:1, 16:9, 9:16, 4:3, 3:4."


def test_variations_reframe_to_midjourneys_other_aspect_ratios(original, grid):
    body = {"parent_task_id": grid["task_id"], "index": "1", "aspect_ratio": "4:5"}
    task = original.run("/variations", body)
    assert {original.image(url).size for url in task["image_urls"]} == {(408, 512)}
