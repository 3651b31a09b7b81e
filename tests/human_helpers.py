"""A scripted labeller and a served queue, shared by the human-teacher tests."""

from __future__ import annotations

import json
import sqlite3
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from prefbench.benchmarks.label_server import LabelServer
from prefbench.envs.data import ClipPairs
from prefbench.envs.human.queue import LabelQueue


def oracle_choice(queue_dir: Path, query: str) -> str:
    """The button a labeller who answers like the oracle presses for ``query``.

    It reads the hidden oracle answer and the shown order from the queue's file, as a
    person would see which clip is better.
    """
    with sqlite3.connect(queue_dir / "queue.sqlite") as db:
        oracle, swapped = db.execute(
            "SELECT oracle, swapped FROM queries WHERE id=?", (query,)
        ).fetchone()
    if oracle == 0.5:
        return "equal"
    first_better = oracle == 1.0
    return "left" if first_better != bool(swapped) else "right"


def request(url: str, body: dict | None = None, data: bytes | None = None, headers=None):
    """``(status, JSON body)`` of a GET (or a POST with ``body``/``data``)."""
    if body is not None:
        data = json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if "json" in r.headers["Content-Type"] else raw
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Served:
    """A label server on a free local port, in a thread (a context manager)."""

    def __init__(self, folder: Path, host: str = "127.0.0.1", token: str = "") -> None:
        self.server = LabelServer(LabelQueue(folder), host, 0, token)
        port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class ScriptedLabeller(threading.Thread):
    """Answers every waiting pair like the oracle through the JSON API until stopped."""

    def __init__(self, base: str, queue_dir: Path, name: str = "script") -> None:
        super().__init__(daemon=True)
        self.base, self.queue_dir, self.name = base, queue_dir, name
        self.stop = threading.Event()
        self.answered = 0

    def run(self) -> None:
        while not self.stop.is_set():
            _, got = request(f"{self.base}/api/next?labeller={self.name}")
            query = got["query"]
            if query is None:
                self.stop.wait(0.05)
                continue
            choice = oracle_choice(self.queue_dir, query["id"])
            status, _ = request(
                f"{self.base}/api/answer",
                {"query": query["id"], "labeller": self.name, "choice": choice},
            )
            self.answered += status == 200


def swinging_pair(steps: int = 30) -> ClipPairs:
    """One Pendulum pair: the same swing, forwards and backwards (true rewards differ)."""
    angle = np.linspace(0.0, 3.0, steps)
    obs = np.stack([np.cos(angle), np.sin(angle), np.zeros(steps)], -1).astype(np.float32)
    both = np.stack([obs, obs[::-1]])[None]
    rewards = -np.stack([angle, angle[::-1] * 2.0])[None].astype(np.float32)
    return ClipPairs(both, np.zeros((1, 2, steps, 1), np.float32), rewards)
