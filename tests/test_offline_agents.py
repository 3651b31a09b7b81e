"""Offline agents through the run harness: rewards, learners, evaluation, resume, bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from offline_episodes import pendulum_episodes

from prefbench.benchmarks.run_spec import RunSpec, TrainConfig
from prefbench.benchmarks.train import train
from prefbench.envs.episodes import Episodes

pytest.importorskip("minari")

DATASET = "test/pendulum/mixed-v0"
#: Tiny learners: a few updates of small networks.
TINY = {
    "dt": (
        "learner.n_embd=16",
        "learner.n_layer=1",
        "learner.context_length=4",
        "learner.warmup_steps=5",
        "learner.batch_size=16",
    ),
    "mlp": ("learner.hidden_sizes=16,16", "learner.batch_size=32"),
}
REWARD = ("reward.epochs=20", "reward.segment_length=20", "report_every=10")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from prefbench.envs.minari_io import write_dataset

    root = tmp_path_factory.mktemp("minari")
    mp = pytest.MonkeyPatch()
    mp.setenv("MINARI_DATASETS_PATH", str(root))
    episodes = pendulum_episodes()
    env = gym.make("Pendulum-v1")
    write_dataset(
        DATASET,
        episodes,
        env,
        ref_min_score=-1200.0,
        ref_max_score=-150.0,
        algorithm_name="test",
        description="PD and random Pendulum episodes",
        extra={},
    )
    # A dataset that says Pendulum-v1 but holds 4-dim observations.
    wide = SimpleNamespace(
        spec=env.spec,
        observation_space=gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
        action_space=env.action_space,
    )
    pad = np.zeros((len(episodes), 1), np.float32)
    write_dataset(
        "test/pendulum/wide-v0",
        Episodes(
            np.hstack([episodes.obs, pad]),
            episodes.acts,
            episodes.rewards,
            np.hstack([episodes.next_obs, pad]),
            episodes.terminations,
            episodes.truncations,
            episodes.starts,
        ),
        wide,
        ref_min_score=0,
        ref_max_score=1,
        algorithm_name="test",
        description="",
        extra={},
    )
    yield episodes
    mp.undo()


def _cfg(tmp_path, agent, *more, steps=20, **spec):
    learner = TINY["dt" if agent.endswith("dt") else "mlp"]
    overrides = (*learner, *(() if agent == "bc" else REWARD[:2]), "report_every=10", *more)
    fields = {
        "task": DATASET,
        "agent": agent,
        "label_budget": 60,
        "steps": steps,
        "eval_every": 10,
        "eval_episodes": 2,
        "accuracy_pairs": 100,
        "overrides": overrides,
        **spec,
    }
    return TrainConfig(RunSpec(**fields), out=tmp_path, progress=False)


@pytest.mark.parametrize(
    "agent",
    ["bc", "mle-filter", "rwr", "iql", "dt", "pref-iql", "pref-dt", "zero-dt", "random-rwr"],
)
def test_offline_agents_train_and_are_scored(datasets, tmp_path, agent):
    summary = train(_cfg(tmp_path, agent))
    metrics = pd.read_csv(next(tmp_path.iterdir()) / "metrics.csv")
    assert list(metrics["steps"]) == [0, 10, 20]
    assert np.isfinite(metrics["true_return"]).all()
    np.testing.assert_allclose(
        metrics["d4rl_score"], 100 * (metrics["true_return"] + 1200) / 1050, rtol=1e-6
    )
    if agent.startswith("pref"):
        assert summary["labels_used"] == 60
        assert metrics["rm_accuracy"].between(0, 1).all()
        # The learned reward orders held-out PD and random segments (measured: 0.76).
        assert metrics["rm_accuracy"].iloc[-1] > 0.7
        assert "rm_return_spearman" in metrics.columns
    else:
        assert summary["labels_used"] == 0 and metrics["rm_accuracy"].isna().all()


def test_same_seed_same_numbers(datasets, tmp_path):
    a = train(_cfg(tmp_path / "a", "pref-dt"))
    b = train(_cfg(tmp_path / "b", "pref-dt"))
    ma = pd.read_csv(f"{a['run_dir']}/metrics.csv").drop(columns=["wall_time", "train_time"])
    mb = pd.read_csv(f"{b['run_dir']}/metrics.csv").drop(columns=["wall_time", "train_time"])
    pd.testing.assert_frame_equal(ma, mb)


class Stop(KeyboardInterrupt):
    """Stands in for Ctrl-C in the middle of training."""


@pytest.mark.parametrize("agent", ["pref-dt", "iql"])
def test_interrupted_offline_run_resumes(datasets, tmp_path, agent):
    cfg = _cfg(tmp_path, agent, "report_every=5", steps=30)

    def stop(step):
        if step >= 25:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, on_progress=stop)
    run = next(tmp_path.iterdir())
    before = pd.read_csv(run / "metrics.csv")
    assert list(before["steps"]) == [0, 10, 20]
    summary = train(cfg)
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["steps"]) == [0, 10, 20, 30] and summary["steps"] == 30
    pd.testing.assert_frame_equal(metrics.iloc[:3], before, check_dtype=False)
    assert json.loads((run / "config.json").read_text())["resumed_at"] == [20]
    # The learner, its reward and the evaluation streams resume exactly: the rows after
    # the resume are those of an uninterrupted run.
    whole = train(_cfg(tmp_path / "whole", agent, "report_every=5", steps=30))
    uninterrupted = pd.read_csv(f"{whole['run_dir']}/metrics.csv")
    timing = ["wall_time", "train_time"]
    pd.testing.assert_frame_equal(
        metrics.drop(columns=timing), uninterrupted.drop(columns=timing), check_dtype=False
    )


def test_decision_transformer_acts_on_its_own_reward(datasets, tmp_path):
    """Only the true-reward reference is handed the environment's rewards while acting."""
    from prefbench.benchmarks.evaluation import play_episodes
    from prefbench.envs.rollout import make_vec_env
    from prefbench.envs.tasks import get_task

    seen = {}

    class Spy:
        def __init__(self, agent):
            self.agent = agent
            self.sees_true_reward = agent.sees_true_reward

        def episode_policy(self, n, seed):
            policy = self.agent.episode_policy(n, seed)
            inner = policy.observe

            def observe(obs, acts, rewards=None):
                seen.setdefault(self.agent.config.reward.source, []).append(rewards)
                inner(obs, acts, rewards)

            policy.observe = observe
            return policy

    from prefbench.agents import AGENTS
    from prefbench.agents.protocol import RunContext
    from prefbench.envs.kinds import Budget
    from prefbench.envs.offline_tasks import get_offline_task
    from prefbench.envs.teachers import make_teacher

    task = get_offline_task(DATASET)
    venv = make_vec_env(get_task("pendulum"), 2, 0)
    for name in ("dt", "pref-dt"):
        spec = AGENTS.get(name)
        ctx = RunContext(task, 0, Budget.for_task(task, 5), 60, "cpu", tmp_path, _logger())
        teacher = make_teacher("oracle", np.random.default_rng(0)) if name == "pref-dt" else None
        agent = spec.build(ctx, teacher, (*TINY["dt"], *REWARD[:2]))
        agent.learn(_NullReporter())
        returns = play_episodes(venv, Spy(agent))
        assert returns.shape == (2,) and np.isfinite(returns).all()
    venv.close()
    assert all(r is not None for r in seen["true"])
    assert all(r is None for r in seen["learned"])


def test_acting_rewards_are_the_relabelled_ones(datasets, tmp_path):
    """A learned-reward DT's return-to-go falls by the rewards it trained on, offset included."""
    from prefbench.agents import AGENTS
    from prefbench.agents.protocol import RunContext
    from prefbench.envs.kinds import Budget
    from prefbench.envs.offline_tasks import get_offline_task
    from prefbench.envs.teachers import make_teacher

    task = get_offline_task(DATASET)
    ctx = RunContext(task, 0, Budget.for_task(task, 5), 60, "cpu", tmp_path, _logger())
    teacher = make_teacher("oracle", np.random.default_rng(0))
    agent = AGENTS.get("pref-dt").build(ctx, teacher, (*TINY["dt"], *REWARD[:2]))
    agent.learn(_NullReporter())
    assert agent.reward_shift != 0  # the lowest relabelled step is 0, the model's is not
    steps = np.arange(0, len(datasets), 7)
    acting = agent.step_rewards(
        datasets.obs[steps], datasets.acts[steps], None, np.random.default_rng(0)
    )
    np.testing.assert_allclose(acting, agent.rewards.rewards[steps], atol=1e-5)


def _logger():
    import logging

    return logging.getLogger("test")


class _NullReporter:
    def report(self, step, **kwargs):
        pass


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "hopper-mediocre", "--agent", "dt"], "unknown task"),
        (["--task", "test/pendulum/wide-v0", "--agent", "bc"], "needs (3,)"),
        (["--task", DATASET, "--agent", "pref-dt", "--labels", "10000000"], "exceeds"),
        (
            ["--task", DATASET, "--agent", "pref-dt", "--labels", "1000000"]
            + ["--set", "reward.query=disagreement", "--set", "reward.oversample=1000"]
            + ["--set", "reward.rounds=2"],
            "of memory",
        ),
        (
            ["--task", DATASET, "--agent", "pref-dt", "--set", "reward.segment_length=500"],
            "no two segments",
        ),
        (
            ["--task", DATASET, "--agent", "iql", "--set", "learner.reward_scale=1e38"],
            "not finite",
        ),
        (["--task", DATASET, "--agent", "dt", "--set", "learner.lr=-1"], "learner.lr"),
        (["--task", DATASET, "--agent", "rwr", "--set", "reward.source=gold"], "reward.source"),
        (
            ["--task", DATASET, "--agent", "rwr", "--set", "reward.source=learned"],
            "needs a teacher",
        ),
        (
            ["--task", DATASET, "--agent", "pref-rwr", "--teacher", "human"]
            + ["--set", "reward.offset=absorbing"],
            "cannot show segments that run past a termination",
        ),
    ],
)
def test_bad_offline_input_exits_2(datasets, tmp_path, capsys, argv, message):
    from prefbench.benchmarks.cli import main

    out = tmp_path / "runs"
    rc = main(
        ["train", *argv, "--steps", "10", "--eval-episodes", "1", "--out", str(out)]
        + ["--no-progress"]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err, err
    # Nothing written, not even the --out folder; a NaN loss comes mid-run.
    assert not out.exists() or message == "not finite"


def test_missing_builtin_dataset_names_the_command(datasets, tmp_path, capsys):
    from prefbench.benchmarks.cli import main

    rc = main(["train", "--task", "hopper-medium", "--agent", "bc", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "prefbench data make hopper-medium" in err


def test_offline_suite_scores_by_d4rl(datasets, tmp_path):
    from prefbench.benchmarks.runner import run_suite
    from prefbench.benchmarks.suites import AgentEntry, Suite

    mlp = (*TINY["mlp"], "report_every=5")
    suite = Suite(
        name="offline-test",
        description="test",
        tasks=(DATASET,),
        agents=(
            AgentEntry("bc", overrides=mlp),
            AgentEntry("pref-iql", label_budgets=(60,), overrides=(*mlp, *REWARD[:2])),
        ),
        steps={"*": 10},
        seeds=1,
        eval_every=5,
        eval_episodes=1,
        accuracy_pairs=50,
        score="d4rl",
    )
    run_suite(suite, tmp_path, workers=1, show_progress=False)
    records = pd.read_csv(tmp_path / "records.csv")
    assert len(records) == 6 and set(records["agent"]) == {"bc", "pref-iql"}
    np.testing.assert_allclose(records["normalized_score"], records["d4rl_score"] / 100)
    # Minari ids hold slashes; cell folders do not.
    cells = [p for p in (tmp_path / "cells").iterdir() if p.is_dir()]
    assert len(cells) == 2 and all(p.name.startswith("test_pendulum_mixed-v0-") for p in cells)
    with pytest.raises(ValueError, match="score"):
        Suite(name="x", description="", tasks=(DATASET,), agents=(), score="best").validate()


def test_evaluate_replays_an_offline_run(datasets, tmp_path):

    from prefbench.benchmarks.watch import evaluate_run
    from prefbench.envs.seeding import int31_seed

    summary = train(_cfg(tmp_path, "pref-dt"))
    # The final evaluation is one of the first rounds: its seed replays its two episodes.
    means = [
        np.mean([r.true_return for r in evaluate_run(Path(summary["run_dir"]), 2, seed=s)])
        for s in (int31_seed(0, f"eval{r}") for r in range(6))
    ]
    assert summary["final_true_return"] in [pytest.approx(m, abs=1e-3) for m in means]


def test_evaluate_asks_a_decision_transformer_for_other_targets(datasets, tmp_path, capsys):
    from prefbench.benchmarks.cli import main
    from prefbench.benchmarks.watch import evaluate_run

    dt_run = train(_cfg(tmp_path / "dt", "dt"))["run_dir"]
    returns = datasets.returns()
    runs = {t: evaluate_run(Path(dt_run), 2, seed=3, target_return=t) for t in TARGETS}
    assert runs[None][0].target_return == pytest.approx(returns.max())  # the run's own
    assert runs["quantile:0"][0].target_return == pytest.approx(returns.min())
    assert runs["-1234.5"][0].target_return == -1234.5
    for results in runs.values():
        score = 100 * (results[0].true_return + 1200) / (-150 + 1200)  # the test refs
        assert results[0].d4rl_score == pytest.approx(score, rel=1e-5)
        assert [r.seed for r in results] == [3, 3]
    # The target steers acting: asking for the worst return plays other episodes.
    assert runs[None][0].true_return != runs["quantile:0"][0].true_return

    table = tmp_path / "targets.csv"
    for target in ("quantile:0", "quantile:0", "dataset_max"):  # a rerun replaces its rows
        assert (
            main(
                ["evaluate", dt_run, "--episodes", "2", "--seed", "3", "--csv", str(table)]
                + ["--target-return", target]
            )
            == 0
        )
    out = capsys.readouterr().out
    assert "target_return" in out and "d4rl_score" in out
    rows = pd.read_csv(table)
    assert len(rows) == 4 and sorted(set(rows["target_return_from"])) == [
        "dataset_max",
        "quantile:0",
    ]
    assert rows.groupby("target_return_from")["true_return"].mean().loc["quantile:0"] == (
        pytest.approx(np.mean([r.true_return for r in runs["quantile:0"]]), rel=1e-5)
    )

    bc_run = train(_cfg(tmp_path / "bc", "bc"))["run_dir"]
    table.write_text("hello,world\n1,2\n")
    for argv, message in [
        ([bc_run, "--target-return", "1"], "agent 'bc' is not one"),
        ([dt_run, "--target-return", "quantile:2"], "target_return"),
        ([dt_run, "--csv", str(table)], "other columns"),
    ]:
        assert main(["evaluate", *argv, "--episodes", "1"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert table.read_text() == "hello,world\n1,2\n"  # a foreign file is left as it was


#: Targets a Decision Transformer run is evaluated at: its own, then others.
TARGETS = (None, "quantile:0", "-1234.5", "dataset_max")


def test_a_human_labelled_offline_run_matches_the_oracle_run(datasets, tmp_path):
    from human_helpers import ScriptedLabeller, Served

    from prefbench.envs.human.queue import LabelQueue

    queue_dir = tmp_path / "queue"
    LabelQueue(queue_dir)
    with Served(queue_dir) as served:
        labeller = ScriptedLabeller(served.base, queue_dir)
        labeller.start()
        cfg = _cfg(tmp_path / "human", "pref-dt", teacher="human")
        human = train(dataclasses.replace(cfg, label_queue=str(queue_dir), label_timeout=120))
        labeller.stop.set()
    oracle = train(_cfg(tmp_path / "oracle", "pref-dt"))
    # Dataset segments drawn as Pendulum clips, answered like the oracle: the same labels.
    assert labeller.answered == human["labels_used"] == 60
    assert human["final_rm_accuracy"] == oracle["final_rm_accuracy"]
    assert human["final_true_return"] == oracle["final_true_return"]
