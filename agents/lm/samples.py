"""Pre-generated continuations: the offline track's dataset, and the pairs teachers label.

:func:`sample_continuations` draws ``n`` responses per prompt from a policy (the base
model), each at most its prompt's length in new tokens, and scores them with the task's
ground truth (for the teacher and the record; no learner reads it).
:func:`text_pairs` turns two responses of one prompt into a pair of one-step clips for
the reward ensemble (:mod:`prefbench.agents.text_encoder`): the observation is the
sequence ``<|endoftext|> prompt response`` as token ids, right-padded with ``PAD``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prefbench.agents.lm.policy import CausalLMPolicy
from prefbench.agents.text_encoder import PAD
from prefbench.envs.data import CheckpointError, ClipPairs, Labels
from prefbench.envs.files import atomic_path
from prefbench.envs.human.media import PairView
from prefbench.envs.teachers import ShowsPairs, Teacher
from prefbench.envs.text_tasks import TextTask

FORMAT = "prefbench.text_samples.v1"


@dataclass(frozen=True)
class TextSamples:
    """``N`` responses to ``P`` prompts.

    Attributes:
        prompts: ``(P,)`` prompt texts.
        prompt_index: ``(N,)`` int64, the prompt of each response.
        responses: ``(N,)`` response texts (decoded).
        response_ids: ``(N,)`` response token ids (the policy's tokenizer).
        scores: ``(N,)`` float64 ground-truth scores.
    """

    prompts: tuple[str, ...]
    prompt_index: np.ndarray
    responses: tuple[str, ...]
    response_ids: tuple[tuple[int, ...], ...]
    scores: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.responses)
        if not (len(self.prompt_index) == len(self.response_ids) == len(self.scores) == n):
            raise ValueError("prompt_index, responses, response_ids and scores differ in length")
        if n and not (0 <= self.prompt_index.min() and self.prompt_index.max() < len(self.prompts)):
            raise ValueError("prompt_index out of range")
        if not np.isfinite(self.scores).all():
            raise ValueError("scores must be finite")

    def __len__(self) -> int:
        return len(self.responses)

    @property
    def sample_prompts(self) -> list[str]:
        """``(N,)`` the prompt of each response."""
        return [self.prompts[i] for i in self.prompt_index]


def sample_continuations(
    policy: CausalLMPolicy,
    task: TextTask,
    prompts: list[str],
    n_per_prompt: int,
    seed: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
) -> TextSamples:
    """``n_per_prompt`` sampled responses to each prompt, scored by the task."""
    if n_per_prompt < 1 or not prompts:
        raise ValueError("need prompts and n_per_prompt >= 1")
    index = np.repeat(np.arange(len(prompts)), n_per_prompt).astype(np.int64)
    flat = [prompts[i] for i in index]
    lengths = task.response_lengths(len(flat), seed).tolist()
    ids = policy.generate(flat, lengths, seed, temperature=temperature, top_k=top_k)
    texts = policy.decode(ids)
    return TextSamples(
        tuple(prompts), index, tuple(texts), tuple(tuple(r) for r in ids), task.score(flat, texts)
    )


def save_samples(samples: TextSamples, path: str | Path) -> None:
    """Write ``samples`` as ``.npz`` (atomically)."""
    lengths = np.array([len(r) for r in samples.response_ids], dtype=np.int64)
    flat = np.array([t for r in samples.response_ids for t in r], dtype=np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            format=np.array(FORMAT),
            prompts=np.array(samples.prompts, dtype=str),
            prompt_index=samples.prompt_index,
            responses=np.array(samples.responses, dtype=str),
            response_tokens=flat,
            response_lengths=lengths,
            scores=samples.scores,
        )


def load_samples(path: str | Path) -> TextSamples:
    """Read :func:`save_samples` output.

    Raises:
        CheckpointError: For a missing, corrupt or foreign file.
    """
    try:
        with np.load(path, allow_pickle=False) as d:
            if str(d["format"]) != FORMAT:
                raise ValueError(f"format {d['format']}")
            cuts = np.cumsum(d["response_lengths"])[:-1]
            ids = tuple(tuple(int(t) for t in r) for r in np.split(d["response_tokens"], cuts))
            return TextSamples(
                tuple(str(p) for p in d["prompts"]),
                d["prompt_index"].astype(np.int64),
                tuple(str(r) for r in d["responses"]),
                ids if len(d["response_lengths"]) else (),
                d["scores"].astype(np.float64),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a prefbench text-samples file ({exc})") from exc


def sequence_ids(policy: CausalLMPolicy, samples: TextSamples, rows: np.ndarray) -> np.ndarray:
    """``(len(rows), T)`` int64 token ids of the chosen samples, right-padded with PAD.

    ``T`` is the policy's context, so every text fits the reward model's input.
    """
    batch = policy.encode(
        [samples.sample_prompts[i] for i in rows], [samples.response_ids[i] for i in rows]
    )
    out = np.full((len(rows), policy.max_length), PAD, dtype=np.int64)
    ids, mask = batch.input_ids.numpy(), batch.attention_mask.numpy().astype(bool)
    out[:, : ids.shape[1]] = np.where(mask, ids, PAD)
    return out


def text_pairs(policy: CausalLMPolicy, samples: TextSamples, pairs: np.ndarray) -> ClipPairs:
    """Clip pairs of two responses each: ``pairs`` is ``(N, 2)`` sample indices.

    ``obs`` is ``(N, 2, 1, T)`` token ids, ``acts`` ``(N, 2, 1, 0)``, ``true_rewards`` the
    ground-truth scores ``(N, 2, 1)`` (for the teacher only).
    """
    pairs = np.asarray(pairs, dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"pairs must be (N, 2), got {pairs.shape}")
    n = len(pairs)
    obs = sequence_ids(policy, samples, pairs.reshape(-1)).reshape(n, 2, 1, -1)
    rewards = samples.scores[pairs].astype(np.float32).reshape(n, 2, 1)
    return ClipPairs(obs, np.zeros((n, 2, 1, 0), np.float32), rewards)


class TextPairViews:
    """Draws text pairs for a person: the prompt and its two continuations.

    Args:
        samples: The samples the pairs index.
        pairs: ``(N, 2)`` sample indices, the pairs the teacher will be asked about.
    """

    def __init__(self, samples: TextSamples, pairs: np.ndarray) -> None:
        self.samples, self.pairs = samples, np.asarray(pairs, dtype=np.int64)

    def render(self, clip_pairs: ClipPairs) -> list[PairView]:
        """One view per pair; ``clip_pairs`` must be the pairs of ``pairs``."""
        if len(clip_pairs) != len(self.pairs):
            raise ValueError(f"{len(clip_pairs)} pairs to draw, {len(self.pairs)} indexed")
        s = self.samples
        return [
            PairView("text", s.responses[a], s.responses[b], s.prompts[s.prompt_index[a]])
            for a, b in self.pairs
        ]


def ask_about(
    teacher: Teacher, clip_pairs: ClipPairs, samples: TextSamples, pairs: np.ndarray
) -> Labels:
    """The teacher's labels on ``clip_pairs``, the :func:`text_pairs` of ``pairs``.

    A teacher that is a person is shown the pairs' prompt and continuations as text.
    """
    if isinstance(teacher, ShowsPairs):
        teacher.use_renderer(TextPairViews(samples, pairs))
    return teacher.label(clip_pairs)


def same_prompt_pairs(samples: TextSamples, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_pairs, 2)`` indices of two different responses of one prompt, uniformly drawn.

    Raises:
        ValueError: If no prompt has two responses.
    """
    groups = [np.flatnonzero(samples.prompt_index == p) for p in range(len(samples.prompts))]
    groups = [g for g in groups if len(g) >= 2]
    if not groups:
        raise ValueError("pairs need at least two responses to one prompt")
    out = np.empty((n_pairs, 2), dtype=np.int64)
    for i, g in enumerate(rng.integers(0, len(groups), size=n_pairs)):
        out[i] = rng.choice(groups[g], size=2, replace=False)
    return out
