"""Event-stream benchmark: how many job event streams one gunicorn process holds while the API still answers.

Starts the real server (gunicorn with gunicorn.conf.py, one process, SQLite, local provider), opens
event streams (GET /v1/jobs/:id/events on jobs that stay running) in steps up to the per-process cap,
and at each step times GET /v1/account and GET /v1/jobs from another client (p50/p99); then checks
that one stream more is refused with 429 and that the API still answers.

Usage: .venv/bin/python bench/bench_streams.py [--streams 32] [--requests 200] [--repeat 3]
(--streams sets APIFRAME_EVENT_STREAMS, so gunicorn gets that many threads on top of its 16.)
Not a pass/fail test: it prints numbers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from servers import Server, cli, environment, free_port  # noqa: E402


def request(port: int, method: str, path: str, key: str, body: dict | None = None) -> tuple[int, dict]:
    """One request on a fresh connection; its status and JSON body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, json.loads(data) if data else {}


def open_stream(port: int, job_id: str, key: str) -> tuple[int, http.client.HTTPConnection]:
    """Open an event stream and read its headers; the connection stays open."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", f"/v1/jobs/{job_id}/events", headers={"X-API-Key": key})
    response = connection.getresponse()
    if response.status != 200:
        response.read()
    return response.status, connection


def latencies(port: int, key: str, count: int) -> dict[str, list[float]]:
    """Milliseconds per GET /v1/account and per GET /v1/jobs, one at a time."""
    times: dict[str, list[float]] = {"GET /v1/account": [], "GET /v1/jobs": []}
    for _ in range(count):
        for name in times:
            method, path = name.split()
            started = time.perf_counter()
            status, _ = request(port, method, path, key)
            assert status == 200, status
            times[name].append((time.perf_counter() - started) * 1000)
    return times


def p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def run(streams: int, count: int) -> dict[int, dict[str, tuple[float, float]]]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = environment(
            Path(tmp) / "data",
            port,
            APIFRAME_EVENT_STREAMS=str(streams),
            APIFRAME_EVENT_STREAMS_PER_KEY=str(streams),  # one key may hold them all: fewer accounts to make
            APIFRAME_LOCAL_LATENCY="600",  # jobs that stay running while streams follow them
            APIFRAME_WORKERS="64",
            APIFRAME_JOB_TIMEOUT="900",
        )
        keys = [
            cli(env, "users", "create", f"s{n}@example.com", "--plan", "scale").strip().splitlines()[-1]
            for n in range(3)
        ]
        server = Server(env, Path(tmp) / "server.log").start()
        try:
            jobs = []
            for key in keys:
                status, body = request(port, "POST", "/v1/imagine", key, {"prompt": "a slow fox"})
                assert status == 202, body
                jobs.append(body["job"]["id"])
            probe = keys[-1]
            results = {}
            opened: list[http.client.HTTPConnection] = []
            steps = sorted({0, streams // 4, streams // 2, streams})
            for step in steps:
                while len(opened) < step:
                    status, connection = open_stream(port, jobs[0], keys[0])
                    assert status == 200, f"stream {len(opened) + 1}: HTTP {status}"
                    opened.append(connection)
                times = latencies(port, probe, count)
                results[step] = {name: (p(values, 0.5), p(values, 0.99)) for name, values in times.items()}
            status, extra = open_stream(port, jobs[1], keys[1])
            extra.close()
            results["one more"] = status  # type: ignore[index]
            results["API after"] = request(port, "GET", "/v1/account", probe)[0]  # type: ignore[index]
            for connection in opened:
                connection.close()
            return results
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = [run(args.streams, args.requests) for _ in range(args.repeat)]
    threads = 16 + args.streams
    print(f"one gunicorn process, {threads} threads, stream cap {args.streams}; medians of {args.repeat}")
    for step in [key for key in runs[0] if isinstance(key, int)]:
        cells = []
        for name in runs[0][step]:
            p50 = statistics.median(run_[step][name][0] for run_ in runs)
            p99 = statistics.median(run_[step][name][1] for run_ in runs)
            cells.append(f"{name} p50 {p50:.1f} ms p99 {p99:.1f} ms")
        print(f"{step:4d} open streams: " + "; ".join(cells))
    print(f"stream {args.streams + 1}: HTTP {[run_['one more'] for run_ in runs]}")
    print(f"API after: HTTP {[run_['API after'] for run_ in runs]}")


if __name__ == "__main__":
    main()
