"""The ``prefbench`` command line.

``prefbench run SUITE``: every cell of a suite, then the results table;
``prefbench report DIR``: tables and plots of a results folder; ``prefbench train``: one
run; ``prefbench list tasks|agents|teachers|suites``: what is registered;
``prefbench perf reward-model|frames|overhead``: throughput and overhead figures. Bad input ends
with a one-line ``prefbench: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

EXIT_USAGE = 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one agent on one task and write a run folder")
    t.add_argument(
        "--task", required=True, help="task id (see `prefbench list tasks`) or pkg.mod:TASK"
    )
    t.add_argument("--agent", default="pref-ppo", help="agent id or pkg.mod:AgentClass")
    t.add_argument("--teacher", default="oracle", help="teacher id or pkg.mod:TeacherClass")
    t.add_argument("--labels", type=int, default=1500, help="label budget")
    t.add_argument("--steps", type=int, default=300_000, help="environment steps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", type=Path, default=Path("runs"), help="parent folder of run folders")
    t.add_argument(
        "--device", default="auto", help="reward model and CNN policy device: auto, cpu, cuda"
    )
    t.add_argument(
        "--eval-every", type=int, default=0, help="steps between evaluations (0: steps/10)"
    )
    t.add_argument("--eval-episodes", type=int, default=5)
    t.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="agent config override, e.g. rl.ent_coef=0 or reward.hidden_sizes=32,32",
    )
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    ls = sub.add_parser("list", help="list registered tasks, agents, teachers or suites")
    ls.add_argument("what", choices=["tasks", "agents", "teachers", "suites"])

    r = sub.add_parser("run", help="run every cell of a suite (resumable), then print the table")
    r.add_argument("suite", help="suite id (see `prefbench list suites`) or pkg.mod:SUITE")
    r.add_argument("--seeds", type=int, default=None, help="seeds per cell (default: the suite's)")
    r.add_argument("--workers", type=int, default=None, help="parallel cells (default: CPU cores)")
    r.add_argument("--backend", default="local", help="local (worker processes) or ray")
    r.add_argument("--ray-address", default=None, help="existing Ray cluster (default: start one)")
    r.add_argument("--out", type=Path, default=None, help="results folder (default: runs/SUITE)")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")

    rep = sub.add_parser("report", help="tables (Markdown, LaTeX) and plots of a results folder")
    rep.add_argument("results", type=Path)

    p = sub.add_parser("perf", help="measure throughput")
    psub = p.add_subparsers(dest="perf", required=True)
    rm = psub.add_parser("reward-model", help="reward-model training throughput (pairs/s)")
    rm.add_argument("--ensemble", type=int, default=3)
    rm.add_argument("--hidden", type=int, default=64, help="width of both hidden layers")
    rm.add_argument(
        "--clip", type=int, default=None, help="steps per clip (default: 25 with cnn, else 50)"
    )
    rm.add_argument("--obs-dim", type=int, default=17)
    rm.add_argument("--act-dim", type=int, default=6)
    rm.add_argument("--batch", type=int, default=64, help="pairs per member per step")
    rm.add_argument("--seconds", type=float, default=5.0, help="time to measure for")
    rm.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    rm.add_argument("--device", default="auto")
    rm.add_argument(
        "--encoder", choices=("flatten", "cnn"), default="flatten", help="cnn: 84x84 frames"
    )
    rm.add_argument("--frame-stack", type=int, default=4, help="frames per stack (cnn)")
    fr = psub.add_parser("frames", help="env frames/s with and without the learned reward")
    fr.add_argument("--task", default="pong")
    fr.add_argument("--envs", type=int, default=16)
    fr.add_argument("--steps", type=int, default=4000, help="agent steps per run")
    fr.add_argument("--rounds", type=int, default=3, help="alternating runs of each kind")
    fr.add_argument("--subprocess", action="store_true", help="one process per env")
    fr.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    fr.add_argument("--device", default="auto")
    bn = psub.add_parser(
        "bn-calibration", help="conv reward-model accuracy with and without re-estimated batch norm"
    )
    bn.add_argument("--task", default="pong")
    bn.add_argument("--steps", type=int, default=30_000, help="random-policy steps to clip")
    bn.add_argument("--pairs", type=int, default=700, help="labelled pairs in all")
    bn.add_argument("--train-pairs", type=int, default=450, help="of them, to train on")
    bn.add_argument("--epochs", type=int, default=9)
    bn.add_argument("--every", type=int, default=3, help="epochs between measurements")
    bn.add_argument("--batch", type=int, default=32, help="pairs per member per step")
    bn.add_argument("--calibration-pairs", type=int, default=128)
    bn.add_argument("--seed", type=int, default=0)
    bn.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    bn.add_argument("--device", default="auto")
    ov = psub.add_parser("overhead", help="training time of a preference agent over its baseline")
    ov.add_argument("--task", default="halfcheetah")
    ov.add_argument("--agent", default="pref-ppo", help="the preference agent")
    ov.add_argument("--baseline", default="ppo", help="the same learner on the true reward")
    ov.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for the preference agent",
    )
    ov.add_argument("--steps", type=int, default=50_000)
    ov.add_argument("--labels", type=int, default=1500)
    ov.add_argument("--seed", type=int, default=0)
    ov.add_argument("--out", type=Path, default=Path("runs/perf-overhead"))
    return parser


def _cmd_list(what: str) -> None:
    if what == "tasks":
        from prefbench.envs.tasks import TASKS, get_task

        print(f"{'id':26} {'env':28} {'horizon':>7} {'clip':>5}")
        for name in TASKS:
            t = get_task(name)
            print(f"{name:26} {t.env_id:28} {t.horizon:7d} {t.clip_length:5d}")
    elif what == "agents":
        from prefbench.agents import AGENTS

        for name in AGENTS:
            spec = AGENTS.get(name)
            print(f"{name:16} {'teacher' if spec.uses_teacher else '       '}  {spec.description}")
    elif what == "suites":
        from prefbench.benchmarks.suites import SUITES

        for name in SUITES:
            suite = SUITES.get(name)
            print(f"{name:24} {len(suite.cells()):4d} cells  {suite.description}")
    else:
        from prefbench.envs.teachers import teacher_table

        print(f"{'id':12} {'beta':>6} {'gamma':>6} {'epsilon':>8} {'skip':>6} {'equal':>6}")
        for row in teacher_table():
            print(
                f"{row['id']:12} {row['beta']:6} {row['gamma']:6} {row['epsilon']:8} "
                f"{row['skip_fraction']:6} {row['equal_fraction']:6}"
            )


def _cmd_train(args: argparse.Namespace) -> None:
    from prefbench.benchmarks.train import TrainConfig, train

    cfg = TrainConfig(
        task=args.task,
        agent=args.agent,
        teacher=args.teacher,
        labels=args.labels,
        steps=args.steps,
        seed=args.seed,
        out=args.out,
        device=args.device,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        threads=args.threads,
        overrides=tuple(args.overrides),
        progress=not args.no_progress,
    )
    summary = train(cfg, command="prefbench " + shlex.join(sys.argv[1:]))
    print(f"run folder: {summary['run_dir']}")
    acc = summary["final_rm_accuracy"]
    acc_text = "n/a" if acc != acc else f"{acc:.3f}"
    print(
        f"final: steps {summary['steps']}  labels {summary['labels']}  "
        f"true return {summary['final_true_return']:.2f}  rm accuracy {acc_text}  "
        f"wall {summary['wall_time']:.1f}s"
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from prefbench.benchmarks.report import write_report
    from prefbench.benchmarks.runner import run_suite
    from prefbench.benchmarks.suites import SUITES
    from prefbench.benchmarks.train import safe_name

    suite = SUITES.get(args.suite)
    out = args.out or Path("runs") / safe_name(suite.name)
    start = time.perf_counter()
    outcome = run_suite(
        suite,
        out,
        seeds=args.seeds,
        workers=args.workers,
        backend=args.backend,
        ray_address=args.ray_address,
        command="prefbench " + shlex.join(sys.argv[1:]),
        show_progress=not args.no_progress,
    )
    wall = time.perf_counter() - start
    if outcome.finished + outcome.skipped:
        print(write_report(out))
    print(
        f"suite {suite.name}: {outcome.total} cells, {outcome.skipped} already done, "
        f"{outcome.finished} run now, {len(outcome.failed)} failed; results in {out} "
        f"({wall:.0f}s)"
    )
    for key in outcome.failed:
        print(f"failed: {key} (traceback in {out / 'failures' / (key + '.txt')})", file=sys.stderr)
    return 1 if outcome.failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    from prefbench.agents.config import ConfigError
    from prefbench.envs.data import CheckpointError
    from prefbench.envs.registry import UnknownIdError

    try:
        if args.command == "list":
            _cmd_list(args.what)
        elif args.command == "train":
            _cmd_train(args)
        elif args.command == "run":
            return _cmd_run(args)
        elif args.command == "report":
            from prefbench.benchmarks.report import write_report

            print(write_report(args.results), end="")
            print(f"tables and plots written to {args.results}")
        elif args.command == "perf":
            from prefbench.benchmarks import perf

            if args.perf == "reward-model":
                perf.reward_model_throughput(args)
            elif args.perf == "frames":
                perf.frames_throughput(args)
            elif args.perf == "bn-calibration":
                perf.bn_calibration(args)
            else:
                perf.overhead(args)
    except (UnknownIdError, ConfigError, CheckpointError, ValueError, TypeError) as exc:
        print(f"prefbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FloatingPointError as exc:
        print(f"prefbench: error: training diverged: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prefbench: interrupted; files written so far are kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
