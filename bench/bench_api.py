"""API benchmark, the one entry point (`make bench`): every gateway figure beside its floor.

Starts the real server (gunicorn with gunicorn.conf.py, local provider) on SQLite, on PostgreSQL and
as two processes sharing Redis rate limits, and the bare-Flask floor (floor_app.py) under the same
gunicorn settings; drives each with the same load generator (wrk, load.py) and alternates service
and floor --repeat times, so each ratio is the median of runs made side by side:

  1. GET /v1/jobs/:id and accepted POST /v1/imagine (SQLite, PostgreSQL), 8 connections: answers
     per second and p99, each beside the floor's; and the stack's ceiling (ceiling_app.py: the same
     statements by hand, and nothing else) beside the floor;
  2. POST /v1/imagine with two processes and Redis, beside one process with Redis (on SQLite, and
     on PostgreSQL as scale-out runs), and the floor's two processes beside its one; then each run's
     CPU time per answer by where it runs (the service, PostgreSQL, Redis, wrk), and the most two
     processes can give on this machine's cores from that split (print_cpu_split);
  3. reads on an account with --history-jobs jobs beside one with 10 (bench_history.py);
  4. the worker process's RSS under --rss-seconds of mixed load (creates at quality 1, polls,
     lists), beside the floor process's;
  5. submit-to-processing latency and local imagine job time, jobs submitted one at a time.

Usage: .venv/bin/python bench/bench_api.py [--seconds 5] [--repeat 3] [--history-jobs 1000000]
       [--rss-seconds 60] [--jobs 10] [--skip history,rss,latency,postgres]
Needs wrk, PostgreSQL at 127.0.0.1:5432 (user postgres) and Redis at 127.0.0.1:6379 (databases
8 to 11, emptied first). Not a pass/fail test: it prints numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

import load  # noqa: E402
from bench_history import figures as history_figures  # noqa: E402
from bench_scale import database as postgres_database  # noqa: E402

from servers import Server, environment, free_port  # noqa: E402

CONNECTIONS = 8
ACCOUNTS = 200  # each may create 300 jobs a minute (scale plan): enough for every run of a bench
IMAGINE = json.dumps({"prompt": "a futuristic city at sunset", "aspectRatio": "16:9"}).encode()
REDIS = "redis://127.0.0.1:6379/{}"


def seed_accounts(env: dict[str, str], count: int) -> list[str]:
    """``count`` scale-plan accounts with plenty of credits in the server's database; their keys."""
    import accounts
    import credits
    import models
    from app import create_app

    settings = {"DATA_DIR": env["APIFRAME_DATA_DIR"], "START_WORKERS": False}
    if "APIFRAME_DATABASE_URL" in env:
        settings["DATABASE_URL"] = env["APIFRAME_DATABASE_URL"]
    app = create_app(settings)
    keys = []
    with app.app_context(), models.db.connection_context():
        for n in range(count):
            account, key = accounts.create(f"bench{n}@example.com", plan="scale")
            credits.grant(account.id, 10_000_000)
            keys.append(key)
    models.db.obj.close_all()
    return keys


def first_job(url: str, key: str, body: bytes = IMAGINE) -> str:
    """Create one imagine job as ``key``; its id."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port))
    connection.request("POST", "/v1/imagine", body=body, headers={"X-API-Key": key})
    response = connection.getresponse()
    assert response.status == 202, response.read()
    return json.loads(response.read())["job"]["id"]


@contextlib.contextmanager
def serving(work: Path, name: str, app: str = "app:create_app()", **settings: str) -> Iterator[Server]:
    """A gunicorn server (the service, or the floor with ``app``) for the duration of the block."""
    env = environment(work / name, free_port(), **settings)
    (work / name).mkdir(parents=True, exist_ok=True)
    if app == "app:create_app()":
        env["BENCH_KEYS"] = json.dumps(seed_accounts(env, ACCOUNTS))
        server = Server(env, work / f"{name}.log")
    else:  # the floor, from bench/; gunicorn.conf.py still imports the service's config
        env["PYTHONPATH"] = str(HERE.parent)
        server = Server(env, work / f"{name}.log", app=app, cwd=HERE)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def keys_of(server: Server) -> list[str]:
    return json.loads(server.env["BENCH_KEYS"])


def creates(server: Server) -> list[load.Request]:
    return [load.Request("POST", "/v1/imagine", key, IMAGINE) for key in keys_of(server)]


def cancel_waiting(server: Server, keep: tuple[str, ...] = ()) -> int:
    """End the jobs a create run left waiting, except ``keep``; returns how many there were.

    Every waiting job is counted by the queue position of each newer one, so a run that starts
    behind the previous runs' thousands of jobs pays for them: ending them (straight in the
    database, a shortcut of the bench's own) starts every run of an alternation alike.
    """
    url = server.env.get("APIFRAME_DATABASE_URL")
    sql = "UPDATE job SET status = 'cancelled', completed_at = created_at WHERE status = 'pending'"
    if url is None:
        ids = tuple(job_id.replace("-", "") for job_id in keep)
        where = f" AND id NOT IN ({', '.join('?' * len(ids))})" if ids else ""
        with sqlite3.connect(Path(server.env["APIFRAME_DATA_DIR"]) / "apiframe.db", timeout=30) as db:
            return db.execute(sql + where, ids).rowcount
    where = " AND id <> ALL(%s::uuid[])"
    connection = psycopg2.connect(url)
    with connection, connection.cursor() as cursor:
        cursor.execute(sql + where, (list(keep),))
        count = cursor.rowcount
    connection.close()
    return count


def _cpu_times() -> tuple[int, int]:
    """The machine's (idle, total) CPU time so far, in clock ticks (/proc/stat)."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)


GROUPS = ("service", "PostgreSQL", "Redis", "wrk")  # where a run's CPU time goes


def _group_seconds(server: Server) -> dict[str, float]:
    """CPU seconds used so far by the server's processes, PostgreSQL's, Redis's and the load generator.

    PostgreSQL's include its ended connections' (a parent counts the children it has waited for); the
    load generator's are this process's ended children's.
    """
    assert server.process is not None
    used = dict.fromkeys(GROUPS, 0.0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        own, children = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
        if int(fields[2]) == server.process.pid:  # the server's process group (a session of its own)
            used["service"] += own
        elif name == "postgres":
            used["PostgreSQL"] += own + children
        elif name == "redis-server":
            used["Redis"] += own
    ticks = os.sysconf("SC_CLK_TCK")
    used = {group: seconds / ticks for group, seconds in used.items()}
    times = os.times()
    used["wrk"] = times.children_user + times.children_system
    return used


class Alternation:
    """Figures measured in turn, --repeat times; each kept as a list of runs."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.runs: dict[str, list[load.Result]] = {}
        self.queues: dict[str, list[int]] = {}  # jobs left waiting by each create run
        self.idle: dict[str, list[float]] = {}  # the machine's idle share during each run
        self.cpu: dict[str, list[dict[str, float]]] = {}  # each run's CPU ms per answer, by GROUPS

    def measure(
        self, name: str, server: Server, requests: list[load.Request], keep: tuple[str, ...] = ()
    ) -> None:
        before, used = _cpu_times(), _group_seconds(server)
        result = load.run(server.url, requests, self.seconds, CONNECTIONS)
        after, used_after = _cpu_times(), _group_seconds(server)
        self.idle.setdefault(name, []).append((after[0] - before[0]) / max(1, after[1] - before[1]))
        answers = max(1.0, result.per_second * self.seconds)
        split = {group: 1000 * (used_after[group] - used[group]) / answers for group in GROUPS}
        self.cpu.setdefault(name, []).append(split)
        if result.non2xx or result.errors:
            print(f"  ({name}: {result.non2xx} non-2xx answers, {result.errors} socket errors)", flush=True)
        self.runs.setdefault(name, []).append(result)
        if server.app == "app:create_app()" and any(r.method == "POST" for r in requests):
            self.queues.setdefault(name, []).append(cancel_waiting(server, keep))

    def cpu_ms(self, name: str, group: str) -> float:
        return statistics.median(split[group] for split in self.cpu[name])

    def rate(self, name: str) -> float:
        return statistics.median(r.per_second for r in self.runs[name])

    def p99(self, name: str) -> float:
        return statistics.median(r.p99_ms for r in self.runs[name])

    def ratio(self, name: str, floor: str, figure: Callable[[load.Result], float]) -> float:
        pairs = zip(self.runs[name], self.runs[floor], strict=True)
        return statistics.median(figure(a) / figure(b) for a, b in pairs)


def row(figure: str, service: str, floor: str, ratio: float, goal: str) -> None:
    print(f"| {figure} | {service} | {floor} | {ratio:.2f} | {goal} |", flush=True)


def bench_throughput(args, work: Path) -> None:
    """Sections 1 and 2: the request paths beside the floor, one process and two."""
    sqlite_1 = dict(APIFRAME_LOCAL_LATENCY="3600")  # jobs stay running: only the API is measured
    with contextlib.ExitStack() as stack:
        ours = stack.enter_context(serving(work, "sqlite", **sqlite_1))
        floor = stack.enter_context(serving(work, "floor", app="floor_app:app"))
        on_ours = dict(BENCH_DATABASE=str(Path(ours.env["APIFRAME_DATA_DIR"]) / "apiframe.db"))
        ceiling = stack.enter_context(serving(work, "ceiling", app="ceiling_app:app", **on_ours))
        pg = None
        if "postgres" not in args.skip:
            url = stack.enter_context(postgres_database())
            pg = stack.enter_context(serving(work, "postgres", APIFRAME_DATABASE_URL=url, **sqlite_1))
        # Several processes share rate limits in Redis (one database each, emptied first): one and two
        # processes on SQLite, and on PostgreSQL, where scale-out runs (README: several processes).
        shared: dict[tuple[str, str], Server] = {}
        for number, (database, processes) in enumerate(
            [("SQLite", "1"), ("SQLite", "2"), ("PostgreSQL", "1"), ("PostgreSQL", "2")], start=8
        ):
            if database == "PostgreSQL" and pg is None:
                continue
            redis.Redis.from_url(REDIS.format(number)).flushdb()
            settings = dict(
                sqlite_1, WEB_CONCURRENCY=processes, APIFRAME_RATELIMIT_STORAGE_URI=REDIS.format(number)
            )
            if database == "PostgreSQL":
                settings["APIFRAME_DATABASE_URL"] = stack.enter_context(postgres_database())
            shared[database, processes] = stack.enter_context(
                serving(work, f"redis-{database}-{processes}", **settings)
            )
        floor_2 = stack.enter_context(serving(work, "floor2", app="floor_app:app", WEB_CONCURRENCY="2"))
        polls = [
            load.Request("GET", f"/v1/jobs/{first_job(ours.url, key)}", key) for key in keys_of(ours)[:50]
        ]
        floor_polls = [load.Request("GET", f"/jobs/{r.path.rsplit('/', 1)[1]}") for r in polls]
        floor_creates = [load.Request("POST", "/", None, IMAGINE)]
        runs = Alternation(args.seconds)
        keep = tuple(r.path.rsplit("/", 1)[1] for r in polls)
        warm = [(ours, polls), (floor, floor_polls), (ours, creates(ours)), (floor, floor_creates)]
        warm += [(ceiling, polls), (ceiling, creates(ours))]
        warm += [(server, creates(server)) for server in (pg, *shared.values()) if server is not None]
        for server, requests in [*warm, (floor_2, floor_creates)]:  # connections, caches, first queries
            load.run(server.url, requests, 2, CONNECTIONS)
            if server.app == "app:create_app()":
                cancel_waiting(server, keep)
        for n in range(args.repeat):
            print(f"run {n + 1} of {args.repeat} ...", flush=True)
            runs.measure("get", ours, polls)
            runs.measure("get floor", floor, floor_polls)
            runs.measure("get ceiling", ceiling, polls)
            runs.measure("create", ours, creates(ours), keep=keep)
            runs.measure("create ceiling", ceiling, creates(ours))
            cancel_waiting(ours, keep)  # the ceiling's jobs are in the service's database
            if pg is not None:
                runs.measure("create pg", pg, creates(pg))
            runs.measure("create floor", floor, floor_creates)
            for (database, processes), server in shared.items():
                runs.measure(f"create {database} {processes} + Redis", server, creates(server))
            runs.measure("create floor 2", floor_2, floor_creates)

    rate, p99 = (lambda r: r.per_second), (lambda r: r.p99_ms)
    print("each run (the machine's idle CPU share during it: with none left, more processes cannot help):")
    for name, results in runs.runs.items():
        figures = zip(results, runs.idle[name], strict=True)
        print(
            f"  {name}: "
            + ", ".join(f"{r.per_second:,.0f}/s p99 {r.p99_ms:.1f} ms idle {i:.0%}" for r, i in figures)
        )
    depth = ", ".join(f"{name} {max(q):,}" for name, q in runs.queues.items())
    print(f"\nwaiting jobs at the end of a create run (each run starts with none): {depth}")
    print(f"\nmedians of {args.repeat} alternations, {args.seconds:g} s each, wrk, {CONNECTIONS} connections")
    print("| figure | service | floor | ratio | goal |\n|---|---|---|---|---|")
    row(
        "GET /v1/jobs/:id", f"{runs.rate('get'):,.0f}/s, p99 {runs.p99('get'):.1f} ms",
        f"{runs.rate('get floor'):,.0f}/s, p99 {runs.p99('get floor'):.1f} ms",
        runs.ratio("get", "get floor", rate), "≥ 0.6",
    )  # fmt: skip
    row(
        "POST /v1/imagine accepted, SQLite", f"{runs.rate('create'):,.0f}/s",
        f"{runs.rate('create floor'):,.0f}/s", runs.ratio("create", "create floor", rate), "≥ 0.5",
    )  # fmt: skip
    row(
        "GET /v1/jobs/:id, the stack's ceiling (ceiling_app.py)", f"{runs.rate('get ceiling'):,.0f}/s",
        f"{runs.rate('get floor'):,.0f}/s", runs.ratio("get ceiling", "get floor", rate), "(reference)",
    )  # fmt: skip
    row(
        "POST /v1/imagine, the stack's ceiling (ceiling_app.py)", f"{runs.rate('create ceiling'):,.0f}/s",
        f"{runs.rate('create floor'):,.0f}/s", runs.ratio("create ceiling", "create floor", rate),
        "(reference)",
    )  # fmt: skip
    row(
        "p99 of accepted creates, SQLite", f"{runs.p99('create'):.1f} ms",
        f"{runs.p99('create floor'):.1f} ms", runs.ratio("create", "create floor", p99), "< 10",
    )  # fmt: skip
    if pg is not None:
        row(
            "POST /v1/imagine accepted, PostgreSQL", f"{runs.rate('create pg'):,.0f}/s",
            f"{runs.rate('create floor'):,.0f}/s", runs.ratio("create pg", "create floor", rate), "–",
        )  # fmt: skip
        row(
            "PostgreSQL / SQLite creates", f"{runs.rate('create pg'):,.0f}/s",
            f"SQLite {runs.rate('create'):,.0f}/s", runs.ratio("create pg", "create", rate), "≥ 0.8",
        )  # fmt: skip
        row(
            "p99 of accepted creates, PostgreSQL", f"{runs.p99('create pg'):.1f} ms",
            f"{runs.p99('create floor'):.1f} ms", runs.ratio("create pg", "create floor", p99), "< 10",
        )  # fmt: skip
    for database in dict.fromkeys(database for database, _ in shared):
        one, two = f"create {database} 1 + Redis", f"create {database} 2 + Redis"
        row(
            f"POST /v1/imagine, 2 processes + Redis, {database}", f"{runs.rate(two):,.0f}/s",
            f"{runs.rate('create floor 2'):,.0f}/s", runs.ratio(two, "create floor 2", rate), "–",
        )  # fmt: skip
        row(
            f"2 processes / 1 process, creates + Redis, {database}", f"{runs.rate(two):,.0f}/s",
            f"1 process {runs.rate(one):,.0f}/s", runs.ratio(two, one, rate), "≥ 1.6",
        )  # fmt: skip
    row(
        "floor: 2 processes / 1 process", f"{runs.rate('create floor 2'):,.0f}/s",
        f"1 process {runs.rate('create floor'):,.0f}/s",
        runs.ratio("create floor 2", "create floor", rate), "(reference)",
    )  # fmt: skip
    print_cpu_split(runs, [database for database, _ in shared])


def print_cpu_split(runs: Alternation, databases: list[str]) -> None:
    """Where a create's CPU time goes, and what that allows two processes on this machine's cores.

    One process is held to about one core by its GIL (S ms of its own CPU per create); what the rest
    of the stack spends per create (N ms: PostgreSQL, Redis, the load generator) runs beside it on the
    other cores. k processes answer at most min(k / S, cores / (S + N)) per ms: on 2 cores two processes
    pass one by at most 2·S / (S + N), past 1.6 only where N is under a quarter of S.
    """
    cores = os.cpu_count() or 1
    print(f"\nCPU per answer, ms (medians), by where it runs ({cores} cores)")
    print(f"| run | {' | '.join(GROUPS)} |\n|---|{'---|' * len(GROUPS)}")
    for name in runs.cpu:
        print(f"| {name} | " + " | ".join(f"{runs.cpu_ms(name, group):.3f}" for group in GROUPS) + " |")
    for database in dict.fromkeys(databases):
        one = f"create {database} 1 + Redis"
        own = runs.cpu_ms(one, "service")
        rest = sum(runs.cpu_ms(one, group) for group in GROUPS[1:])
        bound = min(2 / own, cores / (own + rest)) / min(1 / own, cores / (own + rest))
        print(
            f"{database}, 1 process: S = {own:.3f} ms, N = {rest:.3f} ms (N/S = {rest / own:.2f}); "
            f"on {cores} cores two processes can answer at most {bound:.2f} times as many"
        )


def bench_history(args) -> None:
    """Section 3: reads whose cost could grow with history."""
    rows, plan = history_figures(args.history_jobs, args.repeat)
    print(f"\n| read | {args.history_jobs:,}-job account | 10-job account | ratio | goal |")
    print("|---|---|---|---|---|")
    for name, big_ms, small_ms in rows:
        row(name, f"{big_ms:.2f} ms", f"{small_ms:.2f} ms", big_ms / small_ms, "≤ 25 (offset); ≈ 1 (others)")
    print(f"query plan of the deep offset page: {plan}")


def _worker_pid(server: Server) -> int:
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    return int(children[0])


def _memory(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) of process ``pid`` in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def bench_rss(args, work: Path) -> None:
    """Section 4: the worker process's memory under mixed load, sampled every second."""
    quality_1 = json.dumps({"prompt": "a fox in a misty forest at dawn", "quality": 1}).encode()
    with serving(work, "rss") as ours, serving(work, "rss-floor", app="floor_app:app") as floor:
        pid, floor_pid = _worker_pid(ours), _worker_pid(floor)
        idle, floor_idle = _memory(pid)[0], _memory(floor_pid)[0]
        mixed = []
        for key in keys_of(ours)[:100]:
            job = first_job(ours.url, key, quality_1)  # the same job as the load's, so the mix never changes
            mixed += [load.Request("POST", "/v1/imagine", key, quality_1)]
            mixed += [load.Request("GET", f"/v1/jobs/{job}", key)] * 8
            mixed += [load.Request("GET", "/v1/jobs?limit=20", key)]
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                samples.append(_memory(pid)[0])

        sampler = threading.Thread(target=sample)
        sampler.start()
        result = load.run(ours.url, mixed, args.rss_seconds, CONNECTIONS)
        stop.set()
        sampler.join()
        peak = _memory(pid)[1]
        load.run(floor.url, [load.Request("POST", "/", None, IMAGINE)], 5, CONNECTIONS)
        floor_peak = _memory(floor_pid)[1]
        done = (
            sqlite3.connect(Path(ours.env["APIFRAME_DATA_DIR"]) / "apiframe.db")
            .execute("SELECT count(*) FROM job WHERE status = 'succeeded'")
            .fetchone()[0]
        )
    # Jobs come and go, so single samples swing by tens of MB: compare the median RSS of the ten
    # seconds around the middle of the run with that of its last ten.
    half, tail = len(samples) // 2, min(10, len(samples) // 4)
    middle, last = (
        statistics.median(samples[half - tail // 2 : half + tail // 2]),
        statistics.median(samples[-tail:]),
    )
    growth = last - middle
    print(
        f"\nworker RSS, {args.rss_seconds:g} s of mixed load ({result.per_second:,.0f} answers/s,"
        f" {done} quality-1 imagines finished; 1 create : 8 polls : 1 list)"
    )
    print("| figure | service | floor | ratio | goal |\n|---|---|---|---|---|")
    row(
        "worker peak RSS",
        f"{peak:.0f} MB (idle {idle:.0f} MB)",
        f"{floor_peak:.0f} MB after 5 s of creates (idle {floor_idle:.0f} MB)",
        peak / floor_peak,
        "< 200 MB",
    )
    row(
        "RSS growth over the last half (medians of 10 s)", f"{growth:+.0f} MB ({middle:.0f} → {last:.0f} MB)",
        "–", 0.0, "none",
    )  # fmt: skip
    print("RSS every 5 s (MB): " + " ".join(f"{s:.0f}" for s in samples[::5]))


def _times(db: Path) -> list[tuple[float, float]]:
    """(submit-to-processing, processing-to-done) seconds of every succeeded job."""
    parse = datetime.datetime.fromisoformat
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT created_at, started_at, completed_at FROM job WHERE status = 'succeeded'"
            " ORDER BY completed_at"
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


def bench_latency(args, work: Path) -> None:
    """Section 5: submit-to-processing latency and job time, one job at a time, at each quality."""
    with serving(work, "latency") as server:
        key = keys_of(server)[0]
        database = Path(server.env["APIFRAME_DATA_DIR"]) / "apiframe.db"
        host, port = server.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port))
        print()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="length of one load run")
    parser.add_argument("--repeat", type=int, default=3, help="alternations of service and floor")
    parser.add_argument("--history-jobs", type=int, default=1_000_000, help="jobs of the large account")
    parser.add_argument("--rss-seconds", type=float, default=60, help="length of the mixed load")
    parser.add_argument("--jobs", type=int, default=10, help="jobs a quality for the latency figures")
    parser.add_argument("--skip", default="", help="comma-separated: throughput,history,rss,latency,postgres")
    args = parser.parse_args()
    args.skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "throughput" not in args.skip:
            bench_throughput(args, work)
        if "history" not in args.skip:
            bench_history(args)
        if "rss" not in args.skip:
            bench_rss(args, work)
        if "latency" not in args.skip:
            bench_latency(args, work)


if __name__ == "__main__":
    main()
