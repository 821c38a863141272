"""Image retention: the images of jobs that ended long ago are deleted, by the job pool or by hand."""

from __future__ import annotations

import datetime
import io
import uuid
from pathlib import Path

import pytest

import retention
from conftest import image_bytes
from models import Job, db, utcnow

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
    assert _deleted_at(app, job["id"]) is not None and not (_images(app) / job["id"]).exists()


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
    assert runner.invoke(args=["storage", "prune", "--days", "0"]).exit_code == 1

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


def test_the_setting_must_not_be_negative(settings, monkeypatch):
    import config

    monkeypatch.setenv("APIFRAME_IMAGE_RETENTION_DAYS", "-1")
    with pytest.raises(ValueError, match="APIFRAME_IMAGE_RETENTION_DAYS must not be negative"):
        config.load(settings)
    monkeypatch.setenv("APIFRAME_IMAGE_RETENTION_DAYS", "7")
    assert config.load(settings)["IMAGE_RETENTION_DAYS"] == 7


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
