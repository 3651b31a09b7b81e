"""The rewards an offline learner trains on: learned from preferences, true, or a control.

With ``source="learned"`` the preference pipeline of the online agents runs on the
dataset instead of on rollouts: segment pairs are drawn from the dataset's episodes
(uniformly, or the ones the ensemble disagrees on most), the teacher labels them by the
rewards the dataset recorded, the same Bradley-Terry ensemble
(:class:`~prefbench.agents.reward_model.RewardModel`) fits the labels, and every step
is relabelled with it: each member's output standardised on dataset states, then
averaged. Labels come from most of the episodes; the evaluator scores the fit on fresh
oracle-labelled pairs of the held-out rest (``rm_accuracy``), and the Spearman
correlation of learned and true episode returns (``rm_return_spearman``) is logged, with
the one the true step rewards reach when their zero is placed as the learned reward's
(``rm_return_spearman_true_reward``; see ``reward.offset``). With
``reward.offset=absorbing`` segments may run past a termination, and
``rm_segments_past_termination`` is the share of labelled segments that did.

The controls tell what a learned reward adds: ``zero`` (every reward 0) and ``random``
(i.i.d. uniform on [0, 1] per step). Offline RL scores well on many Hopper and Walker2d
datasets with such rewards (Li et al. 2023, "Survival instinct in offline RL",
arXiv 2306.03286), so a learned-reward result means something only beside them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

from prefbench.agents.protocol import PreferencePredictor
from prefbench.agents.query import SelectorOptions, make_selector
from prefbench.agents.reward_model import RewardModel, RewardModelConfig
from prefbench.envs.data import PreferenceDataset, Trajectory
from prefbench.envs.episodes import Episodes
from prefbench.envs.seeding import make_rng, stream_seed
from prefbench.envs.segments import sample_clip_pairs, with_absorbing
from prefbench.envs.teachers import CalibratedTeacher, ReturnScale, Teacher

#: Metric: Spearman correlation of learned and recorded episode returns over the dataset.
RM_RETURN_SPEARMAN = "rm_return_spearman"
#: Metric: the same for the recorded step rewards given the learned reward's zero
#: (``reward.offset``). Preferences between equally long segments cannot place a reward's
#: zero, and where episodes differ in length the zero moves the ranking of their returns:
#: this is what a reward model exact up to that zero would reach.
RM_RETURN_SPEARMAN_TRUE_REWARD = "rm_return_spearman_true_reward"
#: Metric: share of the labelled segments that run past a termination into the absorbing
#: state (``reward.offset=absorbing``; 0 otherwise). At 0 nothing placed the reward's
#: zero, and ``min`` applied.
RM_SEGMENTS_PAST_TERMINATION = "rm_segments_past_termination"
#: Steps per labelled segment unless set (PEBBLE's 50; Preference Transformer uses 100,
#: Uni-RLHF 200 on D4RL).
DEFAULT_SEGMENT_LENGTH = 50
#: Copies of the drawn segments held at once while labelling and fitting (the sampled
#: arrays, the labelled dataset, the reward model's tensors): the label budget's memory check.
SEGMENT_COPIES = 3
#: Where an offline learner's rewards come from.
REWARD_SOURCES = ("learned", "true", "zero", "random")


@dataclass(frozen=True)
class OfflineRewardConfig:
    """Settings of an offline learner's reward.

    Attributes:
        source: ``learned``, ``true``, ``zero`` or ``random`` (see the module docstring).
        segment_length: Steps per labelled segment (and per fresh pair that scores the fit).
        query: Selector of the labelled pairs (``uniform`` or ``disagreement``), drawn
            from every segment of the dataset.
        oversample: Candidates per query for ``disagreement``.
        rounds: Labels arrive in this many equal rounds with a fit after each (the first
            round's pairs are uniform: there is no model to rank them yet).
        epochs: Reward-model epochs per fit.
        norm_samples: Dataset steps the members' outputs are standardised on.
        offset: Where a learned reward's zero lies, which preferences between equally long
            segments cannot tell: ``min`` (default: the dataset's lowest step reward is
            0, so every step alive earns something, like the true rewards' alive bonus
            on Hopper and Walker2d and the ``random`` control's U[0, 1]) or ``mean``
            (its mean step reward is 0, so an early termination costs nothing on
            average and ending an episode can look better than living on). Only
            datasets whose episodes terminate, and returns-to-go, feel the choice; with
            ``mean``, IQL on our hopper-medium-replay fell over at once in 2 of 3 seeds
            (results/README.md). ``absorbing`` lets the labels place the zero: segments
            may run past an episode's termination into the absorbing state, which earns 0
            for the teacher and the reward model alike (a short life against a longer one
            tells whether living on is worth anything), and the relabelled rewards keep
            that zero. Where no labelled segment reaches a termination (HalfCheetah), nothing
            places it and ``min`` applies.
        test_episodes: Share of the dataset's episodes held out of labelling; the
            evaluator's ``rm_accuracy`` pairs come from them.
        model: The reward ensemble (the online agents' defaults).
    """

    source: str = "learned"
    segment_length: int = DEFAULT_SEGMENT_LENGTH
    query: str = "uniform"
    oversample: int = 10
    rounds: int = 1
    epochs: int = 100
    norm_samples: int = 10_000
    offset: str = "min"
    test_episodes: float = 0.2
    model: RewardModelConfig = field(default_factory=RewardModelConfig)

    def __post_init__(self) -> None:
        if self.source not in REWARD_SOURCES:
            raise ValueError(
                f"reward.source must be one of {', '.join(REWARD_SOURCES)}, got {self.source!r}"
            )
        if min(self.rounds, self.epochs, self.norm_samples, self.oversample) < 1:
            raise ValueError("reward.rounds, epochs, norm_samples and oversample must be >= 1")
        if self.segment_length < 1:
            raise ValueError(f"reward.segment_length must be >= 1, got {self.segment_length}")
        if self.offset not in OFFSETS:
            raise ValueError(f"reward.offset must be one of {', '.join(OFFSETS)}")
        if not 0 <= self.test_episodes < 1:
            raise ValueError(f"reward.test_episodes must be in [0, 1), got {self.test_episodes}")
        make_selector(self.query, SelectorOptions(self.oversample))


#: Where a learned reward's zero lies (see :class:`OfflineRewardConfig`).
OFFSETS = ("mean", "min", "absorbing")


def split_episodes(n_episodes: int, test_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(label_episodes, test_episodes)``: indices, a fixed random split of the run's seed.

    At least one episode is labelled; none is held out when ``test_share`` is 0 or the
    dataset has a single episode.
    """
    order = make_rng(seed, "test_episodes").permutation(n_episodes)
    n_test = min(int(round(test_share * n_episodes)), n_episodes - 1)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


@dataclass(frozen=True)
class RewardResult:
    """An offline learner's rewards and what fitting them measured.

    Attributes:
        rewards: ``(N,)`` float32 reward of every dataset step.
        metrics: Scalars to log (``rm_*`` for a learned reward; empty otherwise).
        model: The fitted reward model (learned source only).
        labels: The labelled pairs it was fit on (learned source only).
        shift: What was subtracted from the model's outputs (``reward.offset=min``: their
            lowest value on the dataset; ``absorbing``: the absorbing state's; 0
            otherwise). A step's reward while acting is ``model.reward(obs, act) - shift``,
            as in training.
    """

    rewards: np.ndarray
    metrics: dict[str, float]
    model: RewardModel | None = None
    labels: PreferenceDataset | None = None
    shift: float = 0.0

    def step_rewards(self, obs: np.ndarray, acts: np.ndarray) -> np.ndarray:
        """``(n,)`` learned rewards of ``n`` new steps, on the scale the dataset was given.

        Raises:
            ValueError: Without a reward model (not a learned reward).
        """
        if self.model is None:
            raise ValueError("only a learned reward rewards new steps")
        return (self.model.reward(obs, acts) - np.float32(self.shift)).astype(np.float32)


def segment_starts(trajectories: list[Trajectory], segment_length: int) -> int:
    """How many segments of ``segment_length`` steps the trajectories give.

    Counted as :func:`~prefbench.envs.segments.sample_clip_pairs` draws them, absorbing
    steps included (:func:`label_trajectories`).
    """
    return sum(max(len(t) - segment_length + 1, 0) for t in trajectories)


def label_trajectories(
    trajectories: list[Trajectory], segment_length: int, absorbing: bool
) -> list[Trajectory]:
    """Episodes as segments are cut from them.

    With ``absorbing``, each terminated episode is followed by ``segment_length - 1``
    absorbing steps (:func:`~prefbench.envs.segments.with_absorbing`).
    """
    if absorbing:
        return [with_absorbing(t, segment_length - 1) for t in trajectories]
    return trajectories


def check_label_budget(
    trajectories: list[Trajectory], segment_length: int, label_budget: int, candidates: int = 0
) -> None:
    """Refuse a budget the segments of ``trajectories`` cannot give, or memory cannot hold.

    Args:
        trajectories: What segments are cut from (:func:`label_trajectories`).
        segment_length: Steps per segment.
        label_budget: Pairs to label.
        candidates: Pairs drawn at once to choose a round's labels from (``disagreement``
            selection after the first round), held beside the labelled ones.

    Raises:
        ValueError: If no episode holds a segment, the budget exceeds the number of
            distinct segment pairs, or the segments would not fit in this machine's
            memory.
    """
    n = segment_starts(trajectories, segment_length)
    if n < 2:
        longest = max(len(t) - t.absorbing_steps for t in trajectories)
        raise ValueError(
            f"no two segments of {segment_length} steps fit in the dataset's episodes "
            f"(longest: {longest} steps); lower the segment length"
        )
    if label_budget > n * (n - 1) // 2:
        raise ValueError(
            f"label budget {label_budget} exceeds the {n * (n - 1) // 2} distinct segment pairs "
            "of this dataset"
        )
    first = trajectories[0]
    # float32 observation, action and reward, and the absorbing flag, of every step.
    step_bytes = 4 * (int(np.prod(first.obs.shape[1:])) + int(np.prod(first.acts.shape[1:])) + 2)
    need = 2 * segment_length * step_bytes * (SEGMENT_COPIES * label_budget + candidates)
    have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > have:
        raise ValueError(
            f"label budget {label_budget} needs about {need / 2**30:.0f} GiB for its segments, "
            f"more than this machine's {have / 2**30:.0f} GiB of memory"
        )


def labelled_trajectories(
    episodes: Episodes, config: OfflineRewardConfig, label_budget: int, seed: int
) -> tuple[list[Trajectory], list[Trajectory]]:
    """What a learned reward's labelled segments come from, with the budget checked.

    Returns:
        ``(plain, cut)``: the episodes not held out for ``rm_accuracy``
        (:func:`split_episodes`) as trajectories (views, no copies), and the same cut as
        :func:`label_trajectories` says.

    Raises:
        ValueError: A budget they cannot give (:func:`check_label_budget`).
    """
    label_eps, _ = split_episodes(episodes.n_episodes, config.test_episodes, seed)
    every = episodes.trajectories()
    plain = [every[i] for i in label_eps]
    cut = label_trajectories(plain, config.segment_length, config.offset == "absorbing")
    candidates = 0
    if config.query == "disagreement" and config.rounds > 1:  # the first round is uniform
        candidates = math.ceil(label_budget / config.rounds) * config.oversample
    check_label_budget(cut, config.segment_length, label_budget, candidates)
    return plain, cut


def new_reward_model(
    episodes: Episodes, config: OfflineRewardConfig, seed: int, device: str = "cpu"
) -> RewardModel:
    """An unfitted reward ensemble for ``episodes``' spaces, seeded from the run's seed."""
    return RewardModel(
        episodes.obs.shape[1:],
        int(np.prod(episodes.acts.shape[1:])),
        config.model,
        seed=stream_seed(seed, "reward_model"),
        device=device,
    )


def make_rewards(
    episodes: Episodes,
    config: OfflineRewardConfig,
    *,
    teacher: Teacher | None,
    label_budget: int,
    seed: int,
    device: str = "cpu",
    model: RewardModel | None = None,
    labels: PreferenceDataset | None = None,
) -> RewardResult:
    """The rewards of ``config.source`` for every step of ``episodes``.

    Args:
        episodes: The dataset as recorded (its rewards are the true ones).
        config: Settings.
        teacher: Labels pairs (learned source only).
        label_budget: Pairs to label (learned source only).
        seed: The run's seed (named streams are derived from it).
        device: Reward-model device.
        model: A reward model already fit (a resumed run); with ``labels``, skips fitting.
        labels: The labels ``model`` was fit on.
    """
    n = len(episodes)
    if config.source == "true":
        return RewardResult(episodes.rewards.copy(), {})
    if config.source == "zero":
        return RewardResult(np.zeros(n, dtype=np.float32), {})
    if config.source == "random":
        rng = make_rng(seed, "random_reward")
        return RewardResult(rng.uniform(0.0, 1.0, n).astype(np.float32), {})
    if teacher is None:
        raise ValueError("a learned reward needs a teacher")
    segment_length = config.segment_length
    plain, trajectories = labelled_trajectories(episodes, config, label_budget, seed)
    metrics: dict[str, float] = {}
    if model is None or labels is None:
        if isinstance(teacher, CalibratedTeacher):
            # Thresholds and rationality are fractions of the clip returns the teacher
            # sees: measure them on the labelled episodes (absorbing steps left out), as
            # the online agents do on their rollouts; uncalibrated, skip, equal and
            # stochastic would label as the oracle.
            teacher.calibrate(ReturnScale.from_trajectories(plain, segment_length))
        model = new_reward_model(episodes, config, seed, device)
        labels, metrics = _fit(
            model, trajectories, config, teacher, label_budget, segment_length, seed
        )
    rng = make_rng(seed, "reward_norm")
    idx = rng.choice(n, size=min(n, config.norm_samples), replace=False)
    model.update_normalization(episodes.obs[idx], episodes.acts[idx])
    rewards = np.concatenate(
        [
            model.reward(episodes.obs[s : s + 65_536], episodes.acts[s : s + 65_536])
            for s in range(0, n, 65_536)
        ]
    ).astype(np.float32)
    past = segments_past_termination(labels)
    offset = config.offset
    if offset == "absorbing" and not past:
        offset = "min"  # no labelled segment reached a termination: nothing placed the zero
    shift = {"min": float(rewards.min()), "absorbing": model.normalized_zero()}.get(offset, 0.0)
    rewards = rewards - np.float32(shift)
    true = episodes.rewards.astype(np.float64)
    if offset != "absorbing":  # with absorbing segments the true rewards' own zero is learned
        true = true - (true.min() if offset == "min" else true.mean())
    # Accuracy on fresh pairs is the evaluator's (rm_accuracy), as for the online agents.
    metrics = {
        **metrics,
        RM_RETURN_SPEARMAN: return_spearman(episodes, rewards),
        RM_RETURN_SPEARMAN_TRUE_REWARD: return_spearman(episodes, true),
        RM_SEGMENTS_PAST_TERMINATION: past,
    }
    return RewardResult(rewards, metrics, model, labels, shift)


def segments_past_termination(labels: PreferenceDataset) -> float:
    """Share of the labelled segments that run past a termination (what places the zero)."""
    absorbing = labels.pairs.absorbing
    return 0.0 if absorbing is None else float(absorbing.any(axis=2).mean())


def _fit(
    model: RewardModel,
    trajectories: list[Trajectory],
    config: OfflineRewardConfig,
    teacher: Teacher,
    label_budget: int,
    segment_length: int,
    seed: int,
) -> tuple[PreferenceDataset, dict[str, float]]:
    """Label ``label_budget`` pairs in ``config.rounds`` rounds, fitting after each."""
    selector = make_selector(config.query, SelectorOptions(config.oversample))
    rng = make_rng(seed, "queries")
    per_round = np.diff(np.linspace(0, label_budget, config.rounds + 1).round().astype(int))
    data: PreferenceDataset | None = None
    stats = None
    for r, wanted in enumerate(per_round):
        if wanted == 0:
            continue
        pairs = selector.select(
            trajectories, int(wanted), segment_length, rng, model if r > 0 else None
        )
        new = PreferenceDataset.from_labels(pairs, teacher.label(pairs))
        data = new if data is None else data.extend(new)
        if len(data):
            stats = model.fit(data, config.epochs)
    if data is None or stats is None:
        raise ValueError("the teacher answered none of the queries")
    return data, {**stats.summary(), "rm_labels": float(len(data))}


def fresh_pair_accuracy(
    model: PreferencePredictor,
    episodes: Episodes,
    segment_length: int,
    n_pairs: int,
    rng: np.random.Generator,
    oracle: Teacher,
    absorbing: bool = False,
) -> float:
    """The ``rm_accuracy`` of an offline run.

    The share of decided fresh pairs, drawn uniformly over the dataset's segments (with
    ``absorbing``, also those running past a termination, as labelled), that ``model``
    orders as ``oracle`` does.
    """
    trajectories = label_trajectories(episodes.trajectories(), segment_length, absorbing)
    pairs = sample_clip_pairs(trajectories, n_pairs, segment_length, rng)
    return model.preference_accuracy(pairs, oracle.label(pairs).prefs)


def return_spearman(episodes: Episodes, rewards: np.ndarray) -> float:
    """Spearman correlation of episode returns under ``rewards`` and the recorded ones."""
    true_returns = episodes.returns()
    if episodes.n_episodes < 3 or np.ptp(true_returns) == 0:
        return math.nan
    return float(spearmanr(episodes.returns(rewards), true_returns).statistic)
