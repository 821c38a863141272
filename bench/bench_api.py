"""API benchmark: starts the real server (gunicorn, SQLite, local provider) and prints figures.

  1. accepted POST /v1/imagine per second, beside a bare Flask endpoint under the same gunicorn
     settings and the same client (the framework's floor), and their ratio;
  2. submit-to-processing latency (p50/p99) and local imagine job time (p50/p99), from the jobs'
     own timestamps, for jobs submitted one at a time at each quality.

Usage: .venv/bin/python bench/bench_api.py [--seconds 5] [--clients 4] [--jobs 20] [--repeat 3]
Not a pass/fail test: it prints numbers.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import multiprocessing
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from servers import Server, cli, environment, free_port  # noqa: E402

HERE = Path(__file__).resolve().parent


def _hammer(port: int, method: str, path: str, body: bytes, keys: list[str], seconds: float, queue) -> None:
    """One client process: keep-alive requests for ``seconds``; reports (accepted, refused)."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    accepted = refused = 0
    deadline = time.monotonic() + seconds
    turn = 0
    while time.monotonic() < deadline:
        headers = {"Content-Type": "application/json"}
        if keys:
            headers["X-API-Key"] = keys[turn % len(keys)]
            turn += 1
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status in (200, 202):
            accepted += 1
        else:
            refused += 1
    queue.put((accepted, refused))


def throughput(
    port: int, method: str, path: str, body: bytes, keys: list[list[str]], seconds: float
) -> float:
    """Accepted requests per second from len(keys) client processes."""
    queue = multiprocessing.Queue()
    clients = [
        multiprocessing.Process(target=_hammer, args=(port, method, path, body, client_keys, seconds, queue))
        for client_keys in keys
    ]
    for client in clients:
        client.start()
    results = [queue.get() for _ in clients]
    for client in clients:
        client.join()
    accepted = sum(a for a, _ in results)
    refused = sum(r for _, r in results)
    if refused:
        print(f"  ({refused} requests refused)")
    return accepted / seconds


def _times(db: Path) -> list[tuple[float, float]]:
    """(submit-to-processing, processing-to-done) seconds of every succeeded job."""
    parse = datetime.datetime.fromisoformat
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT created_at, started_at, completed_at FROM job WHERE status = 'succeeded'"
        ).fetchall()
    return [
        ((parse(s) - parse(c)).total_seconds(), (parse(d) - parse(s)).total_seconds()) for c, s, d in rows
    ]


def _wait_until_done(db: Path, job_id: str) -> None:
    """Wait for a job to end, reading the database (polling the API would count against the limit)."""
    with sqlite3.connect(db) as connection:
        while connection.execute(
            "SELECT status FROM job WHERE id = ? AND status IN ('pending', 'queued', 'processing')",
            (job_id.replace("-", ""),),
        ).fetchone():
            time.sleep(0.005)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_accept(args, work: Path) -> None:
    env = environment(work / "accept", free_port(), APIFRAME_LOCAL_LATENCY="3600")
    cli(env, "users", "create", "bench@example.com", "--plan", "scale")
    cli(env, "users", "credits", "bench@example.com", "10000000")
    # Each key may make 300 requests a minute; give every client enough keys to stay under that.
    per_client = max(1, int(args.seconds * 200 * args.repeat / 300) + 1)
    keys = [
        [cli(env, "keys", "create", "bench@example.com").strip().splitlines()[-1] for _ in range(per_client)]
        for _ in range(args.clients)
    ]
    floor_env = dict(env, PORT=str(free_port()))
    server = Server(env, work / "accept.log").start()
    floor = Server(floor_env, work / "floor.log", app="floor_app:app", cwd=HERE).start()
    body = json.dumps({"prompt": "a futuristic city at sunset", "aspectRatio": "16:9"}).encode()
    ours, bare = [], []
    try:
        for _ in range(args.repeat):
            ours.append(throughput(int(env["PORT"]), "POST", "/v1/imagine", body, keys, args.seconds))
            bare.append(
                throughput(int(floor_env["PORT"]), "POST", "/", body, [[]] * args.clients, args.seconds)
            )
    finally:
        server.stop()
        floor.stop()
    ratios = [o / b for o, b in zip(ours, bare, strict=True)]
    runs = ", ".join(f"{x:.0f}" for x in ours)
    print(f"accepted POST /v1/imagine per second: median {statistics.median(ours):.0f} (runs {runs})")
    print(f"bare Flask endpoint, same server and client: median {statistics.median(bare):.0f}")
    print(f"imagine / floor ratio: median {statistics.median(ratios):.2f}")


def bench_jobs(args, work: Path) -> None:
    env = environment(work / "jobs", free_port())
    key = cli(env, "users", "create", "jobs@example.com", "--plan", "scale").strip().splitlines()[-1]
    cli(env, "users", "credits", "jobs@example.com", "100000")
    server = Server(env, work / "jobs.log").start()
    connection = http.client.HTTPConnection("127.0.0.1", int(env["PORT"]))
    database = Path(env["APIFRAME_DATA_DIR"]) / "apiframe.db"
    try:
        for quality in (1, 0.5, 0.25):
            for n in range(args.jobs):
                body = json.dumps({"prompt": f"benchmark {quality} {n}", "quality": quality}).encode()
                connection.request("POST", "/v1/imagine", body=body, headers={"X-API-Key": key})
                job_id = json.loads(connection.getresponse().read())["job"]["id"]
                _wait_until_done(database, job_id)
            times = _times(database)[-args.jobs :]
            waits, runs = [t[0] * 1000 for t in times], [t[1] * 1000 for t in times]
            print(
                f"quality {quality:<4}: submit-to-processing p50 {_pct(waits, 0.5):.0f} ms"
                f" p99 {_pct(waits, 0.99):.0f} ms; imagine job time p50 {_pct(runs, 0.5):.0f} ms"
                f" p99 {_pct(runs, 0.99):.0f} ms ({len(times)} jobs)"
            )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bench_jobs(args, work)
        bench_accept(args, work)


if __name__ == "__main__":
    main()
