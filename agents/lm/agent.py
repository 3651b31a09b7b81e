"""Text agents: a method of the language-model track on a text task, in the common harness.

:meth:`TextAgent.learn` reads as the recipe of arXiv 2308.12050 and its baselines:

1. *base model*: the folder ``base_model`` names, or the task's base model built by
   ``prefbench lm pretrain`` (built here if missing); it is the reference too;
2. *samples*: ``samples_per_prompt`` responses to each of ``prompts`` training prompts;
3. *reward*: the teacher labels ``label_budget`` same-prompt pairs and the reward
   ensemble fits them (DPO trains on those pairs directly); samples are z-scored;
4. *train* until ``budget`` response tokens are trained on (``steps`` counts them):
   ``mle-filter``, ``rwr`` and ``dt`` on the samples (:mod:`.offline_align`), ``dpo`` on
   the pairs (:mod:`.dpo`), ``ppo`` online on the learned reward (:mod:`.ppo`); ``sft``
   trains nothing (the base model as it is), nor does ``best-of-n``, which answers with
   the best of ``best_of`` base-model samples by the learned reward (its cost is at
   inference: ``best_of`` generations and scorings per prompt, not in its FLOPs).

Every FLOP is counted (sampling, labelling, scoring, training) and reported with the
metrics. The evaluator of text tasks acts through :meth:`TextAgent.text_policy`.
"""

from __future__ import annotations

import math
import pickle
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prefbench.agents.lm.compute import FlopCounter, non_embedding_parameters
from prefbench.agents.lm.dpo import DPO, DPOConfig, decided_pairs
from prefbench.agents.lm.offline_align import AlignConfig, OfflineAligner
from prefbench.agents.lm.policy import CausalLMPolicy
from prefbench.agents.lm.ppo import PPO, PPOConfig
from prefbench.agents.lm.samples import (
    TextSamples,
    ask_about,
    same_prompt_pairs,
    sample_continuations,
    text_pairs,
)
from prefbench.agents.lm.text_reward import (
    TextReward,
    TextRewardConfig,
    fit_text_reward,
    learned_scores,
    response_scorer,
    zscore,
)
from prefbench.agents.protocol import AgentSpec, Reporter, RunContext
from prefbench.envs.data import CheckpointError
from prefbench.envs.seeding import make_rng
from prefbench.envs.teachers import Teacher
from prefbench.envs.text_tasks import TextTask

#: Bumped when :meth:`TextAgent.save_state` changes what it writes.
STATE_FORMAT = 1

METHODS = ("sft", "mle-filter", "rwr", "dt", "dpo", "ppo", "best-of-n")


@dataclass(frozen=True)
class TextAgentConfig:
    """Settings of a text agent (override with ``--set key=value``).

    Attributes:
        method: One of :data:`METHODS` (fixed by the registered agent).
        base_model: A local Hugging Face causal-LM folder; "" for the task's own base model.
        prompts: Training prompts of the sample pool.
        samples_per_prompt: Responses per prompt.
        temperature: Sampling temperature of the pool (and of PPO's rollouts).
        report_every: Updates (PPO: iterations) between progress reports.
        best_of: ``best-of-n``'s samples per prompt at inference.
        reward: The text reward model.
        align: MLE-filter, RWR and DT settings (``align.method`` follows ``method``; the
            ``seed`` of ``align``, ``dpo`` and ``ppo`` is the run's).
        dpo: DPO settings.
        ppo: PPO settings.
    """

    method: str = "dt"
    base_model: str = ""
    prompts: int = 256
    samples_per_prompt: int = 4
    temperature: float = 1.0
    report_every: int = 50
    best_of: int = 16
    reward: TextRewardConfig = field(default_factory=TextRewardConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.prompts < 1 or self.samples_per_prompt < 2 or self.report_every < 1:
            raise ValueError("need prompts >= 1, samples_per_prompt >= 2, report_every >= 1")
        if self.best_of < 2:
            raise ValueError(f"best_of must be >= 2, got {self.best_of}")
        if not self.temperature > 0:
            raise ValueError("temperature must be > 0")


class TextAgent:
    """A text method on a text task (see the module docstring).

    Args:
        ctx: Run context; ``ctx.task`` is a :class:`TextTask`, the budget counts tokens.
        teacher: Labels response pairs (every method but ``sft``).
        config: Settings.
    """

    Config = TextAgentConfig
    uses_teacher = False
    #: The task kinds the agent trains on (the runner checks before any work).
    task_kinds = ("text",)

    def __init__(
        self, ctx: RunContext, teacher: Teacher | None, config: TextAgentConfig | None = None
    ) -> None:
        if not isinstance(ctx.task, TextTask):
            raise ValueError(f"a text agent needs a text task, not {ctx.task.id!r}")
        self.ctx, self.teacher = ctx, teacher
        self.config = config or TextAgentConfig()
        self.task: TextTask = ctx.task
        self.counter = FlopCounter()
        self.labels_used = 0
        self.rm_accuracy = math.nan
        self.policy: CausalLMPolicy | None = None
        self.reference: CausalLMPolicy | None = None
        self.reward: TextReward | None = None
        self.trainer: Any = None
        self.reference_scores = np.zeros(1)
        self.n_policy = 0
        # Progress of the training loop: response tokens trained on, updates (PPO:
        # iterations) done, and whether load_state restored them.
        self.trained, self.n_updates, self.resumed = 0, 0, False

    # ----------------------------------------------------------------- the loop
    def learn(self, reporter: Reporter) -> None:
        """Prepare (unless resumed), then train for the budget (module docstring)."""
        if not self.resumed:
            metrics = self._prepare()
            reporter.report(0, labels_used=self.labels_used, metrics=metrics)
        if self.trainer is None:
            return
        total = self.ctx.budget.amount
        step = min(self.trained, total)
        while step < total:
            metrics = self.trainer.iteration() if isinstance(self.trainer, PPO) else self._update()
            self.trained += int(metrics.pop("trained_tokens"))  # response tokens: the budget
            self.n_updates += 1
            step = min(self.trained, total)
            if self.n_updates % self.config.report_every == 0 or step >= total:
                reporter.report(
                    step,
                    labels_used=self.labels_used,
                    metrics={**metrics, **self.counter.as_dict()},
                )

    def _update(self) -> dict[str, float]:
        metrics = self.trainer.update()
        tokens = int(metrics.pop("sequence_tokens"))
        self.counter.add("train", self.n_policy, tokens)
        if isinstance(self.trainer, DPO):
            self.counter.add("score", self.n_policy, tokens)  # the reference's pass
        return metrics

    def _base_path(self) -> Path:
        if self.config.base_model:
            return Path(self.config.base_model).expanduser()
        from prefbench.agents.lm.config import default_config
        from prefbench.agents.lm.pretrain import Pretrainer

        return Pretrainer(self.task, default_config(self.task), self.ctx.logger.info).build()

    def _prepare(self) -> dict[str, float]:
        cfg, seed = self.config, self.ctx.seed
        path = self._base_path()
        device = "cpu" if self.ctx.device == "auto" else self.ctx.device
        self.reference = CausalLMPolicy.from_path(path, device=device)
        self.policy = CausalLMPolicy.from_path(path, device=device)
        self.n_policy = non_embedding_parameters(self.policy.models[0])
        if cfg.method == "sft":
            return self.counter.as_dict()
        prompts = self.task.prompts("train", cfg.prompts, seed)
        samples = sample_continuations(
            self.reference,
            self.task,
            prompts,
            cfg.samples_per_prompt,
            seed,
            temperature=cfg.temperature,
        )
        self.counter.add("generate", self.n_policy, self._tokens(samples))
        metrics: dict[str, float] = {"sample_true_score": float(samples.scores.mean())}
        if cfg.method == "dpo":
            self.trainer = self._dpo(samples)
            return {**metrics, **self.counter.as_dict()}
        assert self.teacher is not None
        self.reward = fit_text_reward(
            self.policy,
            samples,
            self.teacher,
            self.ctx.label_budget,
            cfg.reward,
            seed,
            device=device,
        )
        self.labels_used = int(self.reward.metrics["labels"])
        self.rm_accuracy = self.reward.metrics["rm_accuracy"]
        n_rm = non_embedding_parameters(self.reward.model.net)
        learned = learned_scores(self.reward.model, self.policy, samples)
        self.counter.add("score", n_rm, self._tokens(samples))
        self.reference_scores = reference = learned[self.reward.labelled]
        metrics.update(self.reward.metrics)
        if cfg.method == "best-of-n":
            return {**metrics, **self.counter.as_dict()}
        if cfg.method == "ppo":
            score = response_scorer(self.reward.model, self.policy, reference)
            self.trainer = PPO(
                self.policy,
                self.reference,
                self.task,
                score,
                replace(cfg.ppo, seed=seed),
                self.counter,
                n_rm,
            )
        else:
            z = zscore(learned, reference)
            align = replace(cfg.align, method=cfg.method, seed=seed)
            self.trainer = OfflineAligner(self.policy, samples, z, align)
        return {**metrics, **self.counter.as_dict()}

    def _dpo(self, samples: TextSamples) -> DPO:
        assert self.teacher is not None and self.policy is not None and self.reference
        idx = same_prompt_pairs(samples, self.ctx.label_budget, make_rng(self.ctx.seed, "dpo"))
        labels = ask_about(self.teacher, text_pairs(self.policy, samples, idx), samples, idx)
        self.labels_used = int(labels.valid.sum())
        pairs = decided_pairs(idx[labels.valid], labels.prefs[labels.valid])
        dpo = replace(self.config.dpo, seed=self.ctx.seed)
        return DPO(self.policy, self.reference, samples, pairs, dpo)

    def _tokens(self, samples: TextSamples) -> int:
        assert self.policy is not None
        batch = self.policy.encode(samples.sample_prompts, samples.response_ids)
        return int(batch.attention_mask.sum())

    # ------------------------------------------------------------------ acting
    def text_policy(self) -> dict[str, Any]:
        """What the evaluator needs: ``policy``, ``reference``, ``shown`` and ``learned``.

        Also ``best_of`` (``best-of-n``) and ``conditioned`` (``dt``: condition -> shown).
        """
        if self.policy is None or self.reference is None:
            raise RuntimeError("the agent has not been prepared (call learn first)")
        shown = (
            self.trainer.generation_prompt
            if isinstance(self.trainer, OfflineAligner)
            else (lambda p: p)
        )
        learned = None
        if self.reward is not None:
            # z-scored like the samples, so a learned score of 1 is one labelled-sample sd.
            learned = response_scorer(self.reward.model, self.policy, self.reference_scores)
        parts: dict[str, Any] = {
            "policy": self.policy,
            "reference": self.reference,
            "shown": shown,
            "learned": learned,
        }
        if self.config.method == "best-of-n":
            parts["best_of"] = self.config.best_of
        if isinstance(self.trainer, OfflineAligner) and self.trainer.config.method == "dt":
            aligner = self.trainer
            parts["conditioned"] = lambda c: lambda p: aligner.generation_prompt(p, c)
        return parts

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """Text agents act through :meth:`text_policy`."""
        raise TypeError("a text agent has no action for observations; see text_policy()")

    def save(self, directory: Path) -> None:
        """Write the trained model as a Hugging Face folder ``directory / "model"``."""
        if self.policy is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        self.policy.models[0].save_pretrained(directory / "model")
        self.policy.tokenizer.save_pretrained(directory / "model")
        torch.save(
            {"counter": self.counter.as_dict(), "labels": self.labels_used},
            directory / "text_agent.pt",
        )

    def save_state(self, directory: Path) -> None:
        """What continuing needs: the policy's weights, the trainer's and loop's state.

        The sample pool and reward model are not saved: :meth:`load_state` rebuilds
        them from the seed (the same numbers, at the cost of sampling and fitting again).
        """
        state: dict[str, Any] = {
            "format": STATE_FORMAT,
            "method": self.config.method,
            "trained": self.trained,
            "n_updates": self.n_updates,
            "labels": self.labels_used,
            "flops": dict(self.counter.flops),
            "tokens": dict(self.counter.tokens),
            "torch_rng": torch.get_rng_state(),
        }
        if self.trainer is not None and self.policy is not None:
            state["model"] = self.policy.models[0].state_dict()
            state["trainer"] = self.trainer.state_dict()
        torch.save(state, directory / "text_state.pt")

    def load_state(self, directory: Path) -> int:
        """Restore what :meth:`save_state` wrote; returns the response tokens trained on.

        Raises:
            CheckpointError: If the state is missing, of another format or method, or does
                not fit the model.
        """
        try:
            state = torch.load(directory / "text_state.pt", map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            raise CheckpointError(f"cannot read text agent state in {directory}: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{directory} holds no prefbench text agent state")
        if state.get("method") != self.config.method:
            raise CheckpointError(f"{directory} holds a {state.get('method')!r} state")
        self._prepare()
        try:
            if self.trainer is not None:
                assert self.policy is not None
                self.policy.models[0].load_state_dict(state["model"])
                self.trainer.load_state_dict(state["trainer"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"cannot restore the text agent from {directory}: {exc}") from exc
        self.counter.flops, self.counter.tokens = Counter(state["flops"]), Counter(state["tokens"])
        self.trained, self.n_updates = int(state["trained"]), int(state["n_updates"])
        self.labels_used = int(state["labels"])
        torch.set_rng_state(state["torch_rng"])
        self.resumed = True
        return min(self.trained, self.ctx.budget.amount)


class PrefTextAgent(TextAgent):
    """A text method trained from a teacher's preferences."""

    uses_teacher = True


def _spec(method: str) -> AgentSpec:
    cls = TextAgent if method == "sft" else PrefTextAgent
    return AgentSpec(cls, TextAgentConfig(method=method))


# Registered in prefbench.agents.protocol by these names (lm-sft, lm-dt, ...).
SFT, MLE_FILTER, RWR, DT, DPO_AGENT, PPO_AGENT, BEST_OF_N = (_spec(m) for m in METHODS)
