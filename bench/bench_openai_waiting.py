"""How many synchronous OpenAI Images API requests one server process holds while it still answers.

Starts the real server (gunicorn with the project's gunicorn.conf.py, SQLite, local provider) with
GUNICORN_THREADS threads and APIFRAME_SYNC_WAITERS waiting slots, and jobs slowed down
(APIFRAME_LOCAL_LATENCY) so they do not end during the measurement. Then:
  1. opens SYNC_WAITERS concurrent POST /v1/images/generations that all wait for their jobs;
  2. sends one more, which must get 503 at once (and how long that took);
  3. times GET /v1/account while they all wait, against the same with nobody waiting.

Usage: .venv/bin/python bench/bench_openai_waiting.py [--config 16:8 --config 64:56 ...] [--probes 30]
Not a pass/fail test: it prints numbers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from servers import Server, cli, environment, free_port  # noqa: E402

REQUESTS_PER_KEY = 250  # below the scale plan's 300 a minute
SLOW = {"prompt": "a slow cat", "size": "256x256"}  # small images: the painting is over in a moment
SETTLE = 5.0  # seconds for the first jobs' painting to end before timing, so only the waiting is measured


def request(port: int, key: str, method: str, path: str, body: dict | None = None) -> tuple[int, float]:
    """One request on a new connection: its status and seconds taken."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    started = time.perf_counter()
    connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, time.perf_counter() - started


def probe(port: int, key: str, count: int) -> list[float]:
    """Latencies (ms) of ``count`` GET /v1/account."""
    latencies = []
    for _ in range(count):
        status, seconds = request(port, key, "GET", "/v1/account")
        assert status == 200, status
        latencies.append(seconds * 1000)
    return latencies


def wait_for_images(port: int, key: str) -> None:
    """One waiting client (the server is stopped under it at the end)."""
    try:
        request(port, key, "POST", "/v1/images/generations", SLOW)
    except (OSError, http.client.HTTPException):
        pass


def accepted(port: int, key: str, count: int) -> bool:
    """Whether the account has at least ``count`` jobs."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", f"/v1/jobs?limit=1&offset={count - 1}", headers={"X-API-Key": key})
    found = json.loads(connection.getresponse().read())
    connection.close()
    return bool(found["jobs"])


def run(threads: int, waiters: int, probes: int) -> dict[str, float]:
    """One server with ``threads`` threads and ``waiters`` slots: the figures."""
    data_dir = Path(tempfile.mkdtemp(prefix="bench-openai-"))
    port = free_port()
    env = environment(
        data_dir,
        port,
        GUNICORN_THREADS=str(threads),
        APIFRAME_SYNC_WAITERS=str(waiters),
        APIFRAME_SYNC_WAIT="120",
        APIFRAME_LOCAL_LATENCY="90",
        APIFRAME_WORKERS="4",
    )
    keys = []
    cli(env, "init-db")
    first = cli(env, "users", "create", "bench@example.com", "--plan", "scale").strip().splitlines()[-1]
    keys.append(first)
    cli(env, "users", "credits", "bench@example.com", str(waiters * 16))
    while len(keys) * REQUESTS_PER_KEY < waiters + probes * 3:
        keys.append(cli(env, "keys", "create", "bench@example.com").strip().splitlines()[-1])
    server = Server(env, data_dir / "server.log").start()
    try:
        idle = probe(port, keys[0], probes)
        waiting = [
            threading.Thread(target=wait_for_images, args=(port, keys[i // REQUESTS_PER_KEY]), daemon=True)
            for i in range(waiters)
        ]
        for thread in waiting:
            thread.start()
        deadline = time.monotonic() + 120
        while not accepted(port, keys[-1], waiters):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {waiters} requests were not all accepted in time")
            time.sleep(0.5)
        time.sleep(SETTLE)
        one_more = {"prompt": "one more"}
        refused, refused_in = request(port, keys[-1], "POST", "/v1/images/generations", one_more)
        busy = probe(port, keys[-1], probes)
        still_waiting = sum(thread.is_alive() for thread in waiting)
        return {
            "threads": threads,
            "waiters": waiters,
            "held": still_waiting,
            "one_more_status": refused,
            "one_more_ms": refused_in * 1000,
            "idle_p50_ms": statistics.median(idle),
            "busy_p50_ms": statistics.median(busy),
            "busy_max_ms": max(busy),
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", help="THREADS:WAITERS (repeatable)")
    parser.add_argument("--probes", type=int, default=30)
    args = parser.parse_args()
    configs = [tuple(int(part) for part in config.split(":")) for config in args.config or ["16:8", "64:56"]]
    print("threads waiters held  one-more  in(ms)  account p50 idle(ms)  p50 busy(ms)  max busy(ms)")
    for threads, waiters in configs:
        figures = run(threads, waiters, args.probes)
        print(
            f"{figures['threads']:7d} {figures['waiters']:7d} {figures['held']:4d}"
            f"  {figures['one_more_status']:8d}"
            f"  {figures['one_more_ms']:6.1f}  {figures['idle_p50_ms']:20.1f}  {figures['busy_p50_ms']:12.1f}"
            f"  {figures['busy_max_ms']:12.1f}"
        )


if __name__ == "__main__":
    main()
