"""``prefbench data make``: D4RL-style datasets from policies the suite trains itself.

For one control task (Hopper, Walker2d, HalfCheetah) the recipe is:

1. **Behaviour run.** PPO with rl-baselines3-zoo's tuned settings (``--preset zoo``),
   or SAC (``--algo sac``, D4RL's behaviour learner; its replay buffer is saved with
   the newest snapshot so a resumed run keeps it), trains on the true reward in the raw
   environment (early termination ends episodes, as in D4RL) for ``behaviour_steps``.
   Every ``snapshot_every`` steps it saves a policy snapshot, scores it on
   ``eval_episodes`` deterministic episodes, and stores the episodes training finished
   since the last snapshot (the replay data).
2. **References.** The last snapshot is the *expert*; its score and a uniformly random
   policy's are the normalised score's 100 and 0 (``ref_max_score``/``ref_min_score``).
3. **Medium.** The snapshot whose normalised score is nearest ``medium_fraction``
   (D4RL: about a third of the expert).
4. **Datasets** of ``dataset_steps`` steps each, whole episodes, actions sampled from
   the policy (as D4RL's): ``random``, ``medium``, ``expert``; ``medium-replay`` is every
   episode training finished before the medium snapshot; ``medium-expert`` is the
   medium and expert datasets together.

Everything is resumable: the behaviour run goes on from its last snapshot after a kill
(episodes in flight then are lost, and the resumed run is not bit-identical to an
uninterrupted one: snapshots are taken before the rollout's update, and the torch
generator restarts), collected datasets are cached as files before they are written to
Minari, and a dataset already installed is not built again. A lock keeps two builds of
one task apart. Work in progress lives under the hidden folder ``.prefbench`` of Minari's datasets
root, keyed by the behaviour settings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from prefbench.agents import AGENTS, RunContext
from prefbench.agents.baselines import TrueRewardAgent, TrueRewardConfig
from prefbench.agents.presets import RL_PRESETS
from prefbench.agents.reward_wrapper import make_training_env
from prefbench.agents.rl import RLConfig
from prefbench.agents.sb3_agent import REPLAY_BUFFER_FILE, SB3Agent
from prefbench.benchmarks.data_config import DataMakeConfig, command_line
from prefbench.benchmarks.run_folder import git_commit
from prefbench.envs.data import CheckpointError, Trajectory
from prefbench.envs.episodes import Episodes, load_episodes, save_episodes
from prefbench.envs.files import file_lock, write_json
from prefbench.envs.kinds import Budget
from prefbench.envs.minari_io import d4rl_score, dataset_exists, work_dir, write_dataset
from prefbench.envs.offline_tasks import DATASET_ENVS, QUALITIES, OfflineTask, get_offline_task
from prefbench.envs.rollout import make_vec_env, random_actions, rollout
from prefbench.envs.seeding import int31_seed, make_rng, scoped_torch, stream_seed

#: ``(obs (n, *O)) -> (n, A...)`` actions.
Policy = Callable[[np.ndarray], np.ndarray]


def parse_targets(name: str) -> list[OfflineTask]:
    """The datasets ``name`` asks for: one id (``hopper-medium``) or a task (``hopper``)."""
    if name in DATASET_ENVS:
        return [get_offline_task(f"{name}-{q}") for q in QUALITIES]
    task = get_offline_task(name)
    if not task.quality:
        raise ValueError(f"{name} is not a dataset prefbench builds; built-in ones: see --help")
    return [task]


def make_datasets(
    name: str, config: DataMakeConfig, log: Callable[[str], None] = print
) -> list[str]:
    """Build the datasets ``name`` names (skipping installed ones); returns their Minari ids."""
    targets = parse_targets(name)
    missing = [t for t in targets if not dataset_exists(t.dataset_id)]
    for t in targets:
        if t not in missing:
            log(f"{t.id}: installed as {t.dataset_id}")
    if not missing:
        return [t.dataset_id for t in targets]
    builder = DatasetBuilder(missing[0].control, config, log)
    with builder.lock():
        for t in missing:
            if not dataset_exists(t.dataset_id):  # another process may have built it
                builder.write(t)
    return [t.dataset_id for t in targets]


class DatasetBuilder:
    """Builds the datasets of one control task (see the module docstring).

    Args:
        task_id: ``hopper``, ``walker2d`` or ``halfcheetah``.
        config: Settings.
        log: Where progress lines go.
    """

    def __init__(
        self, task_id: str, config: DataMakeConfig, log: Callable[[str], None] = print
    ) -> None:
        self.task_id = task_id
        self.config = config
        self.log = log
        self.task = OfflineTask(task_id, "", task_id).control_task
        self.dir = work_dir() / "behaviour" / f"{task_id}-{config.behaviour_key()}"
        self._snapshots: list[dict[str, Any]] | None = None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the task's build lock: a second ``data make`` of it fails at once."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.dir / ".lock") as held:
            if not held:
                raise ValueError(
                    f"another `prefbench data make` is building {self.task_id} ({self.dir})"
                )
            yield

    # ------------------------------------------------------------ behaviour run
    def _agent(self) -> SB3Agent:
        ctx = RunContext(
            task=self.task,
            seed=self.config.seed,
            budget=Budget.for_task(self.task, self.config.behaviour_steps),
            label_budget=0,
            device="cpu",
            run_dir=self.dir,
            logger=logging.getLogger("prefbench.data"),
        )
        if self.config.algo == "sac":
            agent: object = TrueRewardAgent(ctx, None, TrueRewardConfig(rl=self._sac()))
        else:
            rl_overrides = RL_PRESETS.get(self.config.preset).overrides(self.task_id)
            agent = AGENTS.get("ppo").build(ctx, None, rl_overrides)
        assert isinstance(agent, SB3Agent)
        return agent

    def _sac(self) -> RLConfig:
        """SAC as D4RL's behaviour runs and rl-baselines3-zoo's MuJoCo settings have it."""
        return RLConfig(
            algo="sac",
            n_envs=1,
            gamma=0.99,
            net_arch=(256, 256),
            algo_kwargs={
                "learning_starts": min(10_000, self.config.behaviour_steps // 10),
                "buffer_size": self.config.behaviour_steps,  # the whole run: nothing dropped
            },
        )

    def snapshots(self) -> list[dict[str, Any]]:
        """The behaviour run's snapshots (training it first where unfinished).

        Each is ``{"step", "return", "returns"}``, oldest first.
        """
        if self._snapshots is None or self._snapshots[-1]["step"] < self.config.behaviour_steps:
            self._snapshots = self._train()
        return self._snapshots

    def _read_snapshots(self) -> list[dict[str, Any]]:
        path = self.dir / "snapshots.json"
        if not path.is_file():
            return []
        try:
            return list(json.loads(path.read_text())["snapshots"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path} is corrupt ({exc}); remove {self.dir}") from exc

    def _train(self) -> list[dict[str, Any]]:
        snaps = self._read_snapshots()
        total, every = self.config.behaviour_steps, self.config.snapshot_every
        if snaps and snaps[-1]["step"] >= total:
            return snaps
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.dir / "config.json", {"config": asdict(self.config), "task": self.task_id})
        with scoped_torch(self.config.seed, 1):
            agent = self._agent()
            if snaps:
                agent.load_state(self._snapshot_dir(snaps[-1]["step"]))
                self.log(f"{self.task_id}: behaviour run resumes at {snaps[-1]['step']:,} steps")
            replay: list[Trajectory] = []

            def after_rollout(step: int) -> None:
                replay.extend(agent.venv.pop_finished())
                last = snaps[-1]["step"] if snaps else 0
                if step - last >= every or step >= total:
                    self._snapshot(agent, step, replay, snaps)
                    replay.clear()

            agent.train_learner(after_rollout)
            if not snaps or snaps[-1]["step"] < agent.steps_done:
                self._snapshot(agent, agent.steps_done, replay, snaps)
        return snaps

    def _snapshot_dir(self, step: int) -> Path:
        return self.dir / "snapshots" / f"{step:09d}"

    def _snapshot(
        self, agent: SB3Agent, step: int, replay: list[Trajectory], snaps: list[dict[str, Any]]
    ) -> None:
        """Save the policy and the replay since the last snapshot, then commit the list."""
        agent.save_state(self._snapshot_dir(step))
        chunk = [t for t in replay if t.final_obs is not None]
        if chunk:
            save_episodes(
                Episodes.from_trajectories(chunk), self.dir / "replay" / f"{step:09d}.npz"
            )
        returns = self._score(lambda obs: agent.act(obs, deterministic=True))
        snaps.append(
            {
                "step": step,
                "return": float(np.mean(returns)),
                "returns": returns,
                "commit": git_commit(),  # the code that trained up to here
            }
        )
        # The commit point: a snapshot counts once it is listed here.
        write_json(self.dir / "snapshots.json", {"snapshots": snaps})
        for old in snaps[:-1]:  # only the newest snapshot's replay buffer is resumed from
            (self._snapshot_dir(old["step"]) / REPLAY_BUFFER_FILE).unlink(missing_ok=True)
        self.log(
            f"{self.task_id}: {step:,}/{self.config.behaviour_steps:,} steps, "
            f"deterministic return {np.mean(returns):.1f}"
        )

    def _score(self, policy: Policy | None) -> list[float]:
        """Returns of ``eval_episodes`` fresh episodes (``None``: uniformly random actions)."""
        n = self.config.eval_episodes
        venv = make_vec_env(self.task, n, int31_seed(self.config.seed, "data_eval"))
        try:
            trajs = rollout(venv, policy, make_rng(self.config.seed, "data_eval_random"))
        finally:
            venv.close()
        return [t.true_return for t in trajs]

    # --------------------------------------------------------------- references
    def references(self) -> dict[str, Any]:
        """Random and expert returns, and the medium snapshot (cached per medium fraction)."""
        path = self.dir / f"references-m{self.config.medium_fraction:.6g}.json"
        if path.is_file():
            return json.loads(path.read_text())
        snaps = self.snapshots()
        random_return = float(np.mean(self._score(None)))
        expert = snaps[-1]
        span = expert["return"] - random_return
        if not span > 0:
            raise ValueError(
                f"{self.task_id}: the expert ({expert['return']:.1f}) is no better than random "
                f"({random_return:.1f}); train longer (--behaviour-steps)"
            )
        scores = [100 * (s["return"] - random_return) / span for s in snaps[:-1]] or [100.0]
        pick = int(np.argmin([abs(x / 100 - self.config.medium_fraction) for x in scores]))
        medium = snaps[pick] if len(snaps) > 1 else expert
        refs = {
            "random_return": random_return,
            "expert_return": expert["return"],
            "expert_step": expert["step"],
            "medium_step": medium["step"],
            "medium_return": medium["return"],
            "medium_score": scores[pick],
        }
        write_json(path, refs)
        return refs

    # --------------------------------------------------------------- collection
    def episodes(self, quality: str) -> Episodes:
        """The steps of dataset ``quality`` (collected once, then read from the cache)."""
        if quality == "medium-expert":
            return Episodes.concatenate([self.episodes("medium"), self.episodes("expert")])
        refs = self.references()
        if quality == "medium-replay":
            return self._replay_until(refs["medium_step"])
        step = 0 if quality == "random" else refs[f"{quality}_step"]
        cfg = self.config
        # Keyed by everything the steps depend on: the snapshot, the size, the envs.
        path = (
            self.dir / "collect" / f"{quality}-{step}-{cfg.dataset_steps}-e{cfg.collect_envs}.npz"
        )
        if path.is_file():
            return load_episodes(path)
        if quality == "random":
            policy = None
        else:
            agent = self._agent()
            agent.load_state(self._snapshot_dir(refs[f"{quality}_step"]))
            policy = lambda obs: agent.act(obs, deterministic=False)  # noqa: E731
        self.log(f"{self.task_id}-{quality}: collecting {self.config.dataset_steps:,} steps")
        episodes = self._collect(policy, stream_seed(self.config.seed, f"collect_{quality}"))
        save_episodes(episodes, path)
        return episodes

    def _collect(self, policy: Policy | None, seed: int) -> Episodes:
        """``ceil(dataset_steps / n) * n`` steps of ``n`` environments, final observations kept.

        Every environment steps equally long; the episode each is in at the end is kept as
        truncated (as D4RL does), so long episodes are not under-represented.
        """
        n = self.config.collect_envs
        venv = make_training_env(self.task, n, seed)
        rng = np.random.default_rng(seed)
        finished: list[Trajectory] = []
        try:
            with scoped_torch(seed, 1):
                obs = venv.reset()
                for _ in range(-(-self.config.dataset_steps // n)):
                    acts = (
                        random_actions(venv.action_space, n, rng) if policy is None else policy(obs)
                    )
                    obs, _, _, _ = venv.step(acts)
                    finished.extend(venv.pop_finished())
                finished.extend(venv.pop_unfinished())
        finally:
            venv.close()
        return Episodes.from_trajectories(finished)

    def _replay_until(self, step: int) -> Episodes:
        chunks = sorted((self.dir / "replay").glob("*.npz"))
        parts = [load_episodes(c) for c in chunks if int(c.stem) <= step]
        if not parts:
            raise ValueError(f"{self.task_id}: no training episodes finished by step {step:,}")
        return Episodes.concatenate(parts)

    # ------------------------------------------------------------------ writing
    def _learner_name(self) -> str:
        if self.config.algo == "sac":
            return "SAC (SB3 defaults, 256x256)"
        return f"PPO ({self.config.preset} preset)"

    def write(self, task: OfflineTask) -> None:
        """Build ``task``'s dataset and install it in Minari's format."""
        episodes = self.episodes(task.quality)
        refs = self.references()
        env = self.task.make()
        returns = episodes.returns()
        try:
            write_dataset(
                task.dataset_id,
                episodes,
                env,
                ref_min_score=refs["random_return"],
                ref_max_score=refs["expert_return"],
                algorithm_name=f"prefbench {self._learner_name()}, {task.quality}",
                description=(
                    f"{task.quality} data for {self.task.env_id} in D4RL's manner, from a "
                    f"{self.config.algo.upper()} policy prefbench trained "
                    f"({self.config.behaviour_steps:,} steps)."
                ),
                extra={
                    "task": task.id,
                    "control_task": self.task_id,
                    "quality": task.quality,
                    "commit": git_commit(),
                    "command": command_line(task.id, self.config),
                    "config": asdict(self.config),
                    "behaviour": {
                        "algo": self.config.algo,
                        "preset": self.config.preset if self.config.algo == "ppo" else "",
                        "steps": self.config.behaviour_steps,
                        "snapshot_every": self.config.snapshot_every,
                        # Snapshots taken before commits were recorded have none.
                        "commits": sorted(
                            {str(x["commit"]) for x in self.snapshots() if x.get("commit")}
                        ),
                    },
                    "references": refs,
                    "steps": len(episodes),
                    "episodes": episodes.n_episodes,
                    "mean_return": float(returns.mean()),
                    "terminated_episodes": int(episodes.terminated.sum()),
                },
            )
        finally:
            env.close()
        self.log(
            f"{task.id}: {episodes.n_episodes} episodes, {len(episodes):,} steps, mean return "
            f"{returns.mean():.1f} (normalised "
            f"{d4rl_score(returns.mean(), refs['random_return'], refs['expert_return']):.1f}) "
            f"-> {task.dataset_id}"
        )


def dataset_table() -> str:
    """What ``prefbench data list`` prints: every built-in id, then other installed datasets."""
    from prefbench.envs.minari_io import datasets_root, local_dataset_ids, read_dataset
    from prefbench.envs.offline_tasks import NAMESPACE, builtin_ids

    lines = [f"datasets root: {datasets_root()} (MINARI_DATASETS_PATH)"]
    lines.append(f"{'id':28} {'minari id':40} {'episodes':>8} {'steps':>9} {'score':>7}")
    for name in builtin_ids():
        task = get_offline_task(name)
        if not task.exists():
            lines.append(f"{name:28} {task.dataset_id:40} {'-':>8} {'-':>9} {'-':>7}  not built")
            continue
        lines.append(_row(name, task.dataset_id, read_dataset))
    try:
        others = [i for i in local_dataset_ids() if not i.startswith(f"{NAMESPACE}/")]
    except ImportError:
        others = []
    lines.extend(_row(i, i, read_dataset) for i in others)
    return "\n".join(lines) + "\n"


def _row(name: str, dataset_id: str, read: Callable[[str], Any]) -> str:
    try:
        episodes, info = read(dataset_id)
    except (CheckpointError, FileNotFoundError) as exc:
        return f"{name:28} {dataset_id:40}  unreadable: {exc}"
    try:
        score = f"{float(np.mean(info.normalized_score(episodes.returns()))):7.1f}"
    except ValueError:
        score = f"{'-':>7}"
    return f"{name:28} {dataset_id:40} {episodes.n_episodes:8d} {len(episodes):9,d} {score}"
