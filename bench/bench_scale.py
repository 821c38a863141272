"""Scale-out benchmark on PostgreSQL: real web and worker processes, figures printed side by side.

  1. submit -> processing latency across processes: jobs accepted by a web node (APIFRAME_ROLE=web) and
     run by a `flask --app app worker` process, with the LISTEN/NOTIFY wake-up and without it (polling
     every APIFRAME_DISPATCH_INTERVAL, 1 s by default). From the jobs' own timestamps (created_at ->
     started_at); jobs are submitted one at a time, at random moments.
  2. jobs per second with one and with two worker processes (APIFRAME_WORKERS threads each): a batch
     of jobs is committed at once while the workers are idle, and timed from acceptance to the last
     one's end. Two kinds of job: `seed` (no provider work at all: the gateway's own claim/run/finish
     cost) and local imagine at quality 0.25 (CPU-bound procedural art).

Every figure is the median of --repeat runs. Needs PostgreSQL at 127.0.0.1:5432 (user postgres).
Usage: .venv/bin/python bench/bench_scale.py [--repeat 3] [--latency-jobs 15] [--seed-jobs 600]
       [--imagine-jobs 24] [--threads 4]
Not a pass/fail test: it prints numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from servers import Server, Worker, cli, environment, free_port  # noqa: E402

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    name = f"apiframe_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(ADMIN)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            cursor.execute(f"DROP DATABASE {name}")
        admin.close()


def query(url: str, sql: str, *args) -> list[tuple]:
    connection = psycopg2.connect(url)
    with connection, connection.cursor() as cursor:
        cursor.execute(sql, args)
        rows = cursor.fetchall()
    connection.close()
    return rows


def wait_done(url: str, ids: list[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while True:
        (done,) = query(
            url, "SELECT count(*) FROM job WHERE id = ANY(%s::uuid[]) AND completed_at IS NOT NULL", ids
        )[0]
        if done == len(ids):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {len(ids)} jobs ended")
        time.sleep(0.02)


def start_workers(env: dict[str, str], work: Path, count: int, label: str) -> list[Worker]:
    return [Worker(env, work / f"{label}-{n}-{uuid.uuid4().hex[:6]}.log").start() for n in range(count)]


def latency_run(
    url: str, web: Server, key: str, env: dict[str, str], work: Path, wakeup: bool, jobs: int
) -> list[float]:
    """Submit ``jobs`` imagines one at a time through the web node; returns created -> started seconds."""
    (worker,) = start_workers({**env, "APIFRAME_WAKEUP": str(wakeup).lower()}, work, 1, "latency")
    try:
        time.sleep(1.5)  # the worker has listened (or not) and polled at least once
        ids = []
        for _ in range(jobs):
            time.sleep(random.uniform(0, 1))  # a random moment relative to the worker's polls
            response = requests.post(
                f"{web.url}/v1/imagine",
                json={"prompt": "latency", "quality": 0.25},
                headers={"X-API-Key": key},
            )
            ids.append(response.json()["job"]["id"])
            wait_done(url, ids[-1:])
    finally:
        worker.stop()
    rows = query(
        url, "SELECT extract(epoch FROM started_at - created_at) FROM job WHERE id = ANY(%s::uuid[])", ids
    )
    return [float(seconds) for (seconds,) in rows]


def throughput_run(
    url: str, env: dict[str, str], work: Path, processes: int, job_type: str, count: int
) -> float:
    """Jobs per second for a batch of ``count`` jobs committed at once, run by ``processes`` workers."""
    from app import create_app

    workers = start_workers(env, work, processes, f"tp-{job_type}")
    try:
        time.sleep(1.5)
        app = create_app({"DATABASE_URL": url, "DATA_DIR": str(work / "bench"), "START_WORKERS": False})
        import jobs
        from models import Account, Job, db
        from schemas import ImagineRequest

        with app.app_context(), db.connection_context():
            account = Account.get(Account.email == "bench@example.com")
            parent = Job.get((Job.type == "imagine") & (Job.status == "succeeded"))
            with db.atomic():  # one commit: every worker is woken at once
                if job_type == "seed":
                    batch = [jobs.submit(account, "seed", parent=parent) for _ in range(count)]
                else:
                    data = ImagineRequest().load({"prompt": "throughput", "quality": 0.25})
                    batch = [jobs.create(account, "imagine", data) for _ in range(count)]
        ids = [str(job.id) for job in batch]
        wait_done(url, ids)
    finally:
        for worker in workers:
            worker.stop()
    ((span, failed),) = query(
        url,
        "SELECT extract(epoch FROM max(completed_at) - min(created_at)),"
        " count(*) FILTER (WHERE status <> 'succeeded') FROM job WHERE id = ANY(%s::uuid[])",
        ids,
    )
    if failed:
        raise RuntimeError(f"{failed} {job_type} jobs did not succeed")
    return count / float(span)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-jobs", type=int, default=15)
    parser.add_argument("--seed-jobs", type=int, default=600)
    parser.add_argument("--imagine-jobs", type=int, default=24)
    parser.add_argument("--threads", type=int, default=4, help="APIFRAME_WORKERS of each worker process")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, database() as url:
        work = Path(tmp)
        web_env = environment(work / "web", free_port(), APIFRAME_DATABASE_URL=url, APIFRAME_ROLE="web")
        key = cli(web_env, "users", "create", "bench@example.com", "--plan", "scale").strip().splitlines()[-1]
        cli(web_env, "users", "credits", "bench@example.com", "1000000")
        worker_env = {**web_env, "APIFRAME_ROLE": "all", "APIFRAME_WORKERS": str(args.threads)}
        web = Server(web_env, work / "web.log").start()
        try:
            print(
                f"submit -> processing latency, {args.latency_jobs} jobs a run, median of {args.repeat} runs:"
            )
            for wakeup in (True, False):
                runs = [
                    latency_run(url, web, key, worker_env, work, wakeup, args.latency_jobs)
                    for _ in range(args.repeat)
                ]
                p50 = statistics.median(statistics.median(run) for run in runs) * 1000
                p90 = statistics.median(pct(run, 0.9) for run in runs) * 1000
                worst = statistics.median(max(run) for run in runs) * 1000
                label = "with LISTEN/NOTIFY wake-up" if wakeup else "polling only (1 s interval)"
                print(f"  {label:30} p50 {p50:7.1f} ms   p90 {p90:7.1f} ms   max {worst:7.1f} ms")
        finally:
            web.stop()

        print(f"jobs per second, worker processes of {args.threads} threads, median of {args.repeat} runs:")
        for job_type, count in (("seed", args.seed_jobs), ("imagine", args.imagine_jobs)):
            figures = {}
            for processes in (1, 2):
                runs = [
                    throughput_run(url, worker_env, work, processes, job_type, count)
                    for _ in range(args.repeat)
                ]
                figures[processes] = statistics.median(runs)
            label = "seed (no provider work)" if job_type == "seed" else "local imagine, quality 0.25"
            print(
                f"  {label:28} 1 process {figures[1]:7.1f}/s   2 processes {figures[2]:7.1f}/s"
                f"   ratio {figures[2] / figures[1]:.2f}   ({count} jobs a run)"
            )


if __name__ == "__main__":
    main()
