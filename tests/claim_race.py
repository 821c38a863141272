"""Run by tests/test_claims.py in several processes: dispatchers on threads race to claim the same jobs.

Usage: python claim_race.py DATABASE_URL DATA_DIR GO_FILE THREADS. Prints "ready" once its threads hold
their connections, starts claiming on all of them when GO_FILE exists, then prints a JSON object with the
ids of the jobs this process claimed, on any of its threads.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from app import create_app
from models import db
from workers import JobPool


class RecordingPool(JobPool):
    """A pool whose dispatcher claims for real but records the jobs instead of running them."""

    def __init__(self, app) -> None:
        super().__init__(app)
        self.size = 10_000
        self.claimed: list[str] = []

    def _submit(self, key, token) -> None:
        with self._lock:
            self._running[key] = threading.Event()
        self.claimed.append(str(key))
        # As handing a job to a worker takes a moment, a process cannot claim them all before the
        # others, slow to wake on a loaded machine, begin: 300 jobs take one process's 4 threads 0.75 s.
        time.sleep(0.01)


def main() -> None:
    url, data_dir, go, threads = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    app = create_app({"DATABASE_URL": url, "DATA_DIR": data_dir, "START_WORKERS": False, "WAKEUP": False})
    pools = [RecordingPool(app) for _ in range(threads)]
    connected, start = threading.Barrier(threads + 1), threading.Event()

    def race(pool: RecordingPool) -> None:
        with app.app_context(), db.connection_context():
            db.execute_sql("SELECT 1")
            connected.wait()
            start.wait()
            pool._dispatch()

    workers = [threading.Thread(target=race, args=(pool,)) for pool in pools]
    for worker in workers:
        worker.start()
    connected.wait()
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    start.set()
    for worker in workers:
        worker.join()
    print(json.dumps({"claimed": [job for pool in pools for job in pool.claimed]}))


if __name__ == "__main__":
    main()
