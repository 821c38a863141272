"""GET /v1/jobs/:id, GET /v1/jobs, POST /v1/jobs/:id/cancel and the /fetch aliases."""

from __future__ import annotations

import base64

import psycopg2
import pytest
from peewee import fn

import jobs
import schemas
from conftest import Api, image_bytes, wait_until
from models import Account, Job, QueueCount, db

UNKNOWN = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"


def test_get_job(api):
    job = api.imagine()
    body = api.get(f"/v1/jobs/{job['id']}").get_json()
    assert body["success"] is True and body["job"] == job


@pytest.mark.parametrize("path", ["/fetch/{id}", "/api/v1/fetch/{id}"])
def test_fetch_aliases_answer_under_data(api, path):
    job = api.imagine()
    body = api.get(path.format(id=job["id"])).get_json()
    assert body == {"success": True, "data": job}


def test_unknown_job_is_404(api):
    response = api.get(f"/v1/jobs/{UNKNOWN}")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "NOT_FOUND"
    assert api.get(f"/fetch/{UNKNOWN}").status_code == 404


@pytest.mark.parametrize("bad", ["not-a-uuid", "1234", "a1b2c3d4-e5f6-7890-abcd-ef123456789Z"])
def test_invalid_job_id_is_a_validation_error(api, bad):
    for response in (
        api.get(f"/v1/jobs/{bad}"),
        api.post(f"/v1/jobs/{bad}/cancel"),
        api.get(f"/fetch/{bad}"),
    ):
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert error["code"] == "VALIDATION_ERROR" and "'id'" in error["message"]


def test_another_accounts_job_is_invisible(client, api, make_account):
    job = api.imagine()
    _, other_key = make_account()
    other = Api(client, other_key)
    assert other.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert other.post(f"/v1/jobs/{job['id']}/cancel").status_code == 404
    assert other.get("/v1/jobs").get_json()["jobs"] == []
    assert other.post("/v1/upscale", json={"jobId": job["id"], "index": 1}).status_code == 404


def test_list_is_newest_first_with_limit_and_offset(api):
    ids = [api.submit("/v1/imagine", {"prompt": f"picture {n}"})["id"] for n in range(5)]
    body = api.get("/v1/jobs").get_json()
    assert body["success"] is True
    assert [job["id"] for job in body["jobs"]] == ids[::-1]
    page = api.get("/v1/jobs?limit=2&offset=1").get_json()
    assert [job["id"] for job in page["jobs"]] == ids[::-1][1:3]
    assert page["pagination"] == {"limit": 2, "offset": 1, "hasMore": True}
    assert api.get("/v1/jobs?limit=2&offset=4").get_json()["pagination"]["hasMore"] is False


def test_list_default_limit_is_20(api):
    for n in range(22):
        api.submit("/v1/imagine", {"prompt": f"p{n}"})
    assert len(api.get("/v1/jobs").get_json()["jobs"]) == 20
    assert len(api.get("/v1/jobs?limit=100").get_json()["jobs"]) == 22


def test_list_filters(api):
    done = api.imagine()
    api.submit("/v1/describe", {"imageUrl": "http://127.0.0.1:9/missing.png"})
    only_imagine = api.get("/v1/jobs?type=imagine").get_json()["jobs"]
    assert [job["id"] for job in only_imagine] == [done["id"]]
    assert all(
        job["status"] == "succeeded" for job in api.get("/v1/jobs?status=succeeded").get_json()["jobs"]
    )


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("offset=1.5", "offset"),
        ("status=done", "status"),
        ("type=video", "type"),
    ],
)
def test_list_rejects_bad_query(api, query, field):
    response = api.get(f"/v1/jobs?{query}")
    assert response.status_code == 400
    assert f"'{field}'" in response.get_json()["error"]["message"]


def test_cancel_a_terminal_job_is_400(api):
    job = api.imagine()
    response = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and "succeeded" in error["message"]
    assert api.job(job["id"])["status"] == "succeeded"


def test_cancel_unknown_job_is_404(api):
    assert api.post(f"/v1/jobs/{UNKNOWN}/cancel").status_code == 404


def test_cursor_pages_and_offset_pages_agree(api):
    ids = [api.submit("/v1/imagine", {"prompt": f"page {n}"})["id"] for n in range(7)][::-1]
    by_offset = [
        [job["id"] for job in api.get(f"/v1/jobs?limit=3&offset={offset}").get_json()["jobs"]]
        for offset in (0, 3, 6)
    ]
    by_cursor, cursor = [], ""
    while True:
        body = api.get(f"/v1/jobs?limit=3{cursor}").get_json()
        by_cursor.append([job["id"] for job in body["jobs"]])
        if body["nextCursor"] is None:
            assert body["pagination"]["hasMore"] is False
            break
        cursor = f"&cursor={body['nextCursor']}"
    assert by_cursor == by_offset == [ids[0:3], ids[3:6], ids[6:7]]


def _cursor(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def test_a_bad_cursor_is_a_clear_400(database, api):
    queries = ["cursor=nonsense", "cursor=MjAyNnxub3Q&offset=2"]
    # A time with a UTC offset is no cursor the service hands out (it writes UTC times without one), and
    # PostgreSQL refuses offsets past 15:59 or with fractions of a second (it answered 500).
    for offset in ("-23:59", "+16:00", "+15:59:59.999999", "+14:00", "Z"):
        queries.append(f"cursor={_cursor(f'2026-12-02T16:09:37{offset}|{UNKNOWN}')}")
    for query in queries:
        response = api.get(f"/v1/jobs?{query}")
        assert response.status_code == 400 and "'cursor'" in response.get_json()["error"]["message"], query
    assert api.get(f"/v1/jobs?cursor={_cursor(f'2026-12-02T16:09:37.250000|{UNKNOWN}')}").status_code == 200


def _kept_and_counted() -> tuple[int, int]:
    """The database's kept count of waiting jobs, and the waiting jobs counted one by one."""
    kept = QueueCount.select(fn.SUM(QueueCount.waiting)).scalar()
    return kept, Job.select().where(Job.status.in_(jobs.WAITING)).count()


def test_the_database_keeps_the_count_of_waiting_jobs(database, app, client, api, make_account):
    # Kept by triggers on every change to a job, made by the service or by hand.
    app.extensions["apiframe.pool"].stop()  # nothing runs: every job waits
    other_account, other_key = make_account()
    other = Api(client, other_key)
    body = {"prompt": "a red fox in a snowy forest"}
    mine = [api.submit("/v1/imagine", body)["id"] for _ in range(3)]
    theirs = [other.submit("/v1/imagine", body)["id"] for _ in range(2)]
    assert [other.job(job_id)["queuePosition"] for job_id in theirs] == [4, 5]
    assert api.post(f"/v1/jobs/{mine[0]}/cancel").status_code == 200
    with app.app_context(), db.connection_context():
        assert _kept_and_counted() == (4, 4)
        Job.update(status=jobs.PROCESSING).where(Job.id == mine[1]).execute()  # by hand
        assert _kept_and_counted() == (3, 3)
        Job.update(status=jobs.QUEUED).where(Job.id == mine[1]).execute()  # and back
        Job.update(progress=5).where(Job.id == mine[2]).execute()  # not its status
        assert _kept_and_counted() == (4, 4)
        Account.delete().where(Account.id == other_account.id).execute()  # its jobs go with it
        assert _kept_and_counted() == (2, 2)
    assert api.submit("/v1/imagine", body)["queuePosition"] == 3


def test_queue_counts_of_server_processes_that_have_gone_are_folded(on_postgres, app, client, make_account):
    app.extensions["apiframe.pool"].stop()  # nothing runs: every job waits
    api = Api(client, make_account()[1])
    ids = [api.submit("/v1/imagine", {"prompt": "a fox"})["id"] for _ in range(3)]
    other = psycopg2.connect(on_postgres)  # another server process (backend) cancels one by hand
    with other, other.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (gone,) = cursor.fetchone()
        cursor.execute("UPDATE job SET status = 'cancelled' WHERE id = %s", (ids[0],))
    other.close()

    def owners() -> set[int]:
        return {count.owner for count in QueueCount.select()}

    def folded() -> bool:
        jobs.fold_queue_counts()
        return gone not in owners()

    with app.app_context(), db.connection_context():
        assert gone in owners()
        wait_until(folded, what="the gone backend's count to be folded")  # once PostgreSQL has seen it go
        assert _kept_and_counted() == (2, 2) and 0 in owners()
    assert api.submit("/v1/imagine", {"prompt": "a fox"})["queuePosition"] == 3
    with app.app_context(), db.connection_context():
        db.execute_sql("TRUNCATE job CASCADE")  # by hand: no row triggers, so a trigger of its own
        assert _kept_and_counted() == (0, 0)


def test_waiting_jobs_show_their_place_in_the_queue(database, app, client, api, make_account):
    # Read with the job (find) and returned by its INSERT (submit), in SQL of each database's own.
    app.extensions["apiframe.pool"].stop()  # nothing runs: every job waits
    other = Api(client, make_account()[1])
    body = {"prompt": "a red fox in a snowy forest"}
    created = [caller.submit("/v1/imagine", body) for caller in (api, other, api)]
    assert [job["queuePosition"] for job in created] == [1, 2, 3]  # one queue for every account, oldest first
    first, second, third = (job["id"] for job in created)
    assert [api.job(job_id)["queuePosition"] for job_id in (first, third)] == [1, 3]
    assert other.get(f"/fetch/{second}").get_json()["data"]["queuePosition"] == 2
    assert api.post(f"/v1/jobs/{first}/cancel").get_json()["job"]["queuePosition"] is None
    listed = {job["id"]: job["queuePosition"] for job in api.get("/v1/jobs").get_json()["jobs"]}
    assert listed == {first: None, third: 2}


def test_a_job_object_is_what_marshmallow_makes_of_the_job_schema(app, api, files):
    # schemas.ModelDump reads each field of a job with getattr; marshmallow's dump, through its accessor.
    grid = api.imagine()  # succeeded: its grid, tiles and seed
    upscale = api.wait(api.submit("/v1/upscale", {"jobId": grid["id"], "index": 2})["id"])  # a parent
    described = api.wait(api.submit("/v1/describe", {"imageUrl": files.add("/a.png", image_bytes())})["id"])
    failed = api.wait(api.submit("/v1/describe", {"imageUrl": files.url("/missing.png")})["id"])
    assert failed["status"] == "failed" and described["descriptions"]
    ids = [job["id"] for job in (grid, upscale, described, failed)]
    app.extensions["apiframe.pool"].stop()
    ids.append(api.submit("/v1/imagine", {"prompt": "waits", "webhookUrl": "https://example.com/h"})["id"])
    marshmallow = schemas.JobSchema()
    with app.test_request_context(), db.connection_context():
        made = [Job.get_by_id(job_id) for job_id in ids]
        assert [schemas.dump_job(job) for job in made] == [marshmallow.dump(job) for job in made]
        assert schemas.dump_jobs(made) == marshmallow.dump(made, many=True)
        assert schemas.dump_job(made[-1])["queuePosition"] == 1
