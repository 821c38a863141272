"""The benchmarks' load generator: wrk (Debian's package), driven by a small Lua script.

Every figure that compares the service with the bare-Flask floor runs both through ``run`` with the
same connections, threads and duration, so the load generator costs both sides the same.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

WRK = shutil.which("wrk")

_SCRIPT = """
local requests = %(requests)s
local count = #requests
local n = 0
local started = 0
setup = function(thread)
  started = started + 1
  thread:set("first", started * 7919)
end
init = function(args)
  n = first or 0
end
request = function()
  n = n + 1
  local r = requests[(n %% count) + 1]
  return wrk.format(r[1], r[2], r[3], r[4])
end
done = function(summary, latency, _)
  local errors = summary.errors
  io.write(string.format(
    "RESULT {\\"requests\\": %%d, \\"micros\\": %%d, \\"non2xx\\": %%d, \\"errors\\": %%d, " ..
    "\\"p50\\": %%d, \\"p99\\": %%d}\\n",
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Request:
    """One request wrk sends in turn with the others."""

    method: str
    path: str
    key: str | None = None
    body: bytes | None = None

    def lua(self) -> str:
        headers = {"Content-Type": "application/json"} if self.body is not None else {}
        if self.key:
            headers["X-API-Key"] = self.key
        head = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items())
        body = _lua_string(self.body.decode()) if self.body is not None else "nil"
        return f"{{{_lua_string(self.method)}, {_lua_string(self.path)}, {{{head}}}, {body}}}"


@dataclass
class Result:
    """What one wrk run measured: answers per second (2xx only), latency percentiles, failures."""

    per_second: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    errors: int


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for our ASCII text


def run(url: str, requests: list[Request], seconds: float, connections: int = 8, threads: int = 1) -> Result:
    """Send ``requests`` in turn over ``connections`` keep-alive connections for ``seconds``."""
    if WRK is None:
        raise SystemExit("the benchmarks need wrk: apt-get install wrk")
    script = _SCRIPT % {"requests": "{" + ", ".join(r.lua() for r in requests) + "}"}
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as file:
        file.write(script)
        file.flush()
        out = subprocess.run(
            [
                WRK,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                file.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    figures = json.loads(line[len("RESULT ") :])
    ok = figures["requests"] - figures["non2xx"]
    return Result(
        per_second=ok / (figures["micros"] / 1e6),
        p50_ms=figures["p50"] / 1000,
        p99_ms=figures["p99"] / 1000,
        non2xx=figures["non2xx"],
        errors=figures["errors"],
    )
