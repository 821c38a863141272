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


def run_gunicorn(env: dict[str, str], timeout: float = 30) -> tuple[int | None, str]:
    """Run gunicorn on ``app:create_app()`` until it exits by itself: its status and its output.

    The status is None if it still ran after ``timeout`` seconds; it is then killed, with its workers.
    """
    process = subprocess.Popen(
        [str(BIN / "gunicorn"), "--config", str(ROOT / "gunicorn.conf.py"), "app:create_app()"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        return process.wait(timeout=timeout), process.communicate()[0]
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return None, process.communicate()[0]


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


class Worker:
    """``flask --app app worker``: the job pool and webhook sender with no HTTP server."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> Worker:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "flask"), "--app", "app", "worker"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while b"job threads" not in self.log.read_bytes():  # the pool has started
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` and wait for the process to end; returns its exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise


class MotoS3:
    """moto's standalone server: a real S3 HTTP endpoint on loopback."""

    CREDENTIALS = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{self.url}/", timeout=1)
                return
            except (requests.ConnectionError, requests.Timeout):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
