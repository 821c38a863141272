"""Answers about one job, made once for each state of the job's row.

Clients poll, and most polls find a job as the poll before found it. An answer (a family's job object,
as JSON) depends on nothing but the job's row, the queue count read with it included, and the app's
settings. So each answer is kept, keyed by the row exactly as the database gave it and by what makes
the answer; a poll that reads the same row again answers with the same text, without making the job's
model or dumping it again. Any change to the row (status, progress, lease, queue position) is another
key. At most MAX_ANSWERS answers are kept per process; beyond, the store starts again empty.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable
from typing import Any

from flask import Flask, Response, current_app

import jobs
from models import Account, Job

EXTENSION = "apiframe.answers"
MAX_ANSWERS = 2048


def job(account: Account, job_id: uuid.UUID, render: Callable[[Job], Any]) -> Response:
    """``render(job)`` of the account's job, as JSON (or 404). ``render`` may depend on the job alone."""
    row = jobs.find_row(account, job_id)
    kept: dict[Hashable, bytes] = current_app.extensions[EXTENSION]
    key = (render, row)
    try:
        text = kept.get(key)
    except TypeError:  # a column the driver gives as an unhashable value: nothing to key by
        key, text = None, None
    if text is not None:
        return current_app.response_class(text, mimetype=current_app.json.mimetype)
    response = current_app.json.response(render(jobs.made(row)))  # as jsonify makes it
    if key is not None:
        if len(kept) >= MAX_ANSWERS:
            kept.clear()
        kept[key] = response.get_data()
    return response


def init_app(app: Flask) -> None:
    """Keep ``app``'s answers (they depend on its settings: image URLs)."""
    app.extensions[EXTENSION] = {}
