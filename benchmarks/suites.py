"""Suites: declarative grids of (task, agent, teacher, label budget, seed) cells.

A suite is data: a frozen :class:`Suite` listing its tasks, the agents with their label
budgets and teachers, step budgets and seeds. ``Suite.cells()`` expands the grid. Each
:class:`Cell` has an identity derived from everything that shapes its numbers (task,
agent, teacher, labels, seed, steps, overrides, evaluation settings), so changing a
cell's config gives it a new folder instead of mixing old and new results.

Register a suite with :func:`register_suite`, or pass ``package.module:SUITE`` to
``prefbench run``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from prefbench.agents import AGENTS
from prefbench.benchmarks.run_folder import safe_name
from prefbench.benchmarks.run_spec import RunSpec, TrainConfig, spec_defaults
from prefbench.envs.kinds import Budget
from prefbench.envs.offline_tasks import resolve_task
from prefbench.envs.registry import Registry, instance_of
from prefbench.envs.tasks import ATARI_GAMES, MUJOCO_TASKS
from prefbench.envs.teachers import TEACHERS

#: Bumped when the meaning of a cell's fields or of the results layout changes.
SUITE_FORMAT = 1
DEFAULT_ACCURACY_PAIRS: int = spec_defaults()["accuracy_pairs"]


@dataclass(frozen=True)
class AgentEntry:
    """One agent of a suite.

    Attributes:
        agent: Agent id or import path.
        label_budgets: Label budgets (preference agents); empty for agents without a teacher.
        teachers: Teacher ids; empty means the suite's teachers.
        overrides: ``key=value`` config overrides for this agent.
        agent_name: Name in tables and plots (defaults to ``agent``).
        steps: This agent's budget on every task (0: the suite's ``steps``), e.g. an
            online method given more than the offline ones it is compared with.
    """

    agent: str
    label_budgets: tuple[int, ...] = ()
    teachers: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    agent_name: str = ""
    steps: int = 0

    def __post_init__(self) -> None:
        if not self.agent_name:
            object.__setattr__(self, "agent_name", self.agent)  # the id is the default name


@dataclass(frozen=True)
class Cell:
    """One run of a suite.

    Attributes:
        suite: Suite name.
        agent_name: Display name of the agent entry (tables and plots).
        spec: The run (a teacher of ``""`` and a label budget of 0 for agents without a
            teacher).
    """

    suite: str
    agent_name: str
    spec: RunSpec

    @property
    def key(self) -> str:
        """Stable identity: readable prefix plus a hash of every field that shapes results.

        The hash keeps the field names of the first results format (``labels`` for the
        label budget), so the cells of published results keep their folders.
        """
        s = self.spec
        fields: dict[str, object] = {
            "task": s.task,
            "agent": s.agent,
            "teacher": s.teacher,
            "labels": s.label_budget,
            "seed": s.seed,
            "steps": s.steps,
            "overrides": list(s.overrides),
            "eval_every": s.eval_every,
            "eval_episodes": s.eval_episodes,
        }
        # Added after results were published: at its default it stays out of the hash.
        if s.accuracy_pairs != DEFAULT_ACCURACY_PAIRS:
            fields["accuracy_pairs"] = s.accuracy_pairs
        if s.preset:
            fields["preset"] = s.preset
        digest = hashlib.sha256(
            json.dumps({"format": SUITE_FORMAT, **fields}, sort_keys=True).encode()
        ).hexdigest()[:10]
        teacher = f"-{s.teacher}-{s.label_budget}" if s.teacher else ""
        return f"{safe_name(s.task)}-{safe_name(s.agent)}{teacher}-s{s.seed}-{digest}"

    def train_config(self, out: Path, threads: int = 1) -> TrainConfig:
        """The single-run config of this cell, writing into ``out / key``."""
        return TrainConfig(self.spec, out=out, threads=threads, progress=False, run_name=self.key)


@dataclass(frozen=True)
class Suite:
    """A grid of runs.

    Attributes:
        name: Suite id.
        description: One line for ``prefbench list suites``.
        tasks: Task ids.
        agents: Agents with their label budgets.
        teachers: Default teachers of the preference agents.
        steps: Environment steps per task id (``"*"``: all other tasks).
        seeds: Seeds per cell (``--seeds`` overrides).
        eval_every: Steps between evaluations (0: a tenth of the run).
        eval_episodes: Episodes per evaluation.
        accuracy_pairs: Fresh pairs per reward-model accuracy measurement.
        preset: RL preset of every SB3 agent (``prefbench list presets``; ``""``: the
            agents' own defaults, the paper's settings).
        version: Bumped when a change to the suite makes old results incomparable.
        reference_agent: Agent name scored 1 when normalising (true-reward RL).
        floor_agent: Agent name scored 0 when normalising (random policy).
        score: How ``normalized_score`` is made: ``reference`` (0 the floor agent, 1 the
            reference agent, per task) or ``d4rl`` (offline tasks: the dataset's D4RL
            score / 100, 0 a random policy, 1 its expert).
        record_metrics: Further ``metrics.csv`` columns copied into every record (NaN
            where a run lacks one), e.g. the text track's ``kl_per_token`` and ``flops``.
        required_overrides: Config keys every agent must be given (``prefbench run
            SUITE --set KEY=VALUE``), e.g. the checkpoint of a suite for a user's model.
    """

    name: str
    description: str
    tasks: tuple[str, ...]
    agents: tuple[AgentEntry, ...]
    teachers: tuple[str, ...] = ("oracle",)
    steps: dict[str, int] = field(default_factory=dict)
    seeds: int = 3
    eval_every: int = 0
    eval_episodes: int = 5
    accuracy_pairs: int = DEFAULT_ACCURACY_PAIRS
    preset: str = ""
    version: int = 1
    reference_agent: str = "ppo"
    floor_agent: str = "random"
    score: str = "reference"
    record_metrics: tuple[str, ...] = ()
    required_overrides: tuple[str, ...] = ()

    def with_overrides(self, overrides: tuple[str, ...]) -> Suite:
        """The suite with ``key=value`` overrides added to every agent (later ones win)."""
        if not overrides:
            return self
        agents = tuple(replace(e, overrides=(*e.overrides, *overrides)) for e in self.agents)
        return replace(self, agents=agents)

    def steps_for(self, task: str, entry: AgentEntry | None = None) -> int:
        """Step budget of ``task`` (for ``entry``, its own where it has one)."""
        if entry is not None and entry.steps:
            return entry.steps
        if task in self.steps:
            return self.steps[task]
        if "*" in self.steps:
            return self.steps["*"]
        raise ValueError(f"suite {self.name!r} has no step budget for task {task!r}")

    def validate(self) -> None:
        """Check every id and number up front.

        Raises:
            UnknownIdError: For an unknown task, agent or teacher.
            ValueError: For a budget or seed count below 1.
            ConfigError: For an agent override that does not fit the agent's config.
        """
        if self.score not in ("reference", "d4rl"):
            raise ValueError(f"suite {self.name!r}: score must be reference or d4rl")
        if self.seeds < 1 or self.accuracy_pairs < 1:
            raise ValueError(
                f"suite {self.name!r}: seeds and accuracy_pairs must be >= 1, "
                f"got {self.seeds}, {self.accuracy_pairs}"
            )
        for task in self.tasks:
            for entry in self.agents:
                Budget.for_task(resolve_task(task), self.steps_for(task, entry))
        if self.preset:
            from prefbench.agents.presets import RL_PRESETS

            RL_PRESETS.get(self.preset)
        for entry in self.agents:
            given = {o.split("=", 1)[0].strip() for o in entry.overrides}
            for key in self.required_overrides:
                if key not in given:
                    raise ValueError(
                        f"suite {self.name!r} needs --set {key}=... (agent {entry.agent})"
                    )
            spec = AGENTS.get(entry.agent)
            for task in self.tasks:  # a bad key fails here, not mid-run
                probe = RunSpec(
                    task=task, agent=entry.agent, overrides=entry.overrides, preset=self.preset
                )
                spec.configure(probe.agent_overrides(resolve_task(task).id, spec.config))
            if spec.uses_teacher:
                if not entry.label_budgets or min(entry.label_budgets) < 1:
                    raise ValueError(
                        f"suite {self.name!r}: agent {entry.agent} needs label budgets >= 1, "
                        f"got {entry.label_budgets}"
                    )
                for teacher in entry.teachers or self.teachers:
                    TEACHERS.get(teacher)

    def size(self) -> int:
        """The number of cells at the suite's seeds (nothing validated: for listings)."""
        per_task = sum(
            max(1, len(e.teachers or self.teachers) * len(e.label_budgets))
            if AGENTS.get(e.agent).uses_teacher
            else 1
            for e in self.agents
        )
        return len(self.tasks) * per_task * self.seeds

    def cells(self, seeds: int | None = None) -> list[Cell]:
        """Every cell of the grid, in a stable order."""
        n_seeds = self.seeds if seeds is None else seeds
        if n_seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {n_seeds}")
        self.validate()
        out = []
        for task in self.tasks:
            for entry in self.agents:
                spec = AGENTS.get(entry.agent)
                combos = (
                    [(t, b) for t in (entry.teachers or self.teachers) for b in entry.label_budgets]
                    if spec.uses_teacher
                    else [("", 0)]
                )
                for teacher, label_budget in combos:
                    for seed in range(n_seeds):
                        run = RunSpec(
                            task=task,
                            agent=entry.agent,
                            teacher=teacher,
                            label_budget=label_budget,
                            steps=self.steps_for(task, entry),
                            seed=seed,
                            eval_every=self.eval_every,
                            eval_episodes=self.eval_episodes,
                            accuracy_pairs=self.accuracy_pairs,
                            overrides=entry.overrides,
                            preset=self.preset,
                        )
                        out.append(Cell(self.name, entry.agent_name, run))
        return out


SUITES: Registry[Suite] = Registry("suite", instance_of(Suite))


def register_suite(suite: Suite) -> Suite:
    """Add a suite to the registry."""
    SUITES.register(suite.name, suite)
    return suite


register_suite(
    Suite(
        name="quick",
        description="about 5 minutes on 2 CPU cores: InvertedPendulum and Reacher, 3 seeds, "
        "preference PPO (300 labels) vs true-reward PPO vs random",
        tasks=("inverted-pendulum", "reacher"),
        agents=(
            AgentEntry("pref-ppo", label_budgets=(300,), overrides=("loop.random_steps=2000",)),
            AgentEntry("ppo"),
            AgentEntry("random"),
        ),
        steps={"inverted-pendulum": 40_000, "reacher": 50_000},
        seeds=3,
        eval_every=10_000,
        eval_episodes=5,
        accuracy_pairs=200,
        # 2: InvertedPendulum and Reacher (v1: Pendulum and HalfCheetah, where 30k-50k
        # steps showed no learning by any agent).
        version=2,
    )
)

register_suite(
    Suite(
        name="christiano-mujoco",
        description="the paper's 8 MuJoCo tasks x {350, 700, 1400} labels, TRPO, "
        "+ true-reward TRPO and random (a cluster's job)",
        tasks=MUJOCO_TASKS,
        agents=(
            AgentEntry("pref-trpo", label_budgets=(350, 700, 1400)),
            AgentEntry("trpo"),
            AgentEntry("random"),
        ),
        reference_agent="trpo",
        # REFERENCES.md gives no MuJoCo step budget; 2e6 matches the label-rate constant.
        steps={"*": 2_000_000},
        seeds=3,
        # 2: early termination restarts the episode (was: absorbing state).
        # 3: reward-model inputs standardised.
        version=3,
    )
)

register_suite(
    Suite(
        name="christiano-mujoco-cpu",
        description="a CPU-sized subset of christiano-mujoco (a few hours on 2 cores, zoo "
        "preset): "
        "HalfCheetah, Hopper, InvertedPendulum, Reacher with PPO",
        tasks=("halfcheetah", "hopper", "inverted-pendulum", "reacher"),
        agents=(
            AgentEntry("pref-ppo", label_budgets=(350, 700, 1400)),
            AgentEntry("ppo"),
            AgentEntry("random"),
        ),
        steps={
            "halfcheetah": 200_000,
            "hopper": 200_000,
            "inverted-pendulum": 50_000,
            "reacher": 100_000,
        },
        seeds=3,
        # 2: early termination restarts the episode (was: absorbing state).
        # rl-baselines3-zoo's tuned PPO: the normalised score's 1.0 is a strong learner
        # (HalfCheetah, 300k steps: 4,687 against 1,243 with imitation's PPO settings).
        preset="zoo",
        # 3: zoo preset; reward-model inputs standardised; Reacher's accuracy on
        # distinct pairs.
        version=3,
    )
)

register_suite(
    Suite(
        name="christiano-atari",
        description="the paper's 7 Atari games x {3.3k, 5.5k, 10k} labels, A2C, 50M frames, "
        "+ true-reward A2C and random (a GPU machine's job)",
        tasks=ATARI_GAMES,
        agents=(
            AgentEntry("pref-a2c-atari", label_budgets=(3300, 5500, 10_000)),
            AgentEntry("a2c-atari"),
            AgentEntry("random"),
        ),
        reference_agent="a2c-atari",
        steps={"*": 12_500_000},  # 50M frames at frame skip 4
        seeds=3,
    )
)

#: The paper's Atari agent cut to a 2-core CPU: the same network, ensemble, queries and
#: label-rate shape, but 150 labels up front (paper: 500) with 10 epochs (paper: 200), one
#: epoch per later fit, minibatches of 16 pairs. On one core the conv ensemble trains at
#: tens of clips per second (``prefbench perf reward-model --encoder cnn``), so the
#: paper's 200 epochs on 500 labels alone would take hours.
ATARI_CPU_OVERRIDES = (
    "loop.initial_labels=150",
    "loop.initial_epochs=10",
    "loop.random_steps=10000",
    "reward.epochs_per_fit=1",
    "reward.batch_size=16",
)
#: The paper decays A2C's learning rate linearly over 50M frames; over the first 800k
#: it is still above 98% of its start, so a short run keeps it constant rather than
#: decaying it to 0 within the run.
ATARI_CPU_RL = ("rl.lr_schedule=constant",)

register_suite(
    Suite(
        name="christiano-atari-cpu",
        description="Pong and Seaquest at CPU budgets (about an hour on 2 cores): "
        "preference A2C with 500 labels vs true-reward A2C vs random",
        tasks=("pong", "seaquest"),
        agents=(
            AgentEntry(
                "pref-a2c-atari", label_budgets=(500,), overrides=ATARI_CPU_OVERRIDES + ATARI_CPU_RL
            ),
            AgentEntry("a2c-atari", overrides=ATARI_CPU_RL),
            AgentEntry("random"),
        ),
        reference_agent="a2c-atari",
        steps={"*": 200_000},  # 800k frames
        seeds=1,
        eval_every=20_000,
        eval_episodes=10,
        # Scoring 500 pairs with the conv ensemble takes ~20 s on one core.
        accuracy_pairs=200,
        # 2: Seaquest instead of SpaceInvaders, TF-style RMSprop, constant learning rate.
        version=2,
    )
)

register_suite(
    Suite(
        name="teachers",
        description="the six B-Pref teachers on HalfCheetah, 700 labels, preference PPO",
        tasks=("halfcheetah",),
        agents=(
            AgentEntry(
                "pref-ppo",
                label_budgets=(700,),
                teachers=("oracle", "stochastic", "mistake", "skip", "equal", "myopic"),
            ),
            AgentEntry("ppo"),
            AgentEntry("random"),
        ),
        steps={"*": 200_000},
        seeds=3,
    )
)

register_suite(
    Suite(
        name="halfcheetah-1500",
        description="HalfCheetah 300k steps: preference PPO with 1500 oracle labels vs "
        "true-reward PPO (the core loop's quality check)",
        tasks=("halfcheetah",),
        agents=(
            AgentEntry("pref-ppo", label_budgets=(1500,)),
            AgentEntry("ppo"),
            AgentEntry("random"),
        ),
        steps={"*": 300_000},
        seeds=3,
    )
)

# The offline suites (prefbench.benchmarks.offline_suites), imported when first named.
for _name in (
    "offline-halfcheetah-cpu",
    "offline-hopper-cpu",
    "offline-mujoco-cpu",
    "offline-labels-cpu",
    "offline-gate-cpu",
    "offline-absorbing-cpu",
    "offline-absorbing-gate-cpu",
    "offline-teachers-cpu",
    "offline-mujoco",
):
    SUITES.register(
        _name,
        f"prefbench.benchmarks.offline_suites:{_name.upper().replace('-', '_')}",
    )

# The language-model suites (prefbench.benchmarks.lm_suites), imported when first named.
for _name in ("lm-quick", "lm-cpu", "lm"):
    SUITES.register(_name, f"prefbench.benchmarks.lm_suites:{_name.upper().replace('-', '_')}")
