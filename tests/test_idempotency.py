"""Idempotency-Key on create routes: a retry replays the first answer, never a second job or debit."""

from __future__ import annotations

import datetime
import io
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import peewee
import psycopg2
import pytest
import requests
from PIL import Image

import credits
import idempotency
import jobs
import ratelimit
import storage
from conftest import Api, wait_until
from models import Account, IdempotencyKey, Job, LedgerEntry
from servers import Server, cli, environment, free_port


def _debits(app, account_id: int) -> int:
    with app.app_context():
        return (
            LedgerEntry.select()
            .where((LedgerEntry.account == account_id) & (LedgerEntry.reason == "debit"))
            .count()
        )


def _jobs(app, account_id: int) -> int:
    with app.app_context():
        return Job.select().where(Job.account == account_id).count()


def _balance(app, account_id: int) -> int:
    with app.app_context():
        return credits.balance(account_id)


def _answers_not_kept_once(monkeypatch) -> None:
    """Storing the next answer under a key fails, as when the database connection drops."""
    update, failed = IdempotencyKey.update, []

    def update_or_fail(*args, **kwargs):
        if "status_code" in kwargs and not failed:
            failed.append(True)
            raise peewee.OperationalError("server closed the connection unexpectedly")
        return update(*args, **kwargs)

    monkeypatch.setattr(IdempotencyKey, "update", update_or_fail)


POPPIES = {"prompt": "a field of poppies", "n": 6, "size": "512x512"}  # six images: two jobs


def _openai_try_unkept(app, api, monkeypatch, key: str):
    """An OpenAI create of two jobs under Idempotency-Key ``key`` whose answer is not kept; the client and
    headers to try again with, and the answer."""
    headers = {"Authorization": f"Bearer {api.key}", "Idempotency-Key": key}
    client = app.test_client()
    _answers_not_kept_once(monkeypatch)
    return client, headers, client.post("/v1/images/generations", json=POPPIES, headers=headers)


def _outlive_in_flight_limit(app, key: str) -> None:
    """Make the key's first request look like one whose server died unanswered long enough ago."""
    with app.app_context():
        stale = idempotency.utcnow() - idempotency.in_flight_limit() - datetime.timedelta(seconds=1)
        assert IdempotencyKey.update(created_at=stale).where(IdempotencyKey.key == key).execute() == 1


@pytest.fixture
def acct(app, make_account):
    account, key = make_account("scale")
    return account, Api(app.test_client(), key)


def test_a_retry_replays_the_first_answer_with_no_second_job_or_debit(app, acct):
    account, api = acct
    headers = {"Idempotency-Key": "order-1"}
    first = api.post("/v1/imagine", json={"prompt": "a lighthouse"}, headers=headers)
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    again = api.post("/v1/imagine", json={"prompt": "a lighthouse"}, headers=headers)
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()
    assert _jobs(app, account.id) == 1 and _debits(app, account.id) == 1
    with app.app_context():
        assert credits.balance(account.id) == 5000 - 16 == credits.ledger_total(account.id)


def test_same_key_with_a_different_body_or_endpoint_is_422(app, acct):
    _, api = acct
    headers = {"Idempotency-Key": "k-2"}
    assert api.post("/v1/imagine", json={"prompt": "one"}, headers=headers).status_code == 202
    other = api.post("/v1/imagine", json={"prompt": "two"}, headers=headers)
    assert other.status_code == 422
    assert other.get_json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert "Idempotency-Key" in other.get_json()["error"]["message"]
    elsewhere = api.post("/v1/describe", json={"imageUrl": "http://127.0.0.1:9/x.png"}, headers=headers)
    assert elsewhere.status_code == 422


def test_the_same_json_with_other_spacing_and_order_is_the_same_request(app, acct):
    account, api = acct
    headers = {"Idempotency-Key": '"quoted-key"', "Content-Type": "application/json"}
    one = api.client.post(
        "/v1/imagine", data='{"prompt":"x","chaos":5}', headers={**headers, "X-API-Key": api.key}
    )
    two = api.client.post(
        "/v1/imagine", data='{ "chaos": 5, "prompt": "x" }', headers={**headers, "X-API-Key": api.key}
    )
    assert (one.status_code, two.status_code) == (202, 202)
    assert two.headers["Idempotent-Replayed"] == "true"
    assert _jobs(app, account.id) == 1


def test_keys_are_scoped_to_the_account(app, make_account):
    _, key_a = make_account("scale")
    _, key_b = make_account("scale")
    a, b = Api(app.test_client(), key_a), Api(app.test_client(), key_b)
    headers = {"Idempotency-Key": "shared"}
    job_a = a.post("/v1/imagine", json={"prompt": "p"}, headers=headers).get_json()["job"]["id"]
    answer_b = b.post("/v1/imagine", json={"prompt": "p"}, headers=headers)
    assert answer_b.status_code == 202 and "Idempotent-Replayed" not in answer_b.headers
    assert answer_b.get_json()["job"]["id"] != job_a


def test_an_error_is_not_kept_so_the_key_can_be_used_again(app, acct):
    account, api = acct
    headers = {"Idempotency-Key": "after-fix"}
    bad = api.post("/v1/imagine", json={"prompt": ""}, headers=headers)
    assert bad.status_code == 400
    assert api.post("/v1/imagine", json={"prompt": "fixed"}, headers=headers).status_code == 202
    with app.app_context():
        credits.grant(account.id, -credits.balance(account.id))
    broke = api.post("/v1/imagine", json={"prompt": "poor"}, headers={"Idempotency-Key": "poor"})
    assert broke.status_code == 402
    with app.app_context():
        credits.grant(account.id, 100)
    assert (
        api.post("/v1/imagine", json={"prompt": "poor"}, headers={"Idempotency-Key": "poor"}).status_code
        == 202
    )


def test_a_key_while_the_first_request_is_in_flight_is_409(app, acct):
    account, api = acct
    with app.app_context():
        IdempotencyKey.create(
            account=account.id, key="busy", fingerprint="x", created_at=idempotency.utcnow()
        )
    answer = api.post("/v1/imagine", json={"prompt": "p"}, headers={"Idempotency-Key": "busy"})
    # a different fingerprint is 422; the same one (computed the same way) in flight is 409
    assert answer.status_code == 422
    with app.test_request_context("/v1/imagine", method="POST", json={"prompt": "p"}):
        digest = idempotency.fingerprint()
    with app.app_context():
        IdempotencyKey.update(fingerprint=digest).where(IdempotencyKey.key == "busy").execute()
    answer = api.post("/v1/imagine", json={"prompt": "p"}, headers={"Idempotency-Key": "busy"})
    assert answer.status_code == 409
    assert answer.get_json()["error"]["code"] == "IDEMPOTENCY_KEY_IN_USE"
    assert answer.headers["Retry-After"] == "5"  # its answer may come any moment
    message = answer.get_json()["error"]["message"]
    assert "takes the key over in 420 seconds" in message or "over in 419 seconds" in message  # at most
    # still in flight past the margin alone: an OpenAI-family request may wait SYNC_WAIT for its images
    with app.app_context():
        waiting = idempotency.utcnow() - idempotency.IN_FLIGHT_MARGIN - datetime.timedelta(seconds=1)
        IdempotencyKey.update(created_at=waiting).where(IdempotencyKey.key == "busy").execute()
    answer = api.post("/v1/imagine", json={"prompt": "p"}, headers={"Idempotency-Key": "busy"})
    assert answer.status_code == 409
    # never asked to wait past the takeover
    with app.app_context():
        limit = datetime.timedelta(seconds=app.config["SYNC_WAIT"]) + idempotency.IN_FLIGHT_MARGIN
        nearly = idempotency.utcnow() - limit + datetime.timedelta(seconds=2)
        IdempotencyKey.update(created_at=nearly).where(IdempotencyKey.key == "busy").execute()
    answer = api.post("/v1/imagine", json={"prompt": "p"}, headers={"Idempotency-Key": "busy"})
    assert answer.status_code == 409 and answer.headers["Retry-After"] in ("1", "2")
    # a first request that died with its process is taken over after SYNC_WAIT and the margin
    with app.app_context():
        limit = datetime.timedelta(seconds=app.config["SYNC_WAIT"]) + idempotency.IN_FLIGHT_MARGIN
        stale = idempotency.utcnow() - limit - datetime.timedelta(seconds=1)
        IdempotencyKey.update(created_at=stale).where(IdempotencyKey.key == "busy").execute()
    assert (
        api.post("/v1/imagine", json={"prompt": "p"}, headers={"Idempotency-Key": "busy"}).status_code == 202
    )


def test_an_answer_not_kept_still_answers_and_a_retry_after_takeover_gets_the_same_job(
    database, app, acct, monkeypatch
):
    account, api = acct
    headers = {"Idempotency-Key": "unkept"}
    _answers_not_kept_once(monkeypatch)
    first = api.post("/v1/imagine", json={"prompt": "a lighthouse"}, headers=headers)
    assert first.status_code == 202  # its job was made and paid for: never a 500
    job_id = first.get_json()["job"]["id"]
    assert api.post("/v1/imagine", json={"prompt": "a lighthouse"}, headers=headers).status_code == 409
    _outlive_in_flight_limit(app, "unkept")
    again = api.post("/v1/imagine", json={"prompt": "a lighthouse"}, headers=headers)
    assert again.status_code == 202 and again.get_json()["job"]["id"] == job_id
    assert _jobs(app, account.id) == 1 and _debits(app, account.id) == 1
    assert _balance(app, account.id) == 5000 - 16
    replay = api.post("/v1/imagine", json={"prompt": "a lighthouse"}, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.get_json()["job"]["id"] == job_id


def test_an_openai_retry_after_takeover_waits_for_the_same_jobs(database, app, acct, monkeypatch):
    account, api = acct
    client, headers, first = _openai_try_unkept(app, api, monkeypatch, "unkept-openai")
    assert first.status_code == 200 and len(first.get_json()["data"]) == 6
    _outlive_in_flight_limit(app, "unkept-openai")
    again = client.post("/v1/images/generations", json=POPPIES, headers=headers)
    assert again.status_code == 200
    assert again.get_json()["data"] == first.get_json()["data"]  # the same jobs' images
    assert _jobs(app, account.id) == 2 and _debits(app, account.id) == 2
    assert _balance(app, account.id) == 5000 - 32


def test_an_openai_retry_whose_other_job_is_refused_refunds_the_job_it_got_back(
    database, app, acct, monkeypatch
):
    account, api = acct
    client, headers, first = _openai_try_unkept(app, api, monkeypatch, "half-made")
    assert first.status_code == 200
    with app.app_context():  # as if the first request died after its first job; and the credits ran out
        (made,) = [row.jobs for row in IdempotencyKey.select().where(IdempotencyKey.key == "half-made")]
        IdempotencyKey.update(jobs=made[:1]).where(IdempotencyKey.key == "half-made").execute()
        Account.update(balance=0).where(Account.id == account.id).execute()
    _outlive_in_flight_limit(app, "half-made")
    again = client.post("/v1/images/generations", json=POPPIES, headers=headers)
    assert again.status_code == 429 and again.get_json()["error"]["code"] == "insufficient_quota"
    assert _balance(app, account.id) == 16  # no images, so the succeeded job it got back is refunded


def test_a_retry_after_takeover_never_refunds_a_job_twice(database, app, acct, monkeypatch):
    account, api = acct
    client, headers, first = _openai_try_unkept(app, api, monkeypatch, "refunded")
    assert first.status_code == 200
    with app.app_context():  # as if its second job had failed, and it died having refunded the first
        (made,) = [row.jobs for row in IdempotencyKey.select().where(IdempotencyKey.key == "refunded")]
        first, second = Job.get_by_id(made[0]), Job.get_by_id(made[1])
        Job.update(status=jobs.FAILED).where(Job.id == second.id).execute()
        credits.refund(second, "imagine job failed")
        credits.refund(first, "imagine job refunded: another job of its request failed")
    _outlive_in_flight_limit(app, "refunded")
    again = client.post("/v1/images/generations", json=POPPIES, headers=headers)
    assert again.status_code == 500 and "failed" in again.get_json()["error"]["message"]
    assert _balance(app, account.id) == 5000  # both jobs refunded once: neither twice


def test_an_openai_retry_given_its_first_requests_jobs_keeps_no_upload_of_its_own(
    database, app, acct, monkeypatch
):
    account, api = acct
    headers = {"Authorization": f"Bearer {api.key}", "Idempotency-Key": "variation"}
    client = app.test_client()

    def variation():
        image = io.BytesIO()
        Image.new("RGB", (64, 48), (200, 30, 40)).save(image, "PNG")
        form = {"image": (io.BytesIO(image.getvalue()), "photo.png"), "size": "256x256"}
        return client.post("/v1/images/variations", data=form, headers=headers)

    _answers_not_kept_once(monkeypatch)
    assert variation().status_code == 200
    _outlive_in_flight_limit(app, "variation")
    _answers_not_kept_once(monkeypatch)  # this retry's answer is not kept either
    assert variation().status_code == 200  # the same job's images
    uploaded = list((Path(app.config["DATA_DIR"]) / "images").glob("*/image.*"))
    with app.app_context():
        (job,) = Job.select().where(Job.account == account.id)
    assert [f"{path.parent.name}/{path.name}" for path in uploaded] == [job.params["upload"]]
    # one the storage cannot remove now stays: the next retry still gets its answer
    _outlive_in_flight_limit(app, "variation")
    monkeypatch.setattr(storage, "delete_images", _unreachable)
    answer = variation()
    assert answer.status_code == 200 and "Idempotent-Replayed" not in answer.headers


def _unreachable(*args, **kwargs):
    raise storage.StorageUnavailable()


def test_a_first_request_that_outlived_its_claim_makes_no_job_and_keeps_the_retrys_row(
    database, app, acct, monkeypatch
):
    account, api = acct
    taken_at = idempotency.utcnow() + datetime.timedelta(minutes=8)
    count_create = ratelimit.count_create

    def taken_over_meanwhile(owner):  # a retry takes the key over while this request stalls
        IdempotencyKey.update(created_at=taken_at).where(IdempotencyKey.key == "stalled").execute()
        count_create(owner)

    monkeypatch.setattr(ratelimit, "count_create", taken_over_meanwhile)
    late = api.post("/v1/imagine", json={"prompt": "a lighthouse"}, headers={"Idempotency-Key": "stalled"})
    assert late.status_code == 409 and late.get_json()["error"]["code"] == "IDEMPOTENCY_KEY_IN_USE"
    assert _jobs(app, account.id) == 0 and _debits(app, account.id) == 0  # its job was undone
    with app.app_context():
        (row,) = IdempotencyKey.select().where(IdempotencyKey.key == "stalled")
    assert row.created_at == taken_at and row.jobs is None  # the retry's, untouched


def test_a_key_whose_request_failed_with_the_database_is_free_once_it_answers_again(
    on_postgres, app, acct, monkeypatch, refusing
):
    account, api = acct
    headers = {"Idempotency-Key": "outage"}
    count_create = ratelimit.count_create

    def database_gone(owner):  # after the key is claimed, before the job is made
        monkeypatch.setattr(ratelimit, "count_create", count_create)
        refusing()
        count_create(owner)

    monkeypatch.setattr(ratelimit, "count_create", database_gone)
    first = api.post("/v1/imagine", json={"prompt": "a lighthouse"}, headers=headers)
    assert first.status_code == 503 and first.get_json()["error"]["code"] == "DATABASE_UNAVAILABLE"
    refusing(False)
    answers = []

    def retried():
        answers.append(api.post("/v1/imagine", json={"prompt": "a lighthouse"}, headers=headers))
        return answers[-1].status_code != 409

    wait_until(retried, timeout=5, interval=0.2, what="the key to be released")
    assert all(answer.headers["Retry-After"] == "5" for answer in answers[:-1])
    assert answers[-1].status_code == 202
    assert _jobs(app, account.id) == 1 and _debits(app, account.id) == 1


def test_a_late_release_leaves_a_key_that_recorded_a_job_to_the_takeover(app, acct):
    account, _ = acct
    with app.app_context():
        now = idempotency.utcnow()
        rows = [
            IdempotencyKey.create(account=account.id, key=key, fingerprint="x", created_at=now, jobs=jobs)
            for key, jobs in (("made-none", None), ("made-one", [str(uuid.uuid4())]))
        ]
    until = now + datetime.timedelta(minutes=1)
    for row in rows:
        idempotency._releases.add(idempotency.Claim(row.id, now), until)

    def keys():
        with app.app_context():
            return {row.key for row in IdempotencyKey.select()}

    wait_until(lambda: keys() == {"made-one"}, timeout=5, what="the key that made no job to be released")
    wait_until(lambda: not idempotency._releases._pending, timeout=5, what="both claims to be done with")
    assert keys() == {"made-one"}  # the key that made a job is left to the takeover


def test_keys_expire_after_24_hours(app, acct):
    account, api = acct
    headers = {"Idempotency-Key": "old"}
    assert api.post("/v1/imagine", json={"prompt": "p"}, headers=headers).status_code == 202
    with app.app_context():
        old = idempotency.utcnow() - idempotency.KEEP - datetime.timedelta(seconds=1)
        IdempotencyKey.update(created_at=old).execute()
    again = api.post("/v1/imagine", json={"prompt": "p"}, headers=headers)
    assert again.status_code == 202 and "Idempotent-Replayed" not in again.headers
    assert _jobs(app, account.id) == 2


@pytest.mark.parametrize("value", ["", " ", "x" * 256, "caf\u00e9"])
def test_a_bad_key_is_a_400_naming_the_header(acct, value):
    _, api = acct
    answer = api.post(
        "/v1/imagine",
        json={"prompt": "p"},
        headers={"Idempotency-Key": value.encode("utf-8").decode("latin-1")},
    )
    assert answer.status_code == 400
    assert "Idempotency-Key" in answer.get_json()["error"]["message"]


def test_original_routes_replay_too_and_their_errors_keep_the_original_fields(app, acct):
    account, api = acct
    headers = {"Idempotency-Key": "orig", "Authorization": api.key}
    client = app.test_client()
    first = client.post("/reroll", json={"parent_task_id": "x"}, headers=headers)
    assert first.status_code == 400
    answer = client.post("/imagine", json={"prompt": "p", "aspect_ratio": "1:1"}, headers=headers)
    replay = client.post("/imagine", json={"prompt": "p", "aspect_ratio": "1:1"}, headers=headers)
    assert answer.status_code == replay.status_code == 202
    assert replay.get_json()["task_id"] == answer.get_json()["task_id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    reused = client.post("/imagine", json={"prompt": "q"}, headers=headers)
    assert reused.status_code == 422
    assert reused.get_json()["code"] == "IDEMPOTENCY_KEY_REUSED" and reused.get_json()["errors"]
    assert _jobs(app, account.id) == 1


def test_concurrent_retries_on_threads_make_one_job_and_one_debit(app, acct):
    account, api = acct
    app.extensions["apiframe.pool"].stop()
    barrier = threading.Barrier(8)

    def send(_):
        client = app.test_client()
        barrier.wait()
        answer = client.post(
            "/v1/imagine", json={"prompt": "race"}, headers={"X-API-Key": api.key, "Idempotency-Key": "race"}
        )
        return answer.status_code, answer.get_json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    statuses = [status for status, _ in answers]
    assert set(statuses) <= {202, 409} and 202 in statuses
    assert len({body["job"]["id"] for status, body in answers if status == 202}) == 1
    assert _jobs(app, account.id) == 1 and _debits(app, account.id) == 1
    with app.app_context():
        assert Account.get_by_id(account.id).balance == credits.ledger_total(account.id) == 5000 - 16


def test_two_gunicorn_processes_on_postgres_make_one_job_and_one_debit(tmp_path, postgres_url):  # noqa: F811
    env = environment(tmp_path / "data", free_port(), APIFRAME_DATABASE_URL=postgres_url, WEB_CONCURRENCY="2")
    key = cli(env, "users", "create", "idem@example.com", "--plan", "scale").strip().splitlines()[-1]
    server = Server(env, tmp_path / "server.log").start()
    try:
        barrier = threading.Barrier(12)

        def send(n):
            barrier.wait()
            answer = requests.post(
                f"{server.url}/v1/imagine",
                json={"prompt": "across processes"},
                headers={"X-API-Key": key, "Idempotency-Key": "pg-race"},
                timeout=20,
            )
            return answer.status_code, answer.json()

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(send, range(12)))
        # once the first answer is in, every retry replays it
        retry = requests.post(
            f"{server.url}/v1/imagine",
            json={"prompt": "across processes"},
            headers={"X-API-Key": key, "Idempotency-Key": "pg-race"},
            timeout=20,
        )
        assert retry.status_code == 202 and retry.headers["Idempotent-Replayed"] == "true"
    finally:
        server.stop()
    statuses = [status for status, _ in answers]
    assert set(statuses) <= {202, 409} and 202 in statuses
    ids = {body["job"]["id"] for status, body in answers if status == 202} | {retry.json()["job"]["id"]}
    assert len(ids) == 1
    connection = psycopg2.connect(postgres_url)
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM job")
        assert cursor.fetchone()[0] == 1
        cursor.execute("SELECT count(*) FROM ledger_entry WHERE reason = 'debit'")
        assert cursor.fetchone()[0] == 1
        cursor.execute("SELECT balance FROM account")
        assert cursor.fetchone()[0] == 5000 - 16
    connection.close()
