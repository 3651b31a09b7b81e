"""Where prefbench keeps what it builds once and reuses (scorers, tokenizers, base models).

``PREFBENCH_CACHE`` when set, else ``~/.cache/prefbench``. Entries are keyed by their
settings, so a changed setting builds a new entry beside the old one.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "PREFBENCH_CACHE"


def cache_root() -> Path:
    """The cache's root folder (not created)."""
    value = os.environ.get(ENV_VAR)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "prefbench"


def cache_dir(kind: str) -> Path:
    """The folder of one kind of entry (``text``, ``lm``...), created if missing."""
    path = cache_root() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path
