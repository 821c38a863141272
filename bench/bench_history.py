"""History benchmark: the cost of reads on an account with a million jobs, beside one with ten.

Builds a SQLite database (the app's own schema and migrations) with one account of --jobs jobs and
one of 10, then times, in-process through the Flask test client, each read whose cost could grow
with history: GET /v1/jobs at offset 0 and deep, a page by cursor at the same depth, the original
API's GET /account (total_images) and the console's usage totals; and prints each figure beside
the same read on the small account, with the ratio, and the query plan of the deep page.

Usage: .venv/bin/python bench/bench_history.py [--jobs 1000000] [--repeat 5]
Not a pass/fail test: it prints numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import accounts  # noqa: E402
import models  # noqa: E402
from app import create_app  # noqa: E402

BATCH = 50_000


def fill(account_id: int, count: int) -> None:
    """``count`` succeeded imagine jobs for the account, a millisecond apart, in bulk.

    They cost nothing: a job's INSERT takes its cost from the balance (credits.INSUFFICIENT), and these
    stand for history, not for spending.
    """
    start = datetime.datetime(2025, 1, 1)
    tiles = json.dumps(["1.png", "2.png", "3.png", "4.png"])
    params = json.dumps({"aspect_ratio": "1:1", "version": "6.1", "quality": 1, "chaos": 0, "stylize": 100})
    sql = (
        "INSERT INTO job (id, account_id, type, status, prompt, params, cost, progress, grid, tiles, "
        "webhook_attempts, origin, created_at, completed_at, runs) "
        "VALUES (?, ?, 'imagine', 'succeeded', 'a fox', ?, 0, 100, 'grid.png', ?, 0, 'reference', ?, ?, 1)"
    )
    database = models.db.obj
    for first in range(0, count, BATCH):
        rows = []
        for n in range(first, min(count, first + BATCH)):
            at = start + datetime.timedelta(milliseconds=n)
            rows.append((uuid.uuid4().hex, account_id, params, tiles, at, at))
        with database.atomic():
            database.cursor().executemany(sql, rows)
    models.Account.update(images=models.Account.images + 4 * count).where(
        models.Account.id == account_id
    ).execute()


def timed(client, path: str, key: str, repeat: int) -> float:
    """Median milliseconds of ``repeat`` GETs of ``path``."""
    times = []
    for _ in range(repeat + 1):
        began = time.perf_counter()
        response = client.get(path, headers={"X-API-Key": key})
        assert response.status_code == 200, response.get_data(as_text=True)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times[1:])


def figures(jobs: int, repeat: int) -> tuple[list[tuple[str, float, float]], str]:
    """Each read's median milliseconds with ``jobs`` jobs and with 10; and the deep page's query plan."""
    with tempfile.TemporaryDirectory() as data:
        app = create_app({"DATA_DIR": data, "START_WORKERS": False, "RATELIMIT_ENABLED": False})
        with app.app_context(), models.db.connection_context():
            big, big_key = accounts.create("big@example.com", plan="scale")
            small, small_key = accounts.create("small@example.com", plan="scale")
            began = time.perf_counter()
            fill(big.id, jobs)
            fill(small.id, 10)
            print(f"built {jobs:,} jobs in {time.perf_counter() - began:.0f} s", flush=True)
            deep = jobs // 2
            plan = models.db.execute_sql(
                "EXPLAIN QUERY PLAN SELECT id FROM job WHERE account_id = ? "
                "ORDER BY created_at DESC, id DESC LIMIT 20 OFFSET ?",
                (big.id, deep),
            ).fetchall()
        client = app.test_client()

        def cursor_after(key: str, offset: int) -> str:
            listed = client.get(f"/v1/jobs?limit=1&offset={offset - 1}", headers={"X-API-Key": key})
            return listed.get_json()["nextCursor"]

        # Pages of the same size on both accounts (the small one has 10 jobs), so a ratio is history's cost.
        page = "/v1/jobs?limit=5"
        reads = [
            ("GET /v1/jobs (first page)", page, page),
            (f"GET /v1/jobs offset={deep:,}", f"{page}&offset={deep}", f"{page}&offset=5"),
            (
                f"GET /v1/jobs cursor at {deep:,}",
                f"{page}&cursor={cursor_after(big_key, deep)}",
                f"{page}&cursor={cursor_after(small_key, 5)}",
            ),
            ("GET /account (total_images)", "/account", "/account"),
        ]
        rows = [
            (name, timed(client, big_path, big_key, repeat), timed(client, small_path, small_key, repeat))
            for name, big_path, small_path in reads
        ]
        models.db.obj.close_all()
    return rows, "; ".join(row[-1] for row in plan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows, plan = figures(args.jobs, args.repeat)
    print(f"{'read':<34} {f'{args.jobs:,}-job account':>20} {'10-job account':>15} {'ratio':>7}")
    for name, big_ms, small_ms in rows:
        print(f"{name:<34} {big_ms:>17.2f} ms {small_ms:>12.2f} ms {big_ms / small_ms:>6.1f}x")
    print("query plan of the deep page:", plan)


if __name__ == "__main__":
    main()
