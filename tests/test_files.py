"""The shared file helpers: atomic writes and lock files."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from prefbench.envs.files import atomic_path, file_lock


def test_file_lock_is_refused_while_held_and_free_after(tmp_path):
    path = tmp_path / ".lock"
    with file_lock(path) as held:
        assert held
        with file_lock(path) as again:
            assert not again
    with file_lock(path) as held:
        assert held


def test_file_lock_can_wait_for_its_holder(tmp_path):
    path = tmp_path / ".lock"
    order = []
    with file_lock(path) as held:
        assert held

        def waiter() -> None:
            with file_lock(path, wait=True, on_wait=lambda: order.append("waits")) as got:
                order.append(("waiter", got))

        thread = threading.Thread(target=waiter)
        thread.start()
        deadline = time.monotonic() + 10
        while "waits" not in order and time.monotonic() < deadline:
            time.sleep(0.01)
        order.append(("holder done", True))
    thread.join(timeout=10)
    assert order == ["waits", ("holder done", True), ("waiter", True)]


def test_file_lock_of_a_killed_process_is_released(tmp_path):
    path = tmp_path / ".lock"
    code = (
        "import sys, time\n"
        "from prefbench.envs.files import file_lock\n"
        "with file_lock(sys.argv[1]) as held:\n"
        "    print(held, flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"True"
        with file_lock(path) as held:
            assert not held
        child.kill()
        child.wait(timeout=10)
        with file_lock(path) as held:
            assert held
    finally:
        child.kill()
        child.wait(timeout=10)


def test_atomic_path_keeps_the_old_file_on_an_exception(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt"]
