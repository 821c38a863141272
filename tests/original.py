"""A test client that speaks the original apiframe.ai API: Authorization header, task_id, POST /fetch."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
from flask.testing import FlaskClient
from PIL import Image

FINISHED = ("finished", "failed")
POLL_INTERVAL = 0.25  # the plan's rate limit (300 a minute) counts every poll, on a busy machine too


class Original:
    """Sends the key as ``Authorization: <key>`` (or ``Bearer <key>``) and polls with POST /fetch."""

    def __init__(self, client: FlaskClient, key: str, bearer: bool = False) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {key}" if bearer else key}

    def post(self, path: str, json: Any = None) -> Any:
        return self.client.post(path, json=json, headers=self.headers)

    def get(self, path: str) -> Any:
        return self.client.get(path, headers=self.headers)

    def submit(self, path: str, body: dict[str, Any]) -> str:
        """POST a create route; returns the new task's id."""
        response = self.post(path, body)
        assert response.status_code in (200, 202), response.get_json()
        return response.get_json()["task_id"]

    def fetch(self, task_id: str) -> dict[str, Any]:
        response = self.post("/fetch", {"task_id": task_id})
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def wait(self, task_id: str, timeout: float = 30) -> dict[str, Any]:
        """Poll POST /fetch until the task is finished or failed."""
        deadline = time.monotonic() + timeout
        while (task := self.fetch(task_id))["status"] not in FINISHED:
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} still {task['status']} after {timeout}s")
            time.sleep(POLL_INTERVAL)
        return task

    def run(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Submit and wait: the finished (or failed) task."""
        return self.wait(self.submit(path, body))

    def image(self, url: str) -> Image.Image:
        """One of this service's images (served without a key), decoded."""
        response = self.client.get(url.removeprefix("http://images.test"))
        assert response.status_code == 200, url
        return Image.open(io.BytesIO(response.data)).convert("RGB")


def difference(a: Image.Image, b: Image.Image, size: tuple[int, int] = (64, 64)) -> float:
    """Mean absolute pixel difference of two images at a small common size (0-255)."""
    small = [np.asarray(image.resize(size, Image.Resampling.BOX), float) for image in (a, b)]
    return float(np.abs(small[0] - small[1]).mean())


def fine_detail(image: Image.Image) -> float:
    """Mean absolute Laplacian of the luma: how much fine detail (edges, texture) an image has."""
    luma = np.asarray(image.convert("L"), float)
    neighbours = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:]
    return float(np.abs(4 * luma[1:-1, 1:-1] - neighbours).mean())
