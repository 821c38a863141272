"""The README's quick start, run literally with bash against `make run`, as a new user would."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from servers import ROOT, environment, free_port

READY = "APIFrame is ready at"


def quick_start() -> str:
    """The shell block of the README's Quick start section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, "the Quick start section has no ```sh block"
    return match.group(1)


class MakeRun:
    """`make run` in its own process group, its output collected line by line."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        # The venv is the one running these tests: make is told it is up to date rather than reinstall it.
        self.process = subprocess.Popen(
            ["make", "--old-file=.venv/bin/.runtime", "run", f"PORT={port}"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """The first output line containing ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"make run never printed {text!r}:\n{''.join(self.lines)[-3000:]}")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def make_run(tmp_path):
    port = free_port()
    env = environment(tmp_path / "data", port)
    del env["APIFRAME_ALLOW_PRIVATE_URLS"]  # a new install's settings: nothing but the port and data dir
    server = MakeRun(env, port)
    yield server, env, port
    server.stop()


def test_the_readme_quick_start_runs_as_written_on_a_free_account(make_run):
    server, env, port = make_run
    assert f"http://localhost:{port}" in server.wait_for(READY)
    console = server.wait_for("Web console:")
    assert f"http://localhost:{port}/signup" in console
    assert "users create" in server.wait_for("flask --app app users create")
    script = quick_start()
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    done = [json.loads(line[len("data: ") :]) for line in out.splitlines() if line.startswith("data: {")]
    finished = [job for job in done if "type" in job]  # the done events carry whole jobs
    assert [job["type"] for job in finished] == ["imagine", "upscale", "variation", "describe"]
    assert all(job["status"] == "succeeded" for job in finished), finished
    assert len(finished[-1]["descriptions"]) == 4
    assert "progress" in out and "RATE_LIMITED" not in out and "INSUFFICIENT_CREDITS" not in out
    account = json.loads(out.strip().splitlines()[-1])["account"]
    assert account["plan"] == "free" and account["credits"] == {"remaining": 10, "total": 50}
