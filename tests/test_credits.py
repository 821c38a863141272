"""Credits: costs, 402, atomic debits under concurrency, refunds, and the ledger."""

from __future__ import annotations

import threading

import pytest
from peewee import IntegrityError

import credits
from conftest import Api, image_bytes
from models import Account, Job, LedgerEntry, db
from operations import costs


def _account(api: Api) -> dict:
    return api.get("/v1/account").get_json()["account"]


def test_costs_match_the_reference():
    assert costs() == {
        "imagine": 16,
        "blend": 16,
        "variation": 16,
        "describe": 4,
        "upscale": 4,
        # the operations of the original apiframe.ai API
        "reroll": 16,
        "upscale-alt": 4,
        "upscale-highres": 4,
        # the rest of Midjourney
        "pan": 16,
        "zoom": 16,
        "inpaint": 16,
        "shorten": 4,
        "faceswap": 4,
        "seed": 0,
    }


def test_each_operation_takes_its_cost(api, files):
    start = _account(api)["credits"]["remaining"]
    parent = api.imagine()
    api.wait(api.submit("/v1/upscale", {"jobId": parent["id"], "index": 1})["id"])
    api.wait(api.submit("/v1/variation", {"jobId": parent["id"], "index": 2})["id"])
    url = files.add("/a.png", image_bytes())
    api.wait(api.submit("/v1/describe", {"imageUrl": url})["id"])
    api.wait(api.submit("/v1/blend", {"imageUrls": [url, url]})["id"])
    spent = start - _account(api)["credits"]["remaining"]
    assert spent == 16 + 4 + 16 + 4 + 16


def test_free_plan_has_50_credits_for_three_imagines(database, client, make_account):
    _, key = make_account("free")
    api = Api(client, key)
    assert _account(api)["credits"] == {"remaining": 50, "total": 50}
    for _ in range(3):
        assert api.post("/v1/imagine", json={"prompt": "a"}).status_code == 202
    response = api.post("/v1/imagine", json={"prompt": "a"})
    assert response.status_code == 402
    error = response.get_json()["error"]
    assert error["code"] == "INSUFFICIENT_CREDITS" and "16" in error["message"] and "2" in error["message"]
    assert _account(api)["credits"] == {"remaining": 2, "total": 50}
    assert len(api.get("/v1/jobs").get_json()["jobs"]) == 3  # no job was created by the refused request


def test_402_comes_before_any_job_but_after_validation(database, client, make_account, app):
    account, key = make_account("free")
    with app.app_context():
        credits.grant(account.id, -50)
    api = Api(client, key)
    assert api.post("/v1/imagine", json={}).status_code == 400
    assert api.post("/v1/imagine", json={"prompt": "a"}).status_code == 402
    assert api.post("/v1/describe", json={"imageUrl": "https://example.com/a.png"}).status_code == 402
    with app.app_context():
        assert Job.select().where(Job.account == account.id).count() == 0


def test_concurrent_debits_never_overspend(database, app, client, make_account):
    account, key = make_account("scale")
    with app.app_context():
        credits.grant(account.id, -(account.balance - 16 * 5))  # exactly five imagines
    app.extensions["apiframe.pool"].stop()  # keep jobs pending: nothing is refunded meanwhile
    statuses: list[int] = []
    barrier = threading.Barrier(12)

    def spend() -> None:
        local = app.test_client()
        barrier.wait()
        response = local.post("/v1/imagine", json={"prompt": "race"}, headers={"X-API-Key": key})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=spend) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [202] * 5 + [402] * 7
    with app.app_context():
        fresh = Account.get_by_id(account.id)
        assert fresh.balance == 0
        assert credits.ledger_total(account.id) == 0
        assert Job.select().where(Job.account == account.id).count() == 5


def test_a_debit_is_a_ledger_row_written_with_the_job(database, app, api):
    # The job's INSERT writes its debit and the ledger row (a trigger): one statement on both databases.
    app.extensions["apiframe.pool"].stop()
    before = _account(api)["credits"]["remaining"]
    job_id = api.submit("/v1/imagine", {"prompt": "a ledger"})["id"]
    with app.app_context():
        job = Job.get_by_id(job_id)
        ledger = LedgerEntry.select().where(LedgerEntry.account == job.account_id)
        rows = list(ledger.order_by(LedgerEntry.id))
        assert [(r.amount, r.reason, r.note, str(r.job_id)) for r in rows[-1:]] == [
            (-16, credits.DEBIT, "imagine job", job_id)
        ]
        assert rows[-1].balance_after == before - 16 == Account.get_by_id(job.account_id).balance
        assert credits.ledger_total(job.account_id) == before - 16


def test_a_job_pays_for_itself_however_it_is_inserted(database, app, make_account):
    # The database takes a job's cost as the job is inserted, by the service or by hand: no job is unpaid.
    account, _ = make_account("free")  # 50 credits
    with app.app_context(), db.connection_context():
        made = [Job.create(account=account.id, type="imagine", status="pending", cost=16) for _ in range(3)]
        with pytest.raises(IntegrityError) as refused, db.atomic():
            Job.create(account=account.id, type="imagine", status="pending", cost=16)
        assert credits.refused(refused.value)
        free = Job.create(account=account.id, type="seed", status="pending", cost=0)
        assert Account.get_by_id(account.id).balance == 2 == credits.ledger_total(account.id)
        assert Account.get_by_id(account.id).spent == 48
        debits = LedgerEntry.select().where(LedgerEntry.reason == credits.DEBIT).order_by(LedgerEntry.id)
        assert [(row.job_id, row.amount, row.note, row.balance_after) for row in debits] == [
            (job.id, -16, "imagine job", balance) for job, balance in zip(made, (34, 18, 2), strict=True)
        ]
        assert Job.select().where(Job.account == account.id).count() == 4  # not the refused one
        assert not LedgerEntry.select().where(LedgerEntry.job == free.id).exists()  # free: no row


def test_failed_job_is_refunded_with_a_ledger_row(app, api, files):
    before = _account(api)["credits"]["remaining"]
    job = api.wait(api.submit("/v1/describe", {"imageUrl": files.url("/missing.png")})["id"])
    assert job["status"] == "failed"
    assert _account(api)["credits"]["remaining"] == before
    with app.app_context():
        entries = list(LedgerEntry.select().where(LedgerEntry.job == job["id"]).order_by(LedgerEntry.id))
        assert [(e.reason, e.amount) for e in entries] == [("debit", -4), ("refund", 4)]


def test_cancelled_job_is_refunded(app, settings, api):
    app.extensions["apiframe.pool"].stop()
    before = _account(api)["credits"]["remaining"]
    job = api.submit("/v1/imagine", {"prompt": "never run"})
    assert _account(api)["credits"]["remaining"] == before - 16
    cancelled = api.post(f"/v1/jobs/{job['id']}/cancel").get_json()["job"]
    assert cancelled["status"] == "cancelled" and cancelled["completedAt"]
    assert _account(api)["credits"]["remaining"] == before
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 400  # refunded once only
    assert _account(api)["credits"]["remaining"] == before


def test_a_job_refunded_at_the_same_instant_by_several_is_refunded_once(database, app, api):
    # As when a stalled OpenAI request and the Idempotency-Key retry that took it over both end its jobs.
    app.extensions["apiframe.pool"].stop()
    before = _account(api)["credits"]["remaining"]
    job_id = api.submit("/v1/imagine", {"prompt": "refunded once"})["id"]
    barrier = threading.Barrier(8)
    given: list[bool] = []

    def give_back() -> None:
        with app.app_context(), db.connection_context():
            job = Job.get_by_id(job_id)
            barrier.wait()
            given.append(credits.refund(job, "imagine job refunded: a race"))

    threads = [threading.Thread(target=give_back) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(given) == [False] * 7 + [True]
    assert _account(api)["credits"]["remaining"] == before
    with app.app_context():
        refunds = list(LedgerEntry.select().where(LedgerEntry.reason == credits.REFUND))
        assert [(row.amount, str(row.job_id)) for row in refunds] == [(16, job_id)]
        account = Account.get_by_id(refunds[0].account_id)
        assert refunds[0].balance_after == account.balance == credits.ledger_total(account.id) == before
        assert account.refunded == 16
        assert credits.refund(Job.get_by_id(job_id), "and once more") is False
        assert Account.get_by_id(account.id).balance == before


def test_total_counts_grants_not_refunds(app, client, make_account, runner):
    account, key = make_account("free")
    api = Api(client, key)
    app.extensions["apiframe.pool"].stop()
    job = api.submit("/v1/imagine", {"prompt": "a"})
    api.post(f"/v1/jobs/{job['id']}/cancel")
    runner.invoke(args=["users", "credits", account.email, "25"])
    assert _account(api)["credits"] == {"remaining": 75, "total": 75}


@pytest.mark.parametrize("amount", [-51, -1000])
def test_grant_cannot_make_the_balance_negative(app, make_account, amount):
    account, _ = make_account("free")
    with app.app_context(), pytest.raises(credits.InsufficientCredits):
        credits.grant(account.id, amount)
    with app.app_context():
        assert Account.get_by_id(account.id).balance == 50
