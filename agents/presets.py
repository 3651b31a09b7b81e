"""Named RL settings per task: the paper's, and rl-baselines3-zoo's tuned PPO.

A preset is a list of ``--set`` overrides per task id, applied to an SB3 agent's config
before the run's own overrides (so ``--set`` still wins). The tuned presets are PPO
settings and do not change the algorithm: with a TRPO or A2C agent they fail as
settings that learner rejects, instead of silently training PPO. ``paper`` is the agents' own
defaults (Christiano et al. 2017: discount 0.995, GAE 0.97, the task's entropy bonus).
``zoo`` is rl-baselines3-zoo's tuned PPO for the MuJoCo tasks (its ``hyperparams/ppo.yml``,
tuned on v3/v4 with the same dynamics as v5) and Pendulum-v1, including its observation
and reward normalisation (``normalize: true``). ``imitation`` is imitation 1.0.1's tuned
PPO for its seals tasks (``train_preference_comparisons``), the peer library the issue
tracker compares against; it normalises nothing.

``prefbench list presets`` shows them; a run records its preset in ``config.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from prefbench.envs.registry import Registry, instance_of


@dataclass(frozen=True)
class RLPreset:
    """RL settings by task id.

    Attributes:
        name: Preset id.
        description: One line for listings.
        source: Where the numbers come from.
        tasks: Task id -> ``key=value`` overrides of the agent config (``rl.*`` keys).
    """

    name: str
    description: str
    source: str
    tasks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def overrides(self, task: str) -> tuple[str, ...]:
        """The overrides for ``task``; none for a task the preset has no entry for."""
        return self.tasks.get(task, ())


def _zoo(
    n_envs: int,
    n_steps: int,
    batch: int,
    gamma: float,
    lam: float,
    lr: float,
    ent: float,
    clip: float,
    epochs: int,
    grad: float,
    vf: float,
    *,
    big_net: bool = False,
    sde: bool = False,
) -> tuple[str, ...]:
    algo = {
        "batch_size": batch,
        "clip_range": clip,
        "n_epochs": epochs,
        "max_grad_norm": grad,
        "vf_coef": vf,
    }
    if sde:
        algo.update(use_sde=True, sde_sample_freq=4)
    kwargs = ",".join(
        f'"{k}":{str(v).lower() if isinstance(v, bool) else v}' for k, v in algo.items()
    )
    out = (
        f"rl.n_envs={n_envs}",
        f"rl.n_steps={n_steps}",
        f"rl.gamma={gamma}",
        f"rl.gae_lambda={lam}",
        f"rl.learning_rate={lr}",
        f"rl.ent_coef={ent}",
        "rl.normalize=true",
        f"rl.algo_kwargs={{{kwargs}}}",
    )
    if big_net:
        # zoo: dict(log_std_init=-2, ortho_init=False, activation_fn=nn.ReLU, 256x256)
        out += (
            "rl.net_arch=256,256",
            'rl.policy_kwargs={"log_std_init":-2,"ortho_init":false,"activation":"relu"}',
        )
    return out


#: rl-baselines3-zoo, hyperparams/ppo.yml ("Tuned", 10 mujoco envs; n_envs 1 there).
ZOO = RLPreset(
    "zoo",
    "rl-baselines3-zoo's tuned PPO per task (with VecNormalize of observations and rewards)",
    "rl-baselines3-zoo hyperparams/ppo.yml (HalfCheetah/Hopper/Walker2d/Reacher/"
    "InvertedPendulum/InvertedDoublePendulum tuned; Ant, Swimmer: its MuJoCo defaults)",
    {
        "halfcheetah": _zoo(
            1, 512, 64, 0.98, 0.92, 2.0633e-5, 0.000401762, 0.1, 20, 0.8, 0.58096, big_net=True
        ),
        "hopper": _zoo(
            1, 512, 32, 0.999, 0.99, 9.80828e-5, 0.00229519, 0.2, 5, 0.7, 0.835671, big_net=True
        ),
        "walker2d": _zoo(1, 512, 32, 0.99, 0.95, 5.05041e-5, 0.000585045, 0.1, 20, 1.0, 0.871923),
        "reacher": _zoo(1, 512, 32, 0.9, 1.0, 0.000104019, 7.52585e-08, 0.3, 5, 0.9, 0.950368),
        "inverted-pendulum": _zoo(
            1, 32, 64, 0.999, 0.9, 0.000222425, 1.37976e-07, 0.4, 5, 0.3, 0.19816
        ),
        "inverted-double-pendulum": _zoo(
            1, 128, 512, 0.98, 0.8, 0.000155454, 1.05057e-06, 0.4, 10, 0.5, 0.695929
        ),
        # Ant and Swimmer: the zoo's "mujoco-defaults" (SB3's PPO defaults, normalised);
        # Swimmer with gamma 0.9999.
        "ant": _zoo(1, 2048, 64, 0.99, 0.95, 3e-4, 0.0, 0.2, 10, 0.5, 0.5),
        "swimmer": _zoo(1, 2048, 64, 0.9999, 0.95, 3e-4, 0.0, 0.2, 10, 0.5, 0.5),
        # Pendulum-v1 (tuned, gSDE, not normalised in the zoo).
        "pendulum": tuple(
            o
            for o in _zoo(4, 1024, 64, 0.9, 0.95, 1e-3, 0.0, 0.2, 10, 0.5, 0.5, sde=True)
            if o != "rl.normalize=true"
        ),
    },
)

#: imitation 1.0.1, scripts/config/train_preference_comparisons.py: rl batch_size is
#: n_envs * n_steps (8 envs by default there; 4 x 128 = 512 here, as in the issue's runs).
IMITATION = RLPreset(
    "imitation",
    "imitation 1.0.1's tuned PPO for its seals tasks (no normalisation)",
    "imitation scripts/config/train_preference_comparisons.py (seals_* named configs)",
    {
        "halfcheetah": (
            "rl.n_envs=4",
            "rl.n_steps=128",
            "rl.gamma=0.95",
            "rl.gae_lambda=0.95",
            "rl.learning_rate=3.29e-4",
            "rl.ent_coef=3.8e-6",
            'rl.algo_kwargs={"batch_size":64,"clip_range":0.1,"n_epochs":5,'
            '"vf_coef":0.115,"max_grad_norm":0.8}',
        ),
    },
)

PAPER = RLPreset(
    "paper",
    "Christiano et al. 2017's settings (the agents' defaults)",
    "arXiv 1706.03741, appendix A (see REFERENCES.md)",
)

RL_PRESETS: Registry[RLPreset] = Registry("preset", instance_of(RLPreset))
for _preset in (PAPER, ZOO, IMITATION):
    RL_PRESETS.register(_preset.name, _preset)
