"""The labelling page in a real browser (Debian's chromium driven by Playwright).

A missing browser or Playwright skips these tests with the reason, except under CI
(``CI=true``) or with ``PREFBENCH_REQUIRE_BROWSER=1``, where it fails them. ``make test`` installs
chromium where it can (as root, with apt).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from human_helpers import Served, oracle_choice, request, swinging_pair
from tiny import tiny_config

from prefbench.benchmarks.train import train
from prefbench.envs.human.queue import LabelQueue, Query, query_id

#: Flags for a headless chromium in a container with no network and no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where to save a picture of the page (resolved now: tests may change directory).
SCREENSHOT = (
    Path(os.environ["PREFBENCH_SCREENSHOT"]).resolve()
    if os.environ.get("PREFBENCH_SCREENSHOT")
    else None
)
#: The page's buttons by the answer they give.
BUTTONS = {
    "left": "Left is better",
    "right": "Right is better",
    "equal": "Equal",
    "cant_tell": "Can't tell",
}


def _chromium() -> str | None:
    return (
        os.environ.get("PREFBENCH_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    reason = ""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]')"
    exe = _chromium()
    if not reason and exe is None:
        reason = "no chromium on PATH (as root: apt-get install chromium)"
    if reason:
        if os.environ.get("CI") == "true" or os.environ.get("PREFBENCH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests are required here, but {reason}")
        pytest.skip(reason)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _open(browser, url: str, name: str):
    page = browser.new_page(viewport={"width": 1000, "height": 640})
    page.goto(url)
    page.fill("#labeller", name)
    page.press("#labeller", "Enter")  # a change event: the page starts labelling
    return page


def _shown(page, timeout_s: float) -> str:
    """The id of the pair the page shows, waiting up to ``timeout_s`` ("" if none)."""
    try:
        page.wait_for_function("document.body.dataset.query", timeout=timeout_s * 1000)
    except Exception:  # playwright's TimeoutError: nothing waiting yet
        return ""
    return page.evaluate("document.body.dataset.query")


def _label_like_the_oracle(
    page, queue_dir: Path, going_on: Callable[[], bool], after_click=None
) -> list[str]:
    """Click the oracle's button on every pair the page shows while ``going_on()``."""
    clicked: list[str] = []
    while going_on():
        query = _shown(page, 0.5)
        if not query:
            continue
        page.get_by_role("button", name=BUTTONS[oracle_choice(queue_dir, query)]).click()
        clicked.append(query)
        if after_click is not None:
            after_click(len(clicked))
    return clicked


def test_a_labeller_clicking_the_page_trains_the_oracle_runs_reward_model(browser, tmp_path):
    queue_dir = tmp_path / "queue"
    LabelQueue(queue_dir)
    human: dict = {}
    run = threading.Thread(
        target=lambda: human.update(
            train(
                tiny_config(
                    tmp_path / "runs",
                    teacher="human",
                    label_queue=str(queue_dir),
                    label_timeout=120,
                )
            )
        )
    )
    with Served(queue_dir) as served:
        page = _open(browser, served.base + "/", "ann")
        run.start()
        clicked = _label_like_the_oracle(page, queue_dir, run.is_alive)
        run.join()
        progress = page.locator("#progress").inner_text()
        page.close()
    oracle = train(tiny_config(tmp_path / "runs", teacher="oracle"))
    assert len(clicked) == len(set(clicked)) == human["labels_used"] == 40
    assert "answered 40" in progress and "ann" in progress
    # The clicks give the oracle's labels, so the reward model is the oracle run's: the
    # margin between the two accuracies is zero, not a tolerance.
    assert human["final_rm_accuracy"] == oracle["final_rm_accuracy"]
    if SCREENSHOT:  # the README's picture: PREFBENCH_SCREENSHOT=docs/label_page.png pytest ...
        _screenshot(browser, queue_dir, SCREENSHOT)


def _screenshot(browser, queue_dir: Path, out: Path) -> None:
    """A page showing one Pendulum pair, saved as ``out``."""
    from prefbench.envs.human.media import control_renderer
    from prefbench.envs.human.teacher import HumanSettings, HumanTeacher
    from prefbench.envs.tasks import get_task

    teacher = HumanTeacher(np.random.default_rng(1))
    teacher.bind("screenshot", HumanSettings(queue_dir, timeout_s=3, poll_s=0.2))
    teacher.use_renderer(control_renderer(get_task("pendulum")))
    with Served(queue_dir) as served:
        poster = threading.Thread(target=teacher.label, args=(swinging_pair(),))
        poster.start()
        page = _open(browser, served.base + "/", "ann")
        _shown(page, 5)
        page.wait_for_timeout(500)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        page.close()
        poster.join()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(queue_dir: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "prefbench.benchmarks.cli", "label", "serve"]
    proc = subprocess.Popen(
        [*cmd, "--queue", str(queue_dir), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=(queue_dir.parent / "server.log").open("a"),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if request(f"http://127.0.0.1:{port}/api/progress")[0] == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    log = (queue_dir.parent / "server.log").read_text()
    raise AssertionError(f"the label server did not start: {log}")


def test_killing_the_server_while_labelling_loses_and_doubles_no_answer(browser, tmp_path):
    queue_dir = tmp_path / "queue"
    queue = LabelQueue(queue_dir)
    ids = [query_id("run", bytes([i])) for i in range(12)]
    queue.post(
        "run",
        [
            (q, Query("text", f"good {i}", f"bad {i}", "Say it", bool(i % 2), 1.0))
            for i, q in enumerate(ids)
        ],
    )
    port = _free_port()
    server = [_start_server(queue_dir, port)]

    def kill_after(n: int) -> None:
        if n == 5:  # right after the click: the answer may be in flight
            server[0].send_signal(signal.SIGKILL)
            server[0].wait()
            server[0] = _start_server(queue_dir, port)

    page = _open(browser, f"http://127.0.0.1:{port}/", "ann")
    try:
        deadline = time.monotonic() + 120
        clicked = _label_like_the_oracle(
            page,
            queue_dir,
            lambda: queue.progress()["waiting"] > 0 and time.monotonic() < deadline,
            kill_after,
        )
    finally:
        page.close()
        server[0].kill()
        server[0].wait()
    assert len(clicked) >= 12 and set(clicked) == set(ids)
    rows = queue.answers()
    assert sorted(r["query"] for r in rows) == sorted(ids)  # each once, none lost
    assert all(r["labeller"] == "ann" and r["pref"] == 1.0 for r in rows)
    taken = queue.collect("run", ids)
    assert all(taken[q] == [1.0] for q in ids)
    assert all(v == [] for v in queue.collect("another run", ids).values())  # taken once
