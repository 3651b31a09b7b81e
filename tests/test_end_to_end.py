import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny import tiny_config

from prefbench.agents.device import resolve_device
from prefbench.agents.reward_checkpoint import load_reward_model
from prefbench.benchmarks.run_folder import run_name
from prefbench.benchmarks.run_spec import RunSpec, TrainConfig
from prefbench.benchmarks.train import train
from prefbench.envs.data import load_dataset

TESTS_DIR = Path(__file__).parent
PREF_OVERRIDES = (
    "rl.n_envs=2",
    "rl.n_steps=256",
    "loop.update_every=512",
    "loop.random_steps=1000",
    "loop.initial_epochs=2",
)
COMPARED = ["steps", "labels_used", "true_return", "rm_accuracy"]


def pref_config(out: Path) -> TrainConfig:
    return tiny_config(out, eval_episodes=2, accuracy_pairs=50, overrides=PREF_OVERRIDES)


@pytest.fixture(scope="module")
def pref_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pref")
    cfg = pref_config(out)
    summary = train(cfg)
    return cfg, summary, Path(summary["run_dir"])


def test_run_folder_contents(pref_run):
    cfg, summary, run_dir = pref_run
    assert run_dir.parent == cfg.out
    assert run_dir.name == "pendulum-pref-ppo-oracle-40-s0"
    for name in ("config.json", "metrics.csv", "summary.json", "log.txt"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.glob("*.tmp*"))

    config = json.loads((run_dir / "config.json").read_text())
    spec = config["run"]["spec"]
    assert spec["task"] == "pendulum" and spec["label_budget"] == 40
    assert config["agent_config"]["rl"]["n_envs"] == 2
    assert config["agent_config"]["rl"]["n_steps"] == 256
    assert config["agent_config"]["loop"]["update_every"] == 512
    assert config["clip_length"] == 30
    # The run config leaves the device on auto: CUDA where present, else the CPU.
    assert config["device"] == str(resolve_device("auto"))
    assert "torch" in config["versions"]

    stored = json.loads((run_dir / "summary.json").read_text())
    assert stored["run_dir"] == str(run_dir)
    assert stored["labels_used"] == 40 and stored["label_budget"] == 40
    assert stored["steps"] == summary["steps"] >= 2048
    assert stored["teacher"] == "oracle"
    assert math.isfinite(stored["final_true_return"])
    assert stored["final_rm_accuracy"] == summary["final_rm_accuracy"]


def test_metrics_csv(pref_run):
    _, summary, run_dir = pref_run
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert len(metrics) >= 3
    steps = metrics["steps"].to_numpy()
    labels = metrics["labels_used"].to_numpy()
    assert steps[0] == 0 and np.all(np.diff(steps) > 0)
    assert np.all(np.diff(labels) >= 0)
    assert labels[0] == 10  # 25% of the budget before RL starts
    assert labels[-1] == 40
    acc = metrics["rm_accuracy"].to_numpy()
    # Measured on this seeded run: 0.71, 0.74, 0.88 on 50 fresh pairs.
    assert acc[-1] >= 0.8 and acc[-1] > acc[0], acc
    assert acc[-1] == pytest.approx(summary["final_rm_accuracy"])
    assert np.all(np.isfinite(metrics["true_return"]))
    assert np.all(metrics["true_return"] < 0)  # pendulum rewards are never positive
    assert {"rm_train_loss", "rm_val_loss", "wall_time", "train_time"} <= set(metrics.columns)
    assert metrics["true_return"].iloc[-1] == pytest.approx(summary["final_true_return"])


def test_checkpoints_load(pref_run):
    _, _, run_dir = pref_run
    ckpt = run_dir / "checkpoints"
    assert (ckpt / "policy.zip").is_file()
    model = load_reward_model(ckpt / "reward_model.pt", device="cpu")
    data = load_dataset(ckpt / "labels.npz")
    assert 0 < len(data) <= 40
    assert data.pairs.clip_length == 30
    assert data.pairs.obs.shape[1:] == (2, 30, 3)
    assert data.pairs.acts.shape[1:] == (2, 30, 1)
    assert set(np.unique(data.prefs)) <= {0.0, 0.5, 1.0}
    assert model.holdout.shape == (len(data), model.config.ensemble_size)
    r = model.reward(data.pairs.obs[:, 0].reshape(-1, 3), data.pairs.acts[:, 0].reshape(-1, 1))
    assert r.shape == (len(data) * 30,) and np.all(np.isfinite(r))
    # On its own 40 labels (bootstrap resamples, 1/e held out per member): 0.70 measured.
    assert model.preference_accuracy(data.pairs, data.prefs) >= 0.6


def test_same_config_is_reproducible(pref_run, tmp_path):
    _, _, run_dir = pref_run
    summary = train(pref_config(tmp_path / "again"))
    first = pd.read_csv(run_dir / "metrics.csv")[COMPARED]
    second = pd.read_csv(Path(summary["run_dir"]) / "metrics.csv")[COMPARED]
    pd.testing.assert_frame_equal(first, second)
    np.testing.assert_array_equal(
        load_dataset(run_dir / "checkpoints" / "labels.npz").prefs,
        load_dataset(Path(summary["run_dir"]) / "checkpoints" / "labels.npz").prefs,
    )


def test_finished_run_is_not_rerun(pref_run):
    cfg, summary, run_dir = pref_run
    metrics = run_dir / "metrics.csv"
    before = metrics.stat().st_mtime_ns
    again = train(cfg)
    assert again == json.loads((run_dir / "summary.json").read_text())
    assert again["wall_time"] == summary["wall_time"]
    assert metrics.stat().st_mtime_ns == before


def test_ppo_baseline(tmp_path):
    cfg = tiny_config(tmp_path, "ppo", steps=1024, eval_every=512, eval_episodes=2)
    summary = train(cfg)
    run_dir = Path(summary["run_dir"])
    assert run_dir.name == "pendulum-ppo-s0"
    assert summary["teacher"] is None and summary["label_budget"] == 0
    assert summary["final_rm_accuracy"] is None
    # Strict JSON: no NaN constants.
    json.loads((run_dir / "summary.json").read_text(), parse_constant=pytest.fail)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["rm_accuracy"].isna().all()
    assert (metrics["labels_used"] == 0).all()
    assert metrics["steps"].iloc[-1] >= 1024
    assert "train_true_return" in metrics.columns
    assert (run_dir / "checkpoints" / "policy.zip").is_file()
    assert not (run_dir / "checkpoints" / "reward_model.pt").exists()


def test_random_baseline_and_unfinished_folder_restart(tmp_path):
    cfg = TrainConfig(
        RunSpec(task="pendulum", agent="random", steps=1000, eval_episodes=2),
        out=tmp_path,
        progress=False,
    )
    stale = tmp_path / "pendulum-random-s0"
    stale.mkdir(parents=True)
    (stale / "junk.txt").write_text("left by a killed run")
    summary = train(cfg)
    run_dir = Path(summary["run_dir"])
    assert run_dir == stale
    assert not (run_dir / "junk.txt").exists()
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["steps"].tolist() == [0, 1000]
    assert metrics["rm_accuracy"].isna().all()
    assert summary["final_rm_accuracy"] is None
    assert summary["steps"] == 1000


def test_user_agent_by_import_path(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    cfg = TrainConfig(
        RunSpec(task="pendulum", agent="plugin_example:MyAgent", steps=500, eval_episodes=2),
        out=tmp_path,
        progress=False,
    )
    summary = train(cfg)
    run_dir = Path(summary["run_dir"])
    assert run_dir.name == "pendulum-plugin_example.MyAgent-s0"
    assert (run_dir / "checkpoints" / "plugin.txt").read_text() == "saved"
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["steps"].tolist() == [0, 500]
    assert metrics["plugin_metric"].iloc[-1] == 1.5
    assert summary["label_budget"] == 0


def test_run_name_has_no_path_separators_for_import_paths():
    spec = RunSpec(
        task="mypkg.tasks:TASK",
        agent="mypkg.agents:Agent",
        teacher="mypkg.teachers:Teacher",
        label_budget=10,
    )
    name = run_name(spec, uses_teacher=True)
    assert ":" not in name and "/" not in name
    assert name.startswith("mypkg.tasks.TASK-mypkg.agents.Agent-")


def test_small_label_budget_completes(tmp_path):
    # With 1 initial label, every member may keep it for training (no held-out labels,
    # P = (1 - 1/e)^3 ~ 0.25; so it is for seed 0). The validation loss is then undefined,
    # which is not a divergence: the run must finish.
    cfg = tiny_config(
        tmp_path, "pref-ppo", "loop.update_every=256", label_budget=4, steps=512, eval_every=512
    )
    summary = train(cfg)
    assert summary["labels_used"] == 4
    assert (Path(summary["run_dir"]) / "summary.json").is_file()


@pytest.mark.parametrize("agent", ["pref-a2c", "pref-trpo"])
def test_other_preference_learners_run(agent, tmp_path):
    cfg = tiny_config(
        tmp_path,
        agent,
        "loop.update_every=512",
        label_budget=20,
        steps=1024,
        eval_every=512,
        seed=1,
    )
    summary = train(cfg)
    assert summary["labels_used"] == 20 and summary["steps"] >= 1024
    assert math.isfinite(summary["final_rm_accuracy"])
    config = json.loads((Path(summary["run_dir"]) / "config.json").read_text())
    assert config["agent_config"]["rl"]["algo"] == agent.removeprefix("pref-")


def test_whole_label_budget_is_used_before_the_end(tmp_path):
    cfg = tiny_config(
        tmp_path,
        "pref-ppo",
        "rl.n_envs=1",
        "rl.n_steps=300",
        "loop.update_every=1000",
        label_budget=50,
        steps=9300,
        eval_every=9300,
    )
    summary = train(cfg)
    # Rollouts of 300 steps, updates every 465 (a twentieth of the run): at 600, 1200,
    # ..., 9000; none at the last rollout (9300). The budget must be complete by 9000.
    assert summary["labels_used"] == 50
