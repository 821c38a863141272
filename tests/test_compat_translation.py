"""The original apiframe.ai API's translations, unit by unit: keys, bodies, task objects, statuses, errors."""

from __future__ import annotations

import datetime
import uuid

import pytest
from PIL import Image

import jobs
import operations
from api import original as compat
from auth import presented_key
from errors import ApiError, validation_error
from imaging import reframe
from jobs import ORIGINAL, REFERENCE, REFUNDED, STATUSES
from models import Account, Job
from original import fine_detail
from providers.procedural import enrich, paint_tiles

KEY = "ak_live_" + "k" * 43
JOB_ID = uuid.UUID("a1b2c3d4-e5f6-7890-abcd-ef1234567890")


# ---- the key -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"X-API-Key": KEY}, KEY),
        ({"Authorization": KEY}, KEY),
        ({"Authorization": f"Bearer {KEY}"}, KEY),
        ({"Authorization": f"bearer   {KEY} "}, KEY),
        ({"X-API-Key": KEY, "Authorization": "Bearer ak_live_other"}, KEY),  # X-API-Key first
        ({"X-API-Key": " ", "Authorization": KEY}, KEY),
        ({"Authorization": "Bearer"}, None),
        ({"Authorization": "  "}, None),
        ({}, None),
    ],
)
def test_presented_key(app, headers, key):
    with app.test_request_context("/v1/account", headers=headers):
        assert presented_key() == key


# ---- request bodies ----------------------------------------------------------------------------

SPELLINGS = operations.get("imagine").original.spellings


def test_unify_renames_original_spellings_and_drops_nulls():
    body = {"prompt": "a fox", "aspect_ratio": "16:9", "webhook_url": None, "process_mode": "turbo"}
    unified, names = compat.unify(body, SPELLINGS, original=True)
    assert unified == {"prompt": "a fox", "aspectRatio": "16:9", "processMode": "turbo"}
    assert names["aspectRatio"] == "aspect_ratio" and names["prompt"] == "prompt"
    assert names["webhookUrl"] == "webhook_url"  # a field not sent is named as original clients spell it


def test_unify_names_fields_as_sent_by_reference_clients():
    unified, names = compat.unify({"prompt": "a fox", "aspectRatio": "4:3"}, SPELLINGS, original=False)
    assert unified == {"prompt": "a fox", "aspectRatio": "4:3"}
    assert names == {"prompt": "prompt", "aspectRatio": "aspectRatio"}


def test_both_spellings_agree_or_are_refused(app):
    same = {"prompt": "p", "aspect_ratio": "4:3", "aspectRatio": "4:3"}
    assert compat.unify(same, SPELLINGS, original=True)[0] == {"prompt": "p", "aspectRatio": "4:3"}
    with pytest.raises(ApiError) as refused:
        compat.unify({"prompt": "p", "aspect_ratio": "4:3", "aspectRatio": "1:1"}, SPELLINGS, original=True)
    assert refused.value.status == 400
    assert "'aspect_ratio' and 'aspectRatio'" in refused.value.message


P = str(JOB_ID)  # a parent task id
OPERATIONS = {
    "/imagine": "imagine",
    "/describe": "describe",
    "/blend": "blend",
    "/upscale": "upscale",
    "/upscale-1x": "upscale",
    "/variations": "variation",
    "/reroll": "reroll",
    "/upscale-alt": "upscale-alt",
    "/upscale-highres": "upscale-highres",
    "/seed": "seed",
}
A, B = "http://x.test/a.png", "http://x.test/b.png"


@pytest.mark.parametrize(
    ("path", "body", "expected", "origin"),
    [
        (
            "/imagine",
            {"prompt": "a fox", "aspect_ratio": "16:9", "process_mode": "relax"},
            {"prompt": "a fox", "aspect_ratio": "16:9", "process_mode": "relax", "version": "6.1"},
            ORIGINAL,
        ),
        ("/imagine", {"prompt": "a fox", "aspectRatio": "3:4"}, {"aspect_ratio": "3:4"}, REFERENCE),
        ("/describe", {"image_url": A}, {"image_url": A}, ORIGINAL),
        ("/blend", {"image_urls": [A, B], "dimension": "portrait"}, {"dimension": "portrait"}, ORIGINAL),
        ("/blend", {"imageUrls": [A, B]}, {"image_urls": [A, B], "dimension": "square"}, REFERENCE),
        ("/upscale-1x", {"parent_task_id": P, "index": "3"}, {"job_id": JOB_ID, "index": 3}, ORIGINAL),
        ("/upscale", {"jobId": P, "index": "4"}, {"index": 4}, REFERENCE),
        ("/variations", {"parent_task_id": P, "index": 2}, {"index": 2}, ORIGINAL),
        ("/variations", {"parent_task_id": P, "index": "strong"}, {"index": "strong"}, ORIGINAL),
        (
            "/variations",
            {"parent_task_id": P, "index": "1", "prompt": "redder", "aspect_ratio": "9:16"},
            {"index": 1, "prompt": "redder", "aspect_ratio": "9:16"},
            ORIGINAL,
        ),
        (
            "/reroll",
            {"parent_task_id": P, "aspect_ratio": "1:1"},
            {"job_id": JOB_ID, "aspect_ratio": "1:1", "prompt": None},
            ORIGINAL,
        ),
        ("/upscale-alt", {"parent_task_id": P, "type": "creative"}, {"type": "creative"}, ORIGINAL),
        (
            "/upscale-highres",
            {"image_url": A, "type": "4x"},
            {"image_url": A, "job_id": None, "index": None, "type": "4x"},
            ORIGINAL,
        ),
        ("/upscale-highres", {"parent_task_id": P, "type": "2x", "index": "2"}, {"index": 2}, ORIGINAL),
        (
            "/seed",
            {"task_id": P, "webhook_url": A, "webhook_secret": "s"},
            {"job_id": JOB_ID, "webhook_url": A, "webhook_secret": "s"},
            ORIGINAL,
        ),
    ],
)
def test_bodies_translate_to_what_jobs_create_takes(app, path, body, expected, origin):
    with app.test_request_context(path, method="POST"):
        data, got_origin = compat.load(operations.get(OPERATIONS[path]), body)
    assert {key: data[key] for key in expected} == expected
    assert got_origin == origin


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/upscale-1x", {"parent_task_id": P, "index": "5"}, "'index' field must be one of: 1"),
        ("/upscale-1x", {"parent_task_id": P, "index": "two"}, "'index'"),
        ("/upscale-1x", {"parent_task_id": P, "index": True}, "'index'"),
        ("/upscale-1x", {"parent_task_id": P, "index": 1.5}, "'index'"),
        ("/upscale-1x", {"parent_task_id": P, "index": "strong"}, "'index'"),
        ("/upscale-1x", {"index": 1}, "The 'parent_task_id' field is required."),
        ("/upscale", {"index": 1}, "The 'jobId' field is required."),
        ("/upscale-1x", {"parent_task_id": "x", "index": 1}, "'parent_task_id' field must be a job ID"),
        ("/variations", {"parent_task_id": P, "index": "wild"}, "1, 2, 3, 4, subtle, strong"),
        ("/imagine", {"prompt": "p", "aspect_ratio": "7:3"}, "'aspect_ratio' field must be one of"),
        ("/imagine", {"prompt": "p", "aspectRatio": "7:3"}, "'aspectRatio' field must be one of"),
        ("/imagine", {"prompt": "p", "process_mode": "slow"}, "'process_mode' field must be one of"),
        ("/imagine", {"aspect_ratio": "1:1"}, "The 'prompt' field is required."),
        ("/imagine", {"prompt": "p", "sref": "x"}, "'sref' is not a known field."),
        ("/blend", {"image_urls": [A]}, "'image_urls' field must hold 2 to 5"),
        ("/blend", {"image_urls": [A, "ftp://b"]}, "Item 2 of the 'image_urls' field"),
        ("/blend", {"imageUrls": [A, B], "dimension": "wide"}, "'dimension' field must be one of"),
        ("/describe", {}, "The 'imageUrl' field is required."),
        ("/reroll", {"parent_task_id": P, "prompt": " "}, "'prompt' field must not be empty"),
        ("/upscale-alt", {"parent_task_id": P, "type": "2x"}, "'type' field must be one of: subtle"),
        ("/upscale-highres", {"type": "2x"}, "'parent_task_id' field is required unless"),
        (
            "/upscale-highres",
            {"parent_task_id": P, "image_url": A, "type": "2x"},
            "'image_url' field must not be given with a job ID",
        ),
        ("/upscale-highres", {"image_url": A, "type": "8x"}, "'type' field must be one of: 2x"),
        ("/seed", {}, "The 'task_id' field is required."),
        ("/seed", [], "The request body must be a JSON object."),
    ],
)
def test_bad_bodies_are_refused_naming_the_field_as_sent(app, path, body, named):
    with app.test_request_context(path, method="POST"), pytest.raises(ApiError) as refused:
        compat.load(operations.get(OPERATIONS[path]), body)
    assert refused.value.status == 400 and refused.value.code == "VALIDATION_ERROR"
    assert named in refused.value.message


# ---- task objects ------------------------------------------------------------------------------


def job(**fields) -> Job:
    """An unsaved job, succeeded unless told otherwise."""
    values = {
        "id": JOB_ID,
        "account": 1,
        "type": "imagine",
        "status": "succeeded",
        "params": {},
        "cost": 16,
        "progress": 100,
        "created_at": datetime.datetime(2026, 5, 14, 10, 30),
    }
    return Job(**{**values, **fields})


GRID = {"grid": "grid.png", "tiles": ["1.png", "2.png", "3.png", "4.png"]}
IMAGE = {"grid": None, "tiles": ["image.png"]}
BASE = f"http://images.test/images/{JOB_ID}"


@pytest.mark.parametrize(
    ("fields", "task_type"),
    [
        ({"type": "imagine"}, "imagine"),
        ({"type": "reroll"}, "reroll"),
        ({"type": "variation", "index": 3}, "variation"),
        ({"type": "variation", "params": {"strength": "strong"}}, "variation"),
        ({"type": "blend"}, "blend"),
        ({"type": "describe"}, "describe"),
        ({"type": "upscale", "index": 1}, "upscale#1"),
        ({"type": "upscale", "index": 4}, "upscale#4"),
        ({"type": "upscale-alt", "params": {"type": "subtle"}}, "upscale-subtle"),
        ({"type": "upscale-alt", "params": {"type": "creative"}}, "upscale-creative"),
        ({"type": "upscale-highres", "params": {"type": "4x"}}, "upscale-highres"),
        ({"type": "seed"}, "seed"),
    ],
)
def test_task_types(fields, task_type):
    assert compat.task_type(job(**fields)) == task_type


@pytest.mark.parametrize(
    ("status", "progress", "expected"),
    [
        ("pending", 0, {"status": "pending", "percentage": "0", "queue_position": 1}),  # no other job waits
        ("queued", 0, {"status": "staged", "percentage": "0", "queue_position": 1}),
        ("processing", 45, {"status": "processing", "percentage": "45"}),
        ("failed", 30, {"status": "failed", "message": "Could not use imageUrl: HTTP 404."}),
        ("timed_out", 80, {"status": "failed", "message": "The job ran longer than the 600 second limit."}),
        ("cancelled", 10, {"status": "failed", "message": "The job was cancelled."}),
    ],
)
def test_statuses_of_unfinished_and_failed_tasks(app, status, progress, expected):
    error = {"failed": "Could not use imageUrl: HTTP 404.", "timed_out": expected.get("message")}.get(status)
    with app.app_context():
        task = compat.task_object(job(status=status, progress=progress, error=error))
    assert task == {"task_id": str(JOB_ID), "task_type": "imagine", **expected}


def test_every_status_maps_to_an_original_one():
    assert set(compat.TASK_STATUSES) == set(STATUSES)
    assert set(compat.TASK_STATUSES.values()) == {"pending", "staged", "processing", "finished", "failed"}
    assert all(compat.TASK_STATUSES[status] == "failed" for status in REFUNDED)


def test_a_finished_grid(app):
    with app.app_context():
        task = compat.task_object(job(seed=1234567890, **GRID))
    assert task == {
        "task_id": str(JOB_ID),
        "task_type": "imagine",
        "status": "finished",
        "original_image_url": f"{BASE}/grid.png",
        "image_urls": [f"{BASE}/{n}.png" for n in range(1, 5)],
        "seed": "1234567890",
    }


def test_a_finished_upscale_describe_and_seed(app):
    with app.app_context():
        upscale = compat.task_object(job(type="upscale", index=2, **IMAGE))
        creative = compat.task_object(job(type="upscale-alt", params={"type": "creative"}, **IMAGE))
        prompts = ["a red fox", "a fox in snow", "winter", "orange on white"]
        describe = compat.task_object(
            job(type="describe", params={"image_url": "http://x.test/fox.png"}, descriptions=prompts)
        )
        seed = compat.task_object(job(type="seed", seed=42))
    assert upscale == {
        "task_id": str(JOB_ID),
        "task_type": "upscale#2",
        "status": "finished",
        "image_url": f"{BASE}/image.png",
    }
    assert creative["task_type"] == "upscale-creative" and creative["image_url"] == f"{BASE}/image.png"
    assert describe["content"] == ["1️⃣ a red fox", "2️⃣ a fox in snow", "3️⃣ winter", "4️⃣ orange on white"]
    assert describe["image_url"] == "http://x.test/fox.png"
    assert seed == {"task_id": str(JOB_ID), "task_type": "seed", "status": "finished", "seed": "42"}


def test_tasks_that_are_missing(app, make_account):
    account, _ = make_account()
    with app.app_context():
        found = compat.tasks(account, [JOB_ID, JOB_ID])
    assert found == [
        {"task_id": str(JOB_ID), "error": "NOT_FOUND", "message": f"Task {JOB_ID} was not found."}
    ] * 2


def test_total_images_counts_grids_and_upscales_that_succeeded(app, make_account):
    account, _ = make_account()
    rows = [
        ("imagine", "succeeded"), ("reroll", "succeeded"), ("blend", "succeeded"), ("upscale", "succeeded"),
        ("upscale-highres", "succeeded"), ("describe", "succeeded"), ("seed", "succeeded"),
        ("imagine", "failed"), ("variation", "processing"),
    ]  # fmt: skip
    images = {"imagine": 4, "reroll": 4, "blend": 4, "variation": 4, "upscale": 1, "upscale-highres": 1}
    with app.app_context():
        for job_type, status in rows:
            job = Job.create(account=account.id, type=job_type, status="processing", cost=0)
            if status != "processing":  # jobs end through jobs.finish, which counts the images made
                tiles = [f"{n}.png" for n in range(images.get(job_type, 0))] or None
                jobs.finish(job.id, status, tiles=tiles)
        account = Account.get_by_id(account.id)
        assert compat.account_object(account)["total_images"] == 4 + 4 + 4 + 1 + 1
        assert compat.account_object(account)["next_billing_date"] is None


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/imagine", "/upscale-1x", "/fetch", "/fetch-many", "/account", "/seed"])
def test_original_routes_errors_carry_what_their_clients_read(app, path):
    with app.test_request_context(path):
        body = validation_error("The 'prompt' field is required.").response().get_json()
    assert body["success"] is False
    assert body["error"] == {"code": "VALIDATION_ERROR", "message": "The 'prompt' field is required."}
    assert body["message"] == "The 'prompt' field is required." and body["code"] == "VALIDATION_ERROR"
    assert body["errors"] == [{"msg": "The 'prompt' field is required."}]


@pytest.mark.parametrize("path", ["/v1/imagine", "/api/v1/imagine", f"/fetch/{JOB_ID}", "/v1/account"])
def test_reference_routes_errors_are_unchanged(app, path):
    with app.test_request_context(path):
        body = validation_error("The 'prompt' field is required.").response().get_json()
    assert body == {
        "success": False,
        "error": {"code": "VALIDATION_ERROR", "message": "The 'prompt' field is required."},
    }


# ---- seeds and images --------------------------------------------------------------------------


def test_a_new_seed_is_never_the_one_to_avoid(monkeypatch):
    monkeypatch.setattr(operations.secrets, "randbits", lambda bits: 77)
    assert operations.new_seed(avoid=77) != 77 and operations.new_seed(avoid=5) == 77


@pytest.mark.parametrize(
    ("size", "aspect_ratio", "expected"),
    [((1024, 576), "1:1", (1024, 1024)), ((512, 512), "16:9", (512, 288)), ((512, 512), "1:1", (512, 512))],
)
def test_reframe_crops_to_the_aspect_ratio_at_the_same_long_side(size, aspect_ratio, expected):
    image = Image.new("RGB", size, (10, 20, 30))
    assert reframe(image, aspect_ratio).size == expected


def test_enrich_invents_fine_detail_deterministically():
    tile = paint_tiles("a sunset over the mountains and a lake", 256, 256, seed=3)[0]
    smooth = tile.resize((512, 512), Image.Resampling.LANCZOS)
    detailed = enrich(smooth)
    assert detailed.size == smooth.size and detailed.tobytes() == enrich(smooth).tobytes()
    assert fine_detail(detailed) > 1.5 * fine_detail(smooth)
