"""The ``prefbench`` command line.

``prefbench run SUITE``: every cell of a suite, then the results table;
``prefbench report DIR``: tables and plots of a results folder; ``prefbench train``: one
run; ``prefbench list tasks|agents|teachers|suites|presets``: what is registered;
``prefbench perf reward-model|frames|offline|lm|overhead``: throughput and overhead figures;
``prefbench data make|list``: offline datasets; ``prefbench lm pretrain``: a text task's
base model; ``prefbench label serve|status``: the labelling page of ``--teacher human``;
``prefbench evaluate RUN_DIR``: a trained run's policy on fresh episodes, and a video.
Bad input ends with a one-line ``prefbench: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefbench.benchmarks.run_spec import RunSpec

EXIT_USAGE = 2
#: The agent ``prefbench train`` and ``perf overhead`` run unless told otherwise.
DEFAULT_AGENT = "pref-ppo"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one agent on one task and write a run folder")
    _add_spec_flags(t)
    t.add_argument("--out", type=Path, default=Path("runs"), help="parent folder of run folders")
    t.add_argument(
        "--device", default="auto", help="reward model and CNN policy device: auto, cpu, cuda"
    )
    t.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.add_argument(
        "--label-queue",
        default="",
        help="--teacher human: the label queue (default: $PREFBENCH_LABEL_QUEUE, else the cache's)",
    )
    t.add_argument(
        "--label-timeout",
        type=float,
        default=600.0,
        help="--teacher human: seconds to wait for a batch's answers (default: 600)",
    )

    ls = sub.add_parser(
        "list", help="list registered tasks, agents, teachers, suites or RL presets"
    )
    ls.add_argument("what", choices=["tasks", "agents", "teachers", "suites", "presets"])

    r = sub.add_parser("run", help="run every cell of a suite (resumable), then print the table")
    r.add_argument("suite", help="suite id (see `prefbench list suites`) or pkg.mod:SUITE")
    r.add_argument("--seeds", type=int, default=None, help="seeds per cell (default: the suite's)")
    r.add_argument("--workers", type=int, default=None, help="parallel cells (default: CPU cores)")
    r.add_argument("--backend", default="local", help="local (worker processes) or ray")
    r.add_argument("--ray-address", default=None, help="existing Ray cluster (default: start one)")
    r.add_argument("--out", type=Path, default=None, help="results folder (default: runs/SUITE)")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    r.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        metavar="FOLDER",
        help="copy finished cells of the same key from another results folder instead of "
        "running them (repeatable)",
    )
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every agent of the suite (cells get their own folders)",
    )

    rep = sub.add_parser("report", help="tables (Markdown, LaTeX) and plots of a results folder")
    rep.add_argument("results", type=Path)

    d = sub.add_parser("data", help="offline datasets (Minari format): build and list")
    dsub = d.add_subparsers(dest="data", required=True)
    mk = dsub.add_parser(
        "make", help="build a dataset (hopper-medium-replay) or every one of a task (hopper)"
    )
    mk.add_argument("name", help="dataset id or task (see `prefbench data list`)")
    from prefbench.benchmarks.data_config import config_flags

    for flag, default, kind, text in config_flags():
        mk.add_argument(flag, type=kind, default=default, help=f"{text} (default: {default})")
    dsub.add_parser("list", help="the built-in and installed datasets, and where they are")

    from prefbench.benchmarks.lm_cli import add_lm_parser

    add_lm_parser(sub)
    from prefbench.benchmarks.label_cli import add_label_parser

    add_label_parser(sub)
    from prefbench.benchmarks.evaluate_cli import add_evaluate_parser

    add_evaluate_parser(sub)

    p = sub.add_parser("perf", help="measure throughput")
    psub = p.add_subparsers(dest="perf", required=True)
    rm = psub.add_parser("reward-model", help="reward-model training throughput (pairs/s)")
    rm.add_argument("--ensemble", type=int, default=3)
    rm.add_argument("--hidden", type=int, default=64, help="width of both hidden layers")
    rm.add_argument(
        "--clip", type=int, default=None, help="steps per clip (default: 25 with cnn, else 50)"
    )
    rm.add_argument(
        "--no-input-norm", action="store_true", help="without input standardisation (MLP only)"
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
    of = psub.add_parser("offline", help="offline learner updates/s: S seeds batched vs separate")
    of.add_argument("--learner", default="iql", help="bc, mle-filter, rwr, iql or dt")
    of.add_argument("--seeds", type=int, default=5)
    of.add_argument("--updates", type=int, default=200, help="updates per learner per round")
    of.add_argument("--rounds", type=int, default=2)
    of.add_argument("--steps", type=int, default=100_000, help="synthetic dataset steps")
    of.add_argument("--obs-dim", type=int, default=17)
    of.add_argument("--act-dim", type=int, default=6)
    of.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    of.add_argument("--device", default="cpu")
    of.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="learner setting, e.g. hidden_sizes=64,64 or n_embd=64 (repeatable)",
    )
    from prefbench.benchmarks.lm_perf import add_parser as add_lm_perf

    add_lm_perf(psub)
    ov = psub.add_parser("overhead", help="training time of a preference agent over its baseline")
    ov.add_argument("--task", default="halfcheetah")
    ov.add_argument("--agent", default=DEFAULT_AGENT, help="the preference agent")
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
    ov.add_argument("--label-budget", "--labels", dest="label_budget", type=int, default=1500)
    ov.add_argument("--seed", type=int, default=0)
    ov.add_argument("--out", type=Path, default=Path("runs/perf-overhead"))
    return parser


#: ``prefbench train`` flags of the run spec: (field, flags, type, help). Defaults come
#: from :class:`~prefbench.benchmarks.run_spec.RunSpec`, so they are stated once.
_SPEC_FLAGS: tuple[tuple[str, tuple[str, ...], type, str], ...] = (
    ("agent", ("--agent",), str, "agent id or pkg.mod:AgentClass"),
    ("teacher", ("--teacher",), str, "teacher id or pkg.mod:TeacherClass"),
    ("label_budget", ("--label-budget", "--labels"), int, "teacher labels the agent may ask for"),
    ("steps", ("--steps",), int, "budget in the task's unit (control: environment steps)"),
    ("seed", ("--seed",), int, "run seed"),
    ("eval_every", ("--eval-every",), int, "budget units between evaluations (0: steps/10)"),
    ("eval_episodes", ("--eval-episodes",), int, "episodes per evaluation"),
    ("accuracy_pairs", ("--accuracy-pairs",), int, "fresh pairs per reward-model accuracy"),
    ("preset", ("--preset",), str, "RL preset (see `prefbench list presets`; '': paper)"),
)


def _add_spec_flags(parser: argparse.ArgumentParser) -> None:
    """The run-spec flags; unset ones stay absent, so the spec's own defaults apply."""
    from prefbench.benchmarks.run_spec import spec_defaults

    defaults = {**spec_defaults(), "agent": DEFAULT_AGENT}
    parser.add_argument(
        "--task", required=True, help="task id (see `prefbench list tasks`) or pkg.mod:TASK"
    )
    for name, flags, kind, text in _SPEC_FLAGS:
        parser.add_argument(
            *flags,
            dest=name,
            type=kind,
            default=argparse.SUPPRESS,
            help=f"{text} (default: {defaults[name]})",
        )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=argparse.SUPPRESS,
        metavar="KEY=VALUE",
        help="agent config override, e.g. rl.ent_coef=0 or reward.hidden_sizes=32,32",
    )


def _spec_from_args(args: argparse.Namespace) -> RunSpec:
    from prefbench.benchmarks.run_spec import RunSpec

    given = {name: getattr(args, name) for name, *_ in _SPEC_FLAGS if hasattr(args, name)}
    if hasattr(args, "overrides"):
        given["overrides"] = tuple(args.overrides)
    return RunSpec(task=args.task, **{"agent": DEFAULT_AGENT, **given})


def _cmd_list(what: str) -> None:
    if what == "tasks":
        _list_tasks()
    elif what == "agents":
        from prefbench.agents import AGENTS

        for name in AGENTS:
            info = AGENTS.info(name)
            who = "teacher" if info.get("uses_teacher") else "       "
            print(f"{name:18} {who}  {info.get('description', '')}")
    elif what == "suites":
        from prefbench.benchmarks.suites import SUITES
        from prefbench.envs.tasks import TASKS

        for name in SUITES:
            suite = SUITES.get(name)
            # RL presets apply to control tasks only (offline and text suites have none).
            control = any(t in TASKS for t in suite.tasks)
            preset = suite.preset or "paper" if control else "-"
            print(f"{name:24} {suite.size():4d} cells  {preset:9} {suite.description}")
    elif what == "presets":
        _list_presets()
    else:
        from prefbench.envs.teachers import teacher_table

        print(f"{'id':12} {'beta':>6} {'gamma':>6} {'epsilon':>8} {'skip':>6} {'equal':>6}")
        for row in teacher_table():
            print(
                f"{row['id']:12} {row['beta']:6} {row['gamma']:6} {row['epsilon']:8} "
                f"{row['skip_fraction']:6} {row['equal_fraction']:6}"
            )
        print(f"{'human':12} people, through the labelling page (`prefbench label serve`)")


def _list_presets() -> None:
    """Every RL preset, with the tasks it tunes and the settings it sets."""
    from prefbench.agents.presets import RL_PRESETS

    for name in RL_PRESETS:
        preset = RL_PRESETS.get(name)
        print(f"{name:10} {preset.description}")
        print(f"{'':10} source: {preset.source}")
        for task, overrides in preset.tasks.items():
            print(f"{'':10} {task:24} {' '.join(overrides)}")


def _list_tasks() -> None:
    """Every task, without building environments whose extra is not installed."""
    import gymnasium as gym

    from prefbench.envs.tasks import TASKS

    print(f"{'id':26} {'kind':8} {'env':28} {'horizon':>7} {'clip':>5}")
    for name in TASKS:
        task = TASKS.get(name)
        try:
            clip = str(task.clip_length)
        except (ImportError, gym.error.DependencyNotInstalled):
            extra = TASKS.info(name).get("extra") or "?"
            clip = f"    -  (needs prefbench[{extra}])"
        print(f"{name:26} {task.kind:8} {task.env_id:28} {task.horizon:7d} {clip:>5}")
    from prefbench.envs.text_tasks import TEXT_TASKS

    for name in TEXT_TASKS:
        print(f"{name:26} {'text':8} {TEXT_TASKS.get(name).description}")
    from prefbench.envs.offline_tasks import builtin_ids, get_offline_task, minari_id

    for name in builtin_ids():
        env, quality = name.split("-", 1)
        missing = get_offline_task(name).missing_extra()
        note = f"(needs prefbench[{missing}])" if missing else "(`prefbench data list`)"
        print(f"{name:26} {'offline':8} {minari_id(env, quality):28} {note}")


def _cmd_train(args: argparse.Namespace) -> None:
    from prefbench.benchmarks.run_spec import TrainConfig
    from prefbench.benchmarks.train import train

    cfg = TrainConfig(
        _spec_from_args(args),
        out=args.out,
        device=args.device,
        threads=args.threads,
        progress=not args.no_progress,
        label_queue=args.label_queue,
        label_timeout=args.label_timeout,
    )
    summary = train(cfg, command="prefbench " + shlex.join(sys.argv[1:]))
    print(f"run folder: {summary['run_dir']}")
    acc = summary["final_rm_accuracy"]
    acc_text = "n/a" if acc is None or acc != acc else f"{acc:.3f}"  # old summaries: NaN
    print(
        f"final: steps {summary['steps']}  labels used {summary['labels_used']}  "
        f"true return {summary['final_true_return']:.2f}  rm accuracy {acc_text}  "
        f"wall {summary['wall_time']:.1f}s"
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from prefbench.benchmarks.report import write_report
    from prefbench.benchmarks.run_folder import safe_name
    from prefbench.benchmarks.runner import run_suite
    from prefbench.benchmarks.suites import SUITES

    suite = SUITES.get(args.suite).with_overrides(tuple(args.overrides))
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
        reuse=args.reuse,
    )
    wall = time.perf_counter() - start
    if outcome.finished + outcome.skipped:
        print(write_report(out))
    reused = f" ({outcome.reused} copied from --reuse)" if outcome.reused else ""
    print(
        f"suite {suite.name}: {outcome.total} cells, {outcome.skipped} already done{reused}, "
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
    from gymnasium.error import DependencyNotInstalled

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
        elif args.command == "data":
            from prefbench.benchmarks import data_make

            if args.data == "make":
                from prefbench.benchmarks.data_config import config_from_args

                data_make.make_datasets(args.name, config_from_args(args))
            else:
                print(data_make.dataset_table(), end="")
        elif args.command == "label":
            from prefbench.benchmarks.label_cli import run_label

            run_label(args)
        elif args.command == "evaluate":
            from prefbench.benchmarks.evaluate_cli import run_evaluate

            run_evaluate(args)
        elif args.command == "lm":
            from prefbench.benchmarks.lm_cli import run_lm

            run_lm(args)
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
            elif args.perf == "offline":
                perf.offline_throughput(args)
            elif args.perf == "lm":
                from prefbench.benchmarks.lm_perf import lm_throughput

                lm_throughput(args)
            else:
                perf.overhead(args)
    except (UnknownIdError, ConfigError, CheckpointError, ValueError, TypeError) as exc:
        print(f"prefbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ImportError, DependencyNotInstalled) as exc:
        # An optional extra a task needs (MuJoCo, the Atari emulator) is not installed.
        print(f"prefbench: error: {str(exc).strip()}", file=sys.stderr)
        return EXIT_USAGE
    except FloatingPointError as exc:
        print(f"prefbench: error: training diverged: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("prefbench: interrupted; files written so far are kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
