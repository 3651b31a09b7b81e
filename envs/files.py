"""Atomic file writing, and lock files (:func:`file_lock`).

Every data file this package writes goes through :func:`atomic_path`: a file is written
under a temporary name beside its target and renamed into place, so a killed process
never leaves a half-written file that reads as data: readers see the old file or the
new one. (Logs, TensorBoard events and the RL learner's own CSV log are appended as
they go; nothing reads them back.)
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temporary_path(path: Path) -> Path:
    """The temporary name :func:`atomic_path` writes ``path`` under (same suffix)."""
    # Keep the suffix: np.savez appends .npz and savefig picks the format from it.
    return path.with_name(f"{path.stem}.tmp{path.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON atomically (non-JSON values as strings)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


@contextmanager
def file_lock(
    path: str | Path, wait: bool = False, on_wait: Callable[[], None] | None = None
) -> Iterator[bool]:
    """Hold an exclusive lock on the file ``path`` while the block runs.

    The lock is the operating system's (``flock``), so it is released when its holder
    exits or is killed; the file is only its handle and may be left behind.

    Args:
        path: The lock file (created if missing; its folder must exist).
        wait: Wait while another process holds it, instead of giving up at once.
        on_wait: Called once before waiting (e.g. to log that it waits).

    Yields:
        Whether the lock is held: ``False`` only when ``wait`` is off and another
        process holds it (the block then runs without it).
    """
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
        if not held and wait:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
            held = True
        yield held
