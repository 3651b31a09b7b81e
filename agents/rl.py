"""RL learners from stable-baselines3 / sb3-contrib, built by name.

Built in: ``ppo`` and ``a2c`` (stable-baselines3) and ``trpo`` (sb3-contrib; the paper's
choice for MuJoCo), and the off-policy ``sac`` (stable-baselines3; D4RL's behaviour
learner, used by ``prefbench data make --algo sac``). Any SB3 algorithm plugs in by
import path, e.g. ``--set rl.algo=sb3_contrib:RecurrentPPO``; on-policy settings
(``n_steps``, ``gae_lambda``, the task's entropy bonus) reach only algorithms that take
them. Defaults follow Christiano et al. 2017 for MuJoCo: discount 0.995,
GAE lambda 0.97, entropy bonus 0.01 (0.001 on Swimmer). sb3-contrib's TRPO has no
entropy term, so ``ent_coef`` only reaches PPO and A2C.
"""

from __future__ import annotations

import inspect
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sb3_contrib import TRPO
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import configure
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from prefbench.agents.config import ConfigError
from prefbench.agents.device import resolve_device
from prefbench.envs.data import CheckpointError
from prefbench.envs.registry import Registry
from prefbench.envs.tasks import TaskSpec

#: Learner attribute that SB3 saves into ``policy.zip``: the algorithm id the policy was
#: trained with, so that loading it as another algorithm fails instead of succeeding
#: silently (SB3's ``load`` does not check the class).
ALGO_ATTRIBUTE = "prefbench_algo"


def _algo_from_import(obj: object, path: str) -> type[BaseAlgorithm]:
    if inspect.isclass(obj) and issubclass(obj, BaseAlgorithm):
        return obj
    raise TypeError(f"{path!r} is not an SB3 algorithm class")


ALGORITHMS: Registry[type[BaseAlgorithm]] = Registry("RL algorithm", _algo_from_import)
ALGORITHMS.register("ppo", PPO)
ALGORITHMS.register("a2c", A2C)
ALGORITHMS.register("trpo", TRPO)
ALGORITHMS.register("sac", SAC)


LR_SCHEDULES = ("constant", "linear")
#: ``default`` keeps the algorithm's optimiser; ``rmsprop-tf`` is RMSprop as TensorFlow
#: (and so the paper's A2C) computes it: the running average starts at 1 and epsilon sits
#: inside the square root. Torch's RMSprop starts the average at 0, which makes the first
#: updates very large; SB3 recommends the TF variant for A2C on Atari.
OPTIMIZERS = ("default", "rmsprop-tf")


#: Policy activations by name (SB3's default is tanh).
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
#: Keys of ``RLConfig.policy_kwargs``.
POLICY_KEYS = {"activation", "log_std_init", "ortho_init"}


@dataclass(frozen=True)
class LinearSchedule:
    """``start`` decayed linearly to 0 over training (SB3 passes the progress remaining)."""

    start: float

    def __call__(self, progress_remaining: float) -> float:
        """The rate at ``progress_remaining`` (1 at the start, 0 at the end)."""
        return self.start * progress_remaining


@dataclass(frozen=True)
class RLConfig:
    """RL learner settings (named for the on-policy learners; SAC takes what fits it).

    Attributes:
        algo: ``ppo``, ``a2c``, ``trpo``, ``sac`` or ``package.module:Class``.
        n_envs: Parallel environments.
        subprocess: Step the environments in worker processes (pays off for slow
            simulators with cores to spare; see ``prefbench perf frames --subprocess``).
        n_steps: Steps per env per update; ``None``: 2048 in all for PPO/TRPO, 5 for A2C.
        gamma: Discount.
        gae_lambda: GAE lambda.
        ent_coef: Entropy bonus; ``None`` takes the task's paper value (on-policy
            algorithms; SAC keeps its own, learned, temperature).
        learning_rate: Optimiser step size; ``None`` keeps the algorithm's default.
        lr_schedule: ``constant``, or ``linear`` (decays to 0 over the run, the paper's
            A2C setting on Atari).
        net_arch: Hidden layers of the policy and value networks.
        optimizer: One of :data:`OPTIMIZERS`.
        normalize: Standardise the learner's observations and scale its rewards with
            running statistics (SB3's ``VecNormalize``, rl-baselines3-zoo's
            ``normalize: true``); the reward model still sees raw observations.
        policy_kwargs: Further policy settings: ``log_std_init``, ``ortho_init``, and
            ``activation`` (one of :data:`ACTIVATIONS`).
        algo_kwargs: Further keyword arguments for the algorithm's constructor.
    """

    algo: str = "ppo"
    n_envs: int = 4
    subprocess: bool = False
    n_steps: int | None = None
    gamma: float = 0.995
    gae_lambda: float = 0.97
    ent_coef: float | None = None
    learning_rate: float | None = None
    lr_schedule: str = "constant"
    net_arch: tuple[int, ...] = (64, 64)
    optimizer: str = "default"
    normalize: bool = False
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    algo_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_envs < 1:
            raise ValueError(f"rl.n_envs must be >= 1, got {self.n_envs}")
        if self.n_steps is not None and self.n_steps < 1:
            raise ValueError(f"rl.n_steps must be >= 1, got {self.n_steps}")
        if not (0 < self.gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise ValueError("rl.gamma must be in (0, 1] and rl.gae_lambda in [0, 1]")
        if self.ent_coef is not None and self.ent_coef < 0:
            raise ValueError(f"rl.ent_coef must be >= 0, got {self.ent_coef}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"rl.learning_rate must be > 0, got {self.learning_rate}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"rl.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"rl.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if any(width < 1 for width in self.net_arch):
            raise ValueError(f"rl.net_arch widths must be >= 1, got {self.net_arch}")
        unknown = set(self.policy_kwargs) - POLICY_KEYS
        if unknown:
            raise ValueError(
                f"rl.policy_kwargs takes {', '.join(sorted(POLICY_KEYS))}, got {sorted(unknown)}"
            )
        act = self.policy_kwargs.get("activation", "tanh")
        if act not in ACTIVATIONS:
            raise ValueError(
                f"rl.policy_kwargs.activation must be one of {', '.join(ACTIVATIONS)}, got {act!r}"
            )
        ALGORITHMS.get(self.algo)  # fail early on an unknown algorithm


#: Atari learners. A2C is the paper's (REFERENCES: lr 7e-4 linearly decayed, n-step 5,
#: 16 workers, gamma 0.99, entropy 0.01, and the TensorFlow form of RMSprop that the
#: paper's A2C ran with);
#: PPO takes the usual Atari settings of Schulman et al. 2017. Both use SB3's CnnPolicy
#: (the Nature CNN with linear heads: ``net_arch=()``).
ATARI_RL: dict[str, RLConfig] = {
    "a2c": RLConfig(
        algo="a2c",
        n_envs=16,
        n_steps=5,
        gamma=0.99,
        gae_lambda=1.0,
        ent_coef=0.01,
        learning_rate=7e-4,
        lr_schedule="linear",
        net_arch=(),
        optimizer="rmsprop-tf",
    ),
    "ppo": RLConfig(
        algo="ppo",
        n_envs=8,
        n_steps=128,
        gamma=0.99,
        gae_lambda=0.95,
        ent_coef=0.01,
        learning_rate=2.5e-4,
        lr_schedule="linear",
        net_arch=(),
        algo_kwargs={"batch_size": 256, "n_epochs": 4, "clip_range": 0.1},
    ),
}


def build_learner(
    config: RLConfig,
    task: TaskSpec,
    venv: VecEnv,
    *,
    seed: int,
    device: str,
    log_dir: Path | None = None,
) -> BaseAlgorithm:
    """Instantiate the learner on ``venv``.

    Args:
        config: Learner settings.
        task: The task (for its paper entropy coefficient).
        venv: Training environments.
        seed: Learner seed.
        device: Torch device of a CNN policy (``auto``: CUDA when present); MLP policies
            stay on the CPU, where SB3 runs small networks faster.
        log_dir: Where SB3 writes its training log (CSV and TensorBoard).
    """
    cls = ALGORITHMS.get(config.algo)
    params = inspect.signature(cls.__init__).parameters
    n_steps = config.n_steps
    if n_steps is None:
        n_steps = 5 if issubclass(cls, A2C) else max(1, 2048 // config.n_envs)
    policy_kwargs: dict[str, Any] = {"net_arch": list(config.net_arch)}
    extra = dict(config.policy_kwargs)
    if "activation" in extra:
        policy_kwargs["activation_fn"] = ACTIVATIONS[extra.pop("activation")]
    policy_kwargs.update(extra)
    if config.optimizer == "rmsprop-tf":
        # The paper's (OpenAI baselines') A2C optimiser: decay 0.99, epsilon 1e-5.
        policy_kwargs["optimizer_class"] = RMSpropTFLike
        policy_kwargs["optimizer_kwargs"] = {"alpha": 0.99, "eps": 1e-5, "weight_decay": 0}
    kwargs: dict[str, Any] = {
        "gamma": config.gamma,
        "policy_kwargs": policy_kwargs,
        "seed": seed,
        "device": device,
        "verbose": 0,
    }
    on_policy = issubclass(cls, OnPolicyAlgorithm)
    if on_policy:
        kwargs["n_steps"] = n_steps
    if "gae_lambda" in params:
        kwargs["gae_lambda"] = config.gae_lambda
    if "ent_coef" in params and (on_policy or config.ent_coef is not None):
        kwargs["ent_coef"] = task.entropy_coef if config.ent_coef is None else config.ent_coef
    if config.learning_rate is not None:
        kwargs["learning_rate"] = config.learning_rate
    if config.lr_schedule == "linear":
        start = kwargs.get("learning_rate", params["learning_rate"].default)
        if not isinstance(start, float | int):
            raise ConfigError(f"{cls.__name__} has no numeric default learning rate to decay")
        kwargs["learning_rate"] = LinearSchedule(float(start))
    if "batch_size" in params and issubclass(cls, PPO):
        kwargs["batch_size"] = 64
    kwargs.update(config.algo_kwargs)
    policy = "CnnPolicy" if is_image_space(venv.observation_space) else "MlpPolicy"
    kwargs["device"] = resolve_device(device) if policy == "CnnPolicy" else "cpu"
    try:
        model = cls(policy, venv, **kwargs)
    except (AssertionError, TypeError, ValueError) as exc:
        # SB3 checks its arguments with asserts; report them as a bad config.
        raise ConfigError(f"{cls.__name__} rejected its settings: {exc}") from exc
    if log_dir is not None:
        model.set_logger(configure(str(log_dir), ["csv", "tensorboard"]))
    setattr(model, ALGO_ATTRIBUTE, config.algo)
    return model


def saved_algorithm(path: Path) -> str | None:
    """The algorithm id recorded in an SB3 policy archive, or None where none is recorded.

    Archives written by this package record it; SB3 archives from elsewhere do not.

    Raises:
        CheckpointError: If ``path`` is not an SB3 archive.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{path} is not an SB3 policy archive ({type(exc).__name__}: {exc})"
        ) from exc
    value = data.get(ALGO_ATTRIBUTE) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _check_algorithm(path: Path, algo: str) -> None:
    saved = saved_algorithm(path)
    if saved is not None and saved != algo:
        raise CheckpointError(f"{path} holds a policy trained with {saved}, not {algo}")


def load_policy(path: str | Path, algo: str = "ppo", device: str = "cpu") -> BaseAlgorithm:
    """Load a policy saved by an agent's ``save`` (an SB3 ``.zip``).

    Args:
        path: The ``policy.zip``.
        algo: Algorithm id (or import path) the policy was trained with.
        device: Torch device to load onto.

    Raises:
        CheckpointError: If the file is missing, corrupt, or records another algorithm.
        UnknownIdError: If ``algo`` is not a registered algorithm.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no policy checkpoint at {path}")
    cls = ALGORITHMS.get(algo)
    _check_algorithm(path, algo)
    try:
        return cls.load(path, device=device)
    except Exception as exc:  # noqa: BLE001 - SB3 raises many kinds for a bad archive
        raise CheckpointError(
            f"{path} is not a readable {algo} policy ({type(exc).__name__}: {exc})"
        ) from exc


def restore_learner(learner: BaseAlgorithm, path: Path, step: int) -> None:
    """Load saved parameters and optimiser state into ``learner`` and set its step count.

    Raises:
        CheckpointError: If the file does not fit the learner.
    """
    algo = getattr(learner, ALGO_ATTRIBUTE, None)
    if algo is not None:
        _check_algorithm(path, algo)
    try:
        learner.set_parameters(str(path), exact_match=True, device=learner.device)
    except Exception as exc:  # noqa: BLE001 - SB3 raises many kinds for a bad archive
        raise CheckpointError(
            f"{path} does not fit this learner ({type(exc).__name__}: {exc})"
        ) from exc
    learner.num_timesteps = step
