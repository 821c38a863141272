"""The stack's ceiling for the API benchmarks: a poll and a create as bare Flask views doing only their SQL.

Each runs the statements the service's own runs, written by hand on the service's SQLite database
(BENCH_DATABASE), with a connection per thread kept for the thread's life and rows packed into one
JSON column; nothing else: no pool, models, validation, limits, hooks or marshmallow.

- GET /v1/jobs/<id>: the key's row with its account, then the job's (with its queue count);
- POST /v1/imagine: the key's row, then the job's INSERT (returning the queue's kept count; the database's
  trigger takes the job's cost and writes its ledger row), one writer at a time.

The ratio of the floor this reaches under the same gunicorn settings is as far as Flask, gunicorn and
SQLite can go with the service's statements: a goal above it asks for fewer statements, not less code.
"""

import datetime
import hashlib
import json
import os
import sqlite3
import threading
import uuid

from flask import Flask, jsonify, request

from models import Account, ApiKey, Job

DATABASE = os.environ["BENCH_DATABASE"]
IMAGINE_COST = 16
_local = threading.local()
_writer = threading.Lock()

app = Flask(__name__)


def _packed(*models: type) -> str:
    columns = (f'{m._meta.table_name}."{f.column_name}"' for m in models for f in m._meta.sorted_fields)
    return f"json_array({', '.join(columns)})"


KEY = (
    f"SELECT {_packed(ApiKey, Account)} FROM api_key JOIN account ON account.id = api_key.account_id"
    " WHERE api_key.key_hash = ? AND api_key.revoked_at IS NULL LIMIT 1"
)
WAITING = "status IN ('pending', 'queued')"
AHEAD = f"(SELECT COUNT(*) FROM job AS ahead WHERE ahead.{WAITING} AND ahead.created_at < {{}})"
JOB = (
    f"SELECT {_packed(Job)}, CASE WHEN job.{WAITING} THEN {AHEAD.format('job.created_at')} END"
    " FROM job WHERE job.id = ? AND job.account_id = ?"
)
INSERT = (
    "INSERT INTO job (id, account_id, type, status, prompt, params, cost, progress, runs, webhook_attempts,"
    " origin, created_at) VALUES (?, ?, 'imagine', 'pending', ?, ?, ?, 0, 0, 0, 'reference', ?)"
    " RETURNING (SELECT COALESCE(SUM(waiting), 0) FROM queue_count)"  # as the service: the count kept
)
ACCOUNT_ID = len(ApiKey._meta.sorted_fields)  # the account's id in a packed key row


def _connection() -> sqlite3.Connection:
    connection = getattr(_local, "connection", None)
    if connection is None:
        connection = sqlite3.connect(DATABASE, isolation_level=None, check_same_thread=False)
        _local.connection = connection
        connection.execute("PRAGMA busy_timeout = 15000")
        connection.execute("PRAGMA synchronous = NORMAL")
    return connection


def _account_id(connection: sqlite3.Connection) -> int:
    key_hash = hashlib.sha256(request.headers["X-API-Key"].encode()).hexdigest()
    return json.loads(connection.execute(KEY, (key_hash,)).fetchone()[0])[ACCOUNT_ID]


def _job(row: list, ahead: int | None) -> dict:
    fields = dict(zip((f.name for f in Job._meta.sorted_fields), row, strict=True))
    return {
        "id": str(uuid.UUID(fields["id"])), "type": fields["type"], "status": fields["status"],
        "prompt": fields["prompt"], "progress": fields["progress"], "createdAt": fields["created_at"],
        "queuePosition": None if ahead is None else ahead + 1,
    }  # fmt: skip


@app.get("/v1/jobs/<job_id>")
def poll(job_id: str):
    connection = _connection()
    account_id = _account_id(connection)
    packed, ahead = connection.execute(JOB, (uuid.UUID(job_id).hex, account_id)).fetchone()
    return jsonify(success=True, job=_job(json.loads(packed), ahead))


@app.post("/v1/imagine")
def create():
    connection = _connection()
    account_id = _account_id(connection)
    body = request.get_json()
    job_id, now = uuid.uuid4(), str(datetime.datetime.now(datetime.UTC).replace(tzinfo=None))
    params = json.dumps({"aspect_ratio": body.get("aspectRatio", "1:1")})
    inserted = (job_id.hex, account_id, body["prompt"], params, IMAGINE_COST, now)
    with _writer:
        ahead = connection.execute(INSERT, inserted).fetchone()[0]
    job = {"id": str(job_id), "type": "imagine", "status": "pending", "prompt": body["prompt"], "progress": 0}
    return jsonify(success=True, job={**job, "createdAt": now, "queuePosition": ahead + 1}), 202
