"""``prefbench evaluate``: its flags and its printout (the work is in ``watch.py``).

Kept apart so that building the command line imports neither torch nor the simulators.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def add_evaluate_parser(sub: Any) -> None:
    """``prefbench evaluate RUN_DIR [--episodes N] [--seed S] [--video FILE]``."""
    e = sub.add_parser(
        "evaluate", help="play a trained run's policy on fresh episodes; print returns, save video"
    )
    e.add_argument("run_dir", type=Path, help="a run folder (prefbench train wrote it)")
    e.add_argument("--episodes", type=int, default=5, help="episodes to play (default: 5)")
    e.add_argument(
        "--seed", type=int, default=None, help="episode seed (default: from the run's seed)"
    )
    e.add_argument(
        "--video", type=Path, default=None, help="write the episodes as .webp, .gif or .mp4"
    )
    e.add_argument("--device", default="cpu", help="torch device: cpu, cuda, auto")


def run_evaluate(args: Any) -> None:
    """Evaluate, then print one row per episode and the mean."""
    import numpy as np

    from prefbench.benchmarks.watch import evaluate_run

    results = evaluate_run(args.run_dir, args.episodes, args.seed, args.video, args.device)

    def learned(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:.3f}"

    print(f"{'episode':>7} {'steps':>6} {'true_return':>12} {'learned_return':>15}")
    for r in results:
        print(f"{r.episode:>7} {r.steps:>6} {r.true_return:>12.2f} {learned(r.learned_return):>15}")
    true_mean = float(np.mean([r.true_return for r in results]))
    learned_mean = float(np.mean([r.learned_return for r in results]))
    print(f"{'mean':>7} {'':>6} {true_mean:>12.2f} {learned(learned_mean):>15}")
    if args.video is not None:
        print(f"video written to {args.video}")
