"""The shipped nginx site (deploy/nginx/apiframe.conf) run for real, Debian's nginx in front of gunicorn.

The site is used as shipped, but for what must change to run on loopback: its listen addresses, its
upstream servers and its certificate paths (each replacement is checked, so a changed site fails here
rather than go untested).
"""

from __future__ import annotations

import re
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests

from certificates import self_signed
from servers import ROOT, Server, cli, environment, free_port

NGINX = Path("/usr/sbin/nginx")
SITE = ROOT / "deploy" / "nginx" / "apiframe.conf"
MIME_TYPES = Path("/etc/nginx/mime.types")  # as Debian's own nginx.conf includes it in the http block


class Nginx:
    """nginx with the shipped site, its web nodes at ``upstream`` ports; https on ``url``."""

    def __init__(self, directory: Path, upstream: tuple[int, int]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port, http_port = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        _, certificate = self_signed(directory)
        self.certificate = certificate
        site = SITE.read_text()
        for shipped, here in [
            ("server 10.0.0.11:4100", f"server 127.0.0.1:{upstream[0]}"),
            ("server 10.0.0.12:4100", f"server 127.0.0.1:{upstream[1]}"),
            ("listen 80;", f"listen 127.0.0.1:{http_port};"),
            ("listen [::]:80;", ""),
            ("listen 443 ssl http2;", f"listen 127.0.0.1:{self.port} ssl http2;"),
            ("listen [::]:443 ssl http2;", ""),
            ("/etc/letsencrypt/live/api.example.com/fullchain.pem", certificate),
            ("/etc/letsencrypt/live/api.example.com/privkey.pem", str(directory / "server.key")),
        ]:
            assert shipped in site, f"the shipped site no longer has {shipped!r}: update this test"
            site = site.replace(shipped, here)
        (directory / "site.conf").write_text(site)
        (directory / "nginx.conf").write_text(
            f"""worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log;
events {{ worker_connections 256; }}
http {{
    include {MIME_TYPES};
    default_type application/octet-stream;
    access_log {directory}/access.log;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    include {directory}/site.conf;
}}
"""
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> Nginx:
        command = [str(NGINX), "-p", str(self.directory), "-c", str(self.directory / "nginx.conf")]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr  # the shipped site passes nginx's own check
        self.process = subprocess.Popen([*command, "-g", "daemon off;"], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(self.url, verify=self.certificate, timeout=1, allow_redirects=False)
                return self
            except requests.ConnectionError:
                assert self.process.poll() is None, self.process.stderr.read().decode()
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful
            self.process.wait(timeout=10)

    def requests_to(self, path: str) -> int:
        """How many requests nginx logged for ``path``, once it has logged one: nginx writes a request's
        line after its answer has gone, so a client can read the log before it is there."""
        deadline = time.monotonic() + 5
        while True:
            log = (self.directory / "access.log").read_text()
            count = len(re.findall(rf'"[A-Z]+ {re.escape(path)} HTTP', log))
            if count or time.monotonic() > deadline:
                return count
            time.sleep(0.02)

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, verify=self.certificate, timeout=10, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, verify=self.certificate, timeout=10, **kwargs)


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Iterator[tuple[Server, str]]:
    """A web node behind a proxy, as deploy/apiframe.env runs it; jobs stay pending; an API key."""
    if not NGINX.exists():
        pytest.fail("nginx is missing: `make test` installs Debian's nginx package")
    data = tmp_path_factory.mktemp("nginx-web")
    env = environment(data, free_port(), APIFRAME_PROXY_FIX="1", APIFRAME_LOCAL_LATENCY="600")
    key = cli(env, "users", "create", "proxied@example.com", "--plan", "scale").strip().splitlines()[-1]
    server = Server(env, data / "gunicorn.log").start()
    yield server, key
    server.stop()


@pytest.fixture(scope="module")
def nginx(web, tmp_path_factory) -> Iterator[Nginx]:
    """nginx in front of the web node (as both of the site's upstream servers)."""
    port = int(web[0].env["PORT"])
    proxy = Nginx(tmp_path_factory.mktemp("nginx"), (port, port)).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def no_answer(tmp_path_factory) -> Iterator[Nginx]:
    """nginx whose web nodes are all down."""
    proxy = Nginx(tmp_path_factory.mktemp("nginx-down"), (free_port(), free_port())).start()
    yield proxy
    proxy.stop()


def test_the_api_and_its_event_streams_go_through(web, nginx):
    _, key = web
    headers = {"X-API-Key": key}
    job = nginx.post("/v1/imagine", json={"prompt": "a harbour at dawn"}, headers=headers)
    assert job.status_code == 202, job.text
    job_id = job.json()["job"]["id"]
    assert job.json()["job"]["status"] == "pending"
    with requests.get(
        f"{nginx.url}/v1/jobs/{job_id}/events", headers=headers, verify=nginx.certificate, stream=True,
        timeout=10,
    ) as stream:
        assert stream.status_code == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
        lines = stream.iter_lines(decode_unicode=True)
        started = time.monotonic()
        assert next(line for line in lines if line.startswith("event:")) == "event: status"
        assert time.monotonic() - started < 5  # each event as it comes, not when nginx's buffer fills


def test_an_openai_stream_goes_through_as_it_is_sent(web, nginx):
    _, key = web
    with requests.post(
        f"{nginx.url}/v1/images/generations", json={"prompt": "a heron", "stream": True},
        headers={"Authorization": f"Bearer {key}"}, verify=nginx.certificate, stream=True, timeout=10,
    ) as stream:  # fmt: skip
        assert stream.status_code == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
        # the job never ends (its latency is 600 s): this line comes at once, or nginx holds it in its buffer
        assert next(stream.iter_lines(decode_unicode=True)) == ": waiting for the images"


def test_a_prefix_a_client_sends_does_not_reach_the_app(nginx):
    """The web node trusts one proxy's X-Forwarded-* headers (APIFRAME_PROXY_FIX=1): nginx must set or clear
    each, or a client's own would move the console's links and redirects elsewhere."""
    response = nginx.get("/", headers={"X-Forwarded-Prefix": "//evil.example"}, allow_redirects=False)
    assert response.status_code == 302 and response.headers["Location"] == "/console/"
    login = nginx.get("/login", headers={"X-Forwarded-Prefix": "//evil.example"})
    assert "evil.example" not in login.text


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/v1/imagine", "PAYLOAD_TOO_LARGE"),
        ("/images/abc/grid.png", "PAYLOAD_TOO_LARGE"),  # a file extension: no MIME type of its own
        ("/v1/images/generations", "payload_too_large"),
    ],
)
def test_nginxs_own_413_is_json(nginx, path, code):
    response = nginx.post(path, data=b"x" * (1024 * 1024 + 1), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("path", ["/v1/jobs", "/images/abc/grid.png", "/static/console.css"])
def test_with_no_web_node_up_nginx_answers_502_in_json(no_answer, path):
    response = no_answer.get(path)
    assert response.status_code == 502 and response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "BAD_GATEWAY"


def test_openais_sdk_does_not_send_a_create_again_after_nginxs_own_502(no_answer):
    """Its job may have been made all the same: the SDK would make and bill another."""
    client = openai.OpenAI(
        api_key="ak_live_unused",
        base_url=f"{no_answer.url}/v1",
        max_retries=2,
        http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=no_answer.certificate)),
    )
    with pytest.raises(openai.APIStatusError) as caught:
        client.images.generate(prompt="a fox")
    assert caught.value.status_code == 502 and caught.value.response.headers["X-Should-Retry"] == "false"
    assert caught.value.response.json()["error"]["code"] == "bad_gateway"
    assert no_answer.requests_to("/v1/images/generations") == 1
