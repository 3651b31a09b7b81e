"""The offline learners by id, each with its default ``Config``, and what every learner offers.

``bc`` and ``mle-filter`` are one learner (:class:`~prefbench.agents.offline.bc.BC`)
with different defaults: MLE with filtering is behaviour cloning of the top 10% of
episodes by return.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from prefbench.agents.offline import bc, dt, iql, rwr
from prefbench.envs.episodes import Episodes


class Learner(Protocol):
    """What an offline agent needs of its learner (every learner here is one).

    Attributes:
        updates: Gradient updates done.
        info: Settings resolved from the data (e.g. a target return), for the record.
    """

    updates: int
    info: dict[str, Any]

    def update(self) -> dict[str, float]:
        """One gradient step of every seed; returns scalar metrics."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue identically."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        ...


#: ``(data, action_low, action_high, config, seeds, device) -> learner``.
LearnerFactory = Callable[[Episodes, np.ndarray, np.ndarray, Any, Sequence[int], str], Learner]


@dataclass(frozen=True)
class LearnerEntry:
    """A learner class and its default settings.

    Attributes:
        cls: Builds the learner.
        config: Its default ``Config`` (an agent's ``learner`` must be of this type).
    """

    cls: LearnerFactory
    config: Any


#: Offline learners by id.
LEARNERS: dict[str, LearnerEntry] = {
    "bc": LearnerEntry(bc.BC, bc.Config()),
    "mle-filter": LearnerEntry(bc.BC, bc.FilteredConfig()),
    "rwr": LearnerEntry(rwr.RWR, rwr.Config()),
    "iql": LearnerEntry(iql.IQL, iql.Config()),
    "dt": LearnerEntry(dt.DecisionTransformer, dt.Config()),
}


def get_learner(learner_id: str) -> LearnerEntry:
    """The entry of ``learner_id``.

    Raises:
        ValueError: For an unknown id (the message lists the known ones).
    """
    if learner_id not in LEARNERS:
        raise ValueError(f"unknown learner {learner_id!r}; valid: {', '.join(LEARNERS)}")
    return LEARNERS[learner_id]
