"""Offline datasets: the Episodes type, Minari round trips, recording, ``data make``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prefbench.envs.data import CheckpointError, Trajectory
from prefbench.envs.episodes import Episodes, load_episodes, save_episodes

minari = pytest.importorskip("minari")


def _episodes(lengths=(3, 2), terminated=(True, False), obs_dim=2, act_dim=1) -> Episodes:
    n = sum(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    term = np.zeros(n, dtype=bool)
    trunc = np.zeros(n, dtype=bool)
    for e, t in enumerate(terminated):
        (term if t else trunc)[starts[e + 1] - 1] = True
    obs = np.arange(n * obs_dim, dtype=np.float32).reshape(n, obs_dim)
    next_obs = np.concatenate([obs[1:], obs[-1:]])
    next_obs[starts[1:] - 1] = -1 - np.arange(len(lengths))[:, None]  # final observations
    return Episodes(
        obs,
        np.ones((n, act_dim), dtype=np.float32),
        np.arange(1, n + 1, dtype=np.float32),
        next_obs,
        term,
        trunc,
        starts,
    )


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    return tmp_path / "datasets"


# ------------------------------------------------------------------ Episodes
def test_returns_to_go_and_boundaries():
    ep = _episodes()
    np.testing.assert_allclose(ep.returns(), [6, 9])
    np.testing.assert_allclose(ep.returns_to_go(), [6, 5, 3, 9, 5])
    np.testing.assert_allclose(ep.returns_to_go(gamma=0.5), [1 + 1 + 0.75, 2 + 1.5, 3, 4 + 2.5, 5])
    np.testing.assert_array_equal(ep.timesteps, [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(ep.episode_of_step, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(ep.terminated, [True, False])
    relabelled = ep.with_rewards(np.zeros(5, dtype=np.float32))
    np.testing.assert_allclose(relabelled.returns_to_go(), 0)
    with pytest.raises(ValueError, match="rewards must be"):
        ep.with_rewards(np.zeros(4, dtype=np.float32))


def test_select_concatenate_and_trajectories():
    ep = _episodes()
    back = ep.select([1, 0])
    np.testing.assert_array_equal(back.starts, [0, 2, 5])
    np.testing.assert_allclose(back.returns(), [9, 6])
    both = Episodes.concatenate([ep, back])
    assert both.n_episodes == 4 and len(both) == 10
    np.testing.assert_array_equal(both.terminated, [True, False, False, True])
    trajs = ep.trajectories()
    assert [len(t) for t in trajs] == [3, 2] and trajs[0].terminated and not trajs[1].terminated
    again = Episodes.from_trajectories(trajs)
    for k in ("obs", "acts", "rewards", "next_obs", "terminations", "truncations", "starts"):
        np.testing.assert_array_equal(getattr(again, k), getattr(ep, k))
    with pytest.raises(ValueError, match="final_obs"):
        Episodes.from_trajectories([Trajectory(ep.obs[:2], ep.acts[:2], ep.rewards[:2])])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(terminations=np.array([1, 0, 1, 0, 0], bool)), "before an episode"),
        (lambda d: d.update(truncations=np.array([0, 0, 1, 0, 1], bool)), "not both"),
        (lambda d: d.update(truncations=np.zeros(5, bool)), "terminated or truncated"),
        (lambda d: d.update(starts=np.array([0, 3, 3, 5])), "rise strictly"),
        (lambda d: d.update(rewards=np.array([1, np.nan, 1, 1, 1], np.float32)), "finite"),
        (lambda d: d.update(next_obs=np.zeros((5, 3), np.float32)), "shape of obs"),
        (lambda d: d.update(next_obs=d["next_obs"] + 1), "following step"),
    ],
)
def test_inconsistent_episodes_are_refused(edit, message):
    ep = _episodes()
    fields = {k: getattr(ep, k) for k in ep.__dataclass_fields__}
    edit(fields)
    with pytest.raises(ValueError, match=message):
        Episodes(**fields)


def test_episodes_file_round_trip_and_corruption(tmp_path):
    ep = _episodes()
    save_episodes(ep, tmp_path / "sub" / "e.npz")
    back = load_episodes(tmp_path / "sub" / "e.npz")
    np.testing.assert_array_equal(back.next_obs, ep.next_obs)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError):
        load_episodes(tmp_path / "bad.npz")


# ---------------------------------------------------------------- recording
def test_training_envs_record_terminations_and_final_observations():
    from prefbench.agents.reward_wrapper import make_training_env
    from prefbench.envs.offline_tasks import OfflineTask

    task = OfflineTask("hopper-random", "", "hopper").control_task  # raw: falls terminate
    venv = make_training_env(task, 2, 0)
    rng = np.random.default_rng(0)
    venv.reset()
    finished = []
    while len(finished) < 4:
        venv.step(rng.uniform(-1, 1, (2, 3)).astype(np.float32))
        finished.extend(venv.pop_finished())
    venv.close()
    assert all(t.terminated and t.final_obs is not None for t in finished)
    ep = Episodes.from_trajectories(finished)
    assert ep.terminations.sum() == len(finished) and not ep.truncations.any()
    # Within an episode, next_obs is the following step's obs.
    np.testing.assert_array_equal(ep.next_obs[0], ep.obs[1])

    from prefbench.envs.tasks import get_task

    venv = make_training_env(get_task("pendulum"), 1, 0)  # fixed horizon: truncations
    venv.reset()
    for _ in range(200):
        venv.step(np.zeros((1, 1), dtype=np.float32))
    (traj,) = venv.pop_finished()
    venv.close()
    assert len(traj) == 200 and not traj.terminated and traj.final_obs.shape == (3,)


# ------------------------------------------------------------------- Minari
def test_minari_round_trip(minari_root):
    import gymnasium as gym

    from prefbench.envs.minari_io import read_dataset, write_dataset

    env = gym.make("Pendulum-v1")
    n = 7
    obs = np.random.default_rng(0).normal(size=(n + 2, 3)).astype(np.float32)
    ep = Episodes(
        np.delete(obs, [3, 8], axis=0),
        np.random.default_rng(1).uniform(-2, 2, size=(n, 1)).astype(np.float32),
        np.linspace(-1, 1, n).astype(np.float32),
        np.delete(obs, [0, 4], axis=0),
        np.array([0, 0, 1, 0, 0, 0, 0], bool),
        np.array([0, 0, 0, 0, 0, 0, 1], bool),
        np.array([0, 3, 7]),
    )
    write_dataset(
        "prefbench/pendulum/test-v0",
        ep,
        env,
        ref_min_score=-10,
        ref_max_score=10,
        algorithm_name="test",
        description="test",
        extra={"steps": n},
    )
    # Minari itself reads it, with the final observation of each episode.
    ds = minari.load_dataset("prefbench/pendulum/test-v0")
    assert ds.total_episodes == 2 and ds.total_steps == n
    first = next(ds.iterate_episodes())
    assert first.observations.shape == (4, 3) and bool(first.terminations[-1])
    np.testing.assert_allclose(first.observations[-1], ep.next_obs[2])
    back, info = read_dataset("prefbench/pendulum/test-v0")
    for k in ("obs", "acts", "rewards", "next_obs", "terminations", "truncations", "starts"):
        np.testing.assert_array_equal(getattr(back, k), getattr(ep, k))
    assert info.env_id == "Pendulum-v1" and info.metadata["prefbench"]["complete"]
    np.testing.assert_allclose(info.normalized_score(np.array([0.0, 10.0])), [50, 100])
    with pytest.raises(FileExistsError):
        write_dataset(
            "prefbench/pendulum/test-v0",
            ep,
            env,
            ref_min_score=0,
            ref_max_score=1,
            algorithm_name="",
            description="",
            extra={},
        )
    # A truncated data file is refused with a one-line reason.
    data = next((minari_root / "prefbench/pendulum/test-v0/data").glob("*.hdf5"))
    data.write_bytes(data.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="unreadable"):
        read_dataset("prefbench/pendulum/test-v0")


def test_unknown_dataset_ids_name_the_command(minari_root, capsys):
    from prefbench.benchmarks.cli import main

    assert main(["data", "make", "hopper-mediocre"]) == 2
    err = capsys.readouterr().err.strip()
    assert "hopper-medium-replay" in err and "prefbench data make" in err and "\n" not in err
    assert main(["data", "make", "hopper", "--snapshot-every", "0"]) == 2
    assert main(["data", "list"]) == 0
    assert "not built" in capsys.readouterr().out


# ---------------------------------------------------------------- data make
TINY = dict(
    behaviour_steps=1024, snapshot_every=512, dataset_steps=300, eval_episodes=2, collect_envs=2
)


def test_data_make_builds_resumes_and_records(minari_root, monkeypatch):
    from prefbench.benchmarks import data_make
    from prefbench.benchmarks.data_config import DataMakeConfig
    from prefbench.envs.offline_tasks import get_offline_task

    config = DataMakeConfig(**TINY)
    calls = {"n": 0}
    real = data_make.DatasetBuilder._snapshot

    def killed_after_first(self, *args):
        real(self, *args)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # the process dies after its first snapshot

    monkeypatch.setattr(data_make.DatasetBuilder, "_snapshot", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        data_make.make_datasets("hopper-medium-replay", config, log=lambda _: None)
    monkeypatch.setattr(data_make.DatasetBuilder, "_snapshot", real)
    lines: list[str] = []
    data_make.make_datasets("hopper", config, log=lines.append)
    assert any("resumes at 512" in line for line in lines)
    behaviour = next((minari_root / ".prefbench" / "behaviour").iterdir())
    snaps = json.loads((behaviour / "snapshots.json").read_text())["snapshots"]
    assert [s["step"] for s in snaps] == [512, 1024]

    tasks = {q: get_offline_task(f"hopper-{q}") for q in ("random", "medium", "expert")}
    for quality, task in tasks.items():
        episodes, info = task.load()
        assert len(episodes) == 300, quality  # 150 steps of 2 envs
        assert episodes.terminations.any()  # Hopper falls: raw episodes terminate
        assert episodes.truncations[-1]  # the episodes in flight at the end are kept
        meta = info.metadata["prefbench"]
        # The command rebuilds it: every setting away from its default is a flag.
        assert meta["quality"] == quality and meta["command"] == (
            f"prefbench data make hopper-{quality} --behaviour-steps 1024 --snapshot-every 512"
            " --dataset-steps 300 --eval-episodes 2 --collect-envs 2"
        )
        assert meta["behaviour"]["commits"] == sorted({s["commit"] for s in snaps if s["commit"]})
        assert meta["references"]["expert_step"] == 1024
        assert info.ref_min_score == meta["references"]["random_return"]
    medium, _ = tasks["medium"].load()
    expert, _ = tasks["expert"].load()
    both, _ = get_offline_task("hopper-medium-expert").load()
    assert len(both) == len(medium) + len(expert)
    replay, _ = get_offline_task("hopper-medium-replay").load()
    assert replay.n_episodes > 0
    # One build of a task at a time.
    builder = data_make.DatasetBuilder("hopper", config)
    with builder.lock(), pytest.raises(ValueError, match="another"):
        with data_make.DatasetBuilder("hopper", config).lock():
            pass
    # Installed datasets are not built again.
    again: list[str] = []
    data_make.make_datasets("hopper-medium", config, log=again.append)
    assert again == ["hopper-medium: installed as prefbench/hopper/medium-v0"]


def test_a_sac_behaviour_run_resumes_with_its_replay_buffer(minari_root, monkeypatch):
    from prefbench.agents.sb3_agent import REPLAY_BUFFER_FILE, SB3Agent
    from prefbench.benchmarks import data_make
    from prefbench.benchmarks.data_config import DataMakeConfig
    from prefbench.envs.offline_tasks import get_offline_task

    config = DataMakeConfig(**{**TINY, "behaviour_steps": 600, "snapshot_every": 300}, algo="sac")
    assert config.behaviour_key() != DataMakeConfig(**TINY).behaviour_key()
    real_snapshot, real_load = data_make.DatasetBuilder._snapshot, SB3Agent.load_state
    restored: list[int] = []

    def killed_after_first(self, *args):
        real_snapshot(self, *args)
        raise KeyboardInterrupt

    def load_state(self, directory):
        step = real_load(self, directory)
        restored.append(self.learner.replay_buffer.size())
        return step

    monkeypatch.setattr(data_make.DatasetBuilder, "_snapshot", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        data_make.make_datasets("hopper-medium-replay", config, log=lambda _: None)
    monkeypatch.setattr(data_make.DatasetBuilder, "_snapshot", real_snapshot)
    monkeypatch.setattr(SB3Agent, "load_state", load_state)
    data_make.make_datasets("hopper", config, log=lambda _: None)
    # The transitions of the first 300 steps came back; the medium and expert snapshots
    # are then loaded to act (the older one has dropped its buffer).
    assert restored[0] == 300 and len(restored) >= 3
    behaviour = next(
        d
        for d in (minari_root / ".prefbench" / "behaviour").iterdir()
        if d.name.endswith(config.behaviour_key())
    )
    kept = sorted(p.parent.name for p in behaviour.glob(f"snapshots/*/{REPLAY_BUFFER_FILE}"))
    assert kept == ["000000600"]  # only the newest snapshot keeps its buffer
    _, info = get_offline_task("hopper-medium-replay").load()
    meta = info.metadata["prefbench"]
    assert {k: v for k, v in meta["behaviour"].items() if k != "commits"} == {
        "algo": "sac",
        "preset": "",
        "steps": 600,
        "snapshot_every": 300,
    }
