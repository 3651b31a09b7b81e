import logging
from pathlib import Path

import pytest

from prefbench.agents import AGENTS, AgentSpec, RunContext
from prefbench.agents.baselines import RandomAgent, TrueRewardAgent
from prefbench.agents.config import ConfigError, apply_overrides, to_plain
from prefbench.agents.preference import PreferenceAgent, PreferenceAgentConfig
from prefbench.agents.rl import RLConfig
from prefbench.envs.kinds import Budget
from prefbench.envs.registry import Registry, UnknownIdError, import_object
from prefbench.envs.tasks import TASKS, TaskSpec, get_task

TESTS_DIR = Path(__file__).parent
BASE = PreferenceAgentConfig()


# -------------------------------------------------------------------- overrides


def test_overrides_parse_by_field_type():
    cfg = apply_overrides(
        BASE,
        [
            "rl.n_envs=2",
            "rl.gamma=0.9",
            "reward.use_actions=false",
            "reward.hidden_sizes=32,32",
            "rl.ent_coef=none",
            "rl.n_steps=128",
            "reward.l2_ratio_range=1.2, 1.6",
            "loop.query=uniform",
            'rl.algo_kwargs={"clip_range": 0.1, "n_epochs": 3}',
            "reward.lr=3e-4",
        ],
    )
    assert cfg.rl.n_envs == 2 and isinstance(cfg.rl.n_envs, int)
    assert cfg.rl.gamma == 0.9
    assert cfg.reward.use_actions is False
    assert cfg.reward.hidden_sizes == (32, 32)
    assert cfg.rl.ent_coef is None
    assert cfg.rl.n_steps == 128
    assert cfg.reward.l2_ratio_range == (1.2, 1.6)
    assert cfg.loop.query == "uniform"
    assert cfg.rl.algo_kwargs == {"clip_range": 0.1, "n_epochs": 3}
    assert cfg.reward.lr == pytest.approx(3e-4)
    # Untouched fields and the original config are unchanged.
    assert cfg.loop.oversample == BASE.loop.oversample
    assert BASE.rl.n_envs == 4 and BASE.reward.hidden_sizes == (64, 64)


def test_overrides_optional_and_bool_spellings():
    cfg = apply_overrides(BASE, ["rl.ent_coef=0.5", "rl.n_steps=null"])
    assert cfg.rl.ent_coef == 0.5 and cfg.rl.n_steps is None
    for text, value in (("1", True), ("yes", True), ("On", True), ("0", False), ("no", False)):
        assert apply_overrides(BASE, [f"reward.use_actions={text}"]).reward.use_actions is value
    assert apply_overrides(BASE, []) is BASE


def test_overrides_parse_literal_fields():
    # Fields typed Literal[...] (alone or in a union) take exactly their listed values.
    from prefbench.agents.offline import iql, rwr

    assert apply_overrides(rwr.Config(), ["weight_by=return"]).weight_by == "return"
    assert apply_overrides(iql.Config(), ["reward_scale=dataset"]).reward_scale == "dataset"
    assert apply_overrides(iql.Config(), ["reward_scale=2.5"]).reward_scale == 2.5
    for bad in (["weight_by=Return"], ["weight_by="]):
        with pytest.raises(ConfigError, match="expected one of return_to_go, return"):
            apply_overrides(rwr.Config(), bad)
    with pytest.raises(ConfigError):
        apply_overrides(iql.Config(), ["reward_scale=best"])


@pytest.mark.parametrize(
    "override",
    [
        "rl.nope=1",
        "nope=1",
        "novalue",
        "=3",
        "rl=1",
        "rl.n_envs.x=1",
        "rl.n_envs=abc",
        "rl.n_envs=1.5",
        "rl.gamma=fast",
        "rl.gamma=nan",
        "reward.use_actions=maybe",
        "reward.hidden_sizes=32,x",
        "rl.algo_kwargs=[1, 2]",
        "rl.algo_kwargs={bad json",
        "rl.n_envs=0",
        "reward.ensemble_size=0",
        "rl.gamma=1.5",
        "loop.query=nope",
        "rl.algo=nope",
        "rl.net_arch=0",  # a hidden layer of width 0
        "rl.net_arch=64,-1",
        "rl.learning_rate=-1",  # gradient ascent
    ],
)
def test_bad_overrides_raise_config_error(override):
    with pytest.raises(ConfigError) as info:
        apply_overrides(BASE, [override])
    assert "\n" not in str(info.value)


def test_unknown_key_error_names_valid_keys():
    with pytest.raises(ConfigError, match="n_envs"):
        apply_overrides(BASE, ["rl.n_env=2"])


def test_to_plain_is_json_ready():
    plain = to_plain(apply_overrides(BASE, ["reward.hidden_sizes=8"]))
    assert plain["reward"]["hidden_sizes"] == [8]
    assert plain["rl"]["n_envs"] == 4
    assert isinstance(plain["loop"], dict)


# --------------------------------------------------------------------- registry


def test_registry_get_register_and_errors():
    reg: Registry[int] = Registry("widget")
    reg.register("b", 2)
    reg.register("a", 1)
    assert reg.get("a") == 1
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"]
    assert "a" in reg and "c" not in reg
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 3)
    reg.register("a", 3, overwrite=True)
    assert reg.get("a") == 3
    for bad in ("", "x:y"):
        with pytest.raises(ValueError):
            reg.register(bad, 0)
    with pytest.raises(UnknownIdError) as info:
        reg.get("c")
    msg = str(info.value)
    assert "unknown widget 'c'" in msg and "a, b" in msg


def test_import_paths_resolve():
    assert import_object("prefbench.envs.tasks:TaskSpec") is TaskSpec
    assert import_object("prefbench.envs.tasks.TaskSpec") is TaskSpec
    assert import_object("prefbench.agents.rl:RLConfig.__init__") is RLConfig.__init__
    for bad in ("nope_module_xyz:Thing", "prefbench.envs.tasks:Nope", "justaname", ":Name"):
        with pytest.raises(UnknownIdError):
            import_object(bad)


def test_task_registry_import_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    assert get_task("pendulum").env_id == "Pendulum-v1"
    spec = get_task("plugin_example:SHORT_PENDULUM")
    assert isinstance(spec, TaskSpec) and spec.horizon == 100
    assert "short-pendulum" not in TASKS
    with pytest.raises(TypeError):
        get_task("prefbench.envs.tasks:CLIP_SECONDS")
    with pytest.raises(UnknownIdError) as info:
        get_task("nope")
    assert "pendulum" in str(info.value) and "halfcheetah" in str(info.value)


def test_builtin_agents_registered():
    names = set(AGENTS)
    assert {"pref-ppo", "pref-a2c", "pref-trpo", "ppo", "a2c", "trpo", "random"} <= names
    for algo in ("ppo", "a2c", "trpo"):
        pref = AGENTS.get(f"pref-{algo}")
        assert pref.cls is PreferenceAgent and pref.uses_teacher
        assert pref.config.rl.algo == algo
        base = AGENTS.get(algo)
        assert base.cls is TrueRewardAgent and not base.uses_teacher
        assert base.config.rl.algo == algo
    rnd = AGENTS.get("random")
    assert rnd.cls is RandomAgent and rnd.config is None and not rnd.uses_teacher
    with pytest.raises(UnknownIdError) as info:
        AGENTS.get("nope")
    assert "pref-ppo" in str(info.value) and "random" in str(info.value)


def _ctx(tmp_path):
    return RunContext(
        task=get_task("pendulum"),
        seed=0,
        budget=Budget(10, "env_steps"),
        label_budget=0,
        device="cpu",
        run_dir=tmp_path,
        logger=logging.getLogger("test"),
    )


def test_user_agent_plugs_in_by_import_path(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    spec = AGENTS.get("plugin_example:MyAgent")
    assert isinstance(spec, AgentSpec)
    assert spec.cls.__name__ == "MyAgent"
    assert spec.uses_teacher is False
    assert spec.config is None
    assert spec.description.startswith("Always pushes")
    agent = spec.build(_ctx(tmp_path), None)
    assert agent.predict([[0.0, 0.0, 0.0]]).shape == (1, 1)
    with pytest.raises(ValueError):
        spec.build(_ctx(tmp_path), None, ["x=1"])  # no config to override
    with pytest.raises(TypeError):
        AGENTS.get("plugin_example:NotAnAgent").build(_ctx(tmp_path), None)
    with pytest.raises(TypeError):
        AGENTS.get("plugin_example:NOT_A_CLASS")
    with pytest.raises(UnknownIdError):
        AGENTS.get("plugin_example:Missing")


def test_label_schedule():
    from prefbench.agents.schedule import label_schedule

    total, budget = 10_000, 100
    counts = [label_schedule(s, total, budget, 25, 2e6) for s in range(0, total + 1, 500)]
    assert counts[0] == 25
    assert counts[-1] == budget
    assert all(b >= a for a, b in zip(counts, counts[1:], strict=False))
    assert all(25 <= c <= budget for c in counts)
    # Nearly linear when T << c; the whole budget at the last step.
    assert label_schedule(5_000, total, budget, 25, 2e6) in (62, 63)
    assert label_schedule(20_000, total, budget, 25, 2e6) == budget
    assert label_schedule(0, total, budget, 0, 2e6) == 0
    # Atari: 500 labels up front, capped at a smaller budget.
    assert label_schedule(0, total, 3300, 500, 5e6) == 500
    assert label_schedule(0, total, 300, 500, 5e6) == 300


# -------------------------------------------------------------------- saved policies


def _saved_policy(tmp_path: Path, algo: str) -> Path:
    from prefbench.agents.rl import build_learner
    from prefbench.envs.rollout import make_vec_env

    task = get_task("pendulum")
    learner = build_learner(
        RLConfig(algo=algo, n_envs=1, n_steps=64),
        task,
        make_vec_env(task, 1, 0),
        seed=0,
        device="cpu",
    )
    path = tmp_path / algo / "policy.zip"
    path.parent.mkdir()
    learner.save(path)
    return path


def test_load_policy_round_trip_and_foreign_archives(tmp_path):
    import numpy as np
    from stable_baselines3 import A2C, PPO

    from prefbench.agents.rl import load_policy, saved_algorithm
    from prefbench.envs.data import CheckpointError

    a2c = _saved_policy(tmp_path, "a2c")
    ppo = _saved_policy(tmp_path, "ppo")
    assert saved_algorithm(a2c) == "a2c"
    assert type(load_policy(a2c, "a2c")) is A2C
    policy = load_policy(ppo, "ppo")
    assert type(policy) is PPO
    action, _ = policy.predict(np.zeros((1, 3), dtype=np.float32), deterministic=True)
    assert action.shape == (1, 1)
    # SB3 alone would load an A2C archive as PPO without complaint.
    with pytest.raises(CheckpointError, match="trained with a2c, not ppo"):
        load_policy(a2c, "ppo")
    with pytest.raises(CheckpointError, match="not an SB3 policy archive"):
        load_policy(_write(tmp_path / "junk.zip", b"not a zip"), "ppo")
    with pytest.raises(CheckpointError, match="no policy checkpoint"):
        load_policy(tmp_path / "missing.zip", "ppo")
    with pytest.raises(UnknownIdError, match="unknown RL algorithm 'dqn'"):
        load_policy(ppo, "dqn")


def test_resume_refuses_a_policy_of_another_algorithm(tmp_path):
    from prefbench.agents.rl import build_learner, restore_learner
    from prefbench.envs.data import CheckpointError
    from prefbench.envs.rollout import make_vec_env

    a2c = _saved_policy(tmp_path, "a2c")
    task = get_task("pendulum")
    venv = make_vec_env(task, 1, 0)
    ppo = build_learner(
        RLConfig(algo="ppo", n_envs=1, n_steps=64), task, venv, seed=0, device="cpu"
    )
    with pytest.raises(CheckpointError, match="trained with a2c, not ppo"):
        restore_learner(ppo, a2c, 10)
    same = build_learner(
        RLConfig(algo="a2c", n_envs=1, n_steps=64), task, venv, seed=1, device="cpu"
    )
    restore_learner(same, a2c, 10)
    assert same.num_timesteps == 10


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
