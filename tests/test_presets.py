"""RL presets, the learner's normalisation, and accuracy on whole-episode clips."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_resume import Stop, _interrupt_at
from tiny import tiny_config

from prefbench.agents import AGENTS
from prefbench.agents.presets import RL_PRESETS
from prefbench.benchmarks.cli import main
from prefbench.benchmarks.run_spec import RunSpec
from prefbench.benchmarks.suites import AgentEntry, Suite
from prefbench.benchmarks.train import train
from prefbench.envs.tasks import TASKS

TESTS_DIR = Path(__file__).resolve().parent


@pytest.mark.parametrize("preset", list(RL_PRESETS))
def test_every_preset_configures_every_sb3_agent_on_its_tasks(preset):
    tasks = RL_PRESETS.get(preset).tasks
    assert preset == "paper" or tasks
    for task in tasks:
        assert task in TASKS
        for agent in ("pref-ppo", "ppo"):
            spec = AGENTS.get(agent)
            run = RunSpec(task=task, agent=agent, preset=preset)
            config = spec.configure(run.agent_overrides(task, spec.config))
            assert config.rl.algo == "ppo"


def test_zoo_values_and_run_overrides_win():
    spec = AGENTS.get("pref-ppo")
    run = RunSpec(task="halfcheetah", agent="pref-ppo", preset="zoo", overrides=("rl.gamma=0.9",))
    rl = spec.configure(run.agent_overrides("halfcheetah", spec.config)).rl
    assert rl.gamma == 0.9  # --set after the preset
    assert rl.normalize and rl.n_steps == 512 and rl.net_arch == (256, 256)
    assert rl.algo_kwargs["n_epochs"] == 20 and rl.policy_kwargs["activation"] == "relu"
    # An agent without RL settings ignores a preset.
    random = AGENTS.get("random")
    assert (
        RunSpec(task="pendulum", agent="random", preset="zoo").agent_overrides(
            "pendulum", random.config
        )
        == ()
    )


def test_preset_is_recorded_and_applied(tmp_path):
    cfg = tiny_config(tmp_path, "ppo", preset="zoo", steps=2048)
    train(cfg)
    run = next(tmp_path.iterdir())
    config = json.loads((run / "config.json").read_text())
    assert config["run"]["spec"]["preset"] == "zoo"
    rl = config["agent_config"]["rl"]
    assert rl["gamma"] == 0.9 and rl["algo_kwargs"]["use_sde"] is True
    assert rl["n_steps"] == 256  # the tiny override comes after the preset


def test_unknown_preset_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["train", "--task", "pendulum", "--preset", "nope", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nope" in err, err
    with pytest.raises(Exception, match="nope"):
        Suite(
            "s", "", ("pendulum",), (AgentEntry("ppo"),), steps={"*": 512}, preset="nope"
        ).validate()


def test_suite_preset_reaches_its_cells_and_their_keys():
    plain = Suite("s", "", ("pendulum",), (AgentEntry("ppo"),), steps={"*": 512}, seeds=1)
    zoo = Suite(
        "s", "", ("pendulum",), (AgentEntry("ppo"),), steps={"*": 512}, seeds=1, preset="zoo"
    )
    (a,), (b,) = plain.cells(), zoo.cells()
    assert b.spec.preset == "zoo" and a.key != b.key


def test_normalised_learner_resumes_with_its_statistics(tmp_path):
    cfg = tiny_config(tmp_path, "ppo", "rl.normalize=true", steps=4096)
    with pytest.raises(Stop):
        train(cfg, on_progress=_interrupt_at(2560))
    run = next(tmp_path.iterdir())
    saved = json.loads((run / "resume" / "step-000000002048" / "normalize.json").read_text())
    assert saved["obs"]["count"] > 2000 and len(saved["obs"]["mean"]) == 3
    summary = train(cfg)
    assert summary["steps"] == 4096
    final = json.loads((run / "checkpoints" / "normalize.json").read_text())
    assert final["obs"]["count"] > saved["obs"]["count"]  # went on from the saved counts


def test_whole_episode_clips_get_distinct_accuracy_pairs(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    cfg = tiny_config(
        tmp_path,
        "pref-ppo",
        task="plugin_example:WHOLE_EPISODE_PENDULUM",
        accuracy_pairs=40,
        eval_episodes=2,
    )
    train(cfg)
    metrics = pd.read_csv(next(tmp_path.iterdir()) / "metrics.csv")
    # Two episodes give two clips; 16 at a time are added until 80 clip starts exist.
    assert (metrics["rm_accuracy_episodes"] >= 80).all(), metrics["rm_accuracy_episodes"]
    assert np.isfinite(metrics["rm_accuracy"]).all()
