"""``--teacher human``: people answer through the labelling page.

The teacher renders each batch of pairs (:mod:`prefbench.envs.human.media`), posts them to
a label queue (:mod:`prefbench.envs.human.queue`), waits for answers up to a timeout and
returns them; unanswered pairs and "can't tell" answers are abstentions, and the run's
log says how many. Where several labellers answered a pair the label is the mean of
their decided answers. The page is served by ``prefbench label serve``, a separate
process: either side can be restarted without losing an answer or using one twice.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prefbench.envs.cache import cache_root
from prefbench.envs.data import ClipPairs, Labels
from prefbench.envs.files import atomic_path
from prefbench.envs.human.media import PairRenderer
from prefbench.envs.human.queue import LabelQueue, Query, query_id

#: The page shows a clip's frames only: a clip that ran past its episode's end would show
#: the final pose frozen, which a person need not read as "ended, worth 0".
ABSORBING_UNSHOWN = (
    "the labelling page cannot show segments that run past a termination; use "
    "--teacher human with reward.offset=min or mean, not absorbing"
)


def default_queue() -> Path:
    """``$PREFBENCH_LABEL_QUEUE``, else ``label-queue`` under the prefbench cache."""
    env = os.environ.get("PREFBENCH_LABEL_QUEUE")
    return Path(env) if env else cache_root() / "label-queue"


@dataclass(frozen=True)
class HumanSettings:
    """Where a human teacher's queries go and how long it waits.

    Attributes:
        queue: The label queue folder (the one ``prefbench label serve`` serves).
        timeout_s: Seconds to wait for a batch's answers before the rest abstain.
        poll_s: Seconds between looks at the queue.
        redundancy: Answers wanted per pair (several labellers; 1 by default).
    """

    queue: Path
    timeout_s: float = 600.0
    poll_s: float = 0.5
    redundancy: int = 1

    def __post_init__(self) -> None:
        if not (self.timeout_s >= 0 and np.isfinite(self.timeout_s)):
            raise ValueError(f"label timeout must be a finite number >= 0, got {self.timeout_s}")
        if not (self.poll_s > 0 and np.isfinite(self.poll_s)):
            raise ValueError(f"poll_s must be > 0, got {self.poll_s}")
        if self.redundancy < 1:
            raise ValueError(f"redundancy must be >= 1, got {self.redundancy}")


class HumanTeacher:
    """A teacher whose answers come from people (see the module docstring).

    Built by the registry with its generator (which draws the shown order of each pair);
    the run then calls :meth:`bind` with its queue and :meth:`use_renderer` with how its
    pairs are drawn, before the first :meth:`label`.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.run = ""
        self.settings: HumanSettings | None = None
        self.queue: LabelQueue | None = None
        self.renderer: PairRenderer | None = None
        self.logger = logging.getLogger("prefbench.human")
        self.abstained = 0

    def bind(self, run: str, settings: HumanSettings, logger: logging.Logger | None = None) -> None:
        """Post this run's queries (``run``: a name unique to it) to ``settings.queue``."""
        self.run, self.settings = run, settings
        self.queue = LabelQueue(settings.queue)
        if logger is not None:
            self.logger = logger

    def use_renderer(self, renderer: PairRenderer) -> None:
        """Draw the pairs with ``renderer`` from now on."""
        self.renderer = renderer

    def label(self, pairs: ClipPairs) -> Labels:
        """Ask people about every pair; wait up to the timeout; unanswered ones abstain."""
        if self.queue is None or self.settings is None or self.renderer is None:
            raise ValueError("the human teacher needs a queue and a renderer (bind, use_renderer)")
        if pairs.absorbing is not None and pairs.absorbing.any():
            raise ValueError(ABSORBING_UNSHOWN)
        n = len(pairs)
        swapped = self.rng.random(n) < 0.5
        returns = pairs.true_rewards.astype(np.float64).sum(axis=2)  # (N, 2)
        oracle = np.where(returns[:, 0] > returns[:, 1], 1.0, 0.0)
        oracle[returns[:, 0] == returns[:, 1]] = 0.5
        ids = [
            query_id(self.run, pairs.obs[i].tobytes() + pairs.acts[i].tobytes()) for i in range(n)
        ]
        queries = []
        for i, view in enumerate(self.renderer.render(pairs)):
            first, second = view.first, view.second
            if view.kind == "clips":
                first, second = (
                    self._write_media(f"{ids[i]}-{side}.webp", data)
                    for side, data in (("a", first), ("b", second))
                )
            queries.append(
                (
                    ids[i],
                    Query(
                        view.kind,
                        str(first),
                        str(second),
                        view.prompt,
                        bool(swapped[i]),
                        float(oracle[i]),
                    ),
                )
            )
        self.queue.post(self.run, queries, self.settings.redundancy)
        self._wait(ids)
        answers = self.queue.collect(self.run, ids)
        prefs = np.full(n, 0.5, np.float32)
        valid = np.zeros(n, dtype=bool)
        unanswered = cant_tell = 0
        for i, qid in enumerate(ids):
            given = answers[qid]
            decided = [p for p in given if p is not None]
            if decided:
                prefs[i], valid[i] = float(np.mean(decided)), True
            elif given:
                cant_tell += 1
            else:
                unanswered += 1
        self.abstained += n - int(valid.sum())
        if unanswered or cant_tell:
            self.logger.warning(
                'human labels: %d of %d pairs unanswered within %.0fs, %d "can\'t tell"; '
                "they count as abstentions",
                unanswered,
                n,
                self.settings.timeout_s,
                cant_tell,
            )
        return Labels(prefs, valid)

    def _write_media(self, name: str, data: bytes | str) -> str:
        assert self.queue is not None
        path = self.queue.media / name
        if not path.is_file():
            with atomic_path(path) as tmp:
                tmp.write_bytes(data if isinstance(data, bytes) else data.encode())
        return name

    def _wait(self, ids: list[str]) -> None:
        assert self.queue is not None and self.settings is not None
        ids = list(dict.fromkeys(ids))  # a pair asked twice in a batch is one query
        start = last_note = time.monotonic()
        self.logger.info(
            "human labels: %d pairs posted to %s; serve them with `prefbench label serve "
            "--queue %s`",
            len(ids),
            self.settings.queue,
            self.settings.queue,
        )
        while True:
            done = self.queue.answered(ids)
            waited = time.monotonic() - start
            if done >= len(ids) or waited >= self.settings.timeout_s:
                return
            if time.monotonic() - last_note >= 30:
                last_note = time.monotonic()
                self.logger.info(
                    "human labels: %d of %d answered after %.0fs", done, len(ids), waited
                )
            time.sleep(min(self.settings.poll_s, self.settings.timeout_s - waited))
