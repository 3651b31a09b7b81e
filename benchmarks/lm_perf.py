"""``prefbench perf lm``: generation and training tokens/s of a causal LM.

Side by side in one process, alternating rounds so a drifting machine affects both:

* generation: batched sampling (``--batch`` prompts per ``generate`` call, left-padded)
  against one prompt per call, in generated tokens/s (tokens actually produced: a
  response may end early at end-of-text);
* training: AdamW steps of the response log-likelihood (the offline objectives' inner
  loop), in trained tokens/s (prompt and response tokens of each sequence, the unit of
  the compute count's ``6N`` per token).

The model runs in ``--dtype`` (fp32 by default; bf16 is meant for a GPU) without
gradient checkpointing: on a CPU, recomputing activations only costs time.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

#: The dtypes ``--dtype`` takes (torch's names).
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def add_parser(psub: argparse._SubParsersAction) -> None:
    """The ``perf lm`` subcommand."""
    p = psub.add_parser("lm", help="causal-LM generation and training tokens/s")
    p.add_argument("--task", default="imdb-positive", help="text task (prompts, base model)")
    p.add_argument("--model", default="", help="a local causal-LM folder (default: the base)")
    p.add_argument("--prompts", type=int, default=128, help="prompts per round")
    p.add_argument("--batch", type=int, default=64, help="prompts per batched generate call")
    p.add_argument("--single", type=int, default=16, help="prompts generated one at a time")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens sampled per response")
    p.add_argument("--train-batch", type=int, default=32, help="sequences per training step")
    p.add_argument("--train-steps", type=int, default=10, help="training steps per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--device", default="cpu")


def _model_path(args: argparse.Namespace, task: object) -> Path:
    if args.model:
        return Path(args.model).expanduser()
    from prefbench.agents.lm.config import default_config
    from prefbench.agents.lm.pretrain import Pretrainer

    return Pretrainer(task, default_config(task)).build()  # type: ignore[arg-type]


def lm_throughput(args: argparse.Namespace) -> dict[str, float]:
    """Print and return tokens/s: ``generate_batched``, ``generate_single``, ``train``."""
    import numpy as np
    import torch

    from prefbench.agents.lm.compute import non_embedding_parameters
    from prefbench.agents.lm.policy import CausalLMPolicy, sequence_log_prob
    from prefbench.envs.text_tasks import get_text_task

    for name in ("prompts", "batch", "single", "new_tokens", "train_batch", "train_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.rounds < 1 or args.threads < 0:
        raise ValueError("--rounds must be >= 1 and --threads >= 0")
    task = get_text_task(args.task)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    policy = CausalLMPolicy.from_path(_model_path(args, task), device=args.device)
    model = policy.models[0].to(getattr(torch, DTYPES[args.dtype]))
    # Loading never turns gradient checkpointing on; nothing here does either.
    device = next(model.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    prompts = task.prompts("test", args.prompts, 0)
    single = prompts[: args.single]

    def generate(batch: list[str], batch_size: int, seed: int) -> tuple[int, float]:
        sync()
        start = time.perf_counter()
        ids = policy.generate(batch, [args.new_tokens] * len(batch), seed, batch_size=batch_size)
        sync()
        return sum(len(r) for r in ids), time.perf_counter() - start

    responses = policy.generate(prompts, [args.new_tokens] * len(prompts), 0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rng = np.random.default_rng(0)

    def train(seed: int) -> tuple[int, float]:
        model.train()
        tokens, elapsed = 0, 0.0
        for _ in range(args.train_steps):
            rows = rng.choice(len(prompts), size=args.train_batch)
            batch = policy.encode([prompts[i] for i in rows], [responses[i] for i in rows])
            tensors = {k: v.to(device) for k, v in vars(batch).items()}
            sync()
            start = time.perf_counter()
            loss = -sequence_log_prob(model, tensors).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            sync()
            elapsed += time.perf_counter() - start
            tokens += int(batch.attention_mask.sum())
        return tokens, elapsed

    generate(single[:2], 1, 0)  # warm-up: first calls allocate
    train(0)
    totals = {"generate_batched": [0, 0.0], "generate_single": [0, 0.0], "train": [0, 0.0]}
    for r in range(args.rounds):
        for key, (n, t) in (
            ("generate_batched", generate(prompts, args.batch, r + 1)),
            ("generate_single", generate(single, 1, r + 1)),
            ("train", train(r + 1)),
        ):
            totals[key][0] += n
            totals[key][1] += t
    rates = {k: n / t for k, (n, t) in totals.items()}
    n_params = non_embedding_parameters(model)
    print(
        f"{task.id}: model {n_params:,} non-embedding parameters, {args.dtype}, device "
        f"{device}, torch threads {torch.get_num_threads()}, gradient checkpointing off, "
        f"{args.rounds} rounds"
    )
    print(f"  generation, {args.batch} prompts per call: {rates['generate_batched']:9.0f} tokens/s")
    print(f"  generation, one prompt per call:   {rates['generate_single']:9.0f} tokens/s")
    gain = rates["generate_batched"] / rates["generate_single"]
    print(f"  batched / one at a time:           {gain:9.2f}x")
    print(
        f"  training, {args.train_batch} sequences per step:  {rates['train']:9.0f} tokens/s "
        f"({6 * n_params * rates['train'] / 1e9:.2f} GFLOP/s at 6N per token)"
    )
    return rates
