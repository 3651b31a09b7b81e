import importlib.util

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from prefbench.agents.query import (
    SELECTORS,
    DisagreementSelector,
    SelectorOptions,
    UniformSelector,
    make_selector,
)
from prefbench.agents.reward_wrapper import RewardVecEnv
from prefbench.envs.data import ClipPairs, Trajectory
from prefbench.envs.segments import sample_clip_pairs
from prefbench.envs.tasks import TASKS, FixedLengthEpisode, clip_length_for, get_task

HAS_MUJOCO = importlib.util.find_spec("mujoco") is not None
needs_mujoco = pytest.mark.skipif(not HAS_MUJOCO, reason="mujoco is not installed")
NON_MUJOCO = {"pendulum"}


def task_param(name):
    return pytest.param(name, marks=() if name in NON_MUJOCO else needs_mujoco)


# ----------------------------------------------------------------------- tasks


def test_registry_lists_the_paper_tasks():
    atari = {"beamrider", "breakout", "enduro", "pong", "qbert", "seaquest", "spaceinvaders"}
    assert set(TASKS) - atari == {
        "hopper",
        "walker2d",
        "swimmer",
        "halfcheetah",
        "ant",
        "reacher",
        "inverted-pendulum",
        "inverted-double-pendulum",
        "pendulum",
    }


MUJOCO_AND_PENDULUM = [n for n in TASKS.names() if get_task(n).frame_stack == 0]


@pytest.mark.parametrize("name", [task_param(n) for n in MUJOCO_AND_PENDULUM])
def test_every_task_builds_and_steps(name):
    task = get_task(name)
    env = task.make()
    try:
        assert isinstance(env, FixedLengthEpisode)
        assert env.horizon == task.horizon
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs) or obs.shape == env.observation_space.shape
        env.action_space.seed(0)
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs.shape == env.observation_space.shape
        assert np.isfinite(reward)
        assert terminated is False and truncated is False
        assert "absorbing" not in info
    finally:
        env.close()
    obs_space, act_space = task.spaces()
    assert obs_space.shape == env.observation_space.shape
    assert act_space.shape == env.action_space.shape


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("halfcheetah", 30, marks=needs_mujoco),
        ("pendulum", 30),
        pytest.param("reacher", 50, marks=needs_mujoco),  # 75 steps capped at the horizon
        pytest.param("hopper", 188, marks=needs_mujoco),  # dt 0.008: round(187.5)
    ],
)
def test_clip_length_is_one_and_a_half_seconds_capped_at_horizon(name, expected):
    task = get_task(name)
    assert task.clip_length == min(task.horizon, round(1.5 / task.dt))
    assert task.clip_length == expected


def test_clip_length_for():
    assert clip_length_for(0.05) == 30
    assert clip_length_for(0.02) == 75
    assert clip_length_for(10.0) == 1
    with pytest.raises(ValueError):
        clip_length_for(0.0)


@needs_mujoco
def test_hopper_episode_is_fixed_length_and_restarts_after_a_fall():
    env = get_task("hopper").make()
    env.reset(seed=0)
    env.action_space.seed(0)
    steps, restarts = 0, 0
    truncated = False
    while not truncated:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        assert terminated is False
        if info.get("restarted"):
            restarts += 1
            assert reward < -5  # the fall's penalty (-10) outweighs the step's reward
    env.close()
    assert steps == 1000
    assert restarts >= 2  # a random hopper falls within a few dozen steps, again and again


# ----------------------------------------------------------- FixedLengthEpisode


class EarlyEnd(gym.Env):
    """Terminates at step 3 with reward 1 per step; obs is the step count."""

    observation_space = gym.spaces.Box(-100.0, 100.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, end_at=3):
        self.end_at = end_at
        self.t = 0
        self.inner_steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        self.inner_steps += 1
        return np.array([self.t], np.float32), 1.0, self.t >= self.end_at, False, {}


def test_fixed_length_episode_restarts_after_termination():
    inner = EarlyEnd()
    env = FixedLengthEpisode(inner, horizon=8, penalty=-10.0)
    env.reset(seed=0)
    results = [env.step(np.zeros(1, np.float32)) for _ in range(8)]
    assert [r[1] for r in results] == [1.0, 1.0, -9.0, 1.0, 1.0, -9.0, 1.0, 1.0]
    assert all(r[2] is False for r in results)  # never terminated
    assert [r[3] for r in results] == [False] * 7 + [True]
    # After each termination play goes on from the inner env's reset observation.
    assert [float(r[0][0]) for r in results] == [1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0]
    assert [bool(r[4].get("restarted")) for r in results] == [False, False, True] * 2 + [
        False,
        False,
    ]
    assert inner.inner_steps == 8
    with pytest.raises(ValueError, match="on_termination"):
        FixedLengthEpisode(EarlyEnd(), horizon=4, penalty=0.0, on_termination="vanish")


def test_fixed_length_episode_absorbs_termination():
    inner = EarlyEnd()
    env = FixedLengthEpisode(inner, horizon=6, penalty=-10.0, on_termination="absorb")
    env.reset(seed=0)
    results = [env.step(np.zeros(1, np.float32)) for _ in range(6)]
    rewards = [r[1] for r in results]
    assert rewards == [1.0, 1.0, -9.0, 0.0, 0.0, 0.0]
    assert all(r[2] is False for r in results)  # never terminated
    assert [r[3] for r in results] == [False] * 5 + [True]
    observations = [float(r[0][0]) for r in results]
    assert observations == [1.0, 2.0, 3.0, 3.0, 3.0, 3.0]
    assert results[2][4].get("absorbing") is True
    assert inner.inner_steps == 3  # the inner env is not stepped after it ended
    # A reset starts a fresh episode.
    obs, _ = env.reset()
    assert float(obs[0]) == 0.0
    assert env.step(np.zeros(1, np.float32))[1] == 1.0


def test_fixed_length_episode_without_termination():
    env = FixedLengthEpisode(EarlyEnd(end_at=100), horizon=4, penalty=-10.0)
    env.reset()
    out = [env.step(np.zeros(1, np.float32)) for _ in range(4)]
    assert [o[1] for o in out] == [1.0] * 4
    assert [o[3] for o in out] == [False, False, False, True]
    with pytest.raises(ValueError):
        FixedLengthEpisode(EarlyEnd(), horizon=0, penalty=0.0)


# ----------------------------------------------------------------- RewardVecEnv

SECRET = 1234.5


class Leaky(gym.Env):
    """Episodes of 3 steps; reward and info would reveal the true reward."""

    observation_space = gym.spaces.Box(-1000.0, 1000.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, env_id):
        self.env_id = env_id
        self.t = 0

    def _obs(self):
        return np.array([self.env_id, self.t], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {"x_velocity": SECRET}

    def step(self, action):
        self.t += 1
        info = {"reward_forward": SECRET, "x_velocity": SECRET, "reward_ctrl": -1.0}
        return self._obs(), SECRET + self.t, self.t >= 3, False, info


def leaky_venv(n=2):
    return DummyVecEnv([lambda i=i: Monitor(Leaky(i)) for i in range(n)])


def test_reward_vec_env_never_leaks_true_reward():
    calls = []

    def reward_fn(obs, acts):
        calls.append((obs.copy(), acts.copy()))
        return np.zeros(len(obs))

    venv = RewardVecEnv(leaky_venv(), reward_fn)
    obs = venv.reset()
    pre_step = [obs.copy()]
    sent = []
    seen_terminal = False
    for step in range(7):
        acts = np.full((2, 1), 0.1 * step, np.float32)
        sent.append(acts)
        obs, rewards, dones, infos = venv.step(acts)
        pre_step.append(obs.copy())
        assert rewards.dtype == np.float32
        np.testing.assert_array_equal(rewards, np.zeros(2, np.float32))
        for info in infos:
            assert set(info) <= {"terminal_observation", "TimeLimit.truncated"}
            assert "episode" not in info
            seen_terminal |= "terminal_observation" in info
        assert dones.tolist() == [step % 3 == 2] * 2
    assert seen_terminal
    assert venv.total_steps == 14

    # reward_fn saw the observations from before each step and the actions sent.
    assert len(calls) == 7
    for (got_obs, got_acts), expected_obs, acts in zip(calls, pre_step, sent, strict=False):
        np.testing.assert_array_equal(got_obs, expected_obs)
        np.testing.assert_array_equal(got_acts, acts)

    finished = venv.pop_finished()
    assert len(finished) == 4  # two episodes of 3 steps in each of 2 envs
    assert venv.pop_finished() == []
    for traj in finished:
        assert isinstance(traj, Trajectory) and len(traj) == 3
        expected = np.array([SECRET + 1, SECRET + 2, SECRET + 3], np.float32)
        np.testing.assert_array_equal(traj.true_rewards, expected)
        env_id = int(traj.obs[0, 0])
        np.testing.assert_array_equal(traj.obs[:, 1], [0, 1, 2])  # pre-step observations
        assert np.all(traj.obs[:, 0] == env_id)
    first_env0 = next(t for t in finished if t.obs[0, 0] == 0)
    np.testing.assert_array_equal(first_env0.acts, np.stack([a[0] for a in sent[:3]]))
    venv.close()


def test_reward_vec_env_scores_while_worker_processes_step():
    inner = SubprocVecEnv([lambda i=i: Leaky(i) for i in range(2)], start_method="fork")
    waiting = []

    def reward_fn(obs, acts):
        waiting.append(inner.waiting)  # the workers have the actions and are stepping
        return obs[:, 1] + acts[:, 0]

    venv = RewardVecEnv(inner, reward_fn)
    venv.reset()
    for step in range(4):
        acts = np.full((2, 1), 0.5, np.float32)
        _, rewards, _, _ = venv.step(acts)
        # The reward of a step is scored on the observation before it: t = step % 3.
        np.testing.assert_allclose(rewards, [step % 3 + 0.5] * 2)
    assert waiting == [True] * 4
    venv.close()


def test_reward_vec_env_passes_true_reward_without_reward_fn():
    venv = RewardVecEnv(leaky_venv())
    venv.reset()
    _, rewards, _, infos = venv.step(np.zeros((2, 1), np.float32))
    np.testing.assert_allclose(rewards, [SECRET + 1] * 2)
    assert all("reward_forward" not in i for i in infos)
    venv.close()


def test_reward_vec_env_rejects_wrong_reward_shape():
    venv = RewardVecEnv(leaky_venv(), lambda obs, acts: np.zeros(3))
    venv.reset()
    with pytest.raises(ValueError, match="shape"):
        venv.step(np.zeros((2, 1), np.float32))
    venv.close()


def test_reward_vec_env_reset_discards_partial_trajectories():
    venv = RewardVecEnv(leaky_venv(1))
    venv.reset()
    venv.step(np.zeros((1, 1), np.float32))
    venv.reset()
    for _ in range(3):
        venv.step(np.zeros((1, 1), np.float32))
    (traj,) = venv.pop_finished()
    assert len(traj) == 3
    venv.close()


# --------------------------------------------------------------- query selection


class FakeEnsemble:
    """Member preferences whose variance is a known function of each pair's first obs."""

    def __init__(self):
        self.calls = []

    def member_preferences(self, pairs: ClipPairs) -> np.ndarray:
        self.calls.append(len(pairs))
        key = pairs.obs[:, 0, 0, 0] * 100 + pairs.obs[:, 1, 0, 0]  # distinct per pair
        spread = (key % 37) / 100.0
        return np.stack([0.5 - spread, 0.5 + spread, np.full_like(spread, 0.5)])  # (K=3, N)


def trajectories():
    out = []
    for i in range(3):
        t = np.arange(40, dtype=np.float32) + 40 * i
        out.append(Trajectory(t[:, None], np.zeros((40, 1), np.float32), t.copy()))
    return out


def test_disagreement_selector_keeps_top_variance_candidates():
    trajs, model = trajectories(), FakeEnsemble()
    selector = DisagreementSelector(oversample=5)
    selected = selector.select(trajs, 8, 4, np.random.default_rng(9), model)
    assert model.calls == [40]
    candidates = sample_clip_pairs(trajs, 40, 4, np.random.default_rng(9))
    variance = model.member_preferences(candidates).var(axis=0)
    top = np.sort(np.argsort(-variance, kind="stable")[:8])
    assert len(selected) == 8 and selected.clip_length == 4
    np.testing.assert_array_equal(selected.obs, candidates.obs[top])
    sel_var = model.member_preferences(selected).var(axis=0)
    rest = np.delete(variance, top)
    assert sel_var.min() >= rest.max()


def test_disagreement_selector_without_model_is_uniform():
    trajs = trajectories()
    a = DisagreementSelector(10).select(trajs, 6, 4, np.random.default_rng(1), None)
    b = UniformSelector().select(trajs, 6, 4, np.random.default_rng(1), None)
    np.testing.assert_array_equal(a.obs, b.obs)
    with pytest.raises(ValueError):
        DisagreementSelector(0)
    options = SelectorOptions(oversample=7)
    built = make_selector("disagreement", options)
    assert isinstance(built, DisagreementSelector) and built.oversample == 7
    assert isinstance(make_selector("uniform", options), UniformSelector)
    assert set(SELECTORS) == {"disagreement", "uniform"}
