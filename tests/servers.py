"""Helpers to run the service as users do: gunicorn and the flask CLI in real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(data_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment for a server or CLI process: only APIFRAME_* settings we choose."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("APIFRAME_")}
    env.update(
        PORT=str(port), HOST="127.0.0.1", APIFRAME_DATA_DIR=str(data_dir), APIFRAME_ALLOW_PRIVATE_URLS="true"
    )
    env.update(settings)
    return env


def cli(env: dict[str, str], *args: str) -> str:
    """Run ``flask --app app ARGS`` and return its stdout."""
    result = subprocess.run(
        [str(BIN / "flask"), "--app", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


class Server:
    """gunicorn serving ``app:create_app()`` with the project's gunicorn.conf.py."""

    def __init__(
        self, env: dict[str, str], log: Path, app: str = "app:create_app()", cwd: Path = ROOT
    ) -> None:
        self.env = env
        self.app = app
        self.cwd = cwd
        self.url = f"http://127.0.0.1:{env['PORT']}"
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> Server:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "gunicorn"), "--config", str(ROOT / "gunicorn.conf.py"), self.app],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"{self.url}/", timeout=1)
                return self
            except (requests.ConnectionError, requests.Timeout):  # not listening, or still booting
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if sig == signal.SIGKILL:
            time.sleep(0.2)  # let the orphaned workers notice

    def wait_for(self, key: str, job_id: str, statuses: tuple[str, ...], timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = requests.get(f"{self.url}/v1/jobs/{job_id}", headers={"X-API-Key": key}, timeout=5).json()[
                "job"
            ]
            if job["status"] in statuses:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job still {job['status']}")
            time.sleep(0.05)
