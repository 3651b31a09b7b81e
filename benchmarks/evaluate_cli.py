"""``prefbench evaluate``: its flags and its printout (the work is in ``watch.py``).

Kept apart so that building the command line imports neither torch nor the simulators.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any


def add_evaluate_parser(sub: Any) -> None:
    """``prefbench evaluate RUN_DIR [--episodes N] [--seed S] [--video FILE] ...``."""
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
    e.add_argument(
        "--target-return",
        default=None,
        help="Decision Transformer runs: the return to ask for instead of the run's own "
        "(a number, dataset_max or quantile:q, as learner.target_return)",
    )
    e.add_argument(
        "--csv",
        type=Path,
        default=None,
        help="add a row per episode to this CSV (rows of the same run, target and seed "
        "are replaced, so a rerun does not repeat them)",
    )


def run_evaluate(args: Any) -> None:
    """Evaluate, then print one row per episode and the mean."""
    import numpy as np

    from prefbench.benchmarks.watch import evaluate_run

    results = evaluate_run(
        args.run_dir, args.episodes, args.seed, args.video, args.device, args.target_return
    )

    def fmt(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:.3f}"

    scored = not math.isnan(results[0].d4rl_score)
    header = f"{'episode':>7} {'steps':>6} {'true_return':>12} {'learned_return':>15}"
    print(header + (f" {'d4rl_score':>11}" if scored else ""))
    for r in results:
        row = f"{r.episode:>7} {r.steps:>6} {r.true_return:>12.2f} {fmt(r.learned_return):>15}"
        print(row + (f" {r.d4rl_score:>11.2f}" if scored else ""))
    means = {
        k: float(np.mean([getattr(r, k) for r in results]))
        for k in ("true_return", "learned_return", "d4rl_score")
    }
    row = f"{'mean':>7} {'':>6} {means['true_return']:>12.2f} {fmt(means['learned_return']):>15}"
    print(row + (f" {means['d4rl_score']:>11.2f}" if scored else ""))
    if not math.isnan(results[0].target_return):
        asked = args.target_return or "the run's own"
        print(f"target_return {results[0].target_return:.2f} ({asked})")
    if args.csv is not None:
        write_csv(args.csv, args.run_dir, args.target_return or "", results)
        print(f"{len(results)} rows in {args.csv}")
    if args.video is not None:
        print(f"video written to {args.video}")


def write_csv(path: Path, run_dir: Path, target_from: str, results: list) -> None:
    """Add ``results`` to the long-format CSV at ``path``, replacing an earlier copy of them.

    The file is rewritten whole or not at all.

    Raises:
        ValueError: ``path`` exists but is not such a CSV.
    """
    import json

    import pandas as pd

    from prefbench.envs.files import atomic_path

    spec = json.loads((run_dir / "config.json").read_text())["run"]["spec"]
    ident = {
        "run_dir": str(run_dir),
        "task": spec["task"],
        "agent": spec["agent"],
        "run_seed": spec["seed"],
        "target_return_from": target_from,
    }
    new = pd.DataFrame([{**ident, **asdict(r)} for r in results])
    if path.exists():
        try:
            old = pd.read_csv(path, dtype={"target_return_from": str})
        except (OSError, ValueError) as exc:  # pandas' parser errors are ValueErrors
            raise ValueError(f"{path} is not a CSV that prefbench evaluate wrote ({exc})") from exc
        if list(old.columns) != list(new.columns):
            raise ValueError(f"{path} has other columns than prefbench evaluate writes")
        old["target_return_from"] = old["target_return_from"].fillna("")
        same = (
            (old["run_dir"] == ident["run_dir"])
            & (old["target_return_from"] == target_from)
            & (old["seed"] == results[0].seed)
        )
        new = pd.concat([old[~same], new], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        new.to_csv(tmp, index=False)
