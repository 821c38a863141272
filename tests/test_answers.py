"""A job's answer made once for each state of its row (api/answers.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

import schemas
from api import answers
from models import Job


@pytest.fixture
def dumps(monkeypatch) -> list[str]:
    """The ids of the jobs dumped as job objects, in order."""
    seen: list[str] = []
    dump = schemas.dump_job

    def counting(job):
        seen.append(str(job.id))
        return dump(job)

    monkeypatch.setattr(schemas, "dump_job", counting)
    return seen


@pytest.fixture
def waiting(app) -> None:
    """Nothing runs: every job waits, unchanged."""
    app.extensions["apiframe.pool"].stop()


def test_an_unchanged_job_is_answered_with_the_same_text_made_once(database, app, waiting, api, dumps):
    job_id = api.submit("/v1/imagine", {"prompt": "a fox"})["id"]
    first = api.get(f"/v1/jobs/{job_id}")
    again = api.get(f"/v1/jobs/{job_id}")
    assert first.status_code == again.status_code == 200 and first.mimetype == "application/json"
    assert again.data == first.data and dumps.count(job_id) == 2  # the create's answer, then the first poll
    with app.app_context():
        fresh = schemas.dump_job(Job.get_by_id(job_id))
    assert again.get_json() == {"success": True, "job": fresh}


def test_a_changed_job_is_answered_anew(database, app, waiting, api):
    job_id = api.submit("/v1/imagine", {"prompt": "a fox"})["id"]
    api.get(f"/v1/jobs/{job_id}")
    with app.app_context():
        Job.update(progress=42).where(Job.id == job_id).execute()
    assert api.job(job_id)["progress"] == 42
    api.post(f"/v1/jobs/{job_id}/cancel")
    assert api.job(job_id)["status"] == "cancelled"


def test_each_way_of_asking_gets_its_own_answer(waiting, api, dumps):
    job_id = api.submit("/v1/imagine", {"prompt": "a fox"})["id"]
    for _ in range(2):
        assert api.get(f"/v1/jobs/{job_id}").get_json()["job"]["id"] == job_id
        assert api.get(f"/fetch/{job_id}").get_json()["data"]["id"] == job_id
        task = api.post("/fetch", json={"task_id": job_id}).get_json()
        assert task["task_id"] == job_id and "job" not in task
    assert dumps.count(job_id) == 3  # the create's, then the two wrappings (a task is no job object)


def test_another_accounts_job_is_still_404(waiting, client, api, make_account):
    job_id = api.submit("/v1/imagine", {"prompt": "a fox"})["id"]
    assert api.get(f"/v1/jobs/{job_id}").status_code == 200
    _, other = make_account()
    response = client.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": other})
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "NOT_FOUND"


def test_at_most_max_answers_are_kept(waiting, app, api, monkeypatch):
    monkeypatch.setattr(answers, "MAX_ANSWERS", 2)
    ids = [api.submit("/v1/imagine", {"prompt": "a fox"})["id"] for _ in range(3)]
    for job_id in ids:
        assert api.get(f"/v1/jobs/{job_id}").status_code == 200
    assert 1 <= len(app.extensions[answers.EXTENSION]) <= 2
