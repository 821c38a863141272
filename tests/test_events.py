"""Job events over SSE: GET /v1/jobs/:id/events and GET /tasks/:task_id/events, over real HTTP on loopback."""

from __future__ import annotations

import json
import queue
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

import accounts
from conftest import wait_until
from servers import Server, cli, environment, free_port


@pytest.fixture(autouse=True)
def quick(settings):
    """Events come at once in tests: the watcher reads the jobs' rows every 50 ms, heartbeats every 0.3 s."""
    settings.update(EVENT_POLL_INTERVAL=0.05, EVENT_HEARTBEAT=0.3)


@pytest.fixture
def server(live):
    """The live app, its URL, and a function making accounts on it (a key per call)."""
    app, live_server = live
    counter = iter(range(1, 1000))

    def key(plan: str = "scale") -> str:
        with app.app_context():
            return accounts.create(f"events{next(counter)}@example.com", plan=plan)[1]

    return app, live_server.url, key


class Stream:
    """One open event stream, read on a thread: its events (and heartbeat comments) in a queue."""

    def __init__(self, url: str, key: str, headers: dict[str, str] | None = None) -> None:
        headers = {"X-API-Key": key, **(headers or {})}
        self.response = requests.get(url, headers=headers, stream=True, timeout=20)
        self.items: queue.Queue[dict[str, Any] | None] = queue.Queue()
        if self.response.status_code == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        event: dict[str, Any] = {}
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line == "":
                    if event:
                        self.items.put(event)
                    event = {}
                elif line.startswith(":"):
                    self.items.put({"comment": line[1:].strip()})
                else:
                    field, _, value = line.partition(": ")
                    event[field] = json.loads(value) if field == "data" else value
        except (requests.RequestException, AttributeError):  # closed by the test while reading
            pass
        self.items.put(None)  # the server closed the stream

    def next(self, timeout: float = 10) -> dict[str, Any] | None:
        """The next event (comments and the retry field skipped), or None once the stream has closed."""
        deadline = time.monotonic() + timeout
        while True:
            item = self.items.get(timeout=max(0.0, deadline - time.monotonic()))
            if item is None or "event" in item:
                return item

    def rest(self, timeout: float = 20) -> list[dict[str, Any]]:
        """Every event until the server closes the stream."""
        events = []
        while (item := self.next(timeout)) is not None:
            events.append(item)
        return events

    def close(self) -> None:
        self.response.close()


@pytest.fixture
def streams() -> Iterator[list[Stream]]:
    """Streams a test opened, closed after it."""
    opened: list[Stream] = []
    yield opened
    for stream in opened:
        stream.close()


def open_stream(streams: list[Stream], url: str, key: str, **kwargs: Any) -> Stream:
    stream = Stream(url, key, **kwargs)
    streams.append(stream)
    return stream


def create(url: str, key: str, **body: Any) -> dict[str, Any]:
    response = requests.post(
        f"{url}/v1/imagine", json={"prompt": "a fox", "quality": 0.25, **body}, headers={"X-API-Key": key}
    )
    assert response.status_code == 202, response.text
    return response.json()["job"]


def get_job(url: str, key: str, job_id: str) -> dict[str, Any]:
    return requests.get(f"{url}/v1/jobs/{job_id}", headers={"X-API-Key": key}, timeout=5).json()["job"]


def test_a_job_streams_its_status_and_progress_then_the_finished_job(server, streams):
    app, url, make_key = server
    key = make_key()
    app.config["LOCAL_LATENCY"] = 1.5
    job = create(url, key)
    stream = open_stream(streams, f"{url}/v1/jobs/{job['id']}/events", key)
    assert stream.response.headers["Content-Type"].startswith("text/event-stream")
    assert stream.response.headers["Cache-Control"] == "no-cache"
    assert stream.response.headers["X-RateLimit-Limit"] == "3000"  # the reads bucket of the scale plan
    events = stream.rest()
    names = [event["event"] for event in events]
    assert names[0] == "status" and names[-2:] == ["status", "done"]
    assert "progress" in names and set(names) == {"status", "progress", "done"}
    statuses = [event["data"]["status"] for event in events if event["event"] == "status"]
    assert statuses[-1] == "succeeded" and "processing" in statuses
    progress = [event["data"]["progress"] for event in events if event["event"] == "progress"]
    assert progress == sorted(progress) and 0 < max(progress) < 100 and len(set(progress)) >= 3
    assert any("etaSeconds" in event["data"] for event in events if event["event"] == "progress")
    assert all(event["data"]["id"] == job["id"] for event in events[:-1])
    assert events[-1]["data"] == get_job(url, key, job["id"])  # done carries the full job object
    assert events[-1]["data"]["status"] == "succeeded" and len(events[-1]["data"]["imageUrls"]) == 4
    assert all(event["id"] for event in events)


def test_a_finished_job_sends_done_at_once(server, streams):
    _, url, make_key = server
    key = make_key()
    job = create(url, key)
    wait_until(lambda: get_job(url, key, job["id"])["status"] == "succeeded", what="the job")
    started = time.monotonic()
    events = open_stream(streams, f"{url}/v1/jobs/{job['id']}/events", key).rest()
    assert time.monotonic() - started < 2
    assert [event["event"] for event in events] == ["done"]
    assert events[0]["data"] == get_job(url, key, job["id"])


def test_waiting_jobs_stream_their_place_in_the_queue(server, streams):
    app, url, make_key = server
    app.extensions["apiframe.pool"].stop()  # nothing runs: the jobs wait
    key = make_key()
    first, second = create(url, key), create(url, key)
    stream = open_stream(streams, f"{url}/v1/jobs/{second['id']}/events", key)
    status, progress = stream.next(), stream.next()
    assert status["event"] == "status" and status["data"] == {"id": second["id"], "status": "pending"}
    assert progress["event"] == "progress"
    assert progress["data"] == {"id": second["id"], "progress": 0, "queuePosition": 2}
    assert progress["id"] == "pending.0.2"
    requests.post(f"{url}/v1/jobs/{first['id']}/cancel", headers={"X-API-Key": key})
    moved = stream.next()
    assert moved["event"] == "progress" and moved["data"]["queuePosition"] == 1
    requests.post(f"{url}/v1/jobs/{second['id']}/cancel", headers={"X-API-Key": key})
    assert [event["event"] for event in stream.rest()] == ["status", "done"]


def test_idle_streams_get_a_heartbeat_comment(server, streams):
    app, url, make_key = server
    app.extensions["apiframe.pool"].stop()
    key = make_key()
    job = create(url, key)
    stream = open_stream(streams, f"{url}/v1/jobs/{job['id']}/events", key)
    items = [stream.items.get(timeout=5) for _ in range(4)]  # retry, status, progress, then a heartbeat
    assert {"comment": "keep-alive"} in items


def test_last_event_id_resumes_where_the_client_left_off(server, streams):
    app, url, make_key = server
    app.extensions["apiframe.pool"].stop()
    key = make_key()
    job = create(url, key)
    headers = {"Last-Event-ID": "pending.0.1"}  # the client saw everything up to now
    stream = open_stream(streams, f"{url}/v1/jobs/{job['id']}/events", key, headers=headers)
    with pytest.raises(queue.Empty):
        stream.next(timeout=1)  # nothing new to tell
    requests.post(f"{url}/v1/jobs/{job['id']}/cancel", headers={"X-API-Key": key})
    events = stream.rest()
    assert [event["event"] for event in events] == ["status", "done"]
    assert events[0]["data"]["status"] == "cancelled"
    garbled = open_stream(streams, f"{url}/v1/jobs/{job['id']}/events", key, headers={"Last-Event-ID": "x"})
    assert [event["event"] for event in garbled.rest()] == ["done"]  # as for any client new to the job


def test_the_original_api_streams_tasks_in_their_shape(server, streams):
    app, url, make_key = server
    key = make_key()
    app.config["LOCAL_LATENCY"] = 1.0
    task_id = requests.post(
        f"{url}/imagine", json={"prompt": "a fox", "aspect_ratio": "1:1"}, headers={"Authorization": key}
    ).json()["task_id"]
    events = open_stream(streams, f"{url}/tasks/{task_id}/events", key).rest()
    statuses = [event["data"]["status"] for event in events if event["event"] == "status"]
    assert statuses[-1] == "finished" and set(statuses) <= {"pending", "staged", "processing", "finished"}
    percentages = [event["data"]["percentage"] for event in events if event["event"] == "progress"]
    assert percentages and all(isinstance(value, str) for value in percentages)
    done = events[-1]
    assert done["event"] == "done" and done["data"]["task_id"] == task_id
    fetched = requests.post(f"{url}/fetch", json={"task_id": task_id}, headers={"Authorization": key}).json()
    assert done["data"] == fetched and fetched["status"] == "finished"


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        ("/v1/jobs/{other}/events", True, 404, "NOT_FOUND"),
        ("/v1/jobs/{unknown}/events", True, 404, "NOT_FOUND"),
        ("/v1/jobs/not-a-uuid/events", True, 400, "VALIDATION_ERROR"),
        ("/v1/jobs/{other}/events", False, 401, "UNAUTHORIZED"),
        ("/tasks/not-a-uuid/events", True, 400, "VALIDATION_ERROR"),
    ],
)
def test_bad_streams_get_json_errors(server, path, headers, status, code):
    _, url, make_key = server
    other = create(url, make_key())["id"]  # another account's job
    target = url + path.format(other=other, unknown=uuid.uuid4())
    response = requests.get(target, headers={"X-API-Key": make_key()} if headers else {}, timeout=5)
    assert response.status_code == status and response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"]["code"] == code
    if "tasks" in path:
        assert "task_id" in body["message"]


def test_streams_are_capped_per_key_and_per_process(server, streams):
    app, url, make_key = server
    app.extensions["apiframe.pool"].stop()  # jobs stay pending, so streams stay open
    app.extensions["apiframe.events"].max_per_key = 2
    app.extensions["apiframe.events"].max_streams = 3
    first, second, third = make_key(), make_key(), make_key()
    job = create(url, first)["id"]
    for _ in range(2):
        assert open_stream(streams, f"{url}/v1/jobs/{job}/events", first).response.status_code == 200
    refused = open_stream(streams, f"{url}/v1/jobs/{job}/events", first).response
    assert refused.status_code == 429 and 5 <= int(refused.headers["Retry-After"]) <= 60
    error = refused.json()["error"]
    assert error["code"] == "RATE_LIMITED" and "2 event streams" in error["message"]
    other = create(url, second)["id"]
    assert open_stream(streams, f"{url}/v1/jobs/{other}/events", second).response.status_code == 200
    full = open_stream(streams, f"{url}/v1/jobs/{create(url, third)['id']}/events", third).response
    assert full.status_code == 429
    assert "This server already has 3 event streams" in full.json()["error"]["message"]
    assert requests.get(f"{url}/v1/account", headers={"X-API-Key": first}, timeout=5).status_code == 200
    streams[0].close()  # a client goes away: its slot is free once the next heartbeat fails to reach it
    wait_until(lambda: app.extensions["apiframe.events"].open_streams == 2, what="the slot to be released")
    assert open_stream(streams, f"{url}/v1/jobs/{job}/events", first).response.status_code == 200


def test_a_revoked_keys_streams_end_at_once(server, streams):
    app, url, make_key = server
    app.extensions["apiframe.pool"].stop()  # the job stays pending: only the revocation can end its streams
    app.config["EVENT_HEARTBEAT"] = 30.0  # and no heartbeat comes first
    key, kept = make_key(), make_key()
    job, other = create(url, key)["id"], create(url, kept)["id"]
    revoked = [open_stream(streams, f"{url}{path}/{job}/events", key) for path in ("/v1/jobs", "/tasks")]
    live = open_stream(streams, f"{url}/v1/jobs/{other}/events", kept)
    for stream in [*revoked, live]:
        assert [stream.next()["event"], stream.next()["event"]] == ["status", "progress"]
    assert "revoked" in app.test_cli_runner().invoke(args=["keys", "revoke", key[:16]]).output
    started = time.monotonic()
    assert all(stream.rest(timeout=5) == [] for stream in revoked)  # closed, as at the time limit
    assert time.monotonic() - started < 2
    wait_until(lambda: app.extensions["apiframe.events"].open_streams == 1, what="the slots to be released")
    requests.post(f"{url}/v1/jobs/{other}/cancel", headers={"X-API-Key": kept}, timeout=5)
    assert [event["event"] for event in live.rest()] == ["status", "done"]  # another key's stream went on


def test_a_stream_outlives_a_short_database_outage(on_postgres, server, streams, refusing):
    app, url, make_key = server
    app.extensions["apiframe.pool"].stop()  # the job stays pending until the test cancels it
    key = make_key()
    job = create(url, key)["id"]
    stream = open_stream(streams, f"{url}/v1/jobs/{job}/events", key)
    assert [stream.next()["event"], stream.next()["event"]] == ["status", "progress"]
    refusing()  # the key-change listener drops too: each heartbeat asks the database about the key
    wait_until(lambda: app.extensions["apiframe.keys"].version() is None, what="the listener to drop")
    time.sleep(1)  # heartbeats every 0.3 s
    refusing(False)
    assert requests.post(f"{url}/v1/jobs/{job}/cancel", headers={"X-API-Key": key}, timeout=5).ok
    assert [event["event"] for event in stream.rest()] == ["status", "done"]


def test_a_graceful_stop_of_gunicorn_ends_open_streams_at_once(tmp_path):
    env = environment(tmp_path / "data", free_port(), APIFRAME_LOCAL_LATENCY="600")  # the job never ends
    key = cli(env, "users", "create", "stop@example.com").strip().splitlines()[-1]
    server = Server(env, tmp_path / "server.log").start()
    try:
        job = create(server.url, key)
        stream = Stream(f"{server.url}/v1/jobs/{job['id']}/events", key)
        assert stream.next()["event"] == "status"
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
        assert time.monotonic() - started < 10  # not gunicorn's 20 s graceful timeout
        stream.rest(timeout=5)  # the server closed the stream
    finally:
        server.stop()
