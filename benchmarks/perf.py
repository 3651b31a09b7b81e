"""Throughput and overhead benchmarks (``prefbench perf ...``).

Figures are printed, never asserted: timings belong to benchmarks, not to unit tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

import numpy as np
import torch

from prefbench.agents.reward_model import RewardModel, RewardModelConfig
from prefbench.agents.reward_nets import action_dim
from prefbench.envs.atari import ATARI_CLIP_STEPS
from prefbench.envs.data import ClipPairs, PreferenceDataset

#: Default clip of ``perf reward-model`` with vector observations. 50 steps, as when the
#: core-loop figures in results/README.md were taken, so their commands still reproduce.
MUJOCO_CLIP_STEPS = 50


def _random_pairs(args: argparse.Namespace, n: int, rng: np.random.Generator) -> ClipPairs:
    """``n`` random labelled-pair inputs: vectors (``flatten``) or compact 84x84 frames."""
    clip = args.clip
    rews = np.zeros((n, 2, clip), dtype=np.float32)
    if args.encoder == "cnn":
        stack = args.frame_stack
        frames = rng.integers(0, 256, size=(n, 2, clip + stack - 1, 84, 84), dtype=np.uint8)
        acts = rng.integers(0, 6, size=(n, 2, clip)).astype(np.int64)
        return ClipPairs.from_frames(frames, stack, acts, rews)
    return ClipPairs(
        rng.normal(size=(n, 2, clip, args.obs_dim)).astype(np.float32),
        rng.normal(size=(n, 2, clip, args.act_dim)).astype(np.float32),
        rews,
    )


def reward_model_throughput(args: argparse.Namespace) -> float:
    """Time batched ensemble training steps on random clips; prints and returns pairs/s.

    A pair is one labelled pair in one member's minibatch slot: a step with batch ``B``
    trains every member on its own ``B`` pairs, and counts ``B`` pairs (``2 B`` clips).
    ``--encoder cnn`` times the paper's Atari network on 84x84 frame stacks kept as
    compact frames, and prints the memory that 1,000 stored clips take.
    """
    if args.clip is None:
        args.clip = ATARI_CLIP_STEPS if args.encoder == "cnn" else MUJOCO_CLIP_STEPS
    k, hidden, clip = args.ensemble, args.hidden, args.clip
    for name, value in (
        ("ensemble", k),
        ("hidden", hidden),
        ("clip", clip),
        ("obs-dim", args.obs_dim),
        ("act-dim", args.act_dim),
        ("batch", args.batch),
        ("frame-stack", args.frame_stack),
    ):
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    if not args.seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    cnn = args.encoder == "cnn"
    config = RewardModelConfig(
        ensemble_size=k,
        hidden_sizes=(hidden, hidden),
        batch_size=args.batch,
        encoder=args.encoder,
        use_actions=not cnn,
        input_norm=not cnn and not args.no_input_norm,
    )
    rng = np.random.default_rng(0)
    n = 512 if cnn else 4096
    pairs = _random_pairs(args, n, rng)
    obs_shape = pairs.obs.shape[3:]
    model = RewardModel(obs_shape, 1 if cnn else args.act_dim, config, seed=0, device=args.device)
    data = model.to_device(PreferenceDataset(pairs, rng.integers(0, 2, n).astype(np.float32)))
    gen = torch.Generator(device=model.device).manual_seed(0)

    def step() -> None:
        idx = torch.randint(0, n, (k, args.batch), generator=gen, device=model.device)
        model.train_step(data, idx)

    for _ in range(3):
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
    print(f"device {model.device}, torch threads {threads}, torch {torch.__version__}")
    if cnn:
        print(
            f"conv ensemble K={k}, clip {clip} steps of {args.frame_stack}x84x84 frames, "
            f"batch {args.batch} pairs per member"
        )
        print(f"{steps} steps in {elapsed:.2f}s")
        print(
            f"reward-model training K={k} cnn: {pairs_per_s:.1f} pairs/s, "
            f"{2 * pairs_per_s:.1f} clips/s"
        )
        compact = pairs.nbytes / (2 * n) * 1000
        plain = (pairs.obs.size * pairs.obs.itemsize + pairs.acts.nbytes) / (2 * n) * 1000
        print(
            f"memory per 1,000 stored clips: {compact / 1e6:.1f} MB as compact frames, "
            f"{plain / 1e6:.1f} MB as whole stacks ({plain / compact:.2f}x)"
        )
        return pairs_per_s
    in_dim = args.obs_dim + args.act_dim
    macs_per_row = in_dim * hidden + hidden * hidden  # trunk; the head runs on clip sums
    flops = 6 * macs_per_row * k * args.batch * 2 * clip * steps  # forward 2x + backward 4x
    print(
        f"ensemble K={k}, hidden {hidden}x2, clip {clip}, obs {args.obs_dim}, act {args.act_dim}, "
        f"batch {args.batch} pairs per member, input norm {'on' if config.input_norm else 'off'}"
    )
    print(
        f"{steps} steps in {elapsed:.2f}s, {flops / elapsed / 1e9:.1f} GFLOP/s "
        f"(6 FLOPs per trunk multiply-accumulate, forward and backward)"
    )
    print(f"reward-model training K={k} hidden={hidden}: {pairs_per_s:.0f} pairs/s")
    return pairs_per_s


def frames_throughput(args: argparse.Namespace) -> float:
    """Environment frames per second with and without the learned reward, side by side.

    Random actions drive ``--envs`` copies of the task through the wrapper that records
    trajectories, once handing on the true reward and once scoring every batch of steps
    with a reward model (the task's encoder); the runs alternate ``--rounds`` times.
    Returns the learned reward's share of the throughput lost.
    """
    from prefbench.agents.reward_wrapper import make_training_env
    from prefbench.envs.rollout import random_actions
    from prefbench.envs.tasks import get_task

    if args.steps < 1 or args.envs < 1 or args.rounds < 1:
        raise ValueError("--steps, --envs and --rounds must be >= 1")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    task = get_task(args.task)
    obs_space, act_space = task.spaces()
    images = len(obs_space.shape) == 3
    config = RewardModelConfig(
        encoder="cnn" if images else "flatten",
        use_actions=not images,
        input_norm=not images,
        output_std=0.05,
    )
    model = RewardModel(obs_space.shape, action_dim(act_space), config, seed=0, device=args.device)
    skip = 4 if task.frame_stack else 1  # emulator frames per agent step
    rng = np.random.default_rng(0)
    timings: dict[str, list[float]] = {"true reward": [], "learned reward": []}
    for _ in range(args.rounds):
        for name, fn in (("true reward", None), ("learned reward", model.reward)):
            venv = make_training_env(task, args.envs, 0, fn, subprocess=args.subprocess)
            venv.reset()
            start = time.perf_counter()
            for _ in range(args.steps // args.envs):
                venv.step(random_actions(venv.action_space, args.envs, rng))
                venv.pop_finished()
            timings[name].append(time.perf_counter() - start)
            venv.close()
    steps = (args.steps // args.envs) * args.envs
    print(f"{task.id}: {args.envs} envs, {steps} agent steps per run, {args.rounds} rounds")
    fps = {}
    for name, times in timings.items():
        fps[name] = steps * skip / float(np.median(times))
        print(
            f"{name:15} {fps[name]:9.0f} frames/s  ({steps / float(np.median(times)):.0f} steps/s)"
        )
    cost = 1 - fps["learned reward"] / fps["true reward"]
    print(f"the learned reward costs {100 * cost:.1f}% of the frames per second")
    return cost


def overhead(args: argparse.Namespace) -> float:
    """Training time of a preference agent over its true-reward baseline, same steps and seed.

    Both runs evaluate only at the start and the end; the ratio of training time
    (wall time less evaluation) is the overhead of labels, fits and reward scoring.
    """
    from prefbench.benchmarks.run_spec import RunSpec, TrainConfig
    from prefbench.benchmarks.train import train

    if args.steps < 1 or args.label_budget < 1:
        raise ValueError("--steps and --label-budget must be >= 1")
    if args.agent == args.baseline:
        raise ValueError("--agent and --baseline must differ")
    results = {}
    for role, agent, overrides in (
        ("baseline", args.baseline, ()),
        ("preference", args.agent, tuple(args.overrides)),
    ):
        spec = RunSpec(
            task=args.task,
            agent=agent,
            label_budget=args.label_budget,
            steps=args.steps,
            seed=args.seed,
            eval_every=args.steps,
            overrides=overrides,
        )
        cfg = TrainConfig(spec, out=args.out / role, progress=False, threads=1)
        shutil.rmtree(cfg.out, ignore_errors=True)
        results[agent] = train(cfg)
    base, pref = results[args.baseline], results[args.agent]
    ratio_train = pref["train_time"] / base["train_time"]
    ratio_wall = pref["wall_time"] / base["wall_time"]
    for name, r in results.items():
        acc = r["final_rm_accuracy"]
        print(
            f"{name:15} train {r['train_time']:7.1f}s  wall {r['wall_time']:7.1f}s  "
            f"true return {r['final_true_return']:8.1f}"
            + ("" if acc is None else f"  rm accuracy {acc:.3f}")
        )
    print(
        f"overhead on {args.task}, {args.steps} steps: "
        f"train time {ratio_train:.3f}x, wall time {ratio_wall:.3f}x"
    )
    return ratio_train


def bn_calibration(args: argparse.Namespace) -> list[tuple[int, float, float]]:
    """Conv reward-model accuracy on fresh pairs with and without batch-norm re-estimation.

    Trains the task's conv ensemble on oracle labels of random-policy clips, one epoch per
    fit, keeping the running averages of training (``bn_calibration_pairs=0``). Every
    ``--every`` epochs it scores held-out pairs twice with the same weights: with those
    running averages, then with statistics re-estimated without dropout on the newest
    ``--calibration-pairs`` training pairs. Returns ``(epoch, accuracy before, after)``.
    """
    import dataclasses

    from prefbench.agents.preference import ATARI_REWARD
    from prefbench.envs.rollout import collect_random
    from prefbench.envs.segments import sample_clip_pairs
    from prefbench.envs.tasks import get_task
    from prefbench.envs.teachers import BPREF_TEACHERS, BPrefTeacher

    for name in ("steps", "pairs", "train_pairs", "epochs", "every", "batch", "calibration_pairs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.train_pairs >= args.pairs:
        raise ValueError("--train-pairs must be below --pairs (the rest are the test pairs)")
    task = get_task(args.task)
    if not task.frame_stack:
        raise ValueError(f"{args.task!r} has no image observations; batch norm is in the cnn")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    trajs = collect_random(task, args.steps, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    pairs = sample_clip_pairs(trajs, args.pairs, task.clip_length, rng)
    teacher = BPrefTeacher(BPREF_TEACHERS["oracle"], np.random.default_rng(args.seed + 1))
    prefs = teacher.label(pairs).prefs.astype(np.float32)
    cut = args.train_pairs
    train = PreferenceDataset(pairs[np.arange(cut)], prefs[:cut])
    test = PreferenceDataset(pairs[np.arange(cut, len(pairs))], prefs[cut:])
    config = dataclasses.replace(ATARI_REWARD, batch_size=args.batch, bn_calibration_pairs=0)
    obs_shape = task.spaces()[0].shape
    model = RewardModel(obs_shape, 1, config, seed=args.seed, device=args.device)
    train_on_device = model.to_device(train)
    pools = [np.arange(cut)] * config.ensemble_size
    print(
        f"{task.id}: {len(trajs)} random episodes, {cut} training and {len(test)} test pairs "
        f"({np.mean(test.prefs != 0.5):.0%} of the test pairs decided), device {model.device}"
    )
    rows = []
    for epoch in range(1, args.epochs + 1):
        model.fit(train, epochs=1)
        if epoch % args.every and epoch != args.epochs:
            continue
        before = model.preference_accuracy(test.pairs, test.prefs)
        saved = {k: v.clone() for k, v in model.net.state_dict().items()}
        start = time.perf_counter()
        model.calibrate_batch_norm(train_on_device, pools, pairs=args.calibration_pairs)
        seconds = time.perf_counter() - start
        after = model.preference_accuracy(test.pairs, test.prefs)
        model.net.load_state_dict(saved)  # training goes on with the running averages
        rows.append((epoch, before, after))
        print(
            f"epoch {epoch:3d}: accuracy on decided test pairs {before:.3f} with the running "
            f"averages of training, {after:.3f} re-estimated ({seconds:.1f}s)"
        )
    return rows


def _synthetic_episodes(obs_dim: int, act_dim: int, steps: int, horizon: int, seed: int):
    """Random episodes of ``horizon`` steps (truncated), ``steps`` in all."""
    from prefbench.envs.episodes import Episodes

    rng = np.random.default_rng(seed)
    n_eps = max(1, steps // horizon)
    n = n_eps * horizon
    obs = rng.normal(size=(n + n_eps, obs_dim)).astype(np.float32)
    keep = np.ones(n + n_eps, dtype=bool)
    keep[np.arange(1, n_eps + 1) * (horizon + 1) - 1] = False  # each episode's final obs
    nxt = np.ones(n + n_eps, dtype=bool)
    nxt[np.arange(n_eps) * (horizon + 1)] = False
    trunc = np.zeros(n, dtype=bool)
    trunc[np.arange(1, n_eps + 1) * horizon - 1] = True
    return Episodes(
        obs[keep],
        rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        rng.normal(size=n).astype(np.float32),
        obs[nxt],
        np.zeros(n, dtype=bool),
        trunc,
        np.arange(0, n + 1, horizon, dtype=np.int64),
    )


def offline_throughput(args: argparse.Namespace) -> tuple[float, float]:
    """Updates/s of ``S`` seeds trained as one batched learner vs ``S`` separate learners.

    Rates count seed-updates (one gradient step of one seed), so the ratio is the gain
    of batching. The separate learners run one after the other in this process, as
    ``S`` single-seed runs would share a machine's cores. Rounds alternate (batched,
    separate, batched, ...) so drifting machine speed affects both alike.
    """
    from prefbench.agents.config import apply_overrides
    from prefbench.agents.offline.learners import get_learner

    entry = get_learner(args.learner)
    for name in ("seeds", "updates", "rounds", "obs_dim", "act_dim", "steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    data = _synthetic_episodes(args.obs_dim, args.act_dim, args.steps, 1000, 0)
    low, high = -np.ones(args.act_dim, np.float32), np.ones(args.act_dim, np.float32)
    cls, config = entry.cls, apply_overrides(entry.config, getattr(args, "overrides", []))
    seeds = list(range(args.seeds))

    def time_updates(learners: list, n: int) -> float:
        for learner in learners:  # warm-up: first calls allocate
            learner.update()
        start = time.perf_counter()
        for learner in learners:
            for _ in range(n):
                learner.update()
        return time.perf_counter() - start

    batched_t = separate_t = 0.0
    for _ in range(args.rounds):
        batched_t += time_updates([cls(data, low, high, config, seeds, args.device)], args.updates)
        separate = [cls(data, low, high, config, [s], args.device) for s in seeds]
        separate_t += time_updates(separate, args.updates)
    seed_updates = args.rounds * args.updates * args.seeds
    batched, separate_rate = seed_updates / batched_t, seed_updates / separate_t
    print(
        f"{args.learner}, S={args.seeds} seeds, {args.updates} updates x {args.rounds} rounds, "
        f"{torch.get_num_threads()} threads, device {args.device}, {len(data):,} steps of "
        f"{args.obs_dim}-dim observations{''.join(f', {o}' for o in args.overrides)}:\n"
        f"  batched:  {batched:8.1f} seed-updates/s ({batched / args.seeds:.1f} updates/s)\n"
        f"  separate: {separate_rate:8.1f} seed-updates/s\n"
        f"  batched / separate: {batched / separate_rate:.2f}x"
    )
    return batched, separate_rate
