"""Image retention: old jobs' images are deleted, their URLs answer 410, and nothing is made from them."""

from __future__ import annotations

import datetime
import io
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

import credits
import retention
from conftest import Api, image_bytes
from models import Job, db, utcnow
from original import Original
from test_console import PASSWORD, Console, text

SMALL = {"quality": 0.25, "aspectRatio": "1:1"}  # 512 px tiles keep the image work quick
DAYS = 30


@pytest.fixture
def keeping(settings) -> None:
    """Ask for this before ``app``: the server keeps images DAYS days."""
    settings["IMAGE_RETENTION_DAYS"] = DAYS


def _images(app) -> Path:
    return Path(app.config["DATA_DIR"]) / "images"


def _age(app, job_id: str, days: float) -> None:
    """Make a job look as if it ended ``days`` ago."""
    with app.app_context(), db.connection_context():
        ended = utcnow() - datetime.timedelta(days=days)
        Job.update(completed_at=ended).where(Job.id == uuid.UUID(job_id)).execute()


def _prune(app, **options) -> retention.Pruned:
    with app.app_context(), db.connection_context():
        return retention.prune(datetime.timedelta(days=DAYS), **options)


def _deleted_at(app, job_id: str) -> datetime.datetime | None:
    with app.app_context(), db.connection_context():
        return Job.get_by_id(uuid.UUID(job_id)).images_deleted_at


def _answer(job: dict) -> dict:
    """A job's answer but when it ended (which the tests move back)."""
    return {name: value for name, value in job.items() if name != "completedAt"}


def _expired(response, job_id: str) -> None:
    body = response.get_json()
    assert response.status_code == 410, body
    assert body["error"]["code"] == "IMAGE_EXPIRED"
    assert f"The images of job {job_id} were deleted" in body["error"]["message"]
    assert f"keeps images {DAYS} days" in body["error"]["message"]


@pytest.fixture
def pruned(keeping, app, api) -> dict:
    """A 1:1 grid job (its previews made) whose images the retention deleted."""
    job = api.imagine(**SMALL)
    assert api.get(f"/images/{job['id']}/thumbs/1.png").status_code == 200
    _age(app, job["id"], DAYS + 1)
    assert _prune(app).deleted == 1
    return job


def test_prune_deletes_only_the_old_jobs_files_and_marks_them_once(database, app, api):
    old, recent = api.imagine(**SMALL), api.imagine(**SMALL)
    assert api.get(f"/images/{old['id']}/thumbs/2.png").status_code == 200  # a preview, kept beside them
    _age(app, old["id"], DAYS + 1)
    _age(app, recent["id"], DAYS - 1)
    assert sorted(path.name for path in (_images(app) / old["id"]).rglob("*")) == [
        "1.png",
        "2.png",
        "2.webp",
        "3.png",
        "4.png",
        "grid.png",
        "thumbs",
    ]

    assert _prune(app, dry_run=True) == retention.Pruned(found=1, deleted=0)
    assert (_images(app) / old["id"] / "grid.png").is_file() and _deleted_at(app, old["id"]) is None

    assert _prune(app) == retention.Pruned(found=1, deleted=1)
    assert not (_images(app) / old["id"]).exists()
    assert len(list((_images(app) / recent["id"]).glob("*.png"))) == 5
    assert _deleted_at(app, old["id"]) is not None and _deleted_at(app, recent["id"]) is None

    assert _prune(app) == retention.Pruned(found=0, deleted=0)  # done once, and only once
    assert _answer(api.job(old["id"])) == _answer(old)  # the job's answer is as it was


def test_prune_works_in_batches_up_to_its_limit(app, api, monkeypatch):
    made = [api.imagine(**SMALL) for _ in range(3)]
    for job in made:
        _age(app, job["id"], DAYS + 1)
    monkeypatch.setattr(retention, "BATCH", 2)
    assert _prune(app, limit=1) == retention.Pruned(found=1, deleted=1)
    assert _prune(app) == retention.Pruned(found=2, deleted=2)
    assert not any((_images(app) / job["id"]).exists() for job in made)


def test_the_scan_reads_the_index_of_jobs_whose_images_are_kept(database, app):
    with app.app_context(), db.connection_context():
        query = retention._due(utcnow())
        sql, params = query.sql()
        if database == "sqlite":
            plan = db.execute_sql(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        else:  # an empty table is read whole; what matters is that the index can answer the scan
            db.execute_sql("SET enable_seqscan = off")
            plan = db.execute_sql(f"EXPLAIN {sql}", params).fetchall()
    assert "job_completed_at_images_kept" in " ".join(str(line) for line in plan)


def test_an_upload_kept_for_an_openai_job_goes_with_it(app, api):
    upload = (io.BytesIO(image_bytes((256, 256))), "in.png", "image/png")
    response = api.client.post(
        "/v1/images/variations",
        data={"n": "1", "size": "256x256", "image": upload},
        headers={"Authorization": f"Bearer {api.key}"},
    )
    assert response.status_code == 200, response.get_json()
    with app.app_context(), db.connection_context():
        job = Job.select().where(Job.type == "variation").get()
    upload = job.params["upload"].partition("/")[0]
    assert (_images(app) / upload).is_dir()
    _age(app, str(job.id), DAYS + 1)
    assert _prune(app).deleted == 1
    assert not (_images(app) / upload).exists() and not (_images(app) / str(job.id)).exists()


def test_image_and_preview_urls_of_a_pruned_job_answer_410(keeping, api, pruned):
    job = api.job(pruned["id"])
    assert _answer(job) == _answer(pruned)  # URLs and all
    for url in (job["imageUrl"], *job["imageUrls"]):
        _expired(api.get(url.removeprefix("http://images.test")), pruned["id"])
    _expired(api.get(f"/images/{pruned['id']}/thumbs/1.png"), pruned["id"])
    _expired(api.get(f"/images/{pruned['id']}/thumbs/3.png"), pruned["id"])
    assert api.get(f"/images/{uuid.uuid4()}/grid.png").status_code == 404  # never there: still 404


def test_nothing_is_made_from_a_pruned_job_and_nothing_is_paid(keeping, app, api, pruned):
    with app.app_context(), db.connection_context():
        account_id = Job.get_by_id(uuid.UUID(pruned["id"])).account_id
        before = credits.balance(account_id)
    for path, body in (
        ("/v1/upscale", {"jobId": pruned["id"], "index": 1}),
        ("/v1/variation", {"jobId": pruned["id"], "index": 2}),
        ("/v1/upscale-highres", {"jobId": pruned["id"], "index": 1, "type": "2x"}),
    ):
        _expired(api.post(path, json=body), pruned["id"])
    original = Original(api.client, api.key)
    for path, body in (
        ("/upscale-1x", {"parent_task_id": pruned["id"], "index": "1"}),
        ("/variations", {"parent_task_id": pruned["id"], "index": "1"}),
    ):
        response = original.post(path, body)
        assert response.status_code == 410 and response.get_json()["code"] == "IMAGE_EXPIRED", path
    own_url = f"http://images.test/images/{pruned['id']}/1.png"
    _expired(api.post("/v1/describe", json={"imageUrl": own_url}), pruned["id"])
    _expired(api.post("/v1/blend", json={"imageUrls": [own_url, own_url]}), pruned["id"])
    with app.app_context(), db.connection_context():
        assert credits.balance(account_id) == before
        assert Job.select().count() == 1
    reroll = api.submit("/v1/reroll", {"jobId": pruned["id"]})  # needs only the prompt and settings
    assert api.wait(reroll["id"])["status"] == "succeeded"


def test_a_pruned_upscale_cannot_be_panned_zoomed_or_repainted(keeping, app, api):
    grid = api.imagine(**SMALL)
    upscaled = api.wait(api.submit("/v1/upscale", {"jobId": grid["id"], "index": 1})["id"])
    _age(app, grid["id"], DAYS + 1)
    _age(app, upscaled["id"], DAYS + 1)
    assert _prune(app).deleted == 2
    for path, body in (
        ("/v1/pan", {"jobId": upscaled["id"], "direction": "left"}),
        ("/v1/zoom", {"jobId": upscaled["id"], "zoomRatio": 1.5}),
        ("/v1/upscale-highres", {"jobId": upscaled["id"], "type": "2x"}),
    ):
        _expired(api.post(path, json=body), upscaled["id"])
    subtle = Original(api.client, api.key).post(
        "/variations", {"parent_task_id": upscaled["id"], "index": "subtle"}
    )
    assert subtle.status_code == 410 and subtle.get_json()["code"] == "IMAGE_EXPIRED"


def test_the_console_says_the_images_were_deleted_and_offers_no_buttons(keeping, app, client, make_account):
    console = Console(client)
    _, key = make_account("scale", email="keeper@example.com", password=PASSWORD)
    assert console.login("keeper@example.com").status_code == 302
    api = Api(client, key)
    job = api.imagine(**SMALL)
    page = text(console.get(f"/console/jobs/{job['id']}"))
    assert 'value="U1"' in page and f"/images/{job['id']}/grid.png" in page
    _age(app, job["id"], DAYS + 1)
    _prune(app)

    page = text(console.get(f"/console/jobs/{job['id']}"))
    assert f"Images deleted after {DAYS} days, as this server keeps them." in page
    assert f"/images/{job['id']}/" not in page and 'value="U1"' not in page
    gallery = text(console.get("/console/jobs"))
    assert "Images deleted" in gallery and f"/images/{job['id']}/" not in gallery
    response = console.post(
        f"/console/jobs/{job['id']}/pick", {"action": "U1"}, page=f"/console/jobs/{job['id']}"
    )
    assert response.status_code == 302
    assert "were deleted" in text(console.get(response.headers["Location"]))


@pytest.mark.parametrize("marked", [True, False])
def test_a_preview_made_while_its_job_is_pruned_is_not_kept(keeping, app, api, monkeypatch, marked):
    """A preview made from an image read just before the prune deleted it, and stored after: it goes, whether
    the prune had marked the job by then (serve_thumbnail finds it so) or not (the prune deletes again)."""
    job = api.imagine(**SMALL)
    _age(app, job["id"], DAYS + 1)
    make, delete = retention.storage.make_thumbnail, retention.storage.delete_images
    if marked:  # the whole prune runs while the preview is made
        monkeypatch.setattr(retention.storage, "make_thumbnail", lambda data: (_prune(app), make(data))[1])
        _expired(api.get(f"/images/{job['id']}/thumbs/1.png"), job["id"])
    else:  # the preview is stored between the prune's delete and its mark

        def deleting(job_id):
            store = retention.storage.current()
            image = store.read(f"{job_id}/1.png")  # as serve_thumbnail reads it, just before the delete
            delete(job_id)
            store.put(f"{job_id}/thumbs/1.webp", make(image))
            monkeypatch.setattr(retention.storage, "delete_images", delete)

        monkeypatch.setattr(retention.storage, "delete_images", deleting)
        _prune(app)
    assert not (_images(app) / job["id"]).exists()  # unfixed: thumbs/1.webp, served with 200 for good
    _expired(api.get(f"/images/{job['id']}/thumbs/1.png"), job["id"])


def test_the_job_pool_prunes_in_its_upkeep_with_the_setting(keeping, app, api):
    job = api.imagine(**SMALL)
    _age(app, job["id"], DAYS + 1)
    pool = app.extensions["apiframe.pool"]
    with app.app_context(), db.connection_context():
        pool._maintain()  # it pruned as it started, and prunes again an hour later
    assert _deleted_at(app, job["id"]) is None
    pool.retention.next_run -= retention.INTERVAL
    with app.app_context(), db.connection_context():
        pool._maintain()
    pool.retention._thread.join(10)  # a prune runs on a thread of its own
    assert _deleted_at(app, job["id"]) is not None and not (_images(app) / job["id"]).exists()


def test_a_slow_storage_never_holds_the_job_pools_dispatcher(keeping, app, api, monkeypatch):
    """The dispatcher renews running jobs' leases: a prune waiting on S3 (seconds a call, or a hang up to its
    timeouts) must not hold it, or those jobs would be claimed again elsewhere."""
    job = api.imagine(**SMALL)
    _age(app, job["id"], DAYS + 1)
    release = threading.Event()
    delete = retention.storage.delete_images
    slow = lambda job_id: release.wait(10) and delete(job_id)  # noqa: E731
    monkeypatch.setattr(retention.storage, "delete_images", slow)
    pool = app.extensions["apiframe.pool"]
    pool.retention.next_run -= retention.INTERVAL
    started = time.monotonic()
    with app.app_context(), db.connection_context():
        pool._maintain()
    assert time.monotonic() - started < 5  # unfixed: the whole prune's 10 s, in the dispatcher's thread
    release.set()
    pool.retention._thread.join(10)
    assert _deleted_at(app, job["id"]) is not None


def test_a_job_whose_files_could_not_be_deleted_keeps_its_images(keeping, app, api, monkeypatch):
    """A read-only disk (or a folder another user owns): the job is not marked; a later prune tries again."""
    job = api.imagine(**SMALL)
    _age(app, job["id"], DAYS + 1)
    unlink = os.unlink

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "unlink", refused)
    with pytest.raises(retention.storage.StorageUnavailable):
        _prune(app)
    assert _deleted_at(app, job["id"]) is None  # unfixed: marked, its images still served with 200
    monkeypatch.setattr(os, "unlink", unlink)
    assert _prune(app) == retention.Pruned(found=1, deleted=1)


def test_without_the_setting_the_upkeep_keeps_every_image(app, api):
    job = api.imagine(**SMALL)
    _age(app, job["id"], 10_000)
    with app.app_context(), db.connection_context():
        app.extensions["apiframe.pool"]._maintain()
    assert _deleted_at(app, job["id"]) is None and (_images(app) / job["id"] / "grid.png").is_file()


def test_the_prune_command(app, api, runner):
    job = api.imagine(**SMALL)
    _age(app, job["id"], 8)
    refused = runner.invoke(args=["storage", "prune"])
    assert refused.exit_code == 1 and "images are kept forever here" in refused.output
    never = runner.invoke(args=["storage", "prune", "--days", "0"])
    assert never.exit_code == 2 and "0 is not in the range 1<=x<=36500" in never.output  # as its help says

    counted = runner.invoke(args=["storage", "prune", "--days", "7", "--dry-run"])
    assert counted.exit_code == 0, counted.output
    assert "1 jobs that ended more than 7 days ago have their images; nothing was deleted" in counted.output
    assert (_images(app) / job["id"]).is_dir()

    done = runner.invoke(args=["storage", "prune", "--days", "7"])
    assert done.exit_code == 0 and "deleted the images of 1 jobs" in done.output
    assert not (_images(app) / job["id"]).exists() and _deleted_at(app, job["id"]) is not None


def test_the_prune_command_takes_its_days_from_the_setting(keeping, app, api, runner):
    job = api.imagine(**SMALL)
    _age(app, job["id"], DAYS + 1)
    done = runner.invoke(args=["storage", "prune"])
    assert (
        done.exit_code == 0
        and f"deleted the images of 1 jobs that ended more than {DAYS} days" in done.output
    )


@pytest.mark.parametrize("days", ["-1", "1000000"])  # a million days: past what a date can go back
def test_the_setting_is_refused_out_of_its_range(settings, monkeypatch, days):
    import config

    monkeypatch.setenv("APIFRAME_IMAGE_RETENTION_DAYS", days)
    with pytest.raises(ValueError, match="APIFRAME_IMAGE_RETENTION_DAYS must be from 0 to 36500"):
        config.load(settings)
    monkeypatch.setenv("APIFRAME_IMAGE_RETENTION_DAYS", "7")
    assert config.load(settings)["IMAGE_RETENTION_DAYS"] == 7


def test_the_prune_command_refuses_days_past_its_range(app, runner):
    done = runner.invoke(args=["storage", "prune", "--days", "740000"])
    assert done.exit_code == 2 and "740000 is not in the range 1<=x<=36500" in done.output


@pytest.fixture
def in_bucket(settings, bucket):
    """Ask for this before ``app``: images are kept in a bucket on the loopback S3 endpoint."""
    settings.update(STORAGE_URL=bucket.storage_url, S3_ENDPOINT_URL=bucket.endpoint)
    return bucket


def test_prune_empties_a_jobs_folder_in_a_bucket(in_bucket, keeping, app, api):
    old, recent = api.imagine(**SMALL), api.imagine(**SMALL)
    assert api.get(f"/images/{old['id']}/thumbs/1.png").status_code == 200
    assert f"images/{old['id']}/thumbs/1.webp" in in_bucket.keys()
    _age(app, old["id"], DAYS + 1)
    assert _prune(app) == retention.Pruned(found=1, deleted=1)
    assert [key for key in in_bucket.keys() if old["id"] in key] == []
    assert len([key for key in in_bucket.keys() if recent["id"] in key]) == 5
    _expired(api.get(f"/images/{old['id']}/grid.png"), old["id"])
    _expired(api.get(f"/images/{old['id']}/thumbs/1.png"), old["id"])


def test_objects_the_bucket_would_not_delete_keep_their_job_unmarked(
    in_bucket, keeping, app, api, monkeypatch
):
    """DeleteObjects answers 200 with the keys it could not delete (AccessDenied): the job is not marked."""
    job = api.imagine(**SMALL)
    _age(app, job["id"], DAYS + 1)
    with app.app_context():
        client = retention.storage.current().client
    delete = client.delete_objects

    def refusing(**kwargs):
        keys = kwargs["Delete"]["Objects"]
        return {"Errors": [{"Key": key["Key"], "Code": "AccessDenied"} for key in keys]}

    monkeypatch.setattr(client, "delete_objects", refusing)
    with pytest.raises(retention.storage.StorageUnavailable):
        _prune(app)
    assert _deleted_at(app, job["id"]) is None
    monkeypatch.setattr(client, "delete_objects", delete)
    assert _prune(app) == retention.Pruned(found=1, deleted=1)


def test_a_job_reading_a_pruned_image_by_its_url_fails_saying_why(keeping, app, pruned):
    from inputs import InputError, fetch_image

    class Running:
        def check(self) -> None:
            pass

        def remaining(self) -> float:
            return 10.0

    url = f"http://images.test/images/{pruned['id']}/2.png"
    with app.test_request_context(), db.connection_context(), pytest.raises(InputError) as refused:
        fetch_image(url, "imageUrl", Running())
    assert f"Could not use imageUrl {url}: The images of job {pruned['id']} were deleted" in str(
        refused.value
    )
    assert f"keeps images {DAYS} days" in str(refused.value)
