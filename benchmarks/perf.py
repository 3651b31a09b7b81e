"""Throughput and overhead benchmarks (``prefbench perf ...``).

Figures are printed, never asserted: timings belong to benchmarks, not to unit tests.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import time

import numpy as np
import torch

from prefbench.agents.reward_model import RewardModel, RewardModelConfig
from prefbench.envs.data import ClipPairs, PreferenceDataset


def reward_model_throughput(args: argparse.Namespace) -> float:
    """Time batched ensemble training steps on random clips; prints and returns pairs/s.

    A pair is one labelled pair in one member's minibatch slot: a step with batch ``B``
    trains every member on its own ``B`` pairs, and counts ``B`` pairs.
    """
    k, hidden, clip = args.ensemble, args.hidden, args.clip
    for name, value in (
        ("ensemble", k),
        ("hidden", hidden),
        ("clip", clip),
        ("obs-dim", args.obs_dim),
        ("act-dim", args.act_dim),
        ("batch", args.batch),
    ):
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    if not args.seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    config = RewardModelConfig(
        ensemble_size=k, hidden_sizes=(hidden, hidden), batch_size=args.batch
    )
    model = RewardModel((args.obs_dim,), args.act_dim, config, seed=0, device=args.device)
    rng = np.random.default_rng(0)
    n = 4096
    pairs = ClipPairs(
        rng.normal(size=(n, 2, clip, args.obs_dim)).astype(np.float32),
        rng.normal(size=(n, 2, clip, args.act_dim)).astype(np.float32),
        np.zeros((n, 2, clip), dtype=np.float32),
    )
    data = model.to_device(PreferenceDataset(pairs, rng.integers(0, 2, n).astype(np.float32)))
    gen = torch.Generator(device=model.device).manual_seed(0)

    def step() -> None:
        idx = torch.randint(0, n, (k, args.batch), generator=gen, device=model.device)
        model.train_step(data, idx)

    for _ in range(5):
        step()
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    sync()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        step()
        steps += 1
    sync()
    elapsed = time.perf_counter() - start
    pairs_per_s = steps * args.batch / elapsed
    in_dim = args.obs_dim + args.act_dim
    macs_per_row = in_dim * hidden + hidden * hidden  # trunk; the head runs on clip sums
    flops = 6 * macs_per_row * k * args.batch * 2 * clip * steps  # forward 2x + backward 4x
    print(f"device {model.device}, torch threads {threads}, torch {torch.__version__}")
    print(
        f"ensemble K={k}, hidden {hidden}x2, clip {clip}, obs {args.obs_dim}, act {args.act_dim}, "
        f"batch {args.batch} pairs per member"
    )
    print(
        f"{steps} steps in {elapsed:.2f}s, {flops / elapsed / 1e9:.1f} GFLOP/s "
        f"(6 FLOPs per trunk multiply-accumulate, forward and backward)"
    )
    print(f"reward-model training K={k} hidden={hidden}: {pairs_per_s:.0f} pairs/s")
    return pairs_per_s


def overhead(args: argparse.Namespace) -> float:
    """Wall time of preference PPO over true-reward PPO at the same steps and seed.

    Both runs evaluate only at the start and the end; the ratio of training time
    (wall time less evaluation) is the overhead of labels, fits and reward scoring.
    """
    from prefbench.benchmarks.train import TrainConfig, train

    if args.steps < 1 or args.labels < 1:
        raise ValueError("--steps and --labels must be >= 1")
    results = {}
    for agent in ("ppo", "pref-ppo"):
        cfg = TrainConfig(
            task=args.task,
            agent=agent,
            labels=args.labels,
            steps=args.steps,
            seed=args.seed,
            out=args.out / agent,
            eval_every=args.steps,
            progress=False,
            threads=1,
        )
        shutil.rmtree(cfg.out, ignore_errors=True)
        results[agent] = train(cfg)
    base, pref = results["ppo"], results["pref-ppo"]
    ratio_train = pref["train_time"] / base["train_time"]
    ratio_wall = pref["wall_time"] / base["wall_time"]
    for name, r in results.items():
        acc = r["final_rm_accuracy"]
        print(
            f"{name:9} train {r['train_time']:7.1f}s  wall {r['wall_time']:7.1f}s  "
            f"true return {r['final_true_return']:8.1f}"
            + ("" if math.isnan(acc) else f"  rm accuracy {acc:.3f}")
        )
    print(
        f"overhead on {args.task}, {args.steps} steps: "
        f"train time {ratio_train:.3f}x, wall time {ratio_wall:.3f}x"
    )
    return ratio_train
