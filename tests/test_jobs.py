"""GET /v1/jobs/:id, GET /v1/jobs, POST /v1/jobs/:id/cancel and the /fetch aliases."""

from __future__ import annotations

import pytest

from conftest import Api

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


def test_a_bad_cursor_is_a_clear_400(api):
    for query, named in (("cursor=nonsense", "'cursor'"), ("cursor=MjAyNnxub3Q&offset=2", "'cursor'")):
        response = api.get(f"/v1/jobs?{query}")
        assert response.status_code == 400 and named in response.get_json()["error"]["message"], query


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
