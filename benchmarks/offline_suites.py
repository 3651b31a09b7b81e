"""The offline suites: learned rewards beside true ones and zero/random controls.

Each dataset must be built first (``prefbench data make TASK``); scores are D4RL's
(``d4rl_score``: 0 a random policy, 100 the dataset's expert), so ``normalized_score`` is
``d4rl_score / 100``. Every learned-reward agent (``pref-*``) stands beside the same
learner on the true reward (the upper reference) and on zero and random rewards (the
controls that tell whether the learned reward adds anything).
"""

from __future__ import annotations

import dataclasses

from prefbench.agents.offline.rewards import RM_RETURN_SPEARMAN, RM_RETURN_SPEARMAN_TRUE_REWARD
from prefbench.benchmarks.suites import AgentEntry, Suite
from prefbench.envs.teachers import BPREF_TEACHERS

#: The offline learners with a reward (BC has none).
LEARNERS = ("dt", "rwr", "mle-filter", "iql")
#: A Decision Transformer sized for a CPU: the paper's (3 layers x 128) trains at about
#: 5 seed-updates/s on 2 cores; this one runs 5k updates with its evaluations in about
#: 3.5 minutes on one core (hopper-medium-replay; results/README.md).
DT_CPU = ("learner.n_embd=64", "learner.n_layer=2", "learner.warmup_steps=500")
#: ``metrics.csv`` columns copied into the records (NaN in cells run before the second
#: was logged).
RECORD_METRICS = (RM_RETURN_SPEARMAN, RM_RETURN_SPEARMAN_TRUE_REWARD)


def offline_agents(
    label_budgets: tuple[int, ...],
    learners: tuple[str, ...] = LEARNERS,
    dt_overrides: tuple[str, ...] = (),
    controls: tuple[str, ...] = ("zero", "random"),
    learned_overrides: tuple[str, ...] = (),
) -> tuple[AgentEntry, ...]:
    """BC, then each learner on the true and learned rewards and the ``controls``.

    ``learned_overrides`` go to the learned-reward agents only (``pref-*``).
    """
    out = [AgentEntry("bc")]
    for learner in learners:
        overrides = dt_overrides if learner == "dt" else ()
        out += [
            AgentEntry(learner, overrides=overrides),
            AgentEntry(
                f"pref-{learner}",
                label_budgets=label_budgets,
                overrides=(*overrides, *learned_overrides),
            ),
            *(AgentEntry(f"{c}-{learner}", overrides=overrides) for c in controls),
        ]
    return tuple(out)


#: The MLP learners on one HalfCheetah dataset: a CPU suite of about 15 minutes.
OFFLINE_HALFCHEETAH_CPU = Suite(
    name="offline-halfcheetah-cpu",
    description="about 15 minutes on 2 CPU cores: halfcheetah-medium-replay, 500 labels, "
    "BC, 10%-BC, RWR, IQL on true/learned/zero/random rewards, 3 seeds, 5k updates",
    tasks=("halfcheetah-medium-replay",),
    agents=offline_agents((500,), ("rwr", "mle-filter", "iql")),
    steps={"*": 5_000},
    seeds=3,
    eval_every=1_000,
    eval_episodes=5,
    accuracy_pairs=500,
    score="d4rl",
    record_metrics=RECORD_METRICS,
    # 2: learned rewards offset to a minimum of 0 (version 1: to a mean of 0); RWR weighs
    # by episode return at beta 0.5 (version 1: return-to-go at beta 1); DT uses ReLU.
    version=2,
)

#: The same on our Hopper dataset (built with ``prefbench data make hopper --algo sac``).
OFFLINE_HOPPER_CPU = dataclasses.replace(
    OFFLINE_HALFCHEETAH_CPU,
    name="offline-hopper-cpu",
    description="about 15 minutes on 2 CPU cores: hopper-medium-replay (data make --algo sac), "
    "500 labels, BC, 10%-BC, RWR, IQL on true/learned/zero/random rewards, 3 seeds, 5k updates",
    tasks=("hopper-medium-replay",),
)

#: The CPU suite: two medium-replay datasets (where the true-reward gate is judged) and a
#: medium-expert one, every learner on every reward source, 3 seeds. Hopper and Walker2d
#: data come from ``prefbench data make hopper --algo sac --behaviour-steps 120000
#: --snapshot-every 10000`` (Walker2d: 150000), HalfCheetah's from ``prefbench data make
#: halfcheetah``. Ten evaluation episodes: five left Hopper's final scores at the mercy of
#: the episodes' start states.
OFFLINE_MUJOCO_CPU = Suite(
    name="offline-mujoco-cpu",
    description="about 2 hours on 2 CPU cores: hopper/walker2d-medium-replay, "
    "halfcheetah-medium-expert, 500 labels, BC, 10%-BC, RWR, IQL, CPU-sized DT on "
    "true/learned/zero/random rewards, 3 seeds, 5k updates",
    tasks=("hopper-medium-replay", "walker2d-medium-replay", "halfcheetah-medium-expert"),
    agents=offline_agents((500,), dt_overrides=DT_CPU),
    steps={"*": 5_000},
    seeds=3,
    eval_every=1_000,
    eval_episodes=10,
    accuracy_pairs=500,
    score="d4rl",
    record_metrics=RECORD_METRICS,
)

#: Label budgets on the two medium-replay datasets: the learners that read a learned
#: reward step by step or by episode (10%-BC, RWR, IQL; DT is too slow here) at 100, 500
#: and 2,000 labels. Their true-reward and control references are offline-mujoco-cpu's.
OFFLINE_LABELS_CPU = dataclasses.replace(
    OFFLINE_MUJOCO_CPU,
    name="offline-labels-cpu",
    description="about 30 minutes on 2 CPU cores: hopper/walker2d-medium-replay, "
    "pref-mle-filter, pref-rwr, pref-iql at 100 / 500 / 2,000 labels, 3 seeds, 5k updates",
    tasks=("hopper-medium-replay", "walker2d-medium-replay"),
    agents=tuple(
        AgentEntry(f"pref-{learner}", label_budgets=(100, 500, 2000))
        for learner in ("mle-filter", "rwr", "iql")
    ),
)

#: The full grid: a GPU machine's job (the paper-sized DT, 100k updates, 5 seeds).
OFFLINE_MUJOCO = Suite(
    name="offline-mujoco",
    description="hopper/walker2d/halfcheetah x medium, medium-replay, medium-expert, "
    "{100, 500, 2000} labels, every learner and control, 5 seeds, 100k updates (a GPU's job)",
    tasks=tuple(
        f"{env}-{quality}"
        for env in ("hopper", "walker2d", "halfcheetah")
        for quality in ("medium", "medium-replay", "medium-expert")
    ),
    agents=offline_agents((100, 500, 2000)),
    steps={"*": 100_000},
    seeds=5,
    eval_every=10_000,
    eval_episodes=10,
    accuracy_pairs=1000,
    score="d4rl",
    record_metrics=RECORD_METRICS,
)

#: The true-reward gate where the medium-replay sets fail it: the two medium-expert sets
#: with early termination, BC, 10%-BC and the CPU-sized DT on the true, a learned (500
#: labels) and the zero reward. A dataset passes when DT >= 10%-BC >= BC and the
#: zero-reward DT is below DT beyond the intervals (the report's "Targets").
OFFLINE_GATE_CPU = dataclasses.replace(
    OFFLINE_MUJOCO_CPU,
    name="offline-gate-cpu",
    description="about 45 minutes on 2 CPU cores: hopper/walker2d-medium-expert, BC, "
    "10%-BC and CPU-sized DT on true/learned (500)/zero rewards, 3 seeds, 5k updates",
    tasks=("hopper-medium-expert", "walker2d-medium-expert"),
    agents=offline_agents((500,), ("mle-filter", "dt"), DT_CPU, controls=("zero",)),
)

#: offline-mujoco-cpu's medium-replay half with the learned rewards' zero placed by the
#: labels (``reward.offset=absorbing``: segments may run past a termination). Every other
#: cell is offline-mujoco-cpu's own (the same cell keys): with ``--reuse`` on its results
#: folder only the 24 ``pref-*`` cells run.
OFFLINE_ABSORBING_CPU = dataclasses.replace(
    OFFLINE_MUJOCO_CPU,
    name="offline-absorbing-cpu",
    description="about 25 minutes on 2 CPU cores beside offline-mujoco-cpu's cells: "
    "hopper/walker2d-medium-replay, learned rewards whose zero the labels place "
    "(reward.offset=absorbing), every learner, 3 seeds, 5k updates",
    tasks=("hopper-medium-replay", "walker2d-medium-replay"),
    agents=offline_agents(
        (500,), dt_overrides=DT_CPU, learned_overrides=("reward.offset=absorbing",)
    ),
)

#: offline-gate-cpu's two medium-expert sets with the learned rewards' zero placed by the
#: labels; every other cell is offline-gate-cpu's own (with ``--reuse`` on its results
#: folder only the 12 ``pref-*`` cells run).
OFFLINE_ABSORBING_GATE_CPU = dataclasses.replace(
    OFFLINE_GATE_CPU,
    name="offline-absorbing-gate-cpu",
    description="about 15 minutes on 2 CPU cores beside offline-gate-cpu's cells: "
    "hopper/walker2d-medium-expert, pref-mle-filter and pref-dt with the learned reward's "
    "zero placed by the labels (reward.offset=absorbing), 3 seeds, 5k updates",
    agents=offline_agents(
        (500,),
        ("mle-filter", "dt"),
        DT_CPU,
        controls=("zero",),
        learned_overrides=("reward.offset=absorbing",),
    ),
)

#: Learned rewards from each of the six simulated teachers on the dataset where a learned
#: reward is worth most against the controls (halfcheetah-medium-expert: 10%-BC and RWR
#: at 0.94-0.99 on the true and the oracle-learned reward, 0.34-0.44 on zero and random).
#: Every oracle and reference cell is offline-mujoco-cpu's own (the same cell keys): with
#: ``--reuse`` on its results folder only the 30 cells of the five other teachers run.
OFFLINE_TEACHERS_CPU = dataclasses.replace(
    OFFLINE_MUJOCO_CPU,
    name="offline-teachers-cpu",
    description="about 7 minutes on 2 CPU cores beside offline-mujoco-cpu's cells: "
    "halfcheetah-medium-expert, 10%-BC and RWR on rewards learned from 500 labels of each "
    "of the six simulated teachers, 3 seeds, 5k updates",
    tasks=("halfcheetah-medium-expert",),
    agents=offline_agents((500,), ("mle-filter", "rwr")),
    teachers=tuple(BPREF_TEACHERS),
)
